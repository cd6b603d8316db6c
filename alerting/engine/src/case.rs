//! A case (incident) and the ISA-18.2 state of each alarm under it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Disposition, Feedback, Level, Location, Millis, Severity, Stage, VerifyMethod};

/// A case's number, unique in one gateway's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CaseId(pub u64);

impl std::fmt::Display for CaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What a case is about. One open case per kind and building (per scope for a
/// communication loss): alarms, faults and outages of many devices merge instead of
/// paging once each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseKind {
    /// Smoke or flame: a pre-alarm to verify, or a confirmed fire.
    Fire,
    /// Device faults: a maintenance work order.
    Fault,
    /// Devices that stopped reporting.
    Offline,
    /// A scope that stopped reporting.
    CommunicationLoss,
    /// Low water pressure or level.
    Water,
}

impl CaseKind {
    /// A stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            CaseKind::Fire => "fire",
            CaseKind::Fault => "fault",
            CaseKind::Offline => "offline",
            CaseKind::CommunicationLoss => "communication_loss",
            CaseKind::Water => "water",
        }
    }
}

/// Who did something, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Officer id.
    pub officer: String,
    /// When.
    pub at: Millis,
}

/// A recorded verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// Who and when.
    pub by: Stamp,
    /// How.
    pub method: VerifyMethod,
    /// What was found.
    pub finding: String,
}

/// One device's alarm under a case, with its ISA-18.2 state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarm {
    /// The device reports the condition now.
    pub active: bool,
    /// An officer has acknowledged it (through the case).
    pub acked: bool,
    /// Stays on after the device clears until an officer resets it (fires).
    pub latched: bool,
    /// From a camera's analytics rather than a detector.
    pub camera: bool,
    /// When it last became active.
    pub since: Millis,
    /// When it was first raised in this case.
    pub first: Millis,
    /// Silenced by an officer until then.
    pub shelved_until: Option<Millis>,
    /// Active longer than the stale bound.
    pub stale: bool,
}

impl Alarm {
    /// The ISA-18.2 state name: `unacknowledged`, `acknowledged`,
    /// `returned_unacknowledged`, `latched`, `shelved` or `normal`.
    pub fn isa_state(&self, now: Millis) -> &'static str {
        if self.shelved_until.is_some_and(|until| until > now) {
            "shelved"
        } else if self.active && !self.acked {
            "unacknowledged"
        } else if self.active {
            "acknowledged"
        } else if self.latched {
            "latched"
        } else if !self.acked {
            "returned_unacknowledged"
        } else {
            "normal"
        }
    }

    pub(crate) fn shelved(&self, now: Millis) -> bool {
        self.shelved_until.is_some_and(|until| until > now)
    }
}

/// A note appended to a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// Who and when.
    pub by: Stamp,
    /// The text.
    pub text: String,
}

/// An incident, carried through the four stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// Its number.
    pub id: CaseId,
    /// What it is about.
    pub kind: CaseKind,
    /// How urgent.
    pub severity: Severity,
    /// Where (building, or the scope of a communication loss).
    pub location: Location,
    /// Its stage.
    pub stage: Stage,
    /// The highest level reached.
    pub level: Level,
    /// Every level told so far, lowest first.
    pub reached: Vec<Level>,
    /// When it opened.
    pub opened: Millis,
    /// Two detectors, or detector and camera: a confirmed fire.
    pub confirmed: bool,
    /// Part of a fire spreading across buildings of a grid.
    pub spread: bool,
    /// A device of the case chatters: it pages at most once per deadline.
    pub chattering: bool,
    /// Raised by a device in test mode: pages nobody, stays out of the KPIs.
    pub drill: bool,
    /// The alarms under it, by device.
    pub alarms: BTreeMap<String, Alarm>,
    /// 响应.
    pub acknowledged: Option<Stamp>,
    /// Who went.
    pub dispatched: Option<(Stamp, String)>,
    /// Checks made.
    pub verifications: Vec<Verification>,
    /// 应案.
    pub disposition: Option<(Stamp, Disposition)>,
    /// 反馈.
    pub closed: Option<(Stamp, Feedback)>,
    /// Notes, in order.
    pub notes: Vec<Note>,
    /// Escalations so far.
    pub escalations: u32,
    /// When the unacknowledged case escalates next.
    pub ack_due: Option<Millis>,
    /// When the acknowledged case must have a disposition.
    pub handle_due: Option<Millis>,
    /// When reached levels are reminded next.
    pub next_reminder: Option<Millis>,
    /// The last sounder command of the case, if it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linkage: Option<Linkage>,
    /// Raised by a device the registry does not know; `None` once placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unplaced: Option<Unplaced>,
}

/// A case's sounder command: what the building's sounders should be doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Linkage {
    /// On or off.
    pub on: bool,
    /// The command's generation ([`crate::Action::Sounders`]).
    pub command: u64,
    /// The devices that confirmed it ([`crate::Input::SounderConfirmed`]).
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub confirmed: std::collections::BTreeSet<String>,
}

/// What a case of unregistered devices knows of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unplaced {
    /// The village their topics name ([`crate::ALL_VILLAGES`] for the one flood case of all
    /// villages beyond [`crate::Config::unplaced_total_limit`]).
    pub village: String,
    /// The village's flood case: unplaced devices beyond
    /// [`crate::Config::unplaced_limit`] within [`crate::Config::unplaced_window`] fold into
    /// it instead of opening cases of their own.
    pub flood: bool,
    /// The device (without its `/channel` or `/fault` suffix) that opened it.
    pub device: String,
}

impl Case {
    /// Whether it is closed (terminal).
    pub fn is_closed(&self) -> bool {
        self.stage == Stage::Feedback
    }

    /// Whether every active alarm is shelved, which pauses reminders and escalation.
    pub fn silenced(&self, now: Millis) -> bool {
        let mut active = self.alarms.values().filter(|a| a.active || a.latched).peekable();
        active.peek().is_some() && active.all(|a| a.shelved(now))
    }

    /// The next instant the case needs the engine's attention.
    pub fn wake_at(&self, keep_closed: Millis, stale_after: Millis) -> Option<Millis> {
        if let Some((stamp, _)) = &self.closed {
            return Some(stamp.at.saturating_add(keep_closed));
        }
        let stale = self.alarms.values().filter(|a| a.active && !a.stale).map(|a| a.since + stale_after);
        let shelves = self.alarms.values().filter_map(|a| a.shelved_until);
        [self.ack_due, self.handle_due, self.next_reminder]
            .into_iter()
            .flatten()
            .chain(stale)
            .chain(shelves)
            .min()
    }

    /// Devices involved.
    pub fn devices(&self) -> Vec<String> {
        self.alarms.keys().cloned().collect()
    }
}
