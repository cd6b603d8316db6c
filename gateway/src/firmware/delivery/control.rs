//! The rollout's two files in `{data_dir}/firmware/`: the **request** the operator's
//! `firegrid firmware publish/pause/resume` writes and the running gateway reloads
//! (`rollout.json`, beside the image it names), and the **progress** the gateway writes back
//! (`progress.json`), which `firegrid firmware status` reads and a restarted gateway resumes
//! from. The same mechanism as `firegrid devices rotate/revoke`, which edit the key store a
//! running gateway reloads: whoever may write the gateway's data directory may start a
//! rollout, and nothing listens on the network for it.
//!
//! Both files are written whole to a temporary file and renamed over the old one, so a
//! reader sees the old file or the new one, never half of one.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::firmware::rollout::{DeviceProgress, DeviceState, Plan, Rollout};
use crate::firmware::signing::{SignedImage, SigningError, VendorKeys};

/// The request file's name in the firmware directory.
pub const REQUEST: &str = "rollout.json";
/// The progress file's name in the firmware directory.
pub const PROGRESS: &str = "progress.json";

/// Where the rollout files of a gateway with data directory `data_dir` live.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("firmware")
}

/// What can go wrong with the rollout files. Never carries key material (there is none here:
/// the vendor key is public, the device keys stay in the key store).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The image's signed-image file is missing, does not match or does not verify.
    #[error(transparent)]
    Signing(#[from] SigningError),
    /// No vendor public key is configured, so no signature can be checked.
    #[error(
        "no vendor public key is configured ([firmware] vendor_public_keys, or vendor_public_key for slot 0 alone): refusing to roll out an image whose signature cannot be checked"
    )]
    NoVendorKey,
    /// A configured vendor key is not 64 hexadecimal digits of an Ed25519 public key.
    #[error("the vendor public key of slot {slot} is not an Ed25519 public key (64 hexadecimal digits)")]
    BadVendorKey {
        /// Its slot.
        slot: usize,
    },
    /// Both the one-key and the by-slot forms are configured: which is slot 0 would be a guess.
    #[error(
        "[firmware] sets both vendor_public_key and vendor_public_keys: keep vendor_public_keys (slot 0 first) and remove vendor_public_key"
    )]
    BothVendorKeyForms,
    /// More keys than a bootloader holds.
    #[error("[firmware] vendor_public_keys lists {0} keys; the detectors' bootloader holds {max}", max = firegrid_protocol::firmware::KEY_SLOTS)]
    TooManyVendorKeys(usize),
    /// A file that does not parse.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The request cannot be carried out as given.
    #[error("{0}")]
    Refused(String),
    /// The image's security counter is below the one last published: every device that
    /// installed that release refuses this one (anti-rollback), so it is refused here first.
    #[error(
        "{version} carries security counter {counter}, below the {published} of {published_version}, already published to the fleet: devices that installed it refuse this image as a downgrade; sign the release again with --security-counter {published} or higher"
    )]
    Downgrade {
        /// The image's version.
        version: String,
        /// Its security counter.
        counter: u32,
        /// The version last published.
        published_version: String,
        /// Its security counter.
        published: u32,
    },
    /// The image is signed by a key slot below the one last published: every device that
    /// installed that release raised its key floor and refuses this one (revoked key).
    #[error(
        "{version} is signed by key slot {slot}, below the slot {published} of {published_version}, already published to the fleet: devices that installed it have retired the keys below slot {published} and refuse this image (revoked_key); sign the release with --key-slot {published} or higher"
    )]
    RevokedKey {
        /// The image's version.
        version: String,
        /// Its key slot.
        slot: u8,
        /// The version last published.
        published_version: String,
        /// Its key slot.
        published: u8,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ControlError + '_ {
    move |source| ControlError::Io { path: path.to_owned(), source }
}

