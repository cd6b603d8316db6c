//! The alarm loop end to end: the `firegrid` binary between a real Mosquitto, a real
//! InfluxDB 1.x and a webhook receiver on loopback. A fire in one building becomes one
//! confirmed-fire case; nobody answers, so it escalates to the district on schedule; the
//! gateway is killed with SIGKILL and the case and its deadlines survive; an officer carries
//! it to closure through the HTTP API; officers of another grid are refused; the timeline and
//! the database hold every step.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use firegrid_protocol::{
    DetectorState, DeviceId, Encoding, StateChange, Topic, Uplink, UplinkBody, UplinkKind, VillageId,
};
use firegrid_tests::officers::{Officer, OfficerApi, write_directory};
use firegrid_tests::{Firegrid, InfluxDb1, Mosquitto, WebhookReceiver};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::json;

const VILLAGE: &str = "fuhai-1";
const DB: &str = "firegrid";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn registry(dir: &Path) -> std::path::PathBuf {
    let mut csv = String::from(
        "device_id,kind,model,building_id,building_address,lat,lon,grid,community,street,village\n",
    );
    for (dev, building, grid) in
        [("sd-a1", "A1", "G1"), ("sd-a2", "A1", "G1"), ("sd-a3", "A1", "G1"), ("sd-b1", "B1", "G2")]
    {
        csv.push_str(&format!(
            "{dev},smoke_detector,JTY-GD,{building},No. 1 Lane,25.03,102.66,{grid},C1,Fuhai,{VILLAGE}\n"
        ));
    }
    let path = dir.join("registry.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

/// Officers: the grid G1 leader, the grid G2 leader, the street desk, a viewer.
fn officers(dir: &Path) -> (std::path::PathBuf, [String; 4]) {
    let path = dir.join("officers.toml");
    let officer = |id, name, role, scope, on_duty| Officer { id, name, role, scope, on_duty };
    let tokens = write_directory(
        &path,
        &[
            officer("g1-leader", "G1 leader", "grid_leader", "grid:G1", true),
            officer("g2-leader", "G2 leader", "grid_leader", "grid:G2", true),
            officer("street-desk", "Fuhai street desk", "duty_officer", "street:Fuhai", true),
            officer("watcher", "wall screen", "viewer", "street:Fuhai", false),
        ],
    );
    (path, tokens.try_into().unwrap())
}

fn config(
    broker: u16,
    db: u16,
    hook: u16,
    registry: std::path::PathBuf,
    officers: std::path::PathBuf,
) -> impl Fn(&Path, u16) -> String + Send + Sync + 'static {
    move |dir: &Path, http_port: u16| {
        format!(
            r#"
data_dir = "{data}"
http_listen = "127.0.0.1:{http_port}"
[mqtt]
host = "127.0.0.1"
port = {broker}
client_id = "gw-alarm"
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
district = "Xishan"
officers = "{officers}"
routes = {{ "*" = ["hook"] }}
# Closed cases leave the engine's memory after 2 s; the store keeps them.
[alerting.engine]
keep_closed = "2s"
# Short deadlines so the test sees every level: 4 s per level for a fire.
[alerting.engine.fire]
entry = ["grid", "community", "street"]
ack = [{{ after = "4s" }}, {{ after = "4s" }}, {{ after = "4s" }}, {{ after = "4s" }}]
renotify = "2s"
handle = {{ after = "10m" }}
latched = true
[notify.channels.hook]
kind = "webhook"
url = "http://127.0.0.1:{hook}/hook"
secret = "test-secret"
"#,
            data = dir.join("data").display(),
            registry = registry.display(),
            officers = officers.display(),
        )
    }
}

fn state(dev: &str, seq: u32, state: DetectorState) -> (String, Vec<u8>) {
    let dev = DeviceId::new(dev).unwrap();
    let body = UplinkBody::State(StateChange { state, obscuration_db_m: 0.4 });
    let msg = Uplink::new(dev.clone(), 1, seq, now_ms(), body);
    let topic = Topic::uplink(VillageId::new(VILLAGE).unwrap(), dev, UplinkKind::State).to_buf().to_string();
    (topic, msg.encode(Encoding::Json, &mut [0u8; 512]).unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_is_confirmed_escalates_unanswered_survives_kill_9_and_is_carried_to_closure() {
    let broker = Mosquitto::start().unwrap();
    let db = InfluxDb1::start().unwrap();
    db.create_database(DB).unwrap();
    let hook = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (officers_path, [g1, g2, street, viewer]) = officers(dir.path());
    let mut gateway =
        Firegrid::start(config(broker.port(), db.port(), hook.port(), registry(dir.path()), officers_path))
            .unwrap();
    let api = OfficerApi::new(gateway.http_port());

    let mut opts = MqttOptions::new("detectors", "127.0.0.1", broker.port());
    opts.set_clean_session(false);
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let publish = |(topic, payload): (String, Vec<u8>)| {
        let client = client.clone();
        async move { client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap() }
    };

    // Two detectors in building A1: one confirmed fire, told to grid, community and street.
    publish(state("sd-a1", 1, DetectorState::Alarm)).await;
    hook.wait("opened at grid:G1", Duration::from_secs(20), |v| v["desk"] == "grid:G1").await;
    publish(state("sd-a2", 1, DetectorState::Alarm)).await;
    publish(state("sd-a3", 1, DetectorState::Alarm)).await;
    let confirmed = hook
        .wait("confirmed at street", Duration::from_secs(20), |v| {
            v["desk"] == "street:Fuhai" && v["severity"] == "fire"
        })
        .await;
    let case = confirmed["case_id"].as_u64().unwrap();
    for desk in ["grid:G1", "community:C1", "street:Fuhai"] {
        assert!(hook.desks().contains(&desk.to_owned()), "{desk} told: {:?}", hook.desks());
    }

    // Exactly one case for the building.
    let (status, listed) = api.call(reqwest::Method::GET, "/api/v1/cases", Some(&street), None).await;
    assert_eq!(status, 200, "{listed}");
    let cases = listed["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 1, "one case for three detectors: {listed}");
    assert_eq!(cases[0]["severity"], "fire");
    assert_eq!(cases[0]["confirmed"], true);

    assert_eq!(gateway.metric("firegrid_open_cases").unwrap(), Some(1.0));

    // Scope, authentication and validation.
    assert_eq!(
        api.call(reqwest::Method::GET, &format!("/api/v1/cases/{case}"), Some(&g2), None).await.0,
        403
    );
    let (_, g2_list) = api.call(reqwest::Method::GET, "/api/v1/cases", Some(&g2), None).await;
    assert_eq!(g2_list["cases"].as_array().unwrap().len(), 0, "grid G2 sees nothing of G1: {g2_list}");
    assert_eq!(api.act(&g2, case, json!({"command": "acknowledge"})).await.0, 403);
    assert_eq!(api.call(reqwest::Method::GET, "/api/v1/cases", Some("not-a-token"), None).await.0, 401);
    assert_eq!(api.call(reqwest::Method::GET, "/api/v1/cases", None, None).await.0, 401);
    assert_eq!(api.act(&viewer, case, json!({"command": "acknowledge"})).await.0, 403, "a viewer cannot act");
    let (status, body) = api.act(&street, case, json!({"command": "fly"})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        api.act(
            &street,
            case,
            json!({"command": "close", "feedback": {"report": "x", "resident_informed": true}})
        )
        .await
        .0,
        409
    );

    // SIGKILL while nobody has answered; the district escalation must still come, on time.
    gateway.kill().unwrap();
    let killed = Instant::now();
    gateway.restart().unwrap();
    let district =
        hook.wait("escalated to district", Duration::from_secs(30), |v| v["desk"] == "district:Xishan").await;
    assert_eq!(district["case_id"].as_u64(), Some(case));
    assert!(
        killed.elapsed() < Duration::from_secs(25),
        "escalation after the restart took {:?}",
        killed.elapsed()
    );

    // The street desk answers and carries the case to closure, while the wall screen follows
    // the case live.
    let api = OfficerApi::new(gateway.http_port());
    let live = sse(gateway.http_port(), &viewer).await;
    let steps = [
        json!({"command": "acknowledge"}),
        json!({"command": "dispatch", "assignee": "Fuhai fire brigade"}),
        json!({"command": "verify", "method": "camera", "finding": "smoke from the 3rd floor"}),
        json!({"command": "dispose", "disposition": {"outcome": "real_fire"}}),
    ];
    for step in steps {
        let (status, body) = api.act(&street, case, step.clone()).await;
        assert_eq!(status, 200, "{step} → {body}");
    }
    let seen = live.await.unwrap();
    assert!(seen.contains("event: transition") && seen.contains("acknowledged"), "live stream: {seen}");
    // Latched: closing waits for the detectors to clear and the latch to be reset.
    let feedback = json!({"command": "close", "feedback": {"report": "kitchen fire put out", "work_orders": [{"kind": "replace_detector", "detail": "sd-a1 soot"}], "resident_informed": true}});
    let (status, body) = api.act(&street, case, feedback.clone()).await;
    assert_eq!(status, 409, "latched: {body}");
    for dev in ["sd-a1", "sd-a2", "sd-a3"] {
        publish(state(dev, 2, DetectorState::Cleared)).await;
    }
    let started = Instant::now();
    loop {
        let (status, body) = api.act(&street, case, json!({"command": "reset_latch"})).await;
        let (_, now) =
            api.call(reqwest::Method::GET, &format!("/api/v1/cases/{case}"), Some(&street), None).await;
        let latched =
            now["case"]["alarms"].as_object().unwrap().values().filter(|a| a["latched"] == true).count();
        if latched == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "latches not reset: {status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = api.act(&street, case, feedback).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["case"]["stage"], "feedback");
    let (status, _) = api.act(&street, case, json!({"command": "acknowledge"})).await;
    assert_eq!(status, 409, "closed is terminal");
    assert_eq!(
        api.act(&g1, case, json!({"command": "note", "text": "owner informed in person"})).await.0,
        200
    );
    // Past keep_closed the engine no longer holds the case (a command other than a note
    // finds no case), and a note still goes onto the stored case.
    let started = Instant::now();
    while api.act(&street, case, json!({"command": "acknowledge"})).await.0 != 404 {
        assert!(started.elapsed() < Duration::from_secs(20), "the closed case leaves the engine");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) =
        api.act(&g1, case, json!({"command": "note", "text": "insurer asked for the report"})).await;
    assert_eq!(status, 200, "a note on an archived case: {body}");
    assert_eq!(api.act(&g2, case, json!({"command": "note", "text": "not my grid"})).await.0, 403);

    // The timeline has every step, in order.
    let (_, detail) =
        api.call(reqwest::Method::GET, &format!("/api/v1/cases/{case}"), Some(&street), None).await;
    let kinds: Vec<&str> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"]["transition"].as_str().unwrap())
        .collect();
    let mut expected = vec![
        "opened",
        "confirmed",
        "escalated",
        "acknowledged",
        "dispatched",
        "verified",
        "disposed",
        "latch_reset",
        "closed",
        "noted",
        "noted",
    ];
    let mut rest = kinds.iter();
    expected.retain(|want| !rest.by_ref().any(|k| k == want));
    assert!(expected.is_empty(), "timeline {kinds:?} lacks, in order, {expected:?}");

    // And the database has the transitions as series.
    let started = Instant::now();
    loop {
        let series = db
            .query_series(DB, &format!("SELECT count(case_id) FROM case_transition WHERE case_id = {case} GROUP BY \"transition\""))
            .unwrap_or_default();
        let names: Vec<String> = series.iter().filter_map(|s| s.tags.get("transition").cloned()).collect();
        if ["opened", "confirmed", "acknowledged", "closed"].iter().all(|t| names.iter().any(|n| n == t)) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "case_transition in InfluxDB: {names:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        api.call(reqwest::Method::GET, "/api/v1/openapi.json", None, None).await.1["openapi"],
        "3.1.0"
    );
}

/// Opens the officer event stream and returns a task that yields what arrived once an
/// `acknowledged` transition has.
async fn sse(port: u16, token: &str) -> tokio::task::JoinHandle<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!(
        "GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 1024];
    let n = stream.read(&mut head).await.unwrap();
    assert!(
        String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    tokio::spawn(async move {
        let mut seen = String::from_utf8_lossy(&head[..n]).into_owned();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(20);
        while !seen.contains("acknowledged") && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(_) => {}
            }
        }
        seen
    })
}
