//! What the gateway writes for each accepted uplink: the time-series schema documented in
//! `gateway/SCHEMA.md` (a test checks the two agree).
//!
//! Tags are the grid hierarchy and the device identity: bounded sets (a village has a few
//! thousand devices) that dashboards filter and group by. Everything measured is a field.
//! Enumerations with a handful of values (detector state, fault kind, camera event kind) are
//! tags too, because panels group by them. Nothing unbounded (sequence numbers, free text,
//! snapshot references) is ever a tag.

use std::borrow::Cow;

use firegrid_protocol::{AckResult, ChannelStatus, DetectorState, Uplink, UplinkBody};

use super::{Field, Point};

/// Where a device sits: the tag values every point from it carries. Empty values are left out
/// of the point (an unregistered device has only its village and id).
#[derive(Debug, Clone, Copy, Default)]
pub struct Placement<'a> {
    /// Village id (from the topic).
    pub village: &'a str,
    /// Street.
    pub street: &'a str,
    /// Community.
    pub community: &'a str,
    /// Grid.
    pub grid: &'a str,
    /// Building id.
    pub building: &'a str,
    /// Device kind from the registry (`smoke_detector`, `camera`, ...), or `unregistered`.
    pub device_kind: &'a str,
}

/// Measurement names, one per uplink kind.
pub mod measurement {
    /// Heartbeats: device health.
    pub const HEARTBEAT: &str = "device_heartbeat";
    /// Detector state changes.
    pub const DETECTOR_STATE: &str = "detector_state";
    /// Faults raised and cleared.
    pub const FAULT: &str = "device_fault";
    /// Camera analytics events.
    pub const CAMERA_EVENT: &str = "camera_event";
    /// Camera channel health.
    pub const CAMERA_HEALTH: &str = "camera_health";
    /// Water pressure and level.
    pub const WATER: &str = "water";
    /// Command acknowledgements.
    pub const COMMAND_ACK: &str = "command_ack";
    /// Low pressure, low level and sensor-fault conditions of polled water sensors.
    pub const WATER_CONDITION: &str = "water_condition";
    /// Devices going offline (missed heartbeats) and coming back.
    pub const DEVICE_STATUS: &str = "device_status";
    /// An officer's administrative action on a device (audit).
    pub const DEVICE_ADMIN: &str = "device_admin";
    /// Whole scopes (building, grid, community, village) going silent together, and back.
    pub const COMMUNICATION_LOSS: &str = "communication_loss";
    /// The gateway's own health, every 10 s.
    pub const GATEWAY_HEALTH: &str = "gateway_health";
    /// Messages accepted per kind and rejected per reason, every 10 s.
    pub const GATEWAY_MESSAGES: &str = "gateway_messages";
    /// Per destination: backlog, age, writes, failures, every 10 s.
    pub const GATEWAY_DESTINATION: &str = "gateway_destination";
    /// Every transition of an alarm case (opened, acknowledged, escalated, closed, ...).
    pub const CASE_TRANSITION: &str = "case_transition";
    /// Alarm floods at a desk (ISA-18.2: more than 10 alarms in 10 minutes).
    pub const ALARM_FLOOD: &str = "alarm_flood";
    /// Firmware update progress reported by a device (`fw_status`).
    pub const FIRMWARE_UPDATE: &str = "firmware_update";
    /// A firmware rollout's devices by state, whenever it changed (at most every second).
    pub const FIRMWARE_ROLLOUT: &str = "firmware_rollout";
}

/// Where a firmware rollout stands: its devices by state ([`DeviceState::as_str`] labels as
/// fields, zeros included, so a sum over time never misses a state), paused, waves started.
///
/// [`DeviceState::as_str`]: crate::firmware::rollout::DeviceState::as_str
pub fn firmware_rollout_point(progress: &crate::firmware::delivery::control::Progress, ts_ns: i64) -> Point {
    let mut p = Point::new(measurement::FIRMWARE_ROLLOUT, ts_ns)
        .tag("rollout", &progress.id)
        .tag("version", &progress.version)
        .field("paused", Field::I64(i64::from(progress.paused)))
        .field("waves_started", Field::I64(progress.waves.0 as i64))
        .field("waves", Field::I64(progress.waves.1 as i64));
    for state in crate::firmware::rollout::DeviceState::ALL {
        let n = progress.counts.get(state.as_str()).copied().unwrap_or(0);
        p = p.field(state.as_str(), Field::I64(n as i64));
    }
    p
}

