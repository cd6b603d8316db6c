//! The retry policy (pure), the store (against SQLite in a temporary directory, including a
//! model-based test), and in `delivery` the worker against a real HTTP receiver.

mod delivery;
mod receiver;

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use proptest::prelude::*;

use super::policy::{AfterFailure, after_failure, attempts_within, backoff};
use super::store::priority;
use super::*;
use crate::SendError;
use crate::tests::sample;

fn msg(notification_id: u64) -> Message {
    Message { notification_id, case_id: 1000 + notification_id, ..sample() }
}

fn targets(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn key(notification_id: u64, target: &str) -> DeliveryKey {
    DeliveryKey { notification_id, target: target.to_owned() }
}

// ---- policy ----

#[test]
fn backoff_doubles_from_the_floor_to_the_cap_with_jitter() {
    let check = |attempt: u32, jitter: f64, expected_ms: u64| {
        let wait = backoff(attempt, Duration::from_secs(1), Duration::from_secs(300), jitter);
        assert_eq!(wait, Duration::from_millis(expected_ms), "attempt {attempt} jitter {jitter}");
    };
    // Equal jitter: between half and all of min·2^(attempt-1), never below min.
    check(1, 0.0, 1_000);
    check(1, 0.99, 1_000);
    check(2, 0.0, 1_000);
    check(2, 0.5, 1_500);
    check(3, 0.0, 2_000);
    check(3, 1.0, 4_000);
    check(9, 0.0, 128_000);
    check(10, 0.0, 150_000);
    check(10, 1.0, 300_000);
    check(60, 1.0, 300_000);
    check(u32::MAX, 0.5, 225_000);
    // A floor above the cap is the cap.
    assert_eq!(backoff(1, Duration::from_secs(10), Duration::from_secs(2), 0.0), Duration::from_secs(2));
}

#[test]
fn after_failure_retries_until_the_maximum_age_and_gives_up_on_permanent_failures() {
    let settings = DeliveryConfig::default();
    let hour = 3_600_000;
    let network = SendError::Network("refused".into());
    let check = |error: &SendError, attempt: u32, now: u64, expected: AfterFailure| {
        assert_eq!(
            after_failure(error, attempt, 0, now, &settings, 0.0),
            expected,
            "{error} #{attempt} at {now}"
        );
    };
    check(&network, 1, 1_000, AfterFailure::RetryAt(2_000));
    check(&network, 3, 10_000, AfterFailure::RetryAt(12_000));
    check(&network, 20, 60_000, AfterFailure::RetryAt(210_000));
    // The last attempt is made at the maximum age, not skipped.
    check(&network, 20, hour - 1_000, AfterFailure::RetryAt(hour));
    check(&network, 21, hour, AfterFailure::GiveUp);
    // 1 s doubling to 5 min: 10 attempts in the first 511 s, 10 more 300 s apart, the last at
    // the hour.
    assert_eq!(attempts_within(settings.max_age, settings.min_backoff, settings.max_backoff), 21);
    // The wall clock jumped five hours ahead after two attempts: not aged out, tried on.
    check(&network, 2, 5 * hour, AfterFailure::RetryAt(5 * hour + 1_000));
    check(&network, 21, 5 * hour, AfterFailure::GiveUp);
    check(&SendError::from_status(404, None, b""), 1, 1_000, AfterFailure::GiveUp);
    check(&SendError::UnknownTarget("x".into()), 1, 1_000, AfterFailure::GiveUp);
    // Retry-After is honoured up to the cap.
    let later = SendError::from_status(429, Some(Duration::from_secs(30)), b"");
    check(&later, 1, 1_000, AfterFailure::RetryAt(31_000));
    let much_later = SendError::from_status(503, Some(Duration::from_secs(86_400)), b"");
    check(&much_later, 1, 1_000, AfterFailure::RetryAt(301_000));
}

// ---- store ----

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(&dir.path().join("outbox").join("notify.sqlite")).unwrap()
}

fn pending_keys(store: &Store) -> Vec<(u64, String, u64)> {
    store
        .earliest(100)
        .unwrap()
        .into_iter()
        .map(|p| (p.key.notification_id, p.key.target, p.next_attempt_ms))
        .collect()
}

