//! The firegrid alarm engine: the closed loop 预警 warning → 响应 response → 应案 handling →
//! 反馈 feedback, escalating up the grid hierarchy until a duty officer answers.
//!
//! This crate is sans-IO: it takes events and the current time as arguments and returns
//! actions; it never reads a clock, spawns, or touches a socket or file. Its vocabulary so
//! far: [`Level`], the administrative levels an alarm escalates through, and [`Stage`],
//! the four stages every case is carried through.

/// An administrative level of the grid hierarchy, lowest first. Small matters stay in the
/// community grid; big matters go up to the street (小事不出社区网格,大事上报街道网格).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
}

/// The four stages of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escalation_climbs_every_level_once_and_stops_at_the_district() {
        let mut path = vec![Level::Grid];
        while let Some(next) = path.last().unwrap().escalate() {
            path.push(next);
        }
        assert_eq!(path, Level::ALL);
    }

    #[test]
    fn stages_only_move_forward_and_feedback_is_terminal() {
        let all = [Stage::Warning, Stage::Response, Stage::Handling, Stage::Feedback];
        for (i, from) in all.iter().enumerate() {
            for (j, to) in all.iter().enumerate() {
                assert_eq!(from.may_advance_to(*to), j > i, "{from:?} → {to:?}");
            }
        }
        assert!(!all.iter().any(|to| Stage::Feedback.may_advance_to(*to)));
    }
}
