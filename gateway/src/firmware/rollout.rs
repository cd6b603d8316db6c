//! A firmware rollout to a fleet: canary share first, then waves, paused when too many fail.
//!
//! [`Rollout`] is sans-IO. It takes each device's `fw_status` ([`Rollout::on_status`]) and the
//! time ([`Rollout::tick`]), and answers with the commands to send ([`Send`]); the MQTT
//! adapter signs each for the device's current boot and publishes it on its
//! `down/{kind}` topic. Every device runs its own session:
//!
//! ```text
//!   Waiting ─ wave starts ─► Offered ─ receiving ─► Transferring ─ offset = size ─► Committed
//!                              ▲   (fw_chunk at the reported offset)  (fw_commit)     │ device
//!                              └── no answer: resend the last command ◄──────────────┤ restarts
//!   Failed ◄── refused / downgrade / revoked_key / bad_digest / rolled_back / no answer after max_attempts ▼
//!   Booted ◄──────────────── booted ◄──────── (fw_confirm) ◄─────────────────────── Trial
//! ```
//!
//! The device's reported offset is the truth: a chunk lost in transit, a duplicate or a reset
//! mid-transfer all end in a status whose offset says what to send next, so the rollout keeps
//! no transfer state of its own beyond the last command (for the resend).
//!
//! **Pacing.** Every command is answered by one `fw_status`, and the gateway's admission
//! gives a device's statuses a budget ([`Plan::min_gap`] is derived from it by the
//! composer, with a margin). So two commands to one device are never sent closer than
//! `min_gap`: a status that comes back sooner (a powered device answers in milliseconds) has
//! its answer held, and [`Rollout::paced`] (or [`Rollout::tick`]) sends it when its time
//! comes; [`Rollout::next_due`] says when that is, so the driver can wake for it. A transfer
//! of N chunks then takes about N × `min_gap` and is never refused, where an unpaced one
//! ran out of budget after its burst and waited a `resend_after` for every refused status.
//!
//! Waves: the first holds `canary_share` of the devices (at least one); each later one
//! `wave_size`. A wave starts once every device of the waves before it has settled (booted or
//! failed). When the failed share of the settled devices passes `max_failure_share`, the
//! rollout pauses: no new wave starts (devices already updating finish) until
//! [`Rollout::resume`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use firegrid_protocol::firmware::{ChunkData, FixedBytes};
use firegrid_protocol::{
    DownlinkBody, FirmwareChunk, FirmwareOffer, FirmwareStatus, MAX_CHUNK, UpdateError, UpdateState,
};

use super::signing::SignedImage;

/// How a rollout proceeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Share of the devices in the first wave (the canaries), 0 to 1; at least one device.
    pub canary_share: f64,
    /// Devices per wave after the canaries.
    pub wave_size: usize,
    /// Share of failed devices, among the settled ones, above which the rollout pauses.
    pub max_failure_share: f64,
    /// How long to wait for a device's answer before sending the last command again.
    pub resend_after: Duration,
    /// Sends of one command without an answer before the device counts as failed.
    pub max_attempts: u32,
    /// The shortest time between two commands to one device, so that the statuses they
    /// draw stay within the device's firmware budget at the gateway's admission. Not part of
    /// the request file: the running gateway derives it from its `[admission]` settings.
    pub min_gap: Duration,
}

impl Default for Plan {
    /// 5 % canaries, waves of 500, pause above 10 % failed, resend after 60 s, give up after
    /// 5 tries (an NB-IoT device in power saving may answer only every few minutes; a powered
    /// one answers in well under a second). A command every 250 ms at most: the default
    /// firmware budget of 5 statuses/s with a 25 % margin.
    fn default() -> Self {
        Plan {
            canary_share: 0.05,
            wave_size: 500,
            max_failure_share: 0.10,
            resend_after: Duration::from_secs(60),
            max_attempts: 5,
            min_gap: Duration::from_millis(250),
        }
    }
}

/// Where one device stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceState {
    /// Its wave has not started.
    Waiting,
    /// Offered, no answer yet.
    Offered,
    /// Receiving chunks.
    Transferring,
    /// Swap requested; the device restarts into its bootloader.
    Committed,
    /// Running the new image on trial; confirmation sent.
    Trial,
    /// On the new image, marked good.
    Booted,
    /// Ended on its previous image.
    Failed(Failure),
}

