//! Which days are working days, for [`crate::Deadline::NextWorkingDay`]: Monday to Friday,
//! except the public holidays, plus the weekend days worked in their place. China's calendar
//! (`holidays/cn.toml`, from the State Council's yearly notice) is built in; a deployment can
//! load another file in the same format.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::{Date, Month};

/// Days since 1970-01-01 in local time.
pub type LocalDay = i64;

/// China's official calendar, built in.
const CHINA: &str = include_str!("../holidays/cn.toml");

/// The Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;

/// A holiday calendar: the days that differ from Monday-to-Friday, and the last day it is
/// known for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CalendarFile", into = "CalendarFile")]
pub struct Calendar {
    /// `true`: a working day although a weekend; `false`: a holiday although a weekday.
    exceptions: BTreeMap<LocalDay, bool>,
    through: Option<LocalDay>,
}

/// The file format: `through = "YYYY-MM-DD"`, `holidays = ["YYYY-MM-DD" or
/// "YYYY-MM-DD/YYYY-MM-DD", ...]`, `workdays = [...]` (weekend days worked).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarFile {
    #[serde(default)]
    through: Option<String>,
    #[serde(default)]
    holidays: Vec<String>,
    #[serde(default)]
    workdays: Vec<String>,
}

fn parse_day(text: &str) -> Result<LocalDay, String> {
    let bad = || format!("{text:?} is not a date YYYY-MM-DD");
    let mut parts = text.trim().splitn(3, '-');
    let mut next = || parts.next().ok_or_else(bad);
    let (y, m, d) = (next()?, next()?, next()?);
    let year: i32 = y.parse().map_err(|_| bad())?;
    let month: u8 = m.parse().map_err(|_| bad())?;
    let day: u8 = d.parse().map_err(|_| bad())?;
    let month = Month::try_from(month).map_err(|_| bad())?;
    let date = Date::from_calendar_date(year, month, day).map_err(|e| format!("{text:?}: {e}"))?;
    Ok(i64::from(date.to_julian_day()) - UNIX_EPOCH_JULIAN_DAY)
}

fn format_day(day: LocalDay) -> String {
    match Date::from_julian_day((day + UNIX_EPOCH_JULIAN_DAY) as i32) {
        Ok(date) => format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day()),
        Err(_) => day.to_string(),
    }
}

/// Monday = 0 ... Sunday = 6.
pub(crate) fn weekday(day: LocalDay) -> u8 {
    // 1970-01-01 was a Thursday.
    (day + 3).rem_euclid(7) as u8
}

impl TryFrom<CalendarFile> for Calendar {
    type Error = String;

    fn try_from(file: CalendarFile) -> Result<Self, String> {
        let mut exceptions = BTreeMap::new();
        for entry in &file.holidays {
            let (first, last) = match entry.split_once('/') {
                Some((a, b)) => (parse_day(a)?, parse_day(b)?),
                None => (parse_day(entry)?, parse_day(entry)?),
            };
            if last < first || last - first > 31 {
                return Err(format!("holiday range {entry:?} must run forwards, at most a month"));
            }
            for day in first..=last {
                // A holiday on a weekend changes nothing; only weekdays off are exceptions.
                if weekday(day) < 5 {
                    exceptions.insert(day, false);
                }
            }
        }
        for entry in &file.workdays {
            let day = parse_day(entry)?;
            if weekday(day) < 5 {
                return Err(format!("workday {entry:?} is a weekday already (list weekend days worked)"));
            }
            if exceptions.insert(day, true).is_some() {
                return Err(format!("{entry:?} is listed as a holiday and a workday"));
            }
        }
        let through = file.through.as_deref().map(parse_day).transpose()?;
        Ok(Calendar { exceptions, through })
    }
}

impl From<Calendar> for CalendarFile {
    fn from(cal: Calendar) -> Self {
        let pick = |worked: bool| {
            cal.exceptions.iter().filter(|(_, w)| **w == worked).map(|(d, _)| format_day(*d)).collect()
        };
        CalendarFile { through: cal.through.map(format_day), holidays: pick(false), workdays: pick(true) }
    }
}

impl Default for Calendar {
    fn default() -> Self {
        Calendar::china()
    }
}

impl Calendar {
    /// Monday to Friday, no holidays known.
    pub fn weekdays() -> Calendar {
        Calendar { exceptions: BTreeMap::new(), through: None }
    }

    /// China's official calendar (built in).
    pub fn china() -> Calendar {
        Calendar::from_toml(CHINA).expect("the built-in calendar parses (a unit test checks it)")
    }

    /// A calendar file's text.
    pub fn from_toml(text: &str) -> Result<Calendar, String> {
        let file: CalendarFile = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        Calendar::try_from(file)
    }

    /// Whether `day` is a working day.
    pub fn is_working(&self, day: LocalDay) -> bool {
        match self.exceptions.get(&day) {
            Some(worked) => *worked,
            None => weekday(day) < 5,
        }
    }

    /// The last day the calendar knows holidays for, as `YYYY-MM-DD`; `None` when it lists
    /// none at all.
    pub fn known_through(&self) -> Option<String> {
        self.through.map(format_day)
    }

    /// Whether the calendar knows the holidays of every day up to `day`.
    pub fn covers(&self, day: LocalDay) -> bool {
        self.through.is_some_and(|t| t >= day)
    }
}

/// The weekday as `time` computes it, for tests that cross-check [`weekday`].
#[cfg(test)]
pub(crate) fn weekday_of(day: LocalDay) -> time::Weekday {
    Date::from_julian_day((day + UNIX_EPOCH_JULIAN_DAY) as i32).unwrap().weekday()
}
