//! The two encodings and the decode entry points.
//!
//! **JSON** is what third-party devices and people debugging with `mosquitto_sub` read and
//! write. **Compact** is [postcard](https://docs.rs/postcard): serde-native (the same
//! derives as JSON, so the two encodings cannot drift apart), `no_std` without an allocator,
//! a documented and frozen 1.0 wire format, varint integers and no field names, which puts
//! an alarm message near 30 bytes, small enough for one NB-IoT datagram. CBOR via minicbor
//! was the alternative; it is self-describing but needs its own derive attributes on every
//! field, a second definition of the schema to keep in step.
//!
//! Postcard is not self-describing, so compact-encoding evolution follows two rules:
//! variants of an enum are only appended, and new fields are only appended at the end of a
//! message (a decoder ignores trailing bytes, so an older gateway reads a newer device's
//! message). JSON decoders ignore unknown fields. In both encodings an unknown message kind
//! is an error, [`Error::UnknownKind`].

use core::fmt;

use serde::de::{self, DeserializeOwned, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::downlink::{Downlink, DownlinkKind};
use crate::error::{EncodeError, Error};
use crate::uplink::{Uplink, UplinkKind};
use crate::validate::Limits;

/// Largest payload a decoder accepts by default, in bytes.
///
/// The largest message this schema defines (a JSON camera event with a 96-byte snapshot
/// reference and 32-byte ids) is under 300 bytes; 1 KiB leaves room for fields that newer
/// firmware adds while bounding the work a hostile sender can cause.
pub const MAX_PAYLOAD: usize = 1024;

/// The longest string any message holds; the JSON decoder unescapes into a buffer this big.
const UNESCAPE_BUF: usize = 128;

/// A wire encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// UTF-8 JSON object.
    Json,
    /// postcard binary.
    Compact,
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encoding::Json => "JSON",
            Encoding::Compact => "compact",
        })
    }
}

impl Encoding {
    /// Tells the encodings apart by the first byte that is not JSON whitespace: a JSON
    /// message is an object and starts with `{` (0x7B); a compact message starts with its
    /// schema version, a small number (1 today), so the two can never be confused until
    /// version 123.
    pub fn detect(payload: &[u8]) -> Encoding {
        match payload.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n')) {
            Some(b'{') => Encoding::Json,
            _ => Encoding::Compact,
        }
    }

    /// Encodes `msg` into `buf` and returns the used part.
    fn encode<'b, T: Serialize>(self, msg: &T, buf: &'b mut [u8]) -> Result<&'b [u8], EncodeError> {
        match self {
            Encoding::Json => {
                let n = serde_json_core::to_slice(msg, buf).map_err(|_| EncodeError)?;
                Ok(&buf[..n])
            }
            Encoding::Compact => Ok(postcard::to_slice(msg, buf).map_err(|_| EncodeError)?),
        }
    }

    /// Decodes a whole message, or classifies why it cannot be decoded.
    fn decode<T: DeserializeOwned, P: Probe>(self, payload: &[u8], limits: &Limits) -> Result<T, Error> {
        if payload.len() > limits.max_payload {
            return Err(Error::TooLarge { len: payload.len(), max: limits.max_payload });
        }
        let decoded = match self {
            Encoding::Json => {
                let mut unescape = [0u8; UNESCAPE_BUF];
                serde_json_core::from_slice_escaped::<T>(payload, &mut unescape).map(|(msg, _)| msg).ok()
            }
            Encoding::Compact => postcard::from_bytes::<T>(payload).ok(),
        };
        match decoded {
            Some(msg) => Ok(msg),
            None => Err(P::classify(self, payload)),
        }
    }
}

/// Works out why a payload failed to decode: a version or a kind this build does not know
/// is worth its own error (and metric), everything else is [`Error::Malformed`].
trait Probe {
    fn classify(encoding: Encoding, payload: &[u8]) -> Error;
}

/// The first key of a JSON object, with its value skipped.
struct FirstKey<'a>(&'a str);

impl<'de: 'a, 'a> Deserialize<'de> for FirstKey<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(core::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = FirstKey<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object with one key")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FirstKey<'a>, A::Error> {
                let key: &'de str = map.next_key()?.ok_or_else(|| de::Error::custom("empty body"))?;
                map.next_value::<IgnoredAny>()?;
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(FirstKey(key))
            }
        }
        d.deserialize_map(V(core::marker::PhantomData))
    }
}

/// The version and the body's kind name of a JSON message, everything else ignored.
#[derive(Deserialize)]
struct JsonProbe<'a> {
    v: u8,
    #[serde(borrow)]
    body: FirstKey<'a>,
}

fn classify_json(payload: &[u8], known: fn(&str) -> bool) -> Error {
    let Ok((probe, _)) = serde_json_core::from_slice::<JsonProbe>(payload) else {
        return Error::Malformed { encoding: Encoding::Json };
    };
    if probe.v == 0 || probe.v > crate::SCHEMA_VERSION {
        Error::UnsupportedVersion { version: probe.v }
    } else if !known(probe.body.0) {
        Error::UnknownKind
    } else {
        Error::Malformed { encoding: Encoding::Json }
    }
}

