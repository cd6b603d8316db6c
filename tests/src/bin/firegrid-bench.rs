//! `firegrid-bench`: the benchmarks behind BENCHMARKS.md. Each starts its own real servers
//! and reports ratios or percentiles measured side by side in one run, because the machines
//! here are shared and absolute rates swing with the neighbours.
//!
//! ```text
//! cargo run --release -p firegrid-tests --bin firegrid-bench -- all
//! cargo run --release -p firegrid-tests --bin firegrid-bench -- ingest --messages 200000
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use firegrid_gateway::config::Config;
use firegrid_gateway::ingest::Accepted;
use firegrid_gateway::runtime::Gateway;
use firegrid_gateway::series::{Field, Point};
use firegrid_gateway::sinks::influx::{
    DestinationConfig, DestinationKind, DestinationStats, Signals, run_destination, writer_for,
};
use firegrid_gateway::sources::mqtt::MqttConfig;
use firegrid_gateway::spool::{Durability, Spool, SpoolConfig};
use firegrid_protocol::{
    Class, DetectorState, DeviceId, Encoding, Heartbeat, StateChange, Topic, Uplink, UplinkBody, VillageId,
};
use firegrid_tests::{InfluxDb1, Mosquitto, Publisher, VictoriaMetrics, publish_all};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(about = "firegrid benchmarks against real servers started here")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand, Clone)]
enum Bench {
    /// Every benchmark with its default size.
    All,
    /// Gateway ingest rate ÷ bare rumqttc subscriber rate on the same broker and backlog.
    Ingest {
        /// Messages in the backlog.
        #[arg(long, default_value_t = 200_000)]
        messages: usize,
        /// Distinct devices sending them.
        #[arg(long, default_value_t = 20_000)]
        devices: usize,
        /// Rounds, each draining the backlog once by each side; the median ratio is reported.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// What the gateway runs with: `registry` (every device registered, liveness and site
        /// tracking on) and `influx` (one InfluxDB 1.x destination draining the spool), or
        /// `none`. The real configuration is both.
        #[arg(long, value_delimiter = ',', default_value = "registry,influx")]
        with: Vec<String>,
    },
    /// `Ingest::process` alone (decode, checks, spool) on the same stream, without MQTT.
    IngestOnly {
        /// Messages.
        #[arg(long, default_value_t = 200_000)]
        messages: usize,
        /// Distinct devices sending them.
        #[arg(long, default_value_t = 20_000)]
        devices: usize,
    },
    /// Resident memory of the `firegrid` process (release build) per registered device that
    /// has sent a message, from the growth between registry sizes.
    Memory {
        /// Registry sizes, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,5000,20000,50000")]
        devices: Vec<usize>,
    },
    /// Alarm publish → hand-off to the alarm loop while heartbeats are queued ahead of it.
    AlarmLatency {
        /// Heartbeats queued before each alarm.
        #[arg(long, default_value_t = 20_000)]
        heartbeats: usize,
        /// Alarms measured.
        #[arg(long, default_value_t = 20)]
        alarms: usize,
    },
    /// A firmware rollout (the gateway's sans-IO `Rollout`, 5 % canaries then waves of 500)
    /// to simulated detectors (the real detector core, update receiver and bootloader on
    /// simulated flash), every command signed for the device and verified by it, over a
    /// perfect in-process link: the gateway's and the devices' work, without MQTT.
    Ota {
        /// Detectors updated.
        #[arg(long, default_value_t = 6_000)]
        detectors: usize,
    },
    /// A firmware rollout through the real gateway and Mosquitto: `firegrid firmware publish`
    /// (5 % canaries, then waves of 500) to simulated detectors (as in `ota`), each command
    /// signed by the running gateway, published to the detector's `down/` topic and taken off
    /// a real subscription, each `fw_status` published back. Time from publish to every
    /// detector booted on the new image.
    OtaMqtt {
        /// Detectors updated.
        #[arg(long, default_value_t = 6_000)]
        detectors: usize,
        /// Image size in bytes: 3,500 (10 chunks) is the test image, 62,000 (162 chunks) a
        /// real detector application; at most 65,536 (the large simulated flash's slot).
        #[arg(long, default_value_t = 3_500)]
        image_bytes: usize,
    },
    /// The same rollout to NB-IoT detectors over the gateway's CoAP endpoint: each posts its
    /// `fw_status` as a confirmable request (RFC 7252 retransmission, 2 s ACK_TIMEOUT) and
    /// takes its next command from the answer; idle, it asks every `poll_s` seconds (its
    /// wake-up). With `--loss-every N`, a relay loses every N-th datagram of each detector in
    /// each direction.
    OtaCoap {
        /// Detectors updated.
        #[arg(long, default_value_t = 6_000)]
        detectors: usize,
        /// Image size in bytes (as for `ota-mqtt`).
        #[arg(long, default_value_t = 3_500)]
        image_bytes: usize,
        /// Lose every N-th datagram each way (0: none).
        #[arg(long, default_value_t = 0)]
        loss_every: u64,
        /// An idle detector's wake-up interval, seconds.
        #[arg(long, default_value_t = 5.0)]
        poll_s: f64,
    },
    /// The alarm engine alone: events per second with this many cases open.
    Engine {
        /// Cases open before the measurement.
        #[arg(long, default_value_t = 10_000)]
        cases: usize,
        /// Events measured.
        #[arg(long, default_value_t = 500_000)]
        events: usize,
    },
    /// Alarm published → first notification at a webhook receiver on loopback, while
    /// heartbeats flow at a steady rate.
    AlarmNotify {
        /// Heartbeats per second in the background.
        #[arg(long, default_value_t = 10_000)]
        rate: usize,
        /// Alarms measured per configuration (each in a building of its own, so each opens a
        /// case).
        #[arg(long, default_value_t = 1_000)]
        alarms: usize,
        /// Configurations, measured one after the other in this run: `plain` (no keys, plain
        /// MQTT, anonymous broker) and `secure` (every message tagged and verified, Mosquitto
        /// with generated passwords and ACL, MQTT over TLS with client certificates).
        #[arg(long, value_delimiter = ',', default_value = "plain,secure")]
        configs: Vec<String>,
        /// Case stores, each configuration measured on each: `sqlite` (the embedded default),
        /// `postgres` (a server the harness starts on loopback, `synchronous_commit = on`) and
        /// `postgres-tls` (the same, reached over TLS: `[alerting.store] tls`).
        #[arg(long, value_delimiter = ',', default_value = "sqlite")]
        stores: Vec<String>,
    },
    /// Village failover: an active and a standby gateway on one PostgreSQL case store and one
    /// broker; the active one is killed with SIGKILL and a detector's fire alarm is published
    /// at the same instant. Per run: the standby's first committed input and the page after
    /// the kill, beside the same alarm's page while the active one was alive.
    Takeover {
        /// Kills measured, each with a database and a pair of gateways of its own.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Freeze the active one with SIGSTOP instead (it keeps its PostgreSQL session and
        /// lock): the standby takes over once the active one's lease has expired, and the frozen
        /// one, woken with SIGCONT after the run, must exit as its lease ran out.
        #[arg(long)]
        freeze: bool,
    },
    /// The case store's commit rate and latency (durable transactions) with batches of 1 and
    /// of 100, on each backend side by side: SQLite (`synchronous = FULL`) and PostgreSQL (a
    /// server started on loopback by the harness, `synchronous_commit = on`).
    CaseStore {
        /// Steps committed per batch size and backend.
        #[arg(long, default_value_t = 2_000)]
        steps: usize,
        /// Backends, measured one after the other for each batch size: `sqlite`, `postgres`,
        /// `postgres-tls` (the same server setup, reached over TLS).
        #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres,postgres-tls")]
        backends: Vec<String>,
    },
    /// The notification outbox's own cost, per backend side by side: an SQLite file
    /// (`synchronous = FULL`) and the table shared through the case store's PostgreSQL (over
    /// TLS, written under the store's epoch, mirrored in memory). The latency of enqueueing a
    /// page and of recording its delivery, and the time a gateway that takes over spends
    /// loading a backlog of rows (retention keeps 30 days of them).
    Outbox {
        /// Pages enqueued and then marked delivered, per backend.
        #[arg(long, default_value_t = 2_000)]
        pages: usize,
        /// Rows in the table when a gateway takes it over.
        #[arg(long, default_value_t = 60_000)]
        backlog: usize,
    },
    /// The fleet simulator: devices in one process (platform mode) against Mosquitto, with
    /// a subscriber acknowledging every message as the gateway would; messages/s, CPU, RSS.
    Sim {
        /// Detectors.
        #[arg(long, default_value_t = 20_000)]
        devices: usize,
        /// Simulated seconds per real second.
        #[arg(long, default_value_t = 10.0)]
        speed: f64,
        /// Simulated minutes.
        #[arg(long, default_value_t = 5)]
        minutes: u64,
        /// `direct` or `platform`.
        #[arg(long, default_value = "platform")]
        mode: String,
    },
    /// Spool append rate (one commit per 500 lines, as ingest batches).
    Spool {
        /// Lines appended.
        #[arg(long, default_value_t = 1_000_000)]
        lines: usize,
    },
    /// Drain rate into VictoriaMetrics of a spool filled during an outage.
    Drain {
        /// Lines spooled during the outage.
        #[arg(long, default_value_t = 500_000)]
        lines: usize,
        /// Lines per write request.
        #[arg(long, default_value_t = 5_000)]
        batch_lines: usize,
    },
    /// Publish → queryable in InfluxDB 1.x at a steady rate.
    EndToEnd {
        /// Heartbeats per second.
        #[arg(long, default_value_t = 2_000)]
        rate: usize,
        /// Seconds of load.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Spool drain after a database outage: heartbeats flow at a steady rate through Mosquitto
    /// into the gateway (in-process) and one InfluxDB 1.x destination, which is stopped and
    /// restarted; backlog at restart, catch-up time and drain rate against the steady rate, and
    /// an exact count of the points in the database.
    Recovery {
        /// Heartbeats per second, throughout.
        #[arg(long, default_value_t = 5_000)]
        rate: usize,
        /// Distinct devices sending them.
        #[arg(long, default_value_t = 20_000)]
        devices: usize,
        /// Steady state before the outage (its second half gives the steady rate).
        #[arg(long, default_value = "10s", value_parser = duration_arg)]
        warm_up: Duration,
        /// How long the database is down (`60s`, `2m`).
        #[arg(long, default_value = "60s", value_parser = duration_arg)]
        outage: Duration,
    },
    /// A fire page behind fault reminders on a rate-limited channel: the outbox and its worker
    /// in-process with a webhook channel taking `per_minute` messages a minute, delivering to
    /// a receiver on loopback; `faults` fault reminders (one case each) are queued, then one
    /// fire. Reports which request the fire page was and its enqueue → arrival time, with the
    /// reserve on and off, and for the outbox's former due-time order (simulated with the same
    /// scheduler and window: a real run would take the whole drain).
    FireFirst {
        /// Fault reminders queued before the fire.
        #[arg(long, default_value_t = 500)]
        faults: usize,
        /// The channel's limit, messages per minute (WeCom's and DingTalk's robots: 20).
        #[arg(long, default_value_t = 20)]
        per_minute: u32,
    },
    /// The largest simulated village one gateway carries: for each size, the fleet simulator
    /// (platform mode, cameras through the camera agent) and the `firegrid` binary (release)
    /// with the alarm loop and a webhook for every desk; probe alarms from buildings of their
    /// own measure publish → first webhook request. Passes when p99 ≤ 50 ms, no probe is lost
    /// and the gateway has caught up within 5 s of the fleet stopping.
    Village {
        /// Detectors per village, comma-separated (buildings = detectors / 5.2, camera
        /// channels = detectors / 5).
        #[arg(long, value_delimiter = ',', default_value = "6000,20000,50000")]
        detectors: Vec<usize>,
        /// Simulated seconds per real second (60: hourly heartbeats once a real minute).
        #[arg(long, default_value_t = 60.0)]
        speed: f64,
        /// Real seconds of each run, from the fleet's first message.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Detector heartbeat interval, simulated. The simulator spreads boots (each
        /// detector's first heartbeat) over at most one simulated minute, so with `1h` at ×60
        /// the whole village reports within one real second each real minute; `--speed 1
        /// --heartbeat 1m` sends the same rate spread evenly.
        #[arg(long, default_value = "1h", value_parser = duration_arg)]
        heartbeat: Duration,
        /// Leave the cameras out.
        #[arg(long)]
        no_cameras: bool,
    },
    /// A village on the `firegrid` binary (release) while broker restarts, InfluxDB outages,
    /// `kill -9` of the gateway, a full disk and wall-clock steps happen at random (one at a
    /// time, about one a minute), with fires throughout; then checks that every alarm is in
    /// InfluxDB exactly once, every fire paged in time and no page went out twice. Exits 1 on
    /// a violation. Needs root (the full disk is a real ext4 image on a loop device).
    Chaos {
        /// Minutes of faults and fires (the settling comes after).
        #[arg(long, default_value_t = 30)]
        minutes: u64,
        /// Seeds the schedule; the same seed gives the same faults and fires.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// A duration argument: `60s`, `2m`, `500ms`, `1h`, or plain seconds.
fn duration_arg(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || format!("`{text}`: expected a duration such as 60s, 2m or 500ms");
    let n: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs_f64(seconds))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn device(i: usize) -> DeviceId {
    DeviceId::new(&format!("sd-{i:06}")).unwrap()
}

/// The key of bench device `i` (deterministic, so every round signs alike).
fn device_key(i: usize) -> firegrid_protocol::DeviceKey {
    let mut bytes = [0x5a; 32];
    bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
    firegrid_protocol::DeviceKey::from_bytes(bytes)
}

/// A key store holding the keys of bench devices `0..devices`, saved in `dir`; its path.
fn bench_keys(dir: &std::path::Path, devices: usize) -> std::path::PathBuf {
    let mut store = firegrid_gateway::keys::KeyStore::empty();
    for i in 0..devices {
        store.insert(device(i), firegrid_gateway::keys::DeviceKeys::new(device_key(i)));
    }
    let path = dir.join("keys.toml");
    store.save(&path).unwrap();
    path
}

/// A compact heartbeat of bench device `i`, signed with its key.
fn signed_heartbeat(i: usize, seq: u32) -> (String, Vec<u8>) {
    signed(i, heartbeat(&device(i), seq))
}

/// Bench device `i`'s `(topic, payload)` re-encoded with its tag, as the device would send it.
fn signed(i: usize, (topic, payload): (String, Vec<u8>)) -> (String, Vec<u8>) {
    let mut msg = Uplink::receive(&payload, &firegrid_protocol::Limits::default()).unwrap();
    msg.sign(&VillageId::new("fuhai-1").unwrap(), &device_key(i));
    (topic, msg.encode(Encoding::Compact, &mut [0u8; 256]).unwrap().to_vec())
}

fn uplink(dev: &DeviceId, seq: u32, body: UplinkBody) -> (String, Vec<u8>) {
    let msg = Uplink::new(dev.clone(), 1, seq, now_ms(), body);
    let topic =
        Topic::uplink(VillageId::new("fuhai-1").unwrap(), dev.clone(), msg.kind()).to_buf().to_string();
    (topic, msg.encode(Encoding::Compact, &mut [0u8; 256]).unwrap().to_vec())
}

fn heartbeat(dev: &DeviceId, seq: u32) -> (String, Vec<u8>) {
    uplink(
        dev,
        seq,
        UplinkBody::Heartbeat(Heartbeat {
            battery_mv: Some(3000),
            signal_dbm: -95,
            chamber_baseline: Some(1500),
            drift_pct: Some(4),
            temperature_c: 22.0,
            firmware: heapless::String::try_from("1.4.2").unwrap(),
            uptime_s: seq,
        }),
    )
}

fn alarm(dev: &DeviceId, seq: u32) -> (String, Vec<u8>) {
    uplink(dev, seq, UplinkBody::State(StateChange { state: DetectorState::Alarm, obscuration_db_m: 0.4 }))
}

/// Connects a persistent session once so that the broker queues for it while it is away.
async fn register_session(port: u16, id: &str, filter: &str) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_clean_session(false);
    let (client, mut eventloop) = AsyncClient::new(opts, 10);
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    loop {
        if let Ok(Event::Incoming(Packet::SubAck(_))) = eventloop.poll().await {
            break;
        }
    }
    client.disconnect().await.unwrap();
    let _ =
        tokio::time::timeout(Duration::from_millis(500), async { while eventloop.poll().await.is_ok() {} })
            .await;
}

/// Ends a persistent session and its subscriptions (a clean-session connect).
async fn clear_session(port: u16, id: &str) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_clean_session(true);
    let (client, mut eventloop) = AsyncClient::new(opts, 10);
    loop {
        if let Ok(Event::Incoming(Packet::ConnAck(_))) = eventloop.poll().await {
            break;
        }
    }
    client.disconnect().await.unwrap();
    let _ =
        tokio::time::timeout(Duration::from_millis(500), async { while eventloop.poll().await.is_ok() {} })
            .await;
}

/// The bare subscriber: resumes its session and counts the backlog, acknowledging
/// automatically. Returns messages per second.
async fn bare_subscriber(port: u16, id: &str, n: usize) -> f64 {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_clean_session(false).set_max_packet_size(256 * 1024, 256 * 1024);
    let (_client, mut eventloop) = AsyncClient::new(opts, 1000);
    let mut got = 0;
    let mut started = None;
    while got < n {
        if let Event::Incoming(Packet::Publish(_)) = eventloop.poll().await.unwrap() {
            started.get_or_insert_with(Instant::now);
            got += 1;
        }
    }
    n as f64 / started.unwrap().elapsed().as_secs_f64()
}

/// A gateway on `broker`. The per-device rate limits are lifted: these benchmarks measure the
/// pipeline, and some send a device more than its burst within seconds.
fn gateway_config(dir: &std::path::Path, broker: u16, influx: Vec<DestinationConfig>) -> Config {
    let unlimited = firegrid_gateway::config::AdmissionSettings {
        rate_per_s: 1e9,
        burst: 1e9,
        alarm_rate_per_s: 1e9,
        alarm_burst: 1e9,
        firmware_rate_per_s: 1e9,
        firmware_burst: 1e9,
    };
    Config {
        admission: unlimited,
        data_dir: dir.to_path_buf(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        mqtt: Some(MqttConfig { port: broker, client_id: "bench-gw".into(), ..MqttConfig::default() }),
        influx,
        ..Config::default()
    }
}

/// Counts the `down/ack` publishes on the broker at `port` from now on.
async fn count_down_acks(port: u16) -> Arc<AtomicU64> {
    let mut opts = MqttOptions::new("down-ack-probe", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 10);
    client.subscribe("fg/v1/+/+/down/ack", QoS::AtMostOnce).await.unwrap();
    while !matches!(eventloop.poll().await.unwrap(), Event::Incoming(Packet::SubAck(_))) {}
    let count = Arc::new(AtomicU64::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        let _client = client;
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(_)) = event {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    count
}

async fn ingest(messages: usize, devices: usize, rounds: usize, with: &[String]) {
    let known = ["registry", "influx", "none"];
    if let Some(other) = with.iter().find(|w| !known.contains(&w.as_str())) {
        panic!("--with takes registry, influx or none, not {other:?}");
    }
    let (with_registry, with_influx) =
        (with.iter().any(|w| w == "registry"), with.iter().any(|w| w == "influx"));
    let broker = Mosquitto::start().unwrap();
    let stream: Vec<_> =
        (0..messages).map(|k| heartbeat(&device(k % devices), (k / devices) as u32)).collect();
    let signed: Vec<_> = (0..messages).map(|k| signed_heartbeat(k % devices, (k / devices) as u32)).collect();
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = bench_keys(keys_dir.path(), devices);
    // The real configuration: every device registered, and one InfluxDB destination the spool
    // drains into while the gateway ingests.
    let registry = keys_dir.path().join("registry.csv");
    write_registry(&registry, devices);
    let influx = with_influx.then(|| InfluxDb1::start().unwrap());
    println!(
        "ingest: {messages} heartbeats from {devices} devices, compact encoding, backlog drained from \
         Mosquitto; {rounds} rounds alternating the bare subscriber, the gateway without keys (unsigned \
         stream) and the gateway with every device's key (signed stream, every tag verified); the \
         gateway with {}",
        match (with_registry, with_influx) {
            (true, true) => "the registry and one InfluxDB 1.x destination",
            (true, false) => "the registry, no database",
            (false, true) => "one InfluxDB 1.x destination, no registry",
            (false, false) => "neither registry nor database",
        }
    );
    // Heartbeats are telemetry, which the gateway stores and acknowledges to the broker but
    // answers with no `down/ack` (firmware/protocol/README.md); the probe shows it does not.
    let down_acks = count_down_acks(broker.port()).await;
    let probe_dir = tempfile::tempdir().unwrap();
    let probe = gateway_config(probe_dir.path(), broker.port(), vec![]);
    let mqtt = probe.mqtt.as_ref().unwrap();
    let gateway_sessions: Vec<(String, Vec<String>)> = firegrid_gateway::sources::mqtt::Session::ALL
        .into_iter()
        .map(|s| (mqtt.client_id(s), mqtt.filters(s).unwrap()))
        .collect();

    // Each side's persistent session exists only for its own phase, so the broker queues the
    // stream for exactly one of them at a time.
    let mut ratios = Vec::new();
    let mut signed_ratios = Vec::new();
    for round in 1..=rounds {
        // Each stream against a bare subscriber draining the same bytes, so the signed stream's
        // longer messages are not charged to verification.
        let mut rates = Vec::new();
        for (phase, keys) in [(&stream, None), (&signed, Some(&keys))] {
            register_session(broker.port(), "bare", "fg/v1/+/+/up/+").await;
            publish_all(broker.port(), "fleet", phase).await;
            let bare = bare_subscriber(broker.port(), "bare", messages).await;
            clear_session(broker.port(), "bare").await;
            for (id, filters) in &gateway_sessions {
                for f in filters {
                    register_session(broker.port(), id, f).await;
                }
            }
            publish_all(broker.port(), "fleet", phase).await;
            // A fresh data directory each round: the same messages again would otherwise be
            // recognised as duplicates (which is the point of seeding them from the spool).
            let dir = tempfile::tempdir().unwrap();
            let mut cfg =
                gateway_config(dir.path(), broker.port(), influx.iter().map(street_database).collect());
            cfg.registry.keys = keys.cloned();
            cfg.registry.csv = with_registry.then(|| registry.clone());
            let (tx, mut rx) = mpsc::unbounded_channel::<Accepted>();
            let gateway = Gateway::start(cfg, Some(tx)).await.unwrap();
            let mut got = 0;
            let mut started = None;
            while got < messages {
                rx.recv().await.unwrap();
                started.get_or_insert_with(Instant::now);
                got += 1;
            }
            rates.push((bare, messages as f64 / started.unwrap().elapsed().as_secs_f64()));
            gateway.stop().await;
        }
        let [(bare, full), (bare_signed, verified)] = [rates[0], rates[1]];
        println!(
            "| round {round}: unsigned: bare {bare:.0} msg/s, gateway {full:.0} msg/s, ratio {:.2} | \
             signed: bare {bare_signed:.0} msg/s, gateway verifying {verified:.0} msg/s, ratio {:.2} | \
             down/acks so far {} |",
            full / bare,
            verified / bare_signed,
            down_acks.load(Ordering::Relaxed)
        );
        ratios.push(full / bare);
        signed_ratios.push(verified / bare_signed);
    }
    ratios.sort_by(f64::total_cmp);
    signed_ratios.sort_by(f64::total_cmp);
    println!(
        "| **median ratio** | unsigned **{:.2}** (rounds {:.2}-{:.2}) | verified **{:.2}** (rounds {:.2}-{:.2}) |",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
        signed_ratios[signed_ratios.len() / 2],
        signed_ratios[0],
        signed_ratios[signed_ratios.len() - 1]
    );
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn alarm_latency(heartbeats: usize, alarms: usize) {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel::<Accepted>();
    let gateway = Gateway::start(gateway_config(dir.path(), broker.port(), vec![]), Some(tx)).await.unwrap();
    println!("alarm latency: {alarms} alarms, each published right after {heartbeats} heartbeats");
    let mut latencies = Vec::new();
    for a in 0..alarms {
        let backlog: Vec<_> = (0..heartbeats).map(|k| heartbeat(&device(k), a as u32)).collect();
        publish_all(broker.port(), "fleet", &backlog).await;
        let (topic, payload) = alarm(&device(heartbeats + a), 0);
        let mut opts = MqttOptions::new(format!("alarm-{a}"), "127.0.0.1", broker.port());
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(opts, 10);
        let poller = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
        let sent = Instant::now();
        client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
        let mut behind = 0;
        loop {
            let accepted = rx.recv().await.unwrap();
            if accepted.msg.class() == Class::Alarm {
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            behind += 1;
        }
        poller.abort();
        // Let the heartbeat backlog finish before the next round.
        while behind < heartbeats {
            rx.recv().await.unwrap();
            behind += 1;
        }
    }
    gateway.stop().await;
    latencies.sort_by(f64::total_cmp);
    println!(
        "| alarm → hand-off | p50 {:.1} ms | p99 {:.1} ms | max {:.1} ms |",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap()
    );
}

fn line(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    Point::new("device_heartbeat", 1_763_000_000_000_000_000 + n as i64)
        .tag("village", "fuhai-1")
        .tag("grid", format!("g{}", n % 40))
        .tag("building", format!("b{}", n % 1150))
        .tag("device", format!("sd-{:06}", n % 6000))
        .field("battery_mv", Field::I64(3000))
        .field("signal_dbm", Field::I64(-95))
        .field("seq", Field::I64(n as i64))
        .encode(&mut out)
        .unwrap();
    out
}

fn spool_append(lines: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(SpoolConfig::new(dir.path()), &["db"]).unwrap();
    let data: Vec<_> = (0..lines).map(line).collect();
    let bytes: usize = data.iter().map(Vec::len).sum();
    let started = Instant::now();
    for (i, l) in data.iter().enumerate() {
        spool.append(Class::Telemetry, 0, l).unwrap();
        if i % 500 == 499 {
            spool.commit(Durability::Os).unwrap();
        }
    }
    spool.commit(Durability::Disk).unwrap();
    let s = started.elapsed().as_secs_f64();
    println!(
        "| spool append, {lines} lines of {} B, commit per 500 | {:.0} lines/s | {:.0} MB/s |",
        bytes / lines,
        lines as f64 / s,
        bytes as f64 / s / 1e6
    );
}

async fn drain(lines: usize, batch_lines: usize) {
    let dir = tempfile::tempdir().unwrap();
    let spool =
        Arc::new(Mutex::new(Spool::open(SpoolConfig::new(dir.path().join("spool")), &["vm"]).unwrap()));
    {
        let mut s = spool.lock().unwrap();
        for i in 0..lines {
            s.append(Class::Telemetry, now_ms(), &line(i)).unwrap();
        }
        s.commit(Durability::Disk).unwrap();
    }
    // The database comes back. The yardstick: a bare influxdb2 client posting the same lines
    // in the same batches, one request at a time, into the same server. It runs once first to
    // create the series (in the field they exist before an outage; creating them is most of
    // VictoriaMetrics' cost), and is timed on its second run, after the drain.
    let vm = VictoriaMetrics::start().unwrap();
    let bare_client = influxdb2::Client::new(vm.url(), "fuhai", "");
    let all: Vec<Vec<u8>> = (0..lines).map(line).collect();
    let bare_run = || async {
        let started = Instant::now();
        for chunk in all.chunks(batch_lines) {
            bare_client.write_line_protocol("fuhai", "firegrid", chunk.concat()).await.unwrap();
        }
        lines as f64 / started.elapsed().as_secs_f64()
    };
    bare_run().await;
    let cfg = DestinationConfig {
        batch_lines,
        ..DestinationConfig::new(
            "vm",
            vm.url(),
            DestinationKind::V2 { org: "fuhai".into(), bucket: "firegrid".into(), token: String::new() },
        )
    };
    let stats = Arc::new(DestinationStats::default());
    let stop = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(run_destination(
        spool.clone(),
        cfg.clone(),
        writer_for(&cfg).unwrap(),
        Signals::default(),
        stats.clone(),
        dir.path().join("dead"),
        stop.clone(),
    ));
    while spool.lock().unwrap().depth("vm").unwrap() > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = started.elapsed().as_secs_f64();
    stop.cancel();
    task.await.unwrap();
    let drained = lines as f64 / s;
    let bare = bare_run().await;
    println!("| bare influxdb2 client, {lines} lines in batches of {batch_lines} | {bare:.0} lines/s |");
    println!(
        "| spool drained to VictoriaMetrics after an outage, same lines and batches | {drained:.0} lines/s |"
    );
    println!("| **ratio** | **{:.2}** |", drained / bare);
}

/// Creates the `firegrid` database in `db` and returns the gateway destination writing to it.
fn street_database(db: &InfluxDb1) -> DestinationConfig {
    db.create_database("firegrid").unwrap();
    DestinationConfig::new(
        "street",
        db.url(),
        DestinationKind::V1 {
            database: "firegrid".into(),
            retention_policy: None,
            username: None,
            password: None,
        },
    )
}

async fn end_to_end(rate: usize, seconds: u64) {
    let broker = Mosquitto::start().unwrap();
    let db = InfluxDb1::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = street_database(&db);
    let gateway = Gateway::start(gateway_config(dir.path(), broker.port(), vec![dest]), None).await.unwrap();
    println!("end to end: {rate} heartbeats/s for {seconds} s from 6,000 devices; probe every 200 ms");
    let mut opts = MqttOptions::new("fleet", "127.0.0.1", broker.port());
    opts.set_inflight(500);
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    // sent[k] = when message k was published; the probe finds the highest k queryable.
    let sent = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let publisher = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let total = rate * seconds as usize;
            let started = Instant::now();
            for k in 0..total {
                let due = started + Duration::from_secs_f64(k as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
                let (topic, payload) = heartbeat(&device(k % 6000), (k / 6000) as u32);
                sent.lock().unwrap().push(Instant::now());
                client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
            }
        })
    };
    let mut latencies = Vec::new();
    let total = rate * seconds as usize;
    let mut seen = 0usize;
    while seen < total {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let series =
            db.query_series("firegrid", "SELECT count(seq) FROM device_heartbeat").unwrap_or_default();
        let count = series.first().and_then(|s| s.values[0][1].as_u64()).unwrap_or(0) as usize;
        let now = Instant::now();
        let sent = sent.lock().unwrap();
        // Messages arrive in order per session, so the first `count` published are queryable.
        for t in &sent[seen..count.min(sent.len())] {
            latencies.push(now.duration_since(*t).as_secs_f64() * 1000.0);
        }
        seen = seen.max(count);
    }
    publisher.await.unwrap();
    gateway.stop().await;
    latencies.sort_by(f64::total_cmp);
    println!(
        "| publish → queryable in InfluxDB 1.x (probe resolution 200 ms) | p50 {:.0} ms | p99 {:.0} ms | max {:.0} ms |",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let benches = match Cli::parse().bench {
        Bench::All => vec![
            Bench::Ingest {
                messages: 200_000,
                devices: 20_000,
                rounds: 5,
                with: vec!["registry".into(), "influx".into()],
            },
            Bench::AlarmLatency { heartbeats: 20_000, alarms: 20 },
            Bench::Engine { cases: 10_000, events: 500_000 },
            Bench::Ota { detectors: 6_000 },
            Bench::OtaMqtt { detectors: 6_000, image_bytes: 3_500 },
            Bench::CaseStore {
                steps: 2_000,
                backends: vec!["sqlite".into(), "postgres".into(), "postgres-tls".into()],
            },
            Bench::Outbox { pages: 2_000, backlog: 60_000 },
            Bench::Sim { devices: 20_000, speed: 10.0, minutes: 5, mode: "platform".into() },
            Bench::AlarmNotify {
                rate: 10_000,
                alarms: 1_000,
                configs: vec!["plain".into(), "secure".into()],
                stores: vec!["sqlite".into(), "postgres".into(), "postgres-tls".into()],
            },
            Bench::Takeover { runs: 20, freeze: false },
            Bench::Spool { lines: 1_000_000 },
            Bench::Drain { lines: 500_000, batch_lines: 5_000 },
            Bench::EndToEnd { rate: 2_000, seconds: 20 },
            Bench::Memory { devices: vec![1, 5_000, 20_000, 50_000] },
            Bench::Recovery {
                rate: 5_000,
                devices: 20_000,
                warm_up: Duration::from_secs(10),
                outage: Duration::from_secs(60),
            },
            Bench::FireFirst { faults: 500, per_minute: 20 },
            Bench::Village {
                detectors: vec![6_000, 20_000, 50_000],
                speed: 60.0,
                seconds: 60,
                heartbeat: Duration::from_secs(3600),
                no_cameras: false,
            },
        ],
        one => vec![one],
    };
    for bench in benches {
        match bench {
            Bench::All => unreachable!("expanded above"),
            Bench::Ingest { messages, devices, rounds, with } => {
                ingest(messages, devices, rounds, &with).await
            }
            Bench::IngestOnly { messages, devices } => ingest_only(messages, devices),
            Bench::AlarmLatency { heartbeats, alarms } => alarm_latency(heartbeats, alarms).await,
            Bench::Engine { cases, events } => engine(cases, events),
            Bench::Ota { detectors } => ota(detectors),
            Bench::OtaMqtt { detectors, image_bytes } => ota_mqtt(detectors, image_bytes, None).await,
            Bench::OtaCoap { detectors, image_bytes, loss_every, poll_s } => {
                ota_mqtt(detectors, image_bytes, Some((loss_every, Duration::from_secs_f64(poll_s)))).await
            }
            // The PostgreSQL client is synchronous and must not run on an async worker thread.
            Bench::Outbox { pages, backlog } => {
                tokio::task::spawn_blocking(move || outbox_store(pages, backlog)).await.unwrap()
            }
            Bench::CaseStore { steps, backends } => {
                tokio::task::spawn_blocking(move || case_store(steps, &backends)).await.unwrap()
            }
            Bench::Sim { devices, speed, minutes, mode } => sim(devices, speed, minutes, &mode).await,
            Bench::AlarmNotify { rate, alarms, configs, stores } => {
                alarm_notify(rate, alarms, &configs, &stores).await
            }
            Bench::Takeover { runs, freeze } => takeover(runs, freeze).await,
            Bench::Spool { lines } => spool_append(lines),
            Bench::Drain { lines, batch_lines } => drain(lines, batch_lines).await,
            Bench::EndToEnd { rate, seconds } => end_to_end(rate, seconds).await,
            Bench::Memory { devices } => memory(&devices).await,
            Bench::Recovery { rate, devices, warm_up, outage } => {
                recovery(rate, devices, warm_up, outage).await
            }
            Bench::Village { detectors, speed, seconds, heartbeat, no_cameras } => {
                village(&detectors, speed, seconds, heartbeat, !no_cameras).await
            }
            Bench::FireFirst { faults, per_minute } => fire_first(faults, per_minute).await,
            Bench::Chaos { minutes, seed } => chaos(minutes, seed).await,
        }
    }
}

async fn chaos(minutes: u64, seed: u64) {
    let config = firegrid_tests::chaos::ChaosConfig::minutes(minutes, seed);
    println!(
        "chaos: {minutes} min, seed {seed}; page bound: first page within {} s of uninterrupted service after the fire",
        config.page_grace.as_secs()
    );
    let report = firegrid_tests::chaos::run(&config).await;
    println!("{report}");
    if !report.violations.is_empty() {
        std::process::exit(1);
    }
}

/// Ingest alone, without MQTT: tells the pipeline's cost from the MQTT client's.
fn ingest_only(messages: usize, devices: usize) {
    let unsigned: Vec<_> =
        (0..messages).map(|k| heartbeat(&device(k % devices), (k / devices) as u32)).collect();
    let signed: Vec<_> = (0..messages).map(|k| signed_heartbeat(k % devices, (k / devices) as u32)).collect();
    // Alternated three times, so that a noisy neighbour hits both alike.
    let mut rates = [Vec::new(), Vec::new()];
    for _ in 0..3 {
        rates[0].push(ingest_only_rate(&unsigned, devices, false));
        rates[1].push(ingest_only_rate(&signed, devices, true));
    }
    for r in &mut rates {
        r.sort_by(f64::total_cmp);
    }
    let (plain, verified) = (rates[0][1], rates[1][1]);
    println!(
        "| `Ingest::process` alone, batches of 100, no MQTT, unsigned | {plain:.0} msg/s (median of 3) |"
    );
    println!("| the same, every tag verified | {verified:.0} msg/s (median of 3) |");
    println!(
        "| verification's cost per message, from the two rates | {:.2} µs |",
        (1.0 / verified - 1.0 / plain) * 1e6
    );
    // The tag check alone, on the decoded messages, so the spool's noise is out of it.
    let village = VillageId::new("fuhai-1").unwrap();
    let decoded: Vec<(Uplink, firegrid_protocol::DeviceKey)> = signed
        .iter()
        .enumerate()
        .map(|(k, (_, p))| {
            (Uplink::receive(p, &firegrid_protocol::Limits::default()).unwrap(), device_key(k % devices))
        })
        .collect();
    let started = Instant::now();
    let good = decoded.iter().filter(|(m, key)| m.verify(&village, key).is_ok()).count();
    let per = started.elapsed().as_secs_f64() / decoded.len() as f64 * 1e6;
    assert_eq!(good, decoded.len());
    println!("| `Uplink::verify` alone (HMAC-SHA-256 over the signed fields) | {per:.2} µs per message |");
}

fn ingest_only_rate(stream: &[(String, Vec<u8>)], devices: usize, keyed: bool) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(Mutex::new(Spool::open(SpoolConfig::new(dir.path()), &[]).unwrap()));
    let metrics = Arc::new(firegrid_gateway::metrics::Metrics::new());
    let cfg = gateway_config(dir.path(), 0, vec![]);
    let ingest = firegrid_gateway::ingest::Ingest::new(
        spool,
        Arc::new(Notify::new()),
        cfg.admission_config(),
        cfg.protocol_limits(),
        metrics,
        now_ms(),
    )
    .unwrap();
    // The real configuration: every device in the registry, so each point carries its tags.
    let registry = dir.path().join("registry.csv");
    write_registry(&registry, devices);
    ingest.set_directory(Arc::new(firegrid_gateway::registry::Registry::load(&registry).unwrap()));
    if keyed {
        let path = bench_keys(dir.path(), devices);
        ingest.set_keys(Arc::new(firegrid_gateway::keys::KeyStore::load(&path).unwrap()));
    }
    let started = Instant::now();
    let mut accepted = 0;
    for chunk in stream.chunks(100) {
        let pairs: Vec<(&str, &[u8])> = chunk.iter().map(|(t, p)| (t.as_str(), p.as_slice())).collect();
        accepted += ingest.process(&pairs, now_ms()).unwrap().accepted.len();
    }
    let rate = stream.len() as f64 / started.elapsed().as_secs_f64();
    assert_eq!(accepted, stream.len(), "every message must be accepted");
    rate
}

/// Resident set size of `pid`, bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kb * 1024
}

/// A village of `n` devices: about 5 detectors a building, 30 buildings a grid, 8 grids a
/// community (Fuhai's proportions).
fn write_registry(path: &std::path::Path, n: usize) {
    use firegrid_gateway::registry::{DeviceKind, DeviceRecord, Registry};
    let records = (0..n).map(|i| {
        let building = i / 5;
        let grid = building / 30;
        DeviceRecord {
            id: device(i),
            kind: DeviceKind::SmokeDetector,
            model: "JTY-GD-1".into(),
            building: format!("b{building:05}"),
            address: format!("Lane {}, No. {}", building / 40, building % 40),
            lat: 25.0 + building as f64 * 1e-5,
            lon: 102.6,
            grid: format!("g{grid:04}"),
            community: format!("c{:03}", grid / 8),
            street: "fuhai".into(),
            village: VillageId::new("fuhai-1").unwrap(),
            district: None,
            heartbeat_ms: None,
            channels: None,
        }
    });
    Registry::from_records(records).unwrap().save(path).unwrap();
}

async fn memory(sizes: &[usize]) {
    for keyed in [false, true] {
        memory_of(sizes, keyed).await;
    }
}

/// [`memory`] without a key store (every heartbeat accepted unsigned) or, `keyed`, with one
/// holding every device's key and signed heartbeats (the real configuration).
async fn memory_of(sizes: &[usize], keyed: bool) {
    let what = if keyed { "signed heartbeat (key store)" } else { "unsigned heartbeat (no key store)" };
    println!("memory: firegrid (release) RSS after every registered device sent one {what}");
    let mut results = Vec::new();
    for &n in sizes {
        let broker = Mosquitto::start().unwrap();
        let registry_dir = tempfile::tempdir().unwrap();
        let csv = registry_dir.path().join("devices.csv");
        write_registry(&csv, n);
        let keys = if keyed {
            format!("keys = \"{}\"\n", bench_keys(registry_dir.path(), n).display())
        } else {
            String::new()
        };
        let port = broker.port();
        let csv_path = csv.display().to_string();
        let gateway = firegrid_tests::Firegrid::start(move |dir, http| {
            format!(
                "data_dir = \"{}\"\nhttp_listen = \"127.0.0.1:{http}\"\n[registry]\ncsv = \"{csv_path}\"\n{keys}[mqtt]\nport = {port}\nclient_id = \"mem\"\n",
                dir.join("data").display()
            )
        })
        .unwrap();
        let pid = gateway.pid().unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let loaded = rss(pid);
        let stream: Vec<_> =
            (0..n).map(|i| if keyed { signed_heartbeat(i, 0) } else { heartbeat(&device(i), 0) }).collect();
        publish_all(port, "fleet", &stream).await;
        let sample = r#"firegrid_messages_accepted_total{kind="heartbeat"}"#;
        while gateway.metric(sample).unwrap().unwrap_or(0.0) < n as f64 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Let liveness tick and the allocator settle.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let bytes = rss(pid);
        let mib = |b: u64| b as f64 / 1048576.0;
        println!(
            "| {n} devices | RSS {:.1} MiB (started, registry loaded: {:.1} MiB) |",
            mib(bytes),
            mib(loaded)
        );
        results.push((n, bytes, loaded));
    }
    for w in results.windows(2) {
        let ((n0, r0, l0), (n1, r1, l1)) = (w[0], w[1]);
        let per = |a: u64, b: u64| (b as f64 - a as f64) / (n1 - n0) as f64;
        println!(
            "| {n0} → {n1} devices | **{:.0} B per device** ({:.0} B of it before any message) |",
            per(r0, r1),
            per(l0, l1)
        );
    }
}

/// The alarm engine alone: `cases` open cases (one per building), then `events` signals that
/// merge into them (alarms rising and clearing, faults) with a tick every 100 events.
fn engine(cases: usize, events: usize) {
    use firegrid_alerting::{Condition, Config as EngineConfig, Engine, Input, Location, Signal};
    let location = |b: usize| Location {
        district: "Xishan".into(),
        street: "Fuhai".into(),
        community: format!("C{}", b % 12),
        grid: format!("G{}", b % 40),
        building: format!("B{b}"),
    };
    let signal = |dev: usize, b: usize, condition, active| {
        Input::Signal(Signal {
            device: format!("sd-{dev}"),
            location: location(b),
            condition,
            active,
            unplaced: None,
        })
    };
    // Spread detection off: 10,000 fires in 40 grids would all be one spread.
    let mut engine = Engine::new(EngineConfig { spread_buildings: usize::MAX, ..EngineConfig::default() });
    let mut now = 1_800_000_000_000u64;
    // Open cases, acknowledged by the street desk: the state of a busy street, where cases
    // wait in handling. (Unacknowledged cases would spend the run in reminders instead.)
    let desk = firegrid_alerting::Officer { id: "street".into(), scope: "street:Fuhai".parse().unwrap() };
    for b in 0..cases {
        engine.handle(now, &signal(b, b, Condition::Smoke, true)).unwrap();
        let ack = firegrid_alerting::Command::Acknowledge { case: firegrid_alerting::CaseId(b as u64 + 1) };
        engine.handle(now, &Input::Officer { officer: desk.clone(), command: ack }).unwrap();
    }
    let inputs: Vec<Input> = (0..events)
        .map(|k| {
            let b = k % cases;
            match (k / cases) % 4 {
                0 => signal(b, b, Condition::Smoke, false),
                1 => signal(b, b, Condition::Smoke, true),
                // A second detector in an acknowledged building confirms a fire and raises it.
                2 => signal(cases + b, b, Condition::Smoke, true),
                _ => signal(cases + b, b, Condition::Smoke, false),
            }
        })
        .collect();
    let started = Instant::now();
    let mut actions = 0usize;
    for (k, input) in inputs.iter().enumerate() {
        now += 10;
        actions += engine.handle(now, input).unwrap().len();
        if k % 100 == 0 {
            actions += engine.tick(now).len();
        }
    }
    let s = started.elapsed().as_secs_f64();
    println!(
        "| alarm engine, {} cases open, {events} events + ticks | {:.0} events/s | {actions} actions |",
        engine.open_cases(),
        events as f64 / s
    );
}

fn ota(detectors: usize) {
    use firegrid_gateway::firmware::rollout::{DeviceState, Plan, Rollout};
    use firegrid_gateway::firmware::signing;
    use firegrid_tests::ota::{Detector, new_image, vendor};
    let image = new_image();
    let signed = signing::sign(&image, "1.5.0", &vendor()).unwrap();
    let ids: Vec<String> = (0..detectors).map(|i| format!("sd-{i:05}")).collect();
    let mut fleet: Vec<Detector> = (0..detectors).map(|_| Detector::new(false)).collect();
    let mut rollout = Rollout::new(image.clone(), &signed, ids.clone(), Plan::default()).unwrap();
    let index: std::collections::HashMap<&str, usize> =
        ids.iter().enumerate().map(|(i, d)| (d.as_str(), i)).collect();
    let started = Instant::now();
    let (mut commands, mut chunk_bytes, mut now_ms) = (0usize, 0usize, 0u64);
    while !rollout.is_done() {
        now_ms += 1_000;
        let mut queue = rollout.tick(now_ms);
        while let Some(send) = queue.pop() {
            commands += 1;
            if let firegrid_protocol::DownlinkBody::FwChunk(c) = &send.body {
                chunk_bytes += c.data.0.len();
            }
            let i = index[send.device.as_str()];
            for status in fleet[i].receive(send.body, now_ms) {
                queue.extend(rollout.on_status(&send.device, &status, now_ms));
            }
        }
    }
    let s = started.elapsed().as_secs_f64();
    let booted = rollout.counts().get(&DeviceState::Booted).copied().unwrap_or(0);
    assert_eq!(booted, detectors, "every detector updated");
    println!(
        "| firmware rollout, {detectors} detectors × {} B image, {} waves, in process | {s:.2} s ({:.0} detectors/s) | {commands} commands, {chunk_bytes} B of chunks |",
        image.len(),
        rollout.waves().1,
        detectors as f64 / s
    );
}

/// A rollout through the real gateway: over MQTT, or with `coap` (loss pattern, wake-up
/// interval) over its CoAP endpoint.
async fn ota_mqtt(detectors: usize, image_bytes: usize, coap: Option<(u64, Duration)>) {
    use firegrid_gateway::firmware::signing;
    use firegrid_tests::ota::vendor;
    let new_image = move || firegrid_tests::ota::image(image_bytes);
    use firegrid_tests::ota_mqtt::{Fleet, Login, Member};
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (csv, keys, batch) =
        (dir.path().join("devices.csv"), dir.path().join("keys.toml"), dir.path().join("batch.csv"));
    write_registry(&csv, detectors);
    let exe = firegrid_tests::firegrid_binary().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&exe).args(args).output().unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "firegrid {args:?}: {text}");
        text
    };
    let (c, k, b) = (csv.to_str().unwrap(), keys.to_str().unwrap(), batch.to_str().unwrap());
    run(&["devices", "provision", "--registry", c, "--keys", k, "--out", b]);
    let members: Vec<Member> = std::fs::read_to_string(&batch)
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| {
            let cols: Vec<_> = line.split(',').collect();
            Member::new(cols[1], firegrid_protocol::DeviceKey::from_hex(cols[2]).unwrap())
        })
        .collect();
    assert_eq!(members.len(), detectors);
    let vendor_public: String =
        vendor().verifying_key().as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let port = broker.port();
    let seen = Arc::new(Mutex::new(None::<std::path::PathBuf>));
    let config_path = seen.clone();
    let (csv_path, keys_path) = (c.to_owned(), k.to_owned());
    let coap_port = firegrid_tests::ota_coap::free_udp_port();
    let coap_section = match coap {
        Some(_) => format!("[coap]\nlisten = \"127.0.0.1:{coap_port}\"\n"),
        None => String::new(),
    };
    let gateway = firegrid_tests::Firegrid::start(move |d, http| {
        *config_path.lock().unwrap() = Some(d.join("firegrid.toml"));
        format!(
            "data_dir = \"{}\"\nhttp_listen = \"127.0.0.1:{http}\"\n[registry]\ncsv = \"{csv_path}\"\nkeys = \"{keys_path}\"\n\
             [mqtt]\nport = {port}\nclient_id = \"ota\"\n{coap_section}[firmware]\nvendor_public_key = \"{vendor_public}\"\n",
            d.join("data").display()
        )
    })
    .unwrap();
    let config = seen.lock().unwrap().clone().unwrap();
    let image = dir.path().join("detector-1.5.0.bin");
    std::fs::write(&image, new_image()).unwrap();
    signing::sign(&new_image(), "1.5.0", &vendor()).unwrap().save(&image).unwrap();
    // Over CoAP: straight to the gateway, or through a relay that loses datagrams.
    let coap_addr = std::net::SocketAddr::from(([127, 0, 0, 1], coap_port));
    let link = coap.filter(|(every, _)| *every > 0).map(|(every, _)| LossyLink::start(coap_addr, every));
    let target = link.as_ref().map_or(coap_addr, LossyLink::addr);
    let fleet = tokio::task::spawn_blocking(move || match coap {
        None => Either::Mqtt(Fleet::start("fuhai-1", members, port, Login::Shared, new_image().len())),
        Some((_, poll)) => {
            let timing = CoapTiming { ack_timeout: Duration::from_secs(2), poll };
            Either::Coap(CoapFleet::start("fuhai-1", members, target, timing, new_image().len()))
        }
    })
    .await
    .unwrap();
    let announced = r#"firegrid_messages_accepted_total{kind="fw_status"}"#;
    while gateway.metric(announced).unwrap().unwrap_or(0.0) < detectors as f64 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let overflows_before = udp_receive_buffer_errors();
    let started = Instant::now();
    run(&["firmware", "publish", image.to_str().unwrap(), "--config", config.to_str().unwrap(), "--all"]);
    let booted = r#"firegrid_firmware_devices{state="booted"}"#;
    let deadline = started + Duration::from_secs(1_800);
    let mut shown = Instant::now();
    while gateway.metric(booted).unwrap().unwrap_or(0.0) < detectors as f64 {
        assert!(Instant::now() < deadline, "not done in 30 minutes\n{}", gateway.log_tail(20));
        tokio::time::sleep(Duration::from_millis(200)).await;
        if std::env::var_os("OTA_PROGRESS").is_some() && shown.elapsed() > Duration::from_secs(3) {
            shown = Instant::now();
            let text = gateway.metrics().unwrap();
            let states: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("firegrid_firmware_devices{") && !l.ends_with(" 0"))
                .collect();
            println!("{:>5.1} s {states:?}", started.elapsed().as_secs_f64());
        }
    }
    let s = started.elapsed().as_secs_f64();
    let downlinks = match &fleet {
        Either::Mqtt(f) => f.commands(),
        Either::Coap(f) => f.counts.commands.load(std::sync::atomic::Ordering::Relaxed),
    };
    let metrics = gateway.metrics().unwrap();
    let lost: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("firegrid_messages_rejected_total")
                || l.starts_with("firegrid_messages_duplicate_total")
        })
        .collect();
    println!("ota: gateway rejections and duplicates: {lost:?}");
    let count = |family: &str| -> f64 {
        ["fw_offer", "fw_chunk", "fw_commit", "fw_confirm"]
            .iter()
            .map(|k| gateway.metric(&format!(r#"{family}{{kind="{k}"}}"#)).unwrap().unwrap_or(0.0))
            .sum()
    };
    let commands = count("firegrid_firmware_commands_total");
    let resends = count("firegrid_firmware_resends_total");
    let chunks = image_bytes.div_ceil(firegrid_protocol::MAX_CHUNK);
    let coap_line = match &fleet {
        Either::Mqtt(_) => String::new(),
        Either::Coap(f) => {
            let c = &f.counts;
            let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            format!(
                ", {} CoAP requests ({} retransmitted, {} refused, {} given up), {} datagrams lost by the relay, {} retransmissions answered from the exchange table, {} datagrams the kernel dropped for a full receive buffer (all sockets)",
                load(&c.sent),
                load(&c.retransmitted),
                load(&c.refused),
                load(&c.abandoned),
                link.as_ref().map_or(0, |l| l.dropped.load(std::sync::atomic::Ordering::Relaxed)),
                gateway.metric("firegrid_coap_retransmissions_total").unwrap().unwrap_or(0.0),
                udp_receive_buffer_errors().saturating_sub(overflows_before),
            )
        }
    };
    let outcomes = tokio::task::spawn_blocking(move || match fleet {
        Either::Mqtt(f) => f.stop(),
        Either::Coap(f) => f.stop(),
    })
    .await
    .unwrap();
    let updated = outcomes.iter().filter(|o| o.active == new_image() && o.boot == 2).count();
    assert_eq!(updated, detectors, "every detector booted the new image");
    let path = match coap {
        None => "through firegrid and Mosquitto".to_owned(),
        Some((0, _)) => "over CoAP to firegrid".to_owned(),
        Some((every, _)) => format!("over CoAP to firegrid, every {every}th datagram lost each way"),
    };
    println!(
        "| firmware rollout, {detectors} detectors × {} B image ({chunks} chunks), {path} | {s:.1} s ({:.0} detectors/s) | {commands} firmware commands (minimum {}), {resends} resends, {downlinks} commands received by the detectors{coap_line} |",
        image_bytes,
        detectors as f64 / s,
        detectors * (chunks + 3)
    );
}

/// The kernel's count of UDP datagrams dropped because a socket's receive buffer was full
/// (`Udp: RcvbufErrors` in `/proc/net/snmp`, all sockets of the machine); 0 where unreadable.
fn udp_receive_buffer_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else { return 0 };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// The fleet of one transport or the other.
enum Either {
    Mqtt(firegrid_tests::ota_mqtt::Fleet),
    Coap(CoapFleet),
}

use firegrid_tests::ota_coap::{Fleet as CoapFleet, LossyLink, Timing as CoapTiming};

/// A webhook receiver on loopback (axum): every POST to `/hook` is passed on with the time it
/// arrived. Returns the port and the stream of (arrival, JSON body).
async fn webhook_receiver() -> (u16, mpsc::UnboundedReceiver<(Instant, serde_json::Value)>) {
    use axum::routing::post;
    let (tx, received) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: axum::Json<serde_json::Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((Instant::now(), body.0));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (hook, received)
}

/// The alarm loop's part of a gateway configuration (TOML): every desk routed to one webhook
/// channel pointing at [`webhook_receiver`] on `hook`, and the duty-officer directory if any.
fn alarm_toml(hook: u16, officers: Option<&std::path::Path>) -> String {
    let officers = officers.map_or(String::new(), |p| format!("officers = \"{}\"\n", p.display()));
    format!(
        "[alerting]\n{officers}routes = {{ \"*\" = [\"hook\"] }}\n[notify.channels.hook]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{hook}/hook\"\n"
    )
}

/// Alarm → webhook while heartbeats flow, in each configuration of `configs` one after the
/// other, each on a broker of its own.
async fn alarm_notify(rate: usize, alarms: usize, configs: &[String], stores: &[String]) {
    if let Some(other) = stores.iter().find(|s| !["sqlite", "postgres", "postgres-tls"].contains(&s.as_str()))
    {
        panic!("unknown case store {other:?} (sqlite, postgres, postgres-tls)");
    }
    let postgres = stores.iter().any(|s| s == "postgres").then(|| firegrid_tests::Postgres::start().unwrap());
    let certs = tempfile::tempdir().unwrap();
    let postgres_tls = stores.iter().any(|s| s == "postgres-tls").then(|| postgres_over_tls(certs.path()));
    let mut rows = Vec::new();
    let mut run = 0;
    for config in configs {
        let secure = match config.as_str() {
            "plain" => false,
            "secure" => true,
            other => panic!("unknown configuration {other:?} (plain, secure)"),
        };
        for store in stores {
            eprintln!(
                "alarm-notify: {config}, {store} case store, {alarms} alarms under {rate} heartbeats/s ..."
            );
            run += 1;
            let database = match store.as_str() {
                "postgres" => {
                    let server = postgres.as_ref().expect("started above");
                    let conninfo = server.create_database(&format!("alarm_notify_{run}")).unwrap();
                    Some((conninfo, server.password(), None))
                }
                "postgres-tls" => {
                    let (server, ca) = postgres_tls.as_ref().expect("started above");
                    let conninfo = server.create_database(&format!("alarm_notify_{run}")).unwrap();
                    Some((conninfo, server.password(), Some(ca.clone())))
                }
                _ => None,
            };
            let (mut latencies, achieved) = alarm_notify_run(rate, alarms, secure, database).await;
            latencies.sort_by(f64::total_cmp);
            rows.push(format!(
                "| {config} | {store} | {alarms} | {achieved:.0}/s | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99),
                percentile(&latencies, 0.999),
                latencies.last().unwrap()
            ));
        }
    }
    println!(
        "| configuration | case store | alarms | heartbeats | p50 | p99 | p99.9 | max |\n|---|---|---:|---:|---:|---:|---:|---:|"
    );
    for row in rows {
        println!("{row}");
    }
}

/// A bench device's uplink as the device would send it: signed with its key when `signed`.
fn device_uplink(i: usize, seq: u32, body: UplinkBody, signed: bool) -> (String, Vec<u8>) {
    let message = uplink(&device(i), seq, body);
    if signed { self::signed(i, message) } else { message }
}

/// The secure side of `alarm-notify`: certificates, keys, the broker's generated accounts and
/// ACL, and Mosquitto listening for MQTT over TLS with client certificates required.
struct SecureBroker {
    broker: Mosquitto,
    keys: std::path::PathBuf,
    tls: firegrid_gateway::tls::ClientTls,
    gateway_password: String,
    /// A platform account (a carrier platform or bridge publishing for many devices), with
    /// its client certificate: the heartbeat and alarm publishers log in with it.
    publisher_tls: firegrid_gateway::tls::ClientTls,
}

const BENCH_PLATFORM: &str = "bench-platform";
const BENCH_PLATFORM_PASSWORD: &str = "bench-platform-password-0123456789";

fn secure_broker(dir: &std::path::Path, registry: &std::path::Path, devices: usize) -> SecureBroker {
    use firegrid_gateway::tls::{ClientTls, certs};
    let certs_dir = dir.join("certs");
    certs::make(&certs::Request {
        dir: certs_dir.clone(),
        hosts: vec![],
        clients: vec!["gateway".into(), BENCH_PLATFORM.into()],
        days: 30,
    })
    .unwrap();
    let keys = bench_keys(dir, devices);
    let broker_dir = dir.join("broker");
    let registry = firegrid_gateway::registry::Registry::load(registry).unwrap();
    let store = firegrid_gateway::keys::KeyStore::load(&keys).unwrap();
    firegrid_gateway::broker::mosquitto::generate(&registry, &store, &broker_dir).unwrap();
    // The platform account: its password with Mosquitto's own tool, its ACL beside the devices'.
    let passwd = broker_dir.join("passwd");
    let status = std::process::Command::new("mosquitto_passwd")
        .args(["-b", passwd.to_str().unwrap(), BENCH_PLATFORM, BENCH_PLATFORM_PASSWORD])
        .status()
        .expect("mosquitto_passwd runs");
    assert!(status.success(), "mosquitto_passwd failed");
    let acl = broker_dir.join("acl");
    let mut text = std::fs::read_to_string(&acl).unwrap();
    text.push_str(&format!("user {BENCH_PLATFORM}\ntopic write fg/v1/+/+/up/#\n"));
    std::fs::write(&acl, text).unwrap();
    let gateway_password =
        std::fs::read_to_string(broker_dir.join("gateway.password")).unwrap().trim().to_owned();
    let ca = certs_dir.join("ca.pem");
    let broker = Mosquitto::start_tls(
        &passwd,
        &acl,
        firegrid_tests::mosquitto::MosquittoTls {
            ca: ca.clone(),
            cert: certs_dir.join("server.pem"),
            key: certs_dir.join("server.key"),
            require_certificate: true,
        },
    )
    .unwrap();
    let client = |name: &str| ClientTls {
        ca: ca.clone(),
        client_cert: Some(certs_dir.join(format!("client-{name}.pem"))),
        client_key: Some(certs_dir.join(format!("client-{name}.key"))),
    };
    SecureBroker {
        broker,
        keys,
        tls: client("gateway"),
        gateway_password,
        publisher_tls: client(BENCH_PLATFORM),
    }
}

/// One configuration of `alarm-notify`: the gateway in-process with a registry, one webhook
/// channel for every desk, a receiver on loopback. Returns the latencies (ms) and the
/// heartbeat rate achieved.
async fn alarm_notify_run(
    rate: usize,
    alarms: usize,
    secure: bool,
    postgres: Option<(String, &str, Option<std::path::PathBuf>)>,
) -> (Vec<f64>, f64) {
    let dir = tempfile::tempdir().unwrap();
    let heartbeat_devices = rate.max(1);
    let mut csv = String::from(
        "device_id,kind,model,building_id,building_address,lat,lon,grid,community,street,village\n",
    );
    for k in 0..heartbeat_devices + alarms {
        // Heartbeat devices share 1,000 buildings; each alarm device has a building of its own.
        let building = if k < heartbeat_devices { format!("H{}", k % 1000) } else { format!("A{k}") };
        csv.push_str(&format!(
            "{},smoke_detector,m,{building},addr,25.0,102.7,G{},C1,Fuhai,fuhai-1\n",
            device(k),
            k % 40
        ));
    }
    let registry = dir.path().join("registry.csv");
    std::fs::write(&registry, csv).unwrap();
    let (plain_broker, security) = match secure {
        true => (None, Some(secure_broker(dir.path(), &registry, heartbeat_devices + alarms))),
        false => (Some(Mosquitto::start().unwrap()), None),
    };
    let broker = match (&plain_broker, &security) {
        (Some(plain), _) => plain.port(),
        (None, Some(secured)) => secured.broker.tls_port().unwrap(),
        (None, None) => unreachable!("one of the two is started above"),
    };

    let (hook, mut received) = webhook_receiver().await;
    let mut cfg = gateway_config(dir.path(), broker, vec![]);
    cfg.registry.csv = Some(registry);
    if let Some(secured) = &security {
        cfg.registry.keys = Some(secured.keys.clone());
        let mqtt = cfg.mqtt.as_mut().unwrap();
        mqtt.username = Some(firegrid_gateway::broker::GATEWAY_USER.into());
        mqtt.password = Some(secured.gateway_password.clone());
        mqtt.tls = Some(secured.tls.clone());
    }
    let extra: Config = toml::from_str(&alarm_toml(hook, None)).unwrap();
    cfg.alerting = extra.alerting;
    cfg.notify = extra.notify;
    if let Some((conninfo, password, ca)) = postgres {
        let password_file = dir.path().join("postgres-password");
        std::fs::write(&password_file, format!("{password}\n")).unwrap();
        cfg.alerting.store.postgres = Some(conninfo);
        cfg.alerting.store.password_file = Some(password_file);
        cfg.alerting.store.tls =
            ca.map(|ca| firegrid_gateway::tls::ClientTls { ca, client_cert: None, client_key: None });
    }
    let gateway = Gateway::start(cfg, None).await.unwrap();

    let options = |id: &str| {
        let mut opts = MqttOptions::new(id, "127.0.0.1", broker);
        opts.set_keep_alive(Duration::from_secs(30));
        if let Some(secured) = &security {
            opts.set_credentials(BENCH_PLATFORM, BENCH_PLATFORM_PASSWORD);
            let config = secured.publisher_tls.client_config().unwrap();
            opts.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(
                config,
            )));
        }
        opts
    };
    let signed = secure;
    let stop = CancellationToken::new();
    let flow = {
        let stop = stop.clone();
        let publisher = Publisher::start_with(options("heartbeats"), 1000);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut k = 0usize;
            let started = Instant::now();
            while !stop.is_cancelled() {
                tick.tick().await;
                let due = (started.elapsed().as_secs_f64() * rate as f64) as usize;
                while k < due {
                    let i = k % heartbeat_devices;
                    let hb = firegrid_tests::uplinks::heartbeat_body();
                    publisher.send(device_uplink(i, (k / heartbeat_devices) as u32, hb, signed)).await;
                    k += 1;
                }
            }
            k as f64 / started.elapsed().as_secs_f64()
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let alarmer = Publisher::start_with(options("alarms"), 100);
    let mut latencies = Vec::new();
    let mut progress = Progress::new();
    for a in 0..alarms {
        let body = UplinkBody::State(StateChange { state: DetectorState::Alarm, obscuration_db_m: 0.4 });
        let message = device_uplink(heartbeat_devices + a, 0, body, signed);
        let sent = Instant::now();
        alarmer.send(message).await;
        let (at, _) = tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await
            .expect("no notification within 10 s")
            .unwrap();
        latencies.push(at.duration_since(sent).as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(100)).await;
        while received.try_recv().is_ok() {}
        progress.show(|| format!("alarm-notify: {}/{alarms} alarms", a + 1));
    }
    stop.cancel();
    let achieved = flow.await.unwrap();
    let counts = gateway.shared.metrics.counts();
    assert!(
        counts.rejected.is_empty(),
        "the gateway rejected messages of the benchmark: {:?}",
        counts.rejected
    );
    if secure {
        let unsigned = gateway.shared.metrics.encode();
        assert!(
            !unsigned.contains("firegrid_unauthenticated_accepted_total{"),
            "unsigned messages were accepted"
        );
    }
    gateway.stop().await;
    drop((security, plain_broker));
    (latencies, achieved)
}

/// Alarm-sized steps (one input, one transition, one case upsert) committed to the SQLite
/// case store with `synchronous = FULL`, one transaction per batch.
fn case_store(steps: usize, backends: &[String]) {
    use firegrid_cases::store::{CaseRow, CaseStore, Step, TransitionRow};
    let input = r#"{"input":"signal","device":"sd-000001","active":true}"#;
    let case = r#"{"id":1,"stage":"warning","severity":"pre_alarm","location":{"building":"b1"}}"#;
    let transitions = [TransitionRow { case_id: 1, at_ms: 0, kind: "opened", json: case }];
    let cases = [CaseRow {
        case_id: 1,
        opened_ms: 0,
        closed_ms: None,
        stage: "warning",
        severity: "pre_alarm",
        street: "s",
        community: "c",
        grid: "g",
        building: "b1",
        json: case,
    }];
    let dir = tempfile::tempdir().unwrap();
    let postgres =
        backends.iter().any(|b| b == "postgres").then(|| firegrid_tests::Postgres::start().unwrap());
    let postgres_tls = backends.iter().any(|b| b == "postgres-tls").then(|| postgres_over_tls(dir.path()));
    println!(
        "| `firegrid-bench case-store` | steps/s | commits/s | commit p50 | commit p99 |\n|---|---:|---:|---:|---:|"
    );
    for batch in [1usize, 100] {
        for backend in backends {
            let (mut store, label) = match (backend.as_str(), &postgres) {
                ("postgres-tls", _) => {
                    let (server, ca) = postgres_tls.as_ref().expect("started above");
                    let conninfo = server.create_database(&format!("cases_tls_{batch}")).unwrap();
                    let tls = firegrid_gateway::tls::ClientTls {
                        ca: ca.clone(),
                        client_cert: None,
                        client_key: None,
                    };
                    let options = firegrid_cases::store::PostgresOptions {
                        password: Some(server.password().to_owned()),
                        tls: Some(tls.client_config().unwrap()),
                        ..Default::default()
                    };
                    (
                        CaseStore::open_postgres_with(&conninfo, &options).unwrap(),
                        "PostgreSQL on loopback over TLS, synchronous_commit=on",
                    )
                }
                ("sqlite", _) => (
                    CaseStore::open(dir.path().join(format!("cases-{batch}.sqlite"))).unwrap(),
                    "SQLite, synchronous=FULL",
                ),
                ("postgres", Some(server)) => {
                    let conninfo = server.create_database(&format!("cases_{batch}")).unwrap();
                    (
                        CaseStore::open_postgres(&conninfo, Some(server.password())).unwrap(),
                        "PostgreSQL on loopback, synchronous_commit=on",
                    )
                }
                (other, _) => panic!("unknown backend {other:?}: sqlite, postgres or postgres-tls"),
            };
            let step = Step {
                at_ms: 0,
                kind: "signal",
                audit: None,
                input_json: input,
                transitions: &transitions,
                cases: &cases,
            };
            let batch_steps = vec![step; batch];
            let mut latencies = Vec::with_capacity(steps / batch);
            let started = Instant::now();
            for _ in 0..steps / batch {
                let commit = Instant::now();
                store.commit(&batch_steps).unwrap();
                latencies.push(commit.elapsed().as_secs_f64() * 1e3);
            }
            let s = started.elapsed().as_secs_f64();
            latencies.sort_by(f64::total_cmp);
            println!(
                "| {label}, batches of {batch} | {:.0} | {:.0} | {:.2} ms | {:.2} ms |",
                steps as f64 / s,
                (steps / batch) as f64 / s,
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99),
            );
        }
    }
}

