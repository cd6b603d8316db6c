//! Case store tests, each run on both backends: a real SQLite file in a temporary directory,
//! and a real PostgreSQL server started for the test (`firegrid_tests::Postgres`, Debian's
//! `postgresql`; a missing server fails the test). The log and its replay, a writer killed
//! with SIGKILL mid-stream, the queries, pruning and the schema guard; then what only one
//! backend has.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use super::*;

/// One backend the tests run on.
struct Backend {
    /// Its module below, in the tests' paths.
    name: &'static str,
    /// A new, empty store.
    fresh: fn() -> Fresh,
    /// Opens the store at a location [`Fresh`] named.
    open: fn(&str) -> Result<CaseStore, StoreError>,
}

/// Where a fresh store lives, and what keeps it alive (a temp dir, a server).
struct Fresh {
    location: String,
    _keep: Box<dyn std::any::Any>,
}

const SQLITE: Backend = Backend {
    name: "sqlite",
    fresh: || {
        let dir = tempfile::tempdir().unwrap();
        let location = dir.path().join("cases.db").display().to_string();
        Fresh { location, _keep: Box::new(dir) }
    },
    open: |location| CaseStore::open(location),
};

const POSTGRES: Backend = Backend {
    name: "postgres",
    fresh: || {
        let server = firegrid_tests::Postgres::start().expect("PostgreSQL for the store tests");
        let location = format!("{} password={}", server.conninfo("postgres"), server.password());
        Fresh { location, _keep: Box::new(server) }
    },
    open: |location| CaseStore::open_postgres(location, None),
};

/// Generates one test per backend for each test body named, in modules `sqlite` and
/// `postgres`.
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $test() { super::$test(&super::SQLITE) } )*
        }
        mod postgres {
            $( #[test] fn $test() { super::$test(&super::POSTGRES) } )*
        }
    };
}

on_every_backend!(
    commit_then_load_returns_every_input_in_order,
    load_after_a_snapshot_returns_only_later_inputs,
    a_snapshot_ahead_of_the_log_or_behind_the_latest_is_refused,
    invalid_json_is_refused_before_anything_is_written,
    load_refuses_a_log_with_a_hole,
    case_state_is_replaced_by_each_later_step,
    list_filters_and_orders_newest_first,
    list_limit_defaults_to_100_and_is_capped_at_1000,
    timeline_is_ordered_by_time_then_by_commit_order,
    audit_log_lists_officer_actions_with_actor_and_origin,
    prune_keeps_open_cases_and_the_inputs_a_replay_needs,
    seq_keeps_growing_after_every_input_was_pruned,
    stats_count_inputs_cases_and_bytes,
    a_store_from_a_newer_schema_is_refused,
    a_killed_writer_loses_no_committed_step_and_leaves_no_half_step,
);

/// A new store of `backend`, open.
fn open_temp(backend: &Backend) -> (Fresh, CaseStore) {
    let fresh = (backend.fresh)();
    let store = (backend.open)(&fresh.location).unwrap();
    (fresh, store)
}

/// A step with no transitions and no case changes.
fn input<'a>(at_ms: u64, kind: &'a str, json: &'a str) -> Step<'a> {
    Step { at_ms, kind, audit: None, input_json: json, transitions: &[], cases: &[] }
}

