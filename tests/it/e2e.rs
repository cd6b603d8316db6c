//! The whole chain at once, every part real: a simulated village of 1,000 detectors (the
//! firmware core in `firegrid-sim`, over a carrier platform's MQTT connections) → Mosquitto →
//! the `firegrid` binary → InfluxDB 1.x, the alarm loop and a webhook receiver. One building
//! burns; everywhere else detectors only send heartbeats.
//!
//! The burning building becomes exactly one confirmed-fire case. Nobody answers, so it climbs
//! grid → community → street → district, one level per acknowledgement deadline; then the
//! street desk acknowledges, disposes and closes it through the officer API. Finally the
//! database is held to exact counts: one readings point per distinct message on the wire
//! (counted by a witness subscriber of its own, not by the gateway), and one
//! `case_transition` point per timeline entry.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firegrid_protocol::Encoding;
use firegrid_sim::{Fleet, Mode, RunConfig, Scenario, Village, VillageParams};
use firegrid_tests::officers::{OfficerApi, write_street_desk};
use firegrid_tests::{Firegrid, InfluxDb1, Mosquitto, WebhookReceiver, watch_uplinks};
use reqwest::Method;
use serde_json::{Value, json};

const DB: &str = "firegrid";
const DISTRICT: &str = "Xishan";
const SEED: u64 = 2024;
/// The acknowledgement deadline at every level for a confirmed fire: short, so the case
/// reaches the district within seconds, and long enough that a few hundred milliseconds of
/// scheduling noise on a loaded 2-core machine cannot blur one level into the next.
const ACK_DEADLINE: Duration = Duration::from_secs(4);
/// How late the engine may decide an escalation on top of its deadline. It wakes on the
/// deadline itself, so on an idle machine it is a few milliseconds late; the bound only has to
/// tell "at its deadline" from "at the next reminder" (a minute) and must hold while the rest
/// of the suite loads both cores, so it is generous. Never early is the strict half.
const LATE: Duration = Duration::from_secs(20);
/// Simulated seconds per real second: four simulated minutes (heartbeats every simulated
/// minute, the fire's growth from first smoke to the third room's alarm) in 8 s.
const SPEED: f64 = 30.0;
const SIMULATED: Duration = Duration::from_secs(4 * 60);

/// The officer API's answer to `GET path`, which must be 200.
async fn get(api: &OfficerApi, token: &str, path: &str) -> Value {
    let (status, body) = api.call(Method::GET, path, Some(token), None).await;
    assert_eq!(status, 200, "GET {path} → {body}");
    body
}

/// The sum of every sample of `family` in a Prometheus text exposition.
fn metric_sum(metrics: &str, family: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.strip_prefix(family).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The gateway's configuration. Deadlines: a single detector's pre-alarm would wait ten
/// minutes, so the confirmed fire's 4 s deadline is the one that runs. A fire case enters at
/// the grid only (by default it enters at grid, community and street at once), so it has
/// three levels to climb. Reminders every minute stay out of the way. Alarms do not latch:
/// the simulated fire never goes out, so a latched alarm could not be reset and the case
/// could not close (resetting latches is covered by `alarm_loop`).
fn config(
    broker: u16,
    db: u16,
    hook: String,
    registry: PathBuf,
    officers: PathBuf,
) -> impl Fn(&Path, u16) -> String + Send + Sync + 'static {
    move |dir: &Path, http_port: u16| {
        let fire_deadline = format!("{{ after = \"{}s\" }}", ACK_DEADLINE.as_secs());
        format!(
            r#"
data_dir = "{data}"
http_listen = "127.0.0.1:{http_port}"
[mqtt]
host = "127.0.0.1"
port = {broker}
client_id = "gw-e2e"
max_backoff = "500ms"
[registry]
csv = "{registry}"
[[influx]]
name = "street"
url = "http://127.0.0.1:{db}"
api = "v1"
database = "{DB}"
flush_interval = "100ms"
max_backoff = "1s"
[alerting]
district = "{DISTRICT}"
officers = "{officers}"
routes = {{ "*" = ["hook"] }}
[alerting.engine.pre_alarm]
entry = ["grid"]
ack = [{{ after = "10m" }}, {{ after = "10m" }}, {{ after = "10m" }}, {{ after = "10m" }}]
renotify = "10m"
handle = {{ after = "30m" }}
latched = false
[alerting.engine.fire]
entry = ["grid"]
ack = [{fire_deadline}, {fire_deadline}, {fire_deadline}, {fire_deadline}]
renotify = "1m"
handle = {{ after = "10m" }}
latched = false
[notify.channels.hook]
kind = "webhook"
url = "{hook}"
secret = "test-secret"
"#,
            data = dir.join("data").display(),
            registry = registry.display(),
            officers = officers.display(),
        )
    }
}

