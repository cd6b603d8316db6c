//! What the device refused to believe: the downlinks that failed authentication, counted by
//! reason.
//!
//! A device with a key ([`crate::Identity::key`]) hands every downlink to
//! [`firegrid_protocol::DownlinkGuard::admit`] before anything else looks at it (not even its
//! `ts_ms` sets the clock). A refused command changes nothing: an `ack` drops nothing from the
//! outbox, a `hush` silences nothing, a `set_thresholds` moves nothing, and no `command_ack` is
//! sent (answering would tell an attacker which forgeries reach the device and cost airtime
//! for every one of them). The board reads [`Refusals`] through [`crate::Device::refusals`] to
//! report or log them.

use firegrid_protocol::AuthError;

use crate::fmt::warning;

/// Refused downlinks by reason, since boot. Counters saturate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refusals {
    /// Commands without a tag (`unsigned`).
    pub unsigned: u32,
    /// Commands whose tag does not verify under the device key: forged, altered, or meant for
    /// another device (`bad_signature`).
    pub bad_signature: u32,
    /// Genuine commands issued for another boot of this device: recorded before it last
    /// restarted (`wrong_boot`).
    pub wrong_boot: u32,
    /// Genuine commands already accepted once, or too old for the window (`replayed_command`).
    pub replayed: u32,
}

impl Refusals {
    /// No refusals.
    pub const fn new() -> Self {
        Refusals { unsigned: 0, bad_signature: 0, wrong_boot: 0, replayed: 0 }
    }

    /// The count for `reason`.
    pub fn of(&self, reason: AuthError) -> u32 {
        match reason {
            AuthError::Unsigned => self.unsigned,
            AuthError::BadTag => self.bad_signature,
            AuthError::WrongBoot => self.wrong_boot,
            AuthError::Replayed => self.replayed,
        }
    }

    /// All refusals.
    pub fn total(&self) -> u32 {
        self.unsigned
            .saturating_add(self.bad_signature)
            .saturating_add(self.wrong_boot)
            .saturating_add(self.replayed)
    }

    /// Counts one refusal and logs it when its reason's count reaches a power of two (1st,
    /// 2nd, 4th, 8th, ...): an attacker flooding forgeries costs a few log lines, not one
    /// per message, and the log still shows that the refusals go on. The core has no clock
    /// of its own, so the limit is by count, not by time.
    pub fn count(&mut self, reason: AuthError) {
        let slot = match reason {
            AuthError::Unsigned => &mut self.unsigned,
            AuthError::BadTag => &mut self.bad_signature,
            AuthError::WrongBoot => &mut self.wrong_boot,
            AuthError::Replayed => &mut self.replayed,
        };
        *slot = slot.saturating_add(1);
        let n = *slot;
        if n.is_power_of_two() {
            warning!("Downlink refused: {} (refusal {} for this reason).", reason.reason(), n);
        }
    }
}