/// Parses the configured vendor public keys (hex), by slot: `by_slot` (`[firmware]
/// vendor_public_keys`), or `one` (`vendor_public_key`, the older form) as slot 0 alone.
/// Both at once are refused: a reader could not tell which is slot 0.
pub fn vendor_keys(one: Option<&str>, by_slot: Option<&[String]>) -> Result<VendorKeys, ControlError> {
    let texts: Vec<&str> = match (one, by_slot) {
        (Some(_), Some(_)) => return Err(ControlError::BothVendorKeyForms),
        (Some(one), None) => vec![one],
        (None, Some(list)) => list.iter().map(String::as_str).collect(),
        (None, None) => return Err(ControlError::NoVendorKey),
    };
    if texts.len() > firegrid_protocol::firmware::KEY_SLOTS {
        return Err(ControlError::TooManyVendorKeys(texts.len()));
    }
    let mut keys = Vec::with_capacity(texts.len());
    for (slot, text) in texts.into_iter().enumerate() {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| ControlError::BadVendorKey { slot })?;
        keys.push(VerifyingKey::from_bytes(&bytes).map_err(|_| ControlError::BadVendorKey { slot })?);
    }
    VendorKeys::new(keys).ok_or(ControlError::NoVendorKey)
}

/// A device a rollout goes to, with the village its topics are in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Village id.
    pub village: String,
    /// Device id.
    pub device: String,
}

/// How the rollout proceeds, as the request file writes [`Plan`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    /// Share of the devices in the first wave, 0 to 1.
    pub canary_share: f64,
    /// Devices per later wave.
    pub wave_size: usize,
    /// Failed share of the settled devices above which the rollout pauses itself.
    pub max_failure_share: f64,
    /// Milliseconds without an answer before the last command is sent again.
    pub resend_after_ms: u64,
    /// Sends without an answer before a device counts as failed.
    pub max_attempts: u32,
}

impl From<&PlanFile> for Plan {
    fn from(p: &PlanFile) -> Plan {
        Plan {
            canary_share: p.canary_share,
            wave_size: p.wave_size,
            max_failure_share: p.max_failure_share,
            resend_after: std::time::Duration::from_millis(p.resend_after_ms),
            max_attempts: p.max_attempts,
            // The running gateway sets it from its own admission settings.
            min_gap: Plan::default().min_gap,
        }
    }
}

impl From<&Plan> for PlanFile {
    fn from(p: &Plan) -> PlanFile {
        PlanFile {
            canary_share: p.canary_share,
            wave_size: p.wave_size,
            max_failure_share: p.max_failure_share,
            resend_after_ms: p.resend_after.as_millis() as u64,
            max_attempts: p.max_attempts,
        }
    }
}

/// The request file: one rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Identifies the rollout (the image's SHA-256 prefix and the publishing time); a request
    /// with a new id replaces the rollout, one with the same id only pauses or resumes it.
    pub id: String,
    /// The image file, in the firmware directory.
    pub image: String,
    /// Its signature and offer.
    pub signed: SignedImage,
    /// Who gets it, canaries first.
    pub devices: Vec<Target>,
    /// How.
    pub plan: PlanFile,
    /// Paused by the operator.
    pub paused: bool,
    /// How many times the operator resumed it; a higher number than the gateway has seen
    /// resumes a rollout that paused itself.
    pub resumes: u32,
}

impl Request {
    /// Reads the request in `dir`; `None` when there is none.
    pub fn load(dir: &Path) -> Result<Option<Request>, ControlError> {
        read_json(&dir.join(REQUEST))
    }

    /// Writes it into `dir` (atomically).
    pub fn save(&self, dir: &Path) -> Result<(), ControlError> {
        write_json(&dir.join(REQUEST), self)
    }

    /// Reads the image it names, and checks it against the signature and `vendor`.
    pub fn image(&self, dir: &Path, vendor: &VendorKeys) -> Result<Vec<u8>, ControlError> {
        let path = dir.join(&self.image);
        let bytes = fs::read(&path).map_err(io_error(&path))?;
        let checked = SignedImage::load(&path, &bytes, Some(vendor))?;
        if checked != self.signed {
            return Err(ControlError::Refused(format!(
                "{}: the request's signature is not the image's",
                path.display()
            )));
        }
        Ok(bytes)
    }
}