/// Why a device failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// Its bootloader refused the image's signature.
    Refused,
    /// The image's security counter is below the device's floor (anti-rollback): refused at
    /// the offer, or by the bootloader.
    Downgrade,
    /// The image's vendor key slot is below the device's key floor (a retired key): refused
    /// at the offer, or by the bootloader.
    RevokedKey,
    /// The received image did not match the offer's SHA-256 (a corrupted transfer).
    BadDigest,
    /// The new image did not mark itself good (failed self-test, or no confirmation).
    RolledBack,
    /// The device refused the offer as larger than its slot.
    Oversized,
    /// No answer after `max_attempts` sends.
    Silent,
}

impl DeviceState {
    /// A short, stable label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Waiting => "waiting",
            DeviceState::Offered => "offered",
            DeviceState::Transferring => "transferring",
            DeviceState::Committed => "committed",
            DeviceState::Trial => "trial",
            DeviceState::Booted => "booted",
            DeviceState::Failed(Failure::Refused) => "failed_refused",
            DeviceState::Failed(Failure::BadDigest) => "failed_bad_digest",
            DeviceState::Failed(Failure::RolledBack) => "failed_rolled_back",
            DeviceState::Failed(Failure::Oversized) => "failed_oversized",
            DeviceState::Failed(Failure::Silent) => "failed_silent",
            DeviceState::Failed(Failure::Downgrade) => "failed_downgrade",
            DeviceState::Failed(Failure::RevokedKey) => "failed_revoked_key",
        }
    }

    /// Every state, in the order of the module documentation.
    pub const ALL: [DeviceState; 13] = [
        DeviceState::Waiting,
        DeviceState::Offered,
        DeviceState::Transferring,
        DeviceState::Committed,
        DeviceState::Trial,
        DeviceState::Booted,
        DeviceState::Failed(Failure::Refused),
        DeviceState::Failed(Failure::BadDigest),
        DeviceState::Failed(Failure::RolledBack),
        DeviceState::Failed(Failure::Oversized),
        DeviceState::Failed(Failure::Silent),
        DeviceState::Failed(Failure::Downgrade),
        DeviceState::Failed(Failure::RevokedKey),
    ];

    /// The state of an [`DeviceState::as_str`] label.
    pub fn parse(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == label)
    }

    /// Whether the device is done: booted on the new image or failed.
    pub fn settled(self) -> bool {
        matches!(self, DeviceState::Booted | DeviceState::Failed(_))
    }
}

/// A command for one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Send {
    /// The device id.
    pub device: String,
    /// The command.
    pub body: DownlinkBody,
    /// Whether it is sent again because the device did not answer within `resend_after`.
    pub resend: bool,
}

#[derive(Debug, Clone)]
struct Session {
    device: String,
    state: DeviceState,
    /// The image offset the device reported last.
    offset: u32,
    last: Option<DownlinkBody>,
    /// When the resend clock started: the last command, or the last answer needing none.
    sent_ms: u64,
    attempts: u32,
    /// When the last command went out: the next waits until `min_gap` after it.
    last_sent_ms: Option<u64>,
    /// The command answering the latest status, held until `min_gap` has passed.
    held: Option<DownlinkBody>,
}

/// Per-device progress, for `/metrics` and InfluxDB.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceProgress {
    /// The device id.
    pub device: String,
    /// Where it stands.
    pub state: DeviceState,
    /// Image bytes it holds.
    pub offset: u32,
}

/// The rollout. See the module documentation.
#[derive(Debug)]
pub struct Rollout {
    image: Vec<u8>,
    offer: FirmwareOffer,
    plan: Plan,
    sessions: Vec<Session>,
    index: HashMap<String, usize>,
    /// End (exclusive) of each wave in `sessions`.
    waves: Vec<usize>,
    started_waves: usize,
    paused: bool,
    /// `(due, session)` of every held command (and stale entries for ones sent or dropped
    /// since, skipped when they come up).
    held: BinaryHeap<Reverse<(u64, usize)>>,
}

/// Why a rollout cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    /// The signed image does not match the bytes, or its version is not a wire version.
    #[error("the signed image does not describe these bytes")]
    Mismatch,
    /// No devices.
    #[error("a rollout needs at least one device")]
    NoDevices,
}

