//! The over-the-air update receiver: authenticated firmware commands in, the DFU slot, the
//! update manifest and embassy-boot's state written, `fw_status` reports out.
//!
//! [`Updater`] owns five NOR flash partitions (`embedded-storage-async` traits, driven by
//! [`embassy_futures::block_on`] like [`crate::journal`]): the DFU slot, embassy-boot's state
//! partition, the manifest ([`firegrid_boot::manifest`]), the security floor and the key
//! floor ([`firegrid_boot::floor`]). It never verifies the image's
//! Ed25519 signature: that is the bootloader's job ([`firegrid_boot::loader`]), which keeps
//! Ed25519 out of the application's 64 KiB. It checks what is cheap and already linked: each
//! command's HMAC and replay window (done by [`crate::Device`] before the command gets here),
//! the chunk order and bounds, and the SHA-256 of the whole slot before it requests the swap.
//!
//! ```text
//!          fw_offer                 last chunk            fw_commit: SHA-256 good,
//!   Idle ───────────► Receiving ──────────────► (offset = size) ─ COMMIT mark, SWAP magic ─► Swapping
//!    ▲  ◄── fw_abort ──┘  ▲  │ chunk at offset: erase fresh pages, write, progress entry   │ restart
//!    │                    └──┘                                                              ▼
//!    │ REVERT: rolled_back     bootloader: signature bad ─► Idle (error refused)   bootloader swaps
//!    │                         key slot below key floor ──► Idle (error revoked_key)    │
//!    │                         counter below the floor ───► Idle (error downgrade)      │
//!    └──────────────────────── reset before marked good ◄─── Trial ◄────────────────────────┘
//!                                                              │ self-test passed + fw_confirm
//!                                                              ▼
//!                   Booted (BOOTED mark, floor and key floor raised, embassy-boot BOOT magic)
//! ```
//!
//! **Anti-rollback.** An offer whose security counter is below the floor is refused
//! `downgrade` before anything is erased or transferred: the bootloader would refuse it
//! anyway (it checks the signed counter), so this only spares the transfer and says why at
//! once. The floor rises when a trial image is marked good, after its BOOTED mark and before
//! the manifest holding its counter is erased; a trial that rolls back leaves it where it was.
//!
//! **Key rotation.** The same for the vendor key slot the offer names: an offer of a slot
//! below the key floor is refused `revoked_key`, one of a slot beyond
//! [`firegrid_boot::KEY_SLOTS`] `refused` (the bootloader has no key to verify it with), both
//! before anything is erased. The key floor rises to the slot of an image marked good, right
//! after the security floor and from the same manifest.
//!
//! **Resumable.** Every chunk is followed by a progress entry in the manifest; after a reset
//! [`Updater::start`] reads the last complete entry and reports that offset, and the gateway
//! resends from there. A page of the slot is erased when the first chunk reaching into it is
//! written, so a chunk written again after a power cut finds its page erased or holding the
//! same bytes (NOR programming only clears bits; the partition must be `MultiwriteNorFlash`,
//! as for the journal).
//!
//! **Never in the way of a fire.** While [`Device::busy_with_fire`] every firmware command is
//! refused (`busy`): no flash write delays an alarm and no restart interrupts one. Status
//! reports are telemetry, sent after every alarm and event.

use embassy_boot::{FirmwareState, State};
use embedded_storage_async::nor_flash::{MultiwriteNorFlash, NorFlash};
use firegrid_boot::floor;
use firegrid_boot::manifest::{self, Entry, Header, Manifest, Refused};
use firegrid_protocol::{
    FirmwareChunk, FirmwareOffer, FirmwareStatus, FirmwareVersion, UpdateError, UpdateState,
};
use sha2::{Digest, Sha256};

use crate::device::Device;
use crate::fmt::{info, warning};

/// How long a new image may run on trial without being confirmed before the device restarts
/// into the previous one: ten minutes covers a self-test (under a minute) and a few rounds
/// to a gateway that is slow to answer, and bounds how long a broken image runs.
pub const TRIAL_MS: u64 = 10 * 60 * 1_000;

/// An authenticated firmware command, taken from [`Device::take_firmware_command`].
#[allow(clippy::large_enum_variant, reason = "no_std without alloc: a chunk travels inline")]
#[derive(Debug, Clone, PartialEq)]
pub enum FirmwareCommand {
    /// `fw_offer`.
    Offer(FirmwareOffer),
    /// `fw_chunk`.
    Chunk(FirmwareChunk),
    /// `fw_commit`.
    Commit,
    /// `fw_abort`.
    Abort,
    /// `fw_confirm`.
    Confirm,
}