/// One transition of an alarm case. Durations since the case opened are what the
/// time-to-acknowledge, time-to-dispatch and time-to-close KPIs are computed from.
pub fn case_transition_point(t: &firegrid_alerting::Transition, ts_ns: i64) -> Point {
    use firegrid_alerting::TransitionKind;
    let mut p = Point::new(measurement::CASE_TRANSITION, ts_ns)
        .tag("transition", t.kind.as_str())
        .tag("stage", t.stage.as_str())
        .tag("level", t.level.as_str())
        .tag("severity", t.severity.as_str())
        .tag("case_kind", t.case_kind.as_str())
        .tag("street", t.location.street.as_str())
        .tag("community", t.location.community.as_str())
        .tag("grid", t.location.grid.as_str())
        .tag("building", t.location.building.as_str())
        .tag("drill", if t.drill { "true" } else { "false" })
        .field("case_id", Field::I64(t.case.0 as i64))
        .field("since_open_s", Field::F64(t.since_open_ms as f64 / 1000.0));
    if let Some(officer) = &t.officer {
        p = p.tag("officer", officer.as_str());
    }
    if let Some(device) = &t.device {
        p = p.tag("device", device.as_str());
    }
    match &t.kind {
        TransitionKind::Disposed { disposition } => {
            p = p.tag("disposition", disposition.as_str());
            if let firegrid_alerting::Disposition::FalseAlarm { cause } = disposition {
                p = p.tag("cause", cause.as_str());
            }
        }
        TransitionKind::Escalated { from, .. } => p = p.tag("from_level", from.as_str()),
        _ => {}
    }
    p
}

/// A desk's alarm flood began (`flooding = 1`, with the pages in the window) or ended.
pub fn alarm_flood_point(kpi: &firegrid_alerting::Kpi, ts_ns: i64) -> Point {
    let (desk, flooding, pages) = match kpi {
        firegrid_alerting::Kpi::Flood { desk, pages, .. } => (desk, 1, *pages as i64),
        firegrid_alerting::Kpi::FloodEnded { desk, .. } => (desk, 0, 0),
    };
    Point::new(measurement::ALARM_FLOOD, ts_ns)
        .tag("desk", desk.to_string())
        .tag("level", desk.level.as_str())
        .field("flooding", Field::I64(flooding))
        .field("pages", Field::I64(pages))
}

/// A device went offline (`online = false`, silent for `silent_ms`) or came back.
pub fn device_status_point(
    place: &Placement<'_>,
    device: &str,
    online: bool,
    silent_ms: u64,
    ts_ns: i64,
) -> Point {
    let p = Point::new(measurement::DEVICE_STATUS, ts_ns)
        .field("online", Field::I64(online.into()))
        .field("silent_ms", Field::I64(silent_ms as i64));
    placed(p, place, device)
}

/// An officer's administrative action on a device, for the audit trail.
pub fn device_admin_point(
    place: &Placement<'_>,
    device: &str,
    action: &str,
    officer: &str,
    origin: &str,
    ts_ns: i64,
) -> Point {
    let p = Point::new(measurement::DEVICE_ADMIN, ts_ns)
        .tag("action", action)
        .field("officer", Field::Str(officer.to_owned()))
        .field("origin", Field::Str(origin.to_owned()));
    placed(p, place, device)
}

/// A scope lost (`lost = true`) or restored, with how many of its devices were silent.
pub fn communication_loss_point(
    level: &str,
    scope: &str,
    lost: bool,
    offline: u32,
    total: u32,
    ts_ns: i64,
) -> Point {
    Point::new(measurement::COMMUNICATION_LOSS, ts_ns)
        .tag("level", level)
        .tag("scope", scope)
        .field("lost", Field::I64(lost.into()))
        .field("offline", Field::I64(offline.into()))
        .field("total", Field::I64(total.into()))
}

/// Adds the placement and device tags every point carries.
fn placed(mut point: Point, place: &Placement<'_>, device: &str) -> Point {
    point.tags.extend(placement_tags(place, device));
    point
}

/// The tags of where `device` sits, as every point from it carries them.
pub fn placement_tags(place: &Placement<'_>, device: &str) -> Vec<(Cow<'static, str>, String)> {
    [
        ("village", place.village),
        ("street", place.street),
        ("community", place.community),
        ("grid", place.grid),
        ("building", place.building),
        ("device", device),
        ("device_kind", place.device_kind),
    ]
    .into_iter()
    .map(|(k, v)| (Cow::Borrowed(k), v.to_owned()))
    .collect()
}

