//! Per-device admission: duplicates, replays and rate limits. Pure: the time is an argument.
//!
//! Devices retransmit until the gateway acknowledges (the firmware outbox), brokers redeliver
//! unacknowledged QoS 1 messages after a reconnect, and an attacker may replay a captured
//! message. All three look the same on the wire: a `(boot, seq)` the gateway has seen. A
//! sliding window per device (the anti-replay window of IPsec, RFC 4303 §3.4.3) tells a fresh
//! message from a duplicate (seen, inside the window: acknowledge again, store nothing) and a
//! replay (older than the window, or from an earlier boot: reject).
//!
//! Only authenticated messages (their tag verified under the device's key, [`crate::keys`])
//! move that window: a forged message with a huge `seq` or a later boot could otherwise shut
//! the real device out. Messages accepted without proof (keyless devices, or keyed ones still
//! allowed to send unsigned during a migration) are only told apart from their own recent
//! duplicates ([`Admission::check_unauthenticated`]), never refused as replays, and spend
//! their own rate buckets: an impostor can neither silence a device nor use up its budget.
//!
//! A signed message from an earlier boot than the window's is [`Verdict::EarlierBoot`]: a
//! replay, or a device whose boot counter went backwards (reflashed, flash erased). The
//! gateway answers it with a challenge ([`Admission::challenge`]); a signed answer echoing
//! the nonce restarts the window at that boot ([`Admission::answer`]).
//!
//! The rate limit is a token bucket per device and class. Alarm-class messages get their own,
//! larger bucket so that a device flooding heartbeats can never use up the budget its fire
//! alarm needs, and a chattering detector (≥ 3 alarm cycles a minute, ISA-18.2) still stays
//! far inside it. Firmware-transfer statuses (`fw_status`) get a third bucket of their own
//! ([`Budget::Firmware`]): a transfer answers every chunk with one, so a 62 KB image is some
//! 160 statuses in a minute, and sharing the telemetry bucket would both stall the transfer
//! (statuses refused after the burst, each refusal a `resend_after` wait) and spend the
//! device's heartbeat budget. The bucket is a few lines next to the replay window, sharing its
//! per-device entry; a keyed limiter crate would keep a second map of the same devices and
//! read the clock itself.

use std::collections::{HashMap, VecDeque};

use firegrid_protocol::{Class, DeviceId, UplinkKind};

/// Sequence numbers remembered below the highest one seen. Devices interleave at most a few
/// retransmissions; 128 covers an outbox of that many messages sent out of order.
const WINDOW: u32 = 128;

/// Unauthenticated `(boot, seq)` pairs remembered per device for duplicate detection.
const RECENT_UNAUTHENTICATED: usize = 64;

/// How long a challenge stays open, and how often one is sent to a device at most.
const CHALLENGE_MS: u64 = 60_000;

/// Which of a device's rate buckets a message spends. Admission's own grouping of the uplink
/// kinds: the delivery [`Class`] decides queueing, shedding and acknowledgement, and a
/// firmware status is telemetry there (a newer one supersedes it) but needs a budget of its
/// own here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Budget {
    /// Alarm-class messages ([`Class::Alarm`]).
    Alarm,
    /// Firmware-transfer statuses (`fw_status`): one per chunk while a transfer runs.
    Firmware,
    /// Everything else: events and telemetry.
    Other,
}

