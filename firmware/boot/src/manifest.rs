//! The update manifest: what the application writes beside the DFU slot while it receives an
//! image, and what the bootloader reads before it swaps.
//!
//! Layout 3 (layout 2 had no key slot, its marks four bytes earlier and the HEADER mark
//! `FGH2`; layout 1 no security counter either and the mark `FGHD`. A manifest of one layout
//! reads as absent in another, so a mismatched bootloader refuses the swap, `no manifest`,
//! rather than misread it):
//!
//! ```text
//! offset   bytes  field
//!      0     16   version (ASCII, 0-padded)
//!     16      4   size, little-endian
//!     20     32   SHA-256 of the image
//!     52     64   Ed25519 signature of firegrid_protocol::firmware::signed_message:
//!                 the version, the security counter, the key slot and the image's SHA-512
//!    116      4   security counter, little-endian (anti-rollback; covered by the signature)
//!    120      4   vendor key slot, little-endian (0 to KEY_SLOTS - 1; covered by the signature)
//!    124      4   REFUSED mark, written by the bootloader when it refuses the image: FGRF
//!                 (signature, size, manifest or unknown key slot), FGDG (security counter
//!                 below the floor), FGKR (key slot below the key floor: a revoked key)
//!    128      4   HEADER mark (FGH3, which also names the layout), written after the fields
//!                 above: a header cut short by a power loss has no mark and counts as absent
//!    132      4   COMMIT mark: the application checked the SHA-256 and requested the swap
//!    136      4   BOOTED mark: the new image passed its trial; written before the floors are
//!                 raised and before embassy-boot's BOOT magic, so a power cut between them
//!                 never rolls a confirmed image back (the bootloader finishes the marking
//!                 instead, and the application raises the floors before it erases this)
//!    140    8 n   progress entries: the end offset of each chunk written, little-endian,
//!                 then its bitwise complement (a word cut short by a power loss fails the
//!                 pair and is skipped; the chunk after it is simply written again)
//! ```
//!
//! Erased NOR flash reads `0xFF`, so every mark and entry is programmed once over erased words
//! and the manifest is erased as a whole when a new image is offered.

/// Bytes of the header before the progress entries.
pub const HEADER_LEN: usize = 140;
/// Offset of the security counter.
pub const SECURITY_COUNTER_AT: u32 = 116;
/// Offset of the vendor key slot.
pub const KEY_SLOT_AT: u32 = 120;
/// Offset of the bootloader's REFUSED mark.
pub const REFUSED_AT: u32 = 124;
/// Offset of the HEADER mark.
pub const HEADER_MARK_AT: u32 = 128;
/// Offset of the COMMIT mark.
pub const COMMIT_AT: u32 = 132;
/// Offset of the BOOTED mark.
pub const BOOTED_AT: u32 = 136;
/// Offset of the first progress entry.
pub const PROGRESS_AT: u32 = HEADER_LEN as u32;
/// Bytes of one progress entry.
pub const ENTRY_LEN: usize = 8;

/// The HEADER mark of layout 3 ("FGH3").
pub const HEADER_MARK: [u8; 4] = *b"FGH3";
/// The COMMIT mark ("FGCM").
pub const COMMIT_MARK: [u8; 4] = *b"FGCM";
/// The BOOTED mark ("FGBT").
pub const BOOTED_MARK: [u8; 4] = *b"FGBT";
/// The REFUSED mark of an image that does not verify ("FGRF").
pub const REFUSED_MARK: [u8; 4] = *b"FGRF";
/// The REFUSED mark of a verified image whose security counter is below the floor ("FGDG").
pub const DOWNGRADE_MARK: [u8; 4] = *b"FGDG";
/// The REFUSED mark of a verified image whose key slot is below the key floor ("FGKR").
pub const REVOKED_KEY_MARK: [u8; 4] = *b"FGKR";

/// How many image bytes a manifest partition of `len` bytes can record the transfer of, in
/// chunks of `chunk` bytes.
pub const fn capacity(len: u32, chunk: u32) -> u32 {
    (len - PROGRESS_AT) / ENTRY_LEN as u32 * chunk
}

/// The fields of an offered image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Firmware version, ASCII, 0-padded.
    pub version: [u8; 16],
    /// Image length in bytes.
    pub size: u32,
    /// SHA-256 of the image.
    pub sha256: [u8; 32],
    /// Ed25519 signature of `firegrid_protocol::firmware::signed_message`.
    pub signature: [u8; 64],
    /// Anti-rollback security counter (covered by the signature).
    pub security_counter: u32,
    /// The slot of the vendor key that signed it (covered by the signature).
    pub key_slot: u8,
}