fn outbox_store(pages: usize, backlog: usize) {
    use firegrid_notify::Message;
    use firegrid_notify::outbox::{DeliveryKey, Store};
    let message = |notification_id: u64| Message {
        notification_id,
        case_id: notification_id / 4 + 1,
        severity: "fire".to_owned(),
        level: "grid".to_owned(),
        desk: "grid:G1".to_owned(),
        title: "3号楼2单元 烟感火警".to_owned(),
        text: "502室烟雾浓度 0.25 dB/m，请立即核查。".to_owned(),
        url: Some("https://console.example/cases/42".to_owned()),
        at_ms: 1_700_000_000_000,
        reason: "opened".to_owned(),
        local_at: None,
    };
    let targets = ["wecom".to_owned()];
    let dir = tempfile::tempdir().unwrap();
    let (server, ca) = postgres_over_tls(dir.path());
    let options = |server: &firegrid_tests::Postgres| firegrid_cases::store::PostgresOptions {
        password: Some(server.password().to_owned()),
        tls: Some(
            firegrid_gateway::tls::ClientTls { ca: ca.clone(), client_cert: None, client_key: None }
                .client_config()
                .unwrap(),
        ),
        ..Default::default()
    };
    println!(
        "| `firegrid-bench outbox` ({pages} pages) | enqueue p50 | enqueue p99 | delivered p50 | delivered p99 |\n|---|---:|---:|---:|---:|"
    );
    let conninfo = server.create_database("outbox_pages").unwrap();
    let case_store =
        firegrid_cases::store::CaseStore::open_postgres_with(&conninfo, &options(&server)).unwrap();
    let stores = [
        ("SQLite file, synchronous=FULL", Store::open(&dir.path().join("outbox.sqlite")).unwrap()),
        (
            "shared in PostgreSQL over TLS (loopback), synchronous_commit=on",
            Store::open_shared(case_store.shared_outbox().unwrap()).unwrap(),
        ),
    ];
    for (label, mut store) in stores {
        let (mut enqueue, mut delivered) = (Vec::with_capacity(pages), Vec::with_capacity(pages));
        for id in 1..=pages as u64 {
            let at = Instant::now();
            store.enqueue(&message(id), &targets, 1_000 + id).unwrap();
            enqueue.push(at.elapsed().as_secs_f64() * 1e3);
            let at = Instant::now();
            store
                .delivered(&DeliveryKey { notification_id: id, target: targets[0].clone() }, 1, 2_000 + id)
                .unwrap();
            delivered.push(at.elapsed().as_secs_f64() * 1e3);
        }
        enqueue.sort_by(f64::total_cmp);
        delivered.sort_by(f64::total_cmp);
        println!(
            "| {label} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            percentile(&enqueue, 0.5),
            percentile(&enqueue, 0.99),
            percentile(&delivered, 0.5),
            percentile(&delivered, 0.99),
        );
    }
    drop(case_store);

    // A takeover: the table holds `backlog` rows (delivered, as retention keeps them, and one
    // in a hundred pending); the next holder of the store loads them into its mirror.
    let conninfo = server.create_database("outbox_backlog").unwrap();
    let first = firegrid_cases::store::CaseStore::open_postgres_with(&conninfo, &options(&server)).unwrap();
    let mut filling = Store::open_shared(first.shared_outbox().unwrap()).unwrap();
    let mut memory = Store::open_memory().unwrap();
    for id in 1..=backlog as u64 {
        memory.enqueue(&message(id), &targets, 1_000 + id).unwrap();
        if id % 100 != 0 {
            memory
                .delivered(&DeliveryKey { notification_id: id, target: targets[0].clone() }, 1, 2_000 + id)
                .unwrap();
        }
    }
    let filled = Instant::now();
    filling.import_rows(&memory.export_rows().unwrap()).unwrap();
    let fill_s = filled.elapsed().as_secs_f64();
    drop((filling, first));
    let mut loads = Vec::new();
    for _ in 0..5 {
        let next =
            firegrid_cases::store::CaseStore::open_postgres_with(&conninfo, &options(&server)).unwrap();
        let at = Instant::now();
        let mirror = Store::open_shared(next.shared_outbox().unwrap()).unwrap();
        loads.push(at.elapsed().as_secs_f64());
        assert_eq!(mirror.pending_count().unwrap(), backlog as u64 / 100);
        drop((mirror, next));
    }
    let mut seconds = loads;
    seconds.sort_by(f64::total_cmp);
    println!(
        "\nBacklog of {backlog} rows: written back in one upsert in {fill_s:.2} s; loaded into the next holder's mirror in {:.2} s median of 5 (max {:.2} s)",
        percentile(&seconds, 0.5),
        seconds[seconds.len() - 1],
    );
}

