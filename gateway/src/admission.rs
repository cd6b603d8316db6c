//! Per-device admission: duplicates, replays and rate limits. Pure: the time is an argument.
//!
//! Devices retransmit until the gateway acknowledges (the firmware outbox), brokers redeliver
//! unacknowledged QoS 1 messages after a reconnect, and an attacker may replay a captured
//! message. All three look the same on the wire: a `(boot, seq)` the gateway has seen. A
//! sliding window per device (the anti-replay window of IPsec, RFC 4303 §3.4.3) tells a fresh
//! message from a duplicate (seen, inside the window: acknowledge again, store nothing) and a
//! replay (older than the window, or from an earlier boot: reject).
//!
//! The rate limit is a token bucket per device and class. Alarm-class messages get their own,
//! larger bucket so that a device flooding heartbeats can never use up the budget its fire
//! alarm needs, and a chattering detector (≥ 3 alarm cycles a minute, ISA-18.2) still stays
//! far inside it. The bucket is a few lines next to the replay window, sharing its per-device
//! entry; a keyed limiter crate would keep a second map of the same devices and read the clock
//! itself.

use std::collections::HashMap;

use firegrid_protocol::{Class, DeviceId};

/// Sequence numbers remembered below the highest one seen. Devices interleave at most a few
/// retransmissions; 128 covers an outbox of that many messages sent out of order.
const WINDOW: u32 = 128;

/// Limits of the admission checks.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionConfig {
    /// Sustained messages per second per device for event and telemetry classes.
    pub rate_per_s: f64,
    /// Burst size for event and telemetry classes.
    pub burst: f64,
    /// Sustained alarm-class messages per second per device.
    pub alarm_rate_per_s: f64,
    /// Alarm-class burst size.
    pub alarm_burst: f64,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        // A detector sends a heartbeat every few hours and a handful of state changes per
        // incident; a camera a few events a minute. 1/s sustained with bursts of 30 is two
        // orders of magnitude above normal and still stops a flooding device within seconds.
        AdmissionConfig { rate_per_s: 1.0, burst: 30.0, alarm_rate_per_s: 2.0, alarm_burst: 60.0 }
    }
}

/// The verdict on one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New: process and store it.
    Fresh,
    /// Already accepted (a retransmission or redelivery): acknowledge it again, store nothing.
    Duplicate,
    /// Older than the window, or from an earlier boot: reject.
    Replayed,
    /// The device exceeded its rate: reject.
    RateLimited,
}

impl Verdict {
    /// The metrics label of a rejection or duplicate.
    pub fn reason(self) -> &'static str {
        match self {
            Verdict::Fresh => "fresh",
            Verdict::Duplicate => "duplicate",
            Verdict::Replayed => "replayed",
            Verdict::RateLimited => "rate_limited",
        }
    }
}

#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    at_ms: u64,
}

impl Bucket {
    fn full(burst: f64, now_ms: u64) -> Self {
        Bucket { tokens: burst, at_ms: now_ms }
    }

    fn take(&mut self, rate_per_s: f64, burst: f64, now_ms: u64) -> bool {
        let elapsed_s = now_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed_s * rate_per_s).min(burst);
        // Not `max`: after the wall clock steps back, refilling resumes from the new time
        // instead of waiting for the clock to pass the old one (until then every device would
        // be held to what is left of its burst). A step forward refills the bucket once.
        self.at_ms = now_ms;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone)]
struct DeviceState {
    boot: u16,
    max_seq: u32,
    /// Bit `i` set: `max_seq - i` was seen.
    seen: u128,
    alarm: Bucket,
    other: Bucket,
}