/// What a witness subscriber saw on the uplink topics: every distinct (device, boot, seq),
/// and how many deliveries carried them (retransmissions and QoS 1 redeliveries included).
#[derive(Default)]
struct Wire {
    distinct: HashSet<(String, u16, u32)>,
    deliveries: u64,
}

impl Wire {
    async fn watch(port: u16) -> Arc<Mutex<Wire>> {
        let wire = Arc::new(Mutex::new(Wire::default()));
        let record = wire.clone();
        watch_uplinks(port, "e2e-witness", move |topic, msg, _| {
            let mut wire = record.lock().unwrap();
            wire.deliveries += 1;
            wire.distinct.insert((topic.device.to_string(), msg.boot, msg.seq));
        })
        .await
        .unwrap();
        wire
    }
}

/// The figures the final check compares, read at one moment.
#[derive(Debug, Clone, PartialEq)]
struct Counts {
    /// Distinct messages the witness saw.
    on_the_wire: usize,
    /// The gateway's `firegrid_messages_accepted_total`, all kinds.
    accepted: f64,
    /// Readings points in InfluxDB (every device measurement carries `seq`), by measurement.
    readings: BTreeMap<String, u64>,
    /// `case_transition` points in InfluxDB.
    transitions: u64,
    /// Timeline entries the API returns, over every case.
    timeline: usize,
}

impl Counts {
    fn readings_total(&self) -> u64 {
        self.readings.values().sum()
    }
}

/// Reads every figure of [`Counts`] now.
async fn counts(
    wire: &Mutex<Wire>,
    gateway: &Firegrid,
    db: &InfluxDb1,
    api: &OfficerApi,
    token: &str,
) -> Counts {
    let on_the_wire = wire.lock().unwrap().distinct.len();
    let metrics = gateway.metrics().unwrap();
    let readings = db
        .query_series(DB, "SELECT count(seq) FROM /.*/")
        .unwrap()
        .into_iter()
        .map(|s| (s.name.clone(), s.values.first().and_then(|row| row.get(1)?.as_u64()).unwrap_or(0)))
        .collect();
    let transitions = db
        .query_series(DB, "SELECT count(case_id) FROM case_transition")
        .unwrap()
        .first()
        .and_then(|s| s.values.first()?.get(1)?.as_u64())
        .unwrap_or(0);
    let mut timeline = 0;
    for case in get(api, token, "/api/v1/cases?state=any").await["cases"].as_array().unwrap() {
        let id = case["id"].as_u64().unwrap();
        timeline +=
            get(api, token, &format!("/api/v1/cases/{id}")).await["timeline"].as_array().unwrap().len();
    }
    Counts {
        on_the_wire,
        accepted: metric_sum(&metrics, "firegrid_messages_accepted_total"),
        readings,
        transitions,
        timeline,
    }
}

