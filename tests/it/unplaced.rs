//! Alarms of devices the registry does not know, end to end: the `firegrid` binary between a
//! real Mosquitto and a webhook receiver. An unknown detector's alarm pages the village's
//! street desk as an unverified case; strangers beyond the village's limit fold into one
//! flood case; the street desk places the device through the API, which writes the registry
//! file, and the case gets its building and pages the building's grid. Without any registry
//! the street desk named after the village is paged.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use firegrid_protocol::{
    DetectorState, DeviceId, Encoding, StateChange, Topic, Uplink, UplinkBody, UplinkKind, VillageId,
};
use firegrid_tests::officers::{Officer, OfficerApi, write_directory};
use firegrid_tests::{Firegrid, Mosquitto, WebhookReceiver};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::{Value, json};

const VILLAGE: &str = "fuhai-1";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn registry(dir: &Path) -> PathBuf {
    let csv = format!(
        "device_id,kind,model,building_id,building_address,lat,lon,grid,community,street,village\n\
         sd-a1,smoke_detector,JTY-GD,A1,No. 1 Lane,25.03,102.66,G1,C1,Fuhai,{VILLAGE}\n"
    );
    let path = dir.join("registry.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

/// Officers: the street desk (may place devices) and the G1 grid leader (may not).
fn officers(dir: &Path, street: &str) -> (PathBuf, [String; 2]) {
    let path = dir.join("officers.toml");
    let scope = format!("street:{street}");
    let officer = |id, name, role, scope, on_duty| Officer { id, name, role, scope, on_duty };
    let tokens = write_directory(
        &path,
        &[
            officer("street-desk", "Street desk", "duty_officer", &scope, true),
            officer("g1-leader", "G1 leader", "grid_leader", "grid:G1", true),
        ],
    );
    (path, tokens.try_into().unwrap())
}

fn config(
    broker: u16,
    hook: u16,
    registry: Option<PathBuf>,
    officers: PathBuf,
) -> impl Fn(&Path, u16) -> String + Send + Sync + 'static {
    move |dir: &Path, http_port: u16| {
        let registry =
            registry.as_ref().map(|r| format!("[registry]\ncsv = \"{}\"\n", r.display())).unwrap_or_default();
        format!(
            r#"
data_dir = "{data}"
http_listen = "127.0.0.1:{http_port}"
[mqtt]
host = "127.0.0.1"
port = {broker}
client_id = "gw-unplaced"
max_backoff = "500ms"
{registry}
[alerting]
district = "Xishan"
officers = "{officers}"
routes = {{ "*" = ["hook"] }}
[alerting.engine]
unplaced_limit = 2
unplaced_window = "10m"
[notify.channels.hook]
kind = "webhook"
url = "http://127.0.0.1:{hook}/hook"
secret = "test-secret"
"#,
            data = dir.join("data").display(),
            officers = officers.display(),
        )
    }
}

fn alarm(dev: &str) -> (String, Vec<u8>) {
    let dev = DeviceId::new(dev).unwrap();
    let body = UplinkBody::State(StateChange { state: DetectorState::Alarm, obscuration_db_m: 0.4 });
    let msg = Uplink::new(dev.clone(), 1, 1, now_ms(), body);
    let topic = Topic::uplink(VillageId::new(VILLAGE).unwrap(), dev, UplinkKind::State).to_buf().to_string();
    (topic, msg.encode(Encoding::Json, &mut [0u8; 512]).unwrap().to_vec())
}

/// A detector connection on the broker; publishes at QoS 1.
fn detectors(port: u16) -> AsyncClient {
    let opts = MqttOptions::new("strangers", "127.0.0.1", port);
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    client
}

async fn publish(client: &AsyncClient, (topic, payload): (String, Vec<u8>)) {
    client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_detectors_alarm_pages_the_street_desk_unverified_and_is_placed_through_the_api() {
    let broker = Mosquitto::start().unwrap();
    let hook = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = registry(dir.path());
    let (officers_path, [street, g1]) = officers(dir.path(), "Fuhai");
    let gateway =
        Firegrid::start(config(broker.port(), hook.port(), Some(csv.clone()), officers_path)).unwrap();
    let api = OfficerApi::new(gateway.http_port());
    let client = detectors(broker.port());

    // An unknown detector in the village: the village's street (from its registered
    // building) is paged, unverified.
    publish(&client, alarm("x-1")).await;
    let page = hook
        .wait("unplaced case at street:Fuhai", Duration::from_secs(20), |v| v["desk"] == "street:Fuhai")
        .await;
    assert!(page["title"].as_str().unwrap().contains("unplaced device"), "{page}");
    assert!(page["text"].as_str().unwrap().contains("unverified"), "{page}");
    assert_eq!(page["severity"], "pre_alarm");
    let case = page["case_id"].as_u64().unwrap();
    let (_, detail) =
        api.call(reqwest::Method::GET, &format!("/api/v1/cases/{case}"), Some(&street), None).await;
    assert_eq!(detail["case"]["unplaced"]["device"], "x-1", "{detail}");
    assert!(
        hook.desks().iter().all(|d| d == "street:Fuhai"),
        "no grid desk for a stranger: {:?}",
        hook.desks()
    );

    // Two more strangers with a limit of 2 per village: the third folds into one flood case.
    publish(&client, alarm("x-2")).await;
    publish(&client, alarm("x-3")).await;
    publish(&client, alarm("x-4")).await;
    let flood = loop {
        let listed = api.get(&street, "/api/v1/cases").await;
        let cases = listed["cases"].as_array().unwrap().clone();
        let flood = cases.iter().find(|c| c["unplaced"]["flood"] == true).cloned();
        let folded = flood.as_ref().is_some_and(|f| f["alarms"].as_object().unwrap().len() == 2);
        if folded {
            assert_eq!(cases.len(), 3, "two own cases and one flood: {listed}");
            break flood.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(flood["alarms"].get("x-3").is_some() && flood["alarms"].get("x-4").is_some(), "{flood}");

    // Placing: refused for a grid leader, for the flood case, for nonsense; then done by the
    // street desk into building A1.
    let place = |case: u64, token: &str, body: Value| {
        let api = &api;
        let token = token.to_owned();
        async move {
            api.call(reqwest::Method::POST, &format!("/api/v1/cases/{case}/place"), Some(&token), Some(body))
                .await
        }
    };
    assert_eq!(place(case, &g1, json!({"building": "A1"})).await.0, 403, "a grid leader may not place");
    let flood_id = flood["id"].as_u64().unwrap();
    assert_eq!(
        place(flood_id, &street, json!({"building": "A1"})).await.0,
        409,
        "a flood is placed device by device"
    );
    assert_eq!(place(case, &street, json!({"building": "A1", "colour": "red"})).await.0, 422);
    let (status, body) = place(case, &street, json!({"building": "Z9"})).await;
    assert_eq!(status, 422, "an unknown building needs its place: {body}");
    let (status, body) = place(case, &street, json!({"building": "A1", "model": "JTY-GD"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["case"]["location"]["building"], "A1", "{body}");
    assert!(body["case"].get("unplaced").is_none(), "{body}");
    let written = std::fs::read_to_string(&csv).unwrap();
    assert!(written.lines().any(|l| l.starts_with("x-1,smoke_detector,JTY-GD,A1,")), "{written}");

    // The building's grid is told now, no longer unverified; the timeline names the officer.
    let grid =
        hook.wait("the placed case at grid:G1", Duration::from_secs(20), |v| v["desk"] == "grid:G1").await;
    assert_eq!(grid["case_id"].as_u64(), Some(case));
    assert!(!grid["text"].as_str().unwrap().contains("unverified"), "{grid}");
    let (_, detail) = api.call(reqwest::Method::GET, &format!("/api/v1/cases/{case}"), Some(&g1), None).await;
    let placed = detail["timeline"].as_array().unwrap().iter().find(|t| t["kind"]["transition"] == "placed");
    assert_eq!(placed.map(|t| t["officer"].clone()), Some(json!("street-desk")), "{detail}");
    assert_eq!(gateway.metric("firegrid_unplaced_signals_total").unwrap(), Some(4.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_registry_an_alarm_pages_the_street_desk_named_after_the_village() {
    let broker = Mosquitto::start().unwrap();
    let hook = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (officers_path, [street, _]) = officers(dir.path(), VILLAGE);
    let gateway = Firegrid::start(config(broker.port(), hook.port(), None, officers_path)).unwrap();
    let client = detectors(broker.port());
    publish(&client, alarm("sd-0001")).await;
    let page = hook
        .wait("unplaced case at street:fuhai-1", Duration::from_secs(20), |v| v["desk"] == "street:fuhai-1")
        .await;
    assert!(page["text"].as_str().unwrap().contains("unverified"), "{page}");
    let api = OfficerApi::new(gateway.http_port());
    let (status, body) = api
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/cases/{}/place", page["case_id"]),
            Some(&street),
            Some(json!({"building": "A1"})),
        )
        .await;
    assert_eq!(status, 409, "nowhere to place without a registry: {body}");
}

/// `firegrid run` with neither registry nor officer directory: the start banner gives the
/// console link with a first-run commander's token (once), and the README's example alarm
/// opens a case that officer sees. After a restart the same token still signs in and no new
/// one is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_run_prints_a_console_link_whose_officer_sees_the_first_alarm() {
    let broker = Mosquitto::start().unwrap();
    let port = broker.port();
    let mut gateway = Firegrid::start(move |d: &Path, http: u16| {
        format!(
            "data_dir = \"{}\"\nhttp_listen = \"127.0.0.1:{http}\"\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nclient_id = \"gw-first\"\n",
            d.join("data").display()
        )
    })
    .unwrap();
    let banner = gateway.log_tail(50);
    let token = banner
        .split("console#token=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no console link with a token in the banner:\n{banner}"))
        .to_owned();
    assert!(banner.contains("local-admin") && banner.contains("district:"), "{banner}");
    let api = OfficerApi::new(gateway.http_port());
    let (status, me) = api.call(reqwest::Method::GET, "/api/v1/me", Some(&token), None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!((me["id"].as_str(), me["may_act"].as_bool()), (Some("local-admin"), Some(true)), "{me}");

    publish(&detectors(port), alarm("sd-0001")).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, cases) = api.call(reqwest::Method::GET, "/api/v1/cases", Some(&token), None).await;
        assert_eq!(status, 200, "{cases}");
        if cases.to_string().contains("sd-0001") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the first alarm's case is not listed: {cases}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    gateway.restart().unwrap();
    let after = gateway.log_tail(20);
    assert!(!after.contains("#token="), "a token was printed again:\n{after}");
    let (status, _) = api.call(reqwest::Method::GET, "/api/v1/me", Some(&token), None).await;
    assert_eq!(status, 200);
}
