//! The pure parser of ONVIF `PullMessagesResponse` documents.

use std::collections::BTreeMap;

use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

use crate::signal::{
    CameraSignal, ExtraCodes, ParseError, ParseResult, Parsed, SignalKind, StreamParser, cut, extra_kind,
};
use crate::vendor::closes_element;

/// Largest SOAP document kept; a pull of 100 messages is about 100 KiB.
pub const MAX_DOCUMENT: usize = 1024 * 1024;

/// `Source` items that name the video source of an event, in order of preference.
const SOURCE_ITEMS: &[&str] =
    &["VideoSourceConfigurationToken", "VideoSourceToken", "VideoSource", "Source", "InputToken"];

/// `Data` items that carry an event's state (ONVIF's `State`, and the `Is...` names of the
/// analytics and vendor topics: `IsFire`, `IsSmoke`, `IsTamper`, ...).
const STATE_ITEMS: &[&str] = &["State", "Active", "IsActive", "Value"];

/// `Data` items that carry a confidence, as a fraction (0-1) or a percentage.
const CONFIDENCE_ITEMS: &[&str] = &["Confidence", "Likelihood", "Probability"];

/// Push parser of a byte stream of concatenated SOAP envelopes (one per `PullMessages`
/// answer, as [`crate::source::onvif`] produces it). Each `PullMessagesResponse` yields a
/// heartbeat (the camera answered, so the event service is alive) and one item per
/// `NotificationMessage`.
#[derive(Debug, Clone, Default)]
pub struct OnvifParser {
    buf: Vec<u8>,
    /// Dropping an oversized document up to its end.
    skipping: bool,
    extra: ExtraCodes,
    sources: BTreeMap<String, u16>,
}

impl OnvifParser {
    /// A parser that also maps `extra` topics, and maps video source tokens to channels with
    /// `sources` (tokens not in it end in their channel number, e.g. `VideoSource_2`).
    pub fn new(extra: ExtraCodes, sources: BTreeMap<String, u16>) -> Self {
        OnvifParser { extra, sources, ..Self::default() }
    }
}

impl StreamParser for OnvifParser {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<ParseResult>) {
        /// Room for a closing tag split across chunks.
        const TAIL: usize = 64;
        self.buf.extend_from_slice(bytes);
        while let Some(end) = envelope_end(&self.buf) {
            let doc: Vec<u8> = self.buf.drain(..end).collect();
            if std::mem::take(&mut self.skipping) {
                continue;
            }
            if end > MAX_DOCUMENT {
                out.push(Err(ParseError::TooLarge { limit: MAX_DOCUMENT }));
                continue;
            }
            parse_response(String::from_utf8_lossy(&doc).trim(), &self.extra, &self.sources, out);
        }
        if !self.skipping && self.buf.len() > MAX_DOCUMENT + TAIL {
            out.push(Err(ParseError::TooLarge { limit: MAX_DOCUMENT }));
            self.skipping = true;
        }
        if self.skipping && self.buf.len() > TAIL {
            self.buf.drain(..self.buf.len() - TAIL);
        }
    }
}

/// The end of the first closed `Envelope` element in `buf`.
fn envelope_end(buf: &[u8]) -> Option<usize> {
    const NAME: &[u8] = b"Envelope>";
    let mut from = 0;
    while let Some(at) = buf[from..].windows(NAME.len()).position(|w| w == NAME) {
        let end = from + at + NAME.len();
        if closes_element(&buf[..end], "Envelope") {
            return Some(end);
        }
        from = end;
    }
    None
}

/// One `NotificationMessage` as read from the XML.
#[derive(Debug, Default)]
struct Notification {
    topic: String,
    operation: Option<String>,
    source: Vec<(String, String)>,
    data: Vec<(String, String)>,
}

/// Where a `SimpleItem` sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Other,
    Source,
    Data,
}

