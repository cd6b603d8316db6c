//! The bootloader's decision at reset: verify, then let embassy-boot swap or revert.
//!
//! ```text
//!                 state magic (embassy-boot)
//!   BOOT / REVERT ──────────────────────────────► boot the active slot       Outcome::Boot
//!   SWAP, swap not begun ── signature good, ────► embassy-boot swaps,        Outcome::Trial
//!                        │  slot ≥ key floor,     boot the new image on trial
//!                        │  counter ≥ floor
//!                        ├─ signature bad, ─────► REFUSED mark FGRF, state BOOT,  Outcome::Refused
//!                        │  unknown key slot      boot the current image
//!                        ├─ slot < key floor ───► REFUSED mark FGKR, state BOOT,  Outcome::Refused
//!                        │                        boot the current image
//!                        └─ counter < floor ────► REFUSED mark FGDG, state BOOT,  Outcome::Refused
//!                                                 boot the current image
//!   SWAP, manifest BOOTED ─────────────────────► state BOOT (the trial image passed and lost
//!                                                 power before it could say so)  Outcome::Boot
//!   SWAP, swap begun or done ──────────────────► embassy-boot finishes the swap (Trial), or,
//!                                                 when the trial image did not mark itself
//!                                                 booted, swaps the previous one back
//!                                                 (Outcome::Reverted)
//! ```
//!
//! The signature is checked only before the swap begins: once embassy-boot has moved a page,
//! the DFU slot holds a mix of both images, and its progress words in the state partition
//! (which only this bootloader and embassy-boot's updater write) say the check was passed.
//!
//! The signature is verified under the key of the slot the manifest names, and only that one
//! (trying every key would let a revoked key's signature pass as the slot of another). The
//! key slot and the security counter are checked after the signature (only a signed slot and
//! a signed counter mean anything): the slot against the key floor, the counter against the
//! floor ([`crate::floor`]). The bootloader only reads the floor: the
//! application raises it when it marks a trial image good, before it erases the manifest
//! that holds the counter, so every path that ends a trial as good passes through a raise
//! (a power cut in between leaves the BOOTED mark, and the application raises the floor at
//! its next start). The active image needs no check of its own at boot: it is either the
//! image the floor was last raised for, or one it replaced that ran before it, whose counter
//! the floor never exceeds while a trial is open, since the floor rises only once the trial
//! ended as good and nothing reverts after that.

use embassy_boot::{BlockingFirmwareState, BootError, BootLoader, BootLoaderConfig, State};
use embedded_storage::nor_flash::NorFlash;

use crate::VendorKeys;
use crate::manifest::{self, Header};

/// What the bootloader did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do: the active slot boots as it is.
    Boot,
    /// The DFU image was verified and swapped in (or its interrupted swap finished): it
    /// boots on trial, and is swapped back at the next reset unless it marks itself booted.
    Trial,
    /// The trial image did not mark itself booted: the previous image is back.
    Reverted,
    /// A swap was requested for an image that is not signed by the vendor key of its slot
    /// (or whose manifest is missing or larger than the slot, or whose key slot is unknown or
    /// below the key floor, or whose security counter is below the floor): refused, the
    /// request cleared.
    Refused(Refusal),
}

/// Why a requested swap was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No committed manifest beside the DFU slot.
    NoManifest,
    /// The manifest's size is zero or larger than the active slot.
    Oversized,
    /// The manifest names a key slot the bootloader has no key for.
    UnknownKey,
    /// The signature does not verify under the vendor key of the slot it names.
    BadSignature,
    /// The image verifies, but its key slot is below the key floor: a revoked key.
    RevokedKey,
    /// The image verifies, but its security counter is below the floor: a downgrade.
    Downgrade,
}