/// A PostgreSQL server that takes TCP connections only over TLS, its certificates made in
/// `dir`; returns it and the CA to check it against.
fn postgres_over_tls(dir: &std::path::Path) -> (firegrid_tests::Postgres, std::path::PathBuf) {
    let (files, ca) = firegrid_tests::PostgresTls::make(&dir.join("postgres-certs")).unwrap();
    (firegrid_tests::Postgres::start_tls(&files).unwrap(), ca)
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    stat_cpu_seconds("/proc/self/stat").unwrap()
}

/// CPU seconds (user + system) from a `/proc/.../stat` file of a process or a thread; `None`
/// when it is gone.
fn stat_cpu_seconds(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().ok()? + fields[12].parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

async fn sim(devices: usize, speed: f64, minutes: u64, mode: &str) {
    use firegrid_sim::{Fleet, Mode, RunConfig, Scenario, Village, VillageParams};
    let broker = Mosquitto::start().unwrap();
    // The gateway's part: acknowledge every uplink with a down/ack, as the gateway does.
    firegrid_tests::ack_uplinks(broker.port(), |_, _, _| {});
    tokio::time::sleep(Duration::from_millis(300)).await;
    let params = VillageParams {
        detectors: devices,
        buildings: (devices / 5).max(1),
        camera_channels: 0,
        water_sensors: 0,
        heartbeat: Duration::from_secs(60),
        ..VillageParams::default()
    };
    let village = Village::generate(&params, 1).unwrap();
    let duration = Duration::from_secs(minutes * 60);
    let cpu0 = cpu_seconds();
    let mut fleet = Fleet::new(village, &Scenario::default(), duration, 1, Encoding::Compact).unwrap();
    let mode = match mode {
        "direct" => Mode::Direct,
        _ => Mode::Platform { connections: 16 },
    };
    let cfg = RunConfig {
        host: "127.0.0.1".into(),
        port: broker.port(),
        mode,
        speed,
        duration,
        report_every: None,
        camera_state: None,
        credentials: None,
    };
    let report = firegrid_sim::run(&mut fleet, &cfg, None, Duration::from_secs(30)).await;
    let cpu = cpu_seconds() - cpu0;
    let rss = rss(std::process::id()) as f64 / 1e6;
    let wall = report.wall.as_secs_f64();
    println!(
        "| simulator: {devices} detectors, {mode:?}, ×{speed} for {minutes} simulated min | {:.0} msg/s sent ({:.0} first sends + retransmissions) | CPU {:.2} cores | RSS {rss:.0} MB (with the acker) | {} left in outboxes |",
        report.sent as f64 / wall,
        report.sent,
        cpu / wall,
        report.outbox_total
    );
}

/// Prints a progress line at most once a second.
struct Progress(Instant);

impl Progress {
    fn new() -> Progress {
        Progress(Instant::now() - Duration::from_secs(1))
    }

    fn show(&mut self, line: impl FnOnce() -> String) {
        if self.0.elapsed() >= Duration::from_secs(1) {
            self.0 = Instant::now();
            println!("  {}", line());
        }
    }
}

/// Seconds left until `end`, rounded up, for progress lines.
fn left(end: Instant) -> u64 {
    end.saturating_duration_since(Instant::now()).as_secs_f64().ceil() as u64
}

/// A publisher of heartbeats at a steady rate, from the first device to the last and round
/// again, until stopped.
struct SteadyHeartbeats {
    /// Handed to the MQTT client.
    published: Arc<AtomicU64>,
    publisher: Arc<Publisher>,
    stop: CancellationToken,
}

impl SteadyHeartbeats {
    /// Starts publishing `rate` heartbeats a second from `devices` devices, paced every 10 ms.
    /// `send` waits when the client's queue is full, so none is dropped on this side.
    fn start(port: u16, rate: usize, devices: usize) -> SteadyHeartbeats {
        let publisher = Arc::new(Publisher::start(port, "steady-heartbeats", 1000));
        let published = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        {
            let (publisher, published, stop) = (publisher.clone(), published.clone(), stop.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                let mut k = 0usize;
                while !stop.is_cancelled() {
                    tick.tick().await;
                    let due = (started.elapsed().as_secs_f64() * rate as f64) as usize;
                    while k < due {
                        publisher.send(heartbeat(&device(k % devices), (k / devices) as u32)).await;
                        published.fetch_add(1, Ordering::Relaxed);
                        k += 1;
                    }
                }
            });
        }
        SteadyHeartbeats { published, publisher, stop }
    }

    fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Stops publishing and waits until the broker acknowledged everything; returns the count.
    async fn finish(self) -> u64 {
        self.stop.cancel();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let published = self.published();
        self.publisher.wait_acked(published, Duration::from_secs(600)).await;
        published
    }
}

