//! A village's two gateways through the loss of the active one mid-escalation, on one
//! PostgreSQL store (with its lease: `[alerting.store] standby` on both) and one Mosquitto:
//! killed with SIGKILL, and frozen with SIGSTOP and woken with SIGCONT after the standby took
//! over. Either way the standby pages the fire's next level, no case is lost, no page goes
//! twice (counted per idempotency key, that is per case and notification), and the frozen one,
//! once awake, pages nothing, takes no MQTT session back and exits as its lease ran out. And
//! the database going away for longer than the lease: the active one goes on paging, and
//! carries on, with nothing lost, once the database answers. And a
//! deadline that passes while no gateway is active fires as soon as one takes over. And the
//! outbox, shared in the store: a page the dead active could not deliver is delivered by the
//! standby, and once only, though the first gateway comes back and takes over again.

use std::time::{Duration, Instant};

use firegrid_tests::Firegrid;
use rumqttc::{AsyncClient, MqttOptions, QoS};

use crate::postgres_store::{Village, alarm, count, count_where};

/// The lease both gateways hold the store with: the default.
const LEASE: Duration = Duration::from_secs(3);

/// How long after the active one stopped the escalation may arrive past its deadline (the
/// lease, then the standby's start: breaking the lease, replaying, connecting), with room for
/// a loaded machine.
const TAKEOVER_ALLOWANCE: Duration = Duration::from_secs(15);

/// The first page's acknowledgement deadline, after which the case escalates.
const ACK_AFTER: Duration = Duration::from_secs(10);

/// The engine of both gateways: an unregistered detector's alarm (a pre-alarm) is paged at
/// the street desk and escalates to the district 10 s later.
const ENGINE: &str = r#"[alerting.engine.pre_alarm]
entry = ["street"]
ack = [{ after = "10s" }, { after = "10s" }, { after = "10s" }, { after = "10s" }]
renotify = "10m"
handle = { after = "10m" }
latched = false"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Kill,
    Freeze,
}

/// Lines of `log` that contain `text`.
fn lines_with(log: &std::path::Path, text: &str) -> usize {
    std::fs::read_to_string(log).unwrap().lines().filter(|line| line.contains(text)).count()
}

/// Publishes an unregistered detector's fire alarm in the village and returns its first page
/// (the street desk's).
async fn first_page(village: &Village) -> serde_json::Value {
    let (client, mut eventloop) =
        AsyncClient::new(MqttOptions::new("detectors", "127.0.0.1", village.broker.port()), 10);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let (topic, payload) = alarm("x-1");
    client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    village.hook.wait("the first page", Duration::from_secs(20), |v| v["desk"] == "street:fuhai-1").await
}