impl Rollout {
    /// A rollout of `image` (signed as `signed`) to `devices`, in order (the first ones are the
    /// canaries).
    pub fn new(
        image: Vec<u8>,
        signed: &SignedImage,
        devices: Vec<String>,
        plan: Plan,
    ) -> Result<Self, RolloutError> {
        if devices.is_empty() {
            return Err(RolloutError::NoDevices);
        }
        let offer = FirmwareOffer {
            version: signed.version.as_str().try_into().map_err(|_| RolloutError::Mismatch)?,
            size: signed.size,
            sha256: FixedBytes(signed.sha256_bytes().ok_or(RolloutError::Mismatch)?),
            signature: FixedBytes(signed.signature_bytes().ok_or(RolloutError::Mismatch)?),
            security_counter: signed.security_counter,
            key_slot: signed.key_slot,
        };
        if image.len() != signed.size as usize {
            return Err(RolloutError::Mismatch);
        }
        let n = devices.len();
        let canaries = ((n as f64 * plan.canary_share).ceil() as usize).clamp(1, n);
        let mut waves = vec![canaries];
        while *waves.last().unwrap_or(&n) < n {
            let end = (waves.last().unwrap_or(&0) + plan.wave_size.max(1)).min(n);
            waves.push(end);
        }
        let index = devices.iter().enumerate().map(|(i, d)| (d.clone(), i)).collect();
        let sessions = devices
            .into_iter()
            .map(|device| Session {
                device,
                state: DeviceState::Waiting,
                offset: 0,
                last: None,
                sent_ms: 0,
                attempts: 0,
                last_sent_ms: None,
                held: None,
            })
            .collect();
        Ok(Rollout {
            image,
            offer,
            plan,
            sessions,
            index,
            waves,
            started_waves: 0,
            paused: false,
            held: BinaryHeap::new(),
        })
    }

    /// The offer every device gets.
    pub fn offer(&self) -> &FirmwareOffer {
        &self.offer
    }

    /// Lets time pass: sends the held commands whose time has come ([`Rollout::paced`]),
    /// starts the next wave when the last one settled (unless paused), and resends to devices
    /// that did not answer in time (failing those that never do).
    pub fn tick(&mut self, now_ms: u64) -> Vec<Send> {
        let mut out = self.paced(now_ms);
        // A wave whose devices all settled already (restored after a restart) starts and
        // ends at once, and the next one with it.
        loop {
            let started_end = self.started_waves.checked_sub(1).map_or(0, |w| self.waves[w]);
            let settled = self.sessions[..started_end].iter().all(|s| s.state.settled());
            if self.paused || !settled || self.started_waves >= self.waves.len() {
                break;
            }
            let end = self.waves[self.started_waves];
            self.started_waves += 1;
            for i in started_end..end {
                if self.sessions[i].state.settled() {
                    continue;
                }
                let body = DownlinkBody::FwOffer(self.offer.clone());
                self.sessions[i].state = DeviceState::Offered;
                out.extend(self.pace(i, body, now_ms));
            }
        }
        // Never sooner than `min_gap`: a resend draws a status like any command.
        let resend = self.plan.resend_after.max(self.plan.min_gap).as_millis() as u64;
        for i in 0..self.sessions.len() {
            let s = &self.sessions[i];
            if s.held.is_some() {
                // An answer is on its way, sooner than any resend.
                continue;
            }
            let waiting = matches!(
                s.state,
                DeviceState::Offered
                    | DeviceState::Transferring
                    | DeviceState::Committed
                    | DeviceState::Trial
            );
            if !waiting || now_ms < s.sent_ms + resend {
                continue;
            }
            if s.attempts >= self.plan.max_attempts {
                self.sessions[i].state = DeviceState::Failed(Failure::Silent);
                self.check_failures();
                continue;
            }
            // A committed device restarts and reports on its own; until it does, asking
            // again (with the offer) finds out where it stands.
            let body = match (&s.state, &s.last) {
                (DeviceState::Committed, _) | (_, None) => DownlinkBody::FwOffer(self.offer.clone()),
                (_, Some(last)) => last.clone(),
            };
            self.sessions[i].attempts += 1;
            let attempts = self.sessions[i].attempts;
            let mut send = self.send(i, body, now_ms);
            send.resend = true;
            out.push(send);
            self.sessions[i].attempts = attempts;
        }
        out
    }

