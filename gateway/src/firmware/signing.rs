//! The vendor's Ed25519 signing key and signed images.
//!
//! - [`keygen`] makes a key: 32 random bytes from the operating system (the Ed25519 seed,
//!   RFC 8032 §5.1.5), written as 64 hexadecimal digits to a new file of mode 0600. Its public
//!   half goes into the bootloader build. The seed never appears in a log line, a metric or an
//!   error message.
//! - [`sign_in_slot`] signs an image: the signature covers firegrid-protocol's
//!   `firmware::signed_message` (manifest layout 3: the version, the security counter, the
//!   vendor key slot and the image's SHA-512, what firegrid-boot's bootloader verifies), and
//!   the [`SignedImage`] carries the version, security counter, key slot, size, SHA-256
//!   (checked by the detector before it asks for the swap) and signature, as `fw_offer` sends
//!   them. [`SignedImage::save`] writes it as JSON beside the image (`IMAGE.fwsig.json`).
//! - [`VendorKeys`] are the public keys the bootloaders hold, by slot (`[firmware]
//!   vendor_public_keys`): a signed image is checked under the key of the slot it names.
//!
//! The **security counter** is the anti-rollback counter (Trusted Firmware-M, "Rollback
//! protection in TF-M secure boot", `docs/design_docs/booting/secure_boot_rollback_protection.rst`:
//! independent of the version, raised only by a release that fixes a vulnerability). A device
//! refuses an image whose counter is below the highest it has marked good, so the default, 0,
//! suits every release until the first security fix; from then on each release carries at
//! least the counter of the last one.
//!
//! The **key slot** names which of the bootloader's vendor keys signed the image
//! (`firmware::KEY_SLOTS` of them: the key in use and spares kept offline). A device that
//! marked an image of slot `n` good refuses every image of a lower slot, so signing with the
//! next slot retires the keys below it (firmware/boot README, "Key rotation").

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use firegrid_protocol::firmware;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};
use zeroize::Zeroize;

/// What signing can fail with. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// Reading or writing a file.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The key file does not hold 64 hexadecimal digits.
    #[error("{path}: not a firmware signing key (64 hexadecimal digits)")]
    BadKey {
        /// The file.
        path: PathBuf,
    },
    /// The version is empty, longer than 16 bytes or has a character outside printable ASCII.
    #[error("version {0:?}: 1 to 16 printable ASCII characters without spaces or quotes")]
    BadVersion(String),
    /// The image is empty or larger than a `u32` counts.
    #[error("an image of {0} bytes cannot be offered")]
    BadSize(usize),
    /// A key slot no bootloader holds.
    #[error("key slot {0}: the bootloader holds slots 0 to {max}", max = firmware::KEY_SLOTS - 1)]
    BadKeySlot(u8),
    /// A signed-image file that does not parse, or does not match its image.
    #[error("{path}: {reason}")]
    BadSignedImage {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SigningError + '_ {
    move |source| SigningError::Io { path: path.to_owned(), source }
}

/// Makes a new vendor signing key in `path` (which must not exist; mode 0600) and returns its
/// public key.
pub fn keygen(path: &Path) -> Result<VerifyingKey, SigningError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("the operating system's random generator failed");
    let key = SigningKey::from_bytes(&seed);
    let mut text = hex::encode(seed);
    seed.zeroize();
    text.push('\n');
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()));
    text.zeroize();
    written.map_err(io_error(path))?;
    Ok(key.verifying_key())
}

/// Reads a signing key written by [`keygen`].
pub fn load_key(path: &Path) -> Result<SigningKey, SigningError> {
    let mut text = fs::read_to_string(path).map_err(io_error(path))?;
    let mut seed = [0u8; 32];
    let parsed = hex::decode_to_slice(text.trim(), &mut seed);
    text.zeroize();
    if parsed.is_err() {
        seed.zeroize();
        return Err(SigningError::BadKey { path: path.to_owned() });
    }
    let key = SigningKey::from_bytes(&seed);
    seed.zeroize();
    Ok(key)
}

/// The vendor's Ed25519 public keys, by slot, as the detectors' bootloader is built with them
/// (at least one, at most `firmware::KEY_SLOTS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorKeys(Vec<VerifyingKey>);

impl VendorKeys {
    /// The keys of slots `0..keys.len()`; `None` when there are none or more than the
    /// bootloader holds.
    pub fn new(keys: Vec<VerifyingKey>) -> Option<Self> {
        (!keys.is_empty() && keys.len() <= firmware::KEY_SLOTS).then_some(VendorKeys(keys))
    }

    /// The key of `slot`, if configured.
    pub fn get(&self, slot: u8) -> Option<&VerifyingKey> {
        self.0.get(usize::from(slot))
    }