impl Budget {
    /// The budget messages of `kind` spend.
    pub const fn of(kind: UplinkKind) -> Budget {
        match (kind, kind.class()) {
            (UplinkKind::FwStatus, _) => Budget::Firmware,
            (_, Class::Alarm) => Budget::Alarm,
            (_, Class::Event | Class::Telemetry) => Budget::Other,
        }
    }
}

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
    /// Sustained firmware-transfer statuses (`fw_status`) per second per device.
    pub firmware_rate_per_s: f64,
    /// Firmware-status burst size.
    pub firmware_burst: f64,
    /// Devices tracked at most. Beyond it the least recently heard are forgotten, those
    /// without an authenticated window first (ids anyone can invent), so a flood of invented
    /// ids cannot exhaust memory nor push out a keyed device's window.
    pub max_devices: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        // A detector sends a heartbeat every few hours and a handful of state changes per
        // incident; a camera a few events a minute. 1/s sustained with bursts of 30 is two
        // orders of magnitude above normal and still stops a flooding device within seconds.
        // 100,000 devices is five times the largest street fitted so far (18,064 detectors).
        //
        // Firmware: a transfer is stop-and-wait, one `fw_status` per chunk received, so the
        // status rate is the chunk rate. At 5/s a 62 KB image (162 chunks of 384 B) takes
        // about 40 s per device with the rollout's 25 % margin (a chunk every 250 ms), which
        // a powered detector's round trip (tens of ms on the LAN) never limits and which an
        // NB-IoT one (a round trip of 1-2 s) never reaches. The burst of 20 absorbs statuses
        // bunched by the network and the few a device sends at once around its restart
        // (swapping, trial, booted). What a device holding its key gains from it: five more
        // small messages a second into the spool (about 1 KB/s), answered by a chunk only
        // while its own transfer runs; 18,064 such devices are 90,000 messages/s, under the
        // 123-192k msg/s the gateway drained verifying every tag (BENCHMARKS.md, "Ingest:
        // measured 2026-12-07"), and none of it comes out of the alarm budget.
        AdmissionConfig {
            rate_per_s: 1.0,
            burst: 30.0,
            alarm_rate_per_s: 2.0,
            alarm_burst: 60.0,
            firmware_rate_per_s: 5.0,
            firmware_burst: 20.0,
            max_devices: 100_000,
        }
    }
}

/// The verdict on one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New: process and store it.
    Fresh,
    /// Already accepted (a retransmission or redelivery): acknowledge it again, store nothing.
    Duplicate,
    /// Older than the window: reject.
    Replayed,
    /// Signed, but from an earlier boot than the device's last: a replay, or a reflashed
    /// device. Rejected; the gateway may challenge the device.
    EarlierBoot,
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
            Verdict::EarlierBoot => "earlier_boot",
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
    buckets: Buckets,
    /// State for messages accepted without proof, created on the first of them.
    unauthenticated: Option<Box<Unauthenticated>>,
    /// The open challenge: `(nonce, boot it was issued for, issued at)`.
    challenge: Option<(u64, u16, u64)>,
    /// Whether its latest accepted message was compact: commands go out in its encoding
    /// (a small device may decode only compact commands).
    compact: bool,
}

/// What is kept for a device's unauthenticated messages: its recent `(boot, seq)` pairs and
/// its own rate buckets.
#[derive(Debug, Clone)]
struct Unauthenticated {
    recent: VecDeque<(u16, u32)>,
    buckets: Buckets,
}

/// One bucket per [`Budget`].
#[derive(Debug, Clone)]
struct Buckets {
    alarm: Bucket,
    firmware: Bucket,
    other: Bucket,
}

impl Buckets {
    fn full(cfg: &AdmissionConfig, now_ms: u64) -> Self {
        Buckets {
            alarm: Bucket::full(cfg.alarm_burst, now_ms),
            firmware: Bucket::full(cfg.firmware_burst, now_ms),
            other: Bucket::full(cfg.burst, now_ms),
        }
    }

    /// Takes one token from the bucket of `budget`; `false` when it is empty.
    fn take(&mut self, cfg: &AdmissionConfig, budget: Budget, now_ms: u64) -> bool {
        match budget {
            Budget::Alarm => self.alarm.take(cfg.alarm_rate_per_s, cfg.alarm_burst, now_ms),
            Budget::Firmware => self.firmware.take(cfg.firmware_rate_per_s, cfg.firmware_burst, now_ms),
            Budget::Other => self.other.take(cfg.rate_per_s, cfg.burst, now_ms),
        }
    }

    /// The latest refill of any of them.
    fn last_ms(&self) -> u64 {
        self.alarm.at_ms.max(self.firmware.at_ms).max(self.other.at_ms)
    }
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

