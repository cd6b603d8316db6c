//! One folder per camera event source, each with the same files: `mod.rs` (what the vendor
//! sends, and its path on the camera), `parse.rs` (the pure push parser), `generate.rs` (writes
//! the vendor's format for given signals: tests and the fleet simulator) and `tests.rs` (the
//! parser over the hand-written fixtures in `tests/fixtures/`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::signal::{CameraSignal, ExtraCodes, SignalKind, StreamParser};

pub mod dahua;
pub mod hikvision;
pub mod onvif;

/// Which event API a camera speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vendor {
    /// Hikvision ISAPI alert stream.
    Hikvision,
    /// Dahua `eventManager.cgi` attach stream.
    Dahua,
    /// ONVIF PullPoint events (any vendor).
    Onvif,
}

impl Vendor {
    /// A fresh parser for this vendor's stream.
    pub fn parser(self, extra: &ExtraCodes, onvif_sources: &BTreeMap<String, u16>) -> Box<dyn StreamParser> {
        match self {
            Vendor::Hikvision => Box::new(hikvision::HikvisionParser::new(extra.clone())),
            Vendor::Dahua => Box::new(dahua::DahuaParser::new(extra.clone())),
            Vendor::Onvif => Box::new(onvif::OnvifParser::new(extra.clone(), onvif_sources.clone())),
        }
    }

    /// Whether the vendor repeats an active event while it lasts instead of reporting its
    /// end reliably, so that an event not repeated for a while must be taken as over.
    pub const fn repeats_active_events(self) -> bool {
        matches!(self, Vendor::Hikvision)
    }

    /// The event endpoint's path on the camera.
    pub const fn event_path(self) -> &'static str {
        match self {
            Vendor::Hikvision => hikvision::EVENT_PATH,
            Vendor::Dahua => dahua::EVENT_PATH,
            Vendor::Onvif => onvif::EVENT_PATH,
        }
    }

    /// The vendor's wire format for one signal: a multipart part (Hikvision, Dahua) or a
    /// `PullMessagesResponse` document (ONVIF). Concatenated, they form a stream its parser
    /// reads; `ts_ms` is the event time written into it.
    ///
    /// # Errors
    /// [`GenerateError::NoCode`] when the vendor has no built-in code for the signal's kind
    /// and `extra` maps none.
    pub fn encode(
        self,
        signal: &CameraSignal,
        extra: &ExtraCodes,
        ts_ms: u64,
    ) -> Result<Vec<u8>, GenerateError> {
        match self {
            Vendor::Hikvision => hikvision::encode(signal, extra, ts_ms),
            Vendor::Dahua => dahua::encode(signal, extra, ts_ms),
            Vendor::Onvif => onvif::encode(std::slice::from_ref(signal), extra, ts_ms),
        }
    }

    /// A whole stream for `signals`, one part or document each.
    ///
    /// # Errors
    /// As for [`Vendor::encode`].
    pub fn encode_stream(
        self,
        signals: &[CameraSignal],
        extra: &ExtraCodes,
        ts_ms: u64,
    ) -> Result<Vec<u8>, GenerateError> {
        let mut out = Vec::new();
        for signal in signals {
            out.extend(self.encode(signal, extra, ts_ms)?);
        }
        Ok(out)
    }
}

/// Why a vendor stream could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    /// The vendor has no code for this kind built in, and the extra codes name none.
    #[error("no vendor event code for {kind:?}; map one in `extra_codes`")]
    NoCode {
        /// The kind without a code.
        kind: SignalKind,
    },
}

/// The vendor code for `kind`: the built-in one, else the first extra code mapped to it.
fn code_for(kind: SignalKind, builtin: Option<&str>, extra: &ExtraCodes) -> Result<String, GenerateError> {
    builtin
        .map(str::to_owned)
        .or_else(|| extra.iter().find(|(_, k)| **k == kind).map(|(code, _)| code.clone()))
        .ok_or(GenerateError::NoCode { kind })
}

/// Whether `raw` ends with the closing tag of an element called `local_name` (any namespace
/// prefix): `</EventNotificationAlert>`, `</env:Envelope>`.
pub(crate) fn closes_element(raw: &[u8], local_name: &str) -> bool {
    let needle = format!("{local_name}>");
    let mut from = 0;
    while let Some(at) = raw[from..].windows(needle.len()).position(|w| w == needle.as_bytes()) {
        let start = from + at;
        // Walk back over an optional `prefix:` to the `</`.
        let mut i = start;
        if i > 0 && raw[i - 1] == b':' {
            i -= 1;
            while i > 0 && (raw[i - 1].is_ascii_alphanumeric() || matches!(raw[i - 1], b'_' | b'-' | b'.')) {
                i -= 1;
            }
        }
        if i >= 2 && &raw[i - 2..i] == b"</" {
            return true;
        }
        from = start + 1;
    }
    false
}

