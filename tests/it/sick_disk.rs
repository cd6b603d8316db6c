//! A sick disk under a fire: the `firegrid` binary with its whole data directory (spool,
//! case store, outbox) on a small real ext4 filesystem, between a real Mosquitto, a real
//! InfluxDB 1.x and a webhook receiver.
//!
//! The disk fills to 100 % while a detector's alarm opens a case and escalates: every page
//! still goes out, the officer's acknowledgement is answered truthfully as not yet stored,
//! health says which stores cannot write, telemetry is shed and counted, and the detector
//! gets no `down/ack` (so its outbox keeps the alarm). Space comes back: everything held is
//! written, the `down/ack` arrives, InfluxDB gets the alarm once, no page went out twice.
//!
//! Then the kernel turns the filesystem read-only (an ext4 error): a second detector still
//! confirms the fire and the street is paged. A read-only filesystem is repaired only by
//! unmounting it, so the gateway is killed, the disk checked and the gateway started again:
//! the case comes back with its acknowledgement, the unanswered detector's resend is stored
//! and acknowledged, and nothing paged before the outage is paged again.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use firegrid_protocol::{
    DetectorState, DeviceId, Downlink, DownlinkBody, Encoding, Limits, StateChange, Topic, Uplink,
    UplinkBody, UplinkKind, VillageId,
};
use firegrid_tests::officers::{Officer, OfficerApi, write_directory};
use firegrid_tests::{Firegrid, InfluxDb1, Mosquitto, SmallDisk, WebhookReceiver};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};

const VILLAGE: &str = "fuhai-1";
const DB: &str = "firegrid";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn uplink(dev: &str, seq: u32, kind: UplinkKind, body: UplinkBody) -> (String, Vec<u8>) {
    let dev = DeviceId::new(dev).unwrap();
    let msg = Uplink::new(dev.clone(), 1, seq, now_ms(), body);
    let topic = Topic::uplink(VillageId::new(VILLAGE).unwrap(), dev, kind).to_buf().to_string();
    (topic, msg.encode(Encoding::Json, &mut [0u8; 512]).unwrap().to_vec())
}

fn alarm(dev: &str, seq: u32) -> (String, Vec<u8>) {
    let body = UplinkBody::State(StateChange { state: DetectorState::Alarm, obscuration_db_m: 0.4 });
    uplink(dev, seq, UplinkKind::State, body)
}

fn heartbeat(dev: &str, seq: u32) -> (String, Vec<u8>) {
    uplink(dev, seq, UplinkKind::Heartbeat, firegrid_tests::uplinks::heartbeat_body())
}

fn config(
    data: std::path::PathBuf,
    broker: u16,
    db: u16,
    hook: u16,
    registry: std::path::PathBuf,
    officers: std::path::PathBuf,
) -> impl Fn(&Path, u16) -> String + Send + Sync + 'static {
    move |_dir: &Path, http_port: u16| {
        format!(
            r#"
data_dir = "{data}"
http_listen = "127.0.0.1:{http_port}"
[mqtt]
host = "127.0.0.1"
port = {broker}
client_id = "gw-sick"
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
# Short deadlines, so that the case escalates while the disk is full.
[alerting.engine.pre_alarm]
entry = ["grid"]
ack = [{{ after = "3s" }}, {{ after = "3s" }}, {{ after = "3s" }}, {{ after = "3s" }}]
renotify = "1h"
handle = {{ after = "10m" }}
latched = true
[notify.channels.hook]
kind = "webhook"
url = "http://127.0.0.1:{hook}/hook"
secret = "test-secret"
"#,
            data = data.display(),
            registry = registry.display(),
            officers = officers.display(),
        )
    }
}

/// The `down/ack`s the detectors received, as (device, seq).
type Acks = Arc<Mutex<Vec<(String, u32)>>>;