    /// Sends the held commands whose time has come (`min_gap` after the device's previous
    /// command). Cheap: only the held ones are looked at, so a driver may call it at every
    /// [`Rollout::next_due`].
    pub fn paced(&mut self, now_ms: u64) -> Vec<Send> {
        let mut out = Vec::new();
        let gap = self.plan.min_gap.as_millis() as u64;
        if self.held.peek().is_some_and(|&Reverse((due, _))| due > now_ms.saturating_add(gap)) {
            // Every entry is more than a gap ahead: the wall clock stepped back. Counting the
            // gaps from now keeps them, where waiting for the clock to pass the old times
            // would stall these transfers for as long as the step (resends skip them too).
            let entries = std::mem::take(&mut self.held);
            for Reverse((_, i)) in entries {
                let due = self.next_allowed(i, now_ms);
                self.held.push(Reverse((due, i)));
            }
        }
        while let Some(&Reverse((due, i))) = self.held.peek() {
            if due > now_ms {
                break;
            }
            self.held.pop();
            let allowed = self.next_allowed(i, now_ms);
            if allowed > now_ms {
                // Only a stale entry can be early; keep the held command's own time.
                if self.sessions[i].held.is_some() {
                    self.held.push(Reverse((allowed, i)));
                }
                continue;
            }
            // `None`: a stale entry, its command sent or dropped since.
            let Some(body) = self.sessions[i].held.take() else { continue };
            out.push(self.send(i, body, now_ms));
        }
        out
    }

    /// When the earliest held command is due (Unix ms), if any is held.
    pub fn next_due(&self) -> Option<u64> {
        self.held.peek().map(|&Reverse((due, _))| due)
    }

    /// The earliest time session `i` may be sent its next command: `min_gap` after its last
    /// one. A last command later than `now_ms` (the wall clock stepped back since) counts as
    /// sent now, so the gap is kept in the new time instead of waiting out the step.
    fn next_allowed(&mut self, i: usize, now_ms: u64) -> u64 {
        let gap = self.plan.min_gap.as_millis() as u64;
        let last = &mut self.sessions[i].last_sent_ms;
        if last.is_some_and(|at| at > now_ms) {
            *last = Some(now_ms);
        }
        last.map_or(0, |at| at.saturating_add(gap))
    }

    /// Sends `body` to session `i` now, or holds it until `min_gap` after its last command
    /// (replacing a command already held: the latest status is the truth).
    fn pace(&mut self, i: usize, body: DownlinkBody, now_ms: u64) -> Option<Send> {
        let due = self.next_allowed(i, now_ms);
        if due <= now_ms {
            self.sessions[i].held = None;
            return Some(self.send(i, body, now_ms));
        }
        if self.sessions[i].held.replace(body).is_none() {
            self.held.push(Reverse((due, i)));
        }
        None
    }

    /// A device's `fw_status`; returns the command it needs next, if any.
    pub fn on_status(&mut self, device: &str, status: &FirmwareStatus, now_ms: u64) -> Option<Send> {
        let &i = self.index.get(device)?;
        let s = &mut self.sessions[i];
        if matches!(s.state, DeviceState::Waiting) || s.state.settled() {
            return None;
        }
        s.offset = status.offset;
        // Whatever it answers now replaces a command held for an earlier status.
        s.held = None;
        let ours = status.version == self.offer.version;
        let next = match (status.state, status.error) {
            (_, Some(UpdateError::Refused)) => Err(Failure::Refused),
            (_, Some(UpdateError::Downgrade)) => Err(Failure::Downgrade),
            (_, Some(UpdateError::RevokedKey)) => Err(Failure::RevokedKey),
            (_, Some(UpdateError::BadDigest)) => Err(Failure::BadDigest),
            (_, Some(UpdateError::Oversized)) if status.state != UpdateState::Receiving => {
                Err(Failure::Oversized)
            }
            (_, Some(UpdateError::SelfTestFailed)) | (UpdateState::RolledBack, _) => Err(Failure::RolledBack),
            // Busy with a fire: wait, the resend asks again later.
            (_, Some(UpdateError::Busy)) => return None,
            (UpdateState::Receiving, _) if ours && status.offset < self.offer.size => {
                s.state = DeviceState::Transferring;
                Ok(Some(chunk(&self.image, status.offset)))
            }
            (UpdateState::Receiving | UpdateState::Verified, _) if ours => {
                s.state = DeviceState::Committed;
                Ok(Some(DownlinkBody::FwCommit {}))
            }
            (UpdateState::Swapping, _) if ours => {
                s.state = DeviceState::Committed;
                Ok(None)
            }
            (UpdateState::Trial, _) if ours => {
                s.state = DeviceState::Trial;
                Ok(Some(DownlinkBody::FwConfirm {}))
            }
            (UpdateState::Booted, _) if ours => {
                s.state = DeviceState::Booted;
                Ok(None)
            }
            // Idle, or busy with another image: offer ours.
            _ => Ok(Some(DownlinkBody::FwOffer(self.offer.clone()))),
        };
        match next {
            Err(failure) => {
                self.sessions[i].state = DeviceState::Failed(failure);
                self.check_failures();
                None
            }
            Ok(None) => {
                let s = &mut self.sessions[i];
                s.sent_ms = now_ms;
                s.attempts = 0;
                None
            }
            Ok(Some(body)) => self.pace(i, body, now_ms),
        }
    }

