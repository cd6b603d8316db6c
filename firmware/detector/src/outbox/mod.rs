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
//!
//! Alarm- and event-class entries are also written to flash by [`crate::journal`] before
//! they are first sent, and removed from it once acknowledged. The outbox only keeps the
//! books of that ([`Entry::stored`], [`Outbox::forgotten`]); the board's pump does the
//! writing. Entries reloaded from flash after a reset ([`Outbox::reload`]) carry an earlier
//! boot counter and go out before anything of the new boot, so that the gateway, whose
//! duplicate window is still at their boot, takes a resend it already has for a duplicate.

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
    /// Whether its record is in the flash journal ([`crate::journal`]). Only alarm- and
    /// event-class entries are ever stored.
    pub stored: bool,
    /// Whether it was reloaded from flash and carries the boot counter of an earlier boot.
    pub earlier_boot: bool,
    /// The `(boot, seq)` it was first queued as. A re-issue gives the message a new identity
    /// but keeps this, so that its old and new records in flash are known to be one message.
    pub origin: (u16, u32),
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
    /// `(boot, seq)` and origin of stored entries that left the outbox (acknowledged, shed)
    /// or were re-issued, whose records are still to be removed from flash.
    forget: heapless::Vec<((u16, u32), (u16, u32)), N>,
}

impl<const N: usize> Default for Outbox<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Outbox<N> {
    /// An empty outbox.
    pub const fn new() -> Self {
        Outbox { entries: heapless::Vec::new(), shed: 0, forget: heapless::Vec::new() }
    }

    /// Queues `msg`, due at once. Returns the message it had to shed, if any.
    pub fn push(&mut self, msg: Uplink, now_ms: u64) -> Option<Uplink> {
        let origin = (msg.boot, msg.seq);
        self.insert(msg, origin, now_ms, false)
    }

    /// Queues `msg`, read back from the flash journal after a reset (records oldest first),
    /// due at once. `origin` is the identity it was first queued as; `earlier_boot` whether it
    /// carries an earlier boot counter than the device's (those go out first). A record
    /// already queued is ignored; a later record of the same origin (a re-issue whose old
    /// record a reset kept from being removed) replaces the queued one, whose record is then
    /// forgotten. Returns the message it had to shed, if any (its record is forgotten too).
    pub fn reload(
        &mut self,
        msg: Uplink,
        origin: (u16, u32),
        earlier_boot: bool,
        now_ms: u64,
    ) -> Option<Uplink> {
        if self.position(msg.boot, msg.seq).is_some() {
            return None;
        }
        if let Some(i) = self.entries.iter().position(|e| e.origin == origin) {
            let old = self.entries.remove(i);
            self.forget_record((old.msg.boot, old.msg.seq), old.origin);
        }
        let (boot, seq) = (msg.boot, msg.seq);
        let shed = self.insert(msg, origin, now_ms, true);
        if let Some(i) = self.position(boot, seq) {
            self.entries[i].earlier_boot = earlier_boot;
        }
        shed
    }

