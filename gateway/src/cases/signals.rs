//! What the alarm engine hears: device messages, liveness events and Modbus conditions,
//! turned into [`Signal`]s. Pure functions; the location comes from the registry.

use firegrid_alerting::{Condition, Location, Signal};
use firegrid_protocol::{ChannelStatus, DetectorState, Uplink, UplinkBody};

use crate::sources::modbus::conditions::{Condition as ModbusCondition, ConditionEvent};

/// Whether a message of this kind can raise or clear a signal (readings never do).
pub fn may_signal(msg: &Uplink) -> bool {
    matches!(
        msg.body,
        UplinkBody::State(_)
            | UplinkBody::Fault(_)
            | UplinkBody::CameraEvent(_)
            | UplinkBody::CameraHealth(_)
    )
}

/// The signals one accepted device message raises or clears (none for readings).
///
/// Device faults and camera channels are alarms of their own (`dev/low_battery`,
/// `cam/ch3`): a low battery clearing must not clear a tamper of the same detector.
pub fn from_uplink(msg: &Uplink, location: &Location) -> Vec<Signal> {
    let dev = msg.dev.as_str();
    let signal = |device: String, condition, active| Signal {
        device,
        location: location.clone(),
        condition,
        active,
        unplaced: None,
    };
    match &msg.body {
        UplinkBody::State(s) => match s.state {
            DetectorState::Alarm => vec![signal(dev.into(), Condition::Smoke, true)],
            // Back to normal: the alarm clears (a latched fire stays latched in the engine)
            // and a test ends.
            DetectorState::Normal | DetectorState::Cleared => {
                vec![signal(dev.into(), Condition::Smoke, false), signal(dev.into(), Condition::Test, false)]
            }
            DetectorState::Test => vec![signal(dev.into(), Condition::Test, true)],
            // A pre-alarm is the detector still confirming, and a hush is an alarm silenced
            // at the device: neither changes what the officers must know.
            DetectorState::PreAlarm | DetectorState::Hush => vec![],
        },
        UplinkBody::Fault(f) => {
            let kind = serde_json::to_value(f.fault).ok().and_then(|v| v.as_str().map(str::to_owned));
            let kind = kind.unwrap_or_else(|| "fault".into());
            vec![signal(format!("{dev}/{kind}"), Condition::Fault, f.active)]
        }
        UplinkBody::CameraEvent(e) => {
            use firegrid_protocol::CameraEventKind::{Fire, FireLaneBlocked, Smoke};
            match e.event {
                Smoke | Fire => vec![signal(format!("{dev}/ch{}", e.channel), Condition::Camera, e.active)],
                FireLaneBlocked => vec![],
            }
        }
        UplinkBody::CameraHealth(h) => {
            let active = h.status != ChannelStatus::Online;
            vec![signal(format!("{dev}/ch{}/video", h.channel), Condition::Fault, active)]
        }
        _ => vec![],
    }
}

/// The signal of a Modbus condition change.
pub fn from_modbus(event: &ConditionEvent, location: &Location) -> Signal {
    let (suffix, condition) = match event.condition {
        ModbusCondition::LowPressure => ("pressure", Condition::WaterLow),
        ModbusCondition::LowLevel => ("level", Condition::WaterLow),
        ModbusCondition::SensorFault => ("sensor", Condition::Fault),
    };
    Signal {
        device: format!("{}/{suffix}", event.device),
        location: location.clone(),
        condition,
        active: event.active,
        unplaced: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firegrid_protocol::{CameraEvent, CameraEventKind, DeviceId, Fault, FaultKind, StateChange};

    fn at() -> Location {
        Location { building: "A1".into(), grid: "G1".into(), ..Location::default() }
    }

    fn uplink(body: UplinkBody) -> Uplink {
        Uplink { v: 1, dev: DeviceId::try_from("d1").unwrap(), boot: 1, seq: 1, ts_ms: 0, body }
    }

    #[track_caller]
    fn check(body: UplinkBody, expected: &[(&str, Condition, bool)]) {
        let got: Vec<(String, Condition, bool)> = from_uplink(&uplink(body), &at())
            .into_iter()
            .map(|s| (s.device, s.condition, s.active))
            .collect();
        let expected: Vec<(String, Condition, bool)> =
            expected.iter().map(|(d, c, a)| ((*d).to_owned(), *c, *a)).collect();
        assert_eq!(got, expected);
    }

    fn state(state: DetectorState) -> UplinkBody {
        UplinkBody::State(StateChange { state, obscuration_db_m: 0.2 })
    }

    #[test]
    fn device_messages_become_signals() {
        check(state(DetectorState::Alarm), &[("d1", Condition::Smoke, true)]);
        check(state(DetectorState::PreAlarm), &[]);
        check(state(DetectorState::Hush), &[]);
        check(state(DetectorState::Test), &[("d1", Condition::Test, true)]);
        check(
            state(DetectorState::Cleared),
            &[("d1", Condition::Smoke, false), ("d1", Condition::Test, false)],
        );
        check(
            UplinkBody::Fault(Fault { fault: FaultKind::LowBattery, active: true }),
            &[("d1/low_battery", Condition::Fault, true)],
        );
        let camera = |event, active| {
            UplinkBody::CameraEvent(CameraEvent {
                channel: 3,
                event,
                active,
                confidence_pct: 90,
                snapshot: None,
            })
        };
        check(camera(CameraEventKind::Smoke, true), &[("d1/ch3", Condition::Camera, true)]);
        check(camera(CameraEventKind::Fire, false), &[("d1/ch3", Condition::Camera, false)]);
        check(camera(CameraEventKind::FireLaneBlocked, true), &[]);
    }

    #[test]
    fn only_messages_that_can_signal_need_a_location() {
        assert!(may_signal(&uplink(state(DetectorState::Alarm))));
        assert!(may_signal(&uplink(UplinkBody::Fault(Fault { fault: FaultKind::Tamper, active: true }))));
        let reading =
            UplinkBody::Water(firegrid_protocol::WaterReading { pressure_mpa: Some(0.3), level_m: None });
        assert!(!may_signal(&uplink(reading)));
    }
}
