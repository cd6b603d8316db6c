//! Fire linkage that ends, end to end: the `firegrid` binary and a real Mosquitto, with the
//! test subscribed as the building's detectors (`fg/v1/{village}/{device}/down/+`). A
//! confirmed fire switches the building's sounders on; one detector confirms with its
//! `command_ack`; after a `kill -9` and a restart the state is sent again to the other one
//! only; disposing the case as a false alarm switches them off;
//! the next fire in the building is on again and off when the officer resets it. Every
//! command has its own number, also across the restart; the next building hears nothing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use firegrid_protocol::{
    DetectorState, DeviceId, Encoding, StateChange, Topic, Uplink, UplinkBody, UplinkKind, VillageId,
};
use firegrid_tests::officers::{OfficerApi, write_street_desk};
use firegrid_tests::{Firegrid, Mosquitto};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};

const VILLAGE: &str = "fuhai-1";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn registry(dir: &Path) -> PathBuf {
    let mut csv = String::from(
        "device_id,kind,model,building_id,building_address,lat,lon,grid,community,street,village\n",
    );
    for (dev, building, grid) in [("sd-a1", "A1", "G1"), ("sd-a2", "A1", "G1"), ("sd-b1", "B1", "G2")] {
        csv.push_str(&format!(
            "{dev},smoke_detector,JTY-GD,{building},No. 1 Lane,25.03,102.66,{grid},C1,Fuhai,{VILLAGE}\n"
        ));
    }
    let path = dir.join("registry.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

fn config(broker: u16, registry: PathBuf, officers: PathBuf) -> impl Fn(&Path, u16) -> String + Send + Sync {
    move |dir: &Path, http_port: u16| {
        format!(
            r#"
data_dir = "{data}"
http_listen = "127.0.0.1:{http_port}"
[mqtt]
host = "127.0.0.1"
port = {broker}
client_id = "gw-linkage"
max_backoff = "500ms"
[registry]
csv = "{registry}"
[alerting]
district = "Xishan"
officers = "{officers}"
# Never within the test: what is sent again after the restart is the restart's doing.
linkage_resend = "1h"
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

/// Sounder commands heard by each device, in arrival order: (device, on, seq).
type Heard = Arc<Mutex<Vec<(String, bool, u64)>>>;

async fn listen_as_detectors(port: u16, devices: &[&str]) -> Heard {
    let heard: Heard = Arc::default();
    let mut opts = MqttOptions::new("building-a1-detectors", "127.0.0.1", port);
    opts.set_clean_session(false);
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    for dev in devices {
        client.subscribe(format!("fg/v1/{VILLAGE}/{dev}/down/+"), QoS::AtLeastOnce).await.unwrap();
    }
    let sink = heard.clone();
    let (subscribed_tx, mut subscribed) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = subscribed_tx.send(());
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic.ends_with("/down/sounders") => {
                    let device = p.topic.split('/').nth(3).unwrap().to_owned();
                    let cmd: Value = serde_json::from_slice(&p.payload).unwrap();
                    let on = cmd["body"]["sounders"]["on"].as_bool().unwrap();
                    sink.lock().unwrap().push((device, on, cmd["seq"].as_u64().unwrap()));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    // Subscribed before anything is published.
    for _ in devices {
        subscribed.recv().await.unwrap();
    }
    heard
}

/// Waits until `heard` holds `count` commands for `device`; returns them.
async fn wait_heard(heard: &Heard, device: &str, count: usize, what: &str) -> Vec<(bool, u64)> {
    let started = Instant::now();
    loop {
        let got: Vec<(bool, u64)> = heard
            .lock()
            .unwrap()
            .iter()
            .filter(|(d, ..)| d == device)
            .map(|(_, on, seq)| (*on, *seq))
            .collect();
        if got.len() >= count {
            return got;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{device}: {what}; heard {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sounders_go_on_for_a_fire_are_sent_again_after_a_restart_and_go_off_when_the_officer_ends_it() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let officers = dir.path().join("officers.toml");
    let street = write_street_desk(&officers, "Fuhai");
    let mut gateway = Firegrid::start(config(broker.port(), registry(dir.path()), officers)).unwrap();
    let heard = listen_as_detectors(broker.port(), &["sd-a1", "sd-a2", "sd-b1"]).await;
    let (detectors, mut eventloop) =
        AsyncClient::new(MqttOptions::new("detectors-a1", "127.0.0.1", broker.port()), 100);
    tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let publish = |msg: (String, Vec<u8>)| {
        let detectors = detectors.clone();
        async move { detectors.publish(msg.0, QoS::AtLeastOnce, false, msg.1).await.unwrap() }
    };

    // Two detectors: a confirmed fire, both sounders on, each command its own number.
    publish(state("sd-a1", 1, DetectorState::Alarm)).await;
    publish(state("sd-a2", 1, DetectorState::Alarm)).await;
    let a1 = wait_heard(&heard, "sd-a1", 1, "sounders on for the confirmed fire").await;
    let a2 = wait_heard(&heard, "sd-a2", 1, "sounders on for the confirmed fire").await;
    let on = a2[0];
    assert!(a1[0].0 && on.0 && a1[0].1 != on.1, "on for both, each its own number: {a1:?} {a2:?}");

    // sd-a1 confirms with its command_ack; the case records it.
    publish(command_ack("sd-a1", 100, a1[0].1)).await;
    let api = OfficerApi::new(gateway.http_port());
    let case = api.get(&street, "/api/v1/cases").await["cases"][0]["id"].as_u64().unwrap();
    let started = Instant::now();
    loop {
        let detail = api.get(&street, &format!("/api/v1/cases/{case}")).await;
        if detail["case"]["linkage"]["confirmed"] == json!(["sd-a1"]) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "confirmation not recorded: {detail}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // After kill -9 the state is sent again to sd-a2, which never confirmed it, as a new
    // command (a device admits each number once); sd-a1 is not sent it again.
    gateway.kill().unwrap();
    gateway.restart().unwrap();
    let a2 = wait_heard(&heard, "sd-a2", 2, "the sounder state sent again after the restart").await;
    assert!(a2[1].0 && a2[1].1 > on.1, "on again with a newer number: {a2:?}");
    let on = a2[1];

    // The street desk finds cooking fumes: off for both, newer numbers.
    let api = OfficerApi::new(gateway.http_port());
    let (status, body) = api
        .act(
            &street,
            case,
            json!({"command": "dispose", "disposition": {"outcome": "false_alarm", "cause": "cooking"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let a1 = wait_heard(&heard, "sd-a1", 2, "sounders off after the false alarm").await;
    let a2 = wait_heard(&heard, "sd-a2", 3, "sounders off after the false alarm").await;
    // Ordered on one connection: the restart's sending came before this `off`, so sd-a1's
    // second command is the `off` only if it was skipped after the restart.
    assert!(!a1[1].0 && a1[1].1 > on.1, "sd-a1: on, then off (no resend after its confirmation): {a1:?}");
    assert!(!a2[2].0 && a2[2].1 > on.1, "sd-a2: on, on again, off: {a2:?}");
    let off = a2[2];

    // Close the false alarm (the detectors clear, the latches are reset): already off,
    // nothing more is sent.
    publish(state("sd-a1", 2, DetectorState::Cleared)).await;
    publish(state("sd-a2", 2, DetectorState::Cleared)).await;
    reset_and_close(&api, &street, case).await;

    // The next fire in A1 is a new case: on again, newer numbers; reset once it has
    // cleared: off.
    publish(state("sd-a1", 3, DetectorState::Alarm)).await;
    publish(state("sd-a2", 3, DetectorState::Alarm)).await;
    let got = wait_heard(&heard, "sd-a2", 4, "sounders on for the second fire").await;
    let again = got[3];
    assert!(again.0 && again.1 > off.1, "{got:?}");
    let cases = api.get(&street, "/api/v1/cases").await;
    let second = cases["cases"][0]["id"].as_u64().unwrap();
    assert_ne!(second, case);
    let (status, body) = api
        .act(&street, second, json!({"command": "dispose", "disposition": {"outcome": "real_fire"}}))
        .await;
    assert_eq!(status, 200, "{body}");
    publish(state("sd-a1", 4, DetectorState::Cleared)).await;
    publish(state("sd-a2", 4, DetectorState::Cleared)).await;
    reset_and_close(&api, &street, second).await;
    for (dev, count) in [("sd-a1", 4), ("sd-a2", 5)] {
        let got = wait_heard(&heard, dev, count, "sounders off after the reset").await;
        assert_eq!(got.len(), count, "{dev}: {got:?}");
        let last = got[count - 1];
        assert!(!last.0, "{dev}: off at the end: {got:?}");
        // Every command number is new.
        assert!(got.windows(2).all(|w| w[0].1 < w[1].1), "{dev}: {got:?}");
    }
    // Building B1 heard nothing.
    assert!(heard.lock().unwrap().iter().all(|(d, ..)| d != "sd-b1"), "B1 has no fire");
}

fn command_ack(dev: &str, seq: u32, cmd_seq: u64) -> (String, Vec<u8>) {
    use firegrid_protocol::{AckResult, CommandAck};
    let dev = DeviceId::new(dev).unwrap();
    let body = UplinkBody::CommandAck(CommandAck { cmd_seq: cmd_seq as u32, result: AckResult::Applied });
    let msg = Uplink::new(dev.clone(), 1, seq, now_ms(), body);
    let topic =
        Topic::uplink(VillageId::new(VILLAGE).unwrap(), dev, UplinkKind::CommandAck).to_buf().to_string();
    (topic, msg.encode(Encoding::Json, &mut [0u8; 512]).unwrap().to_vec())
}

/// Resets the case's latches (retrying until both detectors' clears have arrived) and
/// closes it.
async fn reset_and_close(api: &OfficerApi, token: &str, case: u64) {
    let started = Instant::now();
    loop {
        api.act(token, case, json!({"command": "reset_latch"})).await;
        let detail = api.get(token, &format!("/api/v1/cases/{case}")).await;
        let alarms = detail["case"]["alarms"].as_object().unwrap();
        if alarms.values().all(|a| a["latched"] == false && a["active"] == false) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "latches not reset: {detail}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let feedback = json!({"command": "close", "feedback": {"report": "checked", "resident_informed": true}});
    let (status, body) = api.act(token, case, feedback).await;
    assert_eq!(status, 200, "{body}");
}
