//! The wall clock steps; deadlines do not. The real `firegrid` binary runs under libfaketime
//! (Debian `faketime`), whose wall clock the test steps forward by hours, back by hours, and
//! behind the case store's last entry across a `kill -9`, while an unanswered fire climbs
//! the grid. Its monotonic clock is left alone, as an NTP step would leave it.
//!
//! Had deadlines run on the wall clock, the step forward would page every level at once
//! (early) and liveness would call every detector offline; the step back would freeze the
//! escalation for hours. Each escalation must come one deadline after the one below it on
//! the engine's own clock, and no earlier than one deadline after the alarm on the test's
//! monotonic clock.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use firegrid_protocol::{
    DetectorState, DeviceId, Encoding, StateChange, Topic, Uplink, UplinkBody, UplinkKind, VillageId,
};
use firegrid_tests::officers::{Officer, write_directory};
use firegrid_tests::{FakeClock, Firegrid, Mosquitto, WebhookReceiver};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::Value;

const VILLAGE: &str = "fuhai-1";
/// The acknowledgement deadline at every level.
const ACK: Duration = Duration::from_secs(5);
/// How late the engine may decide an escalation on a loaded machine. It only has to tell
/// "one deadline later" from "hours off" and from "at once".
const LATE: Duration = Duration::from_secs(20);
/// Longest wait for one escalation page: a frozen deadline fails here.
const WAIT: Duration = Duration::from_secs(60);

fn registry(dir: &Path) -> PathBuf {
    // Heartbeats every 10 minutes: the test is over long before three are missed, but a
    // wall-clock step of hours would put both detectors three intervals late at once.
    let mut csv = String::from(
        "device_id,kind,model,building_id,building_address,lat,lon,grid,community,street,village,district,heartbeat,channels\n",
    );
    for dev in ["sd-a1", "sd-a2"] {
        csv.push_str(&format!(
            "{dev},smoke_detector,JTY-GD,A1,No. 1 Lane,25.03,102.66,G1,C1,Fuhai,{VILLAGE},Xishan,10m,\n"
        ));
    }
    let path = dir.join("registry.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

fn config(
    broker: u16,
    hook: u16,
    registry: PathBuf,
    officers: PathBuf,
) -> impl Fn(&Path, u16) -> String + Send + Sync {
    move |dir: &Path, http_port: u16| {
        format!(
            r#"
data_dir = "{data}"
http_listen = "127.0.0.1:{http_port}"
[mqtt]
host = "127.0.0.1"
port = {broker}
client_id = "gw-clock"
max_backoff = "500ms"
[registry]
csv = "{registry}"
[alerting]
district = "Xishan"
officers = "{officers}"
routes = {{ "*" = ["hook"] }}
[alerting.engine.fire]
entry = ["grid"]
ack = [{{ after = "5s" }}, {{ after = "5s" }}, {{ after = "5s" }}, {{ after = "5s" }}]
renotify = "10m"
handle = {{ after = "1h" }}
latched = false
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

fn alarm(dev: &str) -> (String, Vec<u8>) {
    let dev = DeviceId::new(dev).unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let body = UplinkBody::State(StateChange { state: DetectorState::Alarm, obscuration_db_m: 0.4 });
    let msg = Uplink::new(dev.clone(), 1, 0, now, body);
    let topic = Topic::uplink(VillageId::new(VILLAGE).unwrap(), dev, UplinkKind::State).to_buf().to_string();
    (topic, msg.encode(Encoding::Json, &mut [0u8; 512]).unwrap().to_vec())
}

/// The first page to `desk`, waited for.
async fn first_page_to(hook: &WebhookReceiver, desk: &str) -> Value {
    hook.wait(&format!("to {desk}"), WAIT, |v| v["desk"] == desk).await
}

/// The engine decided `upper` one deadline after `lower`, give or take a loaded machine.
fn one_deadline_later(lower: &Value, upper: &Value) {
    let (a, b) = (lower["at_ms"].as_u64().unwrap(), upper["at_ms"].as_u64().unwrap());
    let gap = Duration::from_millis(b.saturating_sub(a));
    assert!(
        b >= a && gap >= ACK && gap < ACK + LATE,
        "{} decided {gap:?} after {} (engine times {a} → {b}), expected {ACK:?} to {:?}",
        upper["desk"],
        lower["desk"],
        ACK + LATE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_steps_neither_fire_deadlines_early_nor_freeze_them() {
    let broker = Mosquitto::start().unwrap();
    let hook = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new(dir.path()).unwrap();
    let officers = dir.path().join("officers.toml");
    write_directory(
        &officers,
        &[Officer {
            id: "street-desk",
            name: "street desk",
            role: "duty_officer",
            scope: "street:Fuhai",
            on_duty: true,
        }],
    );
    let mut gateway = Firegrid::start_with_env(
        config(broker.port(), hook.port(), registry(dir.path()), officers),
        clock.envs(),
    )
    .unwrap();

    let mut opts = MqttOptions::new("detectors", "127.0.0.1", broker.port());
    opts.set_clean_session(false);
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });

    // Two detectors of one building in alarm: a confirmed fire, paged to its grid.
    let raised = Instant::now();
    for dev in ["sd-a1", "sd-a2"] {
        let (topic, payload) = alarm(dev);
        client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    }
    let grid = first_page_to(&hook, "grid:G1").await;
    let case = grid["case_id"].as_u64().unwrap();

    // The wall clock jumps three hours ahead. The community is paged one deadline after the
    // grid, not at once.
    clock.set("+3h").unwrap();
    let community = first_page_to(&hook, "community:C1").await;
    assert!(raised.elapsed() >= ACK, "the community was paged {:?} after the alarm", raised.elapsed());
    one_deadline_later(&grid, &community);

    // The jump is corrected and overshoots: the wall clock is now an hour behind the engine's
    // last logged input. The gateway dies and comes back on that clock. The street is still
    // paged one deadline (on the engine's clock) after the community, not hours later.
    clock.set("-1h").unwrap();
    gateway.kill().unwrap();
    gateway.restart().unwrap();
    let street = first_page_to(&hook, "street:Fuhai").await;
    one_deadline_later(&community, &street);

    // And once more while the clock stays behind.
    let district = first_page_to(&hook, "district:Xishan").await;
    one_deadline_later(&street, &district);

    // Nothing else paged: no detector was called offline by the jump ahead (three hours
    // would have been eighteen missed heartbeats).
    let others: Vec<Value> =
        hook.received().into_iter().map(|(_, v)| v).filter(|v| v["case_id"].as_u64() != Some(case)).collect();
    assert!(others.is_empty(), "pages of other cases: {others:#?}");
    // Each level first heard of it in the order of the grid hierarchy (an escalation tells
    // every level already reached again, so later pages repeat the lower desks).
    let mut first: Vec<String> = Vec::new();
    for desk in hook.desks() {
        if !first.contains(&desk) {
            first.push(desk);
        }
    }
    assert_eq!(first, ["grid:G1", "community:C1", "street:Fuhai", "district:Xishan"], "desks first paged");
}