/// `a` is after `b` in serial-number arithmetic (RFC 1982), so the boot counter may wrap.
fn boot_after(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

/// Admission state of every device that has sent something.
#[derive(Debug, Default)]
pub struct Admission {
    cfg: AdmissionConfig,
    devices: HashMap<DeviceId, DeviceState>,
}

impl Admission {
    /// Empty state.
    pub fn new(cfg: AdmissionConfig) -> Self {
        Admission { cfg, devices: HashMap::new() }
    }

    /// Judges a message from `dev` and, when fresh, remembers it.
    pub fn check(&mut self, dev: &DeviceId, boot: u16, seq: u32, class: Class, now_ms: u64) -> Verdict {
        let cfg = &self.cfg;
        let state =
            self.devices.entry(dev.clone()).or_insert_with(|| DeviceState::new(cfg, boot, seq, now_ms));
        let verdict = state.window_verdict(boot, seq);
        if verdict != Verdict::Fresh {
            return verdict;
        }
        if !state.take_token(cfg, class, now_ms) {
            // Not remembered: the device may retransmit it later, within its budget.
            return Verdict::RateLimited;
        }
        state.remember(boot, seq);
        Verdict::Fresh
    }

    /// Judges a message that is exempt from the replay window (a device's `status`, whose
    /// last-will copy is composed at connect time, before the messages it follows): only the
    /// rate limit applies, and nothing is remembered.
    pub fn check_rate_only(
        &mut self,
        dev: &DeviceId,
        boot: u16,
        seq: u32,
        class: Class,
        now_ms: u64,
    ) -> Verdict {
        let cfg = &self.cfg;
        let state =
            self.devices.entry(dev.clone()).or_insert_with(|| DeviceState::new(cfg, boot, seq, now_ms));
        if state.take_token(cfg, class, now_ms) { Verdict::Fresh } else { Verdict::RateLimited }
    }

    /// Remembers a message accepted before a restart (read back from the spool), so that its
    /// redelivery by the broker counts as a duplicate. Rate limits are not charged.
    pub fn remember(&mut self, dev: &DeviceId, boot: u16, seq: u32, now_ms: u64) {
        let cfg = &self.cfg;
        let state =
            self.devices.entry(dev.clone()).or_insert_with(|| DeviceState::new(cfg, boot, seq, now_ms));
        if state.window_verdict(boot, seq) == Verdict::Fresh {
            state.remember(boot, seq);
        }
    }

    /// Devices tracked.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether no device is tracked.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

impl DeviceState {
    /// A device seen for the first time: nothing remembered yet, full buckets.
    fn new(cfg: &AdmissionConfig, boot: u16, seq: u32, now_ms: u64) -> Self {
        DeviceState {
            boot,
            max_seq: seq,
            seen: 0,
            alarm: Bucket::full(cfg.alarm_burst, now_ms),
            other: Bucket::full(cfg.burst, now_ms),
        }
    }

    /// Takes one token from the bucket of `class`; `false` when it is empty.
    fn take_token(&mut self, cfg: &AdmissionConfig, class: Class, now_ms: u64) -> bool {
        match class {
            Class::Alarm => self.alarm.take(cfg.alarm_rate_per_s, cfg.alarm_burst, now_ms),
            Class::Event | Class::Telemetry => self.other.take(cfg.rate_per_s, cfg.burst, now_ms),
        }
    }

    fn window_verdict(&self, boot: u16, seq: u32) -> Verdict {
        if boot_after(boot, self.boot) {
            return Verdict::Fresh;
        }
        if boot != self.boot {
            return Verdict::Replayed;
        }
        if seq > self.max_seq || self.seen == 0 {
            return Verdict::Fresh;
        }
        let age = self.max_seq - seq;
        if age >= WINDOW {
            Verdict::Replayed
        } else if self.seen & (1u128 << age) != 0 {
            Verdict::Duplicate
        } else {
            Verdict::Fresh
        }
    }

    fn remember(&mut self, boot: u16, seq: u32) {
        if boot != self.boot || self.seen == 0 {
            self.boot = boot;
            self.max_seq = seq;
            self.seen = 1;
        } else if seq > self.max_seq {
            let shift = seq - self.max_seq;
            self.seen = if shift >= WINDOW { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.max_seq = seq;
        } else {
            self.seen |= 1u128 << (self.max_seq - seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_763_860_000_000;

    /// Runs `(boot, seq, class, at_ms)` messages from one device and compares the verdicts.
    fn check(messages: &[(u16, u32, Class, u64)], expected: &[Verdict]) {
        let mut admission = Admission::new(AdmissionConfig::default());
        let dev = DeviceId::new("sd-1").unwrap();
        let got: Vec<_> =
            messages.iter().map(|&(b, s, c, t)| admission.check(&dev, b, s, c, T0 + t)).collect();
        assert_eq!(got, expected, "{messages:?}");
    }

    use Class::{Alarm, Telemetry};
    use Verdict::{Duplicate, Fresh, RateLimited, Replayed};

    #[test]
    fn duplicates_and_replays() {
        check(&[(1, 0, Alarm, 0), (1, 1, Alarm, 0), (1, 1, Alarm, 0)], &[Fresh, Fresh, Duplicate]);
        // Out of order inside the window is fine, once.
        check(
            &[(1, 5, Alarm, 0), (1, 3, Alarm, 0), (1, 4, Alarm, 0), (1, 3, Alarm, 0)],
            &[Fresh, Fresh, Fresh, Duplicate],
        );
        // Older than the window: a replay.
        check(&[(1, 1_000, Alarm, 0), (1, 1_000 - WINDOW, Alarm, 0)], &[Fresh, Replayed]);
        check(&[(1, 1_000, Alarm, 0), (1, 1_000 - WINDOW + 1, Alarm, 0)], &[Fresh, Fresh]);
        // A reboot restarts the sequence; messages of the old boot are replays.
        check(
            &[(1, 50, Alarm, 0), (2, 0, Alarm, 0), (1, 51, Alarm, 0), (2, 0, Alarm, 0)],
            &[Fresh, Fresh, Replayed, Duplicate],
        );
        // The boot counter wraps.
        check(
            &[(u16::MAX, 9, Alarm, 0), (0, 0, Alarm, 0), (u16::MAX, 10, Alarm, 0)],
            &[Fresh, Fresh, Replayed],
        );
        // A jump far ahead clears the window.
        check(&[(1, 0, Alarm, 0), (1, 10_000, Alarm, 0), (1, 0, Alarm, 0)], &[Fresh, Fresh, Replayed]);
    }

    #[test]
    fn refilling_resumes_after_the_clock_steps_back() {
        let cfg = AdmissionConfig::default();
        let burst = cfg.burst as u32;
        // The burst is used up an hour ahead; then the clock is corrected back by that hour.
        let hour = 3_600_000;
        let mut msgs: Vec<_> = (0..burst).map(|s| (1, s, Telemetry, hour)).collect();
        let mut want = vec![Fresh; burst as usize];
        msgs.push((1, burst, Telemetry, 0));
        want.push(RateLimited);
        // Two seconds after the correction, two tokens have come back, as they would have
        // without the step; they do not wait for the clock to pass the hour again.
        msgs.push((1, burst, Telemetry, 2_000));
        want.push(Fresh);
        msgs.push((1, burst + 1, Telemetry, 2_000));
        want.push(Fresh);
        msgs.push((1, burst + 2, Telemetry, 2_000));
        want.push(RateLimited);
        check(&msgs, &want);
    }

    #[test]
    fn rate_limits_per_class() {
        let cfg = AdmissionConfig::default();
        let burst = cfg.burst as u32;
        let mut msgs: Vec<_> = (0..=burst).map(|s| (1, s, Telemetry, 0)).collect();
        let mut want = vec![Fresh; burst as usize];
        want.push(RateLimited);
        // The telemetry flood does not touch the alarm budget.
        msgs.push((1, burst + 1, Alarm, 0));
        want.push(Fresh);
        // One second later one more telemetry token is there; the limited message may be resent.
        msgs.push((1, burst, Telemetry, 1_000));
        want.push(Fresh);
        msgs.push((1, burst + 2, Telemetry, 1_000));
        want.push(RateLimited);
        check(&msgs, &want);
    }

    #[test]
    fn exempt_messages_are_rate_limited_only() {
        let mut admission = Admission::new(AdmissionConfig::default());
        let dev = DeviceId::new("cam-1").unwrap();
        assert_eq!(admission.check(&dev, 4, 500, Class::Event, T0), Fresh);
        // A last will composed at connect time, long before seq 500: accepted, twice.
        assert_eq!(admission.check_rate_only(&dev, 4, 2, Class::Event, T0), Fresh);
        assert_eq!(admission.check_rate_only(&dev, 4, 2, Class::Event, T0), Fresh);
        // And it did not disturb the window.
        assert_eq!(admission.check(&dev, 4, 500, Class::Event, T0), Duplicate);
        assert_eq!(admission.check(&dev, 4, 501, Class::Event, T0), Fresh);
        let burst = AdmissionConfig::default().burst as u32;
        let verdicts: Vec<_> =
            (0..burst).map(|_| admission.check_rate_only(&dev, 4, 2, Class::Event, T0)).collect();
        assert_eq!(verdicts.last(), Some(&RateLimited));
    }

    #[test]
    fn remembered_messages_are_duplicates_after_a_restart() {
        let mut admission = Admission::new(AdmissionConfig::default());
        let dev = DeviceId::new("sd-1").unwrap();
        admission.remember(&dev, 3, 7, T0);
        admission.remember(&dev, 3, 9, T0);
        assert_eq!(admission.check(&dev, 3, 7, Alarm, T0), Duplicate);
        assert_eq!(admission.check(&dev, 3, 8, Alarm, T0), Fresh);
        assert_eq!(admission.check(&dev, 3, 9, Alarm, T0), Duplicate);
        assert_eq!(admission.len(), 1);
    }
}