/// What the board must do after a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Restart into the bootloader (a swap was requested, or a trial image gives up).
    Restart,
}

/// Refused firmware commands and failed updates by reason, since boot. Counters saturate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateErrors([u32; 11]);

impl UpdateErrors {
    fn index(e: UpdateError) -> usize {
        match e {
            UpdateError::NoOffer => 0,
            UpdateError::OutOfOrder => 1,
            UpdateError::Oversized => 2,
            UpdateError::BadDigest => 3,
            UpdateError::Flash => 4,
            UpdateError::BadState => 5,
            UpdateError::Refused => 6,
            UpdateError::Busy => 7,
            UpdateError::SelfTestFailed => 8,
            UpdateError::Downgrade => 9,
            UpdateError::RevokedKey => 10,
        }
    }

    /// The count for `reason`.
    pub fn of(&self, reason: UpdateError) -> u32 {
        self.0[Self::index(reason)]
    }

    /// Counts one and logs it at the 1st, 2nd, 4th, 8th ... of its reason (as
    /// [`crate::Refusals`] does: the core has no clock to rate-limit by).
    fn count(&mut self, reason: UpdateError) {
        let slot = &mut self.0[Self::index(reason)];
        *slot = slot.saturating_add(1);
        if slot.is_power_of_two() {
            warning!("Firmware command refused: {} (refusal {} for this reason).", reason.as_str(), *slot);
        }
    }
}

/// Where the update stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Idle,
    /// `entry_at`: offset of the next progress entry in the manifest.
    Receiving {
        manifest: Manifest,
        offset: u32,
        entry_at: u32,
    },
    Verified {
        manifest: Manifest,
    },
    Swapping {
        manifest: Manifest,
    },
    /// `until_ms`: restart (roll back) if not confirmed by then.
    Trial {
        manifest: Manifest,
        until_ms: u64,
        confirmed: bool,
    },
    Booted {
        version: [u8; 16],
    },
    RolledBack {
        version: [u8; 16],
    },
}

/// The update receiver. See the module documentation.
pub struct Updater<D, S, M, F = M, K = F> {
    dfu: D,
    state: S,
    manifest: M,
    security: F,
    key_floor: K,
    phase: Phase,
    last_error: Option<UpdateError>,
    errors: UpdateErrors,
}

type Flash<T> = Result<T, UpdateError>;

use firegrid_protocol::firmware::version_field as to_version;

impl<D: NorFlash, S: NorFlash, M: MultiwriteNorFlash, F: NorFlash, K: NorFlash> Updater<D, S, M, F, K> {
    /// The receiver at boot: reads where a transfer or a swap stands, and reports it when
    /// there is anything to say (a transfer to resume, a new image on trial, a rollback, a
    /// refused image). On trial it asks the device for a self-test. `security` is the floor's
    /// partition, `key_floor` the key floor's ([`firegrid_boot::floor`]).
    pub fn start(
        dfu: D,
        state: S,
        manifest: M,
        security: F,
        key_floor: K,
        device: &mut Device,
        now_ms: u64,
    ) -> Self {
        let mut up = Updater {
            dfu,
            state,
            manifest,
            security,
            key_floor,
            phase: Phase::Idle,
            last_error: None,
            errors: UpdateErrors::default(),
        };
        match up.recover(now_ms) {
            Ok(()) => {}
            Err(e) => up.fail(e),
        }
        if matches!(up.phase, Phase::Trial { .. }) {
            info!("New firmware on trial; self-test.");
            device.request_self_test(now_ms);
        }
        if up.phase != Phase::Idle || up.last_error.is_some() {
            device.report_update(now_ms, up.status());
        }
        up
    }

