//! Spool tests: a model-based property test against a simple reference model, and targeted
//! tests for crash recovery, size limits and archive rotation.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

const DESTS: [&str; 2] = ["street", "city"];

fn cfg(dir: &Path) -> SpoolConfig {
    SpoolConfig { segment_bytes: 4 * 1024, max_bytes: 1 << 30, ..SpoolConfig::new(dir) }
}

fn payload(id_hint: u64, len: usize) -> Vec<u8> {
    let mut p = format!("m,device=d{id_hint} v={id_hint}i ").into_bytes();
    p.resize(p.len() + len, b'x');
    p
}

/// Simulates `kill -9`: the process vanishes without running destructors, so whatever sits
/// in the spool's write buffer is lost, exactly as it would be.
fn crash(spool: Spool) {
    std::mem::forget(spool);
}

#[derive(Debug, Clone)]
enum Op {
    Append(Class, usize),
    Commit(Durability),
    Read(usize, usize),
    AckRead(usize),
    Rewind(usize),
    Reopen,
    Crash,
    /// A write failed: [`Spool::reopen`] throws the buffer away and reads the files again.
    Discard,
}

fn op() -> impl Strategy<Value = Op> {
    let class = prop_oneof![Just(Class::Alarm), Just(Class::Event), Just(Class::Telemetry)];
    prop_oneof![
        6 => (class, 0usize..600).prop_map(|(c, n)| Op::Append(c, n)),
        2 => prop_oneof![Just(Durability::Os), Just(Durability::Disk)].prop_map(Op::Commit),
        3 => (0usize..2, 1usize..40).prop_map(|(d, n)| Op::Read(d, n)),
        2 => (0usize..2).prop_map(Op::AckRead),
        1 => (0usize..2).prop_map(Op::Rewind),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        1 => Just(Op::Discard),
    ]
}

/// The reference: a map of stored records and, per destination, what it acknowledged and
/// what it has read.
#[derive(Default)]
struct Model {
    records: BTreeMap<u64, (Class, Vec<u8>)>,
    /// Appended since the last commit: lost in a crash unless the write buffer happened to
    /// spill them (a prefix of them survives).
    uncommitted: Vec<u64>,
    acked: [u64; 2],
    read_upto: [u64; 2],
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(cfg(dir.path()), &DESTS).unwrap();
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Append(class, len) => {
                let id_hint = spool.next_id;
                let p = payload(id_hint, len);
                let Appended::Stored(id) = spool.append(class, id_hint, &p).unwrap() else {
                    return Err(TestCaseError::fail("nothing may be shed below the limit"));
                };
                prop_assert_eq!(id, id_hint);
                prop_assert!(model.records.keys().all(|k| *k < id), "ids grow");
                model.records.insert(id, (class, p));
                model.uncommitted.push(id);
            }
            Op::Commit(d) => {
                spool.commit(d).unwrap();
                model.uncommitted.clear();
            }
            Op::Read(d, n) => {
                let got = spool.read(DESTS[d], n, usize::MAX).unwrap();
                let expected: Vec<_> = model
                    .records
                    .range(model.read_upto[d] + 1..)
                    .take(n)
                    .map(|(id, (class, p))| Record { id: *id, ts_ms: *id, class: *class, payload: p.clone() })
                    .collect();
                prop_assert_eq!(&got, &expected);
                if let Some(last) = got.last() {
                    model.read_upto[d] = last.id;
                }
            }
            Op::AckRead(d) => {
                spool.ack(DESTS[d], model.read_upto[d]).unwrap();
                model.acked[d] = model.acked[d].max(model.read_upto[d]);
            }
            Op::Rewind(d) => {
                spool.rewind(DESTS[d]).unwrap();
                model.read_upto[d] = model.acked[d];
            }
            Op::Reopen | Op::Crash | Op::Discard => {
                match op {
                    Op::Crash => {
                        crash(spool);
                        spool = Spool::open(cfg(dir.path()), &DESTS).unwrap();
                    }
                    Op::Discard => {
                        let appended = spool.stats().appended;
                        spool.reopen().unwrap();
                        prop_assert_eq!(spool.stats().appended, appended, "counters are kept");
                    }
                    _ => {
                        drop(spool);
                        spool = Spool::open(cfg(dir.path()), &DESTS).unwrap();
                    }
                }
                // Records past the last survivor were lost (only possible when uncommitted).
                let survivors_end = spool.next_id;
                for id in model.uncommitted.drain(..) {
                    if id >= survivors_end {
                        model.records.remove(&id);
                    }
                }
                prop_assert!(model.records.keys().all(|k| *k < survivors_end));
                prop_assert_eq!(spool.stats().corrupt_regions, 0);
                model.read_upto = model.acked;
            }
        }
        // What every destination has not acknowledged is still there, and the depth says so.
        for (d, name) in DESTS.iter().enumerate() {
            let unacked = model.records.range(model.acked[d] + 1..).count() as u64;
            prop_assert!(spool.depth(name).unwrap() >= unacked);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn behaves_like_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops)?;
    }
}

