//! The transport seam: how uplinks leave the device and downlinks arrive.
//!
//! [`Uplink`] is all the core asks of a transport. [`crate::mqtt::MqttUplink`] is the one
//! implementation here (MQTT 5 over TCP via minimq and `embedded-nal`, for Wi-Fi and
//! Ethernet boards); an NB-IoT board implements the same trait with its modem's MQTT or
//! MQTT-SN stack. [`pump`] is the glue the board calls each time it wakes.

use firegrid_protocol::{Encoding, UplinkKind};

use crate::device::Device;
use crate::journal::{self, Journal};
use crate::update::{Action, Updater};

/// Largest encoded uplink the pump sends; the largest detector message (a JSON heartbeat)
/// takes 224 bytes (protocol README size table).
pub const MAX_UPLINK: usize = 256;

/// A message transport to the gateway.
pub trait Uplink {
    /// Transport error.
    type Error;

    /// Whether a message can be handed over now (connected, subscribed, window open).
    fn ready(&mut self) -> bool;

    /// Hands over one encoded uplink of `kind`, to be published at QoS 1 (or the transport's
    /// equivalent: kept and retried by the client until the broker has it). For alarm and
    /// event kinds delivery is proven only by the gateway's `ack` downlink, never by this
    /// returning `Ok`; a telemetry message is done once this returns `Ok` (the gateway does
    /// not acknowledge telemetry, see [`crate::outbox`]).
    fn send(&mut self, kind: UplinkKind, payload: &[u8]) -> Result<(), Self::Error>;

    /// Drives the transport (connects, keeps alive, reads) and passes every received
    /// downlink payload to `on_downlink`.
    fn poll(&mut self, on_downlink: &mut dyn FnMut(&[u8])) -> Result<(), Self::Error>;
}

/// Moves messages once: received downlinks into the device (acknowledgements first shrink
/// the outbox), then every due outbox message out while the transport is ready, alarm class
/// first. A sent telemetry message leaves the outbox; alarms and events stay until
/// acknowledged. Returns how many messages were sent.
pub fn pump<U: Uplink>(
    device: &mut Device,
    uplink: &mut U,
    now_ms: u64,
    encoding: Encoding,
) -> Result<usize, U::Error> {
    uplink.poll(&mut |payload| device.on_downlink(now_ms, payload))?;
    send_due(device, uplink, now_ms, encoding)
}

/// [`pump`] for a device whose alarms and events persist in `journal`: after the downlinks
/// (whose acks forget records) and before anything is sent, [`journal::sync`] stores every new
/// alarm- and event-class message and removes the acknowledged ones, so no such message goes
/// on the air before it is in flash, unless the flash failed: a journal failure is counted by
/// the device and does not stop the sending, and a fire alarm goes out whether or not flash
/// works.
/// Downlinks are decoded as `encoding` ([`Device::on_downlink_in`]).
pub fn pump_journaled<U: Uplink, J: Journal>(
    device: &mut Device,
    uplink: &mut U,
    journal: &mut J,
    now_ms: u64,
    encoding: Encoding,
) -> Result<usize, U::Error> {
    uplink.poll(&mut |payload| device.on_downlink_in(now_ms, payload, encoding))?;
    journal::sync(device, journal);
    send_due(device, uplink, now_ms, encoding)
}

/// [`pump_journaled`] for a device that takes firmware updates: each authenticated firmware
/// command goes to `updater` as it arrives (so none waits behind the next), then the journal
/// is brought up to date and the due messages go out, alarms first. Returns how many messages
/// were sent and whether the updater asks for a restart ([`Action::Restart`]: the board
/// restarts once this returns, after the status saying so is handed over).
pub fn pump_updating<U: Uplink, J: Journal, D, S, M>(
    device: &mut Device,
    uplink: &mut U,
    journal: &mut J,
    updater: &mut Updater<D, S, M>,
    now_ms: u64,
    encoding: Encoding,
) -> Result<(usize, Action), U::Error>
where
    D: embedded_storage_async::nor_flash::NorFlash,
    S: embedded_storage_async::nor_flash::NorFlash,
    M: embedded_storage_async::nor_flash::MultiwriteNorFlash,
{
    let mut action = Action::None;
    uplink.poll(&mut |payload| {
        device.on_downlink_in(now_ms, payload, encoding);
        if let Some(cmd) = device.take_firmware_command()
            && updater.apply(device, now_ms, cmd) == Action::Restart
        {
            action = Action::Restart;
        }
    })?;
    if updater.poll(device, now_ms) == Action::Restart {
        action = Action::Restart;
    }
    journal::sync(device, journal);
    Ok((send_due(device, uplink, now_ms, encoding)?, action))
}

/// Sends every due outbox message, at most once each, while the transport is ready.
fn send_due<U: Uplink>(
    device: &mut Device,
    uplink: &mut U,
    now_ms: u64,
    encoding: Encoding,
) -> Result<usize, U::Error> {
    let mut sent = 0;
    let mut buf = [0u8; MAX_UPLINK];
    // Each message goes out at most once per pump: a sent one is either gone (telemetry) or
    // not due again before its resend period.
    let queued = device.outbox().len();
    while sent < queued && uplink.ready() {
        let Some(msg) = device.outbox().next_due(now_ms) else { break };
        let (boot, seq, kind) = (msg.boot, msg.seq, msg.kind());
        match msg.encode(encoding, &mut buf) {
            // A transport error returns before `mark_sent`: the message stays queued and due.
            Ok(bytes) => uplink.send(kind, bytes)?,
            // Cannot happen for the detector's messages (see MAX_UPLINK). Marked as sent so the
            // loop moves on: an alarm or event stays queued and is retried later; telemetry is
            // given up, the next reading supersedes it.
            Err(_) => crate::fmt::warning!("Uplink too large to encode."),
        }
        device.outbox_mut().mark_sent(boot, seq, now_ms);
        sent += 1;
    }
    Ok(sent)
}
