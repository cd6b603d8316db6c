//! The transport seam: how uplinks leave the device and downlinks arrive.
//!
//! [`Uplink`] is all the core asks of a transport. [`crate::mqtt::MqttUplink`] is the one
//! implementation here (MQTT 5 over TCP via minimq and `embedded-nal`, for Wi-Fi and
//! Ethernet boards); an NB-IoT board implements the same trait with its modem's MQTT or
//! MQTT-SN stack. [`pump`] is the glue the board calls each time it wakes.

use firegrid_protocol::{Encoding, UplinkKind};

use crate::device::Device;

/// Largest encoded uplink the pump sends; the largest detector message (a JSON heartbeat)
/// takes 224 bytes (protocol README size table).
pub const MAX_UPLINK: usize = 256;

/// A message transport to the gateway.
pub trait Uplink {
    /// Transport error.
    type Error;

    /// Whether a message can be handed over now (connected, subscribed, window open).
    fn ready(&mut self) -> bool;

    /// Hands over one encoded uplink of `kind`. Delivery is proven only by the gateway's
    /// `ack` downlink, never by this returning `Ok`.
    fn send(&mut self, kind: UplinkKind, payload: &[u8]) -> Result<(), Self::Error>;

    /// Drives the transport (connects, keeps alive, reads) and passes every received
    /// downlink payload to `on_downlink`.
    fn poll(&mut self, on_downlink: &mut dyn FnMut(&[u8])) -> Result<(), Self::Error>;
}

/// Moves messages once: received downlinks into the device (acknowledgements first shrink
/// the outbox), then every due outbox message out, alarm class first. Returns how many
/// messages were sent.
pub fn pump<U: Uplink>(
    device: &mut Device,
    uplink: &mut U,
    now_ms: u64,
    encoding: Encoding,
) -> Result<usize, U::Error> {
    uplink.poll(&mut |payload| device.on_downlink(now_ms, payload))?;
    let mut sent = 0;
    let mut buf = [0u8; MAX_UPLINK];
    while sent < device.outbox().len() && uplink.ready() {
        let Some(msg) = device.outbox().next_due(now_ms) else { break };
        let (boot, seq, kind) = (msg.boot, msg.seq, msg.kind());
        match msg.encode(encoding, &mut buf) {
            Ok(bytes) => uplink.send(kind, bytes)?,
            // Cannot happen for the detector's messages (see MAX_UPLINK); dropping the
            // message would lose it, so it stays queued and is retried later.
            Err(_) => crate::fmt::warning!("Uplink too large to encode."),
        }
        device.outbox_mut().mark_sent(boot, seq, now_ms);
        sent += 1;
    }
    Ok(sent)
}