/// Parses one SOAP envelope, appending a heartbeat and one item per notification.
pub fn parse_response(
    xml: &str,
    extra: &ExtraCodes,
    sources: &BTreeMap<String, u16>,
    out: &mut Vec<ParseResult>,
) {
    match read_notifications(xml) {
        Err(e) => out.push(Err(e)),
        Ok(notifications) => {
            out.push(Ok(Parsed::Signal(CameraSignal::heartbeat())));
            out.extend(notifications.into_iter().map(|n| to_signal(n, extra, sources)));
        }
    }
}

fn read_notifications(xml: &str) -> Result<Vec<Notification>, ParseError> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut stack: Vec<String> = Vec::new();
    let mut root_seen = false;
    let mut response_seen = false;
    let mut fault: Option<String> = None;
    let mut current: Option<Notification> = None;
    let mut section = Section::Other;
    let mut done = Vec::new();
    loop {
        let event = reader.read_event().map_err(ParseError::xml)?;
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                let name = start.local_name().as_ref().to_owned();
                if stack.is_empty() {
                    if root_seen {
                        return Err(ParseError::xml("more than one root element"));
                    }
                    if name != "Envelope" {
                        return Err(ParseError::UnexpectedRoot { name: cut(&name) });
                    }
                    root_seen = true;
                }
                match name.as_str() {
                    "PullMessagesResponse" => response_seen = true,
                    "Fault" => fault = Some(String::new()),
                    "NotificationMessage" => current = Some(Notification::default()),
                    "Message" => {
                        if let (Some(n), Some(op)) =
                            (current.as_mut(), attribute(start, "PropertyOperation")?)
                        {
                            n.operation = Some(op);
                        }
                    }
                    "Source" => section = Section::Source,
                    "Data" => section = Section::Data,
                    "Key" => section = Section::Other,
                    "SimpleItem" => {
                        if let Some(n) = current.as_mut() {
                            let item_name = attribute(start, "Name")?.unwrap_or_default();
                            let value = attribute(start, "Value")?.unwrap_or_default();
                            match section {
                                Section::Source => n.source.push((item_name, value)),
                                Section::Data => n.data.push((item_name, value)),
                                Section::Other => {}
                            }
                        }
                    }
                    _ => {}
                }
                if matches!(event, Event::Start(_)) {
                    stack.push(name);
                }
            }
            Event::End(_) => {
                match stack.pop().as_deref() {
                    Some("NotificationMessage") => done.extend(current.take()),
                    Some("Source" | "Data" | "Key") => section = Section::Other,
                    _ => {}
                }
                if stack.is_empty() && root_seen {
                    break;
                }
            }
            Event::Text(text) => {
                let value = quick_xml::escape::unescape(&text).map_err(ParseError::xml)?.trim().to_owned();
                match stack.last().map(String::as_str) {
                    Some("Topic") => {
                        if let Some(n) = current.as_mut() {
                            n.topic.push_str(&value);
                        }
                    }
                    // SOAP 1.2 `Reason/Text`, SOAP 1.1 `faultstring`.
                    Some("Text" | "faultstring") => {
                        if let Some(f) = fault.as_mut() {
                            f.push_str(&value);
                        }
                    }
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !root_seen {
        return Err(ParseError::xml("no root element"));
    }
    if !stack.is_empty() {
        return Err(ParseError::xml("document ends inside an element"));
    }
    if let Some(reason) = fault {
        return Err(ParseError::SoapFault { reason: cut(&reason) });
    }
    if !response_seen {
        return Err(ParseError::MissingField { field: "PullMessagesResponse" });
    }
    Ok(done)
}

fn attribute(start: &BytesStart<'_>, name: &str) -> Result<Option<String>, ParseError> {
    for attr in start.attributes() {
        let attr = attr.map_err(ParseError::xml)?;
        if attr.key.local_name().as_ref() == name {
            return Ok(Some(
                attr.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .map_err(ParseError::xml)?
                    .into_owned(),
            ));
        }
    }
    Ok(None)
}

/// The topic without namespace prefixes: `tns1:VideoSource/SignalLoss` → `VideoSource/SignalLoss`.
fn plain_topic(topic: &str) -> String {
    topic
        .trim()
        .split('/')
        .map(|level| level.rsplit(':').next().unwrap_or(level))
        .collect::<Vec<_>>()
        .join("/")
}

/// The kind an ONVIF topic means: configured topics first, then the standard video-source
/// topics (`SignalLoss`; `GlobalSceneChange` and `ImageTooBlurry`, ONVIF's tampering and
/// defocus detectors), then fire, smoke and fire-lane analytics by name, since ONVIF
/// standardises no topic for them and vendors name theirs (`tns1:RuleEngine/FireDetector/...`).
pub fn topic_kind(topic: &str, extra: &ExtraCodes) -> Option<SignalKind> {
    let plain = plain_topic(topic);
    if let Some(kind) = extra_kind(extra, topic.trim()).or_else(|| extra_kind(extra, &plain)) {
        return Some(kind);
    }
    let levels: Vec<String> = plain.split('/').map(str::to_ascii_lowercase).collect();
    let has = |name: &str| levels.iter().any(|l| l == name);
    let lower = plain.to_ascii_lowercase();
    if has("signalloss") {
        Some(SignalKind::VideoLoss)
    } else if has("globalscenechange") || has("imagetooblurry") || has("tamper") || has("tamperdetector") {
        Some(SignalKind::Tampered)
    } else if lower.contains("firelane") {
        Some(SignalKind::FireLaneBlocked)
    } else if lower.contains("smoke") {
        Some(SignalKind::Smoke)
    } else if lower.contains("fire") || lower.contains("flame") {
        Some(SignalKind::Fire)
    } else {
        None
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

fn to_signal(n: Notification, extra: &ExtraCodes, sources: &BTreeMap<String, u16>) -> ParseResult {
    if n.topic.is_empty() {
        return Err(ParseError::MissingField { field: "Topic" });
    }
    let Some(kind) = topic_kind(&n.topic, extra) else {
        return Ok(Parsed::Unknown { code: n.topic.trim().to_owned() });
    };
    let is_state =
        |name: &str| STATE_ITEMS.iter().any(|s| s.eq_ignore_ascii_case(name)) || name.starts_with("Is");
    let state = n
        .data
        .iter()
        .find(|(name, value)| is_state(name) && parse_bool(value).is_some())
        .or_else(|| n.data.iter().find(|(_, value)| parse_bool(value).is_some()))
        .and_then(|(_, value)| parse_bool(value));
    let active = match (n.operation.as_deref(), state) {
        // The property no longer exists: whatever it signalled is over.
        (Some("Deleted"), _) => false,
        (_, Some(state)) => state,
        (_, None) => return Err(ParseError::MissingField { field: "State" }),
    };
    let token = SOURCE_ITEMS
        .iter()
        .find_map(|want| n.source.iter().find(|(name, _)| name.eq_ignore_ascii_case(want)))
        .map(|(_, value)| value.as_str());
    let channel = match token {
        None => 1,
        Some(token) => match sources.get(token) {
            Some(&channel) => channel,
            None => channel_from_token(token).ok_or_else(|| ParseError::bad_value("Source", token))?,
        },
    };
    let confidence_pct = n
        .data
        .iter()
        .find(|(name, _)| CONFIDENCE_ITEMS.iter().any(|c| c.eq_ignore_ascii_case(name)))
        .and_then(|(_, value)| value.trim().parse::<f32>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| if v <= 1.0 { v * 100.0 } else { v }.round().min(100.0) as u8);
    let mut signal = CameraSignal::new(Some(channel), kind, active);
    signal.confidence_pct = confidence_pct;
    Ok(Parsed::Signal(signal))
}

/// The channel a token ends in: `VideoSource_2` → 2. Tokens count from 0 on some devices and
/// from 1 on others, so `0` is channel 1; sites with several sources map them explicitly.
fn channel_from_token(token: &str) -> Option<u16> {
    let digits: String = token.chars().rev().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() {
        // A single-source camera's token (`VideoSourceToken`, `vsconf`) has no number.
        return Some(1);
    }
    let n: u16 = digits.chars().rev().collect::<String>().parse().ok()?;
    Some(n.max(1))
}