#[test]
fn enqueue_is_idempotent_per_notification_and_target_in_every_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    assert_eq!(store.enqueue(&msg(1), &targets(&["a", "b"]), 10).unwrap().inserted, 2);
    assert_eq!(store.enqueue(&msg(1), &targets(&["a", "b", "c"]), 20).unwrap().inserted, 1, "only c is new");
    store.delivered(&key(1, "a"), 1, 30).unwrap();
    store.dead(&key(1, "b"), 1, "refused", 30).unwrap();
    assert_eq!(
        store.enqueue(&msg(1), &targets(&["a", "b", "c"]), 40).unwrap().inserted,
        0,
        "replay after delivery"
    );
    assert_eq!(store.enqueue(&msg(1), &targets(&["a", "a"]), 40).unwrap().inserted, 0);
    assert_eq!(pending_keys(&store), [(1, "c".to_owned(), 20)]);
    let history: Vec<_> = store.history(1001).unwrap().into_iter().map(|h| (h.target, h.status)).collect();
    assert_eq!(
        history,
        [
            ("a".to_owned(), Status::Delivered),
            ("b".to_owned(), Status::Dead),
            ("c".to_owned(), Status::Pending)
        ]
    );
}

#[test]
fn earliest_lists_pending_rows_by_due_time_with_their_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    store.enqueue(&msg(1), &targets(&["a"]), 100).unwrap();
    store.enqueue(&msg(2), &targets(&["a", "b"]), 200).unwrap();
    store.retry_at(&key(1, "a"), 1, 500, "HTTP 500").unwrap();
    store.delivered(&key(2, "b"), 1, 210).unwrap();
    assert_eq!(pending_keys(&store), [(2, "a".to_owned(), 200), (1, "a".to_owned(), 500)]);
    let first = &store.earliest(1).unwrap()[0];
    assert_eq!(first.message, Ok(msg(2)));
    assert_eq!((first.case_id, first.attempts, first.enqueued_ms), (1002, 0, 200));
    let retried = &store.earliest(2).unwrap()[1];
    assert_eq!((retried.attempts, retried.enqueued_ms), (1, 100), "a retry keeps its enqueue time");
}

#[test]
fn outcomes_change_only_pending_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    store.enqueue(&msg(1), &targets(&["a"]), 0).unwrap();
    store.retry_at(&key(1, "a"), 1, 50, "timed out").unwrap();
    store.delivered(&key(1, "a"), 2, 60).unwrap();
    store.dead(&key(1, "a"), 3, "late", 70).unwrap();
    store.retry_at(&key(1, "a"), 3, 80, "late").unwrap();
    let entry = &store.history(1001).unwrap()[0];
    assert_eq!(
        *entry,
        HistoryEntry {
            notification_id: 1,
            target: "a".to_owned(),
            status: Status::Delivered,
            attempts: 2,
            last_error: Some("timed out".to_owned()),
            enqueued_ms: 0,
            next_attempt_ms: None,
            delivered_ms: Some(60),
            gave_up_ms: None,
            superseded_ms: None,
            superseded_by: None,
        }
    );
}

#[test]
fn prune_deletes_only_finished_rows_past_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    store.enqueue(&msg(1), &targets(&["old", "new", "dead", "pending"]), 0).unwrap();
    store.delivered(&key(1, "old"), 1, 100).unwrap();
    store.delivered(&key(1, "new"), 1, 300).unwrap();
    store.dead(&key(1, "dead"), 1, "refused", 100).unwrap();
    assert_eq!(store.prune(200).unwrap(), 2);
    let left: Vec<_> = store.history(1001).unwrap().into_iter().map(|h| h.target).collect();
    assert_eq!(left, ["new", "pending"]);
    assert_eq!((store.pending_count().unwrap(), store.dead_count().unwrap()), (1, 0));
}

#[test]
fn ids_above_i64_max_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let big = Message { notification_id: u64::MAX - 1, case_id: u64::MAX, ..sample() };
    store.enqueue(&big, &targets(&["a"]), 1).unwrap();
    let row = &store.earliest(1).unwrap()[0];
    assert_eq!((row.key.notification_id, row.case_id), (u64::MAX - 1, u64::MAX));
    assert_eq!(store.history(u64::MAX).unwrap()[0].notification_id, u64::MAX - 1);
    assert_eq!(store.enqueue(&big, &targets(&["a"]), 2).unwrap().inserted, 0);
}

