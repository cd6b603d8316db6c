//! What ingest holds in memory while the spool cannot write (a full, read-only or failing
//! disk), and how it gets back into the spool.
//!
//! The promise, and the one part of it that is relaxed: alarm- and event-class messages are
//! still handed to the alarm loop (a fire pages whether or not the disk is healthy) and kept
//! here, in order, up to [`MAX_HELD`]; their device's `down/ack` — the acknowledgement the
//! device's outbox waits for before it stops resending — is withheld until they are
//! durable, so until then the device keeps its own copy and resends it. The broker's
//! acknowledgement (PUBACK) is *not* withheld: an MQTT session whose in-flight window fills
//! with unacknowledged messages stops receiving anything, new fire alarms included, for as
//! long as the disk is sick. A `kill -9` during the outage loses the memory copy only; the
//! device's resend brings the alarm back. Telemetry is not kept: it is shed and counted
//! (`firegrid_messages_rejected_total{reason="disk_unwritable"}`), and still reaches
//! liveness, so a sick disk does not make devices look offline.
//!
//! While records are held, every new alarm- or event-class record queues behind them, so
//! the spool keeps acceptance order. Storing is tried again at most every [`RETRY_EVERY_MS`].

use std::collections::{HashSet, VecDeque};

use firegrid_protocol::{Class, DeviceId, Encoding, Topic};

use super::{Durability, Spool, SpoolError};

/// Most records held. About 200 bytes each with their `down/ack`: some 4 MB, and room for
/// every detector of a 6,000-detector village in alarm three times over.
pub const MAX_HELD: usize = 20_000;

/// Least time between two attempts to store the held records (ms): a full disk fails fast,
/// but reopening the spool reads its segment index, which should not run per batch.
pub const RETRY_EVERY_MS: u64 = 1_000;

/// A message, as the admission window knows it: device, boot, sequence number.
pub type MessageKey = (DeviceId, u16, u32);

/// The `down/ack` a held message is owed, made when it is durable (not before: signing it
/// takes a downlink number, which a full disk may not be able to reserve).
#[derive(Debug, Clone)]
pub struct OwedAck {
    /// The message's topic.
    pub topic: Topic,
    /// Its boot counter.
    pub boot: u16,
    /// Its sequence number.
    pub seq: u32,
    /// Whether it was signed (the answer is then signed too).
    pub verified: bool,
    /// The encoding it came in.
    pub encoding: Encoding,
}

impl OwedAck {
    /// The message it answers.
    pub fn key(&self) -> MessageKey {
        (self.topic.device.clone(), self.boot, self.seq)
    }
}

/// One record waiting for the disk.
#[derive(Debug, Clone)]
pub struct HeldRecord {
    /// Its class (alarm or event; telemetry is never held).
    pub class: Class,
    /// Its acceptance time, ms.
    pub ts_ms: u64,
    /// The line-protocol point, as it would have been appended.
    pub line: Vec<u8>,
    /// The message it came from, for a device's message (none for the gateway's own points).
    pub key: Option<MessageKey>,
    /// The device's `down/ack`, sent once the record is durable.
    pub ack: Option<OwedAck>,
}

/// The held records and the spool's state after a failure.
#[derive(Debug, Default)]
pub struct Held {
    records: VecDeque<HeldRecord>,
    /// Messages held, or stored but still owed their `down/ack`.
    keys: HashSet<MessageKey>,
    /// The spool could not be reopened after the failure: nothing can be appended.
    broken: bool,
    /// When storing was last tried, ms.
    last_try_ms: Option<u64>,
    /// `down/ack`s owed to records stored since the last [`Held::take_released`].
    released: Vec<OwedAck>,
}

