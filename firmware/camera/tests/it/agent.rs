//! The agent end to end: camera HTTP server → agent → real Mosquitto → a subscriber that
//! checks every uplink with `firegrid_protocol` and acknowledges it like the gateway.

use std::sync::Arc;
use std::time::Duration;

use firegrid_camera::{Agent, AgentStats, CameraSignal, CameraTransport, Config, SignalKind, Vendor};
use firegrid_protocol::{
    DeviceId, DeviceKey, Downlink, DownlinkBody, Encoding, Topic, UplinkBody, VillageId,
};
use firegrid_tests::Mosquitto;
use tokio_util::sync::CancellationToken;

use crate::camera::{Auth, Camera, Rtsp, Step, closed_port};
use crate::gateway::{Gateway, WAIT, camera_messages, check_sequence, render_all};

const VILLAGE: &str = "v-test";

/// Settings that differ between tests, as TOML lines.
#[derive(Default)]
struct Extra {
    camera: &'static str,
    mqtt: &'static str,
    channels: String,
}

fn config(
    camera: &Camera,
    vendor: &str,
    auth: &str,
    broker: &Mosquitto,
    state: &std::path::Path,
    device: &str,
    extra: Extra,
) -> Config {
    let channels = if extra.channels.is_empty() {
        "[[channels]]\nchannel = 1\n[[channels]]\nchannel = 2\n".to_owned()
    } else {
        extra.channels
    };
    let text = format!(
        r#"
village = "{VILLAGE}"
device = "{device}"
state_dir = "{state}"
{channels}
[probe]
interval = "200ms"
timeout = "500ms"
failures = 3
[camera]
vendor = "{vendor}"
url = "{url}"
username = "admin"
password = "secret"
auth = "{auth}"
heartbeat_interval = "1s"
event_hold = "60s"
connect_timeout = "2s"
reconnect_min = "100ms"
reconnect_max = "500ms"
{camera_extra}
[mqtt]
host = "{host}"
port = {port}
keep_alive = "5s"
ack_timeout = "2s"
reconnect_min = "100ms"
reconnect_max = "500ms"
{mqtt_extra}
"#,
        state = state.display(),
        url = camera.url(),
        camera_extra = extra.camera,
        host = broker.host(),
        port = broker.port(),
        mqtt_extra = extra.mqtt,
    );
    Config::from_toml(&text).unwrap()
}

struct Running {
    stats: Arc<AgentStats>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), firegrid_camera::AgentError>>,
}

impl Running {
    fn start(config: Config) -> Running {
        let transport = CameraTransport::from_config(&config.camera).unwrap();
        let agent = Agent::new(config, transport).unwrap();
        let stats = agent.stats();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(agent.run(shutdown.clone()));
        Running { stats, shutdown, task }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task).await.expect("agent did not stop").unwrap().unwrap();
    }

    /// Waits until `done` holds for the agent's counters.
    async fn until(&self, what: &str, done: impl Fn(&firegrid_camera::StatsSnapshot) -> bool) {
        let result = tokio::time::timeout(WAIT, async {
            while !done(&self.stats.snapshot()) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(result.is_ok(), "timed out waiting for {what}: {:?}", self.stats.snapshot());
    }
}

/// Runs blocking harness calls (stopping or restarting the broker) off the async workers.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn contains_all(got: &[String], wanted: &[&str]) -> bool {
    wanted.iter().all(|w| got.iter().any(|g| g == w))
}

fn signal(channel: u16, kind: SignalKind, active: bool) -> CameraSignal {
    CameraSignal::new(Some(channel), kind, active)
}