#[test]
fn reopening_keeps_rows_and_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sqlite");
    let mut store = Store::open(&path).unwrap();
    store.enqueue(&msg(1), &targets(&["a", "b"]), 5).unwrap();
    store.retry_at(&key(1, "a"), 1, 99, "HTTP 502").unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(pending_keys(&store), [(1, "b".to_owned(), 5), (1, "a".to_owned(), 99)]);
    drop(store);
    rusqlite::Connection::open(&path).unwrap().pragma_update(None, "user_version", 3).unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
}

#[test]
fn an_unreadable_stored_message_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sqlite");
    let mut store = Store::open(&path).unwrap();
    store.enqueue(&msg(1), &targets(&["a"]), 5).unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("UPDATE delivery SET message = '{\"x\":'", [])
        .unwrap();
    let row = &store.earliest(1).unwrap()[0];
    assert!(row.message.is_err(), "{row:?}");
    assert_eq!(row.case_id, 1001, "the case is known without the message");
}

// ---- priority, reminders, migration ----

/// A page about `case_id` to `desk` with this severity and reason.
fn page(notification_id: u64, case_id: u64, severity: &str, reason: &str, desk: &str) -> Message {
    Message {
        notification_id,
        case_id,
        severity: severity.to_owned(),
        reason: reason.to_owned(),
        desk: desk.to_owned(),
        ..sample()
    }
}

fn due_ids(store: &Store, now: u64, per_target: usize) -> Vec<(u64, String)> {
    let due = store.due(now, Duration::from_secs(300), per_target).unwrap();
    due.rows.into_iter().map(|p| (p.key.notification_id, p.key.target)).collect()
}

#[test]
fn due_lists_each_channels_most_urgent_first_then_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    store.enqueue(&page(1, 1, "fault", "opened", "grid:G1"), &targets(&["a", "b"]), 100).unwrap();
    store.enqueue(&page(2, 2, "fault", "opened", "grid:G1"), &targets(&["a"]), 200).unwrap();
    store.enqueue(&page(3, 3, "test", "opened", "grid:G1"), &targets(&["a"]), 50).unwrap();
    store.enqueue(&page(4, 4, "pre_alarm", "opened", "grid:G1"), &targets(&["a"]), 300).unwrap();
    store.enqueue(&page(5, 5, "fire", "confirmed", "grid:G1"), &targets(&["a", "b"]), 400).unwrap();
    let a = |ids: &[u64]| ids.iter().map(|&i| (i, "a".to_owned())).collect::<Vec<_>>();
    let only_a: Vec<_> = due_ids(&store, 1_000, 10).into_iter().filter(|(_, t)| t == "a").collect();
    assert_eq!(only_a, a(&[5, 4, 1, 2, 3]));
    // At most `per_target` per channel: b's rows are not crowded out by a's.
    assert_eq!(
        due_ids(&store, 1_000, 2),
        [(5, "a".to_owned()), (5, "b".to_owned()), (4, "a".to_owned()), (1, "b".to_owned())]
    );
    // A retry keeps its priority but waits for its time.
    store.retry_at(&key(5, "a"), 1, 5_000, "HTTP 502").unwrap();
    let due = store.due(1_000, Duration::from_secs(300), 10).unwrap();
    assert_eq!(due.next_due_ms, Some(5_000));
    assert!(due.rows.iter().all(|r| r.key != key(5, "a")));
    assert!(due.rows.iter().find(|r| r.key == key(5, "b")).unwrap().is_urgent());
    assert_eq!(due_ids(&store, 5_000, 1), [(5, "a".to_owned()), (5, "b".to_owned())]);
    // Set before the wall clock stepped back (further ahead than any backoff): due now.
    store.retry_at(&key(4, "a"), 1, 1_000 + 301_000, "HTTP 502").unwrap();
    assert!(due_ids(&store, 1_000, 10).contains(&(4, "a".to_owned())));
    let depth = store.depth().unwrap();
    let depth: Vec<_> = depth.iter().map(|d| (d.target.as_str(), d.severity.as_str(), d.pending)).collect();
    assert_eq!(
        depth,
        [
            ("a", "fault", 2),
            ("a", "fire", 1),
            ("a", "pre_alarm", 1),
            ("a", "test", 1),
            ("b", "fault", 1),
            ("b", "fire", 1)
        ]
    );
}

