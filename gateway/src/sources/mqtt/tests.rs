//! Session configuration. The sessions themselves are tested against a real Mosquitto in the
//! workspace's integration tests.

use super::*;

#[test]
fn sessions_split_the_kinds_by_class() {
    let alarm: Vec<_> = Session::Alarm.kinds().map(|k| k.as_str()).collect();
    assert_eq!(alarm, ["state", "camera_event"]);
    let telemetry: Vec<_> = Session::Telemetry.kinds().map(|k| k.as_str()).collect();
    assert_eq!(
        telemetry,
        ["heartbeat", "fault", "camera_health", "water", "command_ack", "status", "boot", "fw_status"]
    );
}

#[test]
fn filters_per_village_and_shared_group() {
    let cfg = MqttConfig { villages: vec!["fuhai-1".into(), "fuhai-2".into()], ..MqttConfig::default() };
    assert_eq!(
        cfg.filters(Session::Alarm).unwrap(),
        [
            "fg/v1/fuhai-1/+/up/state",
            "fg/v1/fuhai-1/+/up/camera_event",
            "fg/v1/fuhai-2/+/up/state",
            "fg/v1/fuhai-2/+/up/camera_event"
        ]
    );
    let shared = MqttConfig { shared_group: Some("gw".into()), ..MqttConfig::default() };
    assert_eq!(
        shared.filters(Session::Alarm).unwrap(),
        ["$share/gw/fg/v1/+/+/up/state", "$share/gw/fg/v1/+/+/up/camera_event"]
    );
    assert_eq!(shared.client_id(Session::Telemetry), "firegrid-gateway-telemetry");
    let bad = MqttConfig { villages: vec!["a/#".into()], ..MqttConfig::default() };
    assert!(bad.filters(Session::Alarm).unwrap_err().contains("village \"a/#\""));
}