impl Held {
    /// Whether new records must queue here rather than go to the spool.
    pub fn is_sick(&self) -> bool {
        self.broken || !self.records.is_empty()
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Whether the message `key` is held or still owed its `down/ack`: a retransmission of
    /// it gets no `down/ack` yet either.
    pub fn holds(&self, key: &MessageKey) -> bool {
        self.keys.contains(key)
    }

    /// Holds `record`; `false` (and nothing held) when [`MAX_HELD`] are held already.
    pub fn push(&mut self, record: HeldRecord) -> bool {
        if self.records.len() >= MAX_HELD {
            return false;
        }
        if let Some(key) = &record.key {
            self.keys.insert(key.clone());
        }
        self.records.push_back(record);
        true
    }

    /// A write to `spool` failed: its state is thrown away and read again from the files
    /// ([`Spool::reopen`]); if even that fails, nothing is appended until a later
    /// [`Held::store`] manages to reopen it.
    pub fn failed(&mut self, spool: &mut Spool, now_ms: u64) {
        self.broken = spool.reopen().is_err();
        self.last_try_ms = Some(now_ms);
    }

    /// Tries to store the held records in `spool`, in order, fsynced; at most every
    /// [`RETRY_EVERY_MS`]. `Ok(n)` when `n` records were stored (their `down/ack`s wait in
    /// [`Held::take_released`]); `Ok(0)` when nothing was held or it is not time yet.
    pub fn store(&mut self, spool: &mut Spool, now_ms: u64) -> Result<usize, SpoolError> {
        if !self.is_sick() || self.last_try_ms.is_some_and(|at| now_ms < at.saturating_add(RETRY_EVERY_MS)) {
            return Ok(0);
        }
        self.last_try_ms = Some(now_ms);
        if self.broken {
            spool.reopen()?;
            self.broken = false;
        }
        let written = self.records.iter().try_for_each(|r| spool.append(r.class, r.ts_ms, &r.line).map(drop));
        if let Err(error) = written.and_then(|()| spool.commit(Durability::Disk)) {
            self.failed(spool, now_ms);
            return Err(error);
        }
        let stored = self.records.len();
        for record in self.records.drain(..) {
            match record.ack {
                Some(ack) => self.released.push(ack),
                None => {
                    if let Some(key) = &record.key {
                        self.keys.remove(key);
                    }
                }
            }
        }
        Ok(stored)
    }

    /// The `down/ack`s owed to stored records; each is [`Held::settle`]d once made, or
    /// [`Held::owe`]d again when it cannot be made yet.
    pub fn take_released(&mut self) -> Vec<OwedAck> {
        std::mem::take(&mut self.released)
    }

    /// A stored message whose `down/ack` cannot be made now (the downlink counter cannot
    /// reserve numbers on a full disk): it is made with a later batch, and a retransmission
    /// meanwhile gets none.
    pub fn owe(&mut self, ack: OwedAck) {
        self.keys.insert(ack.key());
        self.released.push(ack);
    }

    /// The `down/ack` owed for `ack` was made.
    pub fn settle(&mut self, ack: &OwedAck) {
        self.keys.remove(&ack.key());
    }
}

#[cfg(test)]
mod tests {
    use firegrid_protocol::VillageId;

    use super::*;
    use crate::spool::SpoolConfig;

    fn record(dev: &str, seq: u32, owed: bool) -> HeldRecord {
        let device = DeviceId::new(dev).unwrap();
        let topic = Topic::uplink(
            VillageId::new("fuhai-1").unwrap(),
            device.clone(),
            firegrid_protocol::UplinkKind::State,
        );
        HeldRecord {
            class: Class::Alarm,
            ts_ms: u64::from(seq),
            line: format!("detector_state,device={dev} seq={seq}i").into_bytes(),
            key: Some((device, 1, seq)),
            ack: owed.then(|| OwedAck { topic, boot: 1, seq, verified: false, encoding: Encoding::Json }),
        }
    }

    #[test]
    fn held_records_are_stored_in_order_and_their_acks_owed_until_settled() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(SpoolConfig::new(dir.path()), &["db"]).unwrap();
        let mut held = Held::default();
        assert!(!held.is_sick());
        assert!(held.push(record("sd-1", 1, true)));
        assert!(held.push(record("sd-2", 7, false)));
        assert!(held.is_sick(), "new records queue behind held ones");
        let key = (DeviceId::new("sd-1").unwrap(), 1, 1);
        assert!(held.holds(&key));

        assert_eq!(held.store(&mut spool, 10_000).unwrap(), 2);
        assert!(!held.is_sick() && held.is_empty());
        let stored: Vec<u64> = spool.read("db", 10, usize::MAX).unwrap().iter().map(|r| r.ts_ms).collect();
        assert_eq!(stored, [1, 7], "in the order they were held");
        // The ack is owed until made: a retransmission meanwhile gets none.
        let owed = held.take_released();
        assert_eq!(owed.iter().map(|o| o.seq).collect::<Vec<_>>(), [1]);
        assert!(held.holds(&key));
        held.owe(owed[0].clone());
        assert!(held.holds(&key), "could not be made yet: still owed");
        let again = held.take_released();
        held.settle(&again[0]);
        assert!(!held.holds(&key));
        assert!(!held.holds(&(DeviceId::new("sd-2").unwrap(), 1, 7)), "a record owed nothing is done");
    }

    #[test]
    fn storing_is_retried_at_most_every_second_and_the_bound_holds() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(SpoolConfig::new(dir.path()), &["db"]).unwrap();
        let mut held = Held::default();
        held.push(record("sd-1", 1, true));
        held.failed(&mut spool, 5_000);
        assert_eq!(held.store(&mut spool, 5_500).unwrap(), 0, "not before a second has passed");
        assert_eq!(held.store(&mut spool, 6_000).unwrap(), 1);
        for seq in 0..MAX_HELD as u32 {
            assert!(held.push(record("sd-3", seq, false)));
        }
        assert!(!held.push(record("sd-3", u32::MAX, false)), "beyond the bound nothing is held");
        assert_eq!(held.len(), MAX_HELD);
    }
}