async fn fire_escalates_across_a_takeover(fault: Fault) {
    let village = Village::start().await;
    let (hook, server) = (&village.hook, &village.server);
    let config = || village.config("gw-fuhai-1", "standby = true", ENGINE);
    // Both are configured alike; the first to start holds the store.
    let mut active = Firegrid::start(config()).unwrap();
    let first = first_page(&village).await;

    let standby_config = config();
    let standby = std::thread::spawn(move || Firegrid::start(standby_config).unwrap());
    let queued = Instant::now();
    while count_where(server, "pg_stat_activity", "wait_event = 'advisory'") == 0 {
        assert!(queued.elapsed() < Duration::from_secs(15), "the standby never queued for the store");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The first page's delivery is in the store before the active one goes.
    let logged = Instant::now();
    while count_where(server, "inputs", "kind = 'delivery'") == 0 {
        assert!(logged.elapsed() < Duration::from_secs(20), "the delivery was never logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!standby.is_finished(), "the standby waits while the active one renews its lease");
    let faulted = Instant::now();
    match fault {
        Fault::Kill => active.kill().unwrap(),
        Fault::Freeze => active.pause().unwrap(),
    }

    let next = hook
        .wait("the escalation after the takeover", Duration::from_secs(40), |v| {
            v["desk"] == "district:Xishan"
        })
        .await;
    let mut taken_over = tokio::task::spawn_blocking(move || standby.join().unwrap()).await.unwrap();
    assert_eq!(next["case_id"], first["case_id"], "the same case goes on escalating");
    let received = hook.received();
    let at = |desk: &str| received.iter().find(|(_, v)| v["desk"] == desk).map(|(at, _)| *at).unwrap();
    let (first_at, next_at) = (at("street:fuhai-1"), at("district:Xishan"));
    assert!(next_at > faulted, "the escalation is the standby's, sent after the fault");
    // Its logical deadline is 10 s after the first page was decided (before it arrived).
    let latest = first_at + ACK_AFTER + LEASE + TAKEOVER_ALLOWANCE;
    assert!(next_at <= latest, "the escalation came {:?} after the first page", next_at - first_at);
    eprintln!(
        "{fault:?}: escalation {:?} after the fault, {:?} past its deadline",
        next_at - faulted,
        next_at.saturating_duration_since(first_at + ACK_AFTER)
    );
    let standby_log = taken_over.log_path().to_owned();
    if fault == Fault::Freeze {
        // A frozen active keeps its session and lock: the standby had to break its lease.
        assert_eq!(lines_with(&standby_log, "let its lease expire"), 1, "{}", taken_over.log_tail(40));
    }
    let (epoch, holder): (i64, String) = tokio::task::block_in_place(|| {
        let row = server
            .connect("firegrid")
            .unwrap()
            .query_one("SELECT epoch, holder FROM case_store_lease", &[])
            .unwrap();
        (row.get(0), row.get(1))
    });
    assert_eq!(epoch, 2, "one takeover, one epoch more");
    assert!(holder.ends_with(&format!("pid {}", taken_over.pid().unwrap())), "{holder}");

    if fault == Fault::Freeze {
        // The frozen one wakes up: its own clock tells it that its lease ran out, so it sends
        // no page, takes no MQTT session back, and exits for its supervisor to restart it.
        let broker_log = village.broker.log_path().to_owned();
        let connects = lines_with(&broker_log, " as gw-fuhai-1");
        let delivered = lines_with(active.log_path(), "Notification delivered.");
        active.resume().unwrap();
        let status = tokio::task::block_in_place(|| active.wait_exit(Duration::from_secs(20))).unwrap();
        let status = status.expect("the woken gateway exits");
        assert_eq!(status.code(), Some(75), "{status:?}: {}", active.log_tail(40));
        assert_eq!(lines_with(active.log_path(), "Exiting so that it starts again as a standby."), 1);
        assert_eq!(
            lines_with(active.log_path(), "Notification delivered."),
            delivered,
            "no page after waking"
        );
        assert_eq!(lines_with(&broker_log, " as gw-fuhai-1"), connects, "no MQTT connection after waking");
        // The standby kept its sessions: nobody took them back.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(taken_over.metric("firegrid_mqtt_connected{session=\"alarm\"}").unwrap(), Some(1.0));
        assert_eq!(
            taken_over.metric("firegrid_mqtt_connect_failures_total{session=\"alarm\"}").unwrap(),
            None
        );
    }

    each_page_once(&village, &first);
    taken_over.stop().unwrap();
}

/// No case lost or doubled, no page twice: every idempotency key (case and notification)
/// arrived once, the first page included, though the standby replayed it.
fn each_page_once(village: &Village, first: &serde_json::Value) {
    let (hook, server) = (&village.hook, &village.server);
    assert_eq!(count(server, "cases"), 1);
    let keys = hook.idempotency_keys();
    assert!(keys.iter().all(|k| !k.is_empty()), "every page carries its key: {keys:?}");
    let mut per_key = std::collections::BTreeMap::<&str, usize>::new();
    for key in &keys {
        *per_key.entry(key).or_default() += 1;
    }
    assert!(per_key.values().all(|&n| n == 1), "a page went twice: {per_key:?} ({:?})", hook.desks());
    assert!(per_key.len() >= 2, "the first page and the escalation: {per_key:?}");
    let first_key = format!("{}-{}", first["case_id"], first["notification_id"]);
    assert_eq!(keys[0], first_key, "the key is the case and the notification");
}

/// The escalation's deadline passes while no gateway is active (the active one killed, the
/// standby not started until after it): the standby, once it holds the store, replays the
/// case and sends the overdue escalation at once, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_that_passed_while_no_gateway_was_active_fires_on_takeover() {
    let village = Village::start().await;
    let hook = &village.hook;
    let config = || village.config("gw-fuhai-1", "standby = true", ENGINE);
    let mut active = Firegrid::start(config()).unwrap();
    let first = first_page(&village).await;
    let logged = Instant::now();
    while count_where(&village.server, "inputs", "kind = 'delivery'") == 0 {
        assert!(logged.elapsed() < Duration::from_secs(20), "the delivery was never logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    active.kill().unwrap();
    let first_at = hook.received()[0].0;
    // Nobody is active until well past the escalation's deadline.
    let overdue = first_at + ACK_AFTER + Duration::from_secs(2);
    tokio::time::sleep_until(overdue.into()).await;
    assert!(hook.desks().iter().all(|desk| desk != "district:Xishan"), "nobody escalated meanwhile");

    let standby_config = config();
    let started = Instant::now();
    let mut taken_over =
        tokio::task::spawn_blocking(move || Firegrid::start(standby_config).unwrap()).await.unwrap();
    let next = hook
        .wait("the overdue escalation", Duration::from_secs(40), |v| v["desk"] == "district:Xishan")
        .await;
    assert_eq!(next["case_id"], first["case_id"], "the same case escalates");
    let next_at = hook.received().iter().find(|(_, v)| v["desk"] == "district:Xishan").unwrap().0;
    assert!(next_at > started, "sent by the gateway that took over");
    // At once: within the takeover's own allowance of the standby's start, not another
    // ack period later.
    assert!(
        next_at <= started + TAKEOVER_ALLOWANCE,
        "the overdue escalation came {:?} after the standby started",
        next_at - started
    );
    each_page_once(&village, &first);
    taken_over.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_a_fire_escalating_when_the_active_gateway_is_killed() {
    fire_escalates_across_a_takeover(Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_from_a_frozen_active_gateway_which_wakes_up_fenced() {
    fire_escalates_across_a_takeover(Fault::Freeze).await;
}

/// PostgreSQL stopped for longer than the lease, under an active gateway with `standby`: nobody
/// can take over (a standby cannot reach the database either), so the active one goes on
/// paging (a new fire is paged during the outage), and once the database answers again and
/// renews its epoch it goes on as the active one: the outage's fire reaches the case store,
/// its page is not sent again, and a later fire is paged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_gateway_goes_on_paging_while_the_database_is_away() {
    let mut village = Village::start().await;
    let mut active = Firegrid::start(village.config("gw-fuhai-1", "standby = true", ENGINE)).unwrap();
    let (client, mut eventloop) =
        AsyncClient::new(MqttOptions::new("detectors", "127.0.0.1", village.broker.port()), 10);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let (topic, payload) = alarm("x-1");
    client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    let hook = &village.hook;
    let first = hook.wait("the first page", Duration::from_secs(20), |v| v["desk"] == "street:fuhai-1").await;

    tokio::task::block_in_place(|| village.server.stop()).unwrap();
    // The lease runs out on the gateway's clock with its renewals refused.
    let stopped = Instant::now();
    while lines_with(active.log_path(), "The case store cannot be reached and this gateway's lease ran out")
        == 0
    {
        assert!(active.is_running(), "the gateway exited: {}", active.log_tail(40));
        assert!(stopped.elapsed() < Duration::from_secs(30), "{}", active.log_tail(40));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (topic, payload) = alarm("x-2");
    client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    let second = hook
        .wait("a new fire's page during the outage", Duration::from_secs(30), |v| {
            v["desk"] == "street:fuhai-1" && v["case_id"] != first["case_id"]
        })
        .await;
    assert!(active.is_running(), "{}", active.log_tail(40));
    assert!(!second["case_id"].is_null(), "{second}");

    let village_server = &mut village.server;
    tokio::task::block_in_place(|| village_server.restart()).unwrap();
    // The database answers and renews this gateway's epoch: nobody took over, so it goes on
    // as the active one and writes what it held through the outage. Exiting there (as it
    // once did, to restart as a standby) lost the outage's fire from the case store.
    let pid = active.pid();
    let settled = Instant::now();
    while count(&village.server, "cases") < 2 {
        assert!(active.is_running(), "the gateway exited: {}", active.log_tail(40));
        assert!(
            settled.elapsed() < Duration::from_secs(30),
            "the outage's fire was lost: {}",
            active.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count(&village.server, "cases"), 2, "no case lost or doubled");
    // And, a renewal later, holds its lease again.
    while lines_with(active.log_path(), "this gateway's lease is still its own") == 0 {
        assert!(active.is_running(), "the gateway exited: {}", active.log_tail(40));
        assert!(settled.elapsed() < Duration::from_secs(30), "{}", active.log_tail(40));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (topic, payload) = alarm("x-3");
    client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    hook.wait("a third fire's page after the outage", Duration::from_secs(30), |v| {
        v["desk"] == "street:fuhai-1" && v["case_id"] != first["case_id"] && v["case_id"] != second["case_id"]
    })
    .await;
    assert_eq!(count(&village.server, "cases"), 3);
    assert_eq!(active.pid(), pid, "the same process carried on");
    assert_eq!(lines_with(active.log_path(), "Exiting so that it starts again as a standby."), 0);
    let keys = hook.idempotency_keys();
    let second_key = format!("{}-{}", second["case_id"], second["notification_id"]);
    assert_eq!(keys.iter().filter(|k| **k == second_key).count(), 1, "paged once: {keys:?}");
    active.stop().unwrap();
}

/// Retries a second apart at most, so that a receiver that comes back is paged within a
/// second or two.
const QUICK_RETRIES: &str = r#"
[notify.delivery]
min_backoff = "200ms"
max_backoff = "1s""#;

/// Waits until a gateway queues for the store's writer lock (a standby starting).
async fn until_queued(server: &firegrid_tests::Postgres, what: &str) {
    let queued = Instant::now();
    while count_where(server, "pg_stat_activity", "wait_event = 'advisory'") == 0 {
        assert!(queued.elapsed() < Duration::from_secs(20), "{what} never queued for the store");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The outbox follows the store. The receiver is down when the fire is paged, so the active
/// gateway's deliveries are pending, retried, when it is killed. The standby carries them on
/// from the shared outbox and delivers them once the receiver is back. Then the first gateway
/// returns (same data directory) as the standby, the second is killed, and the first takes
/// over again: it sends none of those pages again (with an outbox of its own on its disk, its
/// stale pending rows went out a second time), and a new fire is paged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_pending_at_a_takeover_are_delivered_once_though_the_old_active_returns() {
    let village = Village::start().await;
    let (hook, server) = (&village.hook, &village.server);
    // No escalation by time during the test (only by failed deliveries), so that every page
    // is settled before the second gateway goes: one in flight at a kill may go twice, by
    // design (ARCHITECTURE.md), and is not what this test is about.
    let engine = ENGINE.replace(r#"after = "10s""#, r#"after = "10m""#);
    let rest = format!("{engine}\n{QUICK_RETRIES}");
    let config = || village.config("gw-fuhai-1", "standby = true", &rest);
    hook.refuse(true);
    let mut first = Firegrid::start(config()).unwrap();
    let (client, mut eventloop) =
        AsyncClient::new(MqttOptions::new("detectors", "127.0.0.1", village.broker.port()), 10);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let (topic, payload) = alarm("x-1");
    client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    let tried = Instant::now();
    while hook.refused() < 2 {
        assert!(tried.elapsed() < Duration::from_secs(30), "the first page was never tried twice");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let second_config = config();
    let second = std::thread::spawn(move || Firegrid::start(second_config).unwrap());
    until_queued(server, "the second gateway").await;
    first.kill().unwrap();
    let mut second = tokio::task::spawn_blocking(move || second.join().unwrap()).await.unwrap();
    // The second one holds the store and retries the pending page against the refusing
    // receiver; then the receiver is back.
    let refused = hook.refused();
    let retried = Instant::now();
    while hook.refused() == refused {
        assert!(retried.elapsed() < Duration::from_secs(30), "the standby never retried the page");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hook.refuse(false);
    let page = hook
        .wait("the page, by the standby", Duration::from_secs(30), |v| v["desk"] == "street:fuhai-1")
        .await;
    // Every page is delivered and its delivery logged before the first gateway comes back.
    let settled = Instant::now();
    loop {
        let received = hook.idempotency_keys().into_iter().collect::<std::collections::BTreeSet<_>>().len();
        let logged = count_where(server, "inputs", r#"kind = 'delivery' AND json LIKE '%"delivered":true%'"#);
        let pending = count_where(server, "notify_outbox", "status = 'pending'");
        if logged as usize == received && pending == 0 {
            break;
        }
        assert!(
            settled.elapsed() < Duration::from_secs(30),
            "never settled: {received} received, {logged} logged, {pending} pending"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let returned = std::thread::spawn(move || {
        first.restart().unwrap();
        first
    });
    until_queued(server, "the returning gateway").await;
    second.kill().unwrap();
    let mut first = tokio::task::spawn_blocking(move || returned.join().unwrap()).await.unwrap();
    let (topic, payload) = alarm("x-2");
    client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    // The outbox sends the oldest of equal severity first: a stale copy of the first page
    // would have come before this one.
    let next = hook
        .wait("a new fire's page after the second takeover", Duration::from_secs(40), |v| {
            v["desk"] == "street:fuhai-1" && v["case_id"] != page["case_id"]
        })
        .await;
    let keys = hook.idempotency_keys();
    let mut per_key = std::collections::BTreeMap::<&str, usize>::new();
    for key in &keys {
        *per_key.entry(key).or_default() += 1;
    }
    assert!(per_key.values().all(|&n| n == 1), "a page went twice: {per_key:?} ({:?})", hook.desks());
    let first_key = format!("{}-{}", page["case_id"], page["notification_id"]);
    let next_key = format!("{}-{}", next["case_id"], next["notification_id"]);
    assert_eq!(per_key.get(first_key.as_str()), Some(&1), "{per_key:?}");
    assert_eq!(per_key.get(next_key.as_str()), Some(&1), "{per_key:?}");
    assert!(
        lines_with(first.log_path(), "The local notification outbox file is not used") <= 1,
        "{}",
        first.log_tail(40)
    );
    assert_eq!(count(server, "cases"), 2, "no case lost or doubled");
    let epoch: i64 = tokio::task::block_in_place(|| {
        server
            .connect("firegrid")
            .unwrap()
            .query_one("SELECT epoch FROM case_store_lease", &[])
            .unwrap()
            .get(0)
    });
    assert_eq!(epoch, 3, "two takeovers");
    first.stop().unwrap();
}
