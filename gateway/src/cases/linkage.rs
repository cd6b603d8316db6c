//! Fire linkage to the field: which sounder command each device of a sounding (or silenced)
//! building must follow, and which it has confirmed with its `command_ack`. Pure: the time
//! comes in as an argument, the commands to publish go out as return values.
//!
//! The alarm engine decides the state (`Action::Sounders`, with a command id that never
//! repeats and that a replay after a restart reproduces); this tracker makes the devices
//! follow it. A command is sent again every `resend` until the device answers it. The
//! confirmations live only in memory: after a restart every held case's latest sounder state
//! is sent again to every device of its building (an unconfirmed state is the safe
//! assumption; a device already in that state and already holding that command id stays as
//! it is).

use std::collections::HashMap;

use firegrid_alerting::Millis;
use firegrid_protocol::{AckResult, DeviceId, VillageId};

/// One sounder command to publish to one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SounderCommand {
    /// The device's village (for its topic).
    pub village: VillageId,
    /// The device.
    pub device: DeviceId,
    /// On or off.
    pub on: bool,
    /// The command id (the downlink's `seq`).
    pub seq: u32,
}

#[derive(Debug, Clone)]
struct Pending {
    village: VillageId,
    on: bool,
    command: u64,
    sent_at: Millis,
}

/// What a `command_ack` meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// It answers the command the device must follow: no more resending.
    Confirmed,
    /// It answers the command but refuses it (rejected, unsupported): no more resending
    /// either, since sending it again changes nothing; the caller logs it.
    Refused,
    /// It answers nothing pending (an older command, another kind of command).
    Stale,
}

/// Per device, the sounder command not yet answered.
#[derive(Debug, Default)]
pub struct Linkage {
    pending: HashMap<DeviceId, Pending>,
    /// The newest command per device, answered or not: an older one (a restart re-sending
    /// every held case) never overrides it.
    newest: HashMap<DeviceId, u64>,
    /// Buildings whose devices are not known yet (the registry loads after the alarm loop
    /// restores): building → its newest (on, command).
    waiting: HashMap<String, (bool, u64)>,
}

/// The downlink `seq` of a command id. Ids count up from 1 for the life of the case store;
/// 2^32 of them would take a sounder command every second for 136 years.
pub fn seq_of(command: u64) -> u32 {
    command as u32
}

impl Linkage {
    /// A new command for `device` at `now`: what to publish (nothing if a newer command for
    /// it is known).
    pub fn command(
        &mut self,
        now: Millis,
        village: VillageId,
        device: DeviceId,
        on: bool,
        command: u64,
    ) -> Option<SounderCommand> {
        let newest = self.newest.entry(device.clone()).or_insert(0);
        if *newest > command {
            return None;
        }
        *newest = command;
        self.pending.insert(device.clone(), Pending { village: village.clone(), on, command, sent_at: now });
        Some(SounderCommand { village, device, on, seq: seq_of(command) })
    }

    /// A `command_ack` from `device`.
    pub fn answer(&mut self, device: &DeviceId, cmd_seq: u32, result: AckResult) -> Answer {
        let Some(p) = self.pending.get(device) else { return Answer::Stale };
        if seq_of(p.command) != cmd_seq {
            return Answer::Stale;
        }
        self.pending.remove(device);
        if result == AckResult::Applied { Answer::Confirmed } else { Answer::Refused }
    }

    /// The commands unanswered for `resend` or longer at `now`, to publish again.
    pub fn due(&mut self, now: Millis, resend: Millis) -> Vec<SounderCommand> {
        let mut out: Vec<SounderCommand> = self
            .pending
            .iter_mut()
            .filter(|(_, p)| p.sent_at + resend <= now)
            .map(|(device, p)| {
                p.sent_at = now;
                SounderCommand {
                    village: p.village.clone(),
                    device: device.clone(),
                    on: p.on,
                    seq: seq_of(p.command),
                }
            })
            .collect();
        out.sort_by(|a, b| a.device.as_str().cmp(b.device.as_str()));
        out
    }

    /// Keeps a building's command until its devices are known.
    pub fn wait(&mut self, building: &str, on: bool, command: u64) {
        let entry = self.waiting.entry(building.to_owned()).or_insert((on, command));
        if entry.1 < command {
            *entry = (on, command);
        }
    }

    /// Buildings waiting for their devices.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The waiting buildings' commands, oldest first; the caller puts back what it still
    /// cannot expand.
    pub fn take_waiting(&mut self) -> Vec<(String, bool, u64)> {
        let mut out: Vec<_> = self.waiting.drain().map(|(b, (on, c))| (b, on, c)).collect();
        out.sort_by_key(|(_, _, c)| *c);
        out
    }

    /// Devices with a command not yet answered.
    pub fn unconfirmed(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(id: &str) -> DeviceId {
        DeviceId::new(id).unwrap()
    }

    fn village() -> VillageId {
        VillageId::new("v").unwrap()
    }

    #[test]
    fn a_command_is_resent_until_its_device_answers_it() {
        let mut l = Linkage::default();
        let sent = l.command(0, village(), dev("d1"), true, 7).unwrap();
        assert_eq!((sent.on, sent.seq), (true, 7));
        l.command(0, village(), dev("d2"), true, 7).unwrap();
        assert!(l.due(29_999, 30_000).is_empty());
        let again: Vec<_> = l.due(30_000, 30_000).into_iter().map(|c| c.device.to_string()).collect();
        assert_eq!(again, ["d1", "d2"]);
        // An answer to another command changes nothing; the right one stops the resending.
        assert_eq!(l.answer(&dev("d1"), 6, AckResult::Applied), Answer::Stale);
        assert_eq!(l.answer(&dev("d1"), 7, AckResult::Applied), Answer::Confirmed);
        assert_eq!(l.answer(&dev("d2"), 7, AckResult::Unsupported), Answer::Refused);
        assert!(l.due(90_000, 30_000).is_empty());
        assert_eq!(l.unconfirmed(), 0);
    }

    #[test]
    fn an_older_command_never_overrides_a_newer_one() {
        let mut l = Linkage::default();
        l.command(0, village(), dev("d1"), false, 9).unwrap();
        assert_eq!(
            l.command(0, village(), dev("d1"), true, 4),
            None,
            "case 1's old `on` after case 2's `off`"
        );
        assert_eq!(l.answer(&dev("d1"), 9, AckResult::Applied), Answer::Confirmed);
        assert_eq!(l.command(1, village(), dev("d1"), true, 4), None, "still older once answered");
        let newer = l.command(2, village(), dev("d1"), true, 10).unwrap();
        assert!(newer.on);
    }
}
