use std::collections::VecDeque;
use std::io::Write;

use firegrid_protocol::{
    CameraEvent, CameraEventKind, CameraHealth, ChannelStatus, DeviceId, Uplink, UplinkBody,
};
use proptest::prelude::*;

use super::*;

fn event(seq: u32) -> Uplink {
    let body = UplinkBody::CameraEvent(CameraEvent {
        channel: 1,
        event: CameraEventKind::Fire,
        active: true,
        confidence_pct: 90,
        snapshot: Some("/snap/1".try_into().unwrap()),
    });
    Uplink::new(DeviceId::new("cam-1").unwrap(), 1, seq, 1_763_860_000_000, body)
}

fn health(seq: u32) -> Uplink {
    let body = UplinkBody::CameraHealth(CameraHealth { channel: 1, status: ChannelStatus::Online });
    Uplink::new(DeviceId::new("cam-1").unwrap(), 1, seq, 0, body)
}

fn seqs(outbox: &Outbox) -> Vec<u32> {
    outbox.pending().map(|m| m.seq).collect()
}

#[test]
fn survives_reopening_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.jsonl");
    let mut outbox = Outbox::open(&path, 100).unwrap();
    for seq in 0..5 {
        outbox.push(event(seq)).unwrap();
    }
    assert!(outbox.ack(1, 2).unwrap());
    assert!(!outbox.ack(1, 2).unwrap(), "already gone");
    assert!(!outbox.ack(9, 0).unwrap(), "never there");
    drop(outbox);
    let outbox = Outbox::open(&path, 100).unwrap();
    assert_eq!(seqs(&outbox), [0, 1, 3, 4]);
    assert_eq!(outbox.pending().next().unwrap(), &event(0), "messages come back whole");
}

#[test]
fn a_torn_last_line_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.jsonl");
    let mut outbox = Outbox::open(&path, 100).unwrap();
    outbox.push(event(0)).unwrap();
    drop(outbox);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"push\":{\"v\":1,\"de")
        .unwrap();
    let mut outbox = Outbox::open(&path, 100).unwrap();
    assert_eq!(seqs(&outbox), [0]);
    assert_eq!(outbox.corrupt_records(), 0);
    outbox.push(event(1)).unwrap();
    drop(outbox);
    assert_eq!(seqs(&Outbox::open(&path, 100).unwrap()), [0, 1]);
}

#[test]
fn a_corrupt_line_inside_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.jsonl");
    let mut outbox = Outbox::open(&path, 100).unwrap();
    outbox.push(event(0)).unwrap();
    drop(outbox);
    std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"garbage\n").unwrap();
    let mut outbox = Outbox::open(&path, 100).unwrap();
    outbox.push(event(1)).unwrap();
    drop(outbox);
    let outbox = Outbox::open(&path, 100).unwrap();
    assert_eq!(seqs(&outbox), [0, 1]);
    assert_eq!(outbox.corrupt_records(), 1);
}

#[test]
fn the_file_shrinks_back_to_the_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.jsonl");
    let mut outbox = Outbox::open(&path, 100).unwrap();
    outbox.push(event(0)).unwrap();
    for seq in 1..2_000 {
        outbox.push(event(seq)).unwrap();
        outbox.ack(1, seq).unwrap();
    }
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size < 1024 * 200, "compacted: {size} bytes");
    drop(outbox);
    assert_eq!(seqs(&Outbox::open(&path, 100).unwrap()), [0]);
}

#[test]
fn when_full_health_is_shed_and_events_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(&dir.path().join("o.jsonl"), 3).unwrap();
    outbox.push(event(0)).unwrap();
    outbox.push(health(1)).unwrap();
    outbox.push(event(2)).unwrap();
    outbox.push(event(3)).unwrap();
    assert_eq!(seqs(&outbox), [0, 2, 3]);
    assert_eq!(outbox.shed(), 1);
    assert!(matches!(outbox.push(event(4)), Err(OutboxError::Full { pending: 3 })));
    assert_eq!(seqs(&outbox), [0, 2, 3]);
}

#[derive(Debug, Clone)]
enum Op {
    PushEvent,
    PushHealth,
    /// Acknowledges the pending message at this index (modulo), or a missing one.
    Ack(usize),
    AckMissing,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::PushEvent),
        2 => Just(Op::PushHealth),
        4 => any::<usize>().prop_map(Op::Ack),
        1 => Just(Op::AckMissing),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The outbox behaves like a plain in-memory queue, across reopenings.
    #[test]
    fn matches_a_queue_model(ops in prop::collection::vec(op(), 0..120)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.jsonl");
        let max = 16;
        let mut outbox = Outbox::open(&path, max).unwrap();
        let mut model: VecDeque<Uplink> = VecDeque::new();
        let mut next = 0u32;
        for op in ops {
            match op {
                Op::PushEvent | Op::PushHealth => {
                    let msg = if matches!(op, Op::PushEvent) { event(next) } else { health(next) };
                    next += 1;
                    let result = outbox.push(msg.clone());
                    if model.len() >= max {
                        match model.iter().position(|m| m.kind() == firegrid_protocol::UplinkKind::CameraHealth) {
                            Some(i) => { model.remove(i); }
                            None => { prop_assert!(result.is_err()); continue; }
                        }
                    }
                    prop_assert!(result.is_ok());
                    model.push_back(msg);
                }
                Op::Ack(i) if !model.is_empty() => {
                    let m = model.remove(i % model.len()).unwrap();
                    prop_assert!(outbox.ack(m.boot, m.seq).unwrap());
                }
                Op::Ack(_) | Op::AckMissing => prop_assert!(!outbox.ack(1, u32::MAX).unwrap()),
                Op::Reopen => {
                    drop(outbox);
                    outbox = Outbox::open(&path, max).unwrap();
                }
            }
            prop_assert_eq!(outbox.pending().cloned().collect::<Vec<_>>(), model.iter().cloned().collect::<Vec<_>>());
        }
    }
}