    fn recover(&mut self, now_ms: u64) -> Flash<()> {
        let header = self.read_header()?;
        match self.embassy_state()? {
            // Marked good, and the power went before embassy-boot's state said so.
            State::Swap if header.as_ref().is_some_and(|h| h.booted) => {
                let (version, counter, slot) = header.map_or(([0; 16], 0, 0), |h| {
                    (h.manifest.version, h.manifest.security_counter, h.manifest.key_slot)
                });
                self.phase = Phase::Booted { version };
                self.raise_floors(counter, slot)?;
                self.set_booted()?;
                self.erase_manifest()?;
            }
            State::Swap => {
                // The bootloader swapped this image in (it only swaps verified ones).
                let manifest = header.map(|h| h.manifest).ok_or(UpdateError::BadState)?;
                self.phase = Phase::Trial { manifest, until_ms: now_ms + TRIAL_MS, confirmed: false };
            }
            State::Revert => {
                let version = header.map_or([0; 16], |h| h.manifest.version);
                info!("Firmware rolled back.");
                self.finish()?;
                self.phase = Phase::RolledBack { version };
            }
            State::Boot | State::DfuDetach => match header {
                None => {}
                Some(Header { refused: Some(why), .. }) => {
                    let reason = match why {
                        Refused::Unverified => UpdateError::Refused,
                        Refused::Downgrade => UpdateError::Downgrade,
                        Refused::RevokedKey => UpdateError::RevokedKey,
                    };
                    warning!("Bootloader refused the firmware image: {}.", reason.as_str());
                    self.erase_manifest()?;
                    self.fail(reason);
                }
                // A finished update whose manifest was not erased yet (the bootloader
                // finished its marking, or the power went before the erase): the floors are
                // raised first, since the manifest is the only record of the counter and slot.
                Some(h) if h.booted => {
                    self.raise_floors(h.manifest.security_counter, h.manifest.key_slot)?;
                    self.erase_manifest()?;
                    self.phase = Phase::Booted { version: h.manifest.version };
                }
                // Committed, but the swap request was lost to a power cut: verified still.
                Some(h) if h.committed => self.phase = Phase::Verified { manifest: h.manifest },
                Some(h) => {
                    let (offset, entry_at) = self.read_progress(h.manifest.size)?;
                    self.phase = Phase::Receiving { manifest: h.manifest, offset, entry_at };
                }
            },
        }
        Ok(())
    }

    /// Handles one authenticated firmware command and reports the outcome as a `fw_status`.
    pub fn apply(&mut self, device: &mut Device, now_ms: u64, cmd: FirmwareCommand) -> Action {
        let result = if device.busy_with_fire() { Err(UpdateError::Busy) } else { self.command(device, cmd) };
        let action = match result {
            Ok(action) => {
                self.last_error = None;
                action
            }
            Err(e) => {
                self.fail(e);
                Action::None
            }
        };
        device.report_update(now_ms, self.status());
        action
    }

    /// Lets time pass on trial: marks the image good once its self-test passed and the
    /// gateway confirmed, and gives up (restart, so the bootloader rolls back) when the
    /// self-test failed or the confirmation is overdue, never while busy with a fire.
    pub fn poll(&mut self, device: &mut Device, now_ms: u64) -> Action {
        let Phase::Trial { until_ms, confirmed, .. } = self.phase else { return Action::None };
        if confirmed && device.self_test_passed() {
            if let Err(e) = self.mark_booted() {
                self.fail(e);
            }
            device.report_update(now_ms, self.status());
            return Action::None;
        }
        let self_test_failed = !device.self_test_passed() && device.self_test_ran();
        if (self_test_failed || now_ms >= until_ms) && !device.busy_with_fire() {
            if self_test_failed {
                self.fail(UpdateError::SelfTestFailed);
                device.report_update(now_ms, self.status());
            }
            warning!("New firmware not confirmed; restarting into the previous one.");
            return Action::Restart;
        }
        Action::None
    }

    fn command(&mut self, device: &Device, cmd: FirmwareCommand) -> Flash<Action> {
        match cmd {
            FirmwareCommand::Offer(offer) => self.offer(offer).map(|()| Action::None),
            FirmwareCommand::Chunk(chunk) => self.chunk(&chunk).map(|()| Action::None),
            FirmwareCommand::Commit => self.commit(),
            FirmwareCommand::Abort => match self.phase {
                Phase::Receiving { .. } | Phase::Verified { .. } => {
                    self.erase_manifest()?;
                    self.phase = Phase::Idle;
                    Ok(Action::None)
                }
                Phase::Idle | Phase::Booted { .. } | Phase::RolledBack { .. } => Err(UpdateError::NoOffer),
                Phase::Swapping { .. } | Phase::Trial { .. } => Err(UpdateError::BadState),
            },
            FirmwareCommand::Confirm => match &mut self.phase {
                Phase::Trial { confirmed, .. } => {
                    *confirmed = true;
                    if device.self_test_passed() {
                        self.mark_booted()?;
                    }
                    Ok(Action::None)
                }
                // A repeated confirmation of an image already marked good.
                Phase::Booted { .. } => Ok(Action::None),
                _ => Err(UpdateError::BadState),
            },
        }
    }

