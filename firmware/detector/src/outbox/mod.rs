//! Uplinks on their way to the gateway, kept for as long as their class needs.
//!
//! - **Alarm and event** messages must arrive. MQTT's PUBACK only proves the broker has a
//!   message; the gateway's `down/ack` proves it is durable and in front of the alerting
//!   engine. So each stays in the [`Outbox`] until its `(boot, seq)` is acknowledged, and is
//!   sent again when no ack came in time.
//! - **Telemetry** (heartbeats) is done once handed to the link for a QoS 1 publish:
//!   [`Outbox::mark_sent`] removes it. The gateway sends no `down/ack` for it
//!   ([`Class::is_acknowledged`]): a newer reading supersedes it, QoS 1 carries it to the
//!   broker, the gateway's persistent session (acknowledged to the broker only after its
//!   spool commit) carries it from there, and liveness tolerates a missed heartbeat. One
//!   acknowledgement per heartbeat cost the gateway a third of its ingest rate
//!   (BENCHMARKS.md, "Ingest efficiency"). While the link is down telemetry stays queued
//!   like everything else; since only the newest reading of a kind matters, it is what a full
//!   outbox sheds first, oldest first.

use firegrid_protocol::{Class, Uplink};

/// Resend period of alarm-class messages: GB 26875.1-2011 gives a fire alarm 10 s to
/// reach the monitoring centre, so an unacknowledged alarm is retried at that pace.
pub const ALARM_RETRY_MS: u64 = 10_000;
/// First resend period of event messages, doubled per attempt ...
pub const RETRY_MS: u64 = 30_000;
/// ... up to this, so a long outage costs little airtime and battery.
pub const MAX_RETRY_MS: u64 = 600_000;

/// One queued message.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The message.
    pub msg: Uplink,
    /// When it is next due to be sent.
    pub due_ms: u64,
    /// How often it has been sent.
    pub attempts: u16,
}

/// A bounded outbox of `N` messages. See the module documentation.
///
/// A message leaves when the gateway acknowledges it ([`Outbox::ack`]: alarms and events) or
/// when it is handed to the link ([`Outbox::mark_sent`]: telemetry).
///
/// Order: every due alarm-class message before any event, every event before any
/// telemetry; within a class, oldest first. When full, the oldest *telemetry* message is
/// shed first (a newer heartbeat supersedes it), and new telemetry is refused rather than
/// displacing an alarm or an event. With no telemetry left, a new alarm displaces the
/// oldest event (or, if the outbox holds nothing but alarms, the oldest alarm, which the
/// newest state supersedes), and a new event displaces the oldest event or is refused if
/// only alarms are queued. Shedding an alarm therefore takes 16 unacknowledged state
/// changes at the default size, each confirmed over seconds of smoke; every shed message is
/// counted ([`Outbox::shed_count`]).
#[derive(Debug, Clone)]
pub struct Outbox<const N: usize> {
    entries: heapless::Vec<Entry, N>,
    shed: u32,
}

impl<const N: usize> Default for Outbox<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Outbox<N> {
    /// An empty outbox.
    pub const fn new() -> Self {
        Outbox { entries: heapless::Vec::new(), shed: 0 }
    }

    /// Queues `msg`, due at once. Returns the message it had to shed, if any.
    pub fn push(&mut self, msg: Uplink, now_ms: u64) -> Option<Uplink> {
        let mut shed = None;
        if self.entries.is_full() {
            // `None` means "refuse the new message" instead of displacing a queued one.
            let victim = match (self.oldest_of(Class::Telemetry), msg.class()) {
                (Some(old_telemetry), _) => Some(old_telemetry),
                (None, Class::Telemetry) => None,
                (None, Class::Event) => self.oldest_of(Class::Event),
                (None, Class::Alarm) => self.oldest_of(Class::Event).or_else(|| self.oldest_of(Class::Alarm)),
            };
            self.shed += 1;
            match victim {
                None => return Some(msg),
                Some(i) => shed = Some(self.entries.remove(i).msg),
            }
        }
        // Cannot fail: a slot was freed above when the outbox was full.
        let _ = self.entries.push(Entry { msg, due_ms: now_ms, attempts: 0 });
        shed
    }

    fn oldest_of(&self, class: Class) -> Option<usize> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.msg.class() == class)
            .min_by_key(|(_, e)| (e.msg.boot, e.msg.seq))
            .map(|(i, _)| i)
    }

    /// The message to send now, if any is due: highest class first, then oldest.
    pub fn next_due(&self, now_ms: u64) -> Option<&Uplink> {
        self.entries
            .iter()
            .filter(|e| e.due_ms <= now_ms)
            .min_by_key(|e| (e.msg.class(), e.msg.boot, e.msg.seq))
            .map(|e| &e.msg)
    }

    /// Records that `(boot, seq)` was handed to the link at `now_ms`: telemetry is done and
    /// leaves the outbox; an alarm or event waits for its acknowledgement and is scheduled for
    /// its resend.
    pub fn mark_sent(&mut self, boot: u16, seq: u32, now_ms: u64) {
        let Some(i) = self.entries.iter().position(|e| e.msg.boot == boot && e.msg.seq == seq) else {
            return;
        };
        let class = self.entries[i].msg.class();
        if !class.is_acknowledged() {
            self.entries.remove(i);
            return;
        }
        let e = &mut self.entries[i];
        let wait = match class {
            Class::Alarm => ALARM_RETRY_MS,
            _ => (RETRY_MS << e.attempts.min(8)).min(MAX_RETRY_MS),
        };
        e.attempts = e.attempts.saturating_add(1);
        e.due_ms = now_ms + wait;
    }

    /// The gateway acknowledged `(boot, seq)`: forget it. Returns whether it was queued (an
    /// ack for telemetry still queued behind a down link is honoured too).
    pub fn ack(&mut self, boot: u16, seq: u32) -> bool {
        match self.entries.iter().position(|e| e.msg.boot == boot && e.msg.seq == seq) {
            Some(i) => {
                self.entries.remove(i);
                true
            }
            None => false,
        }
    }

    /// The earliest time a queued message falls due, if any is queued.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.entries.iter().map(|e| e.due_ms).min()
    }

    /// Queued messages, in queue order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Number of queued messages.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing waits to be sent or acknowledged.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many messages were shed because the outbox was full.
    pub fn shed_count(&self) -> u32 {
        self.shed
    }
}

#[cfg(test)]
mod tests;