#[test]
fn a_newer_reminder_supersedes_only_older_pending_reminders_of_its_case_desk_and_channel() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let enqueue =
        |store: &mut Store, m: &Message, t: &[&str], now| store.enqueue(m, &targets(t), now).unwrap();
    // The first page, an escalation to the community, and a reminder to the grid.
    enqueue(&mut store, &page(1, 9, "fault", "opened", "grid:G1"), &["a", "b"], 10);
    enqueue(&mut store, &page(2, 9, "fault", "escalated", "community:C1"), &["a"], 20);
    assert_eq!(
        enqueue(&mut store, &page(3, 9, "fault", "reminder", "grid:G1"), &["a", "b"], 30).superseded,
        []
    );
    // Another case's reminder on the same channel, and the community's own reminder.
    enqueue(&mut store, &page(4, 8, "fault", "reminder", "grid:G1"), &["a"], 40);
    enqueue(&mut store, &page(5, 9, "fault", "reminder", "community:C1"), &["a"], 50);
    // The grid's next reminder, on channel a only: it supersedes #3 on a, not on b.
    let done = enqueue(&mut store, &page(6, 9, "fault", "reminder", "grid:G1"), &["a"], 60);
    assert_eq!(
        done,
        store::Enqueued { inserted: 1, added: vec![key(6, "a")], superseded: vec![key(3, "a")] }
    );
    // A replay of #3 (already present) supersedes nothing.
    assert_eq!(
        enqueue(&mut store, &page(3, 9, "fault", "reminder", "grid:G1"), &["a", "b"], 70),
        Default::default()
    );
    let history: Vec<_> = store
        .history(9)
        .unwrap()
        .into_iter()
        .map(|h| (h.notification_id, h.target, h.status, h.superseded_by, h.superseded_ms))
        .collect();
    use Status::{Pending as P, Superseded as S};
    assert_eq!(
        history,
        [
            (1, "a".to_owned(), P, None, None),
            (1, "b".to_owned(), P, None, None),
            (2, "a".to_owned(), P, None, None),
            (3, "a".to_owned(), S, Some(6), Some(60)),
            (3, "b".to_owned(), P, None, None),
            (5, "a".to_owned(), P, None, None),
            (6, "a".to_owned(), P, None, None),
        ]
    );
    assert_eq!(store.superseded_count().unwrap(), 1);
    assert!(!due_ids(&store, 100, 100).contains(&(3, "a".to_owned())), "never delivered");
    // A reminder that was delivered already is not superseded; one being sent when it was
    // superseded is recorded as delivered when it gets through.
    store.delivered(&key(6, "a"), 1, 80).unwrap();
    assert_eq!(
        enqueue(&mut store, &page(7, 9, "fault", "reminder", "grid:G1"), &["a", "b"], 90).superseded,
        [key(3, "b")]
    );
    store.delivered(&key(3, "b"), 1, 95).unwrap();
    let b3 =
        store.history(9).unwrap().into_iter().find(|h| h.notification_id == 3 && h.target == "b").unwrap();
    assert_eq!((b3.status, b3.superseded_by), (Status::Delivered, Some(7)));
    // Superseded rows are finished: pruned with the rest.
    assert_eq!(store.prune(1_000).unwrap(), 3);
}

/// A version-1 row: id, target, message, status, attempts, enqueued, next attempt, last error,
/// finished.
type V1Row<'a> = (u64, &'a str, String, &'a str, u32, i64, i64, Option<&'a str>, Option<i64>);

/// The schema of version 1, as that version created it.
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS delivery (
    notification_id INTEGER NOT NULL,
    target          TEXT    NOT NULL,
    case_id         INTEGER NOT NULL,
    message         TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    enqueued_ms     INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL,
    last_error      TEXT,
    finished_ms     INTEGER,
    PRIMARY KEY (notification_id, target)
);
CREATE INDEX IF NOT EXISTS delivery_due ON delivery (next_attempt_ms) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS delivery_case ON delivery (case_id);
CREATE INDEX IF NOT EXISTS delivery_finished ON delivery (finished_ms) WHERE status != 'pending';
";