/// One device's line in the progress file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceLine {
    /// Device id.
    pub device: String,
    /// Its state ([`DeviceState::as_str`]).
    pub state: String,
    /// Image bytes it reported holding.
    pub offset: u32,
}

/// The progress file: where the rollout stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// The request's id.
    pub id: String,
    /// The image's version.
    pub version: String,
    /// Paused (by itself or by the operator).
    pub paused: bool,
    /// Every device settled.
    pub done: bool,
    /// Waves started, of how many.
    pub waves: (usize, usize),
    /// The request's `resumes` the gateway has acted on.
    pub resumes: u32,
    /// Devices per state.
    pub counts: BTreeMap<String, usize>,
    /// Every device.
    pub devices: Vec<DeviceLine>,
    /// When it was written, Unix ms.
    pub updated_ms: u64,
    /// The image's size in bytes: a device's `offset` of it is how far its transfer got.
    /// (This and the fields below default for a progress file written before they existed.)
    #[serde(default)]
    pub image_bytes: u32,
    /// Failed share of the settled devices above which the rollout pauses itself (the plan's).
    #[serde(default)]
    pub max_failure_share: f64,
    /// Failed share of the settled devices now; 0 while none settled.
    #[serde(default)]
    pub failure_share: f64,
    /// Why it is paused; `None` while it is not.
    #[serde(default)]
    pub paused_by: Option<PausedBy>,
}

/// Why a rollout is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PausedBy {
    /// The operator (`firegrid firmware pause`).
    Operator,
    /// The rollout itself: the failed share of the settled devices passed
    /// `max_failure_share`.
    Failures,
}

impl Progress {
    /// Where `rollout` (of request `id`) stands at `now_ms`; `operator_paused`: the request
    /// holds it paused (otherwise a pause is the rollout's own, over its failure share).
    pub fn of(
        id: &str,
        version: &str,
        rollout: &Rollout,
        resumes: u32,
        operator_paused: bool,
        now_ms: u64,
    ) -> Progress {
        let counts = rollout.counts().into_iter().map(|(state, n)| (state.as_str().to_owned(), n)).collect();
        let devices = rollout
            .progress()
            .map(|DeviceProgress { device, state, offset }| DeviceLine {
                device,
                state: state.as_str().to_owned(),
                offset,
            })
            .collect();
        Progress {
            id: id.to_owned(),
            version: version.to_owned(),
            paused: rollout.is_paused(),
            done: rollout.is_done(),
            waves: rollout.waves(),
            resumes,
            counts,
            devices,
            updated_ms: now_ms,
            image_bytes: rollout.offer().size,
            max_failure_share: rollout.plan().max_failure_share,
            failure_share: rollout.failure_share(),
            paused_by: match (rollout.is_paused(), operator_paused) {
                (false, _) => None,
                (true, true) => Some(PausedBy::Operator),
                (true, false) => Some(PausedBy::Failures),
            },
        }
    }

    /// Reads the progress in `dir`; `None` when there is none.
    pub fn load(dir: &Path) -> Result<Option<Progress>, ControlError> {
        read_json(&dir.join(PROGRESS))
    }

    /// Writes it into `dir` (atomically).
    pub fn save(&self, dir: &Path) -> Result<(), ControlError> {
        write_json(&dir.join(PROGRESS), self)
    }

    /// The devices that settled, for [`Rollout::restore`].
    pub fn settled(&self) -> impl Iterator<Item = (String, DeviceState)> + '_ {
        self.devices.iter().filter_map(|d| {
            let state = DeviceState::parse(&d.state).filter(|s| s.settled())?;
            Some((d.device.clone(), state))
        })
    }
}

/// What `firegrid firmware publish` asks for.
#[derive(Debug, Clone)]
pub struct Publish<'a> {
    /// The image file (its signed-image file beside it).
    pub image: &'a Path,
    /// Who gets it, canaries first.
    pub devices: Vec<Target>,
    /// How.
    pub plan: Plan,
    /// Replace a rollout that has not finished.
    pub replace: bool,
}

