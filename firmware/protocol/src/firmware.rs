//! Over-the-air firmware updates: the messages that carry a signed image from the gateway
//! into a device's update slot, and the status the device reports back.
//!
//! The transfer is four downlinks, each authenticated like every other command (HMAC-SHA-256
//! under the device key, current boot, replay window; [`crate::auth`]):
//!
//! - [`FirmwareOffer`] (`fw_offer`) announces an image: its version, size, SHA-256, the
//!   vendor's Ed25519 signature and the security counter and vendor key slot it covers. The
//!   device keeps the offer with the slot, so a transfer interrupted by a reset resumes where
//!   its flash says it stopped, and refuses at once an offer whose security counter is below
//!   its floor, or whose key slot is below its key floor (a revoked key).
//! - [`FirmwareChunk`] (`fw_chunk`) carries at most [`MAX_CHUNK`] bytes at an offset. The
//!   device takes only the chunk at the offset it reports next, so chunks are written in
//!   order, once each.
//! - `fw_commit` asks the device to check the whole slot against the offer's SHA-256 and
//!   request the swap; the bootloader verifies the Ed25519 signature before it swaps.
//! - `fw_abort` drops the transfer.
//! - `fw_confirm` answers a device running a new image on trial: the gateway hears it, so
//!   once its self-test passed the image marks itself good.
//!
//! The device answers every one of them with a [`FirmwareStatus`] (`fw_status`): which image
//! it is receiving, how far it got, what it is doing, and the last error.
//!
//! Byte strings ([`Digest`], [`Signature`], [`ChunkData`]) are written as lowercase hex in
//! JSON and as a varint length and raw bytes (postcard's byte-string encoding) in the compact
//! encoding; the authentication tag covers the compact form, as for every field.

use core::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::uplink::FirmwareVersion;

/// Most image bytes in one [`FirmwareChunk`].
///
/// Sized for the JSON encoding: 384 bytes are 768 hex digits, and with the envelope and the
/// tag a JSON chunk stays under [`crate::MAX_PAYLOAD`] (1,024 bytes; the README's size table
/// measures it). In the compact encoding a full chunk is about 420 bytes, a whole number of
/// the 4-byte flash words the slot is programmed in.
pub const MAX_CHUNK: usize = 384;

/// A byte string of exactly `N` bytes, hex in JSON, raw in compact.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FixedBytes<const N: usize>(pub [u8; N]);

/// The SHA-256 (FIPS 180-4) of a firmware image.
pub type Digest = FixedBytes<32>;

/// An Ed25519 signature (RFC 8032 §5.1.6) of a firmware image.
pub type Signature = FixedBytes<64>;

/// Up to [`MAX_CHUNK`] bytes of an image, hex in JSON, raw in compact.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ChunkData(pub heapless::Vec<u8, MAX_CHUNK>);

/// Lowercase hex of a byte string, written piece by piece (no buffer the size of the text).
struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl<const N: usize> fmt::Debug for FixedBytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Hex(&self.0))
    }
}

impl fmt::Debug for ChunkData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkData({} bytes)", self.0.len())
    }
}

fn serialize_bytes<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() { s.collect_str(&Hex(bytes)) } else { s.serialize_bytes(bytes) }
}

/// Reads a byte string of at most `N` bytes (exactly `N` when `exact`) into `out`.
struct BytesVisitor<const N: usize> {
    exact: bool,
}

impl<'de, const N: usize> Visitor<'de> for BytesVisitor<N> {
    type Value = heapless::Vec<u8, N>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a byte string of {} {N} bytes", if self.exact { "exactly" } else { "at most" })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let mut out = [0u8; N];
        let decoded = base16ct::mixed::decode(v, &mut out).map_err(|_| E::custom("not hexadecimal"))?;
        self.visit_bytes(decoded)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        if (self.exact && v.len() != N) || v.len() > N {
            return Err(E::invalid_length(v.len(), &self));
        }
        heapless::Vec::from_slice(v).map_err(|_| E::invalid_length(v.len(), &self))
    }
}

fn deserialize_bytes<'de, D: Deserializer<'de>, const N: usize>(
    d: D,
    exact: bool,
) -> Result<heapless::Vec<u8, N>, D::Error> {
    if d.is_human_readable() {
        d.deserialize_str(BytesVisitor::<N> { exact })
    } else {
        d.deserialize_bytes(BytesVisitor::<N> { exact })
    }
}

impl<const N: usize> Serialize for FixedBytes<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_bytes(&self.0, s)
    }
}