#[test]
fn a_version_1_file_is_migrated_with_every_row_and_its_priority() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sqlite");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())).unwrap();
        conn.execute_batch(SCHEMA_V1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        // Messages as version 1 stored them: no `reason` field.
        let v1 = |id: u64, severity: &str| {
            let mut json = serde_json::to_value(page(id, 77, severity, "", "grid:G1")).unwrap();
            json.as_object_mut().unwrap().remove("reason");
            json.to_string()
        };
        let insert = "INSERT INTO delivery (notification_id, target, case_id, message, status, attempts,
                      enqueued_ms, next_attempt_ms, last_error, finished_ms) VALUES (?1, ?2, 77, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
        let rows: [V1Row; 5] = [
            (1, "a", v1(1, "fault"), "pending", 0, 100, 100, None, None),
            (2, "a", v1(2, "fire"), "pending", 2, 200, 250, Some("HTTP 502"), None),
            (3, "a", v1(3, "fault"), "delivered", 1, 50, 50, None, Some(60)),
            (4, "b", v1(4, "pre_alarm"), "dead", 3, 40, 40, Some("HTTP 404"), Some(70)),
            (5, "b", "{\"not\": \"a message\"".to_owned(), "pending", 0, 30, 30, None, None),
        ];
        for (id, t, json, status, attempts, enq, next, err, fin) in rows {
            conn.execute(
                insert,
                rusqlite::params![id as i64, t, json, status, attempts, enq, next, err, fin],
            )
            .unwrap();
        }
    }
    let mut store = Store::open(&path).unwrap();
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2);
    // The fire comes first now, although it was queued after the fault.
    let due = store.due(1_000, Duration::from_secs(300), 10).unwrap();
    let got: Vec<_> = due.rows.iter().map(|p| (p.key.notification_id, p.priority, p.attempts)).collect();
    assert_eq!(got, [(2, priority("fire"), 2), (1, priority("fault"), 0), (5, 0, 0)]);
    assert_eq!(due.rows[0].message.as_ref().unwrap().reason, "", "an old row reads without a reason");
    assert!(due.rows[2].message.is_err(), "an unreadable row is kept, and reported when sent");
    let history: Vec<_> =
        store.history(77).unwrap().into_iter().map(|h| (h.notification_id, h.status, h.last_error)).collect();
    assert_eq!(
        history,
        [
            (5, Status::Pending, None),
            (4, Status::Dead, Some("HTTP 404".to_owned())),
            (3, Status::Delivered, None),
            (1, Status::Pending, None),
            (2, Status::Pending, Some("HTTP 502".to_owned())),
        ]
    );
    // A migrated file (its new columns at the end) moves to a memory table and back, as on a
    // sick disk, row for row.
    let on_disk = store.export_rows().unwrap();
    let mut memory = Store::open_memory().unwrap();
    memory.import_rows(&on_disk).unwrap();
    assert_eq!(memory.history(77).unwrap(), store.history(77).unwrap());
    store.import_rows(&memory.export_rows().unwrap()).unwrap();
    assert_eq!(store.export_rows().unwrap(), on_disk, "back on disk unchanged");
    // Still idempotent per (notification, target), and old rows are never taken for reminders.
    assert_eq!(
        store.enqueue(&page(3, 77, "fault", "reminder", "grid:G1"), &targets(&["a"]), 2_000).unwrap(),
        Default::default()
    );
    assert_eq!(
        store
            .enqueue(&page(9, 77, "fault", "reminder", "grid:G1"), &targets(&["a"]), 2_000)
            .unwrap()
            .superseded,
        []
    );
    drop(store);
    // Opening again does not migrate again.
    let store = Store::open(&path).unwrap();
    assert_eq!(store.pending_count().unwrap(), 4);
}

// ---- model-based: random operation sequences against a map ----