/// Why the bootloader refused an image, as its REFUSED mark says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The signature does not verify, or the manifest is missing or oversized (FGRF).
    Unverified,
    /// The image verifies, but its security counter is below the floor (FGDG).
    Downgrade,
    /// The image verifies, but its key slot is below the key floor: a revoked key (FGKR).
    RevokedKey,
}

/// A manifest read back from flash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The offered image.
    pub manifest: Manifest,
    /// The application requested the swap.
    pub committed: bool,
    /// The bootloader refused the image, and why.
    pub refused: Option<Refused>,
    /// The new image passed its trial.
    pub booted: bool,
}

impl Manifest {
    /// The header as written, without its marks (they stay erased): program these
    /// [`HEADER_MARK_AT`] bytes first, then [`HEADER_MARK`].
    pub fn encode(&self) -> [u8; HEADER_MARK_AT as usize] {
        let mut out = [0xFF; HEADER_MARK_AT as usize];
        out[..16].copy_from_slice(&self.version);
        out[16..20].copy_from_slice(&self.size.to_le_bytes());
        out[20..52].copy_from_slice(&self.sha256);
        out[52..116].copy_from_slice(&self.signature);
        out[116..120].copy_from_slice(&self.security_counter.to_le_bytes());
        out[120..124].copy_from_slice(&u32::from(self.key_slot).to_le_bytes());
        out
    }

    /// The version as text (up to its first 0 byte).
    pub fn version_str(&self) -> &str {
        let len = self.version.iter().position(|&b| b == 0).unwrap_or(self.version.len());
        core::str::from_utf8(&self.version[..len]).unwrap_or("")
    }
}

impl Header {
    /// Reads a header; `None` unless its HEADER mark is there.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Option<Header> {
        let mark = |at: u32| bytes[at as usize..at as usize + 4].try_into().ok();
        if mark(HEADER_MARK_AT) != Some(HEADER_MARK) {
            return None;
        }
        let mut manifest = Manifest {
            version: [0; 16],
            size: 0,
            sha256: [0; 32],
            signature: [0; 64],
            security_counter: 0,
            key_slot: 0,
        };
        manifest.version.copy_from_slice(&bytes[..16]);
        manifest.size = u32::from_le_bytes(bytes[16..20].try_into().ok()?);
        manifest.sha256.copy_from_slice(&bytes[20..52]);
        manifest.signature.copy_from_slice(&bytes[52..116]);
        manifest.security_counter = u32::from_le_bytes(bytes[116..120].try_into().ok()?);
        // The application writes a slot of one byte; a word beyond it (damaged flash) reads
        // as the last slot number, which no bootloader has a key for.
        let slot = u32::from_le_bytes(bytes[120..124].try_into().ok()?);
        manifest.key_slot = u8::try_from(slot).unwrap_or(u8::MAX);
        let refused = match mark(REFUSED_AT) {
            Some(REFUSED_MARK) => Some(Refused::Unverified),
            Some(DOWNGRADE_MARK) => Some(Refused::Downgrade),
            Some(REVOKED_KEY_MARK) => Some(Refused::RevokedKey),
            _ => None,
        };
        Some(Header {
            manifest,
            committed: mark(COMMIT_AT) == Some(COMMIT_MARK),
            refused,
            booted: mark(BOOTED_AT) == Some(BOOTED_MARK),
        })
    }
}

/// A progress entry recording that the image is written up to `end`.
pub fn entry(end: u32) -> [u8; ENTRY_LEN] {
    let mut out = [0; ENTRY_LEN];
    out[..4].copy_from_slice(&end.to_le_bytes());
    out[4..].copy_from_slice(&(!end).to_le_bytes());
    out
}

/// What a progress slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Never written: the entries end here.
    Erased,
    /// The image is written up to this offset.
    Written(u32),
    /// Cut short by a power loss (or otherwise damaged): skipped.
    Torn,
}

/// Reads one progress slot.
pub fn read_entry(bytes: &[u8; ENTRY_LEN]) -> Entry {
    if bytes.iter().all(|&b| b == 0xFF) {
        return Entry::Erased;
    }
    let end = u32::from_le_bytes(bytes[..4].try_into().unwrap_or([0xFF; 4]));
    let check = u32::from_le_bytes(bytes[4..].try_into().unwrap_or([0xFF; 4]));
    if check == !end { Entry::Written(end) } else { Entry::Torn }
}