impl<'de, const N: usize> Deserialize<'de> for FixedBytes<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = deserialize_bytes::<D, N>(d, true)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&v);
        Ok(FixedBytes(out))
    }
}

impl Serialize for ChunkData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_bytes(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for ChunkData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_bytes::<D, MAX_CHUNK>(d, false).map(ChunkData)
    }
}

/// `fw_offer`: an image the gateway is about to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FirmwareOffer {
    /// The image's firmware version, as its heartbeats will report it.
    pub version: FirmwareVersion,
    /// The image's length in bytes (at least 1; at most the device's update slot).
    pub size: u32,
    /// SHA-256 of the whole image: the device checks the slot against it before it asks for
    /// the swap.
    pub sha256: Digest,
    /// The vendor's Ed25519 signature of [`signed_message`] (the version, the security
    /// counter and the image's SHA-512): the bootloader checks it against the public key it
    /// carries before it swaps, so neither the gateway nor the device key can install an
    /// unsigned image, nor relabel a signed one.
    pub signature: Signature,
    /// The image's security counter (anti-rollback): raised by the vendor for a release that
    /// fixes a vulnerability, and covered by the signature. A device refuses an image whose
    /// counter is below the highest it has marked good (`downgrade`); equal counters are
    /// accepted, so a release without a security fix can still be rolled back to.
    ///
    /// Added with manifest layout 2, in which the signature covers it. In the compact
    /// encoding it sits before the envelope's `auth`, so firmware older than layout 2 (whose
    /// bootloader verifies only layout-1 signatures and could not install such an image
    /// anyway) fails the offer's authentication and refuses it.
    pub security_counter: u32,
    /// The slot of the vendor key that signed the image, among the few the bootloader was
    /// built with ([`KEY_SLOTS`]): the bootloader verifies under that slot's
    /// key only. Covered by the signature. A device refuses an image whose slot is below its
    /// key floor (the highest slot of an image it marked good: `revoked_key`), and one whose
    /// slot it has no key for (`refused`).
    ///
    /// Added with manifest layout 3. Like the security counter it sits before the envelope's
    /// `auth` in the compact encoding, so layout-2 firmware (whose bootloader verifies only
    /// `FGFWSIG2` signatures) fails the offer's authentication and refuses it.
    pub key_slot: u8,
}

/// Vendor key slots a detector's bootloader holds: an offer's `key_slot` is below this.
/// `firegrid_boot::KEY_SLOTS` is this number, and says why three.
pub const KEY_SLOTS: usize = 3;

/// The domain of an image signature, and the manifest layout it belongs to: ASCII
/// `FGFWSIG3`. Layout 1 signed the bare SHA-512 of the image, which covered no version and
/// no security counter; layout 2 (`FGFWSIG2`) covered the version and the security counter
/// but no key slot. A signature of either does not verify as a layout-3 one.
pub const SIGNED_DOMAIN: [u8; 8] = *b"FGFWSIG3";

/// Bytes of [`signed_message`].
pub const SIGNED_MESSAGE_LEN: usize = 8 + 16 + 4 + 1 + 64;

/// The message the vendor's Ed25519 key signs for an image (manifest layout 3):
///
/// ```text
/// offset  bytes  field
///      0      8  SIGNED_DOMAIN, "FGFWSIG3"
///      8     16  version (ASCII, 0-padded: version_field)
///     24      4  security counter, little-endian
///     28      1  vendor key slot
///     29     64  SHA-512 (FIPS 180-4) of the image
/// ```
///
/// The security counter must be covered by the signature, or anyone who can deliver an
/// image could lower it and reinstall an old one: Trusted Firmware-M, "Rollback protection
/// in TF-M secure boot" (`docs/design_docs/booting/secure_boot_rollback_protection.rst`,
/// "Implementation of security counter"), which MCUboot implements as a protected TLV.
/// The version is covered so that a signed image cannot be relabelled either. The key slot
/// is covered so that the holder of a revoked key cannot relabel an image as signed by a
/// higher slot (it would not verify under that slot's key anyway), and so that no one can
/// relabel a good image as signed by a lower, revoked slot: the bootloader raises its key
/// floor to the slot of an image it marked good, and that slot must be the signer's own
/// (MCUboot names the key in the manifest too, by its hash in a protected TLV). The size
/// needs no field of its own: the SHA-512 is of exactly `size` bytes.
pub fn signed_message(
    version: &[u8; 16],
    security_counter: u32,
    key_slot: u8,
    sha512: &[u8; 64],
) -> [u8; SIGNED_MESSAGE_LEN] {
    let mut out = [0u8; SIGNED_MESSAGE_LEN];
    out[..8].copy_from_slice(&SIGNED_DOMAIN);
    out[8..24].copy_from_slice(version);
    out[24..28].copy_from_slice(&security_counter.to_le_bytes());
    out[28] = key_slot;
    out[29..].copy_from_slice(sha512);
    out
}

