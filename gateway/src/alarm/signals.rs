//! What the alarm engine hears: device messages, liveness events and Modbus conditions,
//! turned into [`Signal`]s. Pure functions; the location comes from the registry.

use firegrid_alerting::{Condition, Level, Location, Scope, Signal};
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
            // A hush is an alarm silenced at the device: the case holding the alarm records
            // it (the alarm itself stays as it is). A pre-alarm is the detector still
            // confirming: nothing the officers must know yet.
            DetectorState::Hush => vec![signal(dev.into(), Condition::Hushed, true)],
            DetectorState::PreAlarm => vec![],
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
                // A blocked fire lane (消防通道占用) is a hazard to clear, handled like a fault of
                // the building: its own alarm, cleared when the camera sees the lane free.
                FireLaneBlocked => {
                    vec![signal(
                        format!("{dev}/ch{}/fire_lane_blocked", e.channel),
                        Condition::Fault,
                        e.active,
                    )]
                }
            }
        }
        UplinkBody::CameraHealth(h) => {
            let active = h.status != ChannelStatus::Online;
            vec![signal(format!("{dev}/ch{}/video", h.channel), Condition::Fault, active)]
        }
        _ => vec![],
    }
}

/// Where the case of a device the registry does not know sits: at `desk`, or by default at
/// the street of its village (`known`: any registered building of that village; without one
/// the street desk is named after the village). The levels below the desk stay empty, so
/// the engine tells the desk first and escalates from it; the levels above it are filled
/// from `known` where it knows them.
pub fn unplaced_location(
    desk: Option<&Scope>,
    village: &str,
    known: Option<&Location>,
    district: &str,
) -> Location {
    let street = known.map_or(village, |k| k.street.as_str());
    let desk = desk.cloned().unwrap_or_else(|| Scope { level: Level::Street, name: street.to_owned() });
    let mut location = Location { district: district.to_owned(), ..Location::default() };
    for level in Level::ALL.into_iter().filter(|l| *l > desk.level) {
        let name = known.map(|k| k.name_at(level).to_owned()).unwrap_or_default();
        match level {
            Level::Community => location.community = name,
            Level::Street => location.street = name,
            Level::Grid | Level::District => {}
        }
    }
    match desk.level {
        Level::Grid => location.grid = desk.name,
        Level::Community => location.community = desk.name,
        Level::Street => location.street = desk.name,
        Level::District => location.district = desk.name,
    }
    location
}

/// The signals of a device the registry does not know, at `location` (see
/// [`unplaced_location`]), marked with its village.
pub fn from_unplaced(msg: &Uplink, village: &str, location: &Location) -> Vec<Signal> {
    let mut signals = from_uplink(msg, location);
    for signal in &mut signals {
        signal.unplaced = Some(village.to_owned());
    }
    signals
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
        Uplink { v: 1, dev: DeviceId::try_from("d1").unwrap(), boot: 1, seq: 1, ts_ms: 0, body, mac: None }
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
        check(state(DetectorState::Hush), &[("d1", Condition::Hushed, true)]);
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
        check(
            camera(CameraEventKind::FireLaneBlocked, true),
            &[("d1/ch3/fire_lane_blocked", Condition::Fault, true)],
        );
        check(
            camera(CameraEventKind::FireLaneBlocked, false),
            &[("d1/ch3/fire_lane_blocked", Condition::Fault, false)],
        );
    }

    #[test]
    fn an_unplaced_device_is_placed_at_its_desk_with_only_the_levels_above_it() {
        let known = Location {
            district: "Xishan".into(),
            street: "Fuhai".into(),
            community: "C1".into(),
            grid: "G1".into(),
            building: "A1".into(),
        };
        let loc = |street: &str, community: &str, grid: &str| Location {
            district: "Xishan".into(),
            street: street.into(),
            community: community.into(),
            grid: grid.into(),
            building: String::new(),
        };
        // Default: the village's street, from a registered building or else the village id.
        assert_eq!(unplaced_location(None, "fuhai-1", Some(&known), "Xishan"), loc("Fuhai", "", ""));
        assert_eq!(unplaced_location(None, "fuhai-1", None, "Xishan"), loc("fuhai-1", "", ""));
        let community: Scope = "community:C9".parse().unwrap();
        assert_eq!(unplaced_location(Some(&community), "v", Some(&known), "Xishan"), loc("Fuhai", "C9", ""));
        assert_eq!(unplaced_location(Some(&community), "v", None, "Xishan"), loc("", "C9", ""));
        let district: Scope = "district:Other".parse().unwrap();
        let top = unplaced_location(Some(&district), "v", Some(&known), "Xishan");
        assert_eq!(top, Location { district: "Other".into(), ..Location::default() });
        let signals = from_unplaced(&uplink(state(DetectorState::Alarm)), "fuhai-1", &loc("Fuhai", "", ""));
        assert_eq!(signals.len(), 1);
        assert_eq!(signals[0].unplaced.as_deref(), Some("fuhai-1"));
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
