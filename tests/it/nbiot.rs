//! NB-IoT detectors update over CoAP: the `firegrid` binary with its `[coap]` endpoint, a key
//! store, and a real Mosquitto for the gateway's own sessions. The detectors (the real
//! detector core, update receiver and bootloader on simulated flash, [`ota_coap::Fleet`]) post
//! their signed `fw_status` uplinks as confirmable CoAP requests and take their firmware
//! commands from the responses, through a link that loses datagrams both ways. libcoap's
//! `coap-client`, an implementation that shares nothing with firegrid, checks the endpoint's
//! answers to what a stranger sends.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use firegrid_protocol::Encoding;
use firegrid_tests::ota::{Detector, new_image};
use firegrid_tests::ota_coap::{Fleet, LossyLink, Timing, free_udp_port};
use firegrid_tests::ota_mqtt::Member;

use crate::ota::{VILLAGE, Village, announced, firmware, state, village_configured, wait};

/// A village of `n` detectors whose gateway serves CoAP on a free UDP port (returned).
async fn village(n: usize) -> (Village, SocketAddr) {
    let port = free_udp_port();
    let coap = format!("[coap]\nlisten = \"127.0.0.1:{port}\"\nanswer_wait = \"1s\"");
    let v = village_configured(n, &new_image(), false, coap).await;
    (v, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The client's timing: its first retransmission after 1.5 s (above the gateway's 1 s wait
/// for an answer, as RFC 7252's 2 s default is above the default 1.5 s), a poll every 0.5 s.
const TIMING: Timing = Timing { ack_timeout: Duration::from_millis(1500), poll: Duration::from_millis(500) };

fn metric(v: &Village, sample: &str) -> f64 {
    v.gateway.metric(sample).unwrap().unwrap_or(0.0)
}

fn rejected(v: &Village, reason: &str) -> f64 {
    metric(v, &format!(r#"firegrid_messages_rejected_total{{reason="{reason}"}}"#))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbiot_detectors_fetch_an_image_over_coap_through_a_lossy_link_and_boot_it() {
    let (v, coap) = village(3).await;
    let config = v.config.to_str().unwrap();
    // Every 7th datagram is lost each way: lost requests, and lost answers whose
    // retransmitted request must be answered again, not refused as a replay.
    let link = LossyLink::start(coap, 7);
    // sd-1 loses power after its third chunk: it resumes from what its flash holds.
    let members: Vec<Member> = v
        .keys
        .iter()
        .map(|(id, key)| Member {
            power_cut_after_chunks: (id == "sd-1").then_some(3),
            ..Member::new(id, key.clone())
        })
        .collect();
    let fleet = Fleet::start(VILLAGE, members, link.addr(), TIMING, new_image().len());
    announced(&v, 3).await;

    let (ok, said) = firmware(&[
        "publish",
        v.image.to_str().unwrap(),
        "--config",
        config,
        "--all",
        "--canary-share",
        "0.34",
        "--wave-size",
        "2",
        "--resend-after",
        "5s",
    ]);
    assert!(ok && said.contains("to 3 device(s)"), "{said}");
    wait(&v, "every NB-IoT detector booted", |v| state(v, "booted") == 3.0).await;
    let counts = fleet.counts.clone();
    let outcomes = fleet.stop();
    for o in &outcomes {
        assert_eq!(o.active, new_image(), "{} runs the new image", o.device);
        assert_eq!(o.boot, if o.power_cut { 3 } else { 2 }, "{o:?}");
        assert!(o.commands >= 10, "its chunks came in CoAP answers: {o:?}");
    }
    assert!(outcomes.iter().any(|o| o.power_cut), "the power cut happened");
    let dropped = link.dropped.load(std::sync::atomic::Ordering::Relaxed);
    assert!(dropped >= 10, "the link lost datagrams: {dropped}");
    let retransmitted = counts.retransmitted.load(std::sync::atomic::Ordering::Relaxed);
    assert!(retransmitted >= 5, "the detectors retransmitted: {retransmitted}");
    // A lost answer's retransmission was answered from the exchange table, so not one status
    // was refused as a replay, and no request was given up.
    assert!(metric(&v, "firegrid_coap_retransmissions_total") >= 1.0);
    assert_eq!(rejected(&v, "replayed"), 0.0, "{}", v.gateway.metrics().unwrap());
    assert_eq!(counts.abandoned.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert!(metric(&v, r#"firegrid_coap_answers_total{outcome="command"}"#) >= 30.0);
    let (_, status) = firmware(&["status", "--config", config]);
    assert!(status.contains("booted: 3"), "{status}");
}

/// Runs libcoap's client against the endpoint and returns the code of the answer it printed
/// (at verbosity 6 it prints every message as `v:1 t:ACK c:2.04 i:...`), or its whole
/// output when it printed none.
fn coap_client(args: &[&str]) -> String {
    let out = Command::new("coap-client-notls")
        .args(["-B", "5", "-v", "6"])
        .args(args)
        .output()
        .expect("coap-client-notls runs (Debian package libcoap3-bin; scripts/test installs it)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    match text.split("t:ACK c:").nth(1) {
        Some(rest) => rest.chars().take(4).collect(),
        None => text,
    }
}

fn signed_status(dir: &Path, v: &Village, device: &str, flip: bool) -> std::path::PathBuf {
    let key = v.keys.iter().find(|(id, _)| id == device).unwrap().1.clone();
    let mut d: Detector = Detector::keyed(VILLAGE, device, key);
    let msg = d.announce(0).pop().expect("an idle status");
    let mut buf = [0u8; firegrid_protocol::MAX_PAYLOAD];
    let mut bytes = msg.encode(Encoding::Compact, &mut buf).unwrap().to_vec();
    if flip {
        // The last byte is the tag's.
        *bytes.last_mut().unwrap() ^= 0x01;
    }
    let path = dir.join(format!("{device}-{flip}.bin"));
    std::fs::write(&path, bytes).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_gets_clear_refusals_and_a_restart_mid_transfer_costs_only_time() {
    let (mut v, coap) = village(3).await;
    let config = v.config.to_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let base = format!("coap://{coap}/fg/v1/{VILLAGE}");

    // An independent client's well-formed, signed status is accepted (2.04); the same bytes
    // once more are a duplicate, answered as a retransmission is and stored once.
    let good = signed_status(dir.path(), &v, "sd-2", false);
    let url = format!("{base}/sd-2/up/fw_status");
    assert_eq!(coap_client(&["-m", "post", "-f", good.to_str().unwrap(), &url]), "2.04", "accepted");
    announced(&v, 1).await;
    assert_eq!(coap_client(&["-m", "post", "-f", good.to_str().unwrap(), &url]), "2.04", "a duplicate");
    crate::trust::wait_metric(&v.gateway, "firegrid_messages_duplicate_total", 1.0).await;
    assert_eq!(metric(&v, r#"firegrid_messages_accepted_total{kind="fw_status"}"#), 1.0, "stored once");
    // A forged tag, a GET, an alarm (not served here yet), a path that is no topic.
    let forged = signed_status(dir.path(), &v, "sd-1", true);
    let forged_url = format!("{base}/sd-1/up/fw_status");
    assert_eq!(coap_client(&["-m", "post", "-f", forged.to_str().unwrap(), &forged_url]), "4.00", "forged");
    assert_eq!(rejected(&v, "bad_signature"), 1.0);
    assert_eq!(coap_client(&["-m", "get", &url]), "4.05");
    assert_eq!(coap_client(&["-m", "post", "-e", "fire", &format!("{base}/sd-1/up/state")]), "4.04");
    assert_eq!(coap_client(&["-m", "post", "-e", "x", &format!("coap://{coap}/.well-known/core")]), "4.04");
    for (reason, n) in [("coap_method", 1.0), ("coap_kind", 1.0), ("coap_path", 1.0)] {
        assert_eq!(rejected(&v, reason), n, "{reason}");
    }
    // Garbage in a datagram: no answer to amplify, counted.
    let stranger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    stranger.send_to(&[0xFF; 300], coap).unwrap();
    crate::trust::wait_metric(
        &v.gateway,
        r#"firegrid_messages_rejected_total{reason="coap_malformed"}"#,
        1.0,
    )
    .await;

    // The rollout to sd-0 and sd-1 (sd-2's status came from the client above), and the gateway
    // restarts in the middle of it: the detectors retransmit into the restart, the new
    // process offers again, and each resumes where its flash stands.
    let members: Vec<Member> =
        v.keys.iter().filter(|(id, _)| id != "sd-2").map(|(id, key)| Member::new(id, key.clone())).collect();
    let fleet = Fleet::start(VILLAGE, members, coap, TIMING, new_image().len());
    let (ok, said) = firmware(&[
        "publish",
        v.image.to_str().unwrap(),
        "--config",
        &config,
        "--devices",
        "sd-0,sd-1",
        "--resend-after",
        "5s",
    ]);
    assert!(ok && said.contains("to 2 device(s)"), "{said}");
    wait(&v, "a transfer under way", |v| {
        metric(v, r#"firegrid_firmware_commands_total{kind="fw_chunk"}"#) >= 6.0
    })
    .await;
    v.gateway.restart().unwrap();
    wait(&v, "both detectors booted after the restart", |v| state(v, "booted") == 2.0).await;
    let outcomes = fleet.stop();
    for o in &outcomes {
        assert_eq!(o.active, new_image(), "{} runs the new image", o.device);
        assert_eq!(o.boot, 2, "one restart, the swap: {o:?}");
    }
    let (_, status) = firmware(&["status", "--config", &config]);
    assert!(status.contains("booted: 2"), "{status}");
}
