//! The shared outbox against a real PostgreSQL (`firegrid_tests::Postgres`): what one holder
//! of the case store wrote, the next one carries on with; the old holder is fenced; an
//! outage is ridden out in memory and written back.

use std::time::{Duration, Instant};

use firegrid_notify::outbox::{DeliveryKey, Status, Store};
use firegrid_notify::{Message, Outbox, OutboxError};

use crate::store::{CaseStore, PostgresOptions};

fn message(notification_id: u64, case_id: u64) -> Message {
    Message {
        notification_id,
        case_id,
        severity: "fire".to_owned(),
        level: "grid".to_owned(),
        desk: "grid:G1".to_owned(),
        title: "3号楼 烟感火警".to_owned(),
        text: "502室".to_owned(),
        url: None,
        at_ms: 1_700_000_000_000,
        reason: "opened".to_owned(),
        local_at: None,
    }
}

fn key(notification_id: u64, target: &str) -> DeliveryKey {
    DeliveryKey { notification_id, target: target.to_owned() }
}

fn open(server: &firegrid_tests::Postgres, wait: Duration) -> CaseStore {
    let password = Some(server.password().to_owned());
    let options = PostgresOptions { password, wait, ..PostgresOptions::default() };
    CaseStore::open_postgres_with(&server.conninfo("postgres"), &options).unwrap()
}

