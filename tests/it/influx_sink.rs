//! The spool drained into real databases by the gateway's InfluxDB sink: exact counts and
//! values, an outage, a destination that refuses writes, and a poison batch.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use firegrid_gateway::series::{Field, Point};
use firegrid_gateway::sinks::influx::{
    DestinationConfig, DestinationKind, DestinationStats, Signals, run_destination, writer_for,
};
use firegrid_gateway::spool::{Durability, Spool, SpoolConfig};
use firegrid_protocol::Class;
use firegrid_tests::{InfluxDb1, VictoriaMetrics};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const DB: &str = "firegrid";

/// A running destination: the spool it drains and the handles to steer and observe it.
struct Drain {
    spool: Arc<Mutex<Spool>>,
    notify: Arc<Notify>,
    stats: Arc<DestinationStats>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Drain {
    fn start(dir: &Path, cfg: DestinationConfig) -> Drain {
        let spool = Spool::open(SpoolConfig::new(dir.join("spool")), &[cfg.name.as_str()]).unwrap();
        let spool = Arc::new(Mutex::new(spool));
        let notify = Arc::new(Notify::new());
        let stats = Arc::new(DestinationStats::default());
        let shutdown = CancellationToken::new();
        let writer = writer_for(&cfg).unwrap();
        let task = tokio::spawn(run_destination(
            spool.clone(),
            cfg,
            writer,
            Signals { appended: notify.clone(), backlog: Arc::default() },
            stats.clone(),
            dir.join("dead-letter"),
            shutdown.clone(),
        ));
        Drain { spool, notify, stats, shutdown, task }
    }

    /// Appends lines the way ingest does: stored, committed, destinations woken.
    fn append(&self, class: Class, lines: &[u8]) {
        let mut spool = self.spool.lock().unwrap();
        spool.append(class, now_ms(), lines).unwrap();
        spool.commit(Durability::Os).unwrap();
        drop(spool);
        self.notify.notify_waiters();
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn v1(db: &InfluxDb1, database: &str) -> DestinationConfig {
    DestinationConfig {
        max_backoff: Duration::from_secs(1),
        ..DestinationConfig::new(
            "street",
            db.url(),
            DestinationKind::V1 {
                database: database.into(),
                retention_policy: None,
                username: None,
                password: None,
            },
        )
    }
}

/// Reading `n`: a unique field and a unique timestamp, so counts prove nothing is missing
/// and sums prove every value is right.
fn reading(n: i64) -> Vec<u8> {
    let mut out = Vec::new();
    Point::new("reading", 1_763_000_000_000_000_000 + n * 1_000)
        .tag("device", format!("sd-{}", n % 97))
        .tag("grid", format!("g{}", n % 7))
        .field("n", Field::I64(n))
        .field("obscuration_db_m", Field::F64(n as f64 / 1024.0))
        .encode(&mut out)
        .unwrap();
    out
}

fn scalar(db: &InfluxDb1, influxql: &str) -> Option<Value> {
    let series = db.query_series(DB, influxql).ok()?;
    series.first().map(|s| s.values[0][1].clone())
}

/// Polls `probe` until it returns `want` or the deadline passes.
async fn wait_for(what: &str, timeout: Duration, want: Value, mut probe: impl FnMut() -> Option<Value>) {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < timeout {
        last = probe();
        if last.as_ref() == Some(&want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: waited {timeout:?} for {want}, last saw {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb1_receives_every_point_with_exact_values() {
    let db = InfluxDb1::start().unwrap();
    db.create_database(DB).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let drain = Drain::start(dir.path(), v1(&db, DB));
    const N: i64 = 20_000;
    for chunk in (0..N).collect::<Vec<_>>().chunks(500) {
        let lines: Vec<u8> = chunk.iter().flat_map(|n| reading(*n)).collect();
        drain.append(Class::Telemetry, &lines);
    }
    wait_for("count", Duration::from_secs(30), N.into(), || scalar(&db, "SELECT count(n) FROM reading"))
        .await;
    assert_eq!(scalar(&db, "SELECT sum(n) FROM reading"), Some((N * (N - 1) / 2).into()));
    let sum = scalar(&db, "SELECT sum(obscuration_db_m) FROM reading").unwrap().as_f64().unwrap();
    assert!((sum - (N * (N - 1) / 2) as f64 / 1024.0).abs() < 1e-6, "{sum}");
    assert_eq!(
        scalar(&db, "SELECT count(n) FROM reading WHERE device = 'sd-5' AND grid = 'g5'"),
        Some(30.into())
    );
    assert_eq!(drain.stats.lines_written.load(Ordering::Relaxed), N as u64);
    assert_eq!(drain.spool.lock().unwrap().depth("street").unwrap(), 0);
    drain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn victoria_metrics_receives_every_point_through_the_influxdb2_crate() {
    let vm = VictoriaMetrics::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = DestinationConfig::new(
        "city",
        vm.url(),
        DestinationKind::V2 { org: "fuhai".into(), bucket: DB.into(), token: String::new() },
    );
    let drain = Drain::start(dir.path(), cfg);
    const N: i64 = 5_000;
    for chunk in (0..N).collect::<Vec<_>>().chunks(250) {
        let lines: Vec<u8> = chunk.iter().flat_map(|n| reading(*n)).collect();
        drain.append(Class::Telemetry, &lines);
    }
    let started = Instant::now();
    let samples = loop {
        let series = vm.export(r#"{__name__="reading_n"}"#).unwrap();
        let samples: Vec<(i64, f64)> = series.iter().flat_map(|s| s.samples()).collect();
        if samples.len() as i64 == N || started.elapsed() > Duration::from_secs(30) {
            break samples;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(samples.len() as i64, N);
    let mut values: Vec<i64> = samples.iter().map(|(_, v)| *v as i64).collect();
    values.sort_unstable();
    assert_eq!(values, (0..N).collect::<Vec<_>>(), "every value exactly once");
    for (ts_ms, v) in samples {
        assert_eq!(ts_ms, (1_763_000_000_000_000_000 + v as i64 * 1_000) / 1_000_000, "timestamp of {v}");
    }
    drain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_second_database_outage_loses_nothing() {
    let mut db = InfluxDb1::start().unwrap();
    db.create_database(DB).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let drain = Drain::start(dir.path(), v1(&db, DB));
    // 2,000 readings/s for 40 s; the database is down from second 5 to second 35.
    let mut n = 0i64;
    let started = Instant::now();
    let mut stopped = false;
    let mut restarted = false;
    while started.elapsed() < Duration::from_secs(40) {
        let lines: Vec<u8> = (n..n + 100).flat_map(reading).collect();
        drain.append(Class::Telemetry, &lines);
        n += 100;
        if !stopped && started.elapsed() > Duration::from_secs(5) {
            db.stop().unwrap();
            stopped = true;
        }
        if stopped && !restarted && started.elapsed() > Duration::from_secs(35) {
            db.restart().unwrap();
            restarted = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(restarted);
    wait_for("count after the outage", Duration::from_secs(60), n.into(), || {
        scalar(&db, "SELECT count(n) FROM reading")
    })
    .await;
    assert_eq!(scalar(&db, "SELECT sum(n) FROM reading"), Some((n * (n - 1) / 2).into()));
    assert!(drain.stats.requests_failed.load(Ordering::Relaxed) > 0, "the outage was noticed");
    drain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_database_holds_the_data_until_it_exists() {
    let db = InfluxDb1::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let drain = Drain::start(dir.path(), v1(&db, DB));
    let lines: Vec<u8> = (0..100).flat_map(reading).collect();
    drain.append(Class::Alarm, &lines);
    let started = Instant::now();
    while drain.stats.held.load(Ordering::Relaxed) == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "never held");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    db.create_database(DB).unwrap();
    // The hold retries every 30 s.
    wait_for("count", Duration::from_secs(45), 100.into(), || scalar(&db, "SELECT count(n) FROM reading"))
        .await;
    // The points are visible in the database a moment before the sink has the answer to its
    // write (and records it in the spool), which is when the hold is lifted.
    let answered = Instant::now();
    while drain.stats.held.load(Ordering::Relaxed) != 0 {
        assert!(answered.elapsed() < Duration::from_secs(10), "still held after the data arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_batch_goes_to_the_dead_letter_file_and_the_rest_flows() {
    let db = InfluxDb1::start().unwrap();
    db.create_database(DB).unwrap();
    // `n` is an integer field; a string `n` is a field type conflict, HTTP 400. InfluxDB
    // fixes field types per shard, so the first point goes into the shard (the same week) the
    // poison and the readings fall into. The harness writes with ms precision.
    db.write(DB, "reading n=-1i 1762999999999").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let drain = Drain::start(dir.path(), v1(&db, DB));
    drain.append(Class::Telemetry, b"reading n=\"poison\" 1763000000000000001\n");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let lines: Vec<u8> = (0..1_000).flat_map(reading).collect();
    drain.append(Class::Telemetry, &lines);
    wait_for("count", Duration::from_secs(20), 1_001.into(), || scalar(&db, "SELECT count(n) FROM reading"))
        .await;
    let dead = std::fs::read_to_string(dir.path().join("dead-letter/street.lp")).unwrap();
    assert!(dead.contains("reading n=\"poison\" 1763000000000000001"), "{dead}");
    assert!(dead.contains("status=400"), "{dead}");
    assert!(dead.contains("field type conflict"), "{dead}");
    assert_eq!(drain.stats.lines_dead_lettered.load(Ordering::Relaxed), 1);
    drain.stop().await;
}

/// Whatever tags and fields are generated, InfluxDB reads back what the encoder wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb1_parses_encoded_points_back_to_the_same_values() {
    let db = InfluxDb1::start().unwrap();
    db.create_database(DB).unwrap();
    let mut runner = TestRunner::deterministic();
    // Tag values full of what needs escaping, representable by construction (no line
    // breaks, tabs, NUL or backslashes); string fields may hold backslashes and quotes too.
    let tag = || proptest::string::string_regex(r#"[a-z ,="'中文😀]{0,10}[a-z中]"#).unwrap();
    let text = proptest::string::string_regex(r#"[a-z ,="'\\中文😀\t]{0,12}"#).unwrap();
    let strategy =
        (tag(), tag(), text, proptest::num::f64::NORMAL, proptest::num::i64::ANY, proptest::bool::ANY);
    let mut body = Vec::new();
    let mut expected = Vec::new();
    for i in 0..300i64 {
        let (t1, t2, s, f, int, b) = strategy.new_tree(&mut runner).unwrap().current();
        let ts_ms = 1_763_000_000_000 + i;
        Point::new("prop point", ts_ms * 1_000_000)
            .tag("tag, one", t1.clone())
            .tag("t=2", t2.clone())
            .field("s", Field::Str(s.clone()))
            .field("f", Field::F64(f))
            .field("i", Field::I64(int))
            .field("b", Field::Bool(b))
            .encode(&mut body)
            .unwrap();
        expected.push((ts_ms, t1, t2, s, f, int, b));
    }
    let dir = tempfile::tempdir().unwrap();
    let drain = Drain::start(dir.path(), v1(&db, DB));
    drain.append(Class::Telemetry, &body);
    wait_for("count", Duration::from_secs(20), 300.into(), || {
        scalar(&db, r#"SELECT count(i) FROM "prop point""#)
    })
    .await;
    let series = db.query_series(DB, r#"SELECT "tag, one", "t=2", s, f, i, b FROM "prop point""#).unwrap();
    let rows = &series[0].values;
    assert_eq!(rows.len(), 300);
    for (row, (ts_ms, t1, t2, s, f, int, b)) in rows.iter().zip(&expected) {
        assert_eq!(row[0].as_i64(), Some(*ts_ms));
        assert_eq!(row[1].as_str(), Some(t1.as_str()), "tag, one");
        assert_eq!(row[2].as_str(), Some(t2.as_str()), "t=2");
        assert_eq!(row[3].as_str(), Some(s.as_str()), "s");
        assert_eq!(row[4].as_f64(), Some(*f), "f");
        assert_eq!(row[5].as_i64(), Some(*int), "i");
        assert_eq!(row[6].as_bool(), Some(*b), "b");
    }
    drain.stop().await;
}

/// A server that refuses large bodies (HTTP 413): the batch is split until it fits, and a
/// single line too large for any request goes to the dead-letter file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_batches_are_split_until_they_fit() {
    let db = InfluxDb1::start_with_max_body_size(64 * 1024).unwrap();
    db.create_database(DB).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Uncompressed, so the body the server measures is the one the sink sends.
    let cfg = DestinationConfig { gzip: false, ..v1(&db, DB) };
    let drain = Drain::start(dir.path(), cfg);
    // 5,000 readings of about 95 bytes: a batch seven times the limit.
    let lines: Vec<u8> = (0..5_000).flat_map(reading).collect();
    assert!(lines.len() > 4 * 64 * 1024);
    drain.append(Class::Telemetry, &lines);
    let mut huge = Vec::new();
    Point::new("reading", 1_763_000_000_000_000_000 - 1)
        .field("n", Field::I64(-5))
        .field("note", Field::Str("x".repeat(70 * 1024)))
        .encode(&mut huge)
        .unwrap();
    drain.append(Class::Telemetry, &huge);
    wait_for("count", Duration::from_secs(30), 5_000.into(), || scalar(&db, "SELECT count(n) FROM reading"))
        .await;
    assert_eq!(scalar(&db, "SELECT sum(n) FROM reading"), Some((5_000i64 * 4_999 / 2).into()));
    let started = Instant::now();
    while drain.stats.lines_dead_lettered.load(Ordering::Relaxed) == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "the oversized line was never dead-lettered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead = std::fs::read_to_string(dir.path().join("dead-letter/street.lp")).unwrap();
    assert!(dead.contains("status=413"), "{}", &dead[..200.min(dead.len())]);
    assert_eq!(drain.stats.lines_dead_lettered.load(Ordering::Relaxed), 1);
    drain.stop().await;
}