/// The Hikvision fixture, chunked with pauses over a Digest-authenticated HTTP stream, comes
/// out as exactly the camera events and health changes it holds, in order, numbered without
/// gaps, and every message leaves the outbox on the gateway's acknowledgement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hikvision_fixture_over_http_to_mqtt() {
    let broker = Mosquitto::start().unwrap();
    let mut gateway = Gateway::start(&broker, VILLAGE, true).await;
    let camera = Camera::start(Vendor::Hikvision, Auth::Digest, Duration::from_millis(300)).await;
    let fixture =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hikvision_alertstream.txt"))
            .unwrap();
    let crlf = String::from_utf8(fixture).unwrap().replace('\n', "\r\n").into_bytes();
    camera.send(Step::Chunked { bytes: crlf, chunk: 97, pause: Duration::from_millis(2) });
    let state = tempfile::tempdir().unwrap();
    let agent = Running::start(config(
        &camera,
        "hikvision",
        "digest",
        &broker,
        state.path(),
        "cam-hik",
        Extra::default(),
    ));

    let expected = [
        "health ch1 online",
        "health ch2 online",
        "event fire ch2 start 100%",
        "health ch1 tampered",
        "event smoke ch1 start 100%",
        "health ch2 video_loss",
        "event fire_lane_blocked ch1 start 100%",
        "health ch1 online",
        "event fire ch2 end 100%",
    ];
    let mut got = Vec::new();
    gateway.until(&mut got, |m| camera_messages(m).len() >= expected.len()).await;
    // Heartbeats keep coming; nothing else may.
    gateway.drain(&mut got, Duration::from_millis(500)).await;
    assert_eq!(camera_messages(&got), expected, "{}", render_all(&got).join("\n"));
    assert!(matches!(got[0].body, UplinkBody::Status(ref s) if s.online), "status online comes first");
    assert_eq!((got[0].boot, got[0].seq), (1, 1), "seq 0 is the last will's");
    check_sequence(&got, &DeviceId::new("cam-hik").unwrap());

    agent.until("every uplink acknowledged", |s| s.acknowledged == 9 && s.outbox_depth == 0).await;
    let stats = agent.stats.snapshot();
    assert_eq!(
        (stats.unknown_events, stats.parse_errors),
        (1, 2),
        "VMD; the broken and the incomplete alert"
    );
    assert!(camera.challenges() >= 1, "the camera asked for Digest");
    assert_eq!(camera.connections(), 1);
    agent.stop().await;
}

/// Events raised while the broker is down wait in the outbox, survive an agent restart, and
/// arrive after the broker is back, in order and before the new boot's messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_delivers_across_broker_outage_and_agent_restart() {
    let mut broker = Mosquitto::start().unwrap();
    let mut gateway = Gateway::start(&broker, VILLAGE, true).await;
    let camera = Camera::start(Vendor::Dahua, Auth::Basic, Duration::from_millis(300)).await;
    let state = tempfile::tempdir().unwrap();
    let config = config(&camera, "dahua", "basic", &broker, state.path(), "cam-dahua", Extra::default());
    let first = Running::start(config.clone());
    let mut got = Vec::new();
    gateway.until(&mut got, |m| camera_messages(m).len() >= 2).await;
    first
        .until("the first health reports acknowledged", |s| s.acknowledged >= 2 && s.outbox_depth == 0)
        .await;

    blocking(|| broker.stop()).unwrap();
    camera.send(Step::signal(Vendor::Dahua, signal(1, SignalKind::Smoke, true)));
    camera.send(Step::signal(Vendor::Dahua, signal(2, SignalKind::Fire, true)));
    camera.send(Step::signal(Vendor::Dahua, signal(1, SignalKind::Smoke, false)));
    first.until("three events queued", |s| s.outbox_depth == 3 && !s.broker_connected).await;
    first.stop().await;

    let second = Running::start(config);
    second.until("the restarted agent connected to the camera", |s| s.stream_connects == 1).await;
    camera.send(Step::signal(Vendor::Dahua, signal(1, SignalKind::Fire, true)));
    second.until("the restarted agent queued its own messages", |s| s.outbox_depth >= 3 + 3).await;
    blocking(|| broker.restart()).unwrap();

    gateway
        .until(&mut got, |m| {
            contains_all(&camera_messages(m), &["event smoke ch1 end 100%", "event fire ch1 start 100%"])
        })
        .await;
    second.until("the backlog acknowledged", |s| s.outbox_depth == 0).await;
    gateway.drain(&mut got, Duration::from_millis(300)).await;
    let boot1: Vec<String> =
        camera_messages(&got.iter().filter(|m| m.boot == 1).cloned().collect::<Vec<_>>());
    assert_eq!(
        boot1,
        [
            "health ch1 online",
            "health ch2 online",
            "event smoke ch1 start 100%",
            "event fire ch2 start 100%",
            "event smoke ch1 end 100%"
        ],
        "{}",
        render_all(&got).join("\n")
    );
    let mut boot2: Vec<String> =
        camera_messages(&got.iter().filter(|m| m.boot == 2).cloned().collect::<Vec<_>>());
    // Whether the first heartbeat or the event came first on the new stream is timing.
    boot2.sort();
    assert_eq!(boot2, ["event fire ch1 start 100%", "health ch1 online", "health ch2 online"]);
    // The old boot's backlog went first: the gateway rejects an earlier boot once it has
    // seen a later one.
    let last_old = got.iter().rposition(|m| m.boot == 1).unwrap();
    let first_new = got.iter().position(|m| m.boot == 2 && !matches!(m.body, UplinkBody::Status(_))).unwrap();
    assert!(last_old < first_new, "{}", render_all(&got).join("\n"));
    check_sequence(&got, &DeviceId::new("cam-dahua").unwrap());
    second.stop().await;
}

