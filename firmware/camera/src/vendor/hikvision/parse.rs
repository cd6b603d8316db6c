//! The pure parser of the ISAPI alert stream.

use quick_xml::events::Event;
use quick_xml::reader::Reader;

use crate::multipart::{MAX_PART, MultipartSplitter, Part};
use crate::signal::{
    CameraSignal, ExtraCodes, ParseError, ParseResult, Parsed, SignalKind, StreamParser, extra_kind,
};
use crate::vendor::closes_element;

/// The `eventType` values this agent maps, compared case-insensitively (ISAPI spells
/// `videoloss` and `VMD` in different cases across firmware generations).
///
/// - `fireDetection`: thermal and bi-spectrum cameras' flame detection (火点检测).
/// - `smokeDetection`: the smoke analytics of the same cameras (烟雾检测).
/// - `fireEscapeDetection`: fire-escape / fire-lane occupation (消防通道占用检测).
/// - `videoloss`: video signal lost. The stream also sends `videoloss` with `eventState`
///   `inactive` every few seconds as its keep-alive, which therefore ends a video loss and
///   doubles as the heartbeat.
/// - `shelteralarm` (video tampering, 遮挡), `defocus` (lens defocused) and
///   `scenechangedetection` (camera moved): all three are the protocol's `tampered`.
/// - `heartBeat`: the explicit keep-alive part some firmware sends instead.
const EVENT_TYPES: &[(&str, SignalKind)] = &[
    ("fireDetection", SignalKind::Fire),
    ("smokeDetection", SignalKind::Smoke),
    ("fireEscapeDetection", SignalKind::FireLaneBlocked),
    ("videoloss", SignalKind::VideoLoss),
    ("shelteralarm", SignalKind::Tampered),
    ("defocus", SignalKind::Tampered),
    ("scenechangedetection", SignalKind::Tampered),
    ("heartBeat", SignalKind::Heartbeat),
];

/// The `eventType` that means `kind` in the built-in table (the first one listed).
pub(super) fn event_type_for(kind: SignalKind) -> Option<&'static str> {
    EVENT_TYPES.iter().find(|(_, k)| *k == kind).map(|(code, _)| *code)
}

fn kind_of(event_type: &str, extra: &ExtraCodes) -> Option<SignalKind> {
    extra_kind(extra, event_type).or_else(|| {
        EVENT_TYPES.iter().find(|(code, _)| code.eq_ignore_ascii_case(event_type)).map(|(_, k)| *k)
    })
}

/// Push parser of `/ISAPI/Event/notification/alertStream`: multipart parts, each an
/// `EventNotificationAlert` document; picture parts are skipped.
#[derive(Debug, Clone)]
pub struct HikvisionParser {
    parts: MultipartSplitter,
    extra: ExtraCodes,
    scratch: Vec<Result<Part, ParseError>>,
}

impl HikvisionParser {
    /// A parser that also maps `extra` event types.
    pub fn new(extra: ExtraCodes) -> Self {
        HikvisionParser {
            parts: MultipartSplitter::with_completion(MAX_PART, alert_complete),
            extra,
            scratch: Vec::new(),
        }
    }
}

/// A part is complete once its alert document closed.
fn alert_complete(raw: &[u8]) -> bool {
    closes_element(raw, "EventNotificationAlert")
}

impl StreamParser for HikvisionParser {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<ParseResult>) {
        self.parts.push(bytes, &mut self.scratch);
        for part in self.scratch.drain(..) {
            match part {
                Err(e) => out.push(Err(e)),
                Ok(part) if part.is_binary() => {}
                Ok(part) => {
                    let body = String::from_utf8_lossy(&part.body);
                    if !body.trim().is_empty() {
                        out.push(parse_alert(&body, &self.extra));
                    }
                }
            }
        }
    }
}

/// The fields of an `EventNotificationAlert` this agent reads (direct children of the root;
/// nested elements of the same name, e.g. in `DetectionRegionList`, are ignored).
#[derive(Debug, Default)]
struct Alert {
    event_type: Option<String>,
    event_state: Option<String>,
    channel_id: Option<String>,
    dyn_channel_id: Option<String>,
}

/// Parses one `EventNotificationAlert` document.
pub fn parse_alert(xml: &str, extra: &ExtraCodes) -> ParseResult {
    let alert = read_alert(xml)?;
    let event_type = alert.event_type.ok_or(ParseError::MissingField { field: "eventType" })?;
    let Some(kind) = kind_of(&event_type, extra) else {
        return Ok(Parsed::Unknown { code: event_type });
    };
    let active = match alert.event_state.as_deref() {
        Some(s) if s.eq_ignore_ascii_case("active") => true,
        Some(s) if s.eq_ignore_ascii_case("inactive") => false,
        Some(s) => return Err(ParseError::bad_value("eventState", s)),
        // Explicit heartbeat parts carry no state.
        None if kind == SignalKind::Heartbeat => true,
        None => return Err(ParseError::MissingField { field: "eventState" }),
    };
    if kind == SignalKind::Heartbeat {
        return Ok(Parsed::Signal(CameraSignal::heartbeat()));
    }
    // On an NVR `dynChannelID` is the logical channel the user sees (D1, D2 ...) while
    // `channelID` may be offset by the analogue inputs; an IPC sends both equal or only
    // `channelID`, and a single-channel IPC sometimes neither.
    let channel = match alert.dyn_channel_id.or(alert.channel_id) {
        Some(text) => match text.trim().parse::<u16>() {
            Ok(0) | Err(_) => return Err(ParseError::bad_value("channelID", &text)),
            Ok(n) => n,
        },
        None => 1,
    };
    Ok(Parsed::Signal(CameraSignal::new(Some(channel), kind, active)))
}

fn read_alert(xml: &str) -> Result<Alert, ParseError> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut alert = Alert::default();
    let mut depth = 0usize;
    let mut root_seen = false;
    // The direct child of the root being read, if it is one we want.
    let mut field: Option<String> = None;
    loop {
        match reader.read_event().map_err(ParseError::xml)? {
            Event::Start(start) => {
                let name = start.local_name().as_ref().to_owned();
                if depth == 0 {
                    if root_seen {
                        return Err(ParseError::xml("more than one root element"));
                    }
                    if name != "EventNotificationAlert" {
                        return Err(ParseError::UnexpectedRoot { name: crate::signal::cut(&name) });
                    }
                    root_seen = true;
                }
                field = (depth == 1).then_some(name);
                depth += 1;
            }
            Event::Empty(start) if depth == 0 => {
                return Err(ParseError::UnexpectedRoot {
                    name: crate::signal::cut(start.local_name().as_ref()),
                });
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                field = None;
            }
            Event::Text(text) if depth == 2 => {
                let value = quick_xml::escape::unescape(&text).map_err(ParseError::xml)?.trim().to_owned();
                let slot = match field.as_deref() {
                    Some("eventType") => &mut alert.event_type,
                    Some("eventState") => &mut alert.event_state,
                    Some("channelID") => &mut alert.channel_id,
                    Some("dynChannelID") => &mut alert.dyn_channel_id,
                    _ => continue,
                };
                slot.get_or_insert(value);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !root_seen {
        return Err(ParseError::xml("no root element"));
    }
    if depth != 0 {
        return Err(ParseError::xml("document ends inside an element"));
    }
    Ok(alert)
}
