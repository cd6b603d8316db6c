//! Message authentication: every uplink proves which device sent it, every downlink proves
//! the gateway sent it, and a captured command cannot be played back.
//!
//! **Construction.** HMAC-SHA-256 ([RFC 2104], [FIPS 180-4]) with a 256-bit key per device,
//! truncated to its leftmost 128 bits ([RFC 2104] §5, [NIST SP 800-107r1] §5.3.4: a 128-bit
//! tag leaves a forger a 2⁻¹²⁸ chance per try). The RustCrypto `hmac` and `sha2` crates do
//! the work; the tag is compared in constant time (`Mac::verify_truncated_left`). HMAC was
//! chosen over AES-CMAC because SHA-256 is the one primitive every detector SDK, carrier
//! platform and scripting language already has, and over an AEAD because the payloads are
//! not secret (a smoke reading is not worth hiding, and NB-IoT carriers already encrypt the
//! radio link) while every byte costs battery: a tag adds 17 bytes to a compact message and
//! nothing else changes, so a vendor adds one function to existing firmware.
//!
//! **What is signed.** The tag covers the postcard (compact) encoding of a tuple that starts
//! with a domain string (so an uplink tag can never pass for a downlink tag), then the
//! topic's village and device and every field of the message but the tag itself. The same
//! bytes result whatever encoding carried the message, so JSON and compact messages are
//! signed alike, and a message moved to another village's or device's topic fails.
//!
//! **Replay.** Uplinks carry `(boot, seq)`, which the gateway's replay window checks once the
//! tag is good. Downlinks carry the device's current boot counter and the gateway's command
//! `seq`; a device accepts a command only for its current boot and only once within a window
//! of recent sequence numbers ([`DownlinkGuard`]), so a command recorded earlier, or before
//! the device last restarted, is refused.
//!
//! [RFC 2104]: https://www.rfc-editor.org/rfc/rfc2104
//! [FIPS 180-4]: https://csrc.nist.gov/pubs/fips/180-4/upd1/final
//! [NIST SP 800-107r1]: https://csrc.nist.gov/pubs/sp/800/107/r1/final

use core::fmt;

use hmac::{Hmac, KeyInit, Mac};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;
use zeroize::Zeroize;

use crate::downlink::Downlink;
use crate::id::{DeviceId, VillageId};
use crate::uplink::Uplink;

/// Length of a device key in bytes (256 bits, the HMAC-SHA-256 block-size-independent
/// strength of SHA-256).
pub const KEY_LEN: usize = 32;
/// Length of a message tag in bytes (HMAC-SHA-256 truncated to 128 bits).
pub const TAG_LEN: usize = 16;

/// Domain string that starts every signed uplink.
pub const UPLINK_DOMAIN: &str = "firegrid/up/v2";
/// Domain string that starts every signed downlink.
pub const DOWNLINK_DOMAIN: &str = "firegrid/down/v2";
/// What a device's MQTT password is derived from ([`DeviceKey::mqtt_password`]).
pub const MQTT_PASSWORD_DOMAIN: &str = "firegrid/mqtt-password/v1";

/// A device's secret key. Wiped from memory when dropped; `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceKey([u8; KEY_LEN]);