/// A camera that resets the connection, then closes it, is reconnected each time, and the
/// event state carries over: the smoke that started on one connection ends on the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_dropping_the_connection_is_reconnected() {
    let broker = Mosquitto::start().unwrap();
    let mut gateway = Gateway::start(&broker, VILLAGE, true).await;
    let camera = Camera::start(Vendor::Dahua, Auth::Digest, Duration::from_millis(300)).await;
    camera.send(Step::signal(Vendor::Dahua, signal(1, SignalKind::Smoke, true)));
    camera.send(Step::Abort);
    camera.send(Step::signal(Vendor::Dahua, signal(1, SignalKind::Smoke, false)));
    camera.send(Step::Close);
    camera.send(Step::signal(Vendor::Dahua, signal(2, SignalKind::Fire, true)));
    let state = tempfile::tempdir().unwrap();
    let agent = Running::start(config(
        &camera,
        "dahua",
        "digest",
        &broker,
        state.path(),
        "cam-drop",
        Extra::default(),
    ));

    let mut got = Vec::new();
    gateway.until(&mut got, |m| contains_all(&camera_messages(m), &["event fire ch2 start 100%"])).await;
    assert_eq!(
        camera_messages(&got),
        [
            "event smoke ch1 start 100%",
            "health ch1 online",
            "health ch2 online",
            "event smoke ch1 end 100%",
            "event fire ch2 start 100%"
        ]
    );
    assert!(camera.connections() >= 3, "reconnected twice: {}", camera.connections());
    let stats = agent.stats.snapshot();
    assert!(stats.stream_connects >= 3 && stats.stream_failures >= 2, "{stats:?}");
    check_sequence(&got, &DeviceId::new("cam-drop").unwrap());
    agent.stop().await;
}

/// A camera that keeps the connection open but goes silent is reported offline after three
/// missed heartbeats, and the agent reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_camera_goes_offline_and_is_reconnected() {
    let broker = Mosquitto::start().unwrap();
    let mut gateway = Gateway::start(&broker, VILLAGE, true).await;
    // Heartbeats far apart: after the first part the stream stays silent.
    let camera = Camera::start(Vendor::Hikvision, Auth::Digest, Duration::from_secs(3600)).await;
    camera.send(Step::signal(Vendor::Hikvision, CameraSignal::heartbeat()));
    let state = tempfile::tempdir().unwrap();
    let extra = Extra { camera: "missed_heartbeats = 3", ..Extra::default() };
    let mut cfg = config(&camera, "hikvision", "digest", &broker, state.path(), "cam-quiet", extra);
    cfg.camera.heartbeat_interval = Duration::from_millis(300);
    let agent = Running::start(cfg);

    let mut got = Vec::new();
    gateway
        .until(&mut got, |m| contains_all(&camera_messages(m), &["health ch1 offline", "health ch2 offline"]))
        .await;
    assert_eq!(
        camera_messages(&got)[..4],
        ["health ch1 online", "health ch2 online", "health ch1 offline", "health ch2 offline"]
    );
    agent.until("a reconnect after the silence", |s| s.stream_connects >= 2).await;
    assert!(camera.connections() >= 2);
    agent.stop().await;
}

