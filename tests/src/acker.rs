//! A subscriber in the gateway's role, for tests and benchmarks of the device side (the
//! fleet simulator, the camera agent): it takes every uplink of every village, shows it to
//! the caller, and answers each alarm- and event-class one with the `down/ack` the device's
//! outbox waits for, as the gateway does (telemetry gets none,
//! [`firegrid_protocol::Class::is_acknowledged`]), without the gateway's own work in the way.

use std::time::Duration;

use firegrid_protocol::{Downlink, DownlinkBody, DownlinkKind, Encoding, Limits, Topic, Uplink};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// Starts the subscriber on the broker at `127.0.0.1:port`; `on_uplink` sees every decoded
/// uplink (compact encoding) with its topic and raw payload before it is acknowledged (if its
/// class is). The acknowledgements leave on a second connection, so the subscriber's loop
/// never waits on its own publishes.
pub fn ack_uplinks(port: u16, on_uplink: impl Fn(&Topic, &Uplink, &[u8]) + Send + 'static) {
    let mut opts = MqttOptions::new("gateway-side", "127.0.0.1", port);
    opts.set_clean_session(false).set_inflight(1000).set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 200_000);
    let mut acks_opts = MqttOptions::new("gateway-side-acks", "127.0.0.1", port);
    acks_opts.set_inflight(1000);
    let (acker, mut acks_loop) = AsyncClient::new(acks_opts, 200_000);
    tokio::spawn(async move { while acks_loop.poll().await.is_ok() {} });
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe("fg/v1/+/+/up/#", QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let (Ok(topic), Ok(msg)) = (
                        Topic::parse(&p.topic),
                        Uplink::decode(&p.payload, Encoding::Compact, &Limits::default()),
                    ) else {
                        continue;
                    };
                    on_uplink(&topic, &msg, &p.payload);
                    if !msg.class().is_acknowledged() {
                        continue;
                    }
                    let ack = Downlink::new(0, 0, DownlinkBody::Ack { boot: msg.boot, seq: msg.seq });
                    let mut buf = [0u8; 64];
                    let Ok(payload) = ack.encode(Encoding::Compact, &mut buf) else { continue };
                    let down =
                        Topic::downlink(topic.village.clone(), topic.device.clone(), DownlinkKind::Ack);
                    let _ = acker.try_publish(
                        down.to_buf().to_string(),
                        QoS::AtLeastOnce,
                        false,
                        payload.to_vec(),
                    );
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
}
