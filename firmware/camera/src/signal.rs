//! What every vendor parser produces: [`CameraSignal`], the vendor-neutral meaning of one
//! event, and [`ParseError`], why a piece of a stream could not be read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a camera reported, in firegrid's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    /// The analytics see smoke (烟雾).
    Smoke,
    /// The analytics (or a thermal channel) see flame (火点).
    Fire,
    /// A fire lane or escape route is blocked (消防通道占用).
    FireLaneBlocked,
    /// The channel has no video signal.
    VideoLoss,
    /// The lens is covered, moved or defocused.
    Tampered,
    /// The event stream is alive; carries no event.
    Heartbeat,
}

impl SignalKind {
    /// Every kind, in declaration order.
    pub const ALL: [SignalKind; 6] = [
        SignalKind::Smoke,
        SignalKind::Fire,
        SignalKind::FireLaneBlocked,
        SignalKind::VideoLoss,
        SignalKind::Tampered,
        SignalKind::Heartbeat,
    ];

    /// The protocol camera event this kind becomes, if it is one (the others change the
    /// channel's health instead).
    pub const fn camera_event(self) -> Option<firegrid_protocol::CameraEventKind> {
        use firegrid_protocol::CameraEventKind;
        match self {
            SignalKind::Smoke => Some(CameraEventKind::Smoke),
            SignalKind::Fire => Some(CameraEventKind::Fire),
            SignalKind::FireLaneBlocked => Some(CameraEventKind::FireLaneBlocked),
            SignalKind::VideoLoss | SignalKind::Tampered | SignalKind::Heartbeat => None,
        }
    }
}

/// One event from a camera, whatever its vendor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraSignal {
    /// The channel (1-based, as the camera or NVR numbers it); `None` for what concerns the
    /// whole device, i.e. heartbeats of the event stream.
    pub channel: Option<u16>,
    /// What happened.
    pub kind: SignalKind,
    /// `true` when the condition starts (or is still on), `false` when it ends.
    pub active: bool,
    /// The analytics' confidence in %, when the vendor reports one.
    pub confidence_pct: Option<u8>,
    /// A reference to a snapshot the vendor named in the event, if any.
    pub snapshot: Option<String>,
}

impl CameraSignal {
    /// A signal without confidence or snapshot.
    pub fn new(channel: Option<u16>, kind: SignalKind, active: bool) -> Self {
        CameraSignal { channel, kind, active, confidence_pct: None, snapshot: None }
    }

    /// A heartbeat of the whole device.
    pub fn heartbeat() -> Self {
        CameraSignal::new(None, SignalKind::Heartbeat, true)
    }
}

/// One item a parser recognised in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// An event firegrid cares about.
    Signal(CameraSignal),
    /// A well-formed event of a type firegrid does not map (motion, line crossing, face
    /// capture ...), named by the vendor's code. Counted and otherwise ignored.
    Unknown {
        /// The vendor's event code or topic.
        code: String,
    },
}

/// Extra vendor event codes (Hikvision `eventType`, Dahua `Code`, ONVIF topic) and the kind
/// each one means, on top of the built-in table of each parser. Matched case-insensitively.
///
/// Fire-lane analytics in particular differ by model and firmware, so a site maps its
/// cameras' code here instead of waiting for a release.
pub type ExtraCodes = BTreeMap<String, SignalKind>;

/// Looks `code` up in `extra`, case-insensitively.
pub(crate) fn extra_kind(extra: &ExtraCodes, code: &str) -> Option<SignalKind> {
    extra.iter().find(|(k, _)| k.eq_ignore_ascii_case(code)).map(|(_, v)| *v)
}

/// Why a part of a camera stream could not be read. Parsing goes on with the next part: one
/// bad message never stops the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A multipart part or XML document grew past the size limit without ending; it was
    /// skipped up to the next boundary.
    #[error("part exceeds {limit} bytes without a boundary; skipped")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A multipart boundary line was not followed by a line end in time.
    #[error("malformed multipart boundary line")]
    BadBoundary,
    /// The XML is not well-formed.
    #[error("malformed XML: {reason}")]
    Xml {
        /// What quick-xml reported.
        reason: String,
    },
    /// The document's root element is not the one the vendor sends.
    #[error("unexpected XML root element <{name}>")]
    UnexpectedRoot {
        /// The root element's local name.
        name: String,
    },
    /// A required field is missing.
    #[error("missing field `{field}`")]
    MissingField {
        /// The field's name in the vendor's format.
        field: &'static str,
    },
    /// A field holds a value outside its vocabulary or range.
    #[error("field `{field}` has an invalid value {value:?}")]
    BadValue {
        /// The field's name in the vendor's format.
        field: &'static str,
        /// The value, cut to 64 characters.
        value: String,
    },
    /// A Dahua block line is neither `Heartbeat` nor `Code=...`.
    #[error("unrecognised line {line:?}")]
    BadLine {
        /// The line, cut to 64 characters.
        line: String,
    },
    /// The camera answered with a SOAP fault instead of events.
    #[error("SOAP fault: {reason}")]
    SoapFault {
        /// The fault's reason text.
        reason: String,
    },
}

impl ParseError {
    /// A stable label for metrics and logs.
    pub const fn reason(&self) -> &'static str {
        match self {
            ParseError::TooLarge { .. } => "too_large",
            ParseError::BadBoundary => "bad_boundary",
            ParseError::Xml { .. } => "xml",
            ParseError::UnexpectedRoot { .. } => "unexpected_root",
            ParseError::MissingField { .. } => "missing_field",
            ParseError::BadValue { .. } => "bad_value",
            ParseError::BadLine { .. } => "bad_line",
            ParseError::SoapFault { .. } => "soap_fault",
        }
    }

    pub(crate) fn bad_value(field: &'static str, value: &str) -> Self {
        ParseError::BadValue { field, value: cut(value) }
    }

    pub(crate) fn xml(err: impl std::fmt::Display) -> Self {
        ParseError::Xml { reason: cut(&err.to_string()) }
    }
}

/// At most 64 characters of `text`, for error messages that quote untrusted input.
pub(crate) fn cut(text: &str) -> String {
    text.chars().take(64).collect()
}

/// What a parser returns for each item: a recognised event, an ignored one, or an error.
pub type ParseResult = Result<Parsed, ParseError>;

/// A push parser for one vendor's event stream: fed bytes as they arrive, in chunks of any
/// size, it appends what it recognised to `out`. It never does I/O and never panics.
pub trait StreamParser: Send {
    /// Feeds the next bytes of the stream.
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<ParseResult>);
}
