//! Firmware over the air, end to end: the `firegrid` binary with a registry, a key store made
//! by `firegrid devices provision`, and a real Mosquitto with the password and ACL files
//! `firegrid broker mosquitto` generates (each detector logs in as itself and reads only its
//! own downlinks). Simulated detectors (the real detector core, update receiver and bootloader
//! on simulated flash) take their commands off their MQTT subscriptions and answer with
//! signed `fw_status` uplinks. `firegrid firmware publish` starts the rollout on the running
//! gateway; it refuses an image signed by another key, and one whose security counter is below
//! the one it published (a downgrade the detectors would refuse). A vendor key rotation: a
//! detector that retired key 0 refuses its image (`failed_revoked_key`), the release signed
//! with key slot 1 boots everywhere and retires key 0 on every detector, and key 0's images
//! are refused at publish from then on. A real-size image (64 KiB,
//! 171 chunks) arrives paced under the devices' firmware admission budget: not one status
//! refused, not one command sent again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use firegrid_gateway::firmware::signing;
use firegrid_protocol::DeviceKey;
use firegrid_tests::firegrid::alarm_loop_section;
use firegrid_tests::officers::{Officer, write_directory};
use firegrid_tests::ota::{large_image, new_image, old_image, vendor, vendor_slot};
use firegrid_tests::ota_mqtt::{Fleet, Login, Member};
use firegrid_tests::{Firegrid, Mosquitto, WebhookReceiver, firegrid_binary};

use crate::trust::{devices, firegrid};

pub(crate) const VILLAGE: &str = "fuhai-1";

/// A village of `n` keyed detectors behind a running gateway and an authenticating broker
/// (the console's firmware test uses it too).
pub(crate) struct Village {
    _dir: tempfile::TempDir,
    _hook: WebhookReceiver,
    pub(crate) broker: Mosquitto,
    pub(crate) gateway: Firegrid,
    /// The gateway's configuration file.
    pub(crate) config: PathBuf,
    /// Each detector's id and key.
    pub(crate) keys: Vec<(String, DeviceKey)>,
    /// The new image ([`new_image`] unless told otherwise), signed by the vendor.
    pub(crate) image: PathBuf,
    /// The street desk's officer token (a duty officer).
    pub(crate) desk_token: String,
    /// The token of the leader of the village's grid (a role the device routes refuse).
    pub(crate) grid_token: String,
}

