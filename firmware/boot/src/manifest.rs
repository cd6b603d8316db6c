//! The update manifest: what the application writes beside the DFU slot while it receives an
//! image, and what the bootloader reads before it swaps.
//!
//! ```text
//! offset   bytes  field
//!      0     16   version (ASCII, 0-padded)
//!     16      4   size, little-endian
//!     20     32   SHA-256 of the image
//!     52     64   Ed25519 signature of the image's SHA-512
//!    116      4   REFUSED mark, written by the bootloader when the signature does not verify
//!    120      4   HEADER mark, written after the fields above: a header cut short by a
//!                 power loss has no mark and counts as absent
//!    124      4   COMMIT mark: the application checked the SHA-256 and requested the swap
//!    128      4   BOOTED mark: the new image passed its trial; written before embassy-boot's
//!                 BOOT magic, so a power cut between the two never rolls a confirmed image
//!                 back (the bootloader finishes the marking instead)
//!    132      4   unused
//!    136    8 n   progress entries: the end offset of each chunk written, little-endian,
//!                 then its bitwise complement (a word cut short by a power loss fails the
//!                 pair and is skipped; the chunk after it is simply written again)
//! ```
//!
//! Erased NOR flash reads `0xFF`, so every mark and entry is programmed once over erased words
//! and the manifest is erased as a whole when a new image is offered.

/// Bytes of the header before the progress entries.
pub const HEADER_LEN: usize = 136;
/// Offset of the bootloader's REFUSED mark.
pub const REFUSED_AT: u32 = 116;
/// Offset of the HEADER mark.
pub const HEADER_MARK_AT: u32 = 120;
/// Offset of the COMMIT mark.
pub const COMMIT_AT: u32 = 124;
/// Offset of the BOOTED mark.
pub const BOOTED_AT: u32 = 128;
/// Offset of the first progress entry.
pub const PROGRESS_AT: u32 = HEADER_LEN as u32;
/// Bytes of one progress entry.
pub const ENTRY_LEN: usize = 8;

/// The HEADER mark ("FGHD").
pub const HEADER_MARK: [u8; 4] = *b"FGHD";
/// The COMMIT mark ("FGCM").
pub const COMMIT_MARK: [u8; 4] = *b"FGCM";
/// The BOOTED mark ("FGBT").
pub const BOOTED_MARK: [u8; 4] = *b"FGBT";
/// The REFUSED mark ("FGRF").
pub const REFUSED_MARK: [u8; 4] = *b"FGRF";

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
    /// Ed25519 signature of the image's SHA-512.
    pub signature: [u8; 64],
}

/// A manifest read back from flash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The offered image.
    pub manifest: Manifest,
    /// The application requested the swap.
    pub committed: bool,
    /// The bootloader refused the image.
    pub refused: bool,
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
        let mut manifest = Manifest { version: [0; 16], size: 0, sha256: [0; 32], signature: [0; 64] };
        manifest.version.copy_from_slice(&bytes[..16]);
        manifest.size = u32::from_le_bytes(bytes[16..20].try_into().ok()?);
        manifest.sha256.copy_from_slice(&bytes[20..52]);
        manifest.signature.copy_from_slice(&bytes[52..116]);
        Some(Header {
            manifest,
            committed: mark(COMMIT_AT) == Some(COMMIT_MARK),
            refused: mark(REFUSED_AT) == Some(REFUSED_MARK),
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