impl Refusal {
    /// The REFUSED mark the bootloader writes for it, which the application reports.
    pub const fn mark(self) -> [u8; 4] {
        match self {
            Refusal::NoManifest | Refusal::Oversized | Refusal::UnknownKey | Refusal::BadSignature => {
                manifest::REFUSED_MARK
            }
            Refusal::RevokedKey => manifest::REVOKED_KEY_MARK,
            Refusal::Downgrade => manifest::DOWNGRADE_MARK,
        }
    }
}

/// Bytes read at a time while hashing the slot and copying pages: a divisor of the page.
const BLOCK: usize = 256;

/// The SHA-512 of the first `len` bytes of `dfu`.
fn sha512_of<D: NorFlash>(dfu: &mut D, len: u32) -> Result<[u8; 64], D::Error> {
    use ed25519_dalek::Digest;
    let mut hash = ed25519_dalek::Sha512::new();
    let mut buf = [0u8; BLOCK];
    let mut at = 0u32;
    while at < len {
        let n = (len - at).min(BLOCK as u32) as usize;
        // Reads are whole words; the bytes past `len` are read and not hashed.
        let read = n.next_multiple_of(D::READ_SIZE).min(BLOCK);
        dfu.read(at, &mut buf[..read])?;
        hash.update(&buf[..n]);
        at += n as u32;
    }
    Ok(hash.finalize().into())
}

/// The floor kept in `security` ([`crate::floor`]): the security floor, or the key floor in
/// its own partition.
pub fn floor<F: NorFlash>(security: &mut F) -> Result<u32, BootError> {
    let mut scan = crate::floor::Scan::new(F::ERASE_SIZE as u32, security.capacity() as u32);
    let mut record = [0u8; crate::floor::RECORD_LEN];
    for at in (0..security.capacity() as u32).step_by(crate::floor::RECORD_LEN) {
        security.read(at, &mut record).map_err(flash)?;
        scan.feed(at, &record);
    }
    Ok(scan.floor())
}

/// Checks the manifest's signature of the DFU image under the key of the slot it names, then
/// its key slot against the key floor in `key_floor` and its security counter against the
/// floor in `security`.
fn verify<D: NorFlash, M: NorFlash, F: NorFlash, K: NorFlash>(
    dfu: &mut D,
    manifest: &mut M,
    security: &mut F,
    key_floor: &mut K,
    active_len: u32,
    keys: &VendorKeys,
) -> Result<Result<(), Refusal>, BootError> {
    let mut bytes = [0u8; manifest::HEADER_LEN];
    manifest.read(0, &mut bytes).map_err(flash)?;
    let Some(Header { manifest: m, committed: true, .. }) = Header::decode(&bytes) else {
        return Ok(Err(Refusal::NoManifest));
    };
    if m.size == 0 || m.size > active_len {
        return Ok(Err(Refusal::Oversized));
    }
    let Some(public_key) = keys.get(usize::from(m.key_slot)) else {
        return Ok(Err(Refusal::UnknownKey));
    };
    let digest = sha512_of(dfu, m.size).map_err(flash)?;
    let message =
        firegrid_protocol::firmware::signed_message(&m.version, m.security_counter, m.key_slot, &digest);
    let good = ed25519_dalek::VerifyingKey::from_bytes(public_key)
        .and_then(|key| key.verify_strict(&message, &ed25519_dalek::Signature::from_bytes(&m.signature)))
        .is_ok();
    if !good {
        return Ok(Err(Refusal::BadSignature));
    }
    if u32::from(m.key_slot) < floor(key_floor)? {
        return Ok(Err(Refusal::RevokedKey));
    }
    Ok(if m.security_counter < floor(security)? { Err(Refusal::Downgrade) } else { Ok(()) })
}

fn flash<E: embedded_storage::nor_flash::NorFlashError>(e: E) -> BootError {
    BootError::Flash(e.kind())
}