/// `(notification_id, target, status, attempts, written_epoch)` of every row, as PostgreSQL
/// has them.
fn rows(admin: &mut postgres::Client) -> Vec<(i64, String, String, i64, i64)> {
    admin
        .query(
            "SELECT notification_id, target, status, attempts, written_epoch FROM notify_outbox \
             ORDER BY notification_id, target",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

#[test]
fn the_next_holder_carries_on_with_the_outbox_and_the_old_one_is_fenced() {
    let server = firegrid_tests::Postgres::start().unwrap();
    let mut admin = server.connect("postgres").unwrap();
    let first = open(&server, Duration::ZERO);
    let mut old = Store::open_shared(first.shared_outbox().expect("PostgreSQL shares the outbox")).unwrap();
    let both = ["sms".to_owned(), "webhook".to_owned()];
    assert_eq!(old.enqueue(&message(1, 10), &both, 1_000).unwrap().inserted, 2);
    assert_eq!(old.enqueue(&message(2, 11), &both[1..], 1_000).unwrap().inserted, 1);
    old.delivered(&key(1, "webhook"), 1, 1_100).unwrap();
    old.retry_at(&key(1, "sms"), 1, 5_000, "HTTP 503").unwrap();
    assert_eq!(
        rows(&mut admin),
        [
            (1, "sms".into(), "pending".into(), 1, 1),
            (1, "webhook".into(), "delivered".into(), 1, 1),
            (2, "webhook".into(), "pending".into(), 0, 1),
        ],
        "every write is in PostgreSQL when it returns, under epoch 1"
    );

    // The first holder's writer session ends (its machine died); the next store takes the
    // next epoch and finds the outbox as the first one left it.
    let holder: i32 = admin.query_one("SELECT backend_pid FROM case_store_lease", &[]).unwrap().get(0);
    admin.query("SELECT pg_terminate_backend($1)", &[&holder]).unwrap();
    let second = open(&server, Duration::from_secs(20));
    assert_eq!(second.epoch(), Some(2));
    let mut new = Store::open_shared(second.shared_outbox().unwrap()).unwrap();
    let history = new.history(10).unwrap();
    let shown: Vec<_> = history.iter().map(|h| (h.target.as_str(), h.status, h.attempts)).collect();
    assert_eq!(shown, [("sms", Status::Pending, 1), ("webhook", Status::Delivered, 1)]);
    assert_eq!(history[0].last_error.as_deref(), Some("HTTP 503"));
    // The replay queues notification 1 again: nothing new, the delivered webhook stays so.
    assert_eq!(new.enqueue(&message(1, 10), &both, 2_000).unwrap().inserted, 0);
    let due = new.due(6_000, Duration::from_secs(300), 10).unwrap();
    let due: Vec<_> = due.rows.iter().map(|p| p.key.clone()).collect();
    assert_eq!(due, [key(1, "sms"), key(2, "webhook")], "only what was never delivered is due");
    assert_eq!(new.delivered_since("webhook", 0).unwrap(), [1_100], "the rate-limit window sees it");

    // The old holder wakes: every write is refused, in PostgreSQL and in its own mirror.
    let err = old.delivered(&key(2, "webhook"), 1, 7_000).unwrap_err();
    let OutboxError::Fenced { epoch, current, .. } = &err else { panic!("{err:?}") };
    assert_eq!((*epoch, *current), (1, 2));
    assert!(!err.to_string().contains(server.password()), "{err}");
    let err = old.enqueue(&message(3, 12), &both, 7_000).unwrap_err();
    assert!(matches!(err, OutboxError::Fenced { .. }), "{err:?}");
    assert!(matches!(old.prune(u64::MAX / 2), Err(OutboxError::Fenced { .. })));
    assert_eq!(old.history(11).unwrap()[0].status, Status::Pending, "the mirror rolled back");
    assert!(old.history(12).unwrap().is_empty());
    assert_eq!(rows(&mut admin).len(), 3, "nothing of the fenced writes");
    assert_eq!(rows(&mut admin)[2].2, "pending");

    new.delivered(&key(2, "webhook"), 1, 7_000).unwrap();
    assert_eq!(rows(&mut admin)[2], (2, "webhook".into(), "delivered".into(), 1, 2));
    // Retention deletes finished rows in PostgreSQL too, never a pending one.
    assert_eq!(new.prune(8_000).unwrap(), 2);
    // The second holder's replayed enqueue left it alone: still the first holder's write.
    assert_eq!(rows(&mut admin), [(1, "sms".into(), "pending".into(), 1, 1)]);
}

/// The server stops: the outbox goes on in memory (a page is queued and can be delivered),
/// says so in the stores' health, and writes the rows back once the server answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_ridden_out_in_memory_and_written_back() {
    let mut server =
        tokio::task::spawn_blocking(|| firegrid_tests::Postgres::start().unwrap()).await.unwrap();
    let password = server.password().to_owned();
    let conninfo = server.conninfo("postgres");
    let store = tokio::task::spawn_blocking(move || {
        let options =
            PostgresOptions { password: Some(password), wait: Duration::ZERO, ..Default::default() };
        CaseStore::open_postgres_with(&conninfo, &options).unwrap()
    })
    .await
    .unwrap();
    let table = store.shared_outbox().unwrap();
    let health = std::sync::Arc::new(firegrid_base::durability::StoreHealth::default());
    let outbox = tokio::task::spawn_blocking(move || Outbox::open_shared(table).unwrap())
        .await
        .unwrap()
        .report_to(health.clone());
    assert!(outbox.location().contains("127.0.0.1"), "{}", outbox.location());
    assert_eq!(outbox.enqueue(&message(1, 10), &["webhook".to_owned()]).await.unwrap(), 1);

    let mut server = tokio::task::spawn_blocking(move || {
        server.stop().unwrap();
        server
    })
    .await
    .unwrap();
    assert_eq!(outbox.enqueue(&message(2, 11), &["webhook".to_owned()]).await.unwrap(), 1);
    assert_eq!(outbox.pending_count().await.unwrap(), 2, "both pages are queued, one in memory");
    let unwritable = health.unwritable();
    assert_eq!(unwritable.len(), 1, "the outbox says it cannot write: {unwritable:?}");

    let server = tokio::task::spawn_blocking(move || {
        server.restart().unwrap();
        std::sync::Arc::new(server)
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Each call gives the outbox its chance to write the memory table back.
        outbox.pending_count().await.unwrap();
        let reader = server.clone();
        let stored = tokio::task::spawn_blocking(move || rows(&mut reader.connect("postgres").unwrap()))
            .await
            .unwrap();
        if stored.len() == 2 {
            assert!(stored.iter().all(|r| r.2 == "pending"), "{stored:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the memory table was never written back: {stored:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(health.unwritable().is_empty(), "the outbox writes its table again");
    tokio::task::spawn_blocking(move || drop((store, server))).await.unwrap();
}