#[test]
fn committed_records_survive_a_crash_and_uncommitted_ones_do_not_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(cfg(dir.path()), &DESTS).unwrap();
    for i in 0..10 {
        spool.append(Class::Alarm, i, &payload(i, 10)).unwrap();
    }
    spool.commit(Durability::Os).unwrap();
    spool.append(Class::Alarm, 99, b"lost").unwrap();
    crash(spool);
    let mut spool = Spool::open(cfg(dir.path()), &DESTS).unwrap();
    let got = spool.read("street", 100, usize::MAX).unwrap();
    assert_eq!(got.iter().map(|r| r.ts_ms).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
    assert_eq!(spool.stats().corrupt_regions, 0);
}

#[test]
fn torn_or_corrupt_tails_are_cut_and_counted_and_earlier_records_delivered() {
    for damage in ["torn", "flipped"] {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(cfg(dir.path()), &DESTS).unwrap();
        for i in 1..=5 {
            spool.append(Class::Event, i, &payload(i, 20)).unwrap();
        }
        spool.commit(Durability::Disk).unwrap();
        drop(spool);
        let seg = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&seg).unwrap();
        match damage {
            "torn" => bytes.truncate(bytes.len() - 7),
            _ => {
                let at = bytes.len() - 3;
                bytes[at] ^= 0xff;
            }
        }
        fs::write(&seg, &bytes).unwrap();

        let mut spool = Spool::open(cfg(dir.path()), &DESTS).unwrap();
        assert_eq!(spool.stats().corrupt_regions, 1, "{damage}");
        assert!(spool.stats().corrupt_bytes > 0);
        let ids: Vec<_> = spool.read("street", 100, usize::MAX).unwrap().iter().map(|r| r.id).collect();
        assert_eq!(ids, [1, 2, 3, 4], "{damage}");
        // The spool keeps working after the cut: the next record follows the survivors.
        assert_eq!(spool.append(Class::Alarm, 6, b"after").unwrap(), Appended::Stored(5));
        assert_eq!(spool.read("street", 100, usize::MAX).unwrap()[0].payload, b"after");
        drop(spool);
        assert_eq!(Spool::open(cfg(dir.path()), &DESTS).unwrap().stats().corrupt_regions, 0, "{damage}");
    }
}

#[test]
fn acknowledged_segments_are_deleted_only_when_every_destination_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(cfg(dir.path()), &DESTS).unwrap();
    for i in 0..200 {
        spool.append(Class::Telemetry, i, &payload(i, 100)).unwrap();
    }
    let segments = |dir: &Path| {
        fs::read_dir(dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "seg")
            .count()
    };
    let before = segments(dir.path());
    assert!(before > 3);
    let all = spool.read("street", 1000, usize::MAX).unwrap();
    spool.ack("street", all.last().unwrap().id).unwrap();
    assert_eq!(segments(dir.path()), before, "city has read nothing yet");
    let all_city = spool.read("city", 1000, usize::MAX).unwrap();
    assert_eq!(all_city.len(), 200);
    spool.ack("city", all_city.last().unwrap().id).unwrap();
    assert_eq!(segments(dir.path()), 1, "only the active segment remains");
    assert_eq!(spool.depth("street").unwrap(), 0);
    // Ids keep growing across a restart after the deletions.
    drop(spool);
    let mut spool = Spool::open(cfg(dir.path()), &DESTS).unwrap();
    assert_eq!(spool.append(Class::Alarm, 0, b"x").unwrap(), Appended::Stored(201));
    assert_eq!(spool.read("street", 10, usize::MAX).unwrap().len(), 1);
    // Even with every segment file gone (an operator cleaned the directory), new ids start
    // above what the ledgers acknowledged, so nothing new hides below a read position.
    spool.ack("street", 201).unwrap();
    spool.ack("city", 200).unwrap();
    drop(spool);
    for entry in fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().unwrap() == "seg" {
            fs::remove_file(path).unwrap();
        }
    }
    let mut spool = Spool::open(cfg(dir.path()), &DESTS).unwrap();
    assert_eq!(spool.append(Class::Alarm, 0, b"y").unwrap(), Appended::Stored(202));
    assert_eq!(spool.read("street", 10, usize::MAX).unwrap()[0].payload, b"y");
}

fn fill(spool: &mut Spool, n: u64) -> Vec<Appended> {
    (0..n)
        .map(|i| {
            let class = if i % 10 == 0 { Class::Alarm } else { Class::Telemetry };
            spool.append(class, i, &payload(i, 200)).unwrap()
        })
        .collect()
}

