//! Fire linkage to the field: which sounder state each device of a sounding (or silenced)
//! building must follow, and whether it has confirmed it with its `command_ack`. Pure: the
//! time comes in as an argument, the commands to publish go out as return values.
//!
//! The alarm engine decides the state (`Action::Sounders`, with a *generation* that never
//! repeats and that a replay after a restart reproduces, so an older state never overrides
//! a newer one); this tracker makes the devices follow it. Every publication is a new
//! downlink with its own number from the gateway's durable command counter (a device admits
//! each number once), and the tracker remembers the numbers sent for the state a device
//! must follow: a `command_ack` answering any of them confirms it, and the confirmation goes
//! to the engine as an input (`Input::SounderConfirmed`), logged like every input. An
//! unanswered state is published again every `resend`; after a restart every held case's
//! latest sounder state is published again to each device of its building that has not
//! confirmed it.

use std::collections::{BTreeSet, HashMap};

use firegrid_alerting::{CaseId, Millis};
use firegrid_protocol::{AckResult, DeviceId, VillageId};

/// Downlink numbers remembered per pending state: answers to older resends still confirm it.
const SENT_KEPT: usize = 8;

/// One sounder state to publish to one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SounderCommand {
    /// The device's village (for its topic).
    pub village: VillageId,
    /// The device.
    pub device: DeviceId,
    /// On or off.
    pub on: bool,
    /// The case that asks for it.
    pub case: CaseId,
    /// The engine's generation of this state.
    pub generation: u64,
}

#[derive(Debug, Clone)]
struct Pending {
    village: VillageId,
    case: CaseId,
    on: bool,
    generation: u64,
    sent_at: Millis,
    /// Downlink numbers published for this state, newest last.
    sent: Vec<u32>,
}

/// A building's newest state, waiting for its devices to be known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The case that asks for it.
    pub case: CaseId,
    /// On or off.
    pub on: bool,
    /// Its generation.
    pub generation: u64,
    /// Devices that confirmed it already (sent nothing).
    pub confirmed: BTreeSet<String>,
}

/// What a `command_ack` meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// It answers the state the device must follow (the case's generation): no more
    /// resending, and the engine is told.
    Confirmed(CaseId, u64),
    /// It answers it but refuses it (rejected, unsupported): no more resending either,
    /// since sending it again changes nothing; the caller logs it.
    Refused,
    /// It answers nothing pending (an older state, another kind of command).
    Stale,
}

/// Per device, the sounder state not yet confirmed.
#[derive(Debug, Default)]
pub struct Linkage {
    pending: HashMap<DeviceId, Pending>,
    /// The newest generation per device, answered or not: an older one (a restart
    /// publishing every held case) never overrides it.
    newest: HashMap<DeviceId, u64>,
    /// Buildings whose devices are not known yet (the registry loads after the alarm loop
    /// restores): building → its newest (on, generation).
    waiting: HashMap<String, Waiting>,
}

impl Linkage {
    /// A new state for `device` at `now`: what to publish (nothing if a newer generation for
    /// it is known).
    pub fn command(
        &mut self,
        now: Millis,
        village: VillageId,
        device: DeviceId,
        case: CaseId,
        on: bool,
        generation: u64,
    ) -> Option<SounderCommand> {
        let newest = self.newest.entry(device.clone()).or_insert(0);
        if *newest > generation {
            return None;
        }
        *newest = generation;
        let pending =
            Pending { village: village.clone(), case, on, generation, sent_at: now, sent: Vec::new() };
        self.pending.insert(device.clone(), pending);
        Some(SounderCommand { village, device, case, on, generation })
    }

    /// `device` was sent the state of `generation` as downlink number `seq`.
    pub fn sent(&mut self, device: &DeviceId, generation: u64, seq: u32) {
        if let Some(p) = self.pending.get_mut(device).filter(|p| p.generation == generation) {
            p.sent.push(seq);
            if p.sent.len() > SENT_KEPT {
                p.sent.remove(0);
            }
        }
    }