/// The first page a desk got about the case.
struct FirstPage {
    desk: String,
    /// When the engine decided to page, Unix ms.
    at_ms: u64,
    title: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_village_burns_one_case_climbs_to_the_district_on_schedule_closes_and_every_message_is_counted() {
    let started = Instant::now();
    let broker = Mosquitto::start().unwrap();
    let db = InfluxDb1::start().unwrap();
    db.create_database(DB).unwrap();
    let hook = WebhookReceiver::start().await;
    let wire = Wire::watch(broker.port()).await;

    // The village: 1,000 detectors in 200 buildings, 40 grids; no cameras or water sensors.
    let params = VillageParams {
        buildings: 200,
        detectors: 1_000,
        camera_channels: 0,
        water_sensors: 0,
        heartbeat: Duration::from_secs(60),
        ..VillageParams::default()
    };
    let village = Village::generate(&params, SEED).unwrap();
    // The fire burns in a building with at least three detectors: the first two confirm it.
    let seat = (0..village.buildings.len()).find(|b| village.detectors_in(*b).count() >= 3).unwrap();
    let building = village.buildings[seat].clone();
    let seat_detectors: BTreeSet<String> =
        village.detectors_in(seat).map(|d| village.devices[d].id.clone()).collect();
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry.csv");
    std::fs::write(&registry, village.registry_csv()).unwrap();
    let officers = dir.path().join("officers.toml");
    let token = write_street_desk(&officers, &village.street);
    let street_desk = format!("street:{}", village.street);

    let gateway = Firegrid::start(config(broker.port(), db.port(), hook.url(), registry, officers)).unwrap();
    let api = OfficerApi::new(gateway.http_port());

    let scenario = Scenario::from_toml(&format!(
        "[[fire]]\nbuilding = \"{}\"\nat = \"30s\"\ngrowth = \"flaming\"\n",
        building.id
    ))
    .unwrap();
    let mut fleet = Fleet::new(village, &scenario, SIMULATED, SEED, Encoding::Compact).unwrap();
    let cfg = RunConfig {
        host: "127.0.0.1".into(),
        port: broker.port(),
        mode: Mode::Platform { connections: 4 },
        speed: SPEED,
        duration: SIMULATED,
        report_every: None,
        camera_state: None,
        credentials: None,
    };
    let report = firegrid_sim::run(&mut fleet, &cfg, None, Duration::from_secs(15)).await;
    assert_eq!(
        report.outbox_total, 0,
        "every alarm and event the firmware sent was acknowledged by the gateway: {report:?}"
    );
    let simulated_at = started.elapsed();

    // Nobody answers: the district desk is paged about three deadlines after confirmation.
    let grid_desk = format!("grid:{}", building.grid);
    let community_desk = format!("community:{}", building.community);
    let district_desk = format!("district:{DISTRICT}");
    let district =
        hook.wait("to the district", Duration::from_secs(60), |v| v["desk"] == district_desk.as_str()).await;
    let case = district["case_id"].as_u64().unwrap();

    // Exactly one case in the whole village, the confirmed fire in the burning building.
    let listed = get(&api, &token, "/api/v1/cases?state=any").await;
    let cases = listed["cases"].as_array().unwrap();
    let here: Vec<&Value> =
        cases.iter().filter(|c| c["kind"] == "fire" && c["location"]["building"] == building.id).collect();
    assert_eq!(here.len(), 1, "one fire case for building {}: {listed}", building.id);
    let summary: Vec<String> =
        cases.iter().map(|c| format!("{} {} {}", c["id"], c["kind"], c["location"]["building"])).collect();
    assert_eq!(cases.len(), 1, "nothing else in the village opened a case: {summary:?}");
    assert_eq!(here[0]["id"].as_u64(), Some(case), "the district was paged about this case");
    assert_eq!(here[0]["confirmed"], true, "{}", here[0]);
    assert_eq!(here[0]["severity"], "fire", "{}", here[0]);
    let alarmed: BTreeSet<String> = here[0]["alarms"].as_object().unwrap().keys().cloned().collect();
    assert!(
        alarmed.len() >= 2 && alarmed.is_subset(&seat_detectors),
        "the case holds at least two of the building's detectors {seat_detectors:?}, holds {alarmed:?}"
    );

    // Escalation on schedule: the first page each desk got is the escalation to it (only the
    // grid is told when the case opens), in order up the hierarchy, one deadline apart.
    let detail = get(&api, &token, &format!("/api/v1/cases/{case}")).await;
    let timeline = detail["timeline"].as_array().unwrap();
    let confirmed_at = timeline
        .iter()
        .find(|t| t["kind"]["transition"] == "confirmed")
        .and_then(|t| t["at"].as_u64())
        .unwrap_or_else(|| panic!("no confirmed transition in the timeline: {detail}"));
    let escalations: Vec<&str> = timeline
        .iter()
        .filter(|t| t["kind"]["transition"] == "escalated")
        .map(|t| t["kind"]["from"].as_str().unwrap())
        .collect();
    assert_eq!(escalations, ["grid", "community", "street"], "escalated from, in order");
    let mut first: Vec<FirstPage> = Vec::new();
    for (_, page) in hook.received() {
        let desk = page["desk"].as_str().unwrap_or_default();
        if page["case_id"].as_u64() == Some(case) && !first.iter().any(|p| p.desk == desk) {
            first.push(FirstPage {
                desk: desk.to_owned(),
                at_ms: page["at_ms"].as_u64().unwrap(),
                title: page["title"].as_str().unwrap_or_default().to_owned(),
            });
        }
    }
    let order: Vec<&str> = first.iter().map(|p| p.desk.as_str()).collect();
    assert_eq!(
        order,
        [grid_desk.as_str(), &community_desk, &street_desk, &district_desk],
        "desks first paged"
    );
    let escalation_pages = &first[1..];
    for page in escalation_pages {
        assert!(
            page.title.contains("escalated"),
            "the first page to {} is an escalation: {}",
            page.desk,
            page.title
        );
    }
    // The engine's decisions: each level one full deadline after the previous one (the first
    // after confirmation) and never early.
    let mut decided = vec![confirmed_at];
    decided.extend(escalation_pages.iter().map(|p| p.at_ms));
    let (deadline_ms, late_ms) = (ACK_DEADLINE.as_millis() as u64, LATE.as_millis() as u64);
    for (pair, page) in decided.windows(2).zip(escalation_pages) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= deadline_ms && gap < deadline_ms + late_ms,
            "{} paged {gap} ms after the level below, expected {deadline_ms} ms to {} ms",
            page.desk,
            deadline_ms + late_ms
        );
    }
    // Gaps between the receiver's arrivals are not asserted: they are the wall clock of a
    // loaded machine (one such assertion made this test fail once in a full-suite run). The
    // arrival order is asserted above, and the engine's own decided times are the logical
    // deadlines this test is about.

    // The street desk takes it: acknowledged, disposed as a real fire, closed with a report.
    let steps = [
        json!({"command": "acknowledge"}),
        json!({"command": "dispose", "disposition": {"outcome": "real_fire"}}),
        json!({"command": "close", "feedback": {"report": "kitchen fire put out by the brigade", "resident_informed": true}}),
    ];
    for step in steps {
        let (status, body) = api.act(&token, case, step.clone()).await;
        assert_eq!(status, 200, "{step} → {body}");
    }
    let closed = get(&api, &token, &format!("/api/v1/cases/{case}")).await;
    assert!(closed["case"]["closed"].is_array(), "case {case} closed: {}", closed["case"]);
    assert_eq!(closed["case"]["stage"], "feedback", "{}", closed["case"]);
    let open = get(&api, &token, "/api/v1/cases").await;
    assert_eq!(open["cases"].as_array().unwrap().len(), 0, "no case open any more: {open}");

    // Exact counts, once the gateway's spool has drained into InfluxDB and nothing changes
    // any more: the figures must hold still for 2 s with nothing waiting for the database.
    let settle = Instant::now();
    let mut last: Option<Counts> = None;
    let mut steady_since = Instant::now();
    let counts = loop {
        let now = counts(&wire, &gateway, &db, &api, &token).await;
        let depth = gateway.metric("firegrid_spool_depth_records{destination=\"street\"}").unwrap();
        if last.as_ref() != Some(&now) {
            steady_since = Instant::now();
        } else if depth == Some(0.0) && steady_since.elapsed() >= Duration::from_secs(2) {
            break now;
        }
        assert!(
            settle.elapsed() < Duration::from_secs(30),
            "the counts did not settle within 30 s (spool depth {depth:?}): before {last:?}, now {now:?}"
        );
        last = Some(now);
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let metrics = gateway.metrics().unwrap();
    let rejected = metric_sum(&metrics, "firegrid_messages_rejected_total");
    assert_eq!(rejected, 0.0, "the gateway rejected messages of a healthy fleet: {metrics}");
    let wire = wire.lock().unwrap();
    let mut per_device: BTreeMap<&str, usize> = BTreeMap::new();
    for (device, _, _) in &wire.distinct {
        *per_device.entry(device.as_str()).or_default() += 1;
    }
    let quietest = per_device.iter().min_by_key(|(_, n)| **n).map(|(d, n)| (*d, *n));
    assert_eq!(per_device.len(), params.detectors, "detectors heard on the wire");
    // A heartbeat at boot and every simulated minute after it: at least three in four minutes.
    assert!(
        quietest.is_some_and(|(_, n)| n >= 3),
        "every detector sent at least 3 messages; the quietest on the wire: {quietest:?}"
    );
    assert_eq!(
        counts.accepted, counts.on_the_wire as f64,
        "the gateway accepted every distinct message on the wire, once: {counts:?}"
    );
    assert_eq!(
        counts.readings_total(),
        counts.on_the_wire as u64,
        "one readings point per distinct message on the wire: {counts:?}"
    );
    assert_eq!(
        counts.transitions, counts.timeline as u64,
        "one case_transition point per timeline entry: {counts:?}"
    );
    eprintln!(
        "{counts:?}; {} deliveries on the wire; escalations decided at {:?} ms after confirmation; \
         simulator {report:?} done at {simulated_at:?}; total {:?}",
        wire.deliveries,
        decided[1..].iter().map(|at| at - confirmed_at).collect::<Vec<_>>(),
        started.elapsed()
    );
}