#[test]
fn when_full_the_oldest_telemetry_is_shed_and_no_alarm_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let config = SpoolConfig { max_bytes: 32 * 1024, ..cfg(dir.path()) };
    let mut spool = Spool::open(config, &DESTS).unwrap();
    let appended = fill(&mut spool, 1000);
    assert!(appended.iter().all(|a| matches!(a, Appended::Stored(_))));
    assert!(spool.total_bytes() <= 32 * 1024 + 4 * 1024, "stays near the limit: {}", spool.total_bytes());
    let shed = spool.stats().shed;
    assert!(shed > 500, "shed {shed}");
    let got = spool.read("street", 10_000, usize::MAX).unwrap();
    let alarms: Vec<_> = got.iter().filter(|r| r.class == Class::Alarm).map(|r| r.ts_ms).collect();
    assert_eq!(alarms, (0..1000).step_by(10).collect::<Vec<_>>(), "every alarm, in order");
    let telemetry: Vec<_> = got.iter().filter(|r| r.class == Class::Telemetry).map(|r| r.ts_ms).collect();
    assert_eq!(telemetry.len() as u64 + shed, 900, "every telemetry record either kept or counted");
    assert!(telemetry.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(telemetry.last(), Some(&999), "the newest telemetry is kept");
    assert!(telemetry[0] > 500, "the oldest went first: {}", telemetry[0]);
}

#[test]
fn drop_new_telemetry_keeps_the_oldest_and_every_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        SpoolConfig { max_bytes: 32 * 1024, when_full: WhenFull::DropNewTelemetry, ..cfg(dir.path()) };
    let mut spool = Spool::open(config, &DESTS).unwrap();
    let appended = fill(&mut spool, 1000);
    let dropped = appended.iter().filter(|a| **a == Appended::Dropped).count() as u64;
    assert!(dropped > 500);
    assert_eq!(spool.stats().shed, dropped);
    let got = spool.read("street", 10_000, usize::MAX).unwrap();
    assert_eq!(got.iter().filter(|r| r.class == Class::Alarm).count(), 100);
    assert_eq!(got.iter().filter(|r| r.class == Class::Telemetry).map(|r| r.ts_ms).next(), Some(1));
    assert!(spool.stats().over_limit > 0, "alarms were stored beyond the limit");
}

#[test]
fn without_destinations_the_archive_rotates_by_size_and_age() {
    let dir = tempfile::tempdir().unwrap();
    let config = SpoolConfig { max_bytes: 32 * 1024, archive_max_age_ms: None, ..cfg(dir.path()) };
    let mut spool = Spool::open(config, &[]).unwrap();
    fill(&mut spool, 1000);
    assert!(spool.total_bytes() <= 32 * 1024 + 4 * 1024);
    assert!(spool.stats().segments_deleted > 0);

    let dir = tempfile::tempdir().unwrap();
    let config = SpoolConfig { archive_max_age_ms: Some(100), ..cfg(dir.path()) };
    let mut spool = Spool::open(config, &[]).unwrap();
    fill(&mut spool, 1000);
    let oldest = segment_first_ts(&spool, dir.path());
    assert!(oldest + 100 + 30 >= 999, "only the last ~100 ms (plus a segment) kept, oldest at {oldest}");
}

fn segment_first_ts(spool: &Spool, dir: &Path) -> u64 {
    let mut reader = BufReader::new(File::open(segment_path(dir, spool.segments[0].first_id)).unwrap());
    match read_record(&mut reader, &mut Vec::new()).unwrap() {
        Some(Decoded::Record(r, _)) => r.ts_ms,
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_destination_and_oversized_records_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(cfg(dir.path()), &DESTS).unwrap();
    assert!(matches!(spool.read("nowhere", 1, 1), Err(SpoolError::UnknownDestination(_))));
    assert!(matches!(
        spool.append(Class::Alarm, 0, &vec![0; MAX_RECORD_PAYLOAD + 1]),
        Err(SpoolError::RecordTooLarge(_))
    ));
}

#[test]
fn tail_returns_the_newest_records_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(cfg(dir.path()), &DESTS).unwrap();
    assert!(spool.tail(5).unwrap().is_empty());
    for i in 0..100 {
        spool.append(Class::Event, i, &payload(i, 100)).unwrap();
    }
    assert!(spool.segments.len() > 2, "spans segments");
    let ts: Vec<_> = spool.tail(30).unwrap().iter().map(|r| r.ts_ms).collect();
    assert_eq!(ts, (70..100).collect::<Vec<_>>());
    assert_eq!(spool.tail(1_000).unwrap().len(), 100);
}
