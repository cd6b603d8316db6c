//! The case store in PostgreSQL: the `firegrid` binary with `[alerting.store] postgres` between
//! a real Mosquitto and a webhook receiver, its cases in a real PostgreSQL across a `kill -9`;
//! and the store through a PostgreSQL failover: a primary with a synchronous streaming standby
//! (`pg_basebackup -R`, `synchronous_standby_names = '*'`), cases committed on the primary,
//! the primary killed with SIGKILL, the standby promoted (`pg_ctl promote`), and the store
//! reopened on it: every commit that returned is there, and new commits go on from the last
//! seq.
//!
//! Synchronous replication is what makes "every commit that returned" hold: a commit returns
//! only once the standby has flushed its WAL (PostgreSQL manual, "Synchronous Replication"),
//! and promotion replays all of it. With asynchronous replication the last commits before a
//! crash may be missing on the standby.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use firegrid_cases::store::{CaseFilter, CaseRow, CaseStore, Step, TransitionRow};
use firegrid_protocol::{
    DetectorState, DeviceId, Encoding, StateChange, Topic, Uplink, UplinkBody, UplinkKind, VillageId,
};
use firegrid_tests::{Firegrid, Mosquitto, Postgres, PostgresTls, WebhookReceiver};
use rumqttc::{AsyncClient, MqttOptions, QoS};

/// An unknown detector's alarm in village `fuhai-1`.
pub(crate) fn alarm(dev: &str) -> (String, Vec<u8>) {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let dev = DeviceId::new(dev).unwrap();
    let body = UplinkBody::State(StateChange { state: DetectorState::Alarm, obscuration_db_m: 0.4 });
    let msg = Uplink::new(dev.clone(), 1, 1, now_ms, body);
    let topic =
        Topic::uplink(VillageId::new("fuhai-1").unwrap(), dev, UplinkKind::State).to_buf().to_string();
    (topic, msg.encode(Encoding::Json, &mut [0u8; 512]).unwrap().to_vec())
}

/// Rows in `table`. The synchronous client must not run on the async test's worker thread.
pub(crate) fn count(server: &Postgres, table: &str) -> i64 {
    count_where(server, table, "true")
}

/// Rows in `table` that match `condition`.
pub(crate) fn count_where(server: &Postgres, table: &str, condition: &str) -> i64 {
    tokio::task::block_in_place(|| {
        let mut client = server.connect("firegrid").unwrap();
        client.query_one(&format!("SELECT count(*) FROM {table} WHERE {condition}"), &[]).unwrap().get(0)
    })
}