impl DeviceKey {
    /// A key from its bytes.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        DeviceKey(bytes)
    }

    /// A key from 64 hexadecimal digits (either case), as provisioning files hold it.
    pub fn from_hex(hex: &str) -> Result<Self, KeyError> {
        let mut bytes = [0u8; KEY_LEN];
        match base16ct::mixed::decode(hex, &mut bytes) {
            Ok(b) if b.len() == KEY_LEN => Ok(DeviceKey(bytes)),
            _ => {
                bytes.zeroize();
                Err(KeyError)
            }
        }
    }

    /// The key's bytes. Secret: for writing a key store or a provisioning file, never for a
    /// log line.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    fn mac(&self) -> Hmac<Sha256> {
        hmac_with(&self.0)
    }

    /// The device's MQTT password: the first 16 bytes of HMAC-SHA-256 under its key of the
    /// bytes `firegrid/mqtt-password/v1`, as 32 lowercase hexadecimal digits. Derived, so the
    /// factory provisions one secret per device, and the broker's password file (which holds
    /// only a hash of it) never reveals the key. Secret like the key.
    pub fn mqtt_password(&self) -> heapless::String<32> {
        let mut mac = self.mac();
        mac.update(MQTT_PASSWORD_DOMAIN.as_bytes());
        let tag = tag_of(mac);
        let mut buf = [0u8; 2 * TAG_LEN];
        let hex = base16ct::lower::encode_str(&tag.0, &mut buf).expect("32 digits fit");
        heapless::String::try_from(hex).expect("32 digits fit")
    }
}

impl Drop for DeviceKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceKey(redacted)")
    }
}

/// A key was not 64 hexadecimal digits. Says nothing about the text, which may be secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a device key must be 64 hexadecimal digits")]
pub struct KeyError;

/// A message authentication tag: JSON writes it as 32 lowercase hexadecimal digits, the
/// compact encoding as 16 raw bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tag(pub [u8; TAG_LEN]);

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 2 * TAG_LEN];
        let hex = base16ct::lower::encode_str(&self.0, &mut buf).map_err(|_| fmt::Error)?;
        write!(f, "Tag({hex})")
    }
}

impl Serialize for Tag {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            let mut buf = [0u8; 2 * TAG_LEN];
            let hex = base16ct::lower::encode_str(&self.0, &mut buf).map_err(serde::ser::Error::custom)?;
            s.serialize_str(hex)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Tag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Hex;
        impl Visitor<'_> for Hex {
            type Value = Tag;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("32 hexadecimal digits")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Tag, E> {
                let mut out = [0u8; TAG_LEN];
                match base16ct::mixed::decode(v, &mut out) {
                    Ok(b) if b.len() == TAG_LEN => Ok(Tag(out)),
                    _ => Err(E::custom("a tag is 32 hexadecimal digits")),
                }
            }
        }
        if d.is_human_readable() { d.deserialize_str(Hex) } else { <[u8; TAG_LEN]>::deserialize(d).map(Tag) }
    }
}

/// Why a message's authentication failed. Every variant maps to one stable
/// [`AuthError::reason`] label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The message carries no tag, and the receiver requires one.
    #[error("message is not signed")]
    Unsigned,
    /// The tag does not match the message and the key.
    #[error("message signature does not verify")]
    BadTag,
    /// A downlink for another boot of the device (recorded before it last restarted).
    #[error("command was issued for another boot of this device")]
    WrongBoot,
    /// A downlink whose sequence number was already accepted, or is too old to tell.
    #[error("command was already received, or is too old")]
    Replayed,
}

impl AuthError {
    /// A short, stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Unsigned => "unsigned",
            AuthError::BadTag => "bad_signature",
            AuthError::WrongBoot => "wrong_boot",
            AuthError::Replayed => "replayed_command",
        }
    }
}

/// A postcard output that feeds an HMAC instead of a buffer, so signing needs no memory for
/// the encoded message.
struct MacFlavor(Hmac<Sha256>);

impl postcard::ser_flavors::Flavor for MacFlavor {
    type Output = Hmac<Sha256>;

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.update(&[data]);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.update(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Self::Output> {
        Ok(self.0)
    }
}

fn hmac_with(key: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// The HMAC state after absorbing the postcard encoding of `what`.
fn absorb<T: Serialize>(mac: Hmac<Sha256>, what: &T) -> Hmac<Sha256> {
    // Encoding into a hasher cannot run out of space, and every field type serializes.
    postcard::serialize_with_flavor(what, MacFlavor(mac)).expect("postcard encodes into an HMAC")
}

fn tag_of(mac: Hmac<Sha256>) -> Tag {
    let full = mac.finalize().into_bytes();
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&full[..TAG_LEN]);
    Tag(tag)
}

fn verify(mac: Hmac<Sha256>, tag: Option<&Tag>) -> Result<(), AuthError> {
    let tag = tag.ok_or(AuthError::Unsigned)?;
    mac.verify_truncated_left(&tag.0).map_err(|_| AuthError::BadTag)
}

impl Uplink {
    /// The signed bytes: `(UPLINK_DOMAIN, village, v, dev, boot, seq, ts_ms, body)`. `dev`
    /// equals the topic's device level (receivers check that before verifying).
    fn signed<'a>(&'a self, village: &'a VillageId) -> impl Serialize + 'a {
        (UPLINK_DOMAIN, village.as_str(), self.v, &self.dev, self.boot, self.seq, self.ts_ms, &self.body)
    }

