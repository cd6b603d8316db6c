//! Fire first: the `firegrid` binary between a real Mosquitto and a webhook receiver whose
//! channel takes 6 messages per 30 s, 4 of them kept for fire and pre-alarm pages. Twelve
//! buildings report a fault; two faults go out and the other ten wait for the limit; then two
//! detectors of another building see a fire. Every fire and pre-alarm page must reach the
//! receiver before any of the faults that were waiting, as the receiver's arrival order shows.
//! (The window is long so that the fire is raised well inside the first one.)

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use firegrid_protocol::{
    DetectorState, DeviceId, Encoding, Fault, FaultKind, StateChange, Topic, Uplink, UplinkBody, UplinkKind,
    VillageId,
};
use firegrid_tests::{Firegrid, Mosquitto, WebhookReceiver};
use rumqttc::{AsyncClient, MqttOptions, QoS};

const VILLAGE: &str = "fuhai-1";
/// Buildings reporting a fault, one case (and one page) each.
const FAULTS: usize = 12;
/// Routine pages the channel sends per window: 6 minus the 4 kept.
const ROUTINE_PER_WINDOW: usize = 2;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Detectors `sd-f0..` in buildings `F0..` (one each), and `sd-a1`, `sd-a2` in building A1.
fn registry(dir: &Path) -> PathBuf {
    let mut csv = String::from(
        "device_id,kind,model,building_id,building_address,lat,lon,grid,community,street,village\n",
    );
    let rows = (0..FAULTS)
        .map(|i| (format!("sd-f{i}"), format!("F{i}")))
        .chain([("sd-a1".to_owned(), "A1".to_owned()), ("sd-a2".to_owned(), "A1".to_owned())]);
    for (dev, building) in rows {
        csv.push_str(&format!(
            "{dev},smoke_detector,JTY-GD,{building},No. 1 Lane,25.03,102.66,G1,C1,Fuhai,{VILLAGE}\n"
        ));
    }
    let path = dir.join("registry.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

fn config(
    broker: u16,
    hook: u16,
    registry: PathBuf,
) -> impl Fn(&Path, u16) -> String + Send + Sync + 'static {
    move |dir: &Path, http_port: u16| {
        format!(
            r#"
data_dir = "{data}"
http_listen = "127.0.0.1:{http_port}"
[mqtt]
host = "127.0.0.1"
port = {broker}
client_id = "gw-fire-first"
max_backoff = "500ms"
[registry]
csv = "{registry}"
[alerting]
district = "Xishan"
routes = {{ "*" = ["hook"] }}
[notify.channels.hook]
kind = "webhook"
url = "http://127.0.0.1:{hook}/hook"
rate_limit = {{ messages = 6, per = "30s", reserve = 4 }}
"#,
            data = dir.join("data").display(),
            registry = registry.display(),
        )
    }
}

fn uplink(dev: &str, body: UplinkBody) -> (String, Vec<u8>) {
    let dev = DeviceId::new(dev).unwrap();
    let kind = match body {
        UplinkBody::Fault(_) => UplinkKind::Fault,
        _ => UplinkKind::State,
    };
    let msg = Uplink::new(dev.clone(), 1, 1, now_ms(), body);
    let topic = Topic::uplink(VillageId::new(VILLAGE).unwrap(), dev, kind).to_buf().to_string();
    (topic, msg.encode(Encoding::Json, &mut [0u8; 512]).unwrap().to_vec())
}

/// Polls `/metrics` until `sample` reads `value`; panics after `timeout` with what it read.
async fn wait_metric(gateway: &Firegrid, sample: &str, value: f64, timeout: Duration) {
    let started = Instant::now();
    loop {
        let read = gateway.metric(sample).unwrap();
        if read == Some(value) {
            return;
        }
        assert!(started.elapsed() < timeout, "{sample} is {read:?}, not {value}, after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_page_overtakes_faults_queued_behind_the_channels_rate_limit() {
    let broker = Mosquitto::start().unwrap();
    let hook = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = Firegrid::start(config(broker.port(), hook.port(), registry(dir.path()))).unwrap();

    let mut opts = MqttOptions::new("detectors", "127.0.0.1", broker.port());
    opts.set_clean_session(false);
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let publish = |(topic, payload): (String, Vec<u8>)| {
        let client = client.clone();
        async move { client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap() }
    };

    for i in 0..FAULTS {
        publish(uplink(
            &format!("sd-f{i}"),
            UplinkBody::Fault(Fault { fault: FaultKind::LowBattery, active: true }),
        ))
        .await;
    }
    // Two faults go out; the other ten wait in the outbox for the window.
    let waiting = (FAULTS - ROUTINE_PER_WINDOW) as f64;
    wait_metric(
        &gateway,
        r#"firegrid_notification_outbox_pending{channel="hook",severity="fault"}"#,
        waiting,
        Duration::from_secs(30),
    )
    .await;
    let before_fire = hook.received().len();
    assert_eq!(before_fire, ROUTINE_PER_WINDOW, "{:?}", hook.received());

    // A fire in building A1: a pre-alarm page, then the confirmed fire.
    publish(uplink(
        "sd-a1",
        UplinkBody::State(StateChange { state: DetectorState::Alarm, obscuration_db_m: 0.4 }),
    ))
    .await;
    publish(uplink(
        "sd-a2",
        UplinkBody::State(StateChange { state: DetectorState::Alarm, obscuration_db_m: 0.4 }),
    ))
    .await;
    hook.wait("a confirmed fire", Duration::from_secs(60), |v| v["severity"] == "fire").await;
    // Arrival order: the two faults sent before the fire, then only urgent pages: the ten
    // faults queued before the fire are still waiting behind it.
    let order: Vec<String> =
        hook.received().iter().map(|(_, v)| v["severity"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(order[..ROUTINE_PER_WINDOW], ["fault", "fault"], "{order:?}");
    let after = &order[ROUTINE_PER_WINDOW..];
    assert!(
        after.iter().all(|s| s == "fire" || s == "pre_alarm"),
        "a queued fault before the fire: {order:?}"
    );
    assert!(after.iter().any(|s| s == "fire"), "{order:?}");
    // The waiting faults were held by the limit, not failed.
    let held = r#"firegrid_notification_deliveries_held_total{channel="hook"}"#;
    let started = Instant::now();
    while gateway.metric(held).unwrap() < Some(waiting) {
        assert!(started.elapsed() < Duration::from_secs(20), "{held} is {:?}", gateway.metric(held));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let failed = gateway.metrics().unwrap();
    assert!(
        !failed
            .lines()
            .any(|l| l.starts_with("firegrid_notification_attempts_total") && !l.contains("delivered")),
        "no delivery failed: {failed}"
    );
}