    fn send(&mut self, i: usize, body: DownlinkBody, now_ms: u64) -> Send {
        let s = &mut self.sessions[i];
        s.last = Some(body.clone());
        s.sent_ms = now_ms;
        s.last_sent_ms = Some(now_ms);
        s.attempts = 0;
        Send { device: s.device.clone(), body, resend: false }
    }

    /// Devices failed, and devices settled (booted or failed).
    fn failed_of_settled(&self) -> (usize, usize) {
        let settled = self.sessions.iter().filter(|s| s.state.settled()).count();
        let failed = self.sessions.iter().filter(|s| matches!(s.state, DeviceState::Failed(_))).count();
        (failed, settled)
    }

    /// The failed share of the settled devices, which the rollout pauses itself above
    /// [`Plan::max_failure_share`]; 0 while none settled.
    pub fn failure_share(&self) -> f64 {
        match self.failed_of_settled() {
            (_, 0) => 0.0,
            (failed, settled) => failed as f64 / settled as f64,
        }
    }

    /// How it proceeds.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Called at each failure: pauses when the failed share of the settled devices is over
    /// the threshold.
    fn check_failures(&mut self) {
        let (failed, settled) = self.failed_of_settled();
        if settled > 0 && failed as f64 / settled as f64 > self.plan.max_failure_share && !self.paused {
            tracing::warn!(failed, settled, "Firmware rollout paused: failure share over its threshold.");
            self.paused = true;
        }
    }

    /// Carries over what a rollout of the same image learnt before a restart: the devices
    /// that settled (booted or failed) stay so and are not offered the image again, and a
    /// pause stays. Devices that were on their way start over with the offer, which their
    /// answer turns into the command they need next (module documentation). Unknown devices
    /// and unsettled states are ignored.
    pub fn restore(&mut self, settled: impl IntoIterator<Item = (String, DeviceState)>, paused: bool) {
        for (device, state) in settled {
            if let (Some(&i), true) = (self.index.get(&device), state.settled()) {
                self.sessions[i].state = state;
            }
        }
        self.paused = paused;
    }

    /// Pauses the rollout (an operator's decision): no new wave starts; devices already
    /// updating finish.
    pub fn pause(&mut self) {
        self.paused = true;
    }

    /// Resumes a paused rollout (an operator's decision). The failures stay counted: the next
    /// failure pauses it again unless the share has dropped under the threshold by then.
    pub fn resume(&mut self) {
        self.paused = false;
    }

    /// Whether it paused itself.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Whether every device settled.
    pub fn is_done(&self) -> bool {
        self.sessions.iter().all(|s| s.state.settled())
    }

    /// Waves started so far, of how many.
    pub fn waves(&self) -> (usize, usize) {
        (self.started_waves, self.waves.len())
    }

    /// Devices per state.
    pub fn counts(&self) -> HashMap<DeviceState, usize> {
        let mut out = HashMap::new();
        for s in &self.sessions {
            *out.entry(s.state).or_default() += 1;
        }
        out
    }

    /// Every device's progress.
    pub fn progress(&self) -> impl Iterator<Item = DeviceProgress> + '_ {
        self.sessions.iter().map(|s| DeviceProgress {
            device: s.device.clone(),
            state: s.state,
            offset: s.offset,
        })
    }
}

/// The chunk of `image` at `offset`: at most [`MAX_CHUNK`] bytes.
pub fn chunk(image: &[u8], offset: u32) -> DownlinkBody {
    let start = (offset as usize).min(image.len());
    let end = (start + MAX_CHUNK).min(image.len());
    let data = heapless::Vec::from_slice(&image[start..end]).expect("a chunk is at most MAX_CHUNK bytes");
    DownlinkBody::FwChunk(FirmwareChunk { offset, data: ChunkData(data) })
}