/// A firmware version as the manifest and [`signed_message`] hold it: its first 16 bytes,
/// 0-padded.
pub fn version_field(version: &str) -> [u8; 16] {
    let mut out = [0; 16];
    let n = version.len().min(16);
    out[..n].copy_from_slice(&version.as_bytes()[..n]);
    out
}

/// `fw_chunk`: image bytes at an offset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FirmwareChunk {
    /// Offset of the first byte in the image.
    pub offset: u32,
    /// 1 to [`MAX_CHUNK`] bytes.
    pub data: ChunkData,
}

/// What a device is doing with a firmware update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    /// No transfer: running its image, nothing offered.
    Idle,
    /// Receiving the offered image; `offset` is the next byte it expects.
    Receiving,
    /// The whole image is in the slot and matches the offer's SHA-256; waiting for `fw_commit`.
    Verified,
    /// The swap is requested: the device restarts into its bootloader, which verifies the
    /// signature and swaps.
    Swapping,
    /// Running the new image on trial (`version`): it marks itself good once its self-test
    /// passed and the gateway answered with `fw_confirm`; a reset before that swaps the
    /// previous image back.
    Trial,
    /// The new image passed its self-test, reached the gateway and marked itself good.
    /// `version` is the running image.
    Booted,
    /// The new image did not mark itself good: the device runs its previous image again.
    RolledBack,
}

impl UpdateState {
    /// A short, stable label for metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            UpdateState::Idle => "idle",
            UpdateState::Receiving => "receiving",
            UpdateState::Verified => "verified",
            UpdateState::Swapping => "swapping",
            UpdateState::Trial => "trial",
            UpdateState::Booted => "booted",
            UpdateState::RolledBack => "rolled_back",
        }
    }
}

/// Why a device refused a firmware command or failed an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateError {
    /// A chunk, commit or abort without a transfer in progress.
    NoOffer,
    /// A chunk not at the offset the device expects next (a duplicate, or a gap).
    OutOfOrder,
    /// An offer larger than the update slot, or a chunk past the offered size.
    Oversized,
    /// The received image does not match the offer's SHA-256 (a truncated or altered
    /// transfer).
    BadDigest,
    /// Writing the update slot failed.
    Flash,
    /// A commit before the whole image arrived, or a command the current state does not take
    /// (an offer while a new image runs on trial).
    BadState,
    /// The bootloader refused the image: its signature does not verify under the vendor key
    /// of the slot it names, or it names a slot the bootloader has no key for.
    Refused,
    /// The device is busy with a fire (alarm, pre-alarm, hush, drill, self-test, or an alarm
    /// message not yet acknowledged): firmware commands wait until it is back in standby.
    Busy,
    /// The new image failed its self-test on trial: the device restarts into the previous one.
    SelfTestFailed,
    /// The image's security counter is below the device's floor (the highest counter of an
    /// image it marked good): a downgrade to a release with a known vulnerability. Refused at
    /// the offer by the application, and at the swap by the bootloader, which checks the
    /// signed counter.
    Downgrade,
    /// The image is signed by a vendor key slot below the device's key floor (the highest
    /// slot of an image it marked good): the key was retired, presumably because it leaked.
    /// Refused at the offer by the application, and at the swap by the bootloader.
    RevokedKey,
}

impl UpdateError {
    /// A short, stable label for metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            UpdateError::NoOffer => "no_offer",
            UpdateError::OutOfOrder => "out_of_order",
            UpdateError::Oversized => "oversized",
            UpdateError::BadDigest => "bad_digest",
            UpdateError::Flash => "flash",
            UpdateError::BadState => "bad_state",
            UpdateError::Refused => "refused",
            UpdateError::Busy => "busy",
            UpdateError::SelfTestFailed => "self_test_failed",
            UpdateError::Downgrade => "downgrade",
            UpdateError::RevokedKey => "revoked_key",
        }
    }
}

/// `fw_status` (telemetry class: the next status supersedes it): a device's update progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FirmwareStatus {
    /// The image being received (or, once booted or rolled back, the running one).
    pub version: FirmwareVersion,
    /// What the device is doing.
    pub state: UpdateState,
    /// The next image byte it expects (the image size once all arrived).
    pub offset: u32,
    /// The last error, if the last firmware command failed.
    pub error: Option<UpdateError>,
}
