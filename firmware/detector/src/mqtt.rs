//! [`MqttUplink`]: the [`Uplink`] transport on minimq (MQTT 5, no allocator) over any
//! `embedded-nal` TCP stack.
//!
//! Uplinks are published at QoS 1 on `fg/v1/{village}/{device}/up/{kind}`; the device
//! subscribes to `fg/v1/{village}/{device}/down/+`. QoS 1 only gets a message to the
//! broker; the outbox keeps an alarm or event until the gateway's `ack` downlink, which also
//! covers a broker restart that loses the session. Telemetry is left to QoS 1 alone (minimq
//! keeps it in flight until the broker's PUBACK): the gateway does not acknowledge it, and a
//! heartbeat lost with a broker's session is superseded by the next.

use firegrid_protocol::{DeviceId, Topic, UplinkKind, VillageId, downlink_filter};
use minimq::broker::Broker;
use minimq::embedded_nal::TcpClientStack;
use minimq::embedded_time::Clock;
use minimq::types::TopicFilter;
use minimq::{Minimq, Publication, QoS};

use crate::link::Uplink;

/// Largest downlink accepted; the largest command (JSON `set_thresholds`) is 106 bytes.
pub const MAX_DOWNLINK: usize = 256;

/// What went wrong in the MQTT client.
#[derive(Debug, PartialEq)]
pub enum MqttError<E> {
    /// The client or the network failed.
    Client(minimq::Error<E>),
    /// A downlink was larger than [`MAX_DOWNLINK`].
    DownlinkTooLarge,
}

impl<E> From<minimq::Error<E>> for MqttError<E> {
    fn from(e: minimq::Error<E>) -> Self {
        MqttError::Client(e)
    }
}

/// The MQTT transport. See the module documentation.
pub struct MqttUplink<'buf, S: TcpClientStack, C: Clock, B: Broker> {
    mqtt: Minimq<'buf, S, C, B>,
    village: VillageId,
    device: DeviceId,
    subscribed: bool,
}

impl<'buf, S: TcpClientStack, C: Clock, B: Broker> MqttUplink<'buf, S, C, B> {
    /// Wraps a configured minimq client for `device` in `village`.
    pub fn new(mqtt: Minimq<'buf, S, C, B>, village: VillageId, device: DeviceId) -> Self {
        MqttUplink { mqtt, village, device, subscribed: false }
    }

    /// Whether the client holds a broker connection.
    pub fn is_connected(&mut self) -> bool {
        self.mqtt.client().is_connected()
    }
}

impl<S: TcpClientStack, C: Clock, B: Broker> Uplink for MqttUplink<'_, S, C, B> {
    type Error = MqttError<S::Error>;

    fn ready(&mut self) -> bool {
        let client = self.mqtt.client();
        self.subscribed
            && client.is_connected()
            && !client.subscriptions_pending()
            && client.can_publish(QoS::AtLeastOnce)
    }

    fn send(&mut self, kind: UplinkKind, payload: &[u8]) -> Result<(), Self::Error> {
        let topic = Topic::uplink(self.village.clone(), self.device.clone(), kind).to_buf();
        let publication = Publication::new(topic.as_str(), payload).qos(QoS::AtLeastOnce);
        self.mqtt.client().publish(publication).map_err(|e| match e {
            minimq::PubError::Error(e) => MqttError::Client(e),
            // A byte slice cannot fail to serialise.
            minimq::PubError::Serialization(()) => MqttError::Client(minimq::Error::WriteFail),
        })
    }

    fn poll(&mut self, on_downlink: &mut dyn FnMut(&[u8])) -> Result<(), Self::Error> {
        if !self.subscribed && self.mqtt.client().is_connected() {
            let filter = downlink_filter(&self.village, &self.device);
            let filters = [TopicFilter::new(filter.as_str())];
            self.mqtt.client().subscribe(&filters, &[])?;
            self.subscribed = true;
        }
        loop {
            let received = self.mqtt.poll(|_client, _topic, payload, _properties| {
                heapless::Vec::<u8, MAX_DOWNLINK>::from_slice(payload).map_err(|_| ())
            });
            match received {
                Ok(Some(Ok(payload))) => on_downlink(&payload),
                Ok(Some(Err(()))) => return Err(MqttError::DownlinkTooLarge),
                Ok(None) => return Ok(()),
                // The broker forgot our session (restart without persistence): subscribe
                // again; unacknowledged alarms and events are still in the outbox.
                Err(minimq::Error::SessionReset) => {
                    self.subscribed = false;
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
