//! The pure parser of the Dahua `eventManager.cgi?action=attach` stream.

use crate::multipart::{MAX_PART, MultipartSplitter, Part, split_headers};
use crate::signal::{
    CameraSignal, ExtraCodes, ParseError, ParseResult, Parsed, SignalKind, StreamParser, cut, extra_kind,
};

/// The `Code` values this agent maps, compared case-insensitively.
///
/// - `FireWarning`: thermal cameras' fire alarm (火警); `FireDetection` and `SmokeDetection`:
///   the smart-IVS flame and smoke rules.
/// - `VideoLoss`: no video signal.
/// - `VideoBlind` (lens covered, 视频遮挡), `VideoAbnormalDetection` (scene change,
///   defocus, ...) and `VideoUnFocus`: all the protocol's `tampered`.
///
/// Dahua has no fire-lane code common to its models; sites map theirs with `extra_codes`.
const CODES: &[(&str, SignalKind)] = &[
    ("FireWarning", SignalKind::Fire),
    ("FireDetection", SignalKind::Fire),
    ("SmokeDetection", SignalKind::Smoke),
    ("VideoLoss", SignalKind::VideoLoss),
    ("VideoBlind", SignalKind::Tampered),
    ("VideoAbnormalDetection", SignalKind::Tampered),
    ("VideoUnFocus", SignalKind::Tampered),
];

/// The `Code` that means `kind` in the built-in table (the first one listed).
pub(super) fn code_for(kind: SignalKind) -> Option<&'static str> {
    CODES.iter().find(|(_, k)| *k == kind).map(|(code, _)| *code)
}

fn kind_of(code: &str, extra: &ExtraCodes) -> Option<SignalKind> {
    extra_kind(extra, code)
        .or_else(|| CODES.iter().find(|(c, _)| c.eq_ignore_ascii_case(code)).map(|(_, k)| *k))
}

/// Push parser of the attach stream: multipart parts (boundary `myboundary`) whose text body
/// is `Heartbeat` or one or more `Code=...;action=...;index=...;data={...}` blocks.
#[derive(Debug, Clone)]
pub struct DahuaParser {
    parts: MultipartSplitter,
    extra: ExtraCodes,
    scratch: Vec<Result<Part, ParseError>>,
}

impl DahuaParser {
    /// A parser that also maps `extra` codes.
    pub fn new(extra: ExtraCodes) -> Self {
        DahuaParser {
            parts: MultipartSplitter::with_completion(MAX_PART, block_complete),
            extra,
            scratch: Vec::new(),
        }
    }
}

impl StreamParser for DahuaParser {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<ParseResult>) {
        self.parts.push(bytes, &mut self.scratch);
        for part in self.scratch.drain(..) {
            match part {
                Err(e) => out.push(Err(e)),
                Ok(part) if part.is_binary() => {}
                Ok(part) => parse_body(&String::from_utf8_lossy(&part.body), &self.extra, out),
            }
        }
    }
}

/// A part is complete once its content is followed by a blank line (Dahua ends each part's
/// text with one), or once it holds `Content-Length` bytes; in both cases only if its last
/// line is whole and a `data={...}` object in its last block has closed.
pub(super) fn block_complete(raw: &[u8]) -> bool {
    let part = split_headers(raw);
    let body = String::from_utf8_lossy(&part.body);
    let text = body.trim_start_matches(['\r', '\n']);
    if text.trim().is_empty() {
        return false;
    }
    let blank_line_after = text.contains("\n\n") || text.contains("\n\r\n");
    let length_reached = part
        .header("content-length")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|len| part.body.len() >= len);
    (blank_line_after || length_reached) && last_block_closed(text)
}

fn last_block_closed(text: &str) -> bool {
    let block = text.rfind("Code=").map_or(text, |start| &text[start..]);
    match block.find("data=") {
        Some(at) if block[at + 5..].trim_start().starts_with('{') => json_closed(&block[at + 5..]),
        _ => block.contains('\n'),
    }
}

/// Whether `text` starts (after spaces) with a JSON object that is closed within it.
fn json_closed(text: &str) -> bool {
    let text = text.trim_start();
    if !text.starts_with('{') {
        return text.contains('\n');
    }
    let (mut depth, mut in_string, mut escaped) = (0u32, false, false);
    for c in text.chars() {
        match (in_string, c) {
            (true, _) if escaped => escaped = false,
            (true, '\\') => escaped = true,
            (true, '"') => in_string = false,
            (true, _) => {}
            (false, '"') => in_string = true,
            (false, '{') => depth += 1,
            (false, '}') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

/// Parses a part body: `Heartbeat`, or blocks each starting with a `Code=` line (the JSON of
/// `data=` may span the following lines).
pub fn parse_body(body: &str, extra: &ExtraCodes, out: &mut Vec<ParseResult>) {
    let mut block: Option<String> = None;
    for line in body.lines() {
        let line = line.trim_end_matches('\r');
        let trimmed = line.trim();
        if trimmed.starts_with("Code=") {
            if let Some(done) = block.take() {
                out.extend(parse_block(&done, extra));
            }
            block = Some(trimmed.to_owned());
        } else if let Some(b) = block.as_mut() {
            b.push('\n');
            b.push_str(line);
        } else if trimmed.eq_ignore_ascii_case("Heartbeat") {
            out.push(Ok(Parsed::Signal(CameraSignal::heartbeat())));
        } else if !trimmed.is_empty() {
            out.push(Err(ParseError::BadLine { line: cut(trimmed) }));
        }
    }
    if let Some(done) = block {
        out.extend(parse_block(&done, extra));
    }
}

/// One `Code=X;action=Y;index=Z[;data={...}]` block. `data` comes last and is the rest of
/// the block (its JSON may hold `;`); this agent needs nothing from it.
fn parse_block(block: &str, extra: &ExtraCodes) -> Vec<ParseResult> {
    let head = block.split_once(";data=").map_or(block, |(head, _)| head);
    let (mut code, mut action, mut index) = (None, None, None);
    for pair in head.split(';') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key.trim() {
            "Code" => code = Some(value.trim()),
            "action" => action = Some(value.trim()),
            "index" => index = Some(value.trim()),
            _ => {}
        }
    }
    let Some(code) = code.filter(|c| !c.is_empty()) else {
        return vec![Err(ParseError::MissingField { field: "Code" })];
    };
    let Some(kind) = kind_of(code, extra) else {
        return vec![Ok(Parsed::Unknown { code: code.to_owned() })];
    };
    // `index` counts channels from 0 (the snapshot and config CGIs count from 1).
    let channel = match index {
        None => 1,
        Some(text) => match text.parse::<u16>() {
            Ok(n) if n < u16::MAX => n + 1,
            _ => return vec![Err(ParseError::bad_value("index", text))],
        },
    };
    let signal = |active| Ok(Parsed::Signal(CameraSignal::new(Some(channel), kind, active)));
    match action {
        Some("Start") => vec![signal(true)],
        Some("Stop") => vec![signal(false)],
        // A momentary event: it started and ended.
        Some("Pulse") => vec![signal(true), signal(false)],
        Some(other) => vec![Err(ParseError::bad_value("action", other))],
        None => vec![Err(ParseError::MissingField { field: "action" })],
    }
}