/// ONVIF PullPoint over Digest, with `delivery = "broker"`: the subscriber never
/// acknowledges, and the outbox still empties on PUBACK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onvif_pullpoint_with_broker_delivery() {
    let broker = Mosquitto::start().unwrap();
    let mut gateway = Gateway::start(&broker, VILLAGE, false).await;
    let camera = Camera::start(Vendor::Onvif, Auth::Digest, Duration::from_millis(300)).await;
    let mut fire = signal(2, SignalKind::Fire, true);
    fire.confidence_pct = Some(90);
    camera.send(Step::signal(Vendor::Onvif, fire));
    let state = tempfile::tempdir().unwrap();
    let extra = Extra { mqtt: "delivery = \"broker\"\nencoding = \"compact\"", ..Extra::default() };
    let mut cfg = config(&camera, "onvif", "digest", &broker, state.path(), "cam-onvif", extra);
    // Each pull waits this long on the camera.
    cfg.camera.heartbeat_interval = Duration::from_millis(300);
    let agent = Running::start(cfg);

    let mut got = Vec::new();
    gateway.until(&mut got, |m| contains_all(&camera_messages(m), &["event fire ch2 start 90%"])).await;
    assert_eq!(camera_messages(&got), ["health ch1 online", "health ch2 online", "event fire ch2 start 90%"]);
    agent.until("the outbox emptied on PUBACK", |s| s.outbox_depth == 0 && s.acknowledged == 3).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(camera.pulls() >= 2, "pulls: {}", camera.pulls());
    assert_eq!(camera.connections(), 1, "one subscription");
    check_sequence(&got, &DeviceId::new("cam-onvif").unwrap());
    agent.stop().await;
}

/// A channel whose RTSP server does not answer goes offline after three failed probes; the
/// one that answers `OPTIONS` stays online.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtsp_probe_takes_a_dead_channel_offline() {
    let broker = Mosquitto::start().unwrap();
    let mut gateway = Gateway::start(&broker, VILLAGE, true).await;
    let camera = Camera::start(Vendor::Dahua, Auth::Digest, Duration::from_millis(200)).await;
    let rtsp = Rtsp::start().await;
    let state = tempfile::tempdir().unwrap();
    let channels = format!(
        "[[channels]]\nchannel = 1\nrtsp = \"rtsp://admin:secret@127.0.0.1:{}/Streaming/Channels/101\"\n\
         [[channels]]\nchannel = 2\nrtsp = \"rtsp://127.0.0.1:{}/Streaming/Channels/201\"\n",
        rtsp.port,
        closed_port()
    );
    let extra = Extra { channels, ..Extra::default() };
    let agent = Running::start(config(&camera, "dahua", "digest", &broker, state.path(), "cam-rtsp", extra));

    let mut got = Vec::new();
    gateway
        .until(&mut got, |m| contains_all(&camera_messages(m), &["health ch1 online", "health ch2 offline"]))
        .await;
    gateway.drain(&mut got, Duration::from_millis(800)).await;
    let messages = camera_messages(&got);
    // Whether channel 2 was heard online before its third failed probe depends on timing;
    // what it ends as, and that channel 1 never went offline, does not.
    assert_eq!(messages.iter().rfind(|m| m.starts_with("health ch2")).unwrap(), "health ch2 offline");
    assert!(!messages.iter().any(|m| m == "health ch1 offline"), "{messages:?}");
    assert!(rtsp.options.load(std::sync::atomic::Ordering::SeqCst) >= 3);
    assert!(agent.stats.snapshot().probe_failures >= 3);
    agent.stop().await;
}

