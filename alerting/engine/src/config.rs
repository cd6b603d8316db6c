//! What the engine is told: [`Severity`] classes, the [`Policy`] of each (deadlines per
//! level, re-notification interval, where a case enters the hierarchy) and the correlation
//! and flood thresholds in [`Config`]. Every default says where its number comes from.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Calendar, Level, Millis};

/// How urgent a case is; decides its [`Policy`]. Ordered least urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// A device fault (low battery, contamination, tamper, sensor fault, end of life): a
    /// maintenance work order.
    Fault,
    /// A device stopped reporting.
    Offline,
    /// Many devices of one scope stopped reporting at once (a cell or a switch is down).
    CommunicationLoss,
    /// Sprinkler pressure or tank level below its threshold.
    Water,
    /// One detector (or one camera) sees smoke: the grid verifies.
    PreAlarm,
    /// Two detectors, or a detector and a camera, in one building: a fire.
    Fire,
}

impl Severity {
    /// Every severity, least urgent first.
    pub const ALL: [Severity; 6] = [
        Severity::Fault,
        Severity::Offline,
        Severity::CommunicationLoss,
        Severity::Water,
        Severity::PreAlarm,
        Severity::Fire,
    ];

    /// A stable lower-case name, used in series, metrics and the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Fault => "fault",
            Severity::Offline => "offline",
            Severity::CommunicationLoss => "communication_loss",
            Severity::Water => "water",
            Severity::PreAlarm => "pre_alarm",
            Severity::Fire => "fire",
        }
    }
}

/// When a deadline falls, counted from the moment its clock starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deadline {
    /// A fixed time later.
    After(#[serde(with = "humantime_serde")] Duration),
    /// The next working day at `hour` o'clock local time, for matters such as a low battery
    /// that a maintenance crew handles in working hours. Working days come from the engine's
    /// [`Calendar`] (Monday to Friday, minus public holidays, plus weekend days worked).
    NextWorkingDay {
        /// Local hour of the day, 0–23.
        hour: u8,
        /// Local time's offset from UTC in minutes (China: +480).
        utc_offset_minutes: i16,
    },
}

impl Deadline {
    /// The instant this deadline falls when its clock starts at `from`, with working days
    /// from `calendar`.
    pub fn due(self, from: Millis, calendar: &Calendar) -> Millis {
        match self {
            Deadline::After(d) => from.saturating_add(d.as_millis() as u64),
            Deadline::NextWorkingDay { hour, utc_offset_minutes } => {
                const DAY: i64 = 86_400_000;
                let offset = i64::from(utc_offset_minutes) * 60_000;
                let local = from as i64 + offset;
                let mut day = local.div_euclid(DAY) + 1;
                // The longest run of days off in China is 9 (春节 2026); a calendar that lists
                // more than a month off in a row is cut short rather than looped through.
                for _ in 0..62 {
                    if calendar.is_working(day) {
                        break;
                    }
                    day += 1;
                }
                (day * DAY + i64::from(hour.min(23)) * 3_600_000 - offset).max(0) as Millis
            }
        }
    }
}

/// How cases of one severity are carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The levels told when the case opens; the highest of them is the case's level.
    pub entry: Vec<Level>,
    /// Time to acknowledge at each level (grid, community, street, district): when it
    /// passes unacknowledged, the case escalates one level up.
    pub ack: [Deadline; 4],
    /// Every level already reached is told again at this interval until someone
    /// acknowledges.
    #[serde(with = "humantime_serde")]
    pub renotify: Duration,
    /// Time from acknowledgement to a recorded disposition; when it passes, the case is
    /// re-notified and escalates one level (an acknowledgement timeout).
    pub handle: Deadline,
    /// Whether the underlying alarms latch: stay active until an officer resets them even
    /// if the device clears (ISA-18.2 latched alarm). Fires latch; faults do not.
    pub latched: bool,
}