    fn offer(&mut self, offer: FirmwareOffer) -> Flash<()> {
        let manifest = Manifest {
            version: to_version(&offer.version),
            size: offer.size,
            sha256: offer.sha256.0,
            signature: offer.signature.0,
            security_counter: offer.security_counter,
            key_slot: offer.key_slot,
        };
        match &self.phase {
            Phase::Swapping { .. } | Phase::Trial { .. } => return Err(UpdateError::BadState),
            // The same image again: resume (the status carries the offset to resume from).
            Phase::Receiving { manifest: m, .. } | Phase::Verified { manifest: m } if *m == manifest => {
                return Ok(());
            }
            _ => {}
        }
        let slot = (self.dfu.capacity() as u32).saturating_sub(D::ERASE_SIZE as u32);
        let log = manifest::capacity(self.manifest.capacity() as u32, firegrid_protocol::MAX_CHUNK as u32);
        if offer.size > slot || offer.size > log {
            return Err(UpdateError::Oversized);
        }
        // Before anything is erased: a transfer in progress stays resumable. A slot the
        // bootloader has no key for could never verify; a slot below the key floor is revoked.
        if usize::from(offer.key_slot) >= firegrid_boot::KEY_SLOTS {
            return Err(UpdateError::Refused);
        }
        if u32::from(offer.key_slot) < self.key_floor()? {
            return Err(UpdateError::RevokedKey);
        }
        if offer.security_counter < self.floor()? {
            return Err(UpdateError::Downgrade);
        }
        self.erase_manifest()?;
        self.phase = Phase::Idle;
        self.write_manifest(0, &manifest.encode())?;
        self.write_manifest(manifest::HEADER_MARK_AT, &manifest::HEADER_MARK)?;
        info!("Firmware offered: {} bytes.", offer.size);
        self.phase = Phase::Receiving { manifest, offset: 0, entry_at: manifest::PROGRESS_AT };
        Ok(())
    }

    fn chunk(&mut self, chunk: &FirmwareChunk) -> Flash<()> {
        let Phase::Receiving { manifest, offset, entry_at } = &self.phase else {
            return Err(match self.phase {
                Phase::Verified { .. } => UpdateError::OutOfOrder,
                Phase::Swapping { .. } | Phase::Trial { .. } => UpdateError::BadState,
                _ => UpdateError::NoOffer,
            });
        };
        let (size, offset, entry_at) = (manifest.size, *offset, *entry_at);
        let data = &chunk.data.0;
        let end = chunk.offset.saturating_add(data.len() as u32);
        if chunk.offset != offset {
            return Err(UpdateError::OutOfOrder);
        }
        if end > size || entry_at as usize + manifest::ENTRY_LEN > self.manifest.capacity() {
            return Err(UpdateError::Oversized);
        }
        // Every chunk but the last is a whole number of flash words, so the next one starts
        // on a word.
        let word = D::WRITE_SIZE.max(1);
        if !data.len().is_multiple_of(word) && end != size {
            return Err(UpdateError::OutOfOrder);
        }
        let page = D::ERASE_SIZE as u32;
        let mut first = offset.next_multiple_of(page);
        while first < end {
            block(self.dfu.erase(first, first + page))?;
            first += page;
        }
        let whole = data.len() / word * word;
        if whole > 0 {
            block(self.dfu.write(offset, &data[..whole]))?;
        }
        if whole < data.len() {
            // The image's last bytes, padded to a word with the erased value.
            let mut tail = [0xFFu8; 16];
            tail[..data.len() - whole].copy_from_slice(&data[whole..]);
            block(self.dfu.write(offset + whole as u32, &tail[..word]))?;
        }
        self.write_manifest(entry_at, &manifest::entry(end))?;
        if let Phase::Receiving { offset, entry_at, .. } = &mut self.phase {
            *offset = end;
            *entry_at += manifest::ENTRY_LEN as u32;
        }
        Ok(())
    }