    /// Forgets a sixteenth of the tracked devices when a new one would pass
    /// [`AdmissionConfig::max_devices`]: the least recently heard of those without an
    /// authenticated window, then (only if there are not enough) the least recently heard.
    fn make_room(&mut self, dev: &DeviceId) {
        if self.devices.len() < self.cfg.max_devices.max(1) || self.devices.contains_key(dev) {
            return;
        }
        let mut by_age: Vec<(bool, u64, DeviceId)> =
            self.devices.iter().map(|(id, s)| (s.seen != 0, s.last_ms(), id.clone())).collect();
        by_age.sort_unstable_by_key(|&(authenticated, last_ms, _)| (authenticated, last_ms));
        let evict = (self.cfg.max_devices / 16).max(1);
        for (_, _, id) in by_age.into_iter().take(evict) {
            self.devices.remove(&id);
        }
    }

    /// Judges a message from `dev` and, when fresh, remembers it.
    pub fn check(&mut self, dev: &DeviceId, boot: u16, seq: u32, budget: Budget, now_ms: u64) -> Verdict {
        self.make_room(dev);
        let cfg = &self.cfg;
        let state =
            self.devices.entry(dev.clone()).or_insert_with(|| DeviceState::new(cfg, boot, seq, now_ms));
        let verdict = state.window_verdict(boot, seq);
        if verdict != Verdict::Fresh {
            return verdict;
        }
        if !state.buckets.take(cfg, budget, now_ms) {
            // Not remembered: the device may retransmit it later, within its budget.
            return Verdict::RateLimited;
        }
        state.remember(boot, seq);
        Verdict::Fresh
    }

    /// Judges a message accepted without proof of origin: a duplicate when the same
    /// `(boot, seq)` came unauthenticated recently, otherwise fresh within its own rate budget.
    /// Never moves the authenticated window and is never refused as a replay.
    pub fn check_unauthenticated(
        &mut self,
        dev: &DeviceId,
        boot: u16,
        seq: u32,
        budget: Budget,
        now_ms: u64,
    ) -> Verdict {
        let cfg = self.cfg.clone();
        let u = self.unauthenticated(dev, now_ms);
        if u.recent.contains(&(boot, seq)) {
            return Verdict::Duplicate;
        }
        if !u.buckets.take(&cfg, budget, now_ms) {
            return Verdict::RateLimited;
        }
        u.remember(boot, seq);
        Verdict::Fresh
    }

    /// Remembers an unauthenticated message accepted before a restart (from the spool).
    pub fn remember_unauthenticated(&mut self, dev: &DeviceId, boot: u16, seq: u32, now_ms: u64) {
        let u = self.unauthenticated(dev, now_ms);
        if !u.recent.contains(&(boot, seq)) {
            u.remember(boot, seq);
        }
    }

    /// The unauthenticated state of `dev`, created (making room) on its first such message.
    fn unauthenticated(&mut self, dev: &DeviceId, now_ms: u64) -> &mut Unauthenticated {
        self.make_room(dev);
        let cfg = &self.cfg;
        let state = self.devices.entry(dev.clone()).or_insert_with(|| DeviceState::untrusted(cfg, now_ms));
        state.unauthenticated.get_or_insert_with(|| Box::new(Unauthenticated::new(cfg, now_ms)))
    }

    /// A challenge to send `dev` for its signed message from the earlier `boot`: a fresh nonce,
    /// or `None` when one was sent less than a minute ago (a replaying attacker gets at most
    /// one challenge a minute per device out of the gateway).
    pub fn challenge(&mut self, dev: &DeviceId, boot: u16, now_ms: u64, nonce: u64) -> Option<u64> {
        let state = self.devices.get_mut(dev)?;
        if let Some((_, _, at)) = state.challenge
            && now_ms.saturating_sub(at) < CHALLENGE_MS
        {
            return None;
        }
        state.challenge = Some((nonce, boot, now_ms));
        Some(nonce)
    }

    /// A signed `boot` answer from `dev`: when it echoes the open challenge's nonce for this
    /// boot, the window restarts at `(boot, seq)` and `true` is returned; otherwise nothing
    /// changes.
    pub fn answer(&mut self, dev: &DeviceId, boot: u16, seq: u32, nonce: u64, now_ms: u64) -> bool {
        let Some(state) = self.devices.get_mut(dev) else { return false };
        match state.challenge {
            Some((n, b, at)) if n == nonce && b == boot && now_ms.saturating_sub(at) <= CHALLENGE_MS => {
                state.challenge = None;
                state.boot = boot;
                state.max_seq = seq;
                state.seen = 1;
                true
            }
            _ => false,
        }
    }