impl Policy {
    fn fixed(entry: &[Level], ack: [u64; 4], renotify: u64, handle: u64, latched: bool) -> Policy {
        Policy {
            entry: entry.to_vec(),
            ack: ack.map(|s| Deadline::After(Duration::from_secs(s))),
            renotify: Duration::from_secs(renotify),
            handle: Deadline::After(Duration::from_secs(handle)),
            latched,
        }
    }

    fn working_day(entry: &[Level], renotify: u64) -> Policy {
        let next = Deadline::NextWorkingDay { hour: 9, utc_offset_minutes: 480 };
        Policy {
            entry: entry.to_vec(),
            ack: [next; 4],
            renotify: Duration::from_secs(renotify),
            handle: Deadline::After(Duration::from_secs(3 * 86_400)),
            latched: false,
        }
    }
}

/// The engine's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Confirmed fire.
    pub fire: Policy,
    /// A single detector or camera seeing smoke.
    pub pre_alarm: Policy,
    /// Low sprinkler pressure or tank level.
    pub water: Policy,
    /// Communication loss of a scope.
    pub communication_loss: Policy,
    /// One device offline.
    pub offline: Policy,
    /// Device faults.
    pub fault: Policy,
    /// Two detectors (or a detector and a camera) in one building alarming within this
    /// window confirm a fire.
    #[serde(with = "humantime_serde")]
    pub confirm_window: Duration,
    /// Fires in this many buildings of one grid ...
    pub spread_buildings: usize,
    /// ... within this window go to street level at once (大事上报街道).
    #[serde(with = "humantime_serde")]
    pub spread_window: Duration,
    /// A device with this many activations within a minute is chattering (ISA-18.2
    /// practice: ≥ 3 active/clear cycles per minute).
    pub chatter_cycles: usize,
    /// More pages than this to one desk within [`Config::flood_window`] is an alarm flood
    /// (ISA-18.2 / IEC 62682: > 10 alarms per 10 min per operator).
    pub flood_threshold: usize,
    /// The flood window.
    #[serde(with = "humantime_serde")]
    pub flood_window: Duration,
    /// An alarm active longer than this is stale (ISA-18.2 practice: 24 h).
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    /// The longest an officer may shelve a device's alarms.
    #[serde(with = "humantime_serde")]
    pub max_shelve: Duration,
    /// Closed cases stay in the engine this long (for notes and merging), then only in the
    /// store.
    #[serde(with = "humantime_serde")]
    pub keep_closed: Duration,
    /// At most this many cases of unregistered devices open per village within
    /// [`Config::unplaced_window`]; further unregistered devices fold into one "unplaced
    /// flood" case of the village. Anyone who can publish on the broker can invent device
    /// ids: the limit keeps a stranger from burying the desks under fake fires, while every
    /// unregistered alarm still reaches someone. The same 10 per 10 minutes as the flood
    /// threshold (ISA-18.2 / IEC 62682).
    pub unplaced_limit: usize,
    /// The window of [`Config::unplaced_limit`].
    #[serde(with = "humantime_serde")]
    pub unplaced_window: Duration,
    /// At most this many cases of unregistered devices open within
    /// [`Config::unplaced_window`] across all villages together; beyond it every further
    /// unregistered device folds into one flood case for all villages. A stranger can invent
    /// village ids as easily as device ids, so a per-village limit alone would not bound the
    /// desks' load. Three villages' worth (a street carries about three).
    #[serde(default = "default_unplaced_total_limit")]
    pub unplaced_total_limit: usize,
    /// Sound the building's sounders for a single detector in alarm, not only for a
    /// confirmed fire. Off by default: one detector is verified first (GB 50116 lets a
    /// single-detector alarm start linkage only where the design asks for it, since most are
    /// cooking and steam); a building of sleeping residents without a night watch may want it.
    pub sound_single_detector: bool,
    /// Working days for [`Deadline::NextWorkingDay`]: China's official calendar by default
    /// (`holidays/cn.toml`); a table in the same format replaces it.
    pub holidays: Calendar,
}

