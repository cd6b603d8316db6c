use firegrid_protocol::{
    AckResult, CommandAck, DetectorState, DeviceId, Fault, FaultKind, Heartbeat, StateChange, UplinkBody,
};

use super::*;

fn msg(seq: u32, class: Class) -> Uplink {
    let body = match class {
        Class::Alarm => UplinkBody::State(StateChange { state: DetectorState::Alarm, obscuration_db_m: 0.2 }),
        Class::Event => UplinkBody::Fault(Fault { fault: FaultKind::Tamper, active: true }),
        Class::Telemetry => UplinkBody::Heartbeat(Heartbeat {
            battery_mv: None,
            signal_dbm: -90,
            chamber_baseline: None,
            drift_pct: None,
            temperature_c: 20.0,
            firmware: "1".try_into().unwrap(),
            uptime_s: 0,
        }),
    };
    Uplink::new(DeviceId::new("d").unwrap(), 1, seq, 0, body)
}

/// Pushes messages of the given classes (seq = position) into a 4-slot outbox and returns
/// the queued seqs in sending order and the shed seqs.
fn check(classes: &[Class], queued: &[u32], shed: &[u32]) {
    let mut outbox: Outbox<4> = Outbox::new();
    let mut got_shed = Vec::new();
    for (seq, &class) in classes.iter().enumerate() {
        let m = msg(seq as u32, class);
        if let Some(s) = outbox.push(m, 0) {
            got_shed.push(s.seq);
        }
    }
    let mut order = Vec::new();
    while let Some(m) = outbox.next_due(0) {
        let seq = m.seq;
        order.push(seq);
        outbox.mark_sent(1, seq, 0);
    }
    assert_eq!((order.as_slice(), got_shed.as_slice()), (queued, shed), "classes {classes:?}");
}

#[test]
fn alarm_first_then_events_then_telemetry_oldest_first() {
    use Class::*;
    check(&[Telemetry, Event, Alarm, Alarm], &[2, 3, 1, 0], &[]);
}

#[test]
fn overflow_sheds_oldest_telemetry_first_never_an_alarm() {
    use Class::*;
    // Telemetry is shed, oldest first.
    check(&[Telemetry, Telemetry, Alarm, Event, Alarm], &[2, 4, 3, 1], &[0]);
    check(&[Telemetry, Telemetry, Alarm, Event, Telemetry], &[2, 3, 1, 4], &[0]);
    // With no telemetry queued, new telemetry is refused.
    check(&[Alarm, Event, Alarm, Event, Telemetry], &[0, 2, 1, 3], &[4]);
    // An alarm displaces the oldest event, never another alarm while events are queued.
    check(&[Alarm, Event, Alarm, Event, Alarm], &[0, 2, 4, 3], &[1]);
    // An event displaces the oldest event; with only alarms queued it is refused.
    check(&[Alarm, Event, Alarm, Alarm, Event], &[0, 2, 3, 4], &[1]);
    check(&[Alarm, Alarm, Alarm, Alarm, Event], &[0, 1, 2, 3], &[4]);
}

#[test]
fn retransmits_until_acknowledged() {
    let mut outbox: Outbox<4> = Outbox::new();
    outbox.push(msg(0, Class::Alarm), 0);
    outbox.push(msg(1, Class::Event), 0);
    outbox.mark_sent(1, 0, 0);
    outbox.mark_sent(1, 1, 0);
    assert_eq!(outbox.next_due(ALARM_RETRY_MS - 1), None);
    assert_eq!(outbox.next_due(ALARM_RETRY_MS).map(|m| m.seq), Some(0), "alarms retry every 10 s");
    assert_eq!(outbox.next_due_ms(), Some(ALARM_RETRY_MS));
    outbox.mark_sent(1, 0, ALARM_RETRY_MS);
    assert!(outbox.ack(1, 0));
    assert!(!outbox.ack(1, 0), "a duplicate ack is harmless");
    assert_eq!(outbox.next_due(RETRY_MS - 1), None);
    assert_eq!(outbox.next_due(RETRY_MS).map(|m| m.seq), Some(1), "events retry after 30 s");
    outbox.mark_sent(1, 1, RETRY_MS);
    assert_eq!(outbox.entries()[0].due_ms, 3 * RETRY_MS, "then back off");
    assert!(!outbox.ack(2, 1), "the boot counter is part of the id");
    assert!(outbox.ack(1, 1));
    assert!(outbox.is_empty());
    let _ = CommandAck { cmd_seq: 0, result: AckResult::Applied };
}

proptest::proptest! {
    /// Model-based: whatever is pushed, an alarm is only ever shed when the outbox holds
    /// nothing but alarms, and telemetry is always shed before anything else.
    #[test]
    fn alarms_survive_any_push_sequence(classes in proptest::collection::vec(0u8..3, 1..40)) {
        let mut outbox: Outbox<6> = Outbox::new();
        for (seq, c) in classes.iter().enumerate() {
            let class = [Class::Alarm, Class::Event, Class::Telemetry][usize::from(*c)];
            let before: Vec<Class> = outbox.entries().iter().map(|e| e.msg.class()).collect();
            let shed = outbox.push(msg(seq as u32, class), 0);
            if let Some(s) = shed {
                match s.class() {
                    Class::Alarm => proptest::prop_assert!(before.iter().all(|c| *c == Class::Alarm)),
                    Class::Event => proptest::prop_assert!(!before.contains(&Class::Telemetry)),
                    Class::Telemetry => {}
                }
            }
            proptest::prop_assert!(outbox.len() <= 6);
        }
    }
}