fn case_row(case_id: u64, opened_ms: u64, closed_ms: Option<u64>, stage: &'static str) -> CaseRow<'static> {
    CaseRow {
        case_id,
        opened_ms,
        closed_ms,
        stage,
        severity: "high",
        street: "east",
        community: "c1",
        grid: "g1",
        building: "b1",
        json: "{}",
    }
}

fn transition(case_id: u64, at_ms: u64, kind: &'static str) -> TransitionRow<'static> {
    TransitionRow { case_id, at_ms, kind, json: "{}" }
}

fn commit_then_load_returns_every_input_in_order(backend: &Backend) {
    let (fresh, mut store) = open_temp(backend);
    assert_eq!(store.commit(&[]).unwrap(), 0, "an empty batch before any input");
    let first = store.commit(&[input(10, "alarm", r#"{"device":"d1"}"#)]).unwrap();
    let last = store
        .commit(&[input(20, "tick", ""), input(30, "acknowledge", r#"{"case":1}"#), input(30, "tick", "")])
        .unwrap();
    assert_eq!((first, last), (1, 4));
    assert_eq!(store.commit(&[]).unwrap(), 4, "an empty batch returns the last seq");

    drop(store);
    let loaded = (backend.open)(&fresh.location).unwrap().load().unwrap();
    assert_eq!(loaded.snapshot, None);
    let got: Vec<_> =
        loaded.inputs.iter().map(|i| (i.seq, i.at_ms, i.kind.as_str(), i.json.as_str())).collect();
    assert_eq!(
        got,
        [
            (1, 10, "alarm", r#"{"device":"d1"}"#),
            (2, 20, "tick", ""),
            (3, 30, "acknowledge", r#"{"case":1}"#),
            (4, 30, "tick", ""),
        ]
    );
}

fn load_after_a_snapshot_returns_only_later_inputs(backend: &Backend) {
    let (_fresh, mut store) = open_temp(backend);
    for at in 1..=5 {
        store.commit(&[input(at, "alarm", "{}")]).unwrap();
    }
    store.save_snapshot(2, 2, r#"{"engine":2}"#).unwrap();
    store.save_snapshot(4, 4, r#"{"engine":4}"#).unwrap();
    store.commit(&[input(6, "tick", "")]).unwrap();

    let loaded = store.load().unwrap();
    assert_eq!(loaded.snapshot, Some(Snapshot { upto_seq: 4, at_ms: 4, json: r#"{"engine":4}"#.into() }));
    assert_eq!(loaded.inputs.iter().map(|i| i.seq).collect::<Vec<_>>(), [5, 6]);

    let previous = store.load_previous().unwrap().expect("two snapshots were saved");
    assert_eq!(previous.snapshot.unwrap().upto_seq, 2);
    assert_eq!(previous.inputs.iter().map(|i| i.seq).collect::<Vec<_>>(), [3, 4, 5, 6]);

    // A third snapshot pushes out the first: two are kept.
    store.save_snapshot(6, 6, r#"{"engine":6}"#).unwrap();
    assert_eq!(store.load().unwrap().inputs, []);
    assert_eq!(store.load_previous().unwrap().unwrap().snapshot.unwrap().upto_seq, 4);
    assert_eq!(store.integers("SELECT count(*) FROM snapshots"), [[2]]);
}

fn a_snapshot_ahead_of_the_log_or_behind_the_latest_is_refused(backend: &Backend) {
    let (_fresh, mut store) = open_temp(backend);
    assert!(store.load_previous().unwrap().is_none());
    store.commit(&[input(1, "alarm", "{}"), input(2, "alarm", "{}")]).unwrap();
    let err = store.save_snapshot(3, 3, "{}").unwrap_err();
    assert!(matches!(err, StoreError::SnapshotAhead { upto_seq: 3, last_seq: 2 }), "{err}");
    store.save_snapshot(2, 2, "{}").unwrap();
    let err = store.save_snapshot(1, 1, "{}").unwrap_err();
    assert!(matches!(err, StoreError::SnapshotBehind { upto_seq: 1, latest: 2 }), "{err}");
    assert_eq!(store.load().unwrap().snapshot.unwrap().upto_seq, 2);
}

fn invalid_json_is_refused_before_anything_is_written(backend: &Backend) {
    let (_fresh, mut store) = open_temp(backend);
    let cases = [CaseRow { json: "{not json", ..case_row(1, 0, None, "warning") }];
    let step = Step { cases: &cases, ..input(1, "alarm", "{}") };
    let err = store.commit(&[input(0, "alarm", "{}"), step]).unwrap_err();
    assert!(matches!(err, StoreError::InvalidJson { what: "case", .. }), "{err}");
    let err = store.commit(&[input(0, "alarm", "[1,")]).unwrap_err();
    assert!(matches!(err, StoreError::InvalidJson { what: "input", .. }), "{err}");
    assert_eq!(store.stats().unwrap().last_seq, 0, "neither batch left an input");
    assert!(store.case(1).unwrap().is_none());
}

fn load_refuses_a_log_with_a_hole(backend: &Backend) {
    let (_fresh, mut store) = open_temp(backend);
    store.commit(&[input(1, "alarm", "{}"), input(2, "alarm", "{}"), input(3, "alarm", "{}")]).unwrap();
    assert_eq!(store.integers("DELETE FROM inputs WHERE seq = 2 RETURNING seq"), [[2]]);
    let err = store.load().unwrap_err();
    assert!(matches!(err, StoreError::ReplayGap { expected: 2, found: 3 }), "{err}");
}

fn case_state_is_replaced_by_each_later_step(backend: &Backend) {
    let (_fresh, mut store) = open_temp(backend);
    let opened = [CaseRow { json: r#"{"stage":"warning"}"#, ..case_row(7, 100, None, "warning") }];
    let acked = [CaseRow { json: r#"{"stage":"acknowledged"}"#, ..case_row(7, 100, None, "acknowledged") }];
    let closed = [CaseRow { json: r#"{"stage":"closed"}"#, ..case_row(7, 100, Some(900), "closed") }];
    store.commit(&[Step { cases: &opened, ..input(100, "alarm", "{}") }]).unwrap();
    assert_eq!(store.case(7).unwrap().unwrap().stage, "warning");
    store.commit(&[input(150, "tick", "")]).unwrap();
    store
        .commit(&[
            Step { cases: &acked, ..input(200, "acknowledge", "{}") },
            Step { cases: &closed, ..input(900, "close", "{}") },
        ])
        .unwrap();

    let case = store.case(7).unwrap().unwrap();
    assert_eq!(
        case,
        StoredCase {
            case_id: 7,
            opened_ms: 100,
            closed_ms: Some(900),
            stage: "closed".into(),
            severity: "high".into(),
            street: "east".into(),
            community: "c1".into(),
            grid: "g1".into(),
            building: "b1".into(),
            updated_seq: 4,
            json: r#"{"stage":"closed"}"#.into(),
        }
    );
    assert_eq!(store.list(&CaseFilter::default()).unwrap().len(), 1, "one row per case");
    assert!(store.case(8).unwrap().is_none());
}

/// Five cases along the village, opened at 1000, 2000, ... 5000.
fn village(backend: &Backend) -> (Fresh, CaseStore) {
    let (fresh, mut store) = open_temp(backend);
    let row = |case_id, closed_ms, stage, severity, street, community, grid| CaseRow {
        case_id,
        opened_ms: case_id * 1000,
        closed_ms,
        stage,
        severity,
        street,
        community,
        grid,
        building: "b",
        json: "{}",
    };
    let cases = [
        row(1, None, "warning", "high", "east", "c1", "g1"),
        row(2, Some(2500), "closed", "low", "east", "c1", "g2"),
        row(3, None, "escalated", "high", "west", "c2", "g3"),
        row(4, Some(4100), "closed", "low", "west", "c2", "g3"),
        row(5, None, "warning", "low", "east", "c3", "g4"),
    ];
    store.commit(&[Step { cases: &cases, ..input(5000, "alarm", "{}") }]).unwrap();
    (fresh, store)
}

fn check(store: &CaseStore, filter: CaseFilter, expected: &[u64]) {
    let got: Vec<u64> = store.list(&filter).unwrap().iter().map(|c| c.case_id).collect();
    assert_eq!(got, expected, "{filter:?}");
}

fn list_filters_and_orders_newest_first(backend: &Backend) {
    let (_fresh, store) = village(backend);
    let s = |v: &str| Some(v.to_owned());
    check(&store, CaseFilter::default(), &[5, 4, 3, 2, 1]);
    check(&store, CaseFilter { state: CaseState::Open, ..Default::default() }, &[5, 3, 1]);
    check(&store, CaseFilter { state: CaseState::Closed, ..Default::default() }, &[4, 2]);
    check(&store, CaseFilter { street: s("east"), ..Default::default() }, &[5, 2, 1]);
    check(&store, CaseFilter { community: s("c2"), ..Default::default() }, &[4, 3]);
    check(&store, CaseFilter { grid: s("g3"), state: CaseState::Open, ..Default::default() }, &[3]);
    check(&store, CaseFilter { stage: s("warning"), ..Default::default() }, &[5, 1]);
    check(&store, CaseFilter { severity: s("high"), ..Default::default() }, &[3, 1]);
    check(&store, CaseFilter { street: s("east"), severity: s("low"), ..Default::default() }, &[5, 2]);
    check(&store, CaseFilter { street: s("North"), ..Default::default() }, &[]);
    check(&store, CaseFilter { street: s("EAST"), ..Default::default() }, &[]);
    check(
        &store,
        CaseFilter { opened_since_ms: Some(2000), opened_until_ms: Some(4000), ..Default::default() },
        &[3, 2],
    );
    check(&store, CaseFilter { limit: Some(2), ..Default::default() }, &[5, 4]);
    check(&store, CaseFilter { limit: Some(0), ..Default::default() }, &[]);
}

fn list_limit_defaults_to_100_and_is_capped_at_1000(backend: &Backend) {
    let (_fresh, mut store) = open_temp(backend);
    let cases: Vec<_> = (1..=1100).map(|id| case_row(id, id, None, "warning")).collect();
    store.commit(&[Step { cases: &cases, ..input(0, "alarm", "{}") }]).unwrap();
    let listed = |limit| store.list(&CaseFilter { limit, ..Default::default() }).unwrap();
    let default = listed(None);
    assert_eq!(default.len(), DEFAULT_LIST_LIMIT as usize);
    assert_eq!(default[0].case_id, 1100, "newest first");
    assert_eq!(listed(Some(5000)).len(), MAX_LIST_LIMIT as usize);
}

fn timeline_is_ordered_by_time_then_by_commit_order(backend: &Backend) {
    let (_fresh, mut store) = open_temp(backend);
    let first = [transition(1, 100, "opened"), transition(2, 100, "opened"), transition(1, 300, "escalated")];
    // Committed later but earlier in time (a late delivery result), then two at the same ms.
    let second = [transition(1, 200, "delivered"), transition(1, 300, "notified")];
    store.commit(&[Step { transitions: &first, ..input(100, "alarm", "{}") }]).unwrap();
    store.commit(&[Step { transitions: &second, ..input(300, "delivery", "{}") }]).unwrap();

    let timeline = store.timeline(1).unwrap();
    let got: Vec<_> = timeline.iter().map(|t| (t.at_ms, t.kind.as_str(), t.seq)).collect();
    assert_eq!(got, [(100, "opened", 1), (200, "delivered", 2), (300, "escalated", 1), (300, "notified", 2)]);
    assert_eq!(store.timeline(2).unwrap().len(), 1);
    assert_eq!(store.timeline(3).unwrap(), []);
}

fn audit_log_lists_officer_actions_with_actor_and_origin(backend: &Backend) {
    let (_fresh, mut store) = open_temp(backend);
    let wang = Audit { actor: "wang".into(), origin: "192.0.2.7".into() };
    let li = Audit { actor: "li".into(), origin: "mqtt".into() };
    store
        .commit(&[
            input(100, "alarm", r#"{"device":"d1"}"#),
            Step { audit: Some(&wang), ..input(200, "acknowledge", r#"{"case":1}"#) },
            input(250, "tick", ""),
            Step { audit: Some(&li), ..input(300, "close", r#"{"case":1,"cause":"cooking"}"#) },
        ])
        .unwrap();

    let log = store.audit_log(0, 10).unwrap();
    assert_eq!(
        log,
        [
            AuditEntry {
                seq: 2,
                at_ms: 200,
                kind: "acknowledge".into(),
                actor: "wang".into(),
                origin: "192.0.2.7".into(),
                json: r#"{"case":1}"#.into(),
            },
            AuditEntry {
                seq: 4,
                at_ms: 300,
                kind: "close".into(),
                actor: "li".into(),
                origin: "mqtt".into(),
                json: r#"{"case":1,"cause":"cooking"}"#.into(),
            },
        ]
    );
    assert_eq!(store.audit_log(201, 10).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), [4]);
    assert_eq!(store.audit_log(0, 1).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), [2]);
}

fn prune_keeps_open_cases_and_the_inputs_a_replay_needs(backend: &Backend) {
    const DAY: u64 = 24 * 3600 * 1000;
    let retention = Duration::from_millis(30 * DAY);
    let now = 100 * DAY;
    let (_fresh, mut store) = open_temp(backend);

    // Old: a case closed long ago, a case opened long ago and still open; recent: a case
    // closed yesterday. Inputs 1-4 are old, 5 is recent.
    let old_closed = [case_row(1, DAY, Some(2 * DAY), "closed")];
    let old_open = [case_row(2, DAY, None, "escalated")];
    let recent_closed = [case_row(3, 90 * DAY, Some(now - DAY), "closed")];
    let t1 = [transition(1, DAY, "opened"), transition(1, 2 * DAY, "closed")];
    let t2 = [transition(2, DAY, "opened")];
    let t3 = [transition(3, now - DAY, "closed")];
    store
        .commit(&[
            Step { cases: &old_closed, transitions: &t1, ..input(DAY, "alarm", "{}") },
            Step { cases: &old_open, transitions: &t2, ..input(DAY, "alarm", "{}") },
            input(2 * DAY, "tick", ""),
            input(3 * DAY, "tick", ""),
            Step { cases: &recent_closed, transitions: &t3, ..input(now - DAY, "close", "{}") },
        ])
        .unwrap();

    // No snapshot yet: every input is still needed for a replay.
    let pruned = store.prune(now, retention).unwrap();
    assert_eq!(pruned, Pruned { cases: 1, transitions: 2, inputs: 0 });
    assert!(store.case(1).unwrap().is_none());
    assert_eq!(store.timeline(1).unwrap(), []);
    assert_eq!(store.case(2).unwrap().unwrap().stage, "escalated", "open cases are kept however old");
    assert_eq!(store.timeline(2).unwrap().len(), 1);
    assert_eq!(store.case(3).unwrap().unwrap().stage, "closed", "recently closed cases are kept");
    assert_eq!(store.timeline(3).unwrap().len(), 1);
    assert_eq!(store.load().unwrap().inputs.len(), 5);

    // Snapshots at 1 and 3: the fallback (at 1) still needs inputs 2 and 3.
    store.save_snapshot(1, DAY, "{}").unwrap();
    store.save_snapshot(3, 2 * DAY, "{}").unwrap();
    assert_eq!(store.prune(now, retention).unwrap(), Pruned { cases: 0, transitions: 0, inputs: 1 });
    assert_eq!(
        store.load_previous().unwrap().unwrap().inputs.iter().map(|i| i.seq).collect::<Vec<_>>(),
        [2, 3, 4, 5]
    );

    // A snapshot covering everything: old inputs go, the recent one stays for the audit.
    store.save_snapshot(5, now, "{}").unwrap();
    assert_eq!(store.prune(now, retention).unwrap(), Pruned { cases: 0, transitions: 0, inputs: 2 });
    let inputs = store.integers("SELECT seq FROM inputs ORDER BY seq");
    assert_eq!(inputs, [[4], [5]], "4 is old but the fallback snapshot (at 3) needs it");
    assert_eq!(store.load().unwrap().inputs, []);
    assert_eq!(store.prune(now, retention).unwrap(), Pruned::default(), "pruning again finds nothing");
}

fn seq_keeps_growing_after_every_input_was_pruned(backend: &Backend) {
    let (_fresh, mut store) = open_temp(backend);
    store.commit(&[input(0, "alarm", "{}"), input(1, "alarm", "{}")]).unwrap();
    store.save_snapshot(2, 1, r#"{"engine":2}"#).unwrap();
    assert_eq!(store.prune(10_000, Duration::from_secs(1)).unwrap().inputs, 2);
    assert_eq!(store.stats().unwrap().inputs, 0);

    // A reused seq 1 would hide behind the snapshot and never be replayed.
    assert_eq!(store.commit(&[input(10_000, "alarm", "{}")]).unwrap(), 3);
    let loaded = store.load().unwrap();
    assert_eq!(loaded.snapshot.unwrap().upto_seq, 2);
    assert_eq!(loaded.inputs.iter().map(|i| i.seq).collect::<Vec<_>>(), [3]);
}

fn stats_count_inputs_cases_and_bytes(backend: &Backend) {
    let (_fresh, mut store) = open_temp(backend);
    let cases =
        [case_row(1, 0, None, "warning"), case_row(2, 0, Some(5), "closed"), case_row(3, 0, None, "warning")];
    store.commit(&[Step { cases: &cases, ..input(0, "alarm", "{}") }, input(1, "tick", "")]).unwrap();
    store.save_snapshot(1, 0, "{}").unwrap();
    store.commit(&[input(2, "tick", ""), input(3, "tick", "")]).unwrap();
    let stats = store.stats().unwrap();
    assert!(stats.file_bytes > 0);
    assert_eq!(
        stats,
        StoreStats {
            inputs: 4,
            last_seq: 4,
            snapshot_seq: Some(1),
            inputs_since_snapshot: 3,
            open_cases: 2,
            closed_cases: 1,
            file_bytes: stats.file_bytes,
        }
    );
}

fn a_store_from_a_newer_schema_is_refused(backend: &Backend) {
    let (fresh, mut store) = open_temp(backend);
    assert_eq!(store.schema_version(), SCHEMA_VERSION);
    store.set_schema_version(SCHEMA_VERSION + 1);
    drop(store);

    let err = (backend.open)(&fresh.location).unwrap_err();
    assert!(matches!(err, StoreError::NewerSchema { found: 2, supported: 1, .. }), "{err:?}");
    let message = err.to_string();
    let named = if backend.name == "sqlite" { "cases.db" } else { "firegrid@127.0.0.1:" };
    assert!(message.contains("schema version 2") && message.contains(named), "{message}");
    assert!(!message.contains("password"), "{message}");
}

mod sqlite_only {
    use super::*;

    #[test]
    fn a_newer_file_is_left_as_it_was() {
        let (fresh, mut store) = open_temp(&SQLITE);
        store.set_schema_version(SCHEMA_VERSION + 1);
        drop(store);
        assert!(CaseStore::open(&fresh.location).is_err());
        let version: i64 = rusqlite::Connection::open(&fresh.location)
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, 2);
    }

    #[test]
    fn open_sets_up_wal_full_sync_and_the_schema_version() {
        use rusqlite::types::Value;
        let pragma = |store: &CaseStore, name| {
            store.sqlite_conn().pragma_query_value(None, name, |r| r.get::<_, Value>(0)).unwrap()
        };
        let (fresh, store) = open_temp(&SQLITE);
        assert_eq!(pragma(&store, "journal_mode"), Value::Text("wal".into()));
        assert_eq!(pragma(&store, "synchronous"), Value::Integer(2), "FULL");
        assert_eq!(pragma(&store, "auto_vacuum"), Value::Integer(2), "INCREMENTAL");
        assert_eq!(pragma(&store, "user_version"), Value::Integer(SCHEMA_VERSION));
        assert_eq!(pragma(&store, "busy_timeout"), Value::Integer(5000));

        // Reopening an existing file sets the connection up the same way and keeps the file.
        drop(store);
        let store = CaseStore::open(&fresh.location).unwrap();
        assert_eq!(store.path(), Some(Path::new(&fresh.location)));
        assert_eq!(pragma(&store, "journal_mode"), Value::Text("wal".into()));
        assert_eq!(pragma(&store, "synchronous"), Value::Integer(2));
        assert_eq!(pragma(&store, "user_version"), Value::Integer(SCHEMA_VERSION));
        let stats = store.stats().unwrap();
        assert_eq!(stats, StoreStats { file_bytes: stats.file_bytes, ..StoreStats::default() });
    }
}

mod postgres_only {
    use super::*;

    #[test]
    fn no_error_message_carries_the_password() {
        let server = firegrid_tests::Postgres::start().unwrap();
        let conninfo = server.conninfo("postgres");
        let wrong = "wrong-Pa55word-4711";
        let refused = [
            CaseStore::open_postgres(&conninfo, Some(wrong)).unwrap_err(),
            CaseStore::open_postgres(&format!("{conninfo} password={wrong}"), None).unwrap_err(),
            CaseStore::open_postgres(&format!("{conninfo} password={wrong} port=notaport"), None)
                .unwrap_err(),
        ];
        for err in &refused {
            assert!(matches!(err, StoreError::Postgres { operation: "open", .. }), "{err:?}");
            let shown = format!("{err} / {err:?}");
            assert!(!shown.contains(wrong), "{shown}");
        }
        assert!(refused[0].to_string().contains("firegrid@127.0.0.1:"), "{}", refused[0]);

        // The right password, then the server goes away under an open store.
        let mut store = CaseStore::open_postgres(&conninfo, Some(server.password())).unwrap();
        drop(server);
        let err = store.commit(&[input(1, "alarm", "{}")]).unwrap_err();
        assert!(matches!(err, StoreError::Postgres { operation: "commit", .. }), "{err:?}");
        let shown = format!("{err} / {err:?} / {store:?}");
        assert!(!shown.contains(wrong) && !shown.contains("password"), "{shown}");
    }

    #[test]
    fn a_restarted_server_is_reconnected_to_and_keeps_every_commit() {
        let mut server = firegrid_tests::Postgres::start().unwrap();
        let mut store =
            CaseStore::open_postgres(&server.conninfo("postgres"), Some(server.password())).unwrap();
        assert_eq!(store.path(), None);
        store.commit(&[input(1, "alarm", "{}"), input(2, "tick", "")]).unwrap();
        server.restart().unwrap();
        // The operation that finds the connection gone fails; the alarm loop holds its steps
        // and hands them to the next commit, which connects again.
        let _ = store.commit(&[input(3, "alarm", "{}")]);
        assert_eq!(store.commit(&[input(3, "alarm", "{}")]).unwrap(), 3);
        let seqs: Vec<u64> = store.load().unwrap().inputs.iter().map(|i| i.seq).collect();
        assert_eq!(seqs, [1, 2, 3], "no seq lost to the failed commit");
    }

    /// A commit that went through but whose answer was lost: PostgreSQL cuts a session
    /// that waits for a synchronous standby (here one that never comes) after writing the
    /// commit locally. The alarm loop's retry (the same steps first) must not log them twice.
    #[test]
    fn a_commit_whose_answer_was_lost_is_not_logged_twice() {
        let server = firegrid_tests::Postgres::start().unwrap();
        let mut admin = server.connect("postgres").unwrap();
        let mut store =
            CaseStore::open_postgres(&server.conninfo("postgres"), Some(server.password())).unwrap();
        store.commit(&[input(1, "alarm", r#"{"n":1}"#)]).unwrap();

        admin.batch_execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'").unwrap();
        admin.batch_execute("SELECT pg_reload_conf()").unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let cutter = std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            let waiting =
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'";
            while admin.query(waiting, &[]).unwrap().is_empty() {
                assert!(std::time::Instant::now() < deadline, "the commit never waited for the standby");
                std::thread::sleep(Duration::from_millis(20));
            }
            admin.batch_execute("ALTER SYSTEM RESET synchronous_standby_names").unwrap();
            admin.batch_execute("SELECT pg_reload_conf()").unwrap();
        });
        let lost = [input(2, "acknowledge", r#"{"n":2}"#), input(3, "tick", "")];
        let err = store.commit(&lost).unwrap_err();
        assert!(matches!(err, StoreError::Postgres { operation: "commit", .. }), "{err:?}");
        cutter.join().unwrap();
        std::thread::sleep(Duration::from_millis(500));

        let retry = [lost[0], lost[1], input(4, "close", r#"{"n":4}"#)];
        assert_eq!(store.commit(&retry).unwrap(), 4);
        let got: Vec<_> = store.load().unwrap().inputs.iter().map(|i| (i.seq, i.at_ms)).collect();
        assert_eq!(got, [(1, 1), (2, 2), (3, 3), (4, 4)], "the lost commit's steps once each");
        // A doubt is settled once: the next commit is logged as it is.
        assert_eq!(store.commit(&[lost[0]]).unwrap(), 5);
    }

    /// One writer: a second store on the same database is refused while the first holds it,
    /// takes over once the first one's session is cut, and the first cannot write again.
    #[test]
    fn one_gateway_writes_a_store_and_one_cut_off_cannot_write_again() {
        let server = firegrid_tests::Postgres::start().unwrap();
        let mut admin = server.connect("postgres").unwrap();
        let conninfo = server.conninfo("postgres");
        let open = |wait: Duration| CaseStore::open_postgres_within(&conninfo, Some(server.password()), wait);
        let mut first = open(Duration::ZERO).unwrap();
        first.commit(&[input(1, "alarm", r#"{"n":1}"#)]).unwrap();

        let err = open(Duration::from_millis(500)).unwrap_err();
        let StoreError::Held { holder, .. } = &err else { panic!("{err:?}") };
        assert_ne!(*holder, 0, "the holder's backend is named: {err}");
        assert!(err.to_string().contains("held by another gateway"), "{err}");
        assert!(!err.to_string().contains(server.password()), "{err}");

        // The first gateway's session is cut (a network partition, a paused process whose
        // connection timed out): the second takes over and goes on numbering.
        let cut = admin.query("SELECT pg_terminate_backend($1)", &[holder]).unwrap();
        assert!(cut[0].get::<_, bool>(0), "the session was cut");
        let mut second = open(Duration::from_secs(20)).unwrap();
        assert_eq!(second.commit(&[input(2, "acknowledge", r#"{"n":2}"#)]).unwrap(), 2);

        // The first one finds its connection gone and, reconnecting, the lock taken: it
        // writes nothing, now or on a retry.
        for _ in 0..2 {
            let err = first.commit(&[input(3, "close", r#"{"n":3}"#)]).unwrap_err();
            assert!(
                matches!(err, StoreError::Held { .. } | StoreError::Postgres { operation: "commit", .. }),
                "{err:?}"
            );
        }
        assert!(matches!(first.commit(&[input(3, "close", "{}")]), Err(StoreError::Held { .. })));
        let seqs: Vec<u64> = second.load().unwrap().inputs.iter().map(|i| i.seq).collect();
        assert_eq!(seqs, [1, 2], "nothing of the cut-off writer's after the takeover");
        // Once the second lets go, a store opens again.
        drop(second);
        open(Duration::from_secs(20)).unwrap();
    }

    /// The fencing inside a write: once the lease's epoch is no longer the writer's, a commit,
    /// a snapshot and a prune are refused in their own transaction, though the writer still
    /// holds its session and the writer lock, and nothing of them is written.
    #[test]
    fn a_write_under_a_replaced_epoch_is_refused() {
        let server = firegrid_tests::Postgres::start().unwrap();
        let mut admin = server.connect("postgres").unwrap();
        let conninfo = server.conninfo("postgres");
        let mut store =
            CaseStore::open_postgres_within(&conninfo, Some(server.password()), Duration::ZERO).unwrap();
        assert_eq!(store.epoch(), Some(1), "the first store takes the first epoch");
        assert!(store.lease_renewer().is_none(), "a lease without a length is never renewed");
        store.commit(&[input(1, "alarm", r#"{"n":1}"#)]).unwrap();

        admin.batch_execute("UPDATE case_store_lease SET epoch = epoch + 1").unwrap();
        let err = store.commit(&[input(2, "tick", "")]).unwrap_err();
        let StoreError::Fenced { epoch, current, .. } = err else { panic!("{err:?}") };
        assert_eq!((epoch, current), (1, 2));
        assert!(matches!(store.save_snapshot(1, 1, "{}"), Err(StoreError::Fenced { .. })));
        assert!(matches!(store.prune(10_000, Duration::ZERO), Err(StoreError::Fenced { .. })));
        let logged: i64 = admin.query_one("SELECT last_seq FROM case_store", &[]).unwrap().get(0);
        assert_eq!(logged, 1, "nothing of the refused writes");
        let snapshots: i64 = admin.query_one("SELECT count(*) FROM snapshots", &[]).unwrap().get(0);
        assert_eq!(snapshots, 0);
    }

    /// A frozen holder keeps its session and the writer lock; once its lease has expired on
    /// the server's clock, a gateway standing by terminates that session, takes the store with
    /// the next epoch, and the old holder can neither renew nor write when it wakes.
    #[test]
    fn a_standby_breaks_a_stale_lease_and_the_old_holder_is_fenced() {
        let server = firegrid_tests::Postgres::start().unwrap();
        let conninfo = server.conninfo("postgres");
        let lease = Some(Duration::from_millis(1500));
        let open = |wait| {
            let password = Some(server.password().to_owned());
            CaseStore::open_postgres_with(&conninfo, &PostgresOptions { password, wait, lease, tls: None })
        };
        let mut first = open(Duration::ZERO).unwrap();
        let mut renewer = first.lease_renewer().expect("a lease with a length is renewed");
        assert_eq!((renewer.epoch(), renewer.lease()), (1, Duration::from_millis(1500)));
        first.commit(&[input(1, "alarm", r#"{"n":1}"#)]).unwrap();

        // While renewed, the lease holds: a standby waiting 3 s is refused.
        let stop = std::sync::atomic::AtomicBool::new(false);
        let renewing = std::thread::scope(|scope| {
            let handle = scope.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    renewer.renew().unwrap();
                    std::thread::sleep(Duration::from_millis(300));
                }
            });
            let refused = open(Duration::from_secs(3));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            handle.join().unwrap();
            refused
        });
        assert!(matches!(renewing, Err(StoreError::Held { .. })), "{renewing:?}");

        // No renewal any more (the holder froze): a standby waiting for ever takes over.
        let mut second = open(Duration::MAX).unwrap();
        assert_eq!(second.epoch(), Some(2));
        assert_eq!(second.commit(&[input(2, "acknowledge", r#"{"n":2}"#)]).unwrap(), 2);

        let err = renewer.renew().unwrap_err();
        assert!(matches!(err, StoreError::Fenced { epoch: 1, current: 2, .. }), "{err:?}");
        for _ in 0..2 {
            let err = first.commit(&[input(3, "close", r#"{"n":3}"#)]).unwrap_err();
            assert!(
                matches!(
                    err,
                    StoreError::Held { .. } | StoreError::Fenced { .. } | StoreError::Postgres { .. }
                ),
                "{err:?}"
            );
        }
        let seqs: Vec<u64> = second.load().unwrap().inputs.iter().map(|i| i.seq).collect();
        assert_eq!(seqs, [1, 2], "nothing of the frozen writer's after the takeover");
    }

    #[test]
    fn a_large_number_is_refused_not_wrapped() {
        let (_fresh, mut store) = open_temp(&POSTGRES);
        let err = store.commit(&[input(u64::MAX, "alarm", "{}")]).unwrap_err();
        assert!(matches!(err, StoreError::OutOfRange { value: u64::MAX, .. }), "{err:?}");
        assert_eq!(store.commit(&[]).unwrap(), 0);
    }
}

/// The environment variable that turns the crash test into its own child writer.
const CHILD_ENV: &str = "FIREGRID_CASE_STORE_CRASH_CHILD";

/// Writes batches of steps to the store at `location` until killed, printing the seq each
/// commit returned. Each input's JSON says what its step wrote, so the parent can check after
/// the kill that every step is whole.
fn write_until_killed(backend: &Backend, location: &str) -> ! {
    let mut store = (backend.open)(location).unwrap();
    let mut out = std::io::stdout().lock();
    let pid = std::process::id();
    for batch in 0u64.. {
        let size = 1 + batch % 7;
        let owned: Vec<_> = (0..size)
            .map(|i| {
                let transitions = 1 + (batch + i) % 3;
                let input =
                    format!(r#"{{"batch":"{pid}-{batch}","size":{size},"transitions":{transitions}}}"#);
                let case_json = format!(r#"{{"batch":"{pid}-{batch}"}}"#);
                (input, transitions, case_json, 1 + (batch + i) % 5)
            })
            .collect();
        let rows: Vec<(Vec<TransitionRow<'_>>, [CaseRow<'_>; 1])> = owned
            .iter()
            .map(|(_, transitions, case_json, case_id)| {
                let t = (0..*transitions)
                    .map(|_| TransitionRow { case_id: *case_id, at_ms: batch, kind: "step", json: case_json })
                    .collect();
                (t, [CaseRow { json: case_json, ..case_row(*case_id, batch, None, "warning") }])
            })
            .collect();
        let steps: Vec<Step<'_>> = owned
            .iter()
            .zip(&rows)
            .map(|((input_json, ..), (transitions, cases))| Step {
                transitions,
                cases,
                ..input(batch, "alarm", input_json)
            })
            .collect();
        let seq = store.commit(&steps).unwrap();
        writeln!(out, "committed {seq}").unwrap();
        out.flush().unwrap();
    }
    unreachable!("the loop ends only when the process is killed")
}

/// Checks the file a killed writer left: everything the child reported committed is there,
/// and every step and batch is whole.
fn check_after_kill(backend: &Backend, location: &str, reported: u64) {
    let mut store = (backend.open)(location).unwrap();
    if backend.name == "sqlite" {
        let integrity: String =
            store.sqlite_conn().query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(integrity, "ok");
    }
    // `load` also checks that the seqs run without a gap.
    let inputs = store.load().unwrap().inputs;
    let last = inputs.last().map_or(0, |i| i.seq);
    assert!(last >= reported, "the child reported seq {reported} committed, the file ends at {last}");

    let transitions: BTreeMap<u64, u64> = store
        .integers("SELECT seq, count(*) FROM transitions GROUP BY seq")
        .into_iter()
        .map(|row| (row[0] as u64, row[1] as u64))
        .collect();
    let mut batches: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut batch_of_seq = BTreeMap::new();
    for input in &inputs {
        let json: serde_json::Value = serde_json::from_str(&input.json).unwrap();
        let batch = json["batch"].as_str().unwrap().to_owned();
        assert_eq!(transitions.get(&input.seq).copied(), json["transitions"].as_u64(), "seq {}", input.seq);
        let entry = batches.entry(batch.clone()).or_insert((0, json["size"].as_u64().unwrap()));
        entry.0 += 1;
        batch_of_seq.insert(input.seq, batch);
    }
    assert!(transitions.keys().all(|seq| batch_of_seq.contains_key(seq)), "transitions without their input");
    for (batch, (found, size)) in &batches {
        assert_eq!(found, size, "batch {batch} is partly written");
    }
    for case in store.list(&CaseFilter::default()).unwrap() {
        let json: serde_json::Value = serde_json::from_str(&case.json).unwrap();
        assert_eq!(
            Some(json["batch"].as_str().unwrap()),
            batch_of_seq.get(&case.updated_seq).map(String::as_str)
        );
    }
}

fn a_killed_writer_loses_no_committed_step_and_leaves_no_half_step(backend: &Backend) {
    if let Ok(location) = std::env::var(CHILD_ENV) {
        write_until_killed(backend, &location);
    }
    let fresh = (backend.fresh)();
    let test_name = format!(
        "{}::{}::a_killed_writer_loses_no_committed_step_and_leaves_no_half_step",
        module_path!().split_once("::").unwrap().1,
        backend.name
    );
    // Rounds on the same store: each child recovers what the previous one left and goes on
    // from there. A commit takes about half a millisecond here, so the growing delays before
    // the kill land it in different phases of the commit cycle (inserting, syncing the log,
    // printing), not always at the same point after a report.
    for (round, delay_us) in [0u64, 120, 250, 400, 650].into_iter().enumerate() {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([test_name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &fresh.location)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let wanted = 20 + 7 * round;
        let mut reported = 0;
        let mut commits = 0;
        for line in stdout.lines() {
            if let Some(seq) = line.unwrap().strip_prefix("committed ") {
                reported = seq.parse().unwrap();
                commits += 1;
                if commits == wanted {
                    break;
                }
            }
        }
        assert_eq!(commits, wanted, "the child stopped writing on its own");
        // The child goes on committing meanwhile, so SIGKILL lands mid-stream.
        std::thread::sleep(Duration::from_micros(delay_us));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "the child was killed, not finished");
        check_after_kill(backend, &fresh.location, reported);
    }
}
