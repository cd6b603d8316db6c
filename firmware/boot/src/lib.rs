//! The firegrid detector's A/B update contract, shared by the application that receives an
//! image and the bootloader that decides whether it runs. `#![no_std]`, no allocator.
//!
//! - [`Layout`] is the flash map: bootloader, embassy-boot's state partition, the update
//!   [`manifest`], the active slot the application runs from and the DFU slot an update is
//!   written into (one page larger than the active slot, for embassy-boot's swap).
//!   [`LM3S6965`] is the map of the Cortex-M3 board.
//! - [`manifest`] is what the application writes beside the DFU slot: the offered image's
//!   version, size, SHA-256, Ed25519 signature and security counter, the progress of its
//!   transfer (so that a reset resumes it) and the commit mark (SHA-256 checked, swap
//!   requested). Plain bytes in, plain values out: both sides do their own flash I/O.
//! - [`floor`] is the anti-rollback floor in its own partition: the highest security counter
//!   of an image the device marked good, raised by the application when it marks one good.
//!   The same log, in a partition of its own, keeps the **key floor**: the highest vendor key
//!   slot of an image the device marked good ([`VendorKeys`], key rotation).
//! - With feature `bootloader`, [`loader::prepare`] runs at reset: when a swap is requested
//!   and not yet begun it verifies the DFU slot's Ed25519 signature against the vendor public
//!   key of the slot its manifest names (one of the [`KEY_SLOTS`] compiled into the
//!   bootloader), the key slot against the key floor and the signed security counter against
//!   the floor, refuses the request when any fails, and otherwise lets embassy-boot's
//!   [`embassy_boot::BootLoader`] swap, or revert an image that did not mark itself booted.
//!
//! The swap, its power-fail-safe progress and the rollback are embassy-boot's, unchanged;
//! this crate adds only the signature and floor gate in front of it, the manifest it reads
//! and the floor.
#![cfg_attr(not(test), no_std)]

pub mod floor;
pub mod manifest;

#[cfg(feature = "bootloader")]
pub mod loader;

use core::ops::Range;

/// Erase page of the LM3S6965's flash (datasheet, "Flash Memory": 1 KiB pages).
pub const PAGE: u32 = 1024;

/// Vendor public keys a bootloader holds, by slot: the key in use and two spares, made at
/// the same time and kept offline apart from it. Each signed manifest names its slot; once an
/// image signed by slot `n` is marked good, images of the slots below `n` are refused (the
/// key floor). Three, as PSA's Trusted Firmware-M provisions several root-of-trust public
/// keys and MCUboot builds in several keys: one rotation still leaves a spare for the next,
/// and each key costs the bootloader only its 32 bytes. The number is the wire contract's
/// (`firegrid_protocol::firmware::KEY_SLOTS`), so that the gateway refuses to sign for or
/// publish a slot no bootloader holds.
pub const KEY_SLOTS: usize = firegrid_protocol::firmware::KEY_SLOTS;

/// The vendor's Ed25519 public keys, by slot, as the bootloader is built with them.
pub type VendorKeys = [[u8; 32]; KEY_SLOTS];

/// The flash map, as byte ranges from the start of flash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The bootloader image.
    pub bootloader: Range<u32>,
    /// embassy-boot's state partition: the magic word and the swap progress.
    pub state: Range<u32>,
    /// The update manifest ([`manifest`]).
    pub manifest: Range<u32>,
    /// The active slot: the image that runs.
    pub active: Range<u32>,
    /// The DFU slot: where an update is written, one page larger than the active slot.
    pub dfu: Range<u32>,
    /// The security floor ([`floor`]): at least two pages, never erased by embassy-boot or
    /// with the manifest.
    pub security: Range<u32>,
    /// The key floor: the same log as the security floor ([`floor`]), holding the highest
    /// vendor key slot of an image marked good. At least two pages.
    pub key_floor: Range<u32>,
}

/// The LM3S6965 (256 KiB flash, 1 KiB pages) map, mirrored by the boards' `memory.x` files:
///
/// | range | size | partition |
/// |---|---:|---|
/// | `0x00000..0x0C000` | 48 KiB | bootloader |
/// | `0x0C000..0x0C800` | 2 KiB | state |
/// | `0x0C800..0x0D800` | 4 KiB | manifest |
/// | `0x0D800..0x25800` | 96 KiB | active slot |
/// | `0x25800..0x3DC00` | 97 KiB | DFU slot |
/// | `0x3DC00..0x3E400` | 2 KiB | security floor |
/// | `0x3E400..0x3EC00` | 2 KiB | key floor |
///
/// The active slot holds the 64 KiB application budget with half as much again to grow;
/// embassy-boot's state needs `2 + 4 × 96` words of 4 bytes (1,544 B), under 2 KiB. The floor
/// takes two of the 9 KiB left after the DFU slot: a page of 128 records and the page it
/// moves to when full. The key floor takes two more, for the same reason (with three slots it
/// holds at most two records, but the log's power-cut safety needs its second page), leaving
/// 5 KiB.
pub const LM3S6965: Layout = Layout {
    bootloader: 0x0_0000..0x0_C000,
    state: 0x0_C000..0x0_C800,
    manifest: 0x0_C800..0x0_D800,
    active: 0x0_D800..0x2_5800,
    dfu: 0x2_5800..0x3_DC00,
    security: 0x3_DC00..0x3_E400,
    key_floor: 0x3_E400..0x3_EC00,
};

impl Layout {
    /// Whether the map is one embassy-boot and the manifest can work with: every partition
    /// on page boundaries, in order without overlap, the DFU slot at least one page larger
    /// than the active slot, the state partition big enough for the swap and revert
    /// progress of every active page, the manifest big enough for a transfer of the
    /// whole DFU slot in chunks of `chunk` bytes, and a security floor and a key floor of at
    /// least two pages each.
    pub const fn is_valid(&self, write_size: u32, chunk: u32) -> bool {
        let parts = [
            &self.bootloader,
            &self.state,
            &self.manifest,
            &self.active,
            &self.dfu,
            &self.security,
            &self.key_floor,
        ];
        let mut i = 0;
        while i < parts.len() {
            if !parts[i].start.is_multiple_of(PAGE)
                || !parts[i].end.is_multiple_of(PAGE)
                || parts[i].end <= parts[i].start
            {
                return false;
            }
            if i > 0 && parts[i].start < parts[i - 1].end {
                return false;
            }
            i += 1;
        }
        let active_pages = (self.active.end - self.active.start) / PAGE;
        let dfu_len = self.dfu.end - self.dfu.start;
        let state_words = (self.state.end - self.state.start) / write_size;
        dfu_len >= self.active.end - self.active.start + PAGE
            && state_words >= 2 + 4 * active_pages
            && manifest::capacity(self.manifest.end - self.manifest.start, chunk)
                >= self.active.end - self.active.start
            && floor::Scan::fits(PAGE, self.security.end - self.security.start)
            && floor::Scan::fits(PAGE, self.key_floor.end - self.key_floor.start)
    }

    /// The largest image the active slot takes.
    pub const fn max_image(&self) -> u32 {
        self.active.end - self.active.start
    }
}

#[cfg(test)]
mod tests;
