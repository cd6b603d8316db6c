//! The persisted part of the outbox: alarm- and event-class uplinks kept in flash from
//! before their first transmission until the gateway's authenticated `ack`, so that a reset
//! (battery swap, brown-out, watchdog) loses none of them.
//!
//! - [`Journal`] is what the core asks of persistent storage: store a message, remove one,
//!   read them all back. [`FlashJournal`] implements it on any NOR flash partition with
//!   [sequential-storage](https://docs.rs/sequential-storage)'s power-fail-safe FIFO
//!   ([`sequential_storage::queue::QueueStorage`]) over `embedded-storage-async`'s
//!   [`MultiwriteNorFlash`], driven by [`embassy_futures::block_on`] (the core is
//!   synchronous; a flash driver's future completes when the part is done).
//! - [`sync`] brings the journal up to date with the outbox (called by
//!   [`crate::link::pump_journaled`] between receiving and sending, so nothing goes out
//!   before it is stored), [`restore`] reloads it into a new [`Device`] at boot.
//! - [`SimulatedNor`] is NOR flash in RAM with per-page erase counts and power cuts at any
//!   step, for host tests and the QEMU image.
//!
//! A record is the message's boot counter (2 bytes, little-endian) and `seq` (4 bytes,
//! little-endian), the same pair for the identity it was first queued as (its *origin*,
//! which a re-issue keeps), and its compact encoding, tag included, exactly the bytes a
//! compact link sends: a resend after a reset is the same message, and the gateway takes it
//! for the duplicate it is. Telemetry is never stored.
//!
//! The core never waits on flash: a failed store or removal is counted
//! ([`Device::journal_failures`]) and retried at the next pump, and the message is still
//! sent from RAM. A flash failure loses nothing until the next reset.

mod nor;

pub use nor::{NorError, SimulatedNor, WORD};

use core::ops::Range;

use embedded_storage_async::nor_flash::MultiwriteNorFlash;
use firegrid_protocol::{Encoding, Limits, Uplink};
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::queue::{QueueConfig, QueueStorage};

use crate::device::{Device, OUTBOX_SLOTS};

/// Largest record: the 12-byte header and a compact detector uplink (the largest alarm- or
/// event-class one, a signed `boot` answer, is 52 bytes; protocol README size table).
pub const MAX_RECORD: usize = 12 + 116;

/// Persistent storage for alarm- and event-class uplinks. See the module documentation.
pub trait Journal {
    /// Storage error.
    type Error;

    /// Stores `msg`, first queued as `origin` (done when this returns `Ok`: a power cut after
    /// it loses nothing).
    fn store(&mut self, msg: &Uplink, origin: (u16, u32)) -> Result<(), Self::Error>;

    /// Removes every record of `(boot, seq)`; removing one that is not there is no error.
    fn remove(&mut self, boot: u16, seq: u32) -> Result<(), Self::Error>;

    /// Calls `each` with every stored message and its origin, oldest first. A record that
    /// does not decode is skipped.
    fn load(&mut self, each: &mut dyn FnMut(Uplink, (u16, u32))) -> Result<(), Self::Error>;
}

/// Encodes `msg`, first queued as `origin`, as a record into `buf`.
fn encode_record<'b>(msg: &Uplink, origin: (u16, u32), buf: &'b mut [u8; MAX_RECORD]) -> Option<&'b [u8]> {
    buf[..2].copy_from_slice(&msg.boot.to_le_bytes());
    buf[2..6].copy_from_slice(&msg.seq.to_le_bytes());
    buf[6..8].copy_from_slice(&origin.0.to_le_bytes());
    buf[8..12].copy_from_slice(&origin.1.to_le_bytes());
    let len = msg.encode(Encoding::Compact, &mut buf[12..]).ok()?.len();
    Some(&buf[..12 + len])
}

/// A `(boot, seq)` pair at `at` in a record.
fn key_at(record: &[u8], at: usize) -> Option<(u16, u32)> {
    let boot = u16::from_le_bytes(record.get(at..at + 2)?.try_into().ok()?);
    let seq = u32::from_le_bytes(record.get(at + 2..at + 6)?.try_into().ok()?);
    Some((boot, seq))
}

/// The `(boot, seq)` key of a record.
fn record_key(record: &[u8]) -> Option<(u16, u32)> {
    key_at(record, 0)
}

/// The message of a record and its origin.
fn decode_record(record: &[u8]) -> Option<(Uplink, (u16, u32))> {
    let (boot, seq) = record_key(record)?;
    let origin = key_at(record, 6)?;
    let msg = Uplink::decode(record.get(12..)?, Encoding::Compact, &Limits::default()).ok()?;
    (msg.boot == boot && msg.seq == seq).then_some((msg, origin))
}

