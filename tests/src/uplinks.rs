//! [`watch_uplinks`]: a silent witness on the broker. It takes every uplink of every village and
//! shows it to the caller, and answers nothing, so a test can count what the devices put on
//! the wire independently of the gateway (whose acknowledging counterpart for tests without a
//! gateway is [`crate::ack_uplinks`]).

use std::io;
use std::time::Duration;

use firegrid_protocol::{Encoding, Limits, Topic, Uplink};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// How long the broker may take to grant the subscription.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Subscribes as `client_id` to `fg/v1/+/+/up/#` at QoS 1 on the broker at `127.0.0.1:port`
/// and returns once the broker has granted the subscription, so that nothing published
/// afterwards is missed. From then on `on_uplink` sees every uplink that decodes (either
/// encoding) with its topic and raw payload, as often as the broker delivers it: QoS 1 may
/// deliver a message twice, and a device resends unacknowledged alarms and events, so count
/// distinct `(device, boot, seq)` where it matters. Runs until the test's runtime ends.
///
/// # Errors
/// [`Error::Io`] (timed out) when the broker does not grant the subscription in 10 s.
pub async fn watch_uplinks(
    port: u16,
    client_id: &str,
    mut on_uplink: impl FnMut(&Topic, &Uplink, &[u8]) + Send + 'static,
) -> Result<()> {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_clean_session(false).set_inflight(1000).set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    let (subscribed, granted) = oneshot::channel();
    tokio::spawn(async move {
        let mut subscribed = Some(subscribed);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) if !ack.session_present => {
                    let _ = client.try_subscribe("fg/v1/+/+/up/#", QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = subscribed.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let encoding = Encoding::detect(&p.payload);
                    if let (Ok(topic), Ok(msg)) =
                        (Topic::parse(&p.topic), Uplink::decode(&p.payload, encoding, &Limits::default()))
                    {
                        on_uplink(&topic, &msg, &p.payload);
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    match tokio::time::timeout(SUBSCRIBE_TIMEOUT, granted).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(Error::io(
            format!("subscribing {client_id} to every uplink at 127.0.0.1:{port}"),
            io::Error::new(io::ErrorKind::TimedOut, format!("no SUBACK within {SUBSCRIBE_TIMEOUT:?}")),
        )),
    }
}

/// The body of an ordinary, healthy detector heartbeat, for tests that need telemetry
/// flowing beside their alarms.
pub fn heartbeat_body() -> firegrid_protocol::UplinkBody {
    firegrid_protocol::UplinkBody::Heartbeat(firegrid_protocol::Heartbeat {
        battery_mv: Some(3000),
        signal_dbm: -90,
        chamber_baseline: None,
        drift_pct: None,
        temperature_c: 20.0,
        firmware: heapless::String::try_from("1.0").expect("3 bytes fit"),
        uptime_s: 5,
    })
}