/// A database outage (60 s by default) under a steady heartbeat flow, into InfluxDB 1.x (the
/// street database the dashboards read; VictoriaMetrics' drain is the `drain` benchmark).
async fn recovery(rate: usize, devices: usize, warm_up: Duration, outage: Duration) {
    use firegrid_gateway::metrics::DestinationLabel;
    let broker = Mosquitto::start().unwrap();
    let mut db = InfluxDb1::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = street_database(&db);
    let max_backoff = dest.max_backoff;
    let gateway = Gateway::start(gateway_config(dir.path(), broker.port(), vec![dest]), None).await.unwrap();
    println!(
        "recovery: {rate} heartbeats/s from {devices} devices through Mosquitto and the gateway into InfluxDB 1.x \
         (destination defaults: batches of 5,000 lines, flush 200 ms, retry backoff up to {} s); {} s steady, \
         then the database stopped for {} s and restarted",
        max_backoff.as_secs(),
        warm_up.as_secs(),
        outage.as_secs()
    );
    let label = DestinationLabel { destination: "street".into() };
    let written = || {
        gateway.shared.refresh_gauges();
        gateway.shared.metrics.lines_written.get_or_create(&label).get() as u64
    };
    let depth = || gateway.shared.pending();
    let flow = SteadyHeartbeats::start(broker.port(), rate, devices);
    let mut progress = Progress::new();

    // Steady state. Its second half gives the yardstick (lines written per second while the
    // database keeps up) and the spool depth that counts as "drained": one flush interval's
    // worth of lines waits in the spool even when nothing is behind.
    let end = Instant::now() + warm_up;
    let mut steady: Option<(Instant, u64)> = None;
    let mut steady_depth = 0;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if Instant::now() >= end - warm_up / 2 {
            steady.get_or_insert_with(|| (Instant::now(), written()));
            steady_depth = steady_depth.max(depth());
        }
        progress.show(|| {
            format!("warm-up: {} s left, spool depth {}, lines written {}", left(end), depth(), written())
        });
    }
    let (steady_from, steady_written) = steady.unwrap();
    let steady_rate = (written() - steady_written) as f64 / steady_from.elapsed().as_secs_f64();

    // The outage.
    db.stop().unwrap();
    let end = Instant::now() + outage;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        progress.show(|| format!("outage: database down, {} s left, spool depth {}", left(end), depth()));
    }
    let restarting = Instant::now();
    println!("  restarting the database");
    db.restart().unwrap();
    let restarted = Instant::now();
    let (backlog, written_at_restart, published_at_restart) = (depth(), written(), flow.published());

    // Catch-up: until the spool is back to its steady depth.
    let mut first_write: Option<(Instant, u64)> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let w = written();
        if first_write.is_none() && w > written_at_restart {
            first_write = Some((Instant::now(), w));
        }
        if depth() <= steady_depth {
            break;
        }
        assert!(restarted.elapsed() < Duration::from_secs(600), "not drained in 10 minutes");
        progress.show(|| {
            format!(
                "catching up: {:.0} s since restart, spool depth {}, written since restart {}",
                restarted.elapsed().as_secs_f64(),
                depth(),
                w - written_at_restart
            )
        });
    }
    let drained = Instant::now();
    let written_at_drained = written();
    let arrived = flow.published() - published_at_restart;
    let catch_up = drained.duration_since(restarted).as_secs_f64();
    let drain_rate = (backlog + arrived) as f64 / catch_up;
    let (first_at, first_written) = first_write.unwrap();
    let active_rate =
        (written_at_drained - first_written) as f64 / drained.duration_since(first_at).as_secs_f64();

    // A little more steady flow, then every line must be in the database, exactly once.
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        progress.show(|| format!("after the catch-up: {} s left, spool depth {}", left(end), depth()));
    }
    let published = flow.finish().await;
    let accepted = || gateway.shared.metrics.counts().accepted.get("heartbeat").copied().unwrap_or(0);
    while accepted() < published || depth() > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let series = db.query_series("firegrid", "SELECT count(seq) FROM device_heartbeat").unwrap();
    let stored = series.first().and_then(|s| s.values[0][1].as_u64()).unwrap_or(0);
    gateway.stop().await;
    println!(
        "| {rate}/s, {} s outage | steady {steady_rate:.0} lines/s | backlog at restart {backlog} | database start {:.1} s | \
         first write {:.1} s after restart | caught up {catch_up:.1} s after restart ({arrived} arrived meanwhile) | \
         drain {drain_rate:.0} lines/s ({:.1}× steady) | from the first write {active_rate:.0} lines/s ({:.1}× steady) | \
         in the database {stored} of {published} published{} |",
        outage.as_secs(),
        restarted.duration_since(restarting).as_secs_f64(),
        first_at.duration_since(restarted).as_secs_f64(),
        drain_rate / steady_rate,
        active_rate / steady_rate,
        if stored == published { ", exactly" } else { " **MISMATCH**" }
    );
}