#[derive(Debug, Clone)]
enum Op {
    Enqueue { id: u64, targets: Vec<&'static str>, now: u64 },
    Deliver { pick: usize, now: u64 },
    Retry { pick: usize, next: u64 },
    Kill { pick: usize, now: u64 },
    Prune { bound: u64 },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let target = prop::sample::select(vec!["a", "b", "c"]);
    prop_oneof![
        3 => (0..6u64, prop::collection::vec(target, 0..4), 0..1000u64)
            .prop_map(|(id, targets, now)| Op::Enqueue { id, targets, now }),
        2 => (any::<usize>(), 0..1000u64).prop_map(|(pick, now)| Op::Deliver { pick, now }),
        2 => (any::<usize>(), 0..1000u64).prop_map(|(pick, next)| Op::Retry { pick, next }),
        1 => (any::<usize>(), 0..1000u64).prop_map(|(pick, now)| Op::Kill { pick, now }),
        1 => (0..1000u64).prop_map(|bound| Op::Prune { bound }),
        1 => Just(Op::Reopen),
    ]
}

/// The model: (id, target) → (status, attempts, next_attempt_ms, finished_ms).
type Model = BTreeMap<(u64, String), (Status, u32, u64, Option<u64>)>;

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_a_map_model(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sqlite");
        let mut store = Store::open(&path).unwrap();
        let mut model = Model::new();
        for op in ops {
            let pending: Vec<(u64, String)> =
                model.iter().filter(|(_, v)| v.0 == Status::Pending).map(|(k, _)| k.clone()).collect();
            let pick = |i: usize| (!pending.is_empty()).then(|| pending[i % pending.len()].clone());
            match op {
                Op::Enqueue { id, targets, now } => {
                    let names: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
                    let mut new = 0;
                    for t in &names {
                        if let std::collections::btree_map::Entry::Vacant(e) = model.entry((id, t.clone())) {
                            e.insert((Status::Pending, 0, now, None));
                            new += 1;
                        }
                    }
                    prop_assert_eq!(store.enqueue(&msg(id), &names, now).unwrap().inserted, new);
                }
                Op::Deliver { pick: i, now } => if let Some((id, t)) = pick(i) {
                    let row = model.get_mut(&(id, t.clone())).unwrap();
                    *row = (Status::Delivered, row.1 + 1, row.2, Some(now));
                    store.delivered(&key(id, &t), row.1, now).unwrap();
                },
                Op::Retry { pick: i, next } => if let Some((id, t)) = pick(i) {
                    let row = model.get_mut(&(id, t.clone())).unwrap();
                    *row = (Status::Pending, row.1 + 1, next, None);
                    store.retry_at(&key(id, &t), row.1, next, "failed").unwrap();
                },
                Op::Kill { pick: i, now } => if let Some((id, t)) = pick(i) {
                    let row = model.get_mut(&(id, t.clone())).unwrap();
                    *row = (Status::Dead, row.1 + 1, row.2, Some(now));
                    store.dead(&key(id, &t), row.1, "refused", now).unwrap();
                },
                Op::Prune { bound } => {
                    let before = model.len();
                    model.retain(|_, v| v.0 == Status::Pending || v.3.is_some_and(|f| f >= bound));
                    prop_assert_eq!(store.prune(bound).unwrap(), before - model.len());
                }
                Op::Reopen => {
                    drop(store);
                    store = Store::open(&path).unwrap();
                }
            }
            let count = |s| model.values().filter(|v| v.0 == s).count() as u64;
            prop_assert_eq!(store.pending_count().unwrap(), count(Status::Pending));
            prop_assert_eq!(store.dead_count().unwrap(), count(Status::Dead));
            let earliest = store.earliest(1000).unwrap();
            prop_assert!(earliest.windows(2).all(|w| w[0].next_attempt_ms <= w[1].next_attempt_ms));
            let mut got: Vec<_> = earliest
                .iter()
                .map(|p| ((p.key.notification_id, p.key.target.clone()), p.attempts, p.next_attempt_ms))
                .collect();
            got.sort();
            let expected: Vec<_> = model
                .iter()
                .filter(|(_, v)| v.0 == Status::Pending)
                .map(|(k, v)| (k.clone(), v.1, v.2))
                .collect();
            prop_assert_eq!(got, expected);
            for id in 0..6u64 {
                let history: Vec<_> = store
                    .history(1000 + id)
                    .unwrap()
                    .into_iter()
                    .map(|h| (h.target, h.status, h.attempts))
                    .collect();
                let mut history = history;
                history.sort_by(|a, b| a.0.cmp(&b.0));
                let expected: Vec<_> = model
                    .iter()
                    .filter(|((i, _), _)| *i == id)
                    .map(|((_, t), v)| (t.clone(), v.0, v.1))
                    .collect();
                prop_assert_eq!(history, expected);
            }
        }
    }
}

/// Fast retries for the delivery tests: same shape as production, 20× quicker.
fn quick() -> DeliveryConfig {
    DeliveryConfig {
        concurrency: NonZeroUsize::new(16).unwrap(),
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        ..DeliveryConfig::default()
    }
}