/// What a village's gateways run against: a broker, a webhook receiver and a PostgreSQL
/// server with the database `firegrid` for the case store (its password in a file), which
/// takes TCP connections only over TLS, checked against the village's CA
/// (`[alerting.store] tls`), as a store on another machine should be reached.
pub(crate) struct Village {
    pub(crate) broker: Mosquitto,
    pub(crate) hook: WebhookReceiver,
    pub(crate) server: Postgres,
    conninfo: String,
    password_file: std::path::PathBuf,
    /// The CA that signed the server's certificate.
    ca: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Village {
    pub(crate) async fn start() -> Village {
        let broker = Mosquitto::start().unwrap();
        let hook = WebhookReceiver::start().await;
        let dir = tempfile::tempdir().unwrap();
        let (server_files, ca) = PostgresTls::make(&dir.path().join("certs")).unwrap();
        let server = Postgres::start_tls(&server_files).unwrap();
        let conninfo = server.create_database("firegrid").unwrap();
        let password_file = dir.path().join("postgres-password");
        std::fs::write(&password_file, format!("{}\n", server.password())).unwrap();
        Village { broker, hook, server, conninfo, password_file, ca, _dir: dir }
    }

    /// A gateway's configuration with MQTT client id `client_id`; `store` goes into
    /// `[alerting.store]`, `rest` after it.
    pub(crate) fn config(
        &self,
        client_id: &str,
        store: &str,
        rest: &str,
    ) -> impl Fn(&Path, u16) -> String + Send + Sync + 'static + use<> {
        let store = format!("tls = {{ ca = \"{}\" }}\n{store}", self.ca.display());
        firegrid_tests::postgres::gateway_config(
            self.broker.port(),
            self.hook.port(),
            &self.conninfo,
            &self.password_file,
            client_id,
            &store,
            rest,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_keeps_its_cases_in_postgresql_across_a_kill_9() {
    let village = Village::start().await;
    let (hook, server) = (&village.hook, &village.server);
    let broker_port = village.broker.port();
    let config = village.config("gw-postgres", "", "");
    let mut gateway = Firegrid::start(config).unwrap();
    let (client, mut eventloop) =
        AsyncClient::new(MqttOptions::new("detectors", "127.0.0.1", broker_port), 10);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let (topic, payload) = alarm("x-1");
    client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    let page =
        hook.wait("the unplaced case", Duration::from_secs(20), |v| v["desk"] == "street:fuhai-1").await;
    let case = page["case_id"].as_i64().unwrap();

    let stage: String = tokio::task::block_in_place(|| {
        let mut client = server.connect("firegrid").unwrap();
        client.query_one("SELECT stage FROM cases WHERE case_id = $1", &[&case]).unwrap().get(0)
    });
    assert!(!stage.is_empty());
    assert!(count(server, "inputs") >= 1 && count(server, "transitions") >= 1);
    let data = gateway.dir().join("data");
    assert!(!data.join("cases.sqlite").exists(), "no SQLite case store beside PostgreSQL");
    assert!(!data.join("notify-outbox.sqlite").exists(), "no outbox file beside PostgreSQL");
    // The page's delivery is recorded in the shared outbox (right after the receiver answered).
    let recorded = Instant::now();
    while count_where(server, "notify_outbox", "status = 'delivered'") != 1 {
        assert!(recorded.elapsed() < Duration::from_secs(20), "the delivery is not in the shared outbox");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // After kill -9 the gateway replays from PostgreSQL: the case is there, not paged anew.
    let inputs = count(server, "inputs");
    gateway.kill().unwrap();
    gateway.restart().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(count(server, "inputs") >= inputs);
    assert_eq!(count(server, "cases"), 1);
    let log = std::fs::read_to_string(gateway.log_path()).unwrap();
    assert!(log.contains("The case store is in PostgreSQL."), "{log}");
    assert!(!log.contains(server.password()), "the password is never logged");
    assert!(!log.contains("not encrypted"), "{log}");
    // Every session the gateway holds came over TLS.
    let sessions = "pg_stat_ssl s JOIN pg_stat_activity a USING (pid)";
    assert!(
        count_where(server, sessions, "a.datname = 'firegrid' AND a.client_addr IS NOT NULL AND s.ssl") >= 1
    );
    assert_eq!(count_where(server, sessions, "a.client_addr IS NOT NULL AND NOT s.ssl"), 0);
}

/// Two gateways for one village on one PostgreSQL store and one broker, with the same MQTT
/// client ids: the second stands by (`[alerting.store] standby`) without touching the broker,
/// and when the first is killed with SIGKILL mid-escalation it takes the store and the MQTT
/// sessions and pages the fire's next level on its deadline; nothing is paged twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_gateway_takes_over_a_fire_escalating_when_the_active_one_is_killed() {
    let village = Village::start().await;
    let (hook, server) = (&village.hook, &village.server);
    let broker_port = village.broker.port();
    // An unregistered detector's alarm is a pre-alarm ("unverified"), paged at the street desk.
    let engine = r#"[alerting.engine.pre_alarm]
entry = ["street"]
ack = [{ after = "10s" }, { after = "10s" }, { after = "10s" }, { after = "10s" }]
renotify = "10m"
handle = { after = "10m" }
latched = false"#;
    let config = |standby: bool| village.config("gw-fuhai-1", &format!("standby = {standby}"), engine);
    let mut active = Firegrid::start(config(false)).unwrap();

    let (client, mut eventloop) =
        AsyncClient::new(MqttOptions::new("detectors", "127.0.0.1", broker_port), 10);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let (topic, payload) = alarm("x-1");
    client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    let first = hook.wait("the first page", Duration::from_secs(20), |v| v["desk"] == "street:fuhai-1").await;
    // The standby's start returns once it is ready, that is, once it has taken over; until
    // then its session waits in PostgreSQL for the store's writer lock.
    let standby_config = config(true);
    let standby = std::thread::spawn(move || (Firegrid::start(standby_config).unwrap(), Instant::now()));
    let queued = Instant::now();
    while count_where(server, "pg_stat_activity", "wait_event = 'advisory'") == 0 {
        assert!(queued.elapsed() < Duration::from_secs(15), "the standby never queued for the store");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Standing by, the second gateway has not taken the active one's MQTT sessions.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(active.metric("firegrid_mqtt_connected{session=\"alarm\"}").unwrap(), Some(1.0));
    assert_eq!(active.metric("firegrid_mqtt_connect_failures_total{session=\"alarm\"}").unwrap(), None);
    assert!(!standby.is_finished(), "the standby waits while the active one holds the store");

    // Once the first page's delivery is in the store, the active one dies before the case's
    // next deadline (10 s after the page).
    let logged = Instant::now();
    while count_where(server, "inputs", "kind = 'delivery'") == 0 {
        assert!(logged.elapsed() < Duration::from_secs(20), "the delivery was never logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let killed = Instant::now();
    active.kill().unwrap();
    let next = hook
        .wait("the escalation after the takeover", Duration::from_secs(30), |v| {
            v["desk"] == "district:Xishan"
        })
        .await;
    let (taken_over, ready) = tokio::task::spawn_blocking(move || standby.join().unwrap()).await.unwrap();
    assert_eq!(next["case_id"], first["case_id"], "the same case goes on escalating");
    let received = hook.received();
    let arrived = received.iter().find(|(_, v)| v["desk"] == "district:Xishan").map(|(at, _)| *at);
    assert!(arrived.unwrap() > killed, "the escalation is the standby's, sent after the kill");
    // What the takeover cost, shown with `--nocapture`: the standby ready (subscribed) after
    // the kill, and the escalation's lateness against its deadline (10 s after the first page).
    let first_at = received.iter().find(|(_, v)| v["desk"] == "street:fuhai-1").map(|(at, _)| *at).unwrap();
    let late = arrived.unwrap().saturating_duration_since(first_at + Duration::from_secs(10));
    eprintln!(
        "takeover: standby ready {:?} after the kill; escalation {late:?} past its deadline",
        ready.duration_since(killed)
    );
    let log = std::fs::read_to_string(taken_over.log_path()).unwrap();
    assert!(log.contains("Standing by until this gateway holds the case store"), "{log}");
    assert!(!log.contains(server.password()), "the password is never logged");
    // Nothing paged twice: every notification arrived once, the first page (delivered and
    // logged before the kill) included, though the standby replayed it with an outbox of its
    // own.
    let ids: Vec<u64> = hook.received().iter().map(|(_, v)| v["notification_id"].as_u64().unwrap()).collect();
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a notification paged twice: {ids:?} ({:?})", hook.desks());
    assert_eq!(count(server, "cases"), 1);
}

/// One batch of steps: each opens or updates a case, with one transition.
pub(crate) fn commit_batch(store: &mut CaseStore, batch: u64) -> u64 {
    try_commit_batch(store, batch).unwrap()
}

/// As [`commit_batch`], returning the store's refusal.
pub(crate) fn try_commit_batch(
    store: &mut CaseStore,
    batch: u64,
) -> Result<u64, firegrid_cases::store::StoreError> {
    let jsons: Vec<(String, String)> = (0..5)
        .map(|i| (format!(r#"{{"batch":{batch},"step":{i}}}"#), format!(r#"{{"case":{}}}"#, batch * 5 + i)))
        .collect();
    let rows: Vec<([TransitionRow<'_>; 1], [CaseRow<'_>; 1])> = jsons
        .iter()
        .enumerate()
        .map(|(i, (_, case_json))| {
            let case_id = 1 + (batch * 5 + i as u64) % 40;
            let at_ms = 1_000 * batch + i as u64;
            let closed_ms = batch.is_multiple_of(3).then_some(at_ms);
            (
                [TransitionRow { case_id, at_ms, kind: "escalated", json: case_json }],
                [CaseRow {
                    case_id,
                    opened_ms: case_id * 10,
                    closed_ms,
                    stage: if closed_ms.is_some() { "closed" } else { "warning" },
                    severity: "fire",
                    street: "fuhai",
                    community: "c1",
                    grid: "g1",
                    building: "b1",
                    json: case_json,
                }],
            )
        })
        .collect();
    let steps: Vec<Step<'_>> = jsons
        .iter()
        .zip(&rows)
        .map(|((input, _), (transitions, cases))| Step {
            at_ms: 1_000 * batch,
            kind: "alarm",
            audit: None,
            input_json: input,
            transitions,
            cases,
        })
        .collect();
    store.commit(&steps)
}

/// Makes every standby of `primary` synchronous (`synchronous_standby_names = '*'`), so that
/// a commit returns only once a standby has it, and waits until one is.
pub(crate) fn make_synchronous(primary: &Postgres) {
    let mut admin = primary.connect("postgres").unwrap();
    admin.batch_execute("ALTER SYSTEM SET synchronous_standby_names = '*'").unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    drop(admin);
    wait_for_sync_standby(primary);
}

/// Waits until the primary reports `standby` as its synchronous standby.
fn wait_for_sync_standby(primary: &Postgres) {
    let mut client = primary.connect("postgres").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = client.query("SELECT 1 FROM pg_stat_replication WHERE sync_state = 'sync'", &[]).unwrap();
        if !rows.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "the standby never became synchronous");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_committed_case_survives_a_failover_to_the_promoted_standby() {
    let mut primary = Postgres::start().unwrap();
    let conninfo = primary.create_database("firegrid").unwrap();
    let password = primary.password().to_owned();
    let mut store = CaseStore::open_postgres(&conninfo, Some(&password)).unwrap();
    // Some history before the base backup, the rest streamed to the standby.
    for batch in 0..10 {
        commit_batch(&mut store, batch);
    }
    let standby = Postgres::standby_of(&primary).unwrap();
    make_synchronous(&primary);
    let mut last = 0;
    for batch in 10..60 {
        last = commit_batch(&mut store, batch);
        if batch == 30 {
            store.save_snapshot(last, 1_000 * batch, r#"{"engine":"at batch 30"}"#).unwrap();
        }
    }
    assert_eq!(last, 300);
    let everything = CaseFilter { limit: Some(1000), ..CaseFilter::default() };
    let loaded = store.load().unwrap();
    let cases = store.list(&everything).unwrap();
    let timelines: Vec<_> = (1..=40).map(|id| store.timeline(id).unwrap()).collect();
    let stats = store.stats().unwrap();
    assert_eq!((cases.len(), loaded.inputs.len()), (40, 145), "the snapshot at 155 covers the rest");

    // The primary crashes; the standby takes over.
    primary.kill().unwrap();
    drop(store);
    let in_recovery =
        standby.connect("firegrid").unwrap().query_one("SELECT pg_is_in_recovery()", &[]).unwrap();
    assert!(in_recovery.get::<_, bool>(0), "a standby until promoted");
    standby.promote().unwrap();

    let conninfo = standby.conninfo("firegrid");
    let mut store = CaseStore::open_postgres(&conninfo, Some(&password)).unwrap();
    assert_eq!(store.load().unwrap(), loaded, "snapshot and inputs after it");
    assert_eq!(store.list(&everything).unwrap(), cases);
    let promoted: Vec<_> = (1..=40).map(|id| store.timeline(id).unwrap()).collect();
    assert_eq!(promoted, timelines);
    let after = store.stats().unwrap();
    assert_eq!(after, firegrid_cases::store::StoreStats { file_bytes: after.file_bytes, ..stats });

    // The promoted server takes new commits, numbered on from the primary's last.
    assert_eq!(commit_batch(&mut store, 60), 305);
    assert_eq!(store.timeline(21).unwrap().len(), timelines[20].len() + 1, "batch 60 touches cases 21-25");
    assert_eq!(store.load().unwrap().inputs.len(), 150);
}