    /// Notes the encoding of `dev`'s latest accepted message.
    pub fn note_encoding(&mut self, dev: &DeviceId, compact: bool) {
        if let Some(state) = self.devices.get_mut(dev) {
            state.compact = compact;
        }
    }

    /// Whether `dev`'s latest accepted message was compact.
    pub fn prefers_compact(&self, dev: &DeviceId) -> bool {
        self.devices.get(dev).is_some_and(|s| s.compact)
    }

    /// The boot counter of `dev`'s authenticated window: the boot its commands are signed for.
    pub fn boot(&self, dev: &DeviceId) -> Option<u16> {
        self.devices.get(dev).filter(|s| s.seen != 0).map(|s| s.boot)
    }

    /// Forgets the authenticated window of `dev` (an officer's reset, audited by the caller):
    /// its next signed message starts a new one, whatever its boot.
    pub fn reset(&mut self, dev: &DeviceId) -> bool {
        match self.devices.get_mut(dev) {
            Some(state) => {
                state.seen = 0;
                state.challenge = None;
                true
            }
            None => false,
        }
    }

    /// Judges a message that is exempt from the replay window (a device's `status`, whose
    /// last-will copy is composed at connect time, before the messages it follows): only the
    /// rate limit applies, and nothing is remembered.
    pub fn check_rate_only(
        &mut self,
        dev: &DeviceId,
        boot: u16,
        seq: u32,
        budget: Budget,
        now_ms: u64,
    ) -> Verdict {
        self.make_room(dev);
        let cfg = &self.cfg;
        let state =
            self.devices.entry(dev.clone()).or_insert_with(|| DeviceState::new(cfg, boot, seq, now_ms));
        if state.buckets.take(cfg, budget, now_ms) { Verdict::Fresh } else { Verdict::RateLimited }
    }

