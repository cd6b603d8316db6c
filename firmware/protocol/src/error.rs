//! Typed errors for decoding and validation.

use crate::codec::Encoding;

/// Why an id was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is empty.
    #[error("id is empty")]
    Empty,
    /// The id is longer than [`crate::ID_MAX_LEN`] bytes.
    #[error("id is {len} bytes long; at most 32 are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The id holds a byte outside `A-Z a-z 0-9 . _ -`.
    #[error("id has a character outside A-Z a-z 0-9 . _ - at byte {at}")]
    BadChar {
        /// Byte offset of the first bad character.
        at: usize,
    },
}

/// Why a topic was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The topic does not have the shape `fg/v1/{village}/{device}/{up|down}/{kind}`.
    #[error("topic is not of the form fg/v1/{{village}}/{{device}}/{{up|down}}/{{kind}}")]
    Shape,
    /// The topic names a protocol version this crate does not speak.
    #[error("topic names an unsupported protocol version")]
    Version,
    /// The village level is not a valid id.
    #[error("bad village id in topic: {0}")]
    Village(IdError),
    /// The device level is not a valid id.
    #[error("bad device id in topic: {0}")]
    Device(IdError),
    /// The direction level is neither `up` nor `down`.
    #[error("topic direction must be `up` or `down`")]
    Direction,
    /// The kind level names no message kind of that direction.
    #[error("topic names an unknown message kind")]
    UnknownKind,
    /// The topic does not fit in [`crate::MAX_TOPIC_LEN`] bytes.
    #[error("topic is too long")]
    TooLong,
}

/// Why a message was rejected. Every variant maps to one stable [`Error::reason`] label.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum Error {
    /// The payload is larger than the limit.
    #[error("payload is {len} bytes; the limit is {max}")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// Configured limit.
        max: usize,
    },
    /// The payload could not be decoded in the given encoding.
    #[error("payload is not a valid {encoding} message")]
    Malformed {
        /// The encoding that was tried.
        encoding: Encoding,
    },
    /// The payload names a message kind this schema version does not define.
    #[error("payload names an unknown message kind")]
    UnknownKind,
    /// The message kind in the payload differs from the one in the topic.
    #[error("payload kind does not match the topic kind")]
    KindMismatch,
    /// The schema version is 0 or newer than [`crate::SCHEMA_VERSION`].
    #[error("schema version {version} is not supported (this build speaks 1..={max})", max = crate::SCHEMA_VERSION)]
    UnsupportedVersion {
        /// The version the message carries.
        version: u8,
    },
    /// The device id in the payload is invalid.
    #[error("bad device id: {0}")]
    BadDeviceId(IdError),
    /// The device id in the payload differs from the one in the topic.
    #[error("payload device id differs from the topic device id")]
    DeviceMismatch,
    /// The topic is invalid.
    #[error("bad topic: {0}")]
    Topic(TopicError),
    /// A numeric field is NaN, infinite or outside its physical range.
    #[error("field `{field}` is out of range")]
    OutOfRange {
        /// The field's wire name.
        field: &'static str,
    },
    /// A text field holds characters it may not.
    #[error("field `{field}` holds characters outside its alphabet")]
    BadText {
        /// The field's wire name.
        field: &'static str,
    },
}

impl Error {
    /// A short, stable label for metrics and logs (`rejected_total{reason="..."}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::TooLarge { .. } => "oversized",
            Error::Malformed { .. } => "malformed",
            Error::UnknownKind => "unknown_kind",
            Error::KindMismatch => "kind_mismatch",
            Error::UnsupportedVersion { .. } => "unsupported_version",
            Error::BadDeviceId(_) => "bad_device_id",
            Error::DeviceMismatch => "device_mismatch",
            Error::Topic(_) => "bad_topic",
            Error::OutOfRange { .. } => "out_of_range",
            Error::BadText { .. } => "bad_text",
        }
    }
}

impl From<TopicError> for Error {
    fn from(e: TopicError) -> Self {
        Error::Topic(e)
    }
}

/// The output buffer is too small for the encoded message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("output buffer too small for the encoded message")]
pub struct EncodeError;
