//! Trust, tried as an attacker would: the `firegrid` binary with a registry, a key store made
//! by `firegrid devices provision`, a real Mosquitto and a webhook receiver. A client with
//! nothing but network access to the broker forges heartbeats (unsigned, with a wrong key, with
//! a sequence number far ahead) for a keyed detector; every forgery is refused by reason, and
//! the detector's real alarm still pages. Its acknowledgement is signed so that only the
//! detector's key verifies it, the key store is revoked and rotated on the running gateway,
//! and no key appears in the log, `/metrics` or the API.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use firegrid_protocol::{
    DetectorState, DeviceId, DeviceKey, Downlink, DownlinkBody, DownlinkGuard, Encoding, Heartbeat, Limits,
    StateChange, Topic, Uplink, UplinkBody, UplinkKind, VillageId,
};
use firegrid_tests::firegrid::alarm_loop_section;
use firegrid_tests::officers::write_street_desk;
use firegrid_tests::{Firegrid, Mosquitto, WebhookReceiver, firegrid_binary};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const VILLAGE: &str = "fuhai-1";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn registry(dir: &Path) -> PathBuf {
    let mut csv = String::from(
        "device_id,kind,model,building_id,building_address,lat,lon,grid,community,street,village\n",
    );
    for dev in ["sd-a1", "sd-a2", "sd-a3"] {
        csv.push_str(&format!(
            "{dev},smoke_detector,JTY-GD,A1,No. 1 Lane,25.03,102.66,G1,C1,Fuhai,{VILLAGE}\n"
        ));
    }
    let path = dir.join("registry.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

/// Runs `firegrid <args>` and returns its standard output; panics with its output on failure.
pub(crate) fn firegrid(args: &[&str]) -> String {
    let out = std::process::Command::new(firegrid_binary().unwrap()).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "firegrid {args:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Runs `firegrid devices ...` and returns its standard output; panics with its output on failure.
pub(crate) fn devices(args: &[&str]) -> String {
    let out =
        std::process::Command::new(firegrid_binary().unwrap()).arg("devices").args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "firegrid devices {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The keys of a provisioning file, as the factory's flashing tool reads them.
fn read_batch(path: &Path) -> HashMap<String, (String, DeviceKey)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("village,device,key"));
    lines
        .map(|line| {
            let cols: Vec<_> = line.split(',').collect();
            (cols[1].to_owned(), (cols[2].to_owned(), DeviceKey::from_hex(cols[2]).unwrap()))
        })
        .collect()
}

pub(crate) fn config(
    broker: u16,
    hook: u16,
    registry: PathBuf,
    keys: PathBuf,
    officers: PathBuf,
) -> impl Fn(&Path, u16) -> String + Send + Sync + 'static {
    move |dir: &Path, http_port: u16| {
        format!(
            r#"
data_dir = "{data}"
http_listen = "127.0.0.1:{http_port}"
[mqtt]
host = "127.0.0.1"
port = {broker}
client_id = "gw-trust"
max_backoff = "500ms"
{tail}"#,
            data = dir.join("data").display(),
            tail = alarm_loop_section(&registry, &keys, &officers, hook),
        )
    }
}

fn topic(dev: &str, kind: UplinkKind) -> String {
    Topic::uplink(VillageId::new(VILLAGE).unwrap(), DeviceId::new(dev).unwrap(), kind).to_buf().to_string()
}

pub(crate) fn heartbeat_body() -> UplinkBody {
    UplinkBody::Heartbeat(Heartbeat {
        battery_mv: Some(3000),
        signal_dbm: -90,
        chamber_baseline: Some(1500),
        drift_pct: Some(3),
        temperature_c: 21.5,
        firmware: heapless::String::try_from("2.0.0").unwrap(),
        uptime_s: 60,
    })
}

/// An uplink of `dev` in boot 1, signed with `key` when one is given.
pub(crate) fn uplink(
    dev: &str,
    seq: u32,
    body: UplinkBody,
    key: Option<&DeviceKey>,
    enc: Encoding,
) -> (String, Vec<u8>) {
    uplink_in(dev, 1, seq, body, key, enc)
}

fn uplink_in(
    dev: &str,
    boot: u16,
    seq: u32,
    body: UplinkBody,
    key: Option<&DeviceKey>,
    enc: Encoding,
) -> (String, Vec<u8>) {
    let kind = body.kind();
    let mut msg = Uplink::new(DeviceId::new(dev).unwrap(), boot, seq, now_ms(), body);
    if let Some(key) = key {
        msg.sign(&VillageId::new(VILLAGE).unwrap(), key);
    }
    (topic(dev, kind), msg.encode(enc, &mut [0u8; 512]).unwrap().to_vec())
}

pub(crate) fn alarm() -> UplinkBody {
    UplinkBody::State(StateChange { state: DetectorState::Alarm, obscuration_db_m: 0.4 })
}

/// Downlinks a client collected: `(topic, payload)` in arrival order.
pub(crate) type Collected = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A connected MQTT client; with `downlinks`, subscribed to `fg/v1/{village}/+/down/+` and
/// collecting what arrives there.
async fn client(broker: u16, id: &str, downlinks: Option<Collected>) -> AsyncClient {
    let filter = format!("fg/v1/{VILLAGE}/+/down/+");
    client_with(MqttOptions::new(id, "127.0.0.1", broker), &filter, downlinks).await
}

/// A client with `opts`; with `downlinks`, subscribed to `filter` and collecting what arrives.
pub(crate) async fn client_with(
    opts: MqttOptions,
    filter: &str,
    downlinks: Option<Collected>,
) -> AsyncClient {
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    if downlinks.is_some() {
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    }
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Some(got) = &downlinks {
                        got.lock().unwrap().push((p.topic.clone(), p.payload.to_vec()));
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    client
}

pub(crate) async fn publish(client: &AsyncClient, (topic, payload): (String, Vec<u8>)) {
    client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
}

/// Waits until `sample` in `/metrics` reaches `want`.
pub(crate) async fn wait_metric(gateway: &Firegrid, sample: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = gateway.metric(sample).unwrap().unwrap_or(0.0);
        if got >= want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sample} stayed at {got}, expected {want}\n{}",
            gateway.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn rejected(reason: &str) -> String {
    format!(r#"firegrid_messages_rejected_total{{reason="{reason}"}}"#)
}

/// A village of three keyed detectors behind a running gateway: what the tests share.
struct Village {
    broker: Mosquitto,
    hook: WebhookReceiver,
    dir: tempfile::TempDir,
    registry: PathBuf,
    keys: PathBuf,
    batch: PathBuf,
    issued: HashMap<String, (String, DeviceKey)>,
    desk_token: String,
    gateway: Firegrid,
}

/// The registry of three detectors and `firegrid devices provision` on it: the registry, the
/// key store, the provisioning file and the keys it holds.
pub(crate) fn provision(dir: &Path) -> (PathBuf, PathBuf, PathBuf, HashMap<String, (String, DeviceKey)>) {
    let registry = registry(dir);
    let (keys, batch) = (dir.join("keys.toml"), dir.join("batch-1.csv"));
    let said = devices(&[
        "provision",
        "--registry",
        registry.to_str().unwrap(),
        "--keys",
        keys.to_str().unwrap(),
        "--out",
        batch.to_str().unwrap(),
    ]);
    assert!(said.contains("Issued 3 key(s)"), "{said}");
    let issued = read_batch(&batch);
    assert_eq!(issued.len(), 3);
    (registry, keys, batch, issued)
}

async fn village() -> Village {
    let broker = Mosquitto::start().unwrap();
    let hook = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (registry, keys, batch, issued) = provision(dir.path());
    let officers = dir.path().join("officers.toml");
    let desk_token = write_street_desk(&officers, "Fuhai");
    let gateway =
        Firegrid::start(config(broker.port(), hook.port(), registry.clone(), keys.clone(), officers))
            .unwrap();
    Village { broker, hook, dir, registry, keys, batch, issued, desk_token, gateway }
}

/// Waits for the first downlink on `topic` and decodes it.
pub(crate) async fn downlink(got: &Mutex<Vec<(String, Vec<u8>)>>, topic: &str) -> Downlink {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = got.lock().unwrap().iter().find(|(t, _)| t == topic).cloned();
        if let Some((_, payload)) = found {
            return Downlink::receive(&payload, &Limits::default()).unwrap();
        }
        assert!(Instant::now() < deadline, "nothing arrived on {topic}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_messages_are_refused_and_the_real_alarm_still_pages() {
    let Village { broker, hook, dir, registry, keys, batch, issued, gateway, .. } = village().await;

    let got = Arc::new(Mutex::new(Vec::new()));
    let detector = client(broker.port(), "detectors", Some(got.clone())).await;
    let attacker = client(broker.port(), "attacker", None).await;
    let a1 = &issued["sd-a1"].1;

    // The detector is heard, signed.
    publish(&detector, uplink("sd-a1", 1, heartbeat_body(), Some(a1), Encoding::Compact)).await;
    wait_metric(&gateway, r#"firegrid_messages_accepted_total{kind="heartbeat"}"#, 1.0).await;

    // The attacks: unsigned, far ahead in the same boot (the heartbeat that used to silence
    // a detector); signed with another device's key; signed for another village's topics.
    publish(&attacker, uplink("sd-a1", 4_000_000_000, heartbeat_body(), None, Encoding::Json)).await;
    publish(
        &attacker,
        uplink("sd-a1", 4_000_000_001, heartbeat_body(), Some(&issued["sd-a2"].1), Encoding::Json),
    )
    .await;
    let mut moved =
        Uplink::new(DeviceId::new("sd-a1").unwrap(), 1, 4_000_000_002, now_ms(), heartbeat_body());
    moved.sign(&VillageId::new("xicun").unwrap(), a1);
    publish(
        &attacker,
        (
            topic("sd-a1", UplinkKind::Heartbeat),
            moved.encode(Encoding::Compact, &mut [0u8; 512]).unwrap().to_vec(),
        ),
    )
    .await;
    // A forged alarm in the detector's name pages nobody.
    publish(&attacker, uplink("sd-a1", 4_000_000_003, alarm(), None, Encoding::Json)).await;
    wait_metric(&gateway, &rejected("unsigned"), 2.0).await;
    wait_metric(&gateway, &rejected("bad_signature"), 2.0).await;
    assert!(hook.received().is_empty(), "a forged alarm paged someone: {:?}", hook.received());

    // The detector's real alarm that follows opens a case and pages.
    let real = uplink("sd-a1", 2, alarm(), Some(a1), Encoding::Compact);
    publish(&detector, real.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while hook.received().is_empty() {
        assert!(Instant::now() < deadline, "the real alarm paged nobody\n{}", gateway.log_tail(40));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(gateway.metric(r#"firegrid_messages_accepted_total{kind="state"}"#).unwrap(), Some(1.0));
    // The captured alarm, replayed by the attacker: a duplicate, acknowledged again, stored and
    // handled once.
    publish(&attacker, real).await;
    wait_metric(&gateway, "firegrid_messages_duplicate_total", 1.0).await;
    assert_eq!(gateway.metric(r#"firegrid_messages_accepted_total{kind="state"}"#).unwrap(), Some(1.0));

    // Its acknowledgement is signed for sd-a1's current boot: sd-a1's key verifies it once,
    // and no other device's key does.
    let ack = downlink(&got, "fg/v1/fuhai-1/sd-a1/down/ack").await;
    assert_eq!(ack.body, DownlinkBody::Ack { boot: 1, seq: 2 });
    let (village, a1_id) = (VillageId::new(VILLAGE).unwrap(), DeviceId::new("sd-a1").unwrap());
    let mut guard = DownlinkGuard::new();
    assert!(ack.verify(&village, &a1_id, &issued["sd-a2"].1).is_err());
    assert_eq!(guard.admit(&ack, &village, &a1_id, 1, a1), Ok(()));
    assert!(guard.admit(&ack, &village, &a1_id, 1, a1).is_err(), "a replayed ack is refused");

    // Revoked on the running gateway: sd-a3's signed messages are refused from the reload on.
    let said = devices(&["revoke", "--keys", keys.to_str().unwrap(), "sd-a3"]);
    assert!(said.contains("Revoked 1"), "{said}");
    let a3 = issued["sd-a3"].1.clone();
    let mut seq = 10;
    let deadline = Instant::now() + Duration::from_secs(30);
    while gateway.metric(&rejected("revoked")).unwrap().unwrap_or(0.0) < 1.0 {
        assert!(Instant::now() < deadline, "the revocation was never applied\n{}", gateway.log_tail(30));
        publish(&detector, uplink("sd-a3", seq, heartbeat_body(), Some(&a3), Encoding::Json)).await;
        seq += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Rotated: the new key is accepted at once, the old one for the grace period.
    let batch2 = dir.path().join("batch-2.csv");
    devices(&[
        "rotate",
        "--registry",
        registry.to_str().unwrap(),
        "--keys",
        keys.to_str().unwrap(),
        "--out",
        batch2.to_str().unwrap(),
        "--grace",
        "1h",
        "sd-a2",
    ]);
    let rotated = read_batch(&batch2);
    let (new_a2, old_a2) = (rotated["sd-a2"].1.clone(), issued["sd-a2"].1.clone());
    assert_ne!(new_a2, old_a2);
    let accepted = r#"firegrid_messages_accepted_total{kind="fault"}"#;
    let fault = |active| {
        UplinkBody::Fault(firegrid_protocol::Fault { fault: firegrid_protocol::FaultKind::Tamper, active })
    };
    let mut seq = 100;
    let deadline = Instant::now() + Duration::from_secs(30);
    // Until the reload the new key is unknown; once it is accepted, the old key still is.
    while gateway.metric(accepted).unwrap().unwrap_or(0.0) < 1.0 {
        assert!(Instant::now() < deadline, "the rotated key was never accepted\n{}", gateway.log_tail(30));
        publish(&detector, uplink("sd-a2", seq, fault(true), Some(&new_a2), Encoding::Compact)).await;
        seq += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    publish(&detector, uplink("sd-a2", seq + 1, fault(false), Some(&old_a2), Encoding::Compact)).await;
    wait_metric(&gateway, accepted, 2.0).await;

    // No key material anywhere an operator or an attacker can look.
    let log = std::fs::read_to_string(gateway.log_path()).unwrap();
    let metrics = gateway.metrics().unwrap();
    let unknown = gateway.get("/api/unknown-devices").unwrap_or_default();
    for (dev, (hex, _)) in issued.iter().chain(rotated.iter()) {
        for (place, text) in [("log", &log), ("/metrics", &metrics), ("/api/unknown-devices", &unknown)] {
            assert!(!text.contains(hex.as_str()), "{dev}'s key appears in the {place}");
            assert!(!text.contains(&hex.to_uppercase()), "{dev}'s key appears in the {place}");
        }
    }
    use std::os::unix::fs::PermissionsExt;
    for file in [&keys, &batch, &batch2] {
        assert_eq!(
            std::fs::metadata(file).unwrap().permissions().mode() & 0o777,
            0o600,
            "{}",
            file.display()
        );
    }
}

/// A detector whose boot counter went backwards (reflashed) looks like a replay. It recovers by
/// answering the gateway's signed challenge; one that cannot is let back in by a duty officer's
/// audited reset through `firegrid devices reset-window`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reflashed_detector_recovers_by_challenge_or_by_an_officers_reset() {
    let Village { broker, issued, desk_token, gateway, dir, .. } = village().await;
    let got = Arc::new(Mutex::new(Vec::new()));
    let detector = client(broker.port(), "detectors", Some(got.clone())).await;
    let (a1, a2) = (issued["sd-a1"].1.clone(), issued["sd-a2"].1.clone());
    let accepted = |kind: &str| format!(r#"firegrid_messages_accepted_total{{kind="{kind}"}}"#);

    publish(&detector, uplink_in("sd-a1", 57, 1, heartbeat_body(), Some(&a1), Encoding::Compact)).await;
    publish(&detector, uplink_in("sd-a2", 30, 1, heartbeat_body(), Some(&a2), Encoding::Json)).await;
    wait_metric(&gateway, &accepted("heartbeat"), 2.0).await;

    // Reflashed: boot 1. Its signed fault is refused as from an earlier boot and challenged.
    let fault = UplinkBody::Fault(firegrid_protocol::Fault {
        fault: firegrid_protocol::FaultKind::Tamper,
        active: true,
    });
    let refused = uplink_in("sd-a1", 1, 0, fault.clone(), Some(&a1), Encoding::Compact);
    publish(&detector, refused.clone()).await;
    let challenge = downlink(&got, "fg/v1/fuhai-1/sd-a1/down/challenge").await;
    let (village, a1_id) = (VillageId::new(VILLAGE).unwrap(), DeviceId::new("sd-a1").unwrap());
    assert_eq!(challenge.verify(&village, &a1_id, &a1), Ok(1), "signed for the device's new boot");
    let DownlinkBody::Challenge { nonce } = challenge.body else { panic!("{challenge:?}") };
    assert_eq!(gateway.metric(&rejected("earlier_boot")).unwrap(), Some(1.0));
    assert_eq!(gateway.metric(&accepted("fault")).unwrap(), None);
    // The signed answer restarts the window; the detector's resent fault is accepted.
    let answer = UplinkBody::Boot(firegrid_protocol::BootAnnouncement { nonce });
    publish(&detector, uplink_in("sd-a1", 1, 1, answer, Some(&a1), Encoding::Compact)).await;
    wait_metric(&gateway, &accepted("boot"), 1.0).await;
    publish(&detector, refused).await;
    wait_metric(&gateway, &accepted("fault"), 1.0).await;

    // sd-a2 is reflashed too but never answers. A duty officer resets its window.
    let stuck = uplink_in("sd-a2", 2, 0, fault, Some(&a2), Encoding::Json);
    publish(&detector, stuck.clone()).await;
    wait_metric(&gateway, &rejected("earlier_boot"), 2.0).await;
    let reset = |token: &str| {
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, token).unwrap();
        std::process::Command::new(firegrid_binary().unwrap())
            .args(["devices", "reset-window", "--api"])
            .arg(format!("http://127.0.0.1:{}", gateway.http_port()))
            .arg("--token-file")
            .arg(&token_file)
            .arg("sd-a2")
            .output()
            .unwrap()
    };
    let refused = reset("not-a-token");
    assert_eq!(refused.status.code(), Some(2), "a wrong token is refused");
    let done = reset(&desk_token);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert!(
        String::from_utf8_lossy(&done.stdout).contains("reset"),
        "{}",
        String::from_utf8_lossy(&done.stdout)
    );
    publish(&detector, stuck).await;
    wait_metric(&gateway, &accepted("fault"), 2.0).await;
    // The reset is on the record, with the officer.
    let log = std::fs::read_to_string(gateway.log_path()).unwrap();
    assert!(log.contains("Officer reset the device's replay window") && log.contains("street-desk"), "{log}");
}

/// How a connection attempt ended: `Ok` on an accepting CONNACK, else the refusal.
async fn connect(broker: u16, id: &str, credentials: Option<(&str, &str)>) -> Result<AsyncClient, String> {
    crate::tls::connect(MqttOptions::new(id, "127.0.0.1", broker), credentials).await
}

/// Defence in depth: Mosquitto with the password and ACL files `firegrid broker mosquitto`
/// generates. Anonymous and wrong-password connections are refused, a device's account cannot
/// publish as another device, and the keyed detector's alarm (over its own account, which the
/// gateway reads through its own) still pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_admits_only_who_belongs_and_each_only_to_its_own_topics() {
    let hook = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (registry, keys, _, issued) = provision(dir.path());
    let broker_dir = dir.path().join("broker");
    let said = firegrid(&[
        "broker",
        "mosquitto",
        "--registry",
        registry.to_str().unwrap(),
        "--keys",
        keys.to_str().unwrap(),
        "--out-dir",
        broker_dir.to_str().unwrap(),
    ]);
    assert!(said.contains("3 device account(s)"), "{said}");
    let gateway_password =
        std::fs::read_to_string(broker_dir.join("gateway.password")).unwrap().trim().to_owned();
    let broker = Mosquitto::start_secured(&broker_dir.join("passwd"), &broker_dir.join("acl")).unwrap();
    let officers = dir.path().join("officers.toml");
    write_street_desk(&officers, "Fuhai");
    let base = config(broker.port(), hook.port(), registry.clone(), keys.clone(), officers);
    let gateway = Firegrid::start(move |d: &Path, port: u16| {
        base(d, port).replace(
            "client_id = \"gw-trust\"",
            &format!(
                "client_id = \"gw-trust\"\nusername = \"firegrid-gateway\"\npassword = \"{gateway_password}\""
            ),
        )
    })
    .unwrap();

    let (a1, a2) = (issued["sd-a1"].1.clone(), issued["sd-a2"].1.clone());
    let (p1, p2) = (a1.mqtt_password().to_string(), a2.mqtt_password().to_string());
    // Refused at the door.
    let Err(anonymous) = connect(broker.port(), "anon", None).await else {
        panic!("anonymous connect was accepted")
    };
    assert!(anonymous.to_lowercase().contains("auth"), "{anonymous}");
    let Err(wrong) = connect(broker.port(), "guess", Some(("sd-a1", "0000"))).await else {
        panic!("a wrong password was accepted")
    };
    assert!(wrong.to_lowercase().contains("auth") || wrong.contains("BadUserNamePassword"), "{wrong}");
    assert!(
        connect(broker.port(), "as-gw", Some(("firegrid-gateway", &p1))).await.is_err(),
        "a device's password opened the gateway's account"
    );

    // sd-a2's own account, publishing in sd-a1's name: the broker drops it, the gateway never sees it.
    let a2_client = connect(broker.port(), "sd-a2", Some(("sd-a2", &p2))).await.unwrap();
    publish(&a2_client, uplink("sd-a1", 4_000_000_000, heartbeat_body(), None, Encoding::Json)).await;
    publish(&a2_client, uplink("sd-a1", 7, alarm(), Some(&a2), Encoding::Json)).await;
    // Its own heartbeat behind them, as a barrier: once it is in, the two before it were handled.
    publish(&a2_client, uplink("sd-a2", 1, heartbeat_body(), Some(&a2), Encoding::Json)).await;
    wait_metric(&gateway, r#"firegrid_messages_accepted_total{kind="heartbeat"}"#, 1.0).await;
    for reason in ["unsigned", "bad_signature"] {
        assert_eq!(
            gateway.metric(&rejected(reason)).unwrap(),
            None,
            "{reason}: the broker let a forgery through"
        );
    }

    // The real detector, over its own account: its alarm pages, its ack reaches it.
    let got: Collected = Arc::new(Mutex::new(Vec::new()));
    let mut opts = MqttOptions::new("sd-a1", "127.0.0.1", broker.port());
    opts.set_credentials("sd-a1", p1.clone());
    let a1_client = client_with(opts, "fg/v1/fuhai-1/sd-a1/down/+", Some(got.clone())).await;
    // sd-a2 tries to command sd-a1: dropped by the broker (only the gateway may publish downlinks).
    let forged = Downlink::new(9, now_ms(), DownlinkBody::Hush { duration_s: 600 });
    let forged = forged.encode(Encoding::Json, &mut [0u8; 256]).unwrap().to_vec();
    a2_client.publish("fg/v1/fuhai-1/sd-a1/down/hush", QoS::AtLeastOnce, false, forged).await.unwrap();
    publish(&a1_client, uplink("sd-a1", 1, alarm(), Some(&a1), Encoding::Compact)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while hook.received().is_empty() {
        assert!(Instant::now() < deadline, "the real alarm paged nobody\n{}", gateway.log_tail(40));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ack = downlink(&got, "fg/v1/fuhai-1/sd-a1/down/ack").await;
    assert_eq!(ack.body, DownlinkBody::Ack { boot: 1, seq: 1 });
    let seen: Vec<String> = got.lock().unwrap().iter().map(|(t, _)| t.clone()).collect();
    assert!(
        !seen.iter().any(|t| t.ends_with("/down/hush")),
        "sd-a2's forged command reached sd-a1: {seen:?}"
    );
}

/// On an address others can reach, the operations endpoints (`/metrics`,
/// `/api/unknown-devices`, the detailed `/healthz`) move to a loopback listener of their own,
/// and officer tokens are never served over plain HTTP unless a TLS proxy is declared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoints_stay_on_loopback_and_tokens_never_travel_in_clear() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let officers = dir.path().join("officers.toml");
    write_street_desk(&officers, "Fuhai");
    let ops = firegrid_tests::free_port().unwrap();
    let plain = {
        let officers = officers.clone();
        let broker = broker.port();
        move |d: &Path, http_port: u16| {
            format!(
                "data_dir = \"{}\"\nhttp_listen = \"0.0.0.0:{http_port}\"\n[mqtt]\nhost = \"127.0.0.1\"\nport = {broker}\nclient_id = \"gw-ops\"\n[alerting]\ndistrict = \"Xishan\"\nofficers = \"{}\"\n",
                d.join("data").display(),
                officers.display()
            )
        }
    };
    // Refused, with the reason and the way out.
    let file = dir.path().join("plain.toml");
    std::fs::write(&file, plain(dir.path(), 18080)).unwrap();
    let out = std::process::Command::new(firegrid_binary().unwrap())
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("refusing to serve officer tokens over plain HTTP") && said.contains("http_tls_proxy"),
        "{said}"
    );

    let gateway = Firegrid::start(move |d: &Path, port: u16| {
        format!("http_tls_proxy = true\nops_listen = \"127.0.0.1:{ops}\"\n{}", plain(d, port))
    })
    .unwrap();
    let public = format!("http://127.0.0.1:{}", gateway.http_port());
    let private = format!("http://127.0.0.1:{ops}");
    for path in ["/metrics", "/api/unknown-devices"] {
        assert_eq!(get(&format!("{public}{path}")).0, 404, "{path} is served to the network");
        assert_eq!(get(&format!("{private}{path}")).0, 200, "{path} is missing on the ops listener");
    }
    let brief = get(&format!("{public}/healthz"));
    assert_eq!((brief.0, brief.1.trim()), (200, r#"{"ok":true}"#));
    let full = get(&format!("{private}/healthz"));
    assert!(full.0 == 200 && full.1.contains("mqtt"), "{}", full.1);
    assert!(get(&format!("{private}/metrics")).1.contains("firegrid_"), "no metrics on the ops listener");
}

/// A GET's status and body.
fn get(url: &str) -> (u16, String) {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).proxy(None).build().into();
    let mut reply = agent.get(url).call().unwrap();
    (reply.status().as_u16(), reply.body_mut().read_to_string().unwrap_or_default())
}

/// `check-config` refuses whatever `run` refuses, and names every problem at once; both take
/// the file as `--config FILE`.
#[test]
fn check_config_finds_every_problem_run_would_stop_at() {
    let dir = tempfile::tempdir().unwrap();
    let registry = registry(dir.path());
    let officers = dir.path().join("officers.toml");
    // Scope typo: the registry's street is "Fuhai".
    write_street_desk(&officers, "Fuhia");
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = \"{data}\"\n[registry]\ncsv = \"{registry}\"\nkeys = \"{dir}/no-keys.toml\"\n\
             [alerting]\nofficers = \"{officers}\"\nholidays = \"{dir}/no-holidays.toml\"\n\
             routes = {{ \"*\" = [\"pager\"], \"grid\" = [\"hook\"] }}\n\
             [notify.channels.hook]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"x\"\n",
            data = dir.path().join("data").display(),
            registry = registry.display(),
            dir = dir.path().display(),
            officers = officers.display(),
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(firegrid_binary().unwrap())
            .args(args)
            .arg("--config")
            .arg(&file)
            .output()
            .unwrap();
        (
            out.status.code(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (code, checked) = run(&["check-config"]);
    assert_eq!(code, Some(2), "{checked}");
    let expected = [
        "no-keys.toml",
        "no-holidays.toml",
        "\"pager\", which [notify.channels] does not define",
        "\"grid\" is not `level:name`",
        "scope street:Fuhia, which no device",
    ];
    for problem in expected {
        assert!(checked.contains(problem), "check-config missed {problem:?}:\n{checked}");
    }
    assert!(checked.contains("5 problems"), "{checked}");
    // `run` stops at start with the same problems.
    let (code, ran) = run(&["run"]);
    assert_ne!(code, Some(0), "{ran}");
    for problem in expected {
        assert!(ran.contains(problem), "run did not name {problem:?}:\n{ran}");
    }
}
