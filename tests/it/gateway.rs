//! The `firegrid` binary between a real Mosquitto and a real InfluxDB 1.x: thousands of
//! devices, bad input, a broker restart, `kill -9` of the gateway, and two replicas sharing
//! one broker. Every test counts sequence numbers in the database: nothing missing, nothing
//! twice.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use firegrid_protocol::{
    DetectorState, DeviceId, DownlinkBody, Encoding, FaultKind, Heartbeat, StateChange, Topic, Uplink,
    UplinkBody, UplinkKind, VillageId,
};
use firegrid_tests::{Firegrid, InfluxDb1, Mosquitto, Publisher};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

const DB: &str = "firegrid";
const VILLAGE: &str = "fuhai-1";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn device(i: usize) -> DeviceId {
    DeviceId::new(&format!("sd-{i:05}")).unwrap()
}

fn topic(dev: &DeviceId, kind: UplinkKind) -> String {
    Topic::uplink(VillageId::new(VILLAGE).unwrap(), dev.clone(), kind).to_buf().to_string()
}

fn heartbeat(dev: &DeviceId, seq: u32) -> (String, Vec<u8>) {
    heartbeat_at(dev, 1, seq, now_ms())
}

fn heartbeat_at(dev: &DeviceId, boot: u16, seq: u32, ts_ms: u64) -> (String, Vec<u8>) {
    let body = UplinkBody::Heartbeat(Heartbeat {
        battery_mv: Some(3000 + (seq % 100) as u16),
        signal_dbm: -90,
        chamber_baseline: Some(1500),
        drift_pct: Some(3),
        temperature_c: 21.5,
        firmware: heapless::String::try_from("1.4.2").unwrap(),
        uptime_s: seq * 60,
    });
    let msg = Uplink::new(dev.clone(), boot, seq, ts_ms, body);
    let enc = if seq.is_multiple_of(2) { Encoding::Compact } else { Encoding::Json };
    (topic(dev, UplinkKind::Heartbeat), msg.encode(enc, &mut [0u8; 512]).unwrap().to_vec())
}

fn alarm(dev: &DeviceId, seq: u32) -> (String, Vec<u8>) {
    alarm_at(dev, seq, now_ms())
}

fn alarm_at(dev: &DeviceId, seq: u32, ts_ms: u64) -> (String, Vec<u8>) {
    let body = UplinkBody::State(StateChange { state: DetectorState::Alarm, obscuration_db_m: 0.4 });
    let msg = Uplink::new(dev.clone(), 1, seq, ts_ms, body);
    (topic(dev, UplinkKind::State), msg.encode(Encoding::Compact, &mut [0u8; 512]).unwrap().to_vec())
}

/// The gateway's configuration for a test: the given broker and database, quick retries.
fn gateway_config(
    broker_port: u16,
    db_port: u16,
    client_id: &str,
    shared_group: Option<&str>,
) -> impl Fn(&Path, u16) -> String + Send + Sync + 'static {
    let client_id = client_id.to_owned();
    // Replicas on a shared subscription only ingest: the gateway refuses the alarm loop there.
    let shared = shared_group
        .map(|g| format!("shared_group = \"{g}\"\n[alerting]\nenabled = false\n"))
        .unwrap_or_default();
    move |dir: &Path, http_port: u16| {
        format!(
            r#"
data_dir = "{data}"
http_listen = "127.0.0.1:{http_port}"
[mqtt]
host = "127.0.0.1"
port = {broker_port}
client_id = "{client_id}"
max_backoff = "500ms"
{shared}
[[influx]]
name = "street"
url = "http://127.0.0.1:{db_port}"
api = "v1"
database = "{DB}"
flush_interval = "100ms"
max_backoff = "1s"
"#,
            data = dir.join("data").display()
        )
    }
}

fn count(db: &InfluxDb1, influxql: &str) -> i64 {
    db.query_series(DB, influxql)
        .ok()
        .and_then(|s| s.first().and_then(|s| s.values[0][1].as_i64()))
        .unwrap_or(0)
}