    /// How many slots are configured.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never: there is at least one key.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An image's offer, as `fw_offer` carries it; the signature covers the version, the security
/// counter, the key slot and the image's SHA-512.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedImage {
    /// Firmware version, as the new image's heartbeats report it.
    pub version: String,
    /// Anti-rollback security counter, covered by the signature. Absent in files written
    /// before manifest layout 2, which read as 0 (and whose signatures no longer verify).
    #[serde(default)]
    pub security_counter: u32,
    /// The slot of the vendor key that signed it, covered by the signature. Absent in files
    /// written before manifest layout 3, which read as 0 (and whose signatures no longer
    /// verify).
    #[serde(default)]
    pub key_slot: u8,
    /// Image length in bytes.
    pub size: u32,
    /// SHA-256 of the image, hex.
    pub sha256: String,
    /// Ed25519 signature of the signed message, hex.
    pub signature: String,
}

/// The message the vendor key of `key_slot` signs for `image` as `version` with
/// `security_counter`.
fn message(
    image: &[u8],
    version: &str,
    security_counter: u32,
    key_slot: u8,
) -> [u8; firmware::SIGNED_MESSAGE_LEN] {
    firmware::signed_message(
        &firmware::version_field(version),
        security_counter,
        key_slot,
        &Sha512::digest(image).into(),
    )
}

/// Signs `image` as `version` with `key`, security counter 0 (no security fix released yet).
pub fn sign(image: &[u8], version: &str, key: &SigningKey) -> Result<SignedImage, SigningError> {
    sign_with_counter(image, version, 0, key)
}

/// Signs `image` as `version` with anti-rollback `security_counter` and `key`, the key of
/// slot 0.
pub fn sign_with_counter(
    image: &[u8],
    version: &str,
    security_counter: u32,
    key: &SigningKey,
) -> Result<SignedImage, SigningError> {
    sign_in_slot(image, version, security_counter, 0, key)
}

/// Signs `image` as `version` with anti-rollback `security_counter` and `key`, the vendor key
/// of `key_slot`.
pub fn sign_in_slot(
    image: &[u8],
    version: &str,
    security_counter: u32,
    key_slot: u8,
    key: &SigningKey,
) -> Result<SignedImage, SigningError> {
    if usize::from(key_slot) >= firmware::KEY_SLOTS {
        return Err(SigningError::BadKeySlot(key_slot));
    }
    let valid = !version.is_empty()
        && version.len() <= 16
        && version.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'\\'));
    if !valid {
        return Err(SigningError::BadVersion(version.to_owned()));
    }
    let size =
        u32::try_from(image.len()).ok().filter(|&n| n > 0).ok_or(SigningError::BadSize(image.len()))?;
    let signature = key.sign(&message(image, version, security_counter, key_slot));
    Ok(SignedImage {
        version: version.to_owned(),
        security_counter,
        key_slot,
        size,
        sha256: hex::encode(Sha256::digest(image)),
        signature: hex::encode(signature.to_bytes()),
    })
}

/// Where the signed-image file of `image` lives.
pub fn signed_path(image: &Path) -> PathBuf {
    let mut name = image.as_os_str().to_owned();
    name.push(".fwsig.json");
    PathBuf::from(name)
}

impl SignedImage {
    /// Writes it beside `image`.
    pub fn save(&self, image: &Path) -> Result<PathBuf, SigningError> {
        let path = signed_path(image);
        let text = serde_json::to_string_pretty(self).expect("a signed image serializes");
        fs::write(&path, text + "\n").map_err(io_error(&path))?;
        Ok(path)
    }

    /// Reads the signed-image file beside `image` and checks it against the image's bytes
    /// (size, SHA-256) and, when given, the vendor public key of the slot it names.
    pub fn load(image: &Path, bytes: &[u8], vendor: Option<&VendorKeys>) -> Result<Self, SigningError> {
        let path = signed_path(image);
        let bad =
            |reason: &str| SigningError::BadSignedImage { path: path.clone(), reason: reason.to_owned() };
        let text = fs::read_to_string(&path).map_err(io_error(&path))?;
        let signed: SignedImage = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
        if signed.size as usize != bytes.len() || signed.sha256 != hex::encode(Sha256::digest(bytes)) {
            return Err(bad("does not match the image (size or SHA-256)"));
        }
        let signature =
            signed.signature_bytes().ok_or_else(|| bad("the signature is not 128 hexadecimal digits"))?;
        if let Some(vendor) = vendor {
            let slot = signed.key_slot;
            let key = vendor.get(slot).ok_or_else(|| {
                bad(&format!(
                    "signed by key slot {slot}, and [firmware] vendor_public_keys configures slots 0 to {}",
                    vendor.len() - 1
                ))
            })?;
            let signature = ed25519_dalek::Signature::from_bytes(&signature);
            key.verify_strict(&message(bytes, &signed.version, signed.security_counter, slot), &signature)
                .map_err(|_| {
                    bad(&format!("the signature does not verify under the vendor key of slot {slot}"))
                })?;
        }
        Ok(signed)
    }

    /// The SHA-256 as bytes.
    pub fn sha256_bytes(&self) -> Option<[u8; 32]> {
        let mut out = [0; 32];
        hex::decode_to_slice(&self.sha256, &mut out).ok().map(|()| out)
    }

    /// The signature as bytes.
    pub fn signature_bytes(&self) -> Option<[u8; 64]> {
        let mut out = [0; 64];
        hex::decode_to_slice(&self.signature, &mut out).ok().map(|()| out)
    }
}
