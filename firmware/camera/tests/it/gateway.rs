//! The gateway's side of the contract, as far as the agent can tell: a persistent MQTT
//! session subscribed to the village's uplinks that decodes and validates each one with
//! `firegrid_protocol` and, like the gateway, answers it with a `down/ack` at QoS 0.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use firegrid_protocol::{
    DeviceId, DeviceKey, Downlink, DownlinkBody, DownlinkKind, Encoding, Limits, Topic, Uplink, UplinkBody,
};
use firegrid_tests::Mosquitto;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

pub const WAIT: Duration = Duration::from_secs(15);

pub struct Gateway {
    rx: mpsc::UnboundedReceiver<Uplink>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

impl Gateway {
    /// Subscribes (waiting for the SUBACK) and starts receiving. `ack`: answer every uplink
    /// with `down/ack`, as the firegrid gateway does.
    pub async fn start(broker: &Mosquitto, village: &str, ack: bool) -> Gateway {
        Gateway::start_signing(broker, village, ack, None, false).await
    }

    /// [`Gateway::start`] for cameras with `key`: every uplink must verify under it, and with
    /// `sign` the acknowledgements are signed for the uplink's boot, each with a command number
    /// of its own.
    pub async fn start_signing(
        broker: &Mosquitto,
        village: &str,
        ack: bool,
        key: Option<DeviceKey>,
        sign: bool,
    ) -> Gateway {
        let mut options = MqttOptions::new(format!("test-gateway-{village}"), broker.host(), broker.port());
        options.set_keep_alive(Duration::from_secs(5)).set_clean_session(false);
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        client.subscribe(format!("fg/v1/{village}/+/up/+"), QoS::AtLeastOnce).await.unwrap();
        tokio::time::timeout(WAIT, async {
            loop {
                if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await.unwrap() {
                    return;
                }
            }
        })
        .await
        .expect("no SUBACK");
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut cmd_seq = 0;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let msg = Uplink::receive(&p.payload, &Limits::default())
                            .unwrap_or_else(|e| panic!("invalid uplink on {}: {e}", p.topic));
                        let topic = Topic::parse(&p.topic).unwrap();
                        assert_eq!(topic.device, msg.dev, "topic and payload name the same device");
                        assert_eq!(
                            msg.clock_skew(now_ms(), &Limits::default()),
                            None,
                            "the agent stamps messages with the host clock"
                        );
                        if let Some(key) = &key {
                            assert_eq!(
                                msg.verify(&topic.village, key),
                                Ok(()),
                                "an uplink does not verify: {msg:?}"
                            );
                        }
                        if ack {
                            cmd_seq += 1;
                            let mut cmd =
                                Downlink::new(cmd_seq, 0, DownlinkBody::Ack { boot: msg.boot, seq: msg.seq });
                            if let Some(key) = key.as_ref().filter(|_| sign) {
                                cmd.sign(&topic.village, &topic.device, msg.boot, key);
                            }
                            let mut buf = [0u8; 128];
                            let payload =
                                cmd.encode(Encoding::detect(&p.payload), &mut buf).unwrap().to_vec();
                            let ack_topic = Topic::downlink(topic.village, topic.device, DownlinkKind::Ack);
                            let _ = client.try_publish(
                                ack_topic.to_buf().as_str(),
                                QoS::AtMostOnce,
                                false,
                                payload,
                            );
                        }
                        if tx.send(msg).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // The broker went away: rumqttc reconnects on the next poll.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Gateway { rx, task }
    }

    /// Receives until `done` holds for the received messages (duplicates by `(boot, seq)`
    /// dropped), or panics after [`WAIT`].
    pub async fn until(&mut self, got: &mut Vec<Uplink>, done: impl Fn(&[Uplink]) -> bool) {
        let result = tokio::time::timeout(WAIT, async {
            while !done(got) {
                let msg = self.rx.recv().await.expect("gateway task ended");
                if !got.iter().any(|m| m.dev == msg.dev && m.boot == msg.boot && m.seq == msg.seq) {
                    got.push(msg);
                }
            }
        })
        .await;
        assert!(result.is_ok(), "timed out; received:\n{}", render_all(got).join("\n"));
    }

    /// Receives for `quiet`, returning anything new (duplicates dropped).
    pub async fn drain(&mut self, got: &mut Vec<Uplink>, quiet: Duration) {
        let _ = tokio::time::timeout(quiet, async {
            while let Some(msg) = self.rx.recv().await {
                if !got.iter().any(|m| m.dev == msg.dev && m.boot == msg.boot && m.seq == msg.seq) {
                    got.push(msg);
                }
            }
        })
        .await;
    }
}

/// `status online`, `health ch1 online`, `event fire ch2 start 100%`, `command_ack ...`.
pub fn render(msg: &Uplink) -> String {
    match &msg.body {
        UplinkBody::Status(s) => format!("status {}", if s.online { "online" } else { "offline" }),
        UplinkBody::CameraHealth(h) => {
            format!("health ch{} {}", h.channel, serde_json::to_value(h.status).unwrap().as_str().unwrap())
        }
        UplinkBody::CameraEvent(e) => format!(
            "event {} ch{} {} {}%",
            serde_json::to_value(e.event).unwrap().as_str().unwrap(),
            e.channel,
            if e.active { "start" } else { "end" },
            e.confidence_pct
        ),
        other => format!("{other:?}"),
    }
}

pub fn render_all(msgs: &[Uplink]) -> Vec<String> {
    msgs.iter().map(|m| format!("{}/{} {}", m.boot, m.seq, render(m))).collect()
}

/// The messages other than `status`, rendered, in arrival order.
pub fn camera_messages(msgs: &[Uplink]) -> Vec<String> {
    msgs.iter().filter(|m| !matches!(m.body, UplinkBody::Status(_))).map(render).collect()
}

/// The sequence checks of the protocol, per boot: camera messages arrive in increasing `seq`
/// order, and every `seq` up to the highest seen arrived, except the one each `status
/// online` reserved just before itself for the last will (which the broker publishes only if
/// the connection drops).
pub fn check_sequence(msgs: &[Uplink], dev: &DeviceId) {
    let boots: std::collections::BTreeSet<u16> = msgs.iter().map(|m| m.boot).collect();
    for boot in boots {
        let of_boot: Vec<&Uplink> = msgs.iter().filter(|m| m.boot == boot && &m.dev == dev).collect();
        let camera: Vec<u32> =
            of_boot.iter().filter(|m| !matches!(m.body, UplinkBody::Status(_))).map(|m| m.seq).collect();
        assert!(camera.windows(2).all(|w| w[0] < w[1]), "boot {boot}: out of order {camera:?}");
        let mut seen: std::collections::BTreeSet<u32> = of_boot.iter().map(|m| m.seq).collect();
        for m in &of_boot {
            if matches!(m.body, UplinkBody::Status(ref s) if s.online) {
                seen.insert(m.seq - 1);
            }
        }
        let max = *seen.iter().next_back().unwrap();
        let missing: Vec<u32> = (0..=max).filter(|s| !seen.contains(s)).collect();
        assert!(
            missing.is_empty(),
            "boot {boot}: missing seqs {missing:?} in\n{}",
            render_all(msgs).join("\n")
        );
    }
}