/// The point for a Modbus poll: the same `water` measurement MQTT water sensors write, plus
/// any other named values as fields, tagged `source=modbus`.
pub fn modbus_reading_point(
    reading: &crate::sources::modbus::Reading,
    place: &Placement<'_>,
    ts_ns: i64,
) -> Point {
    let mut p = Point::new(measurement::WATER, ts_ns).tag("source", "modbus");
    if let Some(w) = &reading.water {
        if let Some(v) = w.pressure_mpa {
            p = p.field("pressure_mpa", Field::F64(wide(v)));
        }
        if let Some(v) = w.level_m {
            p = p.field("level_m", Field::F64(wide(v)));
        }
    }
    for (name, value) in &reading.other {
        if value.is_finite() {
            p = p.field(name.clone(), Field::F64(*value));
        }
    }
    placed(p, place, reading.device.as_str())
}

/// The point for a condition raised or cleared by a polled sensor.
pub fn modbus_condition_point(
    event: &crate::sources::modbus::ConditionEvent,
    place: &Placement<'_>,
    ts_ns: i64,
) -> Point {
    use crate::sources::modbus::Condition;
    let condition = match event.condition {
        Condition::LowPressure => "low_pressure",
        Condition::LowLevel => "low_level",
        Condition::SensorFault => "sensor_fault",
    };
    let mut p = Point::new(measurement::WATER_CONDITION, ts_ns)
        .tag("condition", condition)
        .field("active", Field::I64(event.active.into()));
    if let Some(v) = event.value.filter(|v| v.is_finite()) {
        p = p.field("value", Field::F64(v));
    }
    placed(p, place, event.device.as_str())
}

/// A numeric severity for the state, so panels can plot and threshold it: 0 normal or
/// cleared, 1 test, 2 hush, 3 pre-alarm, 4 alarm.
fn state_level(state: DetectorState) -> i64 {
    match state {
        DetectorState::Normal | DetectorState::Cleared => 0,
        DetectorState::Test => 1,
        DetectorState::Hush => 2,
        DetectorState::PreAlarm => 3,
        DetectorState::Alarm => 4,
    }
}

/// The wire name of an enum value (its serde name), for tags and string fields.
fn wire_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "unknown".to_owned(),
    }
}

/// Widens a device's `f32` through its shortest decimal form, so 0.21 is stored as 0.21 and
/// not as 0.20999999284744263, the exact value of the nearest `f32`.
/// `ryu` writes the shortest digits that read back to `v`, as `f32`'s `Display` does (the
/// test below holds it to that), without `core::fmt` and an allocation per reading.
fn wide(v: f32) -> f64 {
    if !v.is_finite() {
        return f64::from(v);
    }
    ryu::Buffer::new().format_finite(v).parse().unwrap_or(f64::from(v))
}

/// The point for one accepted uplink, stamped with the acceptance time `ts_ns`.
pub fn uplink_point(msg: &Uplink, place: &Placement<'_>, ts_ns: i64) -> Point {
    placed(unplaced_uplink_point(msg, ts_ns), place, msg.dev.as_str())
}

