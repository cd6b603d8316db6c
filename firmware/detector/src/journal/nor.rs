//! [`SimulatedNor`]: NOR flash in RAM that keeps NOR's rules and can lose power.
//!
//! Host tests cut its power at any single write or erase step, and the QEMU board image
//! uses one as its journal partition (QEMU's `lm3s6965evb` does not emulate the Stellaris
//! flash controller, so programming its flash does nothing there).
//!
//! sequential-storage ships a `MockFlashBase` with an early shut-off, but only behind its
//! private `_test` feature (not covered by semver, and it turns on `std` and `futures`), and
//! it counts erases for the whole flash rather than per page, which a wear budget needs.

use embedded_storage::nor_flash as blocking;
use embedded_storage_async::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Bytes programmed at once: one 32-bit word, as the Stellaris flash controller's FMD
/// register takes (LM3S6965 datasheet, "Flash Memory Programming").
pub const WORD: usize = 4;

/// What a [`SimulatedNor`] operation can fail with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NorError {
    /// Offset or length not a multiple of the word (or, for erase, the page).
    NotAligned,
    /// Outside the flash.
    OutOfBounds,
    /// A write would have to turn a 0 bit back into 1, which only an erase does.
    NotErased,
    /// Power was cut during this operation or before it; nothing works until
    /// [`SimulatedNor::power_on`].
    PowerCut,
    /// The part fails every write and erase ([`SimulatedNor::set_broken`]).
    Broken,
}

impl NorFlashError for NorError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            NorError::NotAligned => NorFlashErrorKind::NotAligned,
            NorError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            NorError::NotErased | NorError::PowerCut | NorError::Broken => NorFlashErrorKind::Other,
        }
    }
}

/// `PAGES` erase pages of `PAGE` bytes of NOR flash in RAM: erased bytes read `0xFF`, a
/// write only clears bits (AND), writes are word-aligned, erases page-aligned, and every
/// page counts its erases.
///
/// A *step* is one word programmed or one page erased. [`SimulatedNor::cut_after`] arms a
/// power cut at a given step: a word cut while being programmed keeps only its first byte
/// programmed, a page cut while being erased is erased in its first half only (both are
/// half-done states a real part can be left in), and every later operation fails with
/// [`NorError::PowerCut`] until [`SimulatedNor::power_on`].
#[derive(Debug, Clone)]
pub struct SimulatedNor<const PAGES: usize, const PAGE: usize> {
    pages: [[u8; PAGE]; PAGES],
    erases: [u32; PAGES],
    steps: u64,
    cut_at: Option<u64>,
    cut: bool,
    broken: bool,
}

impl<const PAGES: usize, const PAGE: usize> Default for SimulatedNor<PAGES, PAGE> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const PAGES: usize, const PAGE: usize> SimulatedNor<PAGES, PAGE> {
    /// Erased flash, powered.
    pub const fn new() -> Self {
        SimulatedNor {
            pages: [[0xFF; PAGE]; PAGES],
            erases: [0; PAGES],
            steps: 0,
            cut_at: None,
            cut: false,
            broken: false,
        }
    }

    /// Size in bytes.
    pub const fn size() -> u32 {
        (PAGES * PAGE) as u32
    }

    /// Cuts power at the `k`-th step from now (`0`: the next one).
    pub fn cut_after(&mut self, k: u64) {
        self.cut_at = Some(self.steps + k);
    }

    /// Powers the part up again after a cut; nothing else changes.
    pub fn power_on(&mut self) {
        self.cut = false;
        self.cut_at = None;
    }

    /// Whether power was cut.
    pub fn is_cut(&self) -> bool {
        self.cut
    }

    /// Makes every write and erase fail (a worn-out or damaged part) or work again.
    pub fn set_broken(&mut self, broken: bool) {
        self.broken = broken;
    }

    /// Steps taken so far (words programmed plus pages erased).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Erases of each page so far.
    pub fn erase_counts(&self) -> &[u32; PAGES] {
        &self.erases
    }

    /// Takes one step; `Err` if power goes (or went) at it.
    fn step(&mut self) -> Result<(), NorError> {
        if self.cut {
            return Err(NorError::PowerCut);
        }
        if self.cut_at == Some(self.steps) {
            self.cut = true;
            return Err(NorError::PowerCut);
        }
        self.steps += 1;
        Ok(())
    }

