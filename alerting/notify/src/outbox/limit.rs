//! A channel's rate limit (`rate_limit = { messages = 20, per = "1m" }`) and the sans-IO window
//! that enforces it, with a share of each window kept for fire and pre-alarm pages.
//!
//! Why not `governor` (or any GCRA/token-bucket crate): the robots count messages per window
//! ("20 a minute"), and a bucket of 20 refilled at 20 a minute lets through up to 39 in one
//! minute (a full bucket, then one every 3 s); every message past 20 earns a 45009/130101
//! refusal, and DingTalk then blocks the robot for ten minutes. The window below counts the
//! sends of the last `per` exactly. It also needs two thresholds over one shared count (routine
//! pages stop at `messages - reserve`, urgent ones at `messages`), and a bucket crate has no
//! way to test a lower threshold without taking a token. It is a list of at most `messages`
//! send times, taking the time as an argument so that tests pass explicit times.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::time::Duration;

use serde::Deserialize;

/// At most `messages` sends in any window of `per`, of which `reserve` are kept for fire and
/// pre-alarm pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Most requests sent to the channel in any window of `per` (every attempt counts, failed
    /// or not: the platform counts what it receives).
    pub messages: NonZeroU32,
    /// The window, e.g. `"1m"`.
    #[serde(with = "humantime_serde")]
    pub per: Duration,
    /// How many of the `messages` in each window only fire and pre-alarm pages may use:
    /// faults, reminders of them and tests stop at `messages - reserve`, so a burst of routine
    /// pages can never leave a fire waiting for the window to pass. `0` switches the reserve
    /// off. Default: a fifth of `messages`, rounded up (4 of 20).
    #[serde(default)]
    pub reserve: Option<u32>,
}

impl RateLimit {
    /// `messages` per `per` with the default reserve.
    pub fn new(messages: u32, per: Duration) -> RateLimit {
        RateLimit {
            messages: NonZeroU32::new(messages).expect("a rate limit admits messages"),
            per,
            reserve: None,
        }
    }

    /// The slots kept for urgent pages.
    pub fn reserve(&self) -> u32 {
        self.reserve.unwrap_or(self.messages.get().div_ceil(5))
    }

    /// Why this limit cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.per.is_zero() {
            return Err("rate_limit.per must be longer than zero".into());
        }
        if self.reserve() >= self.messages.get() {
            return Err(format!(
                "rate_limit.reserve ({}) must be below rate_limit.messages ({}): routine pages would never be sent",
                self.reserve(),
                self.messages
            ));
        }
        Ok(())
    }
}

/// `limit` if it can be used, for a channel's builder.
pub fn checked(limit: Option<RateLimit>) -> Result<Option<RateLimit>, crate::ConfigError> {
    if let Some(l) = &limit {
        l.check().map_err(crate::ConfigError::msg)?;
    }
    Ok(limit)
}

/// The sends of one channel within the last window, oldest first (times in ms).
#[derive(Debug, Clone)]
pub struct Window {
    limit: RateLimit,
    sent: VecDeque<u64>,
}

impl Window {
    /// An empty window.
    pub fn new(limit: RateLimit) -> Window {
        Window { limit, sent: VecDeque::with_capacity(limit.messages.get() as usize) }
    }

    /// The limit it enforces.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Whether a page may be sent at `now_ms` (`urgent`: fire or pre-alarm, which may use the
    /// reserve); if not, the earliest time it may.
    pub fn check(&mut self, now_ms: u64, urgent: bool) -> Result<(), u64> {
        self.expire(now_ms);
        let messages = self.limit.messages.get() as usize;
        let cap = if urgent { messages } else { messages - self.limit.reserve() as usize };
        if self.sent.len() < cap {
            return Ok(());
        }
        // The send whose leaving brings the count below `cap`.
        let leaving = self.sent[self.sent.len() - cap];
        Err(leaving.saturating_add(self.per_ms()))
    }

    /// Counts a send at `now_ms`. Call only after [`check`](Self::check) allowed it.
    pub fn take(&mut self, now_ms: u64) {
        self.expire(now_ms);
        self.sent.push_back(now_ms);
    }

    /// Sends still counted at `now_ms`.
    pub fn used(&mut self, now_ms: u64) -> usize {
        self.expire(now_ms);
        self.sent.len()
    }

    fn per_ms(&self) -> u64 {
        self.limit.per.as_millis() as u64
    }