/// The fleet simulator's path: signals pushed into a feed go through the same agent code to
/// the broker, and the agent holds `camera_event` and `camera_health` to the protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_camera_through_a_feed() {
    let broker = Mosquitto::start().unwrap();
    let mut gateway = Gateway::start(&broker, VILLAGE, true).await;
    // Only for the configuration's URL; the feed replaces HTTP.
    let camera = Camera::start(Vendor::Hikvision, Auth::Digest, Duration::from_secs(3600)).await;
    let state = tempfile::tempdir().unwrap();
    let config =
        config(&camera, "hikvision", "digest", &broker, state.path(), "cam-sim-0001", Extra::default());
    let (feed, transport) = firegrid_camera::feed(Vendor::Hikvision, Default::default(), 16);
    let agent = Agent::new(config, transport).unwrap();
    let stats = agent.stats();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(agent.run(shutdown.clone()));

    feed.send(&CameraSignal::heartbeat(), 0).await.unwrap();
    feed.send(&signal(3, SignalKind::Smoke, true), 0).await.unwrap();
    // Hikvision repeats an active alert; the repetition is not a new event.
    feed.send(&signal(3, SignalKind::Smoke, true), 0).await.unwrap();
    feed.send(&signal(3, SignalKind::Smoke, false), 0).await.unwrap();
    let mut got = Vec::new();
    gateway.until(&mut got, |m| contains_all(&camera_messages(m), &["event smoke ch3 end 100%"])).await;
    assert_eq!(
        camera_messages(&got),
        [
            "health ch1 online",
            "health ch2 online",
            "event smoke ch3 start 100%",
            "health ch3 online",
            "event smoke ch3 end 100%"
        ]
    );
    check_sequence(&got, &DeviceId::new("cam-sim-0001").unwrap());
    assert_eq!(camera.connections(), 0, "no HTTP involved");
    assert_eq!(stats.snapshot().stream_connects, 1);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// A camera with a key signs every uplink (the gateway here verifies each one), refuses the
/// unsigned acknowledgements of a gateway that does not sign, so its events stay in the
/// outbox, and empties the outbox on signed ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_camera_signs_its_uplinks_and_obeys_only_signed_acks() {
    let broker = Mosquitto::start().unwrap();
    let key = DeviceKey::from_bytes(core::array::from_fn(|i| 0x90 + i as u8));
    let hex: String = key.expose().iter().map(|b| format!("{b:02x}")).collect();
    let camera = Camera::start(Vendor::Hikvision, Auth::Digest, Duration::from_secs(3600)).await;
    let state = tempfile::tempdir().unwrap();
    let mut config =
        config(&camera, "hikvision", "digest", &broker, state.path(), "cam-key-0001", Extra::default());
    config.key = Some(firegrid_camera::config::KeyText::new(hex));
    config.validate().unwrap();

    // A gateway that acknowledges without signing: every ack is refused.
    let mut unsigned = Gateway::start_signing(&broker, VILLAGE, true, Some(key.clone()), false).await;
    let (feed, transport) = firegrid_camera::feed(Vendor::Hikvision, Default::default(), 16);
    let agent = Agent::new(config, transport).unwrap();
    let stats = agent.stats();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(agent.run(shutdown.clone()));
    feed.send(&CameraSignal::heartbeat(), 0).await.unwrap();
    feed.send(&signal(1, SignalKind::Fire, true), 0).await.unwrap();
    let mut got = Vec::new();
    unsigned.until(&mut got, |m| contains_all(&camera_messages(m), &["event fire ch1 start 100%"])).await;
    let running = Running { stats: stats.clone(), shutdown: shutdown.clone(), task };
    running.until("refused acks", |s| s.downlinks_refused >= 2).await;
    let s = stats.snapshot();
    assert_eq!(s.acknowledged, 0, "an unsigned ack removed a message: {s:?}");
    assert!(s.outbox_depth >= 2, "{s:?}");
    drop(unsigned);

    // The gateway signs: everything leaves the outbox.
    let mut signed = Gateway::start_signing(&broker, VILLAGE, true, Some(key.clone()), true).await;
    running.until("an empty outbox", |s| s.outbox_depth == 0 && s.acknowledged >= 2).await;

    // A challenge for this boot is answered with a signed `boot` echoing its nonce (the
    // gateway verifies every uplink); a forged one is not answered.
    let boot = got.iter().find(|m| m.dev.as_str() == "cam-key-0001").unwrap().boot;
    let forged = DeviceKey::from_bytes([0x01; 32]);
    let refused_before = stats.snapshot().downlinks_refused;
    command(&broker, "cam-key-0001", 900, DownlinkBody::Challenge { nonce: 41 }, boot, &forged).await;
    command(&broker, "cam-key-0001", 901, DownlinkBody::Challenge { nonce: 42 }, boot, &key).await;
    let mut answers = Vec::new();
    signed.until(&mut answers, |m| m.iter().any(|m| matches!(m.body, UplinkBody::Boot(_)))).await;
    let nonces: Vec<u64> = answers
        .iter()
        .filter_map(|m| match &m.body {
            UplinkBody::Boot(b) => Some(b.nonce),
            _ => None,
        })
        .collect();
    assert_eq!(nonces, [42]);
    running.until("the forged challenge refused", |s| s.downlinks_refused > refused_before).await;
    running.stop().await;
}

