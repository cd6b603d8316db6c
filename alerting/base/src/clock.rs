//! The gateway's two clocks: the wall clock for stamps, and a [`DeadlineClock`] for every
//! decision that waits.
//!
//! The wall clock (`SystemTime`) can step: an NTP correction at boot, an operator setting
//! the date by hand, a virtual machine resumed after a pause, a bad RTC. Had escalation
//! deadlines run on it, a step forward would fire every pending deadline at once (pages to
//! the district within a second of the alarm) and a correction back would freeze them until
//! real time caught up with the step — hours in which no unanswered fire climbs the grid.
//! Liveness would call every device offline on a step forward.
//!
//! So the parts that decide when something is due — the alarm engine, liveness — take their
//! time from a [`DeadlineClock`]: Unix milliseconds read once when it starts, then advanced
//! only by the monotonic clock (`Instant`, `CLOCK_MONOTONIC`), which never steps. Its
//! readings look like wall time (they are stored and shown as stamps), stay close to it
//! while the wall clock is right, and never jump. What the gateway stamps on device data
//! (the acceptance time written to InfluxDB) is the wall clock, as a reader of the data
//! expects.
//!
//! The price: when the wall clock was wrong at start and is corrected later, the deadline
//! clock keeps the old offset until the next start. [`DeadlineClock::offset_from_wall_ms`]
//! measures that offset so that metrics and logs can say so.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The wall clock now, Unix milliseconds (0 before 1970).
pub fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Unix-millisecond readings that advance with the monotonic clock only.
///
/// Copies share the anchor, so every copy reads the same time.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineClock {
    base_ms: u64,
    started: Instant,
}

impl DeadlineClock {
    /// Starts at the wall clock now, or at `floor_ms` if that is later. The floor is the
    /// latest time the part has already stored (its last logged input, its snapshot): after
    /// a restart on a wall clock that stepped back, time must not run backwards through
    /// what was stored, nor stand still until the wall clock catches up.
    pub fn start(floor_ms: u64) -> Self {
        DeadlineClock { base_ms: wall_ms().max(floor_ms), started: Instant::now() }
    }

    /// The time now, Unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.base_ms.saturating_add(self.started.elapsed().as_millis() as u64)
    }

    /// How far the wall clock is ahead of this clock (negative: behind), in milliseconds.
    pub fn offset_from_wall_ms(&self) -> i64 {
        wall_ms() as i64 - self.now_ms() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_the_floor_when_the_wall_clock_is_behind_it() {
        let floor = wall_ms() + 3_600_000;
        let clock = DeadlineClock::start(floor);
        let now = clock.now_ms();
        assert!(now >= floor, "{now} before the floor {floor}");
        assert!(clock.offset_from_wall_ms() <= -3_500_000, "{}", clock.offset_from_wall_ms());
    }

    #[test]
    fn starts_at_the_wall_clock_and_never_goes_back() {
        let before = wall_ms();
        let clock = DeadlineClock::start(0);
        let copy = clock;
        let mut last = clock.now_ms();
        assert!(last >= before);
        for _ in 0..1000 {
            let now = copy.now_ms();
            assert!(now >= last, "{now} after {last}");
            last = now;
        }
    }
}
