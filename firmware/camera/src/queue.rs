//! [`UplinkQueue`]: sequence numbers and the outbox behind one lock, so that messages enter
//! the outbox in sequence order. Both the event path (camera events, channel health, command
//! answers) and the MQTT session (the sequence numbers of `status` and of the last will) draw
//! from it.

use firegrid_protocol::{DeviceId, DeviceKey, Uplink, UplinkBody, VillageId};

use crate::outbox::{Outbox, OutboxError};

/// See the module documentation.
#[derive(Debug)]
pub struct UplinkQueue {
    dev: DeviceId,
    boot: u16,
    next_seq: u32,
    outbox: Outbox,
    /// The village and key every message is signed for, when the camera has a key.
    signer: Option<(VillageId, DeviceKey)>,
}

impl UplinkQueue {
    /// A queue for `dev` in boot `boot`, its sequence starting at 0, over `outbox` (which
    /// may still hold messages of earlier boots; they go first).
    pub fn new(dev: DeviceId, boot: u16, outbox: Outbox) -> Self {
        UplinkQueue { dev, boot, next_seq: 0, outbox, signer: None }
    }

    /// The same queue signing every message it stamps with `key` for `village`.
    pub fn signing(self, village: VillageId, key: DeviceKey) -> Self {
        UplinkQueue { signer: Some((village, key)), ..self }
    }

    /// Signs `msg` again after a field changed (the `status` stamped at connect time gets its
    /// time when it is sent). Does nothing without a key.
    pub fn sign(&self, msg: &mut Uplink) {
        if let Some((village, key)) = &self.signer {
            msg.sign(village, key);
        }
    }

    /// Stamps `body` with the next sequence number and queues it durably.
    ///
    /// # Errors
    /// [`OutboxError`] from the outbox; the sequence number is used up all the same, which
    /// receivers see as a gap.
    pub fn enqueue(&mut self, body: UplinkBody, ts_ms: u64) -> Result<Uplink, OutboxError> {
        let msg = self.stamp(body, ts_ms);
        self.outbox.push(msg.clone())?;
        Ok(msg)
    }

    /// Stamps `body` with the next sequence number, and signs it with a key, without
    /// queueing it (for `status`). Signed once, here: the outbox keeps the tag, so every
    /// resend carries the same one.
    pub fn stamp(&mut self, body: UplinkBody, ts_ms: u64) -> Uplink {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let mut msg = Uplink::new(self.dev.clone(), self.boot, seq, ts_ms, body);
        self.sign(&mut msg);
        msg
    }

    /// This boot.
    pub fn boot(&self) -> u16 {
        self.boot
    }

    /// The outbox.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The outbox, to acknowledge messages.
    pub fn outbox_mut(&mut self) -> &mut Outbox {
        &mut self.outbox
    }
}