    fn check(&self, offset: u32, len: usize, align: usize) -> Result<usize, NorError> {
        let offset = offset as usize;
        if !offset.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(NorError::NotAligned);
        }
        if offset + len > PAGES * PAGE {
            return Err(NorError::OutOfBounds);
        }
        Ok(offset)
    }
}

impl<const PAGES: usize, const PAGE: usize> ErrorType for SimulatedNor<PAGES, PAGE> {
    type Error = NorError;
}

impl<const PAGES: usize, const PAGE: usize> SimulatedNor<PAGES, PAGE> {
    fn read_now(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), NorError> {
        if self.cut {
            return Err(NorError::PowerCut);
        }
        let start = self.check(offset, bytes.len(), WORD)?;
        for (i, b) in bytes.iter_mut().enumerate() {
            let at = start + i;
            *b = self.pages[at / PAGE][at % PAGE];
        }
        Ok(())
    }

    fn erase_now(&mut self, from: u32, to: u32) -> Result<(), NorError> {
        if to < from {
            return Err(NorError::OutOfBounds);
        }
        let start = self.check(from, (to - from) as usize, PAGE)?;
        for page in start / PAGE..to as usize / PAGE {
            if self.broken {
                return Err(NorError::Broken);
            }
            let was_cut = self.cut;
            if let Err(e) = self.step() {
                if !was_cut {
                    // Cut while erasing this page: only its first half is erased.
                    self.pages[page][..PAGE / 2].fill(0xFF);
                }
                return Err(e);
            }
            self.pages[page].fill(0xFF);
            self.erases[page] += 1;
        }
        Ok(())
    }

    fn write_now(&mut self, offset: u32, bytes: &[u8]) -> Result<(), NorError> {
        let start = self.check(offset, bytes.len(), WORD)?;
        for (w, word) in bytes.chunks(WORD).enumerate() {
            if self.broken {
                return Err(NorError::Broken);
            }
            let at = start + w * WORD;
            let cell = &self.pages[at / PAGE][at % PAGE..at % PAGE + WORD];
            if cell.iter().zip(word).any(|(old, new)| new & !old != 0) {
                return Err(NorError::NotErased);
            }
            let was_cut = self.cut;
            if let Err(e) = self.step() {
                if !was_cut {
                    // Cut while programming this word: only its first byte took.
                    self.pages[at / PAGE][at % PAGE] &= word[0];
                }
                return Err(e);
            }
            for (i, b) in word.iter().enumerate() {
                self.pages[at / PAGE][at % PAGE + i] &= b;
            }
        }
        Ok(())
    }
}

impl<const PAGES: usize, const PAGE: usize> ReadNorFlash for SimulatedNor<PAGES, PAGE> {
    const READ_SIZE: usize = WORD;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), NorError> {
        self.read_now(offset, bytes)
    }

    fn capacity(&self) -> usize {
        PAGES * PAGE
    }
}

impl<const PAGES: usize, const PAGE: usize> NorFlash for SimulatedNor<PAGES, PAGE> {
    const WRITE_SIZE: usize = WORD;
    const ERASE_SIZE: usize = PAGE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), NorError> {
        self.erase_now(from, to)
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), NorError> {
        self.write_now(offset, bytes)
    }
}

/// Programming a word again to clear more of its bits is allowed, as NOR flash allows it;
/// sequential-storage needs this to mark a record removed in place.
impl<const PAGES: usize, const PAGE: usize> MultiwriteNorFlash for SimulatedNor<PAGES, PAGE> {}

// The blocking NOR traits of `embedded-storage`, which embassy-boot's bootloader runs on: the
// same part, the same steps and power cuts (`ErrorType` and `NorFlashError` are shared with
// `embedded-storage-async`, which re-exports them).

impl<const PAGES: usize, const PAGE: usize> blocking::ReadNorFlash for SimulatedNor<PAGES, PAGE> {
    const READ_SIZE: usize = WORD;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), NorError> {
        self.read_now(offset, bytes)
    }

    fn capacity(&self) -> usize {
        PAGES * PAGE
    }
}

impl<const PAGES: usize, const PAGE: usize> blocking::NorFlash for SimulatedNor<PAGES, PAGE> {
    const WRITE_SIZE: usize = WORD;
    const ERASE_SIZE: usize = PAGE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), NorError> {
        self.erase_now(from, to)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), NorError> {
        self.write_now(offset, bytes)
    }
}

impl<const PAGES: usize, const PAGE: usize> blocking::MultiwriteNorFlash for SimulatedNor<PAGES, PAGE> {}