/// Waits until `influxql` counts `want`, then checks it stays there (nothing arrives twice).
async fn wait_count(db: &InfluxDb1, influxql: &str, want: i64, timeout: Duration) {
    let started = Instant::now();
    let mut last = 0;
    while started.elapsed() < timeout {
        last = count(db, influxql);
        if last >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(last, want, "{influxql} after {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(db, influxql), want, "{influxql}: more arrived later");
}

/// Every device's sequence numbers, exactly once each.
fn assert_each_device_has(db: &InfluxDb1, measurement: &str, devices: usize, per_device: i64) {
    let series =
        db.query_series(DB, &format!("SELECT count(seq) FROM {measurement} GROUP BY device")).unwrap();
    assert_eq!(series.len(), devices, "devices with data");
    for s in &series {
        assert_eq!(s.values[0][1], Value::from(per_device), "device {:?}", s.tags);
    }
}

fn setup() -> (Mosquitto, InfluxDb1) {
    let broker = Mosquitto::start().unwrap();
    let db = InfluxDb1::start().unwrap();
    db.create_database(DB).unwrap();
    (broker, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_devices_every_message_arrives_once() {
    let (broker, db) = setup();
    let gateway = Firegrid::start(gateway_config(broker.port(), db.port(), "gw-a", None)).unwrap();
    let publisher = Publisher::start(broker.port(), "fleet-1", 200);
    const DEVICES: usize = 2_000;
    const BEATS: u32 = 5;
    for seq in 0..BEATS {
        for i in 0..DEVICES {
            publisher.send(heartbeat(&device(i), seq)).await;
        }
    }
    for i in 0..200 {
        publisher.send(alarm(&device(i), BEATS)).await;
    }
    publisher.wait_acked(DEVICES as u64 * BEATS as u64 + 200, Duration::from_secs(60)).await;
    wait_count(
        &db,
        "SELECT count(seq) FROM device_heartbeat",
        (DEVICES * BEATS as usize) as i64,
        Duration::from_secs(60),
    )
    .await;
    wait_count(&db, "SELECT count(seq) FROM detector_state", 200, Duration::from_secs(10)).await;
    assert_each_device_has(&db, "device_heartbeat", DEVICES, BEATS.into());
    let accepted = gateway.metric(r#"firegrid_messages_accepted_total{kind="heartbeat"}"#).unwrap();
    assert_eq!(accepted, Some((DEVICES * BEATS as usize) as f64));
    // Unregistered devices are accepted and listed, not dropped.
    let unknown: Vec<Value> = serde_json::from_str(&gateway.get("/api/unknown-devices").unwrap()).unwrap();
    assert_eq!(unknown.len(), DEVICES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_and_counted_while_alarms_keep_arriving() {
    let (broker, db) = setup();
    let gateway = Firegrid::start(gateway_config(broker.port(), db.port(), "gw-a", None)).unwrap();
    let publisher = Publisher::start(broker.port(), "mixed", 200);
    let good = device(1);
    let flooder = device(2);
    let victim = device(3);
    // A detector whose clock runs an hour fast: its alarms are flagged, never refused.
    let fast_clock = device(4);
    // Few enough rounds that the legitimate devices stay inside their own rate budgets.
    const ROUNDS: u32 = 25;
    let mut sent = 0u64;
    let mut alarms = 0u32;
    for round in 0..ROUNDS {
        // The legitimate detector keeps raising alarms throughout.
        publisher.send(alarm(&good, round)).await;
        publisher.send(alarm_at(&fast_clock, round, now_ms() + 3_600_000)).await;
        alarms += 2;
        let hb = |seq| heartbeat(&victim, seq);
        let (hb_topic, hb_payload) = hb(round);
        let bad: Vec<(String, Vec<u8>)> = vec![
            (hb_topic.clone(), b"{not json".to_vec()),
            (hb_topic.clone(), vec![b' '; 2_000]),
            // Spoofing: the flooder's payload on the victim's topic.
            (hb_topic.clone(), heartbeat(&flooder, round).1),
            // An id outside the alphabet in the topic.
            (format!("fg/v1/{VILLAGE}/sd%3/up/heartbeat"), hb_payload.clone()),
            // Out-of-range value.
            (topic(&victim, UplinkKind::State), br#"{"v":1,"dev":"sd-00003","boot":1,"seq":1,"ts_ms":0,"body":{"state":{"state":"alarm","obscuration_db_m":-3}}}"#.to_vec()),
            // The valid heartbeat, then the same again (a retransmission).
            (hb_topic.clone(), hb_payload.clone()),
            (hb_topic, hb_payload),
        ];
        for m in bad {
            publisher.send(m).await;
        }
        // A flooding device: 20 messages a round, far above its budget.
        for k in 0..20 {
            publisher.send(heartbeat(&flooder, round * 20 + k)).await;
        }
        sent += 2 + 7 + 20;
    }
    // A message of the victim's previous boot. These devices have no key, so nothing proves it
    // a replay: it is accepted and counted as unauthenticated, never refused as a replay (a
    // forged "later" message could otherwise shut the real device out; signed replays are
    // refused, tests/it/trust.rs).
    publisher.send(heartbeat_at(&victim, 0, 7, now_ms())).await;
    sent += 1;
    publisher.wait_acked(sent, Duration::from_secs(30)).await;

    wait_count(&db, "SELECT count(seq) FROM detector_state", alarms.into(), Duration::from_secs(20)).await;
    wait_count(
        &db,
        "SELECT count(seq) FROM detector_state WHERE device = 'sd-00004'",
        ROUNDS.into(),
        Duration::from_secs(10),
    )
    .await;
    wait_count(
        &db,
        "SELECT count(seq) FROM device_heartbeat WHERE device = 'sd-00003'",
        i64::from(ROUNDS) + 1,
        Duration::from_secs(10),
    )
    .await;
    assert!(
        gateway
            .metric(r#"firegrid_unauthenticated_accepted_total{kind="heartbeat"}"#)
            .unwrap()
            .unwrap_or(0.0)
            > f64::from(ROUNDS),
        "unsigned acceptance is not counted"
    );
    for reason in ["malformed", "oversized", "device_mismatch", "bad_topic", "out_of_range", "rate_limited"] {
        let n = gateway.metric(&format!(r#"firegrid_messages_rejected_total{{reason="{reason}"}}"#)).unwrap();
        assert!(
            n.unwrap_or(0.0) >= 1.0,
            "no rejection counted for {reason}:\n{}",
            gateway.metrics().unwrap()
        );
    }
    assert_eq!(gateway.metric("firegrid_messages_duplicate_total").unwrap(), Some(ROUNDS.into()));
    // The fast clock is flagged once per message, and stamped with the gateway's time: its
    // alarms sit in the database at acceptance time, not an hour from now.
    assert_eq!(
        gateway.metric(r#"firegrid_skewed_timestamps_total{direction="ahead"}"#).unwrap(),
        Some(ROUNDS.into()),
        "{}",
        gateway.metrics().unwrap()
    );
    let ahead =
        count(&db, "SELECT count(seq) FROM detector_state WHERE device = 'sd-00004' AND time > now() + 10m");
    assert_eq!(ahead, 0, "points stamped with the device's fast clock");
    let device_ts = db
        .query_series(DB, "SELECT last(device_ts_ms) FROM detector_state WHERE device = 'sd-00004'")
        .unwrap();
    let device_ts = device_ts[0].values[0][1].as_i64().unwrap() as u64;
    assert!(device_ts > now_ms() + 3_000_000, "the device's own timestamp is kept as a field: {device_ts}");
    let flooded = count(&db, "SELECT count(seq) FROM device_heartbeat WHERE device = 'sd-00002'");
    assert!((30..150).contains(&flooded), "the flooder got its burst and a trickle, not all 500: {flooded}");
    // One log line per reason and interval, not one per message.
    let log = std::fs::read_to_string(gateway.log_path()).unwrap();
    let lines = log.lines().filter(|l| l.contains("Message rejected.")).count();
    assert!(lines <= 20, "{lines} rejection log lines");
    let lines = log.lines().filter(|l| l.contains("Device clock far off")).count();
    assert!((1..=3).contains(&lines), "{lines} clock log lines");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_nothing() {
    let (mut broker, db) = setup();
    let _gateway = Firegrid::start(gateway_config(broker.port(), db.port(), "gw-a", None)).unwrap();
    let publisher = Publisher::start(broker.port(), "fleet-1", 200);
    for seq in 0..5u32 {
        for i in 0..1_000 {
            publisher.send(heartbeat(&device(i), seq)).await;
        }
    }
    publisher.wait_acked(5_000, Duration::from_secs(30)).await;
    // While the gateway is still working through the backlog.
    broker.restart().unwrap();
    for seq in 5..10u32 {
        for i in 0..1_000 {
            publisher.send(heartbeat(&device(i), seq)).await;
        }
    }
    publisher.wait_acked(10_000, Duration::from_secs(60)).await;
    wait_count(&db, "SELECT count(seq) FROM device_heartbeat", 10_000, Duration::from_secs(60)).await;
    assert_each_device_has(&db, "device_heartbeat", 1_000, 10);
}

/// Stops the gateway mid-stream (SIGKILL or SIGTERM), publishes on while it is down, starts
/// it again, and checks every sequence number arrives exactly once.
async fn stop_mid_stream_loses_nothing(sigkill: bool) {
    let (broker, db) = setup();
    let mut gateway = Firegrid::start(gateway_config(broker.port(), db.port(), "gw-a", None)).unwrap();
    let publisher = Publisher::start(broker.port(), "fleet-1", 200);
    const DEVICES: usize = 2_000;
    const ROUNDS: u32 = 10;
    for seq in 0..ROUNDS {
        for i in 0..DEVICES {
            publisher.send(heartbeat(&device(i), seq)).await;
        }
        if seq == 3 {
            if sigkill {
                gateway.kill().unwrap()
            } else {
                gateway.stop().unwrap()
            }
            assert!(!gateway.is_running());
        }
        if seq == 6 {
            gateway.restart().unwrap();
        }
    }
    publisher.wait_acked(DEVICES as u64 * ROUNDS as u64, Duration::from_secs(60)).await;
    let total = (DEVICES * ROUNDS as usize) as i64;
    wait_count(&db, "SELECT count(seq) FROM device_heartbeat", total, Duration::from_secs(90)).await;
    assert_each_device_has(&db, "device_heartbeat", DEVICES, ROUNDS.into());
    if !sigkill {
        let log = std::fs::read_to_string(gateway.log_path()).unwrap();
        assert!(log.contains("Gateway stopped."), "the SIGTERM stop finished cleanly:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_gateway_mid_stream_loses_nothing() {
    stop_mid_stream_loses_nothing(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_finishes_in_flight_work_and_loses_nothing() {
    stop_mid_stream_loses_nothing(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_a_shared_subscription_split_the_load() {
    let (broker, db) = setup();
    let a = Firegrid::start(gateway_config(broker.port(), db.port(), "gw-a", Some("fuhai"))).unwrap();
    let b = Firegrid::start(gateway_config(broker.port(), db.port(), "gw-b", Some("fuhai"))).unwrap();
    let publisher = Publisher::start(broker.port(), "fleet-1", 200);
    for seq in 0..5u32 {
        for i in 0..2_000 {
            publisher.send(heartbeat(&device(i), seq)).await;
        }
    }
    publisher.wait_acked(10_000, Duration::from_secs(30)).await;
    wait_count(&db, "SELECT count(seq) FROM device_heartbeat", 10_000, Duration::from_secs(60)).await;
    let took = |g: &Firegrid| {
        g.metric(r#"firegrid_messages_accepted_total{kind="heartbeat"}"#).unwrap().unwrap_or(0.0)
    };
    let (ta, tb) = (took(&a), took(&b));
    assert_eq!(ta + tb, 10_000.0, "each message handled by exactly one replica");
    assert!(ta > 1_000.0 && tb > 1_000.0, "both replicas took a share: {ta} / {tb}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_powered_device_whose_connection_drops_is_offline_at_once() {
    let (broker, db) = setup();
    let registry = tempfile::tempdir().unwrap();
    let csv = registry.path().join("devices.csv");
    std::fs::write(
        &csv,
        format!(
            "device_id,kind,model,building_id,building_address,lat,lon,grid,community,street,village\n\
             cam-1,camera,DS-2CD,B1,\"Lane 3, No. 5\",25.0,102.6,G1,C1,fuhai,{VILLAGE}\n\
             cam-2,camera,DS-2CD,B2,Lane 4,25.0,102.6,G1,C1,fuhai,{VILLAGE}\n"
        ),
    )
    .unwrap();
    let base = gateway_config(broker.port(), db.port(), "gw-a", None);
    let csv_path = csv.display().to_string();
    let _gateway =
        Firegrid::start(move |dir, port| format!("{}\n[registry]\ncsv = \"{csv_path}\"\n", base(dir, port)))
            .unwrap();

    // The camera connects with its last will, says it is online, then its network dies.
    let cam = DeviceId::new("cam-1").unwrap();
    let status = |seq, online| {
        let msg = Uplink::new(
            cam.clone(),
            7,
            seq,
            now_ms(),
            UplinkBody::Status(firegrid_protocol::Status { online }),
        );
        (topic(&cam, UplinkKind::Status), msg.encode(Encoding::Json, &mut [0u8; 256]).unwrap().to_vec())
    };
    let (will_topic, will_payload) = status(0, false);
    let mut opts = MqttOptions::new("cam-1", "127.0.0.1", broker.port());
    opts.set_last_will(rumqttc::LastWill::new(will_topic, will_payload, QoS::AtLeastOnce, false));
    let (client, mut eventloop) = AsyncClient::new(opts, 10);
    let (online_topic, online_payload) = status(1, true);
    client.publish(online_topic, QoS::AtLeastOnce, false, online_payload).await.unwrap();
    loop {
        if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
            break;
        }
    }
    let dropped_at = Instant::now();
    // No DISCONNECT: the socket just closes, so the broker publishes the will.
    drop(eventloop);
    drop(client);

    // Offline within seconds, not after three missed 60 s heartbeats.
    let offline = "SELECT count(silent_ms) FROM device_status WHERE device = 'cam-1' AND online = 0";
    wait_count(&db, offline, 1, Duration::from_secs(20)).await;
    assert!(dropped_at.elapsed() < Duration::from_secs(30), "took {:?}", dropped_at.elapsed());
    // The will itself is stored too, and nothing was said about the other camera.
    wait_count(
        &db,
        "SELECT count(online) FROM device_status WHERE source = 'mqtt'",
        2,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(count(&db, "SELECT count(online) FROM device_status WHERE device = 'cam-2'"), 0);
}

/// The application-level acknowledgement (firmware/protocol/README.md): an alarm and an event
/// get a `down/ack`, a retransmitted alarm gets another (its first answer may have been lost),
/// and a heartbeat, stored like them, gets none, retransmitted or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_and_events_get_a_down_ack_and_heartbeats_none() {
    let (broker, db) = setup();
    let dev = device(7);
    // The device's side: subscribed to its downlinks before it sends anything.
    let (client, mut eventloop) =
        AsyncClient::new(MqttOptions::new(dev.as_str(), "127.0.0.1", broker.port()), 100);
    client.subscribe(format!("fg/v1/{VILLAGE}/{dev}/down/#"), QoS::AtLeastOnce).await.unwrap();
    while !matches!(eventloop.poll().await.unwrap(), Event::Incoming(Packet::SubAck(_))) {}
    let downlinks = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = downlinks.clone();
    let listener = tokio::spawn(async move {
        let _client = client;
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                let cmd =
                    firegrid_protocol::Downlink::receive(&p.payload, &firegrid_protocol::Limits::default());
                seen.lock().unwrap().push((p.topic, cmd.unwrap().body));
            }
        }
    });

    let _gateway = Firegrid::start(gateway_config(broker.port(), db.port(), "gw-a", None)).unwrap();
    let publisher = Publisher::start(broker.port(), "acks", 200);
    let fault = {
        let body = UplinkBody::Fault(firegrid_protocol::Fault { fault: FaultKind::Tamper, active: true });
        let msg = Uplink::new(dev.clone(), 1, 2, now_ms(), body);
        (topic(&dev, UplinkKind::Fault), msg.encode(Encoding::Json, &mut [0u8; 256]).unwrap().to_vec())
    };
    for m in [heartbeat(&dev, 0), alarm(&dev, 1), fault, heartbeat(&dev, 0), alarm(&dev, 1)] {
        publisher.send(m).await;
    }
    publisher.wait_acked(5, Duration::from_secs(10)).await;
    wait_count(&db, "SELECT count(seq) FROM device_heartbeat", 1, Duration::from_secs(20)).await;
    wait_count(&db, "SELECT count(seq) FROM detector_state", 1, Duration::from_secs(5)).await;
    wait_count(&db, "SELECT count(seq) FROM device_fault", 1, Duration::from_secs(5)).await;

    // Stored means answered: the acknowledgements follow each batch's commit at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    listener.abort();
    let mut acked: Vec<(String, DownlinkBody)> = downlinks.lock().unwrap().clone();
    acked.sort_by_key(|(_, body)| match body {
        DownlinkBody::Ack { seq, .. } => *seq,
        _ => u32::MAX,
    });
    let ack = |seq| (format!("fg/v1/{VILLAGE}/{dev}/down/ack"), DownlinkBody::Ack { boot: 1, seq });
    assert_eq!(acked, [ack(1), ack(1), ack(2)], "the alarm twice, the fault once, the heartbeat never");
}

/// `firegrid inspect`, the firmware engineer's check of one message: a valid message with a
/// fast clock is accepted with a note, a malformed one is rejected with its reason (exit 2).
#[test]
fn inspect_accepts_a_fast_clock_and_names_the_reason_for_a_rejection() {
    let exe = firegrid_tests::firegrid_binary().unwrap();
    let dev = device(7);
    let (topic, payload) = alarm_at(&dev, 1, now_ms() + 3_600_000);
    let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&exe).arg("inspect").args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, text) = run(&["--topic", &topic, "--hex", &hex]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.starts_with("accepted (Alarm class)"), "{text}");
    assert!(text.contains("ahead of this machine's clock"), "{text}");

    let (code, text) = run(&["--topic", &topic, "{\"v\":1,"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.starts_with("rejected, reason=malformed"), "{text}");
    let (code, text) = run(&["--topic", &topic.replace("sd-00007", "sd-00008"), "--hex", &hex]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.starts_with("rejected, reason=device_mismatch"), "{text}");
}