    fn insert(&mut self, msg: Uplink, origin: (u16, u32), now_ms: u64, stored: bool) -> Option<Uplink> {
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
                None => {
                    if stored {
                        self.forget_record((msg.boot, msg.seq), origin);
                    }
                    return Some(msg);
                }
                Some(i) => {
                    let old = self.entries.remove(i);
                    if old.stored {
                        self.forget_record((old.msg.boot, old.msg.seq), old.origin);
                    }
                    shed = Some(old.msg)
                }
            }
        }
        // Cannot fail: a slot was freed above when the outbox was full.
        let _ = self.entries.push(Entry {
            msg,
            due_ms: now_ms,
            attempts: 0,
            stored,
            earlier_boot: false,
            origin,
        });
        shed
    }

    /// Notes that the record `key` (of the message first queued as `origin`) is to be removed
    /// from flash. When the list is full its oldest key is dropped: that record comes back
    /// after a reset, as a resend the gateway has already acknowledged.
    fn forget_record(&mut self, key: (u16, u32), origin: (u16, u32)) {
        if self.forget.is_full() {
            self.forget.remove(0);
        }
        let _ = self.forget.push((key, origin));
    }

    fn position(&self, boot: u16, seq: u32) -> Option<usize> {
        self.entries.iter().position(|e| e.msg.boot == boot && e.msg.seq == seq)
    }

    fn oldest_of(&self, class: Class) -> Option<usize> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.msg.class() == class)
            .min_by_key(|(_, e)| (e.msg.boot, e.msg.seq))
            .map(|(i, _)| i)
    }

    /// The message to send now, if any is due: entries of an earlier boot first (so the
    /// gateway's window is still at their boot when they arrive), then highest class first,
    /// then oldest.
    pub fn next_due(&self, now_ms: u64) -> Option<&Uplink> {
        self.entries
            .iter()
            .filter(|e| e.due_ms <= now_ms)
            .min_by_key(|e| (!e.earlier_boot, e.msg.class(), e.msg.boot, e.msg.seq))
            .map(|e| &e.msg)
    }

    /// Records that `(boot, seq)` was handed to the link at `now_ms`: telemetry is done and
    /// leaves the outbox; an alarm or event waits for its acknowledgement and is scheduled for
    /// its resend.
    pub fn mark_sent(&mut self, boot: u16, seq: u32, now_ms: u64) {
        let Some(i) = self.position(boot, seq) else {
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
        match self.position(boot, seq) {
            Some(i) => {
                let e = self.entries.remove(i);
                if e.stored {
                    self.forget_record((boot, seq), e.origin);
                }
                true
            }
            None => false,
        }
    }

    /// Whether an entry reloaded from an earlier boot is queued as `(boot, seq)`.
    pub fn holds_earlier(&self, boot: u16, seq: u32) -> bool {
        self.position(boot, seq).is_some_and(|i| self.entries[i].earlier_boot)
    }

    /// Whether any entry reloaded from the earlier boot `boot` is queued.
    pub fn holds_earlier_boot(&self, boot: u16) -> bool {
        self.entries.iter().any(|e| e.earlier_boot && e.msg.boot == boot)
    }

    /// Gives every entry reloaded from the earlier boot `boot` a new identity: `restamp` sets
    /// its boot counter and `seq` (and signs it again), its old record is forgotten, and it is
    /// stored again and due at once, as if newly queued. For when the gateway's window has
    /// moved past `boot` and no longer takes the old identity. Returns how many were restamped.
    pub fn reissue(&mut self, boot: u16, now_ms: u64, mut restamp: impl FnMut(&mut Uplink)) -> usize {
        let mut n = 0;
        for i in 0..self.entries.len() {
            let e = &self.entries[i];
            if !(e.earlier_boot && e.msg.boot == boot) {
                continue;
            }
            let (key, origin, stored) = ((e.msg.boot, e.msg.seq), e.origin, e.stored);
            if stored {
                self.forget_record(key, origin);
            }
            let e = &mut self.entries[i];
            restamp(&mut e.msg);
            e.stored = false;
            e.earlier_boot = false;
            e.due_ms = now_ms;
            e.attempts = 0;
            n += 1;
        }
        n
    }

    /// `(boot, seq)` of the alarm- and event-class entries not yet in the flash journal.
    pub fn unstored(&self) -> impl Iterator<Item = (u16, u32)> + '_ {
        self.entries
            .iter()
            .filter(|e| !e.stored && e.msg.class().is_acknowledged())
            .map(|e| (e.msg.boot, e.msg.seq))
    }

    /// The queued entry `(boot, seq)`, if any.
    pub fn get(&self, boot: u16, seq: u32) -> Option<&Entry> {
        self.position(boot, seq).map(|i| &self.entries[i])
    }

    /// Records that the entry `(boot, seq)` is now in the flash journal.
    pub fn mark_stored(&mut self, boot: u16, seq: u32) {
        if let Some(i) = self.position(boot, seq) {
            self.entries[i].stored = true;
        }
    }

    /// `(boot, seq)` of records to remove from the flash journal now: entries that were
    /// stored and have left the outbox since, and old identities of re-issued entries once
    /// the new identity is stored (until then the old record is the message's only copy in
    /// flash).
    pub fn forgotten(&self) -> impl Iterator<Item = (u16, u32)> + '_ {
        self.forget
            .iter()
            .filter(|(_, origin)| !self.entries.iter().any(|e| e.origin == *origin && !e.stored))
            .map(|(key, _)| *key)
    }

    /// Whether records are waiting to be removed from the journal.
    pub fn has_forgotten(&self) -> bool {
        !self.forget.is_empty()
    }

    /// Records that the journal no longer holds `(boot, seq)`.
    pub fn mark_forgotten(&mut self, boot: u16, seq: u32) {
        if let Some(i) = self.forget.iter().position(|(k, _)| *k == (boot, seq)) {
            self.forget.remove(i);
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