    /// The tag this message should carry on `village`'s topics under `key`.
    pub fn tag(&self, village: &VillageId, key: &DeviceKey) -> Tag {
        let signed = absorb(key.mac(), &self.signed(village));
        tag_of(signed)
    }

    /// Signs the message for `village`: sets [`Uplink::mac`].
    pub fn sign(&mut self, village: &VillageId, key: &DeviceKey) {
        self.mac = Some(self.tag(village, key));
    }

    /// Whether the message carries a tag (good or not).
    pub fn is_signed(&self) -> bool {
        self.mac.is_some()
    }

    /// Checks the message's tag in constant time. Says nothing about replay: the receiver's
    /// window does that, and must be moved only by messages that passed this check.
    pub fn verify(&self, village: &VillageId, key: &DeviceKey) -> Result<(), AuthError> {
        verify(absorb(key.mac(), &self.signed(village)), self.mac.as_ref())
    }
}

/// The authentication part of a [`Downlink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownlinkAuth {
    /// The device's boot counter the command is meant for (the gateway takes it from the
    /// device's latest authenticated uplink).
    pub boot: u16,
    /// The tag.
    pub mac: Tag,
}

impl Downlink {
    /// The signed bytes: `(DOWNLINK_DOMAIN, village, device, v, seq, ts_ms, body, boot)`.
    fn signed<'a>(&'a self, village: &'a VillageId, device: &'a DeviceId, boot: u16) -> impl Serialize + 'a {
        (DOWNLINK_DOMAIN, village.as_str(), device.as_str(), self.v, self.seq, self.ts_ms, &self.body, boot)
    }

    /// Signs the command for `device` of `village` in its boot `boot`.
    pub fn sign(&mut self, village: &VillageId, device: &DeviceId, boot: u16, key: &DeviceKey) {
        let mac = tag_of(absorb(key.mac(), &self.signed(village, device, boot)));
        self.auth = Some(DownlinkAuth { boot, mac });
    }

    /// Checks the command's tag in constant time and returns the boot it was issued for.
    pub fn verify(&self, village: &VillageId, device: &DeviceId, key: &DeviceKey) -> Result<u16, AuthError> {
        let auth = self.auth.as_ref().ok_or(AuthError::Unsigned)?;
        verify(absorb(key.mac(), &self.signed(village, device, auth.boot)), Some(&auth.mac))?;
        Ok(auth.boot)
    }
}

/// A device's defence against forged and replayed commands: checks each downlink's tag, that
/// it was issued for the device's current boot, and that its `seq` was not accepted before.
///
/// `seq` values are remembered in a sliding window of the highest accepted one and the
/// [`DownlinkGuard::WINDOW`] below it (the anti-replay window of RFC 4303 §3.4.3), so
/// commands that the broker delivers slightly out of order are still accepted once each.
/// The window lives in RAM: after a restart the boot counter has moved on, and every command
/// recorded before it is refused as [`AuthError::WrongBoot`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownlinkGuard {
    /// Highest accepted `seq`, if any this boot.
    top: Option<u32>,
    /// Bit `i` set: `top - 1 - i` was accepted.
    below: u64,
}

impl DownlinkGuard {
    /// How many sequence numbers below the highest accepted one are still told apart.
    pub const WINDOW: u32 = 64;