fn registry(dir: &Path, n: usize) -> PathBuf {
    let mut csv = String::from(
        "device_id,kind,model,building_id,building_address,lat,lon,grid,community,street,village\n",
    );
    for i in 0..n {
        csv.push_str(&format!(
            "sd-{i},smoke_detector,JTY-GD,A1,No. 1 Lane,25.03,102.66,G1,C1,Fuhai,{VILLAGE}\n"
        ));
    }
    let path = dir.join("registry.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

pub(crate) async fn village(n: usize) -> Village {
    village_with(n, &new_image()).await
}

/// [`village`], with `new` as the image to roll out.
async fn village_with(n: usize, new: &[u8]) -> Village {
    village_keyed(n, new, false).await
}

/// [`village_with`]; with `by_slot`, the gateway is configured with the bootloader's three
/// keys by slot (`vendor_public_keys`) instead of slot 0's alone (`vendor_public_key`).
async fn village_keyed(n: usize, new: &[u8], by_slot: bool) -> Village {
    village_configured(n, new, by_slot, String::new()).await
}

/// [`village_keyed`], with `extra` in the gateway's configuration (top-level tables).
pub(crate) async fn village_configured(n: usize, new: &[u8], by_slot: bool, extra: String) -> Village {
    let hook = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let registry = registry(dir.path(), n);
    let (keys, batch) = (dir.path().join("keys.toml"), dir.path().join("batch.csv"));
    let (r, k, b) = (registry.to_str().unwrap(), keys.to_str().unwrap(), batch.to_str().unwrap());
    let said = devices(&["provision", "--registry", r, "--keys", k, "--out", b]);
    assert!(said.contains(&format!("Issued {n} key(s)")), "{said}");
    let issued: Vec<(String, DeviceKey)> = std::fs::read_to_string(&batch)
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| {
            let cols: Vec<_> = line.split(',').collect();
            (cols[1].to_owned(), DeviceKey::from_hex(cols[2]).unwrap())
        })
        .collect();
    let broker_dir = dir.path().join("broker");
    firegrid(&[
        "broker",
        "mosquitto",
        "--registry",
        r,
        "--keys",
        k,
        "--out-dir",
        broker_dir.to_str().unwrap(),
    ]);
    let gateway_password =
        std::fs::read_to_string(broker_dir.join("gateway.password")).unwrap().trim().to_owned();
    let broker = Mosquitto::start_secured(&broker_dir.join("passwd"), &broker_dir.join("acl")).unwrap();
    let officers = dir.path().join("officers.toml");
    let officer = |id, role, scope| Officer { id, name: id, role, scope, on_duty: true };
    let [desk_token, grid_token]: [String; 2] = write_directory(
        &officers,
        &[
            officer("street-desk", "duty_officer", "street:Fuhai"),
            officer("grid-leader", "grid_leader", "grid:G1"),
        ],
    )
    .try_into()
    .unwrap();
    let hex = |k: &SigningKey| -> String {
        k.verifying_key().as_bytes().iter().map(|b| format!("{b:02x}")).collect()
    };
    let vendor_keys = if by_slot {
        let slots: Vec<String> = (0..3).map(|slot| format!("\"{}\"", hex(&vendor_slot(slot)))).collect();
        format!("vendor_public_keys = [{}]", slots.join(", "))
    } else {
        format!("vendor_public_key = \"{}\"", hex(&vendor()))
    };
    let (port, hook_port) = (broker.port(), hook.port());
    let config_dir = Arc::new(Mutex::new(None::<PathBuf>));
    let seen = config_dir.clone();
    let gateway = Firegrid::start(move |d: &Path, http_port: u16| {
        *seen.lock().unwrap() = Some(d.join("firegrid.toml"));
        format!(
            r#"
data_dir = "{data}"
http_listen = "127.0.0.1:{http_port}"
[mqtt]
host = "127.0.0.1"
port = {port}
client_id = "gw-ota"
username = "firegrid-gateway"
password = "{gateway_password}"
max_backoff = "500ms"
{extra}
[firmware]
{vendor_keys}
{tail}"#,
            data = d.join("data").display(),
            tail = alarm_loop_section(&registry, &keys, &officers, hook_port),
        )
    })
    .unwrap();
    let config = config_dir.lock().unwrap().clone().unwrap();
    let image = dir.path().join("detector-1.5.0.bin");
    std::fs::write(&image, new).unwrap();
    // Security counter 2: the release fixes a vulnerability of the ones before it.
    signing::sign_with_counter(new, "1.5.0", 2, &vendor()).unwrap().save(&image).unwrap();
    Village { _dir: dir, _hook: hook, broker, gateway, config, keys: issued, image, desk_token, grid_token }
}

/// Runs `firegrid firmware <args>`: (success, stdout and stderr).
pub(crate) fn firmware(args: &[&str]) -> (bool, String) {
    let out =
        std::process::Command::new(firegrid_binary().unwrap()).arg("firmware").args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

pub(crate) fn state(v: &Village, state: &str) -> f64 {
    let sample = format!(r#"firegrid_firmware_devices{{state="{state}"}}"#);
    v.gateway.metric(&sample).unwrap().unwrap_or(0.0)
}

/// Waits until `done` holds of the gateway's `/metrics`, for at most a minute.
pub(crate) async fn wait(v: &Village, what: &str, done: impl Fn(&Village) -> bool) {
    wait_for(v, what, Duration::from_secs(60), done).await
}

/// Waits until `done` holds of the gateway's `/metrics`, for at most `limit`.
async fn wait_for(v: &Village, what: &str, limit: Duration, done: impl Fn(&Village) -> bool) {
    let deadline = Instant::now() + limit;
    while !done(v) {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen\n{}\n{}",
            firmware(&["status", "--config", v.config.to_str().unwrap()]).1,
            v.gateway.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the gateway has accepted `n` `fw_status` uplinks (the detectors' announcements).
pub(crate) async fn announced(v: &Village, n: usize) {
    crate::trust::wait_metric(&v.gateway, r#"firegrid_messages_accepted_total{kind="fw_status"}"#, n as f64)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_travels_through_the_broker_and_boots_on_every_detector() {
    let v = village(4).await;
    let config = v.config.to_str().unwrap();
    // sd-2 loses power after its third chunk: it resumes from what its flash holds.
    let members: Vec<Member> = v
        .keys
        .iter()
        .map(|(id, key)| Member {
            power_cut_after_chunks: (id == "sd-2").then_some(3),
            ..Member::new(id, key.clone())
        })
        .collect();
    let fleet = Fleet::start(VILLAGE, members, v.broker.port(), Login::PerDevice, new_image().len());
    announced(&v, 4).await;

    // An image signed by another key is refused before anything reaches the gateway.
    let forged = v.image.with_file_name("forged.bin");
    std::fs::write(&forged, new_image()).unwrap();
    signing::sign(&new_image(), "6.6.6", &SigningKey::from_bytes(&[0x66; 32]))
        .unwrap()
        .save(&forged)
        .unwrap();
    let (ok, said) = firmware(&["publish", forged.to_str().unwrap(), "--config", config, "--all"]);
    assert!(!ok && said.contains("does not verify under the vendor key"), "{said}");
    let unsigned = v.image.with_file_name("unsigned.bin");
    std::fs::write(&unsigned, new_image()).unwrap();
    let (ok, said) = firmware(&["publish", unsigned.to_str().unwrap(), "--config", config, "--all"]);
    assert!(!ok && said.contains("is not signed") && said.contains("unsigned.bin.fwsig.json"), "{said}");
    let (_, status) = firmware(&["status", "--config", config]);
    assert!(status.contains("no rollout has been published"), "{status}");

    let (ok, said) = firmware(&[
        "publish",
        v.image.to_str().unwrap(),
        "--config",
        config,
        "--all",
        "--canary-share",
        "0.25",
        "--wave-size",
        "2",
        "--resend-after",
        "5s",
    ]);
    assert!(ok && said.contains("to 4 device(s)"), "{said}");
    wait(&v, "every detector booted", |v| state(v, "booted") == 4.0).await;
    let outcomes = fleet.stop();
    for o in &outcomes {
        assert_eq!(o.active, new_image(), "{} runs the new image", o.device);
        // One restart into the bootloader for the swap; two with the power cut.
        assert_eq!(o.boot, if o.power_cut { 3 } else { 2 }, "{o:?}");
    }
    assert!(outcomes.iter().any(|o| o.power_cut), "the power cut happened");
    let (_, status) = firmware(&["status", "--config", config]);
    assert!(status.contains(": done, wave 3 of 3") && status.contains("booted: 4"), "{status}");
    assert_eq!(v.gateway.metric("firegrid_firmware_rollout_paused").unwrap(), Some(0.0));
    // Every device's state in the officer API (not in /metrics: one series per device).
    let api = firegrid_tests::officers::OfficerApi::new(v.gateway.http_port());
    let rollout = api.get(&v.desk_token, "/api/v1/firmware/rollout").await;
    let states: Vec<&str> =
        rollout["devices"].as_array().unwrap().iter().map(|d| d["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["booted"; 4], "{rollout}");
    assert_eq!(api.call(reqwest::Method::GET, "/api/v1/firmware/rollout", None, None).await.0, 401);
    let spec = api.call(reqwest::Method::GET, "/api/v1/openapi.json", None, None).await.1;
    assert!(spec["paths"]["/api/v1/firmware/rollout"]["get"].is_object(), "described in the OpenAPI spec");
    let chunks = v.gateway.metric(r#"firegrid_firmware_commands_total{kind="fw_chunk"}"#).unwrap().unwrap();
    assert!(chunks >= 40.0, "ten chunks per detector at least: {chunks}");

    // The old image, validly signed by the vendor (`firegrid firmware sign`) with the lower
    // security counter of a vulnerable release: refused at publish, and the rollout that
    // booted stays the published one.
    let key = v.image.with_file_name("vendor.key");
    std::fs::write(&key, format!("{}\n", "42".repeat(32))).unwrap();
    let older = v.image.with_file_name("detector-1.4.9.bin");
    std::fs::write(&older, old_image()).unwrap();
    let (ok, said) = firmware(&[
        "sign",
        older.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--version",
        "1.4.9",
        "--security-counter",
        "1",
    ]);
    assert!(ok && said.contains("security counter 1"), "{said}");
    let (ok, said) =
        firmware(&["publish", older.to_str().unwrap(), "--config", config, "--all", "--replace"]);
    assert!(!ok && said.contains("1.4.9 carries security counter 1, below the 2 of 1.5.0"), "{said}");
    let (_, status) = firmware(&["status", "--config", config]);
    assert!(status.contains("of 1.5.0: done") && status.contains("booted: 4"), "{status}");
}

/// Key 0 leaked: the vendor rotates to key slot 1. `sd-1` already retired key 0 (its key floor
/// is 1, as on a detector that installed a slot-1 release elsewhere): it refuses the slot-0
/// release, the gateway counts it `failed_revoked_key`, and it keeps its image. The release
/// signed with `--key-slot 1` boots on both and raises `sd-0`'s key floor to 1; after it, the
/// gateway refuses key 0's images at publish, even with a higher version and counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_through_the_broker_retires_key_0_on_every_detector() {
    let v = village_keyed(2, &new_image(), true).await;
    let config = v.config.to_str().unwrap();
    let members: Vec<Member> = v
        .keys
        .iter()
        .map(|(id, key)| Member { key_floor: u32::from(id == "sd-1"), ..Member::new(id, key.clone()) })
        .collect();
    let fleet = Fleet::start(VILLAGE, members, v.broker.port(), Login::PerDevice, new_image().len());
    announced(&v, 2).await;

    // The release as signed by key 0 (the village's image, slot 0).
    let (ok, said) = firmware(&["publish", v.image.to_str().unwrap(), "--config", config, "--all"]);
    assert!(ok && said.contains("key slot 0"), "{said}");
    wait(&v, "sd-0 booted, sd-1 refused the revoked key", |v| {
        state(v, "booted") == 1.0 && state(v, "failed_revoked_key") == 1.0
    })
    .await;
    let (_, status) = firmware(&["status", "--config", config]);
    assert!(status.contains("failed_revoked_key: 1"), "{status}");

    // The rotation: the next release signed with key slot 1 (`firegrid firmware sign`).
    let rotated_bytes: Vec<u8> = new_image().iter().rev().copied().collect();
    let key_1 = v.image.with_file_name("vendor-1.key");
    std::fs::write(&key_1, format!("{}\n", "43".repeat(32))).unwrap();
    let rotated = v.image.with_file_name("detector-2.0.0.bin");
    std::fs::write(&rotated, &rotated_bytes).unwrap();
    let (ok, said) = firmware(&[
        "sign",
        rotated.to_str().unwrap(),
        "--key",
        key_1.to_str().unwrap(),
        "--version",
        "2.0.0",
        "--security-counter",
        "2",
        "--key-slot",
        "1",
    ]);
    assert!(ok && said.contains("key slot 1"), "{said}");
    // Signed by key 1 but labelled slot 0 in the file: refused before anything is sent.
    let signed_path = signing::signed_path(&rotated);
    let text = std::fs::read_to_string(&signed_path).unwrap();
    std::fs::write(&signed_path, text.replace("\"key_slot\": 1", "\"key_slot\": 0")).unwrap();
    let (ok, said) =
        firmware(&["publish", rotated.to_str().unwrap(), "--config", config, "--all", "--replace"]);
    assert!(!ok && said.contains("does not verify under the vendor key of slot 0"), "{said}");
    std::fs::write(&signed_path, text).unwrap();
    let (ok, said) =
        firmware(&["publish", rotated.to_str().unwrap(), "--config", config, "--all", "--replace"]);
    assert!(ok && said.contains("key slot 1"), "{said}");
    wait(&v, "both detectors booted the slot-1 release", |v| state(v, "booted") == 2.0).await;

    // Key 0's image with a higher version and counter: the gateway refuses it at publish.
    let key_0 = v.image.with_file_name("vendor-0.key");
    std::fs::write(&key_0, format!("{}\n", "42".repeat(32))).unwrap();
    let leaked = v.image.with_file_name("detector-9.9.9.bin");
    std::fs::write(&leaked, old_image()).unwrap();
    let (ok, said) = firmware(&[
        "sign",
        leaked.to_str().unwrap(),
        "--key",
        key_0.to_str().unwrap(),
        "--version",
        "9.9.9",
        "--security-counter",
        "9",
    ]);
    assert!(ok, "{said}");
    let (ok, said) =
        firmware(&["publish", leaked.to_str().unwrap(), "--config", config, "--all", "--replace"]);
    assert!(!ok && said.contains("9.9.9 is signed by key slot 0, below the slot 1 of 2.0.0"), "{said}");
    let outcomes = fleet.stop();
    for o in &outcomes {
        assert_eq!(o.active, rotated_bytes, "{} runs the slot-1 release", o.device);
        assert_eq!(o.key_floor, 1, "{} retired key 0", o.device);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detector_failing_its_self_test_rolls_back_and_pauses_the_rollout_across_a_restart() {
    let mut v = village(4).await;
    let config = v.config.to_str().unwrap();
    // sd-0 is the canary, and its horn fails the new image's self-test.
    let members: Vec<Member> = v
        .keys
        .iter()
        .map(|(id, key)| Member { self_test_fails: id == "sd-0", ..Member::new(id, key.clone()) })
        .collect();
    let fleet = Fleet::start(VILLAGE, members, v.broker.port(), Login::PerDevice, new_image().len());
    announced(&v, 4).await;
    let (ok, said) = firmware(&[
        "publish",
        v.image.to_str().unwrap(),
        "--config",
        config,
        "--all",
        "--canary-share",
        "0.25",
        "--wave-size",
        "3",
        "--max-failure-share",
        "0.1",
        "--resend-after",
        "2s",
    ]);
    assert!(ok, "{said}");
    wait(&v, "the canary failed and the rollout paused", |v| {
        state(v, "failed_rolled_back") == 1.0
            && v.gateway.metric("firegrid_firmware_rollout_paused").unwrap() == Some(1.0)
    })
    .await;
    // Paused: the other three were never offered the image.
    assert_eq!(state(&v, "waiting"), 3.0);
    let (_, status) = firmware(&["status", "--config", config]);
    assert!(
        status.contains(": paused, wave 1 of 2") && status.contains("sd-0 failed_rolled_back"),
        "{status}"
    );
    // Why it paused, in numbers: the one settled device failed, over the 10 % threshold.
    assert!(
        status.contains("Paused by itself: 100 % of the settled devices failed, above its threshold of 10 %"),
        "{status}"
    );

    // A gateway restart keeps the failure and the pause (the progress file), and offers
    // nothing to anyone.
    let offers = r#"firegrid_firmware_commands_total{kind="fw_offer"}"#;
    assert_eq!(v.gateway.metric(offers).unwrap(), Some(1.0), "only the canary was offered the image");
    v.gateway.restart().unwrap();
    wait(&v, "the restarted gateway took the rollout back, paused", |v| {
        v.gateway.metric("firegrid_firmware_rollout_paused").unwrap() == Some(1.0)
    })
    .await;
    assert_eq!((state(&v, "failed_rolled_back"), state(&v, "waiting")), (1.0, 3.0));
    assert_eq!(v.gateway.metric(offers).unwrap(), None, "no offer since the restart");

    // The operator pauses it too: the status says who holds it now.
    let (ok, said) = firmware(&["pause", "--config", config]);
    assert!(ok, "{said}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, status) = firmware(&["status", "--config", config]);
        if status.contains("Paused by the operator; `firegrid firmware resume` goes on.") {
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The operator resumes: the next wave goes, and finishes.
    let (ok, said) = firmware(&["resume", "--config", config]);
    assert!(ok && said.contains("resumed"), "{said}");
    wait(&v, "the rest booted", |v| state(v, "booted") == 3.0).await;
    let outcomes = fleet.stop();
    let canary = outcomes.iter().find(|o| o.device == "sd-0").unwrap();
    assert_eq!(canary.active[..3_000], old_image()[..], "the canary is back on its old image");
    assert_eq!(canary.boot, 3, "restarted into the trial image, then back into the old one");
    for o in outcomes.iter().filter(|o| o.device != "sd-0") {
        assert_eq!(o.active, new_image(), "{} runs the new image", o.device);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_rollout_finishes_it_after_its_restart() {
    let mut v = village(4).await;
    let members: Vec<Member> = v.keys.iter().map(|(id, key)| Member::new(id, key.clone())).collect();
    let fleet = Fleet::start(VILLAGE, members, v.broker.port(), Login::PerDevice, new_image().len());
    announced(&v, 4).await;
    let args = ["--all", "--canary-share", "0.25", "--wave-size", "3", "--resend-after", "2s"];
    let (ok, said) = firmware(
        &[&["publish", v.image.to_str().unwrap(), "--config", v.config.to_str().unwrap()], &args[..]]
            .concat(),
    );
    assert!(ok, "{said}");
    // Killed once the canary's transfer is under way (wherever the rollout is by then: its
    // progress file is up to a second old, and the devices' flash says the rest).
    let deadline = Instant::now() + Duration::from_secs(30);
    while fleet.commands() < 5 {
        assert!(Instant::now() < deadline, "the rollout did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    v.gateway.kill().unwrap();
    v.gateway.restart().unwrap();
    wait(&v, "every detector booted after the restart", |v| state(v, "booted") == 4.0).await;
    // The restarted gateway offered the image to the canary again (its transfer resumed at
    // the offset its flash held) and to the three others: four offers at least (more if a
    // status was lost across the restart and an offer went out again).
    let offers = v.gateway.metric(r#"firegrid_firmware_commands_total{kind="fw_offer"}"#).unwrap();
    assert!(offers.unwrap_or(0.0) >= 4.0, "{offers:?}");
    for o in fleet.stop() {
        assert_eq!(o.active, new_image(), "{} runs the new image", o.device);
        assert_eq!(o.boot, 2, "{} restarted once, for the swap", o.device);
    }
}

/// The samples of the gateway's `/metrics` whose name is `family`, with their labels.
fn samples(v: &Village, family: &str) -> Vec<(String, f64)> {
    v.gateway
        .metrics()
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_size_image_arrives_paced_with_no_resend_and_no_refused_status() {
    let image = large_image();
    let chunks = image.len().div_ceil(firegrid_protocol::MAX_CHUNK) as f64;
    assert!(chunks >= 160.0, "{chunks} chunks: beyond any admission burst");
    let v = village_with(2, &image).await;
    let config = v.config.to_str().unwrap();
    let members: Vec<Member> = v.keys.iter().map(|(id, key)| Member::new(id, key.clone())).collect();
    let fleet = Fleet::start(VILLAGE, members, v.broker.port(), Login::PerDevice, image.len());
    announced(&v, 2).await;
    // Both at once, and a resend_after short enough that an unpaced transfer (statuses refused
    // after the burst) would still finish, and fail the counts below rather than time out.
    let (ok, said) = firmware(&[
        "publish",
        v.image.to_str().unwrap(),
        "--config",
        config,
        "--all",
        "--canary-share",
        "1.0",
        "--resend-after",
        "5s",
    ]);
    assert!(ok && said.contains("to 2 device(s)"), "{said}");
    // 171 chunks at a 250 ms gap are some 43 s of logical time; the limit only keeps a broken
    // run from hanging (the machine is shared).
    wait_for(&v, "both detectors booted", Duration::from_secs(600), |v| state(v, "booted") == 2.0).await;
    let outcomes = fleet.stop();
    for o in &outcomes {
        assert!(o.active == image, "{} runs the new image", o.device);
        assert_eq!(o.boot, 2, "{o:?}");
    }
    // Every command once: an offer, each chunk, a commit and a confirm per detector.
    let commands = |kind: &str| {
        v.gateway.metric(&format!(r#"firegrid_firmware_commands_total{{kind="{kind}"}}"#)).unwrap()
    };
    assert_eq!(
        [commands("fw_offer"), commands("fw_chunk"), commands("fw_commit"), commands("fw_confirm")],
        [Some(2.0), Some(2.0 * chunks), Some(2.0), Some(2.0)]
    );
    // Shown at zero for every firmware command kind from the rollout's start.
    let resends = samples(&v, "firegrid_firmware_resends_total");
    assert!(resends.len() == 4 && resends.iter().all(|(_, n)| *n == 0.0), "{resends:?}");
    let rejected = samples(&v, "firegrid_messages_rejected_total");
    assert!(!rejected.iter().any(|(name, n)| name.contains("rate_limited") && *n > 0.0), "{rejected:?}");
    // Every status reached the gateway: the announcements, and per detector at least one for
    // the offer and one per chunk.
    let statuses =
        v.gateway.metric(r#"firegrid_messages_accepted_total{kind="fw_status"}"#).unwrap().unwrap();
    assert!(statuses >= 2.0 + 2.0 * (1.0 + chunks), "{statuses}");
}
