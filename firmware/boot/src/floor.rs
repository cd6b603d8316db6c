//! The security floor: the highest security counter of an image the device marked good,
//! kept in its own flash partition ([`crate::Layout::security`]). The bootloader refuses to
//! swap in an image whose (signed) counter is below it, and the application refuses such an
//! offer before it is transferred.
//!
//! Why the floor rises only when an image is marked good, never when it is swapped in: a
//! trial image that fails its self-test is swapped back, and the previous image, whose
//! counter may be lower, must still boot. Trusted Firmware-M's design says the same for a
//! bootloader that can revert ("Rollback protection in TF-M secure boot",
//! `docs/design_docs/booting/secure_boot_rollback_protection.rst`, "NV counters and
//! anti-rollback protection": update the counter after the new image's health check). Equal
//! counters are accepted, as MCUboot's `MCUBOOT_HW_DOWNGRADE_PREVENTION` accepts "greater or
//! equal", so releases that fix no vulnerability keep a counter and can be rolled back to.
//!
//! The partition is a log of records over two or more erase pages. A record is the value and
//! its bitwise complement, little-endian (the manifest's progress entry format,
//! [`crate::manifest::entry`]): a record cut short by a power loss fails the pair and is
//! ignored, and a half-programmed or half-erased record can only read back as the value it
//! held or as invalid (programming clears bits, erasing sets them; for both halves to agree
//! the bits that differ would have to be on both sides). The floor is the largest valid
//! record, `0` on an erased partition. Raising it appends a record after the last used slot of
//! the page that holds the floor; when that page is full, the next page is erased and the
//! record written at its start. That page never holds the floor (every record is larger than
//! the ones before it, and the floor's page is the newest), so a power cut at any step leaves
//! the old floor or the new one, never a lower one.
//!
//! **The key floor** is the same log in a partition of its own ([`crate::Layout::key_floor`]):
//! the highest vendor key slot ([`crate::VendorKeys`]) of an image the device marked good.
//! The bootloader refuses an image signed by a slot below it, and it rises, like this floor,
//! only when an image is marked good, so a trial image of a new key that fails its self-test
//! leaves the old key in force and the previous image bootable. The two floors are raised one
//! after the other; each is the old value or the new one after a power cut, and the
//! application raises both again from the manifest's BOOTED mark at its next start.
//!
//! Plain bytes in, plain decisions out ([`Scan`]): the bootloader and the application do
//! their own flash I/O, blocking and async.

use core::ops::Range;

use crate::manifest::{self, Entry};

/// Bytes of one record.
pub const RECORD_LEN: usize = manifest::ENTRY_LEN;

/// The record of floor `value`.
pub fn record(value: u32) -> [u8; RECORD_LEN] {
    manifest::entry(value)
}

/// How to raise the floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Raise {
    /// Write the record at this offset (erased).
    Append {
        /// Offset in the partition.
        at: u32,
    },
    /// Erase this page, then write the record at its start.
    Move {
        /// The page to erase; the record goes at its start.
        erase: Range<u32>,
    },
}

/// What a reading of the partition found: feed it every record in order with
/// [`Scan::feed`], then ask for the [`Scan::floor`] or how to [`Scan::raise`] it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    page: u32,
    len: u32,
    /// The largest valid record and the page it is in.
    best: Option<(u32, u32)>,
    /// The end of the used slots of the best record's page.
    best_end: u32,
    /// The end of the used slots of the first page.
    first_end: u32,
}

impl Scan {
    /// A scan of a partition of `len` bytes in erase pages of `page` bytes.
    pub const fn new(page: u32, len: u32) -> Self {
        Scan { page, len, best: None, best_end: 0, first_end: 0 }
    }

    /// Whether a partition of `len` bytes in pages of `page` bytes can hold a floor: at least
    /// two pages (the move to a fresh page must never erase the floor's own), each a whole
    /// number of records.
    pub const fn fits(page: u32, len: u32) -> bool {
        page > 0 && page.is_multiple_of(RECORD_LEN as u32) && len.is_multiple_of(page) && len / page >= 2
    }

    /// Takes the record at offset `at` (offsets in increasing order, one per record).
    pub fn feed(&mut self, at: u32, bytes: &[u8; RECORD_LEN]) {
        let entry = manifest::read_entry(bytes);
        if entry == Entry::Erased {
            return;
        }
        let page = at / self.page;
        let end = at + RECORD_LEN as u32;
        if page == 0 {
            self.first_end = end;
        }
        match (entry, self.best) {
            (Entry::Written(value), best) if best.is_none_or(|(floor, _)| value > floor) => {
                self.best = Some((value, page));
                self.best_end = end;
            }
            (_, Some((_, best_page))) if best_page == page => self.best_end = end,
            _ => {}
        }
    }

    /// The floor: the largest valid record, `0` when there is none.
    pub fn floor(&self) -> u32 {
        self.best.map_or(0, |(floor, _)| floor)
    }

    /// How to raise the floor to `to`; `None` when it is there already (or higher).
    pub fn raise(&self, to: u32) -> Option<Raise> {
        let page_range = |p: u32| p * self.page..(p + 1) * self.page;
        match self.best {
            Some((floor, _)) if floor >= to => None,
            Some((_, page)) if self.best_end < (page + 1) * self.page => {
                Some(Raise::Append { at: self.best_end })
            }
            Some((_, page)) => Some(Raise::Move { erase: page_range((page + 1) % (self.len / self.page)) }),
            // Nothing valid: the first page, erased first when anything (torn) is in it.
            None if to == 0 => None,
            None if self.first_end == 0 => Some(Raise::Append { at: 0 }),
            None => Some(Raise::Move { erase: page_range(0) }),
        }
    }
}