/// The sum of every sample of `family` in a Prometheus text exposition.
fn metric_sum(metrics: &str, family: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.strip_prefix(family).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Messages the `firegrid` process has dealt with: accepted, acknowledged again as
/// duplicates, or rejected.
fn processed(gateway: &firegrid_tests::Firegrid) -> f64 {
    let metrics = gateway.metrics().unwrap();
    [
        "firegrid_messages_accepted_total",
        "firegrid_messages_duplicate_total",
        "firegrid_messages_rejected_total",
    ]
    .iter()
    .map(|family| metric_sum(&metrics, family))
    .sum()
}

/// CPU seconds of this process's threads called `name`.
fn thread_cpu_seconds(name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    tasks
        .flatten()
        .filter(|task| std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.trim_end() == name))
        .filter_map(|task| stat_cpu_seconds(&task.path().join("stat").display().to_string()))
        .sum()
}

/// CPU seconds used so far by each party of the village benchmark.
#[derive(Clone, Copy)]
struct VillageCpu {
    at: Instant,
    gateway: f64,
    broker: f64,
    bench: f64,
    sim_loop: f64,
    sim_io: f64,
}

impl VillageCpu {
    fn now(gateway: u32, broker: u32) -> VillageCpu {
        VillageCpu {
            at: Instant::now(),
            gateway: stat_cpu_seconds(&format!("/proc/{gateway}/stat")).unwrap_or(0.0),
            broker: stat_cpu_seconds(&format!("/proc/{broker}/stat")).unwrap_or(0.0),
            bench: cpu_seconds(),
            sim_loop: thread_cpu_seconds(SIM_LOOP_THREAD),
            sim_io: thread_cpu_seconds(SIM_IO_THREADS),
        }
    }

