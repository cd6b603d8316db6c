//! What the engine asks for: an [`Action`] each — tell a desk, command the field, record a
//! transition, report a figure.

use serde::{Deserialize, Serialize};

use crate::{CaseId, CaseKind, Level, Location, Millis, Scope, Severity, Stage};

/// One thing the caller must do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Tell a desk about a case; report the outcome back with [`crate::Input::Delivery`].
    Notify(Notification),
    /// Switch every sounder in a building on or off (fire linkage through the downlink
    /// topic): on for a confirmed fire (and, by [`crate::Config::sound_single_detector`],
    /// for one detector in alarm), off when the case is disposed as a false alarm, closed,
    /// or reset with nothing left in alarm.
    Sounders {
        /// The case that asks for it.
        case: CaseId,
        /// The building.
        location: Location,
        /// On or off.
        on: bool,
        /// The state's generation: never repeated, and the same when a replay after a
        /// restart asks again; a newer generation supersedes an older one.
        command: u64,
    },
    /// A case changed: store it and write it as a time series point.
    Record(Transition),
    /// A figure about the alarm system itself.
    Kpi(Kpi),
}

/// A page to one desk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Unique and deterministic: replaying the same inputs yields the same ids, so a
    /// notification outbox can drop what it already has.
    pub id: u64,
    /// The case.
    pub case: CaseId,
    /// Whom.
    pub desk: Scope,
    /// Why now.
    pub reason: NotifyReason,
    /// The case's severity.
    pub severity: Severity,
    /// What the case is about.
    pub kind: CaseKind,
    /// Where.
    pub location: Location,
    /// The case's stage.
    pub stage: Stage,
    /// Devices involved.
    pub devices: Vec<String>,
    /// The device chatters (its pages are limited to one per deadline).
    pub chattering: bool,
    /// When the next deadline falls, if any.
    pub deadline: Option<Millis>,
    /// From a device the registry does not know (or a flood of them): nobody vouches that
    /// it is a real detector, so the page says it is unverified.
    #[serde(default)]
    pub unverified: bool,
}

/// Why a desk is paged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyReason {
    /// The case just opened.
    Opened,
    /// It is a confirmed fire now.
    Confirmed,
    /// Fires in several buildings of one grid.
    Spread,
    /// Nobody acknowledged in time; this desk is the next level up.
    Escalated,
    /// Still unacknowledged: a reminder to a level already reached.
    Reminder,
    /// Acknowledged but not handled in time.
    HandlingOverdue,
    /// A notification to a lower level could not be delivered.
    DeliveryFailed,
}

/// One change of a case, with enough context to be a time series point on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// The case.
    pub case: CaseId,
    /// When.
    pub at: Millis,
    /// What.
    pub kind: TransitionKind,
    /// Stage after it.
    pub stage: Stage,
    /// Highest level reached after it.
    pub level: Level,
    /// Severity after it.
    pub severity: Severity,
    /// What the case is about.
    pub case_kind: CaseKind,
    /// Where.
    pub location: Location,
    /// The officer who caused it, if one did.
    pub officer: Option<String>,
    /// The device that caused it, if one did.
    pub device: Option<String>,
    /// Milliseconds since the case opened (time-to-acknowledge on `acknowledged`, ...).
    pub since_open_ms: u64,
    /// A drill or test: recorded, but pages nobody and stays out of the KPIs.
    pub drill: bool,
}

/// What changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "transition", rename_all = "snake_case")]
pub enum TransitionKind {
    /// 预警: opened.
    Opened,
    /// Upgraded to a confirmed fire.
    Confirmed,
    /// Raised to street level by a spread.
    Spread,
    /// Raised one level (`from` → the transition's level).
    Escalated {
        /// Level before.
        from: Level,
        /// Why.
        reason: NotifyReason,
    },
    /// Another alarm merged into the case, or an alarm changed state.
    AlarmChanged {
        /// Active after the change.
        active: bool,
    },
    /// The device is chattering.
    Chattering,
    /// An alarm has been active longer than the stale bound.
    Stale,
    /// 响应: acknowledged.
    Acknowledged,
    /// Someone dispatched.
    Dispatched {
        /// Who goes.
        assignee: String,
    },
    /// Checked by camera, on site or by phone.
    Verified {
        /// How.
        method: crate::VerifyMethod,
        /// What was found.
        finding: String,
    },
    /// 应案: disposition recorded.
    Disposed {
        /// The disposition.
        disposition: crate::Disposition,
    },
    /// 反馈: closed.
    Closed {
        /// The report.
        feedback: crate::Feedback,
    },
    /// A note was added.
    Noted {
        /// The text.
        text: String,
    },
    /// A device's alarms were shelved.
    Shelved {
        /// Until when.
        until: Millis,
        /// Why.
        reason: String,
    },
    /// A shelve ended (early or on time).
    Unshelved,
    /// A latched alarm was reset.
    LatchReset,
    /// A notification could not be delivered.
    DeliveryFailed {
        /// The notification.
        notification: u64,
    },
    /// An unplaced device's case got its building.
    Placed {
        /// The building.
        building: String,
    },
}

impl TransitionKind {
    /// A stable name.
    pub fn as_str(&self) -> &'static str {
        match self {
            TransitionKind::Opened => "opened",
            TransitionKind::Confirmed => "confirmed",
            TransitionKind::Spread => "spread",
            TransitionKind::Escalated { .. } => "escalated",
            TransitionKind::AlarmChanged { .. } => "alarm_changed",
            TransitionKind::Chattering => "chattering",
            TransitionKind::Stale => "stale",
            TransitionKind::Acknowledged => "acknowledged",
            TransitionKind::Dispatched { .. } => "dispatched",
            TransitionKind::Verified { .. } => "verified",
            TransitionKind::Disposed { .. } => "disposed",
            TransitionKind::Closed { .. } => "closed",
            TransitionKind::Noted { .. } => "noted",
            TransitionKind::Shelved { .. } => "shelved",
            TransitionKind::Unshelved => "unshelved",
            TransitionKind::LatchReset => "latch_reset",
            TransitionKind::DeliveryFailed { .. } => "delivery_failed",
            TransitionKind::Placed { .. } => "placed",
        }
    }
}

/// A figure about the alarm system (ISA-18.2 performance figures).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kpi", rename_all = "snake_case")]
pub enum Kpi {
    /// A desk got more pages in the flood window than the flood threshold.
    Flood {
        /// The desk.
        desk: Scope,
        /// Pages in the window.
        pages: usize,
        /// When.
        at: Millis,
    },
    /// The flood at a desk is over.
    FloodEnded {
        /// The desk.
        desk: Scope,
        /// When.
        at: Millis,
    },
}