/// Whether embassy-boot has begun (or finished) a swap: its progress-validity word or its
/// first progress word is programmed (embassy-boot's state format: magic, validity, then
/// one word per page step, each programmed once when the step is done).
fn swap_begun<S: NorFlash>(state: &mut S) -> Result<bool, BootError> {
    let mut word = [0u8; 16];
    let word = &mut word[..S::WRITE_SIZE];
    for index in [1u32, 2] {
        state.read(index * S::WRITE_SIZE as u32, word).map_err(flash)?;
        if word.iter().any(|&b| b != 0xFF) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether the manifest carries the BOOTED mark of a trial image that passed.
fn confirmed<M: NorFlash>(manifest: &mut M) -> Result<bool, BootError> {
    let mut bytes = [0u8; manifest::HEADER_LEN];
    manifest.read(0, &mut bytes).map_err(flash)?;
    Ok(Header::decode(&bytes).is_some_and(|h| h.committed && h.booted))
}

/// Runs at every reset, before the application: see the module documentation.
///
/// `keys` are the vendor's Ed25519 public keys by slot, compiled into the bootloader image;
/// `security` the floor's partition and `key_floor` the key floor's, which this only reads.
/// Every flash step is
/// power-fail-safe: a reset at any point runs this again and ends on a good image
/// (embassy-boot resumes an interrupted swap or revert from its progress words; an
/// interrupted refusal is simply refused again).
pub fn prepare<A: NorFlash, D: NorFlash, S: NorFlash, M: NorFlash, F: NorFlash, K: NorFlash>(
    active: &mut A,
    dfu: &mut D,
    state: &mut S,
    manifest: &mut M,
    security: &mut F,
    key_floor: &mut K,
    keys: &VendorKeys,
) -> Result<Outcome, BootError> {
    let mut aligned = [0u8; 16];
    let aligned = &mut aligned[..S::WRITE_SIZE];
    let requested =
        BlockingFirmwareState::new(&mut *state, aligned).get_state().map_err(|_| BootError::BadMagic)?;
    if requested == State::Swap && confirmed(manifest)? {
        // The trial image marked itself good in the manifest and lost power before it could
        // tell embassy-boot: finish that for it rather than roll back a confirmed image.
        let mut aligned = [0u8; 16];
        BlockingFirmwareState::new(&mut *state, &mut aligned[..S::WRITE_SIZE])
            .mark_booted()
            .map_err(|_| BootError::BadMagic)?;
        return Ok(Outcome::Boot);
    }
    if requested == State::Swap
        && !swap_begun(state)?
        && let Err(refusal) = verify(dfu, manifest, security, key_floor, active.capacity() as u32, keys)?
    {
        {
            // Mark the refusal for the application to report, then clear the request.
            // The marks are single 4-byte words (the LM3S6965 programs one word at a time).
            let mark = refusal.mark();
            let mut current = [0u8; 4];
            manifest.read(manifest::REFUSED_AT, &mut current).map_err(flash)?;
            if current != mark {
                manifest.write(manifest::REFUSED_AT, &mark).map_err(flash)?;
            }
            let mut aligned = [0u8; 16];
            BlockingFirmwareState::new(&mut *state, &mut aligned[..S::WRITE_SIZE])
                .mark_booted()
                .map_err(|_| BootError::BadMagic)?;
            return Ok(Outcome::Refused(refusal));
        }
    }
    let mut buf = [0u8; BLOCK];
    let before =
        BootLoader::new(BootLoaderConfig { active: &mut *active, dfu: &mut *dfu, state: &mut *state })
            .prepare_boot(&mut buf)?;
    if before != State::Swap {
        return Ok(Outcome::Boot);
    }
    // embassy-boot answers with the state it found; what it did shows in the state it left.
    let mut aligned = [0u8; 16];
    let after = BlockingFirmwareState::new(state, &mut aligned[..S::WRITE_SIZE])
        .get_state()
        .map_err(|_| BootError::BadMagic)?;
    Ok(if after == State::Revert { Outcome::Reverted } else { Outcome::Trial })
}