    /// A `command_ack` from `device`.
    pub fn answer(&mut self, device: &DeviceId, cmd_seq: u32, result: AckResult) -> Answer {
        let Some(p) = self.pending.get(device) else { return Answer::Stale };
        if !p.sent.contains(&cmd_seq) {
            return Answer::Stale;
        }
        let p = self.pending.remove(device).expect("found above");
        if result == AckResult::Applied { Answer::Confirmed(p.case, p.generation) } else { Answer::Refused }
    }

    /// The states unconfirmed for `resend` or longer at `now`, to publish again.
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
                    case: p.case,
                    on: p.on,
                    generation: p.generation,
                }
            })
            .collect();
        out.sort_by(|a, b| a.device.as_str().cmp(b.device.as_str()));
        out
    }

    /// Keeps a building's command until its devices are known.
    pub fn wait(&mut self, building: &str, waiting: Waiting) {
        let entry = self.waiting.entry(building.to_owned()).or_insert_with(|| waiting.clone());
        if entry.generation < waiting.generation {
            *entry = waiting;
        }
    }

    /// Buildings waiting for their devices.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The waiting buildings' commands, oldest first; the caller puts back what it still
    /// cannot expand.
    pub fn take_waiting(&mut self) -> Vec<(String, Waiting)> {
        let mut out: Vec<_> = self.waiting.drain().collect();
        out.sort_by_key(|(_, w)| w.generation);
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

    const C: CaseId = CaseId(3);

    #[test]
    fn a_state_is_published_again_until_its_device_answers_any_of_its_numbers() {
        let mut l = Linkage::default();
        let sent = l.command(0, village(), dev("d1"), C, true, 7).unwrap();
        assert_eq!((sent.on, sent.generation), (true, 7));
        l.sent(&dev("d1"), 7, 100);
        l.command(0, village(), dev("d2"), C, true, 7).unwrap();
        l.sent(&dev("d2"), 7, 101);
        assert!(l.due(29_999, 30_000).is_empty());
        let again: Vec<_> = l.due(30_000, 30_000).into_iter().map(|c| c.device.to_string()).collect();
        assert_eq!(again, ["d1", "d2"]);
        l.sent(&dev("d1"), 7, 102);
        // An answer to a number never sent changes nothing; the first resend's answer, the
        // original's answer, or a refusal stop the resending.
        assert_eq!(l.answer(&dev("d1"), 99, AckResult::Applied), Answer::Stale);
        assert_eq!(l.answer(&dev("d1"), 100, AckResult::Applied), Answer::Confirmed(C, 7));
        assert_eq!(l.answer(&dev("d2"), 101, AckResult::Unsupported), Answer::Refused);
        assert!(l.due(90_000, 30_000).is_empty());
        assert_eq!(l.unconfirmed(), 0);
        // A number recorded for a generation the device no longer follows is ignored.
        l.command(100_000, village(), dev("d1"), C, false, 8).unwrap();
        l.sent(&dev("d1"), 7, 103);
        assert_eq!(l.answer(&dev("d1"), 103, AckResult::Applied), Answer::Stale);
    }

    #[test]
    fn an_older_state_never_overrides_a_newer_one() {
        let mut l = Linkage::default();
        l.command(0, village(), dev("d1"), C, false, 9).unwrap();
        l.sent(&dev("d1"), 9, 1);
        assert_eq!(
            l.command(0, village(), dev("d1"), C, true, 4),
            None,
            "case 1's old `on` after case 2's `off`"
        );
        assert_eq!(l.answer(&dev("d1"), 1, AckResult::Applied), Answer::Confirmed(C, 9));
        assert_eq!(l.command(1, village(), dev("d1"), C, true, 4), None, "still older once answered");
        let newer = l.command(2, village(), dev("d1"), C, true, 10).unwrap();
        assert!(newer.on);
    }

    #[test]
    fn a_building_waits_for_its_devices_with_its_newest_state() {
        let mut l = Linkage::default();
        let state = |on, generation| Waiting { case: C, on, generation, confirmed: BTreeSet::new() };
        l.wait("A1", state(true, 3));
        l.wait("A1", state(false, 5));
        l.wait("A1", state(true, 4));
        assert_eq!(l.take_waiting(), [("A1".to_owned(), state(false, 5))]);
        assert_eq!(l.waiting(), 0);
    }
}