    /// Cores used on average since `before`: gateway, broker, simulator (all), simulator's
    /// device loop, and the rest of the bench process (probes, webhook receiver).
    fn cores_since(&self, before: &VillageCpu) -> [f64; 5] {
        let wall = self.at.duration_since(before.at).as_secs_f64();
        let sim = (self.sim_loop - before.sim_loop) + (self.sim_io - before.sim_io);
        [
            (self.gateway - before.gateway) / wall,
            (self.broker - before.broker) / wall,
            sim / wall,
            (self.sim_loop - before.sim_loop) / wall,
            ((self.bench - before.bench) - sim) / wall,
        ]
    }
}

/// The simulator's own thread, which runs every device (the firmware cores).
const SIM_LOOP_THREAD: &str = "sim";
/// The simulator's runtime workers (MQTT connections, camera agents).
const SIM_IO_THREADS: &str = "sim-io";
/// One probe alarm this often, one at a time: 1,200 a minute, so that a one-minute window
/// has enough probes (≥ 1,000) that its p99 is not its maximum.
const PROBE_EVERY: Duration = Duration::from_millis(50);
/// The alarm-loop goal: device publish → first notification p99.
const LATENCY_GOAL_MS: f64 = 50.0;
/// "Keeping up": after the fleet stops, the gateway has dealt with everything within this.
const CATCH_UP_GOAL: Duration = Duration::from_secs(5);