fn watch_acks(port: u16) -> (AsyncClient, Acks) {
    let acks = Arc::new(Mutex::new(Vec::new()));
    let opts = MqttOptions::new("sick-disk-detectors", "127.0.0.1", port);
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    let seen = acks.clone();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let device = p.topic.split('/').nth(3).unwrap_or_default().to_owned();
                    let downlink = Downlink::receive(&p.payload, &Limits::default());
                    if let Ok(Downlink { body: DownlinkBody::Ack { seq, .. }, .. }) = downlink {
                        seen.lock().unwrap().push((device, seq));
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    (client, acks)
}

async fn health(gateway: &Firegrid) -> Value {
    serde_json::from_str(&gateway.get("/healthz").unwrap()).unwrap()
}

fn count(db: &InfluxDb1, device: &str) -> i64 {
    let q = format!("SELECT count(seq) FROM detector_state WHERE device = '{device}'");
    let series = db.query_series(DB, &q).unwrap();
    series.first().and_then(|s| s.values.first()).and_then(|row| row[1].as_i64()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_pages_and_escalates_on_a_full_then_read_only_disk_and_nothing_is_lost_or_sent_twice() {
    let disk = SmallDisk::mount(8).unwrap();
    let broker = Mosquitto::start().unwrap();
    let db = InfluxDb1::start().unwrap();
    db.create_database(DB).unwrap();
    let hook = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry.csv");
    std::fs::write(
        &registry,
        format!(
            "device_id,kind,model,building_id,building_address,lat,lon,grid,community,street,village\n\
             sd-a1,smoke_detector,JTY-GD,A1,No. 1 Lane,25.03,102.66,G1,C1,Fuhai,{VILLAGE}\n\
             sd-a2,smoke_detector,JTY-GD,A1,No. 1 Lane,25.03,102.66,G1,C1,Fuhai,{VILLAGE}\n\
             sd-b1,smoke_detector,JTY-GD,B1,No. 2 Lane,25.03,102.66,G1,C1,Fuhai,{VILLAGE}\n"
        ),
    )
    .unwrap();
    let officers = dir.path().join("officers.toml");
    let [g1]: [String; 1] = write_directory(
        &officers,
        &[Officer {
            id: "g1-leader",
            name: "G1 leader",
            role: "grid_leader",
            scope: "grid:G1",
            on_duty: true,
        }],
    )
    .try_into()
    .unwrap();
    let data = disk.path().join("data");
    let mut gateway =
        Firegrid::start(config(data, broker.port(), db.port(), hook.port(), registry, officers)).unwrap();
    let api = OfficerApi::new(gateway.http_port());
    let (detectors, acks) = watch_acks(broker.port());
    detectors.subscribe(format!("fg/v1/{VILLAGE}/+/down/ack"), QoS::AtLeastOnce).await.unwrap();
    let publish = |message: (String, Vec<u8>)| {
        let client = detectors.clone();
        async move { client.publish(message.0, QoS::AtLeastOnce, false, message.1).await.unwrap() }
    };
    // The gateway works on the healthy disk: a heartbeat is stored.
    publish(heartbeat("sd-a2", 1)).await;
    let started = Instant::now();
    while gateway.metric("firegrid_messages_accepted_total{kind=\"heartbeat\"}").unwrap() != Some(1.0) {
        assert!(started.elapsed() < Duration::from_secs(20), "the first heartbeat is accepted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // ---- The disk is full. ----
    let filled = disk.fill();
    assert!(filled > 0, "the filler took the free space");
    // The spool's last page may still have room (a filesystem allocates whole pages), so
    // heartbeats go first until a write needs a page the disk does not have: then they are
    // shed and counted.
    let mut seq = 2;
    let started = Instant::now();
    while gateway.metric("firegrid_messages_rejected_total{reason=\"disk_unwritable\"}").unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(30), "shed telemetry is counted");
        for _ in 0..5 {
            publish(heartbeat("sd-a2", seq)).await;
            seq += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    publish(alarm("sd-a1", 1)).await;
    let opened = hook.wait("opened at grid:G1", Duration::from_secs(30), |v| v["desk"] == "grid:G1").await;
    let case = opened["case_id"].as_u64().unwrap();
    // Unanswered, it escalates on schedule while nothing can be written.
    hook.wait("escalated to community:C1", Duration::from_secs(30), |v| v["desk"] == "community:C1").await;
    let h = health(&gateway).await;
    assert_eq!(h["ok"], false, "{h}");
    let unwritable: BTreeSet<String> =
        h["stores_unwritable"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect();
    for store in ["spool", "cases", "outbox"] {
        assert!(unwritable.contains(store), "{store} cannot write: {h}");
    }
    assert!(h["held_in_memory"].as_u64().unwrap() >= 3, "alarm, inputs and pages held: {h}");
    assert_eq!(gateway.metric("firegrid_store_unwritable{store=\"spool\"}").unwrap(), Some(1.0));
    // The alarm waits for the disk, so no `down/ack` yet.
    assert!(
        !acks.lock().unwrap().iter().any(|(d, _)| d == "sd-a1"),
        "no down/ack while the alarm is only in memory: {:?}",
        acks.lock().unwrap()
    );
    // The officer's acknowledgement takes effect and says truthfully that it is not stored.
    let (status, body) = api.act(&g1, case, json!({"command": "acknowledge"})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["durable"], false, "{body}");
    assert_eq!(body["case"]["stage"], "response", "{body}");

    // ---- Space again: what was held is written, the device gets its ack. ----
    disk.free();
    let started = Instant::now();
    while !acks.lock().unwrap().contains(&("sd-a1".to_owned(), 1)) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "down/ack after recovery: {:?}\n{}",
            acks.lock().unwrap(),
            gateway.log_tail(30)
        );
        // Traffic goes on; every batch (and a timer) tries the disk again.
        publish(heartbeat("sd-a2", seq)).await;
        seq += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let started = Instant::now();
    while health(&gateway).await["ok"] != true {
        assert!(started.elapsed() < Duration::from_secs(60), "healthy again: {}", health(&gateway).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let started = Instant::now();
    while count(&db, "sd-a1") < 1 {
        assert!(started.elapsed() < Duration::from_secs(60), "the held alarm reaches InfluxDB");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = api.act(&g1, case, json!({"command": "note", "text": "disk cleaned up"})).await;
    assert_eq!((status, body["durable"].clone()), (200, json!(true)), "{body}");
    // Every page so far, once: the memory table went back to the file as delivered.
    let before_read_only: BTreeSet<u64> = notification_ids(&hook).into_iter().collect();
    assert_eq!(
        before_read_only.len(),
        notification_ids(&hook).len(),
        "no page twice: {:?}",
        notification_ids(&hook)
    );

    // ---- The kernel turns the disk read-only under the gateway (an ext4 error). ----
    disk.fail_read_only();
    publish(alarm("sd-b1", 1)).await;
    let second = hook
        .wait("the next building's alarm", Duration::from_secs(30), |v| {
            v["desk"] == "grid:G1" && v["case_id"].as_u64() != Some(case)
        })
        .await;
    assert!(second["title"].as_str().unwrap().contains("B1"), "{second}");
    let h = health(&gateway).await;
    assert_eq!(h["ok"], false, "{h}");
    assert!(!acks.lock().unwrap().iter().any(|(d, _)| d == "sd-b1"), "nothing durable, no down/ack");

    // ---- A read-only filesystem comes back only through a repair: the gateway is killed
    // (what it held in memory is gone), the disk checked, the gateway started again. ----
    gateway.kill().unwrap();
    disk.repair();
    gateway.restart().unwrap();
    let api = OfficerApi::new(gateway.http_port());
    let detail = api.get(&g1, &format!("/api/v1/cases/{case}")).await;
    assert_eq!(detail["case"]["acknowledged"]["officer"], "g1-leader", "{detail}");
    assert!(
        detail["case"]["notes"].as_array().unwrap().iter().any(|n| n["text"] == "disk cleaned up"),
        "{detail}"
    );
    // The detector never got its down/ack, so it resends; now it is stored and answered, and
    // its building has its case again.
    let started = Instant::now();
    while !acks.lock().unwrap().contains(&("sd-b1".to_owned(), 1)) {
        assert!(started.elapsed() < Duration::from_secs(60), "the resent alarm is acknowledged");
        publish(alarm("sd-b1", 1)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let listed = api.get(&g1, "/api/v1/cases").await;
    let buildings: Vec<&str> = listed["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["location"]["building"].as_str().unwrap())
        .collect();
    assert!(buildings.contains(&"B1") && buildings.contains(&"A1"), "{listed}");
    let started = Instant::now();
    while count(&db, "sd-b1") < 1 {
        assert!(started.elapsed() < Duration::from_secs(60), "the resent alarm reaches InfluxDB");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Give a replay's re-sends time to show (the outbox must drop them), then count: no page
    // made before the read-only outage went out twice, and each alarm is once in InfluxDB.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ids = notification_ids(&hook);
    for id in &before_read_only {
        assert_eq!(ids.iter().filter(|i| *i == id).count(), 1, "page {id} once: {ids:?}");
    }
    assert_eq!((count(&db, "sd-a1"), count(&db, "sd-b1")), (1, 1), "each alarm once in InfluxDB");
}

fn notification_ids(hook: &WebhookReceiver) -> Vec<u64> {
    hook.received().iter().map(|(_, body)| body["notification_id"].as_u64().unwrap()).collect()
}