fn classify_compact(version: Option<u8>, tag: Option<u32>, kinds: usize) -> Error {
    match (version, tag) {
        (Some(v), _) if v == 0 || v > crate::SCHEMA_VERSION => Error::UnsupportedVersion { version: v },
        (Some(_), Some(t)) if t as usize >= kinds => Error::UnknownKind,
        _ => Error::Malformed { encoding: Encoding::Compact },
    }
}

/// An uplink's header and body tag in the compact encoding (the tag is a varint, like u32).
#[derive(Deserialize)]
struct CompactUplinkProbe {
    #[allow(dead_code)]
    header: (u8, crate::id::DeviceId, u16, u32, u64),
    tag: u32,
}

impl Probe for Uplink {
    fn classify(encoding: Encoding, payload: &[u8]) -> Error {
        match encoding {
            Encoding::Json => classify_json(payload, |k| UplinkKind::from_name(k).is_some()),
            Encoding::Compact => {
                let probe = postcard::from_bytes::<CompactUplinkProbe>(payload).ok();
                classify_compact(payload.first().copied(), probe.map(|p| p.tag), UplinkKind::ALL.len())
            }
        }
    }
}

/// A downlink's header and body tag in the compact encoding.
#[derive(Deserialize)]
struct CompactDownlinkProbe {
    #[allow(dead_code)]
    header: (u8, u32, u64),
    tag: u32,
}

impl Probe for Downlink {
    fn classify(encoding: Encoding, payload: &[u8]) -> Error {
        match encoding {
            Encoding::Json => classify_json(payload, |k| DownlinkKind::from_name(k).is_some()),
            Encoding::Compact => {
                let probe = postcard::from_bytes::<CompactDownlinkProbe>(payload).ok();
                classify_compact(payload.first().copied(), probe.map(|p| p.tag), DownlinkKind::ALL.len())
            }
        }
    }
}

/// A compact version-1 uplink: the version-2 fields without the trailing tag.
#[derive(Deserialize)]
struct UplinkV1 {
    v: u8,
    dev: crate::id::DeviceId,
    boot: u16,
    seq: u32,
    ts_ms: u64,
    body: crate::uplink::UplinkBody,
}

/// A compact version-1 downlink.
#[derive(Deserialize)]
struct DownlinkV1 {
    v: u8,
    seq: u32,
    ts_ms: u64,
    body: crate::downlink::DownlinkBody,
}

impl Uplink {
    /// Encodes the message into `buf`, returning the bytes written.
    pub fn encode<'b>(&self, encoding: Encoding, buf: &'b mut [u8]) -> Result<&'b [u8], EncodeError> {
        encoding.encode(self, buf)
    }

    /// Decodes a payload in a known encoding without range checks. Use [`Uplink::receive`]
    /// for untrusted input.
    pub fn decode(payload: &[u8], encoding: Encoding, limits: &Limits) -> Result<Self, Error> {
        let msg = match encoding.decode::<Uplink, Uplink>(payload, limits) {
            Ok(msg) => msg,
            // A compact version-1 message ends before the tag that version 2 appended.
            Err(e @ Error::Malformed { .. }) if payload.first() == Some(&1) => {
                let v1 = postcard::from_bytes::<UplinkV1>(payload).map_err(|_| e)?;
                Uplink {
                    v: v1.v,
                    dev: v1.dev,
                    boot: v1.boot,
                    seq: v1.seq,
                    ts_ms: v1.ts_ms,
                    body: v1.body,
                    mac: None,
                }
            }
            Err(e) => return Err(e),
        };
        crate::validate::check_version(msg.v)?;
        Ok(msg)
    }

    /// Everything a receiver does with an untrusted payload: detects the encoding, decodes
    /// within `limits`, and validates. The device clock is judged separately
    /// ([`Uplink::clock_skew`]), since a wrong clock does not make a message invalid.
    pub fn receive(payload: &[u8], limits: &Limits) -> Result<Self, Error> {
        let msg = Self::decode(payload, Encoding::detect(payload), limits)?;
        msg.validate()?;
        Ok(msg)
    }
}

impl Downlink {
    /// Encodes the command into `buf`, returning the bytes written.
    pub fn encode<'b>(&self, encoding: Encoding, buf: &'b mut [u8]) -> Result<&'b [u8], EncodeError> {
        encoding.encode(self, buf)
    }

    /// Decodes a payload in a known encoding without range checks. Use
    /// [`Downlink::receive`] for untrusted input.
    pub fn decode(payload: &[u8], encoding: Encoding, limits: &Limits) -> Result<Self, Error> {
        let msg = match encoding.decode::<Downlink, Downlink>(payload, limits) {
            Ok(msg) => msg,
            Err(e @ Error::Malformed { .. }) if payload.first() == Some(&1) => {
                let v1 = postcard::from_bytes::<DownlinkV1>(payload).map_err(|_| e)?;
                Downlink { v: v1.v, seq: v1.seq, ts_ms: v1.ts_ms, body: v1.body, auth: None }
            }
            Err(e) => return Err(e),
        };
        crate::validate::check_version(msg.v)?;
        Ok(msg)
    }

    /// Detects the encoding, decodes and validates a command, as a device does on receipt.
    pub fn receive(payload: &[u8], limits: &Limits) -> Result<Self, Error> {
        let msg = Self::decode(payload, Encoding::detect(payload), limits)?;
        msg.validate()?;
        Ok(msg)
    }
}