/// One village size, as measured.
struct VillageRun {
    detectors: usize,
    registered: usize,
    camera_channels: usize,
    rate: f64,
    peak: f64,
    /// Gateway, broker, simulator, simulator device loop, rest of the bench: cores.
    cores: [f64; 5],
    gateway_rss: u64,
    bench_rss: u64,
    /// Sorted, ms.
    latencies: Vec<f64>,
    /// The three slowest probes: (seconds into the window, ms).
    slowest: Vec<(f64, f64)>,
    lost: usize,
    backlog: f64,
    /// The gateway's rejections by reason, at the end.
    rejected: String,
    caught_up: Duration,
    report: firegrid_sim::Report,
}

impl VillageRun {
    fn p(&self, q: f64) -> f64 {
        if self.latencies.is_empty() { f64::NAN } else { percentile(&self.latencies, q) }
    }

    fn passes(&self) -> bool {
        self.lost == 0 && self.p(0.99) <= LATENCY_GOAL_MS && self.caught_up <= CATCH_UP_GOAL
    }
}

async fn village(sizes: &[usize], speed: f64, seconds: u64, heartbeat: Duration, cameras: bool) {
    println!(
        "village: per size, the fleet simulator (platform mode, 16 connections, ×{speed}, heartbeat every {} s \
         simulated, cameras {}) and the firegrid binary (release; alarm loop, officers, one webhook for every desk) on one \
         Mosquitto; a probe alarm every {} ms for {seconds} s from the fleet's first message",
        heartbeat.as_secs(),
        if cameras { "through the camera agent" } else { "off" },
        PROBE_EVERY.as_millis()
    );
    let mut runs = Vec::new();
    for &detectors in sizes {
        let run = village_run(detectors, speed, seconds, heartbeat, cameras).await;
        let [gateway, broker, sim, sim_loop, rest] = run.cores;
        println!(
            "| {} detectors, {} devices registered ({} camera channels) | {:.0} msg/s (peak {:.0}/s) | gateway CPU \
             {gateway:.2} cores, RSS {:.0} MB | simulator CPU {sim:.2} cores (device loop {sim_loop:.2}), RSS {:.0} MB \
             with the bench | broker CPU {broker:.2} | bench rest {rest:.2} | p50 {:.1} ms | p99 {:.1} ms | max {:.1} ms \
             (slowest {}) | {} probes, {} lost | backlog when the fleet stopped {:.0}, caught up in {:.1} s | rejected: {} | \
             simulator: {} sent, {} refused, {} left in outboxes | **{}** |",
            run.detectors,
            run.registered,
            run.camera_channels,
            run.rate,
            run.peak,
            run.gateway_rss as f64 / 1e6,
            run.bench_rss as f64 / 1e6,
            run.p(0.5),
            run.p(0.99),
            run.latencies.last().copied().unwrap_or(f64::NAN),
            run.slowest
                .iter()
                .map(|(t, ms)| format!("{ms:.0} ms at {t:.0} s"))
                .collect::<Vec<_>>()
                .join(", "),
            run.latencies.len() + run.lost,
            run.lost,
            run.backlog,
            run.caught_up.as_secs_f64(),
            run.rejected,
            run.report.sent,
            run.report.refused,
            run.report.outbox_total,
            if run.passes() { "pass" } else { "fail" }
        );
        runs.push(run);
    }
    match runs.iter().filter(|r| r.passes()).map(|r| r.detectors).max() {
        Some(n) => println!("| **largest village that passes** | **{n} detectors** |"),
        None => println!("| **largest village that passes** | **none of {sizes:?}** |"),
    }
}