    fn commit(&mut self) -> Flash<Action> {
        let manifest = match &self.phase {
            Phase::Receiving { manifest, offset, .. } if *offset == manifest.size => manifest.clone(),
            Phase::Verified { manifest } => manifest.clone(),
            Phase::Idle | Phase::Booted { .. } | Phase::RolledBack { .. } => {
                return Err(UpdateError::NoOffer);
            }
            _ => return Err(UpdateError::BadState),
        };
        if self.slot_sha256(manifest.size)? != manifest.sha256 {
            // A truncated or altered transfer: start over.
            self.erase_manifest()?;
            self.phase = Phase::Idle;
            return Err(UpdateError::BadDigest);
        }
        self.phase = Phase::Verified { manifest: manifest.clone() };
        self.write_manifest(manifest::COMMIT_AT, &manifest::COMMIT_MARK)?;
        let mut aligned = [0u8; 16];
        block(FirmwareState::new(&mut self.state, &mut aligned[..S::WRITE_SIZE]).mark_updated())
            .map_err(|_| UpdateError::Flash)?;
        info!("Firmware verified; swap requested.");
        self.phase = Phase::Swapping { manifest };
        Ok(Action::Restart)
    }

    /// Marks the trial image good: the manifest's BOOTED mark first (which the bootloader
    /// honours), then the floor raised to its security counter and the key floor to its key
    /// slot, then embassy-boot's BOOT magic, then the manifest is erased. A power cut anywhere
    /// leaves the BOOTED mark with the manifest, and [`Updater::start`] raises the floors
    /// before it erases them.
    fn mark_booted(&mut self) -> Flash<()> {
        let Phase::Trial { manifest, .. } = &self.phase else { return Err(UpdateError::BadState) };
        let (version, counter, slot) = (manifest.version, manifest.security_counter, manifest.key_slot);
        self.write_manifest(manifest::BOOTED_AT, &manifest::BOOTED_MARK)?;
        self.raise_floors(counter, slot)?;
        self.set_booted()?;
        info!("New firmware marked good.");
        self.phase = Phase::Booted { version };
        self.erase_manifest()
    }

    fn set_booted(&mut self) -> Flash<()> {
        let mut aligned = [0u8; 16];
        block(FirmwareState::new(&mut self.state, &mut aligned[..S::WRITE_SIZE]).mark_booted())
            .map_err(|_| UpdateError::Flash)
    }

    /// After a rollback: the manifest erased first (a power cut after it leaves REVERT, and
    /// this runs again), then BOOT magic, so the next update may begin.
    fn finish(&mut self) -> Flash<()> {
        self.erase_manifest()?;
        self.set_booted()
    }

    fn fail(&mut self, e: UpdateError) {
        self.last_error = Some(e);
        self.errors.count(e);
    }

    /// The status a `fw_status` reports now.
    pub fn status(&self) -> FirmwareStatus {
        let running = to_version(crate::FIRMWARE_VERSION);
        let (state, version, offset) = match &self.phase {
            Phase::Idle => (UpdateState::Idle, running, 0),
            Phase::Receiving { manifest, offset, .. } => (UpdateState::Receiving, manifest.version, *offset),
            Phase::Verified { manifest } => (UpdateState::Verified, manifest.version, manifest.size),
            Phase::Swapping { manifest } => (UpdateState::Swapping, manifest.version, manifest.size),
            Phase::Trial { manifest, .. } => (UpdateState::Trial, manifest.version, manifest.size),
            Phase::Booted { version } => (UpdateState::Booted, *version, 0),
            Phase::RolledBack { version } => (UpdateState::RolledBack, *version, 0),
        };
        let len = version.iter().position(|&b| b == 0).unwrap_or(16);
        let text = core::str::from_utf8(&version[..len]).ok().filter(|t| !t.is_empty()).unwrap_or("unknown");
        let mut version = FirmwareVersion::new();
        let _ = version.push_str(text);
        FirmwareStatus { version, state, offset, error: self.last_error }
    }

    /// Refusals and failures by reason since boot.
    pub fn errors(&self) -> &UpdateErrors {
        &self.errors
    }

    /// The partitions back (DFU, state, manifest, floor, key floor).
    pub fn into_parts(self) -> (D, S, M, F, K) {
        (self.dfu, self.state, self.manifest, self.security, self.key_floor)
    }

    /// The security floor: the highest security counter of an image this device marked good
    /// (`0` on a factory-fresh partition).
    pub fn floor(&mut self) -> Flash<u32> {
        Ok(scan(&mut self.security)?.floor())
    }