    /// Forgets sends older than the window. The times are wall-clock times (the outbox's
    /// clock); a send "later" than now was counted before the clock stepped back, and is
    /// moved to now rather than forgotten, so a step back holds the channel for at most one
    /// more window instead of letting a burst through.
    fn expire(&mut self, now_ms: u64) {
        let per = self.per_ms();
        for t in self.sent.iter_mut() {
            *t = (*t).min(now_ms);
        }
        while self.sent.front().is_some_and(|&t| t.saturating_add(per) <= now_ms) {
            self.sent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(messages: u32, per_s: u64, reserve: Option<u32>) -> RateLimit {
        RateLimit { reserve, ..RateLimit::new(messages, Duration::from_secs(per_s)) }
    }

    /// Tries `(time, urgent)` in order, taking a slot whenever allowed; returns each answer.
    fn check(limit: RateLimit, tries: &[(u64, bool)], expected: &[Result<(), u64>]) {
        let mut window = Window::new(limit);
        let got: Vec<_> = tries
            .iter()
            .map(|&(at, urgent)| {
                let answer = window.check(at, urgent);
                if answer.is_ok() {
                    window.take(at);
                }
                answer
            })
            .collect();
        assert_eq!(got, expected, "{limit:?} {tries:?}");
    }

    #[test]
    fn routine_pages_stop_short_of_the_reserve_and_urgent_ones_use_it() {
        // 3 per 10 s, 1 kept: two routine pages, then only urgent ones.
        let l = limit(3, 10, Some(1));
        check(
            l,
            &[(0, false), (1, false), (2, false), (3, true), (4, true), (5, false)],
            // The last routine page needs two sends gone: the one at 1 leaves at 10 001.
            &[Ok(()), Ok(()), Err(10_000), Ok(()), Err(10_000), Err(10_001)],
        );
        // Without a reserve, a fire waits behind routine pages for the window to pass.
        check(
            limit(3, 10, Some(0)),
            &[(0, false), (1, false), (2, false), (3, true), (10_000, true)],
            &[Ok(()), Ok(()), Ok(()), Err(10_000), Ok(())],
        );
    }

    #[test]
    fn the_window_slides_and_never_admits_more_than_messages_per_window() {
        let l = limit(20, 60, Some(4));
        assert_eq!(l.reserve(), 4);
        let mut window = Window::new(l);
        // Routine pages offered every 100 ms for five minutes.
        let mut sent = Vec::new();
        for at in (0..300_000u64).step_by(100) {
            if window.check(at, at % 7_000 == 0).is_ok() {
                window.take(at);
                sent.push(at);
            }
        }
        for (i, &t) in sent.iter().enumerate() {
            let in_window = sent[i..].iter().take_while(|&&u| u < t + 60_000).count();
            assert!(in_window <= 20, "{in_window} sends in the minute from {t}");
        }
        // Routine traffic alone uses 16 a minute; urgent pages get through on top.
        assert!(sent.len() >= 5 * 16, "{}", sent.len());
    }

    #[test]
    fn a_refusal_names_when_the_next_slot_opens() {
        let mut window = Window::new(limit(2, 10, Some(0)));
        window.take(1_000);
        window.take(4_000);
        assert_eq!(window.check(5_000, false), Err(11_000));
        assert_eq!(window.check(11_000, false), Ok(()));
        assert_eq!(window.used(11_000), 1);
        // With a reserve of 1, a routine page needs both sends gone.
        let mut window = Window::new(limit(3, 10, Some(1)));
        window.take(1_000);
        window.take(4_000);
        assert_eq!(window.check(5_000, false), Err(11_000));
        window.take(6_000);
        assert_eq!(window.check(7_000, false), Err(14_000));
        assert_eq!(window.check(7_000, true), Err(11_000));
    }

    #[test]
    fn a_clock_stepped_back_holds_the_channel_for_at_most_one_window() {
        let mut window = Window::new(limit(1, 10, Some(0)));
        window.take(3_600_000);
        // An hour back: the send counts as made now, not an hour from now.
        assert_eq!(window.check(1_000, true), Err(11_000));
        assert_eq!(window.check(11_000, true), Ok(()));
    }

    #[test]
    fn the_reserve_defaults_to_a_fifth_and_must_leave_room_for_routine_pages() {
        assert_eq!(limit(20, 60, None).reserve(), 4);
        assert_eq!(limit(3, 10, None).reserve(), 1);
        assert_eq!(limit(100, 60, None).reserve(), 20);
        assert!(limit(20, 60, None).check().is_ok());
        assert!(limit(1, 60, None).check().unwrap_err().contains("reserve"));
        assert!(limit(1, 60, Some(0)).check().is_ok());
        assert!(limit(5, 0, None).check().unwrap_err().contains("per"));
        let parsed: RateLimit = toml::from_str("messages = 20\nper = \"1m\"").unwrap();
        assert_eq!(parsed, RateLimit::new(20, Duration::from_secs(60)));
        assert!(toml::from_str::<RateLimit>("messages = 20\nper = \"1m\"\nburst = 3").is_err());
        assert!(toml::from_str::<RateLimit>("messages = 0\nper = \"1m\"").is_err());
    }
}