async fn village_run(
    detectors: usize,
    speed: f64,
    seconds: u64,
    heartbeat: Duration,
    cameras: bool,
) -> VillageRun {
    use firegrid_sim::{Fleet, Mode, RunConfig, Scenario, Village, VillageParams};
    use firegrid_tests::officers::write_street_desk;
    const SEED: u64 = 7;
    println!("village, {detectors} detectors: starting");
    let broker = Mosquitto::start().unwrap();
    let (hook, mut received) = webhook_receiver().await;

    // Fuhai's proportions: 5.2 detectors a building, a camera channel per 5 detectors, about
    // 29 buildings a grid, 10 grids a community.
    let buildings = (detectors as f64 / 5.2) as usize;
    let params = VillageParams {
        detectors,
        buildings,
        communities: (buildings / 290).max(1),
        grids_per_community: 10,
        camera_channels: if cameras { detectors / 5 } else { 0 },
        water_sensors: 0,
        heartbeat,
        ..VillageParams::default()
    };
    let village = Village::generate(&params, SEED).unwrap();
    // A fire in a building with three detectors five simulated minutes in, spreading to its
    // neighbours, put out after half an hour; a cooking wave in 1 % of buildings at 20 min.
    let seat = (100..village.buildings.len()).find(|b| village.detectors_in(*b).count() >= 3).unwrap();
    let scenario = Scenario::from_toml(&format!(
        "[[fire]]\nbuilding = \"{}\"\nat = \"5m\"\ngrowth = \"flaming\"\nspread_after = \"4m\"\n\
         spread_radius_m = 15.0\nout_after = \"30m\"\n\n[[cooking]]\nat = \"20m\"\nshare = 0.01\n",
        village.buildings[seat].id
    ))
    .unwrap();

    // Probe detectors, registered in buildings of their own (P0000, P0001, ...) spread over
    // the village's grids, so every probe alarm opens a case of its own and none is part of
    // the fire or the cooking.
    let probes = (seconds * 1000 / PROBE_EVERY.as_millis() as u64) as usize + 10;
    let mut csv = village.registry_csv();
    for a in 0..probes {
        let b = &village.buildings[(a * 97) % village.buildings.len()];
        csv.push_str(&format!(
            "probe-{a:04},smoke_detector,probe,P{a:04},Probe lane No. {a},{:.6},{:.6},{},{},{},{},1h,\n",
            25.1 + a as f64 * 1e-3,
            102.7,
            b.grid,
            b.community,
            village.street,
            village.village
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry.csv");
    std::fs::write(&registry, csv).unwrap();
    let officers = dir.path().join("officers.toml");
    write_street_desk(&officers, &village.street);
    let registered = village.devices.len() + probes;
    let camera_channels = params.camera_channels;

    let port = broker.port();
    let csv_path = registry.display().to_string();
    let alarm_section = alarm_toml(hook, Some(&officers));
    // A detector that a downlink has told the time runs its clock at the simulator's speed, so
    // at ×60 it runs ahead of the gateway by minutes within seconds. The gateway accepts such
    // messages (a wrong clock is flagged, never refused); the flag bound is lifted to the
    // whole simulated run so the gateway's log is not about the simulation's clocks.
    let clock_ahead = seconds as f64 * speed + 300.0;
    let gateway = firegrid_tests::Firegrid::start(move |dir, http| {
        format!(
            "data_dir = \"{}\"\nhttp_listen = \"127.0.0.1:{http}\"\n[mqtt]\nport = {port}\nclient_id = \"village\"\n\
             [limits]\nclock_ahead = \"{clock_ahead:.0}s\"\n[registry]\ncsv = \"{csv_path}\"\n{alarm_section}",
            dir.join("data").display()
        )
    })
    .unwrap();
    let gateway_pid = gateway.pid().unwrap();
    let broker_pid = broker.pid().unwrap();

    let mut opts = MqttOptions::new("probes", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });

    // The simulator on threads of its own, so that its device loop's CPU time can be told from
    // the probes' and the receiver's (which stay on this runtime).
    let simulated = Duration::from_secs_f64(seconds as f64 * speed);
    let sim_cfg = RunConfig {
        host: "127.0.0.1".into(),
        port,
        mode: Mode::Platform { connections: 16 },
        speed,
        duration: simulated,
        report_every: None,
        camera_state: cameras.then(|| dir.path().join("cameras")),
        credentials: None,
    };
    let sim = std::thread::Builder::new()
        .name(SIM_LOOP_THREAD.into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name(SIM_IO_THREADS)
                // Blocking threads that exit take their CPU time out of `/proc/self/task`.
                .thread_keep_alive(Duration::from_secs(3600))
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut fleet = Fleet::new(village, &scenario, simulated, SEED, Encoding::Compact).unwrap();
                firegrid_sim::run(&mut fleet, &sim_cfg, None, Duration::from_secs(10)).await
            })
        })
        .unwrap();
    let mut progress = Progress::new();
    let booting = Instant::now();
    while processed(&gateway) == 0.0 {
        assert!(booting.elapsed() < Duration::from_secs(300), "the fleet sent nothing in 5 minutes");
        progress
            .show(|| format!("booting the fleet and connecting: {:.0} s", booting.elapsed().as_secs_f64()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The measured window: probes one at a time, each from a probe detector of its own,
    // timed from its publish to the first webhook request about its building.
    let cpu_before = VillageCpu::now(gateway_pid, broker_pid);
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let processed_before = processed(&gateway);
    let mut last_sample = (start, processed_before);
    let mut peak = 0.0f64;
    let mut latencies = Vec::new();
    let mut timeline = Vec::new();
    let mut lost = 0;
    let mut a = 0;
    while Instant::now() < end && a < probes {
        let building = format!("P{a:04}");
        let (topic, payload) = alarm(&DeviceId::new(&format!("probe-{a:04}")).unwrap(), 0);
        let sent = Instant::now();
        client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
        let deadline = tokio::time::Instant::from_std(sent + Duration::from_secs(5));
        loop {
            match tokio::time::timeout_at(deadline, received.recv()).await {
                Ok(Some((at, body))) => {
                    let title = body["title"].as_str().unwrap_or_default();
                    if title.split(' ').next() == Some(building.as_str()) {
                        latencies.push(at.duration_since(sent).as_secs_f64() * 1000.0);
                        timeline.push((sent.duration_since(start).as_secs_f64(), *latencies.last().unwrap()));
                        break;
                    }
                }
                Ok(None) => unreachable!("the receiver runs as long as the bench"),
                Err(_) => {
                    lost += 1;
                    break;
                }
            }
        }
        a += 1;
        if last_sample.0.elapsed() >= Duration::from_secs(1) {
            let now = (Instant::now(), processed(&gateway));
            peak = peak.max((now.1 - last_sample.1) / now.0.duration_since(last_sample.0).as_secs_f64());
            last_sample = now;
        }
        progress.show(|| {
            let last = latencies.last().copied().unwrap_or(f64::NAN);
            format!(
                "{detectors} detectors: probing, {} s left, {a} probes ({lost} lost), last {last:.1} ms, \
                 gateway has dealt with {:.0} messages",
                left(end),
                last_sample.1
            )
        });
        tokio::time::sleep_until(tokio::time::Instant::from_std(start + PROBE_EVERY * a as u32)).await;
    }
    let cpu_after = VillageCpu::now(gateway_pid, broker_pid);
    let rate = (processed(&gateway) - processed_before) / start.elapsed().as_secs_f64();
    let gateway_rss = rss(gateway_pid);
    let bench_rss = rss(std::process::id());

    // Keeping up: once the fleet has stopped (and its outboxes are empty or given up on),
    // how much was the gateway still behind, and how long did it take to deal with it?
    while !sim.is_finished() {
        progress.show(|| "fleet finishing (simulated end, outboxes)".into());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = sim.join().unwrap();
    let stopped = Instant::now();
    let at_stop = processed(&gateway);
    let mut last = (stopped, at_stop);
    while last.0.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = processed(&gateway);
        if now > last.1 {
            last = (Instant::now(), now);
        }
    }
    latencies.sort_by(f64::total_cmp);
    timeline.sort_by(|a, b| b.1.total_cmp(&a.1));
    timeline.truncate(3);
    let metrics = gateway.metrics().unwrap();
    let rejected: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("firegrid_messages_rejected_total{reason=\""))
        .collect();
    let rejected = if rejected.is_empty() { "none".into() } else { rejected.join(", ").replace("\"}", ":") };
    VillageRun {
        detectors,
        registered,
        camera_channels,
        rate,
        peak,
        cores: cpu_after.cores_since(&cpu_before),
        gateway_rss,
        bench_rss,
        latencies,
        slowest: timeline,
        lost,
        backlog: last.1 - at_stop,
        rejected,
        caught_up: last.0.duration_since(stopped),
        report,
    }
}

/// A notification for the fire-first benchmark: its own case, to the grid desk.
fn fire_first_message(id: u64, severity: &str, reason: &str) -> firegrid_notify::Message {
    firegrid_notify::Message {
        notification_id: id,
        case_id: id,
        severity: severity.to_owned(),
        level: "grid".to_owned(),
        desk: "grid:G1".to_owned(),
        title: format!("B{id} {severity}"),
        text: String::new(),
        url: None,
        at_ms: now_ms(),
        reason: reason.to_owned(),
        local_at: None,
    }
}

/// The fire page's id in the fire-first benchmark.
const FIRE_ID: u64 = 1_000_000;

/// `faults` fault reminders then one fire through the real outbox, worker and a webhook
/// channel limited to `per_minute` a minute with `reserve` slots kept, into a receiver on
/// loopback. The fire is queued once the routine share of the first window has arrived (the
/// robot is busy with faults). Returns the fire's request number, its enqueue → arrival
/// time.
async fn fire_first_run(faults: usize, per_minute: u32, reserve: u32) -> (usize, Duration) {
    use firegrid_notify::{DeliveryConfig, NotifyConfig, Outbox, build_channels, outbox};
    let dir = tempfile::tempdir().unwrap();
    let (hook, mut received) = webhook_receiver().await;
    let cfg: NotifyConfig = toml::from_str(&format!(
        "[channels.robot]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{hook}/hook\"\n\
         rate_limit = {{ messages = {per_minute}, per = \"1m\", reserve = {reserve} }}\n"
    ))
    .unwrap();
    let channels = build_channels(&cfg.channels).unwrap();
    let outbox = Outbox::open(&dir.path().join("notify-outbox.sqlite")).unwrap();
    let (reports, mut drain) = mpsc::channel(4096);
    tokio::spawn(async move { while drain.recv().await.is_some() {} });
    let stop = CancellationToken::new();
    let worker =
        tokio::spawn(outbox::run(outbox.clone(), channels, DeliveryConfig::default(), reports, stop.clone()));
    let robot = vec!["robot".to_owned()];
    for i in 0..faults as u64 {
        outbox.enqueue(&fire_first_message(i + 1, "fault", "reminder"), &robot).await.unwrap();
    }
    let routine = (per_minute - reserve) as usize;
    let mut arrived = 0;
    while arrived < routine.min(faults) {
        tokio::time::timeout(Duration::from_secs(30), received.recv()).await.expect("faults arrive").unwrap();
        arrived += 1;
    }
    let enqueued = Instant::now();
    outbox.enqueue(&fire_first_message(FIRE_ID, "fire", "confirmed"), &robot).await.unwrap();
    // Stop at the fire: draining 500 at 20 a minute takes 25 minutes.
    let fire = loop {
        let (at, body) = tokio::time::timeout(Duration::from_secs(120), received.recv())
            .await
            .expect("the fire arrives within two windows")
            .unwrap();
        arrived += 1;
        if body["notification_id"].as_u64() == Some(FIRE_ID) {
            break (arrived, at.duration_since(enqueued));
        }
    };
    stop.cancel();
    let _ = worker.await;
    fire
}

/// The outbox's former order (due time only, no reserve) behind the same window, stepped
/// through the same scheduler with simulated times: all rows at one priority, the fire queued
/// after `faults` faults at time 0. Returns the fire's request number and its wait.
fn fire_first_due_order(faults: usize, per_minute: u32) -> (usize, Duration) {
    use std::collections::{HashMap, HashSet};

    use firegrid_notify::outbox::limit::{RateLimit, Window};
    use firegrid_notify::outbox::schedule::plan;
    use firegrid_notify::outbox::{DeliveryKey, Pending};
    let limit = RateLimit { reserve: Some(0), ..RateLimit::new(per_minute, Duration::from_secs(60)) };
    let mut windows = HashMap::from([("robot".to_owned(), Window::new(limit))]);
    let ids = (1..=faults as u64).chain([FIRE_ID]);
    let mut queue: Vec<Pending> = ids
        .enumerate()
        .map(|(i, id)| Pending {
            key: DeliveryKey { notification_id: id, target: "robot".to_owned() },
            case_id: id,
            message: Err("simulated".to_owned()),
            attempts: 0,
            enqueued_ms: i as u64,
            next_attempt_ms: 0,
            priority: 0,
        })
        .collect();
    let (mut now, mut sent) = (0u64, 0usize);
    loop {
        let step = plan(queue.clone(), &HashSet::new(), 16, &mut windows, now);
        for row in &step.start {
            sent += 1;
            if row.key.notification_id == FIRE_ID {
                return (sent, Duration::from_millis(now));
            }
        }
        let started: HashSet<_> = step.start.iter().map(|r| r.key.clone()).collect();
        queue.retain(|r| !started.contains(&r.key));
        now = step.room_at_ms.unwrap_or(now);
    }
}

/// The fire-first table: reserve on (the default fifth), reserve off, former due-time order.
async fn fire_first(faults: usize, per_minute: u32) {
    let reserve = per_minute.div_ceil(5);
    println!(
        "| {faults} fault reminders queued, then one fire, channel {per_minute}/min | reserve | fire page was request # | enqueue → arrival |"
    );
    println!("|---|---:|---:|---:|");
    for (order, reserve) in [("severity order", reserve), ("severity order", 0)] {
        let (n, latency) = fire_first_run(faults, per_minute, reserve).await;
        println!("| {order} (measured) | {reserve} | {n} | {:.1} ms |", latency.as_secs_f64() * 1000.0);
    }
    let (n, wait) = fire_first_due_order(faults, per_minute);
    println!("| due-time order, before (simulated) | 0 | {n} | {:.0} s |", wait.as_secs_f64());
}

/// The `[alerting]` engine of `takeover`: an unregistered detector's alarm is a pre-alarm,
/// paged at once at the street desk, then every 10 s one level up.
const TAKEOVER_ENGINE: &str = r#"[alerting.engine.pre_alarm]
entry = ["street"]
ack = [{ after = "10s" }, { after = "10s" }, { after = "10s" }, { after = "10s" }]
renotify = "10m"
handle = { after = "10m" }
latched = false"#;

/// A `takeover` gateway's configuration: MQTT client id `gw-fuhai-1` for both gateways, the
/// case store in `conninfo` with `standby = true` (so held under the default 3 s lease), every
/// desk paged through the webhook at `hook`.
fn takeover_config(
    broker: u16,
    hook: u16,
    conninfo: &str,
    password_file: &std::path::Path,
) -> impl Fn(&std::path::Path, u16) -> String + Send + Sync + 'static + use<> {
    firegrid_tests::postgres::gateway_config(
        broker,
        hook,
        conninfo,
        password_file,
        "gw-fuhai-1",
        "standby = true",
        TAKEOVER_ENGINE,
    )
}

/// Waits for the first page at the street desk that arrived after `since`; its arrival.
async fn street_page_after(hook: &firegrid_tests::webhook::WebhookReceiver, since: Instant) -> Instant {
    let deadline = since + Duration::from_secs(60);
    loop {
        let page = hook.received().into_iter().find(|(at, v)| *at > since && v["desk"] == "street:fuhai-1");
        if let Some((at, _)) = page {
            return at;
        }
        assert!(Instant::now() < deadline, "no page within 60 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn takeover(runs: usize, freeze: bool) {
    let fault = if freeze { "SIGSTOP" } else { "SIGKILL" };
    use firegrid_tests::webhook::WebhookReceiver;
    use firegrid_tests::{Firegrid, Postgres};
    let broker = Mosquitto::start().unwrap();
    let hook = WebhookReceiver::start().await;
    let server = Arc::new(Postgres::start().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("postgres-password");
    std::fs::write(&password_file, format!("{}\n", server.password())).unwrap();
    let (client, mut eventloop) =
        AsyncClient::new(MqttOptions::new("detectors", "127.0.0.1", broker.port()), 10);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let publish = |i: usize| {
        let (topic, payload) = uplink(
            &device(i),
            1,
            UplinkBody::State(StateChange { state: DetectorState::Alarm, obscuration_db_m: 0.4 }),
        );
        let client = client.clone();
        async move { client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap() }
    };
    let inputs = |db: String| {
        let server = server.clone();
        move || -> i64 {
            let mut c = server.connect(&db).unwrap();
            c.query_one("SELECT count(*) FROM inputs", &[]).unwrap().get(0)
        }
    };
    println!(
        "takeover: {runs} runs; each: an active and a standby gateway (same MQTT client ids, one PostgreSQL \
         case store with a 3 s lease, one Mosquitto), {fault} of the active one, a fire alarm published at once"
    );
    let (mut alive_ms, mut commit_ms, mut page_ms, mut ready_ms) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut progress = Progress::new();
    for run in 0..runs {
        let db = format!("takeover_{run}");
        let conninfo = server.create_database(&db).unwrap();
        let config = || takeover_config(broker.port(), hook.port(), &conninfo, &password_file);
        let active_config = config();
        let mut active =
            tokio::task::spawn_blocking(move || Firegrid::start(active_config).unwrap()).await.unwrap();
        // The alarm's page with the active gateway alive: the yardstick.
        let sent = Instant::now();
        publish(10_000 + 2 * run).await;
        alive_ms.push(street_page_after(&hook, sent).await.duration_since(sent).as_secs_f64() * 1e3);
        let standby_config = config();
        let standby = std::thread::spawn(move || (Firegrid::start(standby_config).unwrap(), Instant::now()));
        let waiting = {
            let server = server.clone();
            move || -> i64 {
                let mut c = server.connect("postgres").unwrap();
                c.query_one("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'", &[])
                    .unwrap()
                    .get(0)
            }
        };
        let queued = Instant::now();
        while tokio::task::spawn_blocking(waiting.clone()).await.unwrap() == 0 {
            assert!(queued.elapsed() < Duration::from_secs(30), "the standby never queued for the store");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The active one has committed every input it will; the standby's first is the next.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = tokio::task::spawn_blocking(inputs(db.clone())).await.unwrap();
        let killed = Instant::now();
        if freeze {
            active.pause().unwrap();
        } else {
            active.kill().unwrap();
        }
        publish(10_001 + 2 * run).await;
        let count = inputs(db.clone());
        let committed = tokio::task::spawn_blocking(move || {
            while count() <= before {
                assert!(killed.elapsed() < Duration::from_secs(60), "the standby committed nothing in 60 s");
                std::thread::sleep(Duration::from_millis(2));
            }
            Instant::now()
        })
        .await
        .unwrap();
        let paged = street_page_after(&hook, killed).await;
        let (taken_over, ready) = tokio::task::spawn_blocking(move || standby.join().unwrap()).await.unwrap();
        commit_ms.push(committed.duration_since(killed).as_secs_f64() * 1e3);
        page_ms.push(paged.duration_since(killed).as_secs_f64() * 1e3);
        ready_ms.push(ready.saturating_duration_since(killed).as_secs_f64() * 1e3);
        if freeze {
            active.resume().unwrap();
            let status =
                tokio::task::spawn_blocking(move || active.wait_exit(Duration::from_secs(30)).unwrap())
                    .await
                    .unwrap();
            assert_eq!(
                status.and_then(|s| s.code()),
                Some(75),
                "the woken gateway exits as its lease ran out"
            );
        } else {
            drop(active);
        }
        drop(taken_over);
        progress.show(|| format!("takeover: {}/{runs} runs", run + 1));
    }
    let row = |name: &str, v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        println!(
            "| {name} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |",
            v[0],
            percentile(v, 0.5),
            percentile(v, 0.9),
            v.last().unwrap()
        );
    };
    let flag = if freeze { " --freeze" } else { "" };
    println!(
        "| `firegrid-bench takeover --runs {runs}{flag}` | min | median | p90 | max |\n|---|---:|---:|---:|---:|"
    );
    row("alarm → page, active alive", &mut alive_ms);
    row(&format!("{fault} → standby ready (subscribed)"), &mut ready_ms);
    row(&format!("{fault} → standby's first committed input"), &mut commit_ms);
    row(&format!("{fault} + alarm → page (the whole path)"), &mut page_ms);
}
