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

#[test]
fn telemetry_leaves_when_handed_to_the_link_alarms_and_events_when_acknowledged() {
    let mut outbox: Outbox<4> = Outbox::new();
    outbox.push(msg(0, Class::Telemetry), 0);
    outbox.push(msg(1, Class::Alarm), 0);
    outbox.push(msg(2, Class::Event), 0);
    // While the link is down nothing is handed over, and the heartbeat waits with the rest
    // for as long as it takes.
    assert_eq!(outbox.next_due(MAX_RETRY_MS).map(|m| m.seq), Some(1));
    assert_eq!(outbox.len(), 3);
    // The link is up: each is handed over once, alarm first.
    let mut order = Vec::new();
    while let Some(m) = outbox.next_due(0) {
        let seq = m.seq;
        order.push(seq);
        outbox.mark_sent(1, seq, 0);
    }
    assert_eq!(order, [1, 2, 0]);
    let queued: Vec<u32> = outbox.entries().iter().map(|e| e.msg.seq).collect();
    assert_eq!(queued, [1, 2], "the heartbeat left without an ack; the alarm and the event wait for theirs");
    // Never resent, however long no ack comes; the alarm and the event are.
    let mut resent = Vec::new();
    let mut now = 0;
    while now <= 2 * MAX_RETRY_MS {
        while let Some(m) = outbox.next_due(now) {
            let seq = m.seq;
            resent.push(seq);
            outbox.mark_sent(1, seq, now);
        }
        now += 1_000;
    }
    assert!(!resent.contains(&0) && resent.contains(&1) && resent.contains(&2), "{resent:?}");
    assert!(outbox.ack(1, 1) && outbox.ack(1, 2));
    assert!(outbox.is_empty());
}

/// One step of the delivery model test.
#[derive(Debug, Clone)]
enum Op {
    Push(Class),
    /// The link takes every due message (or is down and takes none), then time passes.
    Pump {
        up: bool,
        wait_ms: u64,
    },
    /// The gateway acknowledges the n-th message ever pushed.
    Ack(usize),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    let class = prop_oneof![Just(Class::Alarm), Just(Class::Event), Just(Class::Telemetry)];
    prop_oneof![
        3 => class.prop_map(Op::Push),
        3 => (any::<bool>(), 0u64..2 * MAX_RETRY_MS).prop_map(|(up, wait_ms)| Op::Pump { up, wait_ms }),
        2 => (0usize..40).prop_map(Op::Ack),
    ]
}

proptest::proptest! {
    /// Model-based: against a reference set of live messages, a message is in the outbox
    /// exactly while it is pushed, not shed, and neither acknowledged nor (for telemetry)
    /// handed to the link; telemetry goes out at most once.
    #[test]
    fn delivery_follows_the_class_rule(ops in proptest::collection::vec(op(), 1..80)) {
        let mut outbox: Outbox<6> = Outbox::new();
        let mut live = std::collections::BTreeSet::new();
        let mut sent = std::collections::BTreeSet::new();
        let mut pushed = 0u32;
        let mut now = 0;
        for op in ops {
            match op {
                Op::Push(class) => {
                    live.insert(pushed);
                    if let Some(shed) = outbox.push(msg(pushed, class), now) {
                        live.remove(&shed.seq);
                    }
                    pushed += 1;
                }
                Op::Pump { up, wait_ms } => {
                    while let Some(m) = outbox.next_due(now).filter(|_| up) {
                        let (seq, class) = (m.seq, m.class());
                        let first = sent.insert(seq);
                        if class == Class::Telemetry {
                            proptest::prop_assert!(first, "telemetry is sent once");
                            live.remove(&seq);
                        }
                        outbox.mark_sent(1, seq, now);
                    }
                    now += wait_ms;
                }
                Op::Ack(n) => {
                    let seq = n as u32;
                    proptest::prop_assert_eq!(outbox.ack(1, seq), live.remove(&seq));
                }
            }
            let queued: std::collections::BTreeSet<u32> = outbox.entries().iter().map(|e| e.msg.seq).collect();
            proptest::prop_assert_eq!(&queued, &live);
        }
    }

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