    /// Remembers a message accepted before a restart (read back from the spool), so that its
    /// redelivery by the broker counts as a duplicate. Rate limits are not charged.
    pub fn remember(&mut self, dev: &DeviceId, boot: u16, seq: u32, now_ms: u64) {
        self.make_room(dev);
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
            buckets: Buckets::full(cfg, now_ms),
            unauthenticated: None,
            challenge: None,
            compact: false,
        }
    }

    /// When the device was last heard (its buckets' latest refill).
    fn last_ms(&self) -> u64 {
        let u = self.unauthenticated.as_ref().map_or(0, |u| u.buckets.last_ms());
        self.buckets.last_ms().max(u)
    }

    /// A device first heard without proof: no authenticated window yet (`seen` empty, so
    /// its first signed message starts one at whatever boot it carries).
    fn untrusted(cfg: &AdmissionConfig, now_ms: u64) -> Self {
        DeviceState::new(cfg, 0, 0, now_ms)
    }

    fn window_verdict(&self, boot: u16, seq: u32) -> Verdict {
        if self.seen == 0 || boot_after(boot, self.boot) {
            return Verdict::Fresh;
        }
        if boot != self.boot {
            return Verdict::EarlierBoot;
        }
        if seq > self.max_seq {
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

impl Unauthenticated {
    fn new(cfg: &AdmissionConfig, now_ms: u64) -> Self {
        Unauthenticated {
            // Grown as messages come, to at most RECENT_UNAUTHENTICATED: a device heard once
            // holds a few entries, not 64 (512 B) from its first message.
            recent: VecDeque::new(),
            buckets: Buckets::full(cfg, now_ms),
        }
    }

    fn remember(&mut self, boot: u16, seq: u32) {
        if self.recent.len() == RECENT_UNAUTHENTICATED {
            self.recent.pop_front();
        }
        self.recent.push_back((boot, seq));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_763_860_000_000;

    /// Runs `(boot, seq, budget, at_ms)` messages from one device and compares the verdicts.
    fn check(messages: &[(u16, u32, Budget, u64)], expected: &[Verdict]) {
        let mut admission = Admission::new(AdmissionConfig::default());
        let dev = DeviceId::new("sd-1").unwrap();
        let got: Vec<_> =
            messages.iter().map(|&(b, s, c, t)| admission.check(&dev, b, s, c, T0 + t)).collect();
        assert_eq!(got, expected, "{messages:?}");
    }

    use Budget::{Alarm, Firmware, Other as Telemetry};
    use Verdict::{Duplicate, EarlierBoot, Fresh, RateLimited, Replayed};

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
            &[Fresh, Fresh, EarlierBoot, Duplicate],
        );
        // The boot counter wraps.
        check(
            &[(u16::MAX, 9, Alarm, 0), (0, 0, Alarm, 0), (u16::MAX, 10, Alarm, 0)],
            &[Fresh, Fresh, EarlierBoot],
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

    /// A transfer's statuses spend their own budget: a device sending a status per chunk
    /// for longer than its telemetry burst still gets its heartbeats in, and a heartbeat
    /// flood does not stop its transfer.
    #[test]
    fn firmware_statuses_and_telemetry_do_not_share_a_budget() {
        let cfg = AdmissionConfig::default();
        assert_eq!(Budget::of(UplinkKind::FwStatus), Firmware);
        assert_eq!(Budget::of(UplinkKind::Heartbeat), Telemetry);
        assert_eq!(Budget::of(UplinkKind::State), Alarm);
        assert_eq!(Budget::of(UplinkKind::Fault), Telemetry);
        // 200 statuses at the configured firmware rate (one every 1/rate s), beyond any burst.
        let gap_ms = (1_000.0 / cfg.firmware_rate_per_s) as u64;
        let mut msgs: Vec<_> = (0..200).map(|s| (1, s, Firmware, s as u64 * gap_ms)).collect();
        let mut want = vec![Fresh; 200];
        // The whole telemetry burst right after: untouched by the transfer.
        let after = 200 * gap_ms;
        msgs.extend((0..cfg.burst as u32).map(|s| (1, 200 + s, Telemetry, after)));
        want.extend(vec![Fresh; cfg.burst as usize]);
        msgs.push((1, 500, Telemetry, after));
        want.push(RateLimited);
        // The telemetry bucket is empty; the firmware one is not.
        msgs.push((1, 501, Firmware, after));
        want.push(Fresh);
        // Statuses faster than the rate run out after the firmware burst.
        let burst = cfg.firmware_burst as u32;
        msgs.extend((0..burst).map(|s| (1, 600 + s, Firmware, after)));
        want.extend(vec![Fresh; burst as usize - 1]);
        want.push(RateLimited);
        check(&msgs, &want);
    }

    #[test]
    fn exempt_messages_are_rate_limited_only() {
        let mut admission = Admission::new(AdmissionConfig::default());
        let dev = DeviceId::new("cam-1").unwrap();
        assert_eq!(admission.check(&dev, 4, 500, Budget::Other, T0), Fresh);
        // A last will composed at connect time, long before seq 500: accepted, twice.
        assert_eq!(admission.check_rate_only(&dev, 4, 2, Budget::Other, T0), Fresh);
        assert_eq!(admission.check_rate_only(&dev, 4, 2, Budget::Other, T0), Fresh);
        // And it did not disturb the window.
        assert_eq!(admission.check(&dev, 4, 500, Budget::Other, T0), Duplicate);
        assert_eq!(admission.check(&dev, 4, 501, Budget::Other, T0), Fresh);
        let burst = AdmissionConfig::default().burst as u32;
        let verdicts: Vec<_> =
            (0..burst).map(|_| admission.check_rate_only(&dev, 4, 2, Budget::Other, T0)).collect();
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

    /// The attack from the issue "Trust": a forged message with a huge `seq` must not shut
    /// the real device out. Unauthenticated messages never move the authenticated window.
    #[test]
    fn forged_unauthenticated_messages_cannot_silence_a_device() {
        let mut admission = Admission::new(AdmissionConfig::default());
        let dev = DeviceId::new("sd-1").unwrap();
        assert_eq!(admission.check(&dev, 3, 10, Alarm, T0), Fresh);
        assert_eq!(admission.check_unauthenticated(&dev, 3, 4_000_000_000, Telemetry, T0), Fresh);
        assert_eq!(admission.check_unauthenticated(&dev, 60_000, 0, Telemetry, T0), Fresh);
        assert_eq!(admission.check(&dev, 3, 11, Alarm, T0), Fresh, "the real alarm still gets through");
        assert_eq!(admission.check(&dev, 3, 11, Alarm, T0), Duplicate);
        // Unauthenticated duplicates are still told apart, and never called replays.
        assert_eq!(admission.check_unauthenticated(&dev, 1, 5, Alarm, T0), Fresh);
        assert_eq!(admission.check_unauthenticated(&dev, 1, 5, Alarm, T0), Duplicate);
        assert_eq!(admission.check_unauthenticated(&dev, 0, 0, Alarm, T0), Fresh);
        // An unauthenticated flood spends its own budget, not the device's.
        let burst = AdmissionConfig::default().alarm_burst as u32;
        let flood: Vec<_> =
            (100..100 + burst).map(|s| admission.check_unauthenticated(&dev, 9, s, Alarm, T0)).collect();
        assert_eq!(flood.last(), Some(&RateLimited));
        assert_eq!(admission.check(&dev, 3, 12, Alarm, T0), Fresh);
    }

    #[test]
    fn a_reflashed_device_recovers_through_a_challenge_or_a_reset() {
        let mut admission = Admission::new(AdmissionConfig::default());
        let dev = DeviceId::new("sd-1").unwrap();
        assert_eq!(admission.check(&dev, 57, 3, Alarm, T0), Fresh);
        // Reflashed: boot 1 now.
        assert_eq!(admission.check(&dev, 1, 0, Alarm, T0), EarlierBoot);
        assert_eq!(admission.challenge(&dev, 1, T0, 0xabc), Some(0xabc));
        assert_eq!(admission.challenge(&dev, 1, T0 + 1_000, 0xdef), None, "one challenge a minute");
        // A wrong nonce, or the right one for another boot, changes nothing.
        assert!(!admission.answer(&dev, 1, 1, 0xdef, T0 + 2_000));
        assert!(!admission.answer(&dev, 2, 1, 0xabc, T0 + 2_000));
        assert_eq!(admission.check(&dev, 1, 2, Alarm, T0 + 2_000), EarlierBoot);
        assert!(admission.answer(&dev, 1, 3, 0xabc, T0 + 2_000));
        assert_eq!(admission.check(&dev, 1, 4, Alarm, T0 + 2_000), Fresh);
        assert_eq!(admission.check(&dev, 57, 4, Alarm, T0 + 2_000), Fresh, "57 is after 1 (RFC 1982)");
        // A stale challenge is not answered.
        assert_eq!(admission.check(&dev, 1, 9, Alarm, T0 + 3_000), EarlierBoot);
        assert_eq!(admission.challenge(&dev, 1, T0 + 200_000, 7), Some(7));
        assert!(!admission.answer(&dev, 1, 10, 7, T0 + 200_000 + CHALLENGE_MS + 1));
        // An officer's reset lets the next signed message start a new window.
        assert!(admission.reset(&dev));
        assert_eq!(admission.check(&dev, 1, 11, Alarm, T0 + 300_000), Fresh);
        assert_eq!(admission.check(&dev, 1, 11, Alarm, T0 + 300_000), Duplicate);
    }

    #[test]
    fn invented_ids_cannot_exhaust_memory_nor_push_out_a_keyed_device() {
        let cfg = AdmissionConfig { max_devices: 64, ..AdmissionConfig::default() };
        let mut admission = Admission::new(cfg);
        let keyed = DeviceId::new("sd-keyed").unwrap();
        assert_eq!(admission.check(&keyed, 3, 10, Alarm, T0), Fresh);
        for i in 0..10_000u32 {
            let fake = DeviceId::new(&format!("fake-{i}")).unwrap();
            assert_eq!(admission.check_unauthenticated(&fake, 1, i, Telemetry, T0 + 1 + u64::from(i)), Fresh);
            assert!(admission.len() <= 64, "{} devices tracked", admission.len());
        }
        // The keyed device's window survived: its next message is fresh, a replay is not.
        assert_eq!(admission.check(&keyed, 3, 10, Alarm, T0 + 20_000), Duplicate);
        assert_eq!(admission.check(&keyed, 3, 11, Alarm, T0 + 20_000), Fresh);
    }
}