/// `ts_ms` as an ISO 8601 UTC time, `2025-11-23T01:06:40Z`.
pub(crate) fn iso8601(ts_ms: u64) -> String {
    let secs = ts_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil from days, H. Hinnant's algorithm (public domain), for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// What the vendor parsers' tests share: fixtures, chunked feeding, and one line of text per
/// parse result so that expectations read like the stream.
#[cfg(test)]
pub(crate) mod testing {
    use proptest::prelude::*;

    use crate::signal::{ParseResult, Parsed, StreamParser};

    /// A fixture from `tests/fixtures/`.
    pub fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// `fire ch2 on 87%`, `heartbeat`, `unknown VMD`, `error xml`.
    pub fn render(result: &ParseResult) -> String {
        match result {
            Ok(Parsed::Signal(s)) if s.kind == crate::SignalKind::Heartbeat => "heartbeat".to_owned(),
            Ok(Parsed::Signal(s)) => {
                let kind = serde_json::to_value(s.kind).unwrap();
                let mut text = format!(
                    "{} ch{} {}",
                    kind.as_str().unwrap(),
                    s.channel.map_or("-".to_owned(), |c| c.to_string()),
                    if s.active { "on" } else { "off" }
                );
                if let Some(c) = s.confidence_pct {
                    text.push_str(&format!(" {c}%"));
                }
                text
            }
            Ok(Parsed::Unknown { code }) => format!("unknown {code}"),
            Err(e) => format!("error {}", e.reason()),
        }
    }

    /// Feeds `input` in chunks of `chunk` bytes and renders what comes out.
    pub fn feed(parser: &mut dyn StreamParser, input: &[u8], chunk: usize) -> Vec<String> {
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            parser.feed(piece, &mut out);
        }
        out.iter().map(render).collect()
    }

    /// The same results whatever the chunking, and `expected` ones.
    pub fn check(new_parser: &dyn Fn() -> Box<dyn StreamParser>, input: &[u8], expected: &[&str]) {
        for chunk in [1, 2, 7, 64, 1000, input.len()] {
            let got = feed(new_parser().as_mut(), input, chunk);
            assert_eq!(got, expected, "chunks of {chunk} bytes");
        }
    }

    /// LF line ends made CRLF, as cameras send them.
    pub fn crlf(input: &[u8]) -> Vec<u8> {
        String::from_utf8_lossy(input).replace("\r\n", "\n").replace('\n', "\r\n").into_bytes()
    }

    /// Random edits of a fixture: byte flips, deletions, insertions, truncation.
    pub fn mutations(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
        let len = base.len().max(1);
        prop::collection::vec((0..len, any::<u8>(), 0..4u8), 1..40).prop_map(move |edits| {
            let mut bytes = base.clone();
            for (at, byte, op) in edits {
                let at = at.min(bytes.len());
                match op {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    2 => bytes.insert(at, byte),
                    _ => bytes.truncate(at.max(1)),
                }
            }
            bytes
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_763_860_000_000), "2025-11-23T01:06:40Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn closing_tags() {
        assert!(closes_element(
            b"<a><EventNotificationAlert>x</EventNotificationAlert>",
            "EventNotificationAlert"
        ));
        assert!(closes_element(b"<s:Envelope></s:Envelope>", "Envelope"));
        assert!(!closes_element(b"<s:Envelope>", "Envelope"));
        assert!(!closes_element(b"<Envelope>", "Envelope"));
    }

    /// What each vendor writes, its own parser reads back, for every kind it has a code for.
    #[test]
    fn generated_streams_parse_back() {
        let extra: ExtraCodes = [("FireLane/Blocked".to_owned(), SignalKind::FireLaneBlocked)].into();
        for vendor in [Vendor::Hikvision, Vendor::Dahua, Vendor::Onvif] {
            let mut signals = Vec::new();
            for kind in SignalKind::ALL.into_iter().filter(|k| *k != SignalKind::Heartbeat) {
                for active in [true, false] {
                    signals.push(CameraSignal::new(Some(3), kind, active));
                }
            }
            let stream = vendor.encode_stream(&signals, &extra, 1_763_860_000_000).unwrap();
            // Plus a heartbeat, whose part also ends the previous one.
            let mut stream = stream;
            stream.extend(vendor.encode(&CameraSignal::heartbeat(), &extra, 0).unwrap());
            let mut parser = vendor.parser(&extra, &BTreeMap::new());
            let mut out = Vec::new();
            for chunk in stream.chunks(5) {
                parser.feed(chunk, &mut out);
            }
            let got: Vec<CameraSignal> = out
                .into_iter()
                .map(|r| r.unwrap())
                .filter_map(|p| match p {
                    crate::signal::Parsed::Signal(s) if s.kind != SignalKind::Heartbeat => Some(s),
                    // Hikvision's heartbeat is an inactive video loss on channel 1.
                    _ => None,
                })
                .filter(|s| s.channel == Some(3))
                .map(|mut s| {
                    s.confidence_pct = None;
                    s
                })
                .collect();
            assert_eq!(got, signals, "{vendor:?}");
        }
    }
}