    /// The key floor: the highest vendor key slot of an image this device marked good (`0`
    /// on a factory-fresh partition); images of the slots below it are refused.
    pub fn key_floor(&mut self) -> Flash<u32> {
        Ok(scan(&mut self.key_floor)?.floor())
    }

    // ---- Flash --------------------------------------------------------------------------

    fn embassy_state(&mut self) -> Flash<State> {
        let mut aligned = [0u8; 16];
        block(FirmwareState::new(&mut self.state, &mut aligned[..S::WRITE_SIZE]).get_state())
            .map_err(|_| UpdateError::Flash)
    }

    fn read_header(&mut self) -> Flash<Option<Header>> {
        let mut bytes = [0u8; manifest::HEADER_LEN];
        block(self.manifest.read(0, &mut bytes))?;
        Ok(Header::decode(&bytes))
    }

    /// The offset the last complete progress entry records, and where the next entry goes.
    fn read_progress(&mut self, size: u32) -> Flash<(u32, u32)> {
        let (mut offset, mut at) = (0, manifest::PROGRESS_AT);
        while at as usize + manifest::ENTRY_LEN <= self.manifest.capacity() {
            let mut bytes = [0u8; manifest::ENTRY_LEN];
            block(self.manifest.read(at, &mut bytes))?;
            match manifest::read_entry(&bytes) {
                Entry::Erased => break,
                Entry::Written(end) if end > offset && end <= size => offset = end,
                Entry::Written(_) | Entry::Torn => {}
            }
            at += manifest::ENTRY_LEN as u32;
        }
        Ok((offset, at))
    }

    /// Raises the security floor to `counter`, then the key floor to `slot`. Each is the old
    /// value or the new one after a power cut; both are raised again from the manifest at the
    /// next start.
    fn raise_floors(&mut self, counter: u32, slot: u8) -> Flash<()> {
        if raise(&mut self.security, counter)? {
            info!("Security floor raised to {}.", counter);
        }
        if raise(&mut self.key_floor, u32::from(slot))? {
            info!("Key floor raised to slot {}: images of lower key slots are refused.", slot);
        }
        Ok(())
    }

    fn write_manifest(&mut self, at: u32, bytes: &[u8]) -> Flash<()> {
        block(self.manifest.write(at, bytes))
    }

    fn erase_manifest(&mut self) -> Flash<()> {
        let len = self.manifest.capacity() as u32;
        block(self.manifest.erase(0, len))
    }

    fn slot_sha256(&mut self, size: u32) -> Flash<[u8; 32]> {
        let mut hash = Sha256::new();
        let mut buf = [0u8; 256];
        let mut at = 0;
        while at < size {
            let n = (size - at).min(buf.len() as u32) as usize;
            let read = n.next_multiple_of(D::READ_SIZE.max(1)).min(buf.len());
            block(self.dfu.read(at, &mut buf[..read]))?;
            hash.update(&buf[..n]);
            at += n as u32;
        }
        Ok(hash.finalize().into())
    }
}

/// Reads a floor's partition ([`firegrid_boot::floor`]).
fn scan<F: NorFlash>(part: &mut F) -> Flash<floor::Scan> {
    let len = part.capacity() as u32;
    let mut scan = floor::Scan::new(F::ERASE_SIZE as u32, len);
    let mut record = [0u8; floor::RECORD_LEN];
    for at in (0..len).step_by(floor::RECORD_LEN) {
        block(part.read(at, &mut record))?;
        scan.feed(at, &record);
    }
    Ok(scan)
}

/// Raises the floor in `part` to `to` (nothing when it is there already): one record
/// appended, or a fresh page erased and the record written at its start. Whether it rose.
fn raise<F: NorFlash>(part: &mut F, to: u32) -> Flash<bool> {
    let at = match scan(part)?.raise(to) {
        None => return Ok(false),
        Some(floor::Raise::Append { at }) => at,
        Some(floor::Raise::Move { erase }) => {
            block(part.erase(erase.start, erase.end))?;
            erase.start
        }
    };
    block(part.write(at, &floor::record(to)))?;
    Ok(true)
}

/// Runs a flash operation to completion; any error is a flash failure.
fn block<T, E>(op: impl core::future::Future<Output = Result<T, E>>) -> Flash<T> {
    embassy_futures::block_on(op).map_err(|_| UpdateError::Flash)
}

#[cfg(test)]
mod tests;