/// Starts a rollout: checks the image's signature under the key of the slot it names in
/// `vendor` (refusing an unsigned image, one signed by another key or an unconfigured slot,
/// or one whose signed-image file does not match it), its key slot against the last
/// published one (refusing a revoked key: the fleet's key floor, as far as this gateway
/// knows it) and its security counter against the last published one (refusing a
/// downgrade), copies the image into the firmware directory of `data_dir` and writes the
/// request the gateway reloads.
pub fn publish(
    data_dir: &Path,
    vendor: &VendorKeys,
    req: Publish<'_>,
    now_ms: u64,
) -> Result<Request, ControlError> {
    let bytes = fs::read(req.image).map_err(io_error(req.image))?;
    let sig = crate::firmware::signing::signed_path(req.image);
    if !sig.exists() {
        return Err(ControlError::Refused(format!(
            "{} is not signed: no {} beside it (sign it with `firegrid firmware sign`)",
            req.image.display(),
            sig.display()
        )));
    }
    let signed = SignedImage::load(req.image, &bytes, Some(vendor))?;
    if req.devices.is_empty() {
        return Err(ControlError::Refused("no devices to roll out to".into()));
    }
    if !(0.0..=1.0).contains(&req.plan.canary_share) || !(0.0..=1.0).contains(&req.plan.max_failure_share) {
        return Err(ControlError::Refused("canary and failure shares are between 0 and 1".into()));
    }
    // The rollout itself checks that the offer can be made (version, sizes).
    Rollout::new(
        bytes.clone(),
        &signed,
        req.devices.iter().map(|t| t.device.clone()).collect(),
        req.plan.clone(),
    )
    .map_err(|e| ControlError::Refused(e.to_string()))?;
    let dir = dir(data_dir);
    fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    // The last request holds the highest key slot and counter published: each publish refuses
    // a lower one. The slot first: a release of a retired key is refused whatever its counter.
    let last = Request::load(&dir)?;
    if let Some(old) = last.as_ref().filter(|old| signed.key_slot < old.signed.key_slot) {
        return Err(ControlError::RevokedKey {
            version: signed.version,
            slot: signed.key_slot,
            published_version: old.signed.version.clone(),
            published: old.signed.key_slot,
        });
    }
    if let Some(old) = last.as_ref().filter(|old| signed.security_counter < old.signed.security_counter) {
        return Err(ControlError::Downgrade {
            version: signed.version,
            counter: signed.security_counter,
            published_version: old.signed.version.clone(),
            published: old.signed.security_counter,
        });
    }
    if let (Some(old), false) = (last, req.replace) {
        let finished = Progress::load(&dir)?.is_some_and(|p| p.id == old.id && p.done);
        if !finished {
            return Err(ControlError::Refused(format!(
                "rollout {} has not finished (see `firegrid firmware status`); pass --replace to replace it",
                old.id
            )));
        }
    }
    let id = format!("{}-{now_ms}", &signed.sha256[..12]);
    let image = format!("{id}.bin");
    let path = dir.join(&image);
    write_atomically(&path, &bytes)?;
    signed.save(&path)?;
    let request = Request {
        id,
        image,
        signed,
        devices: req.devices,
        plan: PlanFile::from(&req.plan),
        paused: false,
        resumes: 0,
    };
    request.save(&dir)?;
    Ok(request)
}

/// Pauses (`true`) or resumes the rollout of the gateway with data directory `data_dir`.
pub fn set_paused(data_dir: &Path, paused: bool) -> Result<Request, ControlError> {
    let dir = dir(data_dir);
    let mut request =
        Request::load(&dir)?.ok_or_else(|| ControlError::Refused("no rollout has been published".into()))?;
    if !paused {
        request.resumes += 1;
    }
    request.paused = paused;
    request.save(&dir)?;
    Ok(request)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, ControlError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path)(e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ControlError::Invalid { path: path.to_owned(), reason: e.to_string() })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ControlError> {
    let mut text = serde_json::to_vec_pretty(value).expect("rollout files serialize");
    text.push(b'\n');
    write_atomically(path, &text)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ControlError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = fs::File::create(&tmp).and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()));
    written.map_err(io_error(&tmp))?;
    fs::rename(&tmp, path).map_err(io_error(path))
}