/// Publishes one command to `device`, signed with `key` for `boot`, as the gateway would.
async fn command(broker: &Mosquitto, device: &str, seq: u32, body: DownlinkBody, boot: u16, key: &DeviceKey) {
    let (village, dev) = (VillageId::new(VILLAGE).unwrap(), DeviceId::new(device).unwrap());
    let mut cmd = Downlink::new(seq, 0, body);
    cmd.sign(&village, &dev, boot, key);
    let mut buf = [0u8; 256];
    let payload = cmd.encode(Encoding::Json, &mut buf).unwrap().to_vec();
    let topic = Topic::downlink(village, dev, cmd.kind()).to_buf().to_string();
    let mut options = rumqttc::MqttOptions::new(format!("commander-{seq}"), broker.host(), broker.port());
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
    client.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload).await.unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
                return;
            }
        }
    })
    .await
    .expect("the broker did not take the command");
}

/// A camera whose channels stay healthy sends nothing on change, so the agent speaks for it
/// every `status_every` with a `status` `online`: the gateway's liveness hears the camera.
/// Counted, not timed: at least three of them arrive while nothing else happens, numbered in
/// the same sequence as everything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_camera_still_reports_online_every_status_period() {
    let broker = Mosquitto::start().unwrap();
    let mut gateway = Gateway::start(&broker, VILLAGE, true).await;
    let camera = Camera::start(Vendor::Hikvision, Auth::Digest, Duration::from_secs(3600)).await;
    let state = tempfile::tempdir().unwrap();
    let extra = Extra { mqtt: "status_every = \"300ms\"", ..Extra::default() };
    let config = config(&camera, "hikvision", "digest", &broker, state.path(), "cam-quiet-01", extra);
    let (feed, transport) = firegrid_camera::feed(Vendor::Hikvision, Default::default(), 16);
    let agent = Agent::new(config, transport).unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(agent.run(shutdown.clone()));
    feed.send(&CameraSignal::heartbeat(), 0).await.unwrap();
    let online = |m: &[firegrid_protocol::Uplink]| {
        m.iter().filter(|m| matches!(m.body, UplinkBody::Status(ref s) if s.online)).count()
    };
    let mut got = Vec::new();
    // The connect's own `status` `online`, then the periodic ones.
    gateway.until(&mut got, |m| online(m) >= 4).await;
    check_sequence(&got, &DeviceId::new("cam-quiet-01").unwrap());
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
