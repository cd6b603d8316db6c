//! The firegrid alarm engine: the closed loop 预警 warning → 响应 response → 应案 handling →
//! 反馈 feedback, escalating up the grid hierarchy until a duty officer answers.
//!
//! This crate is sans-IO: [`Engine::handle`] takes an [`Input`] (a device [`Signal`], an
//! officer's [`Command`], a delivery result) with the current time, [`Engine::tick`] takes
//! the current time alone, and both return [`Action`]s (notify a desk, sound a building,
//! record a [`Transition`], report a [`Kpi`]). It never reads a clock, spawns, or touches a
//! socket or file, so every timer is testable in microseconds and a log of inputs replays
//! to the same state after a restart.
//!
//! Main types: [`Engine`], [`Case`] (with the ISA-18.2 state of each [`case::Alarm`]),
//! [`Config`] and its per-[`Severity`] [`Policy`], [`Level`], [`Stage`], [`Scope`].

mod calendar;
pub mod case;
mod config;
mod engine;
mod input;
mod output;
mod scope;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use calendar::{Calendar, LocalDay};
pub use case::{Case, CaseId, CaseKind, Linkage, Unplaced};
pub use config::{Config, Deadline, Policy, Severity};
pub use engine::{ALL_VILLAGES, Engine, Refusal};
pub use input::{
    Command, Condition, Disposition, FalseAlarmCause, Feedback, Input, Officer, Signal, VerifyMethod,
    WorkOrder,
};
pub use output::{Action, Kpi, Notification, NotifyReason, Transition, TransitionKind};
pub use scope::{Location, Scope, ScopeParseError};

/// Time as the caller's clock gives it: Unix milliseconds.
pub type Millis = u64;

use serde::{Deserialize, Serialize};

/// An administrative level of the grid hierarchy, lowest first. Small matters stay in the
/// community grid; big matters go up to the street (小事不出社区网格,大事上报街道网格).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// 网格: a grid of a few buildings with a grid leader and grid workers.
    Grid,
    /// 社区: the community duty desk.
    Community,
    /// 街道: the street command centre.
    Street,
    /// 区: the district.
    District,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 4] = [Level::Grid, Level::Community, Level::Street, Level::District];

    /// The next level up, where an unanswered case escalates; `None` at the district, the
    /// top of the hierarchy, where a case keeps being re-notified instead.
    pub const fn escalate(self) -> Option<Level> {
        match self {
            Level::Grid => Some(Level::Community),
            Level::Community => Some(Level::Street),
            Level::Street => Some(Level::District),
            Level::District => None,
        }
    }

    /// A stable lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Grid => "grid",
            Level::Community => "community",
            Level::Street => "street",
            Level::District => "district",
        }
    }
}

/// The four stages of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// 预警: raised and routed to the responsible grid, not yet acknowledged.
    Warning,
    /// 响应: acknowledged by a duty officer.
    Response,
    /// 应案: someone dispatched and the disposition being recorded.
    Handling,
    /// 反馈: closed with a report; immutable except for appended notes.
    Feedback,
}

impl Stage {
    /// Whether a case may move from `self` to `to`. Stages only move forward, one at a time
    /// or by skipping ahead (a false alarm seen on camera may be handled and closed at
    /// once), and `Feedback` is terminal.
    pub fn may_advance_to(self, to: Stage) -> bool {
        to > self
    }

    /// A stable lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Warning => "warning",
            Stage::Response => "response",
            Stage::Handling => "handling",
            Stage::Feedback => "feedback",
        }
    }
}