/// A [`Journal`] on a NOR flash partition (`range` of `flash`, whole erase pages, at least
/// two), as a sequential-storage queue.
///
/// sequential-storage writes each record with a CRC-checked header and data, so a record
/// whose write a power cut interrupted reads back as corrupted and is skipped; it marks a
/// removed record in place by programming its header word again (which is why the flash
/// must be [`MultiwriteNorFlash`]), and erases a page only once every record on it is
/// removed, using the pages in turn (its README: "Pages are used cyclically, so all pages
/// get erased an equal amount").
pub struct FlashJournal<F: MultiwriteNorFlash> {
    queue: QueueStorage<F, Cache<Uncached, Uncached, Uncached>>,
}

impl<F: MultiwriteNorFlash> FlashJournal<F> {
    /// The journal in `range` of `flash`, with whatever it already holds.
    ///
    /// # Panics
    /// When `range` does not start and end on erase-page boundaries.
    pub fn new(flash: F, range: Range<u32>) -> Self {
        let config =
            QueueConfig::try_new(range).unwrap_or_else(|_| panic!("journal range not on page boundaries"));
        FlashJournal { queue: QueueStorage::new(flash, config, Cache::new_uncached()) }
    }

    /// The flash back.
    pub fn into_flash(self) -> F {
        self.queue.destroy().0
    }
}

impl<F: MultiwriteNorFlash> Journal for FlashJournal<F> {
    type Error = sequential_storage::Error<F::Error>;

    fn store(&mut self, msg: &Uplink, origin: (u16, u32)) -> Result<(), Self::Error> {
        let mut buf = [0; MAX_RECORD];
        let record = encode_record(msg, origin, &mut buf).ok_or(sequential_storage::Error::ItemTooBig)?;
        // Never overwrite: the oldest record may be an alarm still waiting for its ack.
        embassy_futures::block_on(self.queue.push(record, false))
    }

    fn remove(&mut self, boot: u16, seq: u32) -> Result<(), Self::Error> {
        embassy_futures::block_on(async {
            let mut buf = [0; MAX_RECORD];
            let mut iter = self.queue.iter().await?;
            while let Some(entry) = iter.next(&mut buf).await? {
                if record_key(&entry) == Some((boot, seq)) {
                    entry.pop().await?;
                }
            }
            Ok(())
        })
    }

    fn load(&mut self, each: &mut dyn FnMut(Uplink, (u16, u32))) -> Result<(), Self::Error> {
        embassy_futures::block_on(async {
            let mut buf = [0; MAX_RECORD];
            let mut iter = self.queue.iter().await?;
            while let Some(entry) = iter.next(&mut buf).await? {
                if let Some((msg, origin)) = decode_record(&entry) {
                    each(msg, origin);
                }
            }
            Ok(())
        })
    }
}

/// Brings `journal` up to date with `device`'s outbox: stores every alarm- and event-class
/// entry not stored yet, then removes the records of entries that left the outbox. Stores
/// come first, and a re-issued entry's old record is only removed once its new one is
/// stored. A failure is counted in [`Device::journal_failures`]; the stores stop at the first
/// failed one, the removals still run (a full journal only frees space through them) and the
/// stores are tried once more after them; what is left waits for the next call. Returns
/// whether the journal is up to date.
pub fn sync<J: Journal>(device: &mut Device, journal: &mut J) -> bool {
    let mut stored = store_new(device, journal);
    let forgotten: heapless::Vec<(u16, u32), OUTBOX_SLOTS> = device.outbox().forgotten().collect();
    for &(boot, seq) in &forgotten {
        match journal.remove(boot, seq) {
            Ok(()) => device.outbox_mut().mark_forgotten(boot, seq),
            Err(_) => {
                device.note_journal_failure();
                return false;
            }
        }
    }
    // A store that failed on a full journal may fit now that records are gone.
    if !stored && !forgotten.is_empty() {
        stored = store_new(device, journal);
    }
    stored && !device.outbox().has_forgotten()
}

/// Stores the outbox's new alarm- and event-class entries, stopping at the first failure.
fn store_new<J: Journal>(device: &mut Device, journal: &mut J) -> bool {
    let unstored: heapless::Vec<(u16, u32), OUTBOX_SLOTS> = device.outbox().unstored().collect();
    for (boot, seq) in unstored {
        let Some(entry) = device.outbox().get(boot, seq) else { continue };
        match journal.store(&entry.msg, entry.origin) {
            Ok(()) => device.outbox_mut().mark_stored(boot, seq),
            Err(_) => {
                device.note_journal_failure();
                return false;
            }
        }
    }
    true
}

/// Reloads every message in `journal` into `device` (just started, with its new boot
/// counter), due at once. Returns how many records were read.
pub fn restore<J: Journal>(device: &mut Device, journal: &mut J, now_ms: u64) -> Result<usize, J::Error> {
    let mut n = 0;
    journal.load(&mut |msg, origin| {
        n += 1;
        device.restore(msg, origin, now_ms);
    })?;
    Ok(n)
}

#[cfg(test)]
mod tests;