    /// A guard that has accepted nothing.
    pub const fn new() -> Self {
        DownlinkGuard { top: None, below: 0 }
    }

    /// Authenticates `cmd` for this device (`village`, `device`, current boot `boot`) and, only
    /// when it passes, records its `seq`.
    pub fn admit(
        &mut self,
        cmd: &Downlink,
        village: &VillageId,
        device: &DeviceId,
        boot: u16,
        key: &DeviceKey,
    ) -> Result<(), AuthError> {
        let issued_for = cmd.verify(village, device, key)?;
        if issued_for != boot {
            return Err(AuthError::WrongBoot);
        }
        self.record(cmd.seq)
    }

    fn record(&mut self, seq: u32) -> Result<(), AuthError> {
        let Some(top) = self.top else {
            self.top = Some(seq);
            return Ok(());
        };
        if seq > top {
            let shift = seq - top;
            // The old top becomes bit `shift - 1`.
            self.below = if shift > Self::WINDOW { 0 } else { ((self.below << 1) | 1) << (shift - 1) };
            self.top = Some(seq);
            return Ok(());
        }
        let back = top - seq;
        if back == 0 || back > Self::WINDOW {
            return Err(AuthError::Replayed);
        }
        let bit = 1u64 << (back - 1);
        if self.below & bit != 0 {
            return Err(AuthError::Replayed);
        }
        self.below |= bit;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 §4.6, test case 5: HMAC-SHA-256 truncated to 128 bits. A `[u8; N]` encodes
    /// as its N raw bytes in postcard, so this checks the hashing path the messages take.
    #[test]
    fn truncated_hmac_matches_rfc_4231() {
        let tag = tag_of(absorb(hmac_with(&[0x0c; 20]), b"Test With Truncation"));
        let expected: [u8; 16] =
            [0xa3, 0xb6, 0x16, 0x74, 0x73, 0x10, 0x0e, 0xe0, 0x6e, 0x0c, 0x79, 0x6c, 0x29, 0x55, 0x55, 0x2b];
        assert_eq!(tag.0, expected);
        assert_eq!(verify(absorb(hmac_with(&[0x0c; 20]), b"Test With Truncation"), Some(&tag)), Ok(()));
        let mut bad = tag;
        bad.0[15] ^= 1;
        assert_eq!(
            verify(absorb(hmac_with(&[0x0c; 20]), b"Test With Truncation"), Some(&bad)),
            Err(AuthError::BadTag)
        );
    }

    #[test]
    fn guard_accepts_each_seq_once_within_its_window() {
        let mut g = DownlinkGuard::new();
        assert_eq!(g.record(10), Ok(()));
        assert_eq!(g.record(10), Err(AuthError::Replayed));
        assert_eq!(g.record(12), Ok(()));
        assert_eq!(g.record(11), Ok(()), "late but unseen");
        assert_eq!(g.record(11), Err(AuthError::Replayed));
        assert_eq!(g.record(10), Err(AuthError::Replayed), "the old top stays remembered");
        assert_eq!(g.record(12 + 64), Ok(()));
        assert_eq!(g.record(12), Err(AuthError::Replayed), "exactly WINDOW below the top is still known");
        assert_eq!(g.record(11), Err(AuthError::Replayed), "beyond the window counts as replayed");
        assert_eq!(g.record(200), Ok(()));
        assert_eq!(g.record(199), Ok(()));
    }

    #[test]
    fn keys_parse_from_hex_and_never_print() {
        let hex = "000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F";
        let key = DeviceKey::from_hex(hex).unwrap();
        assert_eq!(key.expose()[31], 0x1f);
        assert_eq!(format!("{key:?}"), "DeviceKey(redacted)");
        assert_eq!(DeviceKey::from_hex(&hex[..62]), Err(KeyError));
        assert_eq!(DeviceKey::from_hex(&hex.replace('0', "g")), Err(KeyError));
    }
}