/// [`uplink_point`] without the tags of where the device sits ([`placement_tags`] gives
/// them), for [`Point::encode_placed`].
pub fn unplaced_uplink_point(msg: &Uplink, ts_ns: i64) -> Point {
    let (name, point) = match &msg.body {
        UplinkBody::Heartbeat(hb) => {
            let mut p = Point::new(measurement::HEARTBEAT, ts_ns)
                .field("signal_dbm", Field::I64(hb.signal_dbm.into()))
                .field("temperature_c", Field::F64(wide(hb.temperature_c)))
                .field("uptime_s", Field::I64(hb.uptime_s.into()))
                .field("firmware", Field::Str(hb.firmware.as_str().to_owned()));
            if let Some(mv) = hb.battery_mv {
                p = p.field("battery_mv", Field::I64(mv.into()));
            }
            if let Some(b) = hb.chamber_baseline {
                p = p.field("chamber_baseline", Field::I64(b.into()));
            }
            if let Some(d) = hb.drift_pct {
                p = p.field("drift_pct", Field::I64(d.into()));
            }
            ("heartbeat", p)
        }
        UplinkBody::State(s) => (
            "state",
            Point::new(measurement::DETECTOR_STATE, ts_ns)
                .tag("state", wire_name(&s.state))
                .field("level", Field::I64(state_level(s.state)))
                .field("obscuration_db_m", Field::F64(wide(s.obscuration_db_m))),
        ),
        UplinkBody::Fault(f) => (
            "fault",
            Point::new(measurement::FAULT, ts_ns)
                .tag("fault", wire_name(&f.fault))
                .field("active", Field::I64(f.active.into())),
        ),
        UplinkBody::CameraEvent(e) => {
            let mut p = Point::new(measurement::CAMERA_EVENT, ts_ns)
                .tag("channel", e.channel.to_string())
                .tag("event", wire_name(&e.event))
                .field("active", Field::I64(e.active.into()))
                .field("confidence_pct", Field::I64(e.confidence_pct.into()));
            if let Some(s) = &e.snapshot {
                p = p.field("snapshot", Field::Str(s.as_str().to_owned()));
            }
            ("camera_event", p)
        }
        UplinkBody::CameraHealth(h) => (
            "camera_health",
            Point::new(measurement::CAMERA_HEALTH, ts_ns)
                .tag("channel", h.channel.to_string())
                .field("online", Field::I64((h.status == ChannelStatus::Online).into()))
                .field("status", Field::Str(wire_name(&h.status))),
        ),
        UplinkBody::Water(w) => {
            let mut p = Point::new(measurement::WATER, ts_ns);
            if let Some(v) = w.pressure_mpa {
                p = p.field("pressure_mpa", Field::F64(wide(v)));
            }
            if let Some(v) = w.level_m {
                p = p.field("level_m", Field::F64(wide(v)));
            }
            ("water", p)
        }
        UplinkBody::Status(st) => (
            "status",
            Point::new(measurement::DEVICE_STATUS, ts_ns)
                .tag("source", "mqtt")
                .field("online", Field::I64(st.online.into())),
        ),
        // A device proving its boot is alive: a sign of life like an `online` status.
        UplinkBody::Boot(_) => (
            "boot",
            Point::new(measurement::DEVICE_STATUS, ts_ns)
                .tag("source", "boot")
                .field("online", Field::I64(1)),
        ),
        UplinkBody::FwStatus(f) => {
            let mut p = Point::new(measurement::FIRMWARE_UPDATE, ts_ns)
                .tag("state", f.state.as_str())
                .field("version", Field::Str(f.version.as_str().to_owned()))
                .field("offset", Field::I64(f.offset.into()));
            if let Some(e) = f.error {
                p = p.field("error", Field::Str(e.as_str().to_owned()));
            }
            ("fw_status", p)
        }
        UplinkBody::CommandAck(a) => (
            "command_ack",
            Point::new(measurement::COMMAND_ACK, ts_ns)
                .field("cmd_seq", Field::I64(a.cmd_seq.into()))
                .field("applied", Field::I64((a.result == AckResult::Applied).into()))
                .field("result", Field::Str(wire_name(&a.result))),
        ),
    };
    debug_assert_eq!(name, msg.kind().as_str());
    let mut point = point
        .field("boot", Field::I64(msg.boot.into()))
        .field("signed", Field::I64(msg.is_signed().into()))
        .field("seq", Field::I64(msg.seq.into()));
    if msg.ts_ms != 0 {
        point = point.field("device_ts_ms", Field::I64(msg.ts_ms as i64));
    }
    point
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use firegrid_protocol::{
        CameraEvent, CameraEventKind, CameraHealth, CommandAck, DeviceId, Fault, FaultKind, Heartbeat,
        StateChange, WaterReading,
    };

    use super::*;

    /// `(tag|field, key)` pairs documented per measurement in SCHEMA.md, plus the hierarchy
    /// tags and the per-message fields every device measurement carries.
    fn documented() -> BTreeMap<String, BTreeSet<(String, String)>> {
        let text = include_str!("../../SCHEMA.md");
        let mut out: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
        let mut common = BTreeSet::new();
        let mut current: Option<String> = None;
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("### `").and_then(|l| l.strip_suffix('`')) {
                current = Some(name.to_owned());
                out.entry(name.to_owned()).or_default();
                continue;
            }
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if cells.len() > 3 && (cells[1] == "tag" || cells[1] == "field") {
                let entry = (cells[1].to_owned(), cells[2].trim_matches('`').to_owned());
                match &current {
                    Some(m) => out.get_mut(m).unwrap().insert(entry),
                    None => common.insert(entry),
                };
            }
        }
        for (m, keys) in out.iter_mut() {
            if !m.starts_with("gateway_")
                && !["communication_loss", "case_transition", "alarm_flood"].contains(&m.as_str())
            {
                keys.extend(common.iter().cloned());
                for f in ["boot", "seq", "signed", "device_ts_ms"] {
                    keys.insert(("field".into(), f.into()));
                }
            }
        }
        out
    }

    fn used(point: &Point) -> BTreeSet<(String, String)> {
        let tags =
            point.tags.iter().filter(|(_, v)| !v.is_empty()).map(|(k, _)| ("tag".to_owned(), k.to_string()));
        tags.chain(point.fields.iter().map(|(k, _)| ("field".to_owned(), k.to_string()))).collect()
    }

    /// `wide` keeps what `f32`'s `Display` gave, which it replaced: the shortest decimal that
    /// reads back to the same `f32` (where two are equally short and equally near, as for
    /// 473.453125, `ryu` and `Display` may round the tie differently; both read back to the
    /// reading). Over a spread of every 4,099th bit pattern of `f32` (about a million values,
    /// every exponent and sign), plus readings as devices send them.
    #[test]
    fn widening_keeps_the_shortest_decimal_that_reads_back_to_the_reading() {
        let digits = |e: String| e.split('e').next().unwrap().replace(['-', '.'], "").len();
        let readings = [0.21f32, 0.1, 0.05, 21.5, -12.25, 0.3, 1e-7, 3.4e38, f32::MIN_POSITIVE, 0.0, -0.0];
        let spread = (0..=u32::MAX).step_by(4_099).map(f32::from_bits).filter(|v| v.is_finite());
        let mut checked = 0;
        for v in readings.into_iter().chain(spread) {
            let w = wide(v);
            assert_eq!((w as f32).to_bits(), v.to_bits(), "{v:e} widened to {w:e} reads back otherwise");
            assert_eq!(digits(format!("{w:e}")), digits(format!("{v:e}")), "{v:e} widened to {w:e}");
            checked += 1;
        }
        assert!(checked > 1_000_000, "{checked} values checked");
        assert_eq!(wide(0.21), 0.21);
        assert_eq!(wide(-12.25), -12.25);
        assert!(wide(f32::NAN).is_nan());
        assert_eq!(wide(f32::INFINITY), f64::INFINITY);
    }

    #[test]
    fn the_schema_document_lists_everything_the_writer_emits() {
        let doc = documented();
        let place = Placement {
            village: "v",
            street: "s",
            community: "c",
            grid: "g",
            building: "b",
            device_kind: "smoke_detector",
        };
        let dev = DeviceId::new("sd-1").unwrap();
        let bodies = [
            UplinkBody::Heartbeat(Heartbeat {
                battery_mv: Some(3000),
                signal_dbm: -90,
                chamber_baseline: Some(1),
                drift_pct: Some(2),
                temperature_c: 20.0,
                firmware: heapless::String::try_from("1").unwrap(),
                uptime_s: 1,
            }),
            UplinkBody::State(StateChange { state: DetectorState::Alarm, obscuration_db_m: 0.2 }),
            UplinkBody::Fault(Fault { fault: FaultKind::Tamper, active: true }),
            UplinkBody::CameraEvent(CameraEvent {
                channel: 1,
                event: CameraEventKind::Fire,
                active: true,
                confidence_pct: 90,
                snapshot: Some(heapless::String::try_from("s/1.jpg").unwrap()),
            }),
            UplinkBody::CameraHealth(CameraHealth { channel: 1, status: ChannelStatus::Online }),
            UplinkBody::Water(WaterReading { pressure_mpa: Some(0.3), level_m: Some(2.0) }),
            UplinkBody::CommandAck(CommandAck { cmd_seq: 1, result: AckResult::Applied }),
            UplinkBody::Status(firegrid_protocol::Status { online: false }),
        ];
        let mut points: Vec<Point> = bodies
            .into_iter()
            .map(|b| uplink_point(&Uplink::new(dev.clone(), 1, 1, 5, b), &place, 1))
            .collect();
        let reading = crate::sources::modbus::Reading {
            device: dev.clone(),
            ts_ms: 1,
            water: Some(WaterReading { pressure_mpa: Some(0.3), level_m: None }),
            other: vec![],
        };
        points.push(modbus_reading_point(&reading, &place, 1));
        let condition = crate::sources::modbus::ConditionEvent {
            device: dev.clone(),
            condition: crate::sources::modbus::Condition::LowPressure,
            active: true,
            value: Some(0.05),
            ts_ms: 1,
        };
        points.push(modbus_condition_point(&condition, &place, 1));
        points.push(device_status_point(&place, "sd-1", false, 10, 1));
        points.push(device_admin_point(&place, "sd-1", "reset_window", "street-desk", "127.0.0.1", 1));
        points.push(communication_loss_point("grid", "g", true, 10, 12, 1));
        let transition = firegrid_alerting::Transition {
            case: firegrid_alerting::CaseId(1),
            at: 1,
            kind: firegrid_alerting::TransitionKind::Disposed {
                disposition: firegrid_alerting::Disposition::FalseAlarm {
                    cause: firegrid_alerting::FalseAlarmCause::Cooking,
                },
            },
            stage: firegrid_alerting::Stage::Handling,
            level: firegrid_alerting::Level::Grid,
            severity: firegrid_alerting::Severity::PreAlarm,
            case_kind: firegrid_alerting::CaseKind::Fire,
            location: firegrid_alerting::Location::default(),
            officer: Some("o".into()),
            device: Some("d".into()),
            since_open_ms: 1,
            drill: false,
        };
        points.push(case_transition_point(&transition, 1));
        let escalated = firegrid_alerting::Transition {
            kind: firegrid_alerting::TransitionKind::Escalated {
                from: firegrid_alerting::Level::Grid,
                reason: firegrid_alerting::NotifyReason::Escalated,
            },
            ..transition
        };
        points.push(case_transition_point(&escalated, 1));
        let desk: firegrid_alerting::Scope = "grid:g".parse().unwrap();
        points.push(alarm_flood_point(&firegrid_alerting::Kpi::Flood { desk, pages: 11, at: 1 }, 1));
        let progress = crate::firmware::delivery::control::Progress {
            id: "r".into(),
            version: "1.5.0".into(),
            paused: false,
            done: false,
            waves: (1, 2),
            resumes: 0,
            counts: [("booted".to_owned(), 1)].into(),
            devices: vec![],
            updated_ms: 1,
            image_bytes: 3_500,
            max_failure_share: 0.1,
            failure_share: 0.0,
            paused_by: None,
        };
        points.push(firmware_rollout_point(&progress, 1));
        let mut seen = BTreeSet::new();
        for point in &points {
            let keys = doc
                .get(point.measurement.as_ref())
                .unwrap_or_else(|| panic!("{} is not in SCHEMA.md", point.measurement));
            let missing: Vec<_> = used(point).difference(keys).cloned().collect();
            assert!(missing.is_empty(), "{}: not in SCHEMA.md: {missing:?}", point.measurement);
            seen.insert(point.measurement.clone());
        }
        for name in [
            measurement::HEARTBEAT,
            measurement::DETECTOR_STATE,
            measurement::FAULT,
            measurement::CAMERA_EVENT,
            measurement::CAMERA_HEALTH,
            measurement::WATER,
            measurement::COMMAND_ACK,
            measurement::WATER_CONDITION,
            measurement::DEVICE_STATUS,
            measurement::DEVICE_ADMIN,
            measurement::COMMUNICATION_LOSS,
            measurement::GATEWAY_HEALTH,
            measurement::GATEWAY_MESSAGES,
            measurement::GATEWAY_DESTINATION,
            measurement::CASE_TRANSITION,
            measurement::ALARM_FLOOD,
            measurement::FIRMWARE_ROLLOUT,
        ] {
            assert!(doc.contains_key(name), "{name} has no section in SCHEMA.md");
        }
        assert_eq!(seen.len(), 14);
    }

    #[test]
    fn an_alarm_becomes_one_tagged_line() {
        let msg = Uplink::new(
            DeviceId::new("sd-1").unwrap(),
            2,
            17,
            1_763_860_000_123,
            UplinkBody::State(StateChange { state: DetectorState::Alarm, obscuration_db_m: 0.21 }),
        );
        let place = Placement {
            village: "fuhai-1",
            street: "fuhai",
            community: "c1",
            grid: "g3",
            building: "b12",
            device_kind: "smoke_detector",
        };
        let mut out = Vec::new();
        uplink_point(&msg, &place, 1_763_860_000_200_000_001).encode(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "detector_state,building=b12,community=c1,device=sd-1,device_kind=smoke_detector,grid=g3,\
             state=alarm,street=fuhai,village=fuhai-1 level=4i,obscuration_db_m=0.21,boot=2i,signed=0i,seq=17i,\
             device_ts_ms=1763860000123i 1763860000200000001\n"
        );
    }
}