impl Default for Config {
    fn default() -> Self {
        use Level::*;
        Config {
            // A confirmed fire goes straight to community and street. 60 s per level: the
            // GB 50440 centre must show an alarm within 20 s and forward a confirmed fire in
            // 3 s, so a desk that has not answered in a minute is not there. Reminders every
            // 20 s, inside GB 26875.1's 10 s device budget plus a human's reaction time.
            fire: Policy::fixed(&[Grid, Community, Street], [60, 60, 60, 60], 20, 15 * 60, true),
            // One detector: the grid verifies by camera or on site. NFPA 72 lets an operator
            // verify for up to 90 s before retransmitting; Kunming's platform triages in 30 s.
            // Dispatch and disposition within 30 min.
            pre_alarm: Policy::fixed(&[Grid], [90, 90, 120, 120], 30, 30 * 60, true),
            // Low water pressure disables sprinklers: answer within 15 min, fix within a day.
            water: Policy::fixed(&[Grid], [900, 900, 1800, 3600], 300, 86_400, false),
            // A dead cell leaves a whole scope unprotected: the community answers in 30 min.
            communication_loss: Policy::fixed(
                &[Grid, Community],
                [1800, 1800, 3600, 7200],
                900,
                86_400,
                false,
            ),
            // Faults and single offline devices are maintenance: the next working day.
            offline: Policy::working_day(&[Grid], 4 * 3600),
            fault: Policy::working_day(&[Grid], 4 * 3600),
            confirm_window: Duration::from_secs(120),
            spread_buildings: 3,
            spread_window: Duration::from_secs(10 * 60),
            chatter_cycles: 3,
            flood_threshold: 10,
            flood_window: Duration::from_secs(10 * 60),
            stale_after: Duration::from_secs(24 * 3600),
            // GB 20517-2025 lets a battery-fault sound be silenced for (7 ± 1) h; shelving
            // an alarm for longer than a shift hides it from the next one.
            max_shelve: Duration::from_secs(8 * 3600),
            keep_closed: Duration::from_secs(24 * 3600),
            unplaced_limit: 10,
            unplaced_window: Duration::from_secs(10 * 60),
            unplaced_total_limit: default_unplaced_total_limit(),
            sound_single_detector: false,
            holidays: Calendar::china(),
        }
    }
}

impl Config {
    /// The policy of a severity.
    pub fn policy(&self, severity: Severity) -> &Policy {
        match severity {
            Severity::Fire => &self.fire,
            Severity::PreAlarm => &self.pre_alarm,
            Severity::Water => &self.water,
            Severity::CommunicationLoss => &self.communication_loss,
            Severity::Offline => &self.offline,
            Severity::Fault => &self.fault,
        }
    }

    /// Checks what serde cannot: non-empty entry levels, non-zero intervals.
    pub fn validate(&self) -> Result<(), String> {
        for severity in Severity::ALL {
            let policy = self.policy(severity);
            if policy.entry.is_empty() {
                return Err(format!("{}: `entry` names no level", severity.as_str()));
            }
            if policy.renotify.is_zero() {
                return Err(format!("{}: `renotify` must be longer than 0 s", severity.as_str()));
            }
            if policy.ack.contains(&Deadline::After(Duration::ZERO)) {
                return Err(format!("{}: an `ack` deadline of 0 s escalates at once", severity.as_str()));
            }
            if policy.handle == Deadline::After(Duration::ZERO) {
                return Err(format!("{}: a `handle` deadline of 0 s escalates at once", severity.as_str()));
            }
        }
        if self.spread_buildings < 2 || self.chatter_cycles < 2 || self.flood_threshold == 0 {
            return Err("spread_buildings and chatter_cycles must be ≥ 2, flood_threshold ≥ 1".into());
        }
        if self.unplaced_total_limit < self.unplaced_limit {
            return Err(
                "unplaced_total_limit must be ≥ unplaced_limit (it bounds all villages together)".into()
            );
        }
        if self.unplaced_limit == 0 {
            return Err("unplaced_limit must be ≥ 1 (beyond it unplaced devices fold into one case)".into());
        }
        Ok(())
    }
}

fn default_unplaced_total_limit() -> usize {
    30
}
