//! A push splitter for endless `multipart/mixed` and `multipart/x-mixed-replace` bodies
//! (RFC 2046 §5.1), the framing of both the Hikvision alert stream and the Dahua event stream.
//!
//! Why not a multipart crate: `multer`, the well-kept one, is an async `Stream` adapter built
//! for `multipart/form-data` uploads that end; our parsers are sans-IO (bytes in, events out,
//! no runtime), the streams never end, and cameras bend the format in ways an upload parser
//! rightly rejects: Hikvision firmware puts a blank line *before* the part headers, sends
//! `Content-Length` values that do not match the body, and mixes JPEG parts in; Dahua sends
//! LF-only line ends on some models. The boundary is the one thing they all get right, so
//! this splitter cuts at boundary lines and ignores `Content-Length` entirely.
//!
//! The boundary is learnt from the first line that starts with `--`, so the parsers need no
//! HTTP header and work the same on a raw byte stream from the simulator.

use crate::signal::ParseError;

/// Largest part kept in memory. Event XML is a few KiB; a Hikvision snapshot JPEG can reach a
/// few hundred KiB and is skipped as it streams past without being buffered.
pub const MAX_PART: usize = 256 * 1024;

/// Longest boundary line accepted (RFC 2046 allows 70 characters for the boundary itself).
const MAX_BOUNDARY_LINE: usize = 200;

/// Largest in-progress part on which [`MultipartSplitter::with_completion`]'s check runs; a
/// bigger one is a picture, and waits for its boundary.
const MAX_COMPLETION_CHECK: usize = 64 * 1024;

/// One part: its headers and its body (without the line end before the next boundary).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Part {
    /// Header names and values, in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Part {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Whether the part declares a binary media type (image, video, octet-stream) that no
    /// parser reads.
    pub fn is_binary(&self) -> bool {
        self.header("content-type").is_some_and(|t| {
            let t = t.trim().to_ascii_lowercase();
            t.starts_with("image/") || t.starts_with("video/") || t.starts_with("application/octet-stream")
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a delimiter line: preamble, epilogue, or between a close delimiter and the next.
    Seeking,
    /// Just past a delimiter: waiting for the rest of its line.
    AfterDelimiter,
    /// Inside a part's body; `scanned` bytes of the buffer hold no delimiter.
    Body { scanned: usize },
    /// Inside a part that exceeded the limit (or a binary part): dropping bytes.
    Skipping,
}

/// The splitter. See the module documentation.
#[derive(Debug, Clone)]
pub struct MultipartSplitter {
    /// `--boundary`, once known.
    delimiter: Option<Vec<u8>>,
    buf: Vec<u8>,
    state: State,
    max_part: usize,
    /// Tells a part that is already complete before its closing delimiter arrived.
    complete: Option<fn(&[u8]) -> bool>,
}

impl Default for MultipartSplitter {
    fn default() -> Self {
        Self::new(MAX_PART)
    }
}

impl MultipartSplitter {
    /// A splitter that keeps parts of up to `max_part` bytes.
    pub fn new(max_part: usize) -> Self {
        MultipartSplitter {
            delimiter: None,
            buf: Vec::new(),
            state: State::Seeking,
            max_part,
            complete: None,
        }
    }

    /// A splitter that emits a part as soon as `complete` says its bytes so far (headers and
    /// body) form a whole message, instead of waiting for the next delimiter.
    ///
    /// A camera writes the delimiter that *ends* a part only when it has the next message to
    /// send, so an alarm would otherwise wait for the following event or heartbeat, seconds
    /// later. The rest of the part up to the delimiter is then dropped.
    pub fn with_completion(max_part: usize, complete: fn(&[u8]) -> bool) -> Self {
        MultipartSplitter { complete: Some(complete), ..Self::new(max_part) }
    }

    /// Feeds bytes; appends every part completed by them (or an error for a part that had to
    /// be skipped).
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Result<Part, ParseError>>) {
        self.buf.extend_from_slice(bytes);
        while self.step(out) {}
    }

    /// Advances the state machine once; `false` when it needs more bytes.
    fn step(&mut self, out: &mut Vec<Result<Part, ParseError>>) -> bool {
        match self.state {
            State::Seeking => self.seek_delimiter(),
            State::AfterDelimiter => self.finish_delimiter_line(out),
            State::Body { scanned } => self.scan_body(scanned, out),
            State::Skipping => self.skip_body(),
        }
    }

    fn seek_delimiter(&mut self) -> bool {
        if self.delimiter.is_none() {
            return self.learn_boundary();
        }
        let delimiter = self.delimiter.as_deref().unwrap_or_default();
        match find_at_line_start(&self.buf, delimiter, 0) {
            Some(at) => {
                self.buf.drain(..at + delimiter.len());
                self.state = State::AfterDelimiter;
                true
            }
            None => {
                // Keep what could be the start of a delimiter split across chunks.
                let keep = delimiter.len() + 1;
                if self.buf.len() > keep {
                    self.buf.drain(..self.buf.len() - keep);
                }
                false
            }
        }
    }

    /// Takes the first line starting with `--` (and holding a token) as the delimiter.
    fn learn_boundary(&mut self) -> bool {
        let mut start = 0;
        while let Some(nl) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let line = trim_line(&self.buf[start..start + nl]);
            if line.len() > 2 && line.starts_with(b"--") && line.len() <= MAX_BOUNDARY_LINE {
                let token = line.strip_suffix(b"--").unwrap_or(line);
                if token.len() > 2 && token[2..].iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
                    self.delimiter = Some(token.to_vec());
                    self.buf.drain(..start);
                    return true;
                }
            }
            start += nl + 1;
        }
        // No complete line yet: drop the preamble lines seen, bound the rest.
        self.buf.drain(..start);
        if self.buf.len() > MAX_BOUNDARY_LINE {
            self.buf.clear();
        }
        false
    }

    fn finish_delimiter_line(&mut self, out: &mut Vec<Result<Part, ParseError>>) -> bool {
        if self.buf.len() >= 2 && self.buf.starts_with(b"--") {
            // A close delimiter. Cameras keep streaming after it, so look for the next one.
            self.buf.drain(..2);
            self.state = State::Seeking;
            return true;
        }
        match self.buf.iter().position(|&b| b == b'\n') {
            Some(nl) => {
                self.buf.drain(..=nl);
                self.state = State::Body { scanned: 0 };
                true
            }
            None if self.buf.len() > MAX_BOUNDARY_LINE => {
                out.push(Err(ParseError::BadBoundary));
                self.state = State::Skipping;
                true
            }
            None => false,
        }
    }

    fn scan_body(&mut self, scanned: usize, out: &mut Vec<Result<Part, ParseError>>) -> bool {
        let delimiter = self.delimiter.as_deref().unwrap_or_default();
        match find_at_line_start(&self.buf, delimiter, scanned) {
            Some(at) if at > self.max_part => {
                self.buf.drain(..at);
                out.push(Err(ParseError::TooLarge { limit: self.max_part }));
                self.state = State::Seeking;
                true
            }
            Some(at) => {
                let mut body: Vec<u8> = self.buf.drain(..at).collect();
                // The line end before the delimiter belongs to the delimiter.
                if body.last() == Some(&b'\n') {
                    body.pop();
                    if body.last() == Some(&b'\r') {
                        body.pop();
                    }
                }
                out.push(Ok(split_headers(&body)));
                self.state = State::Seeking;
                true
            }
            // The delimiter, once it comes, starts at least here: the part is too long.
            None if self.buf.len().saturating_sub(delimiter.len()) >= self.max_part => {
                out.push(Err(ParseError::TooLarge { limit: self.max_part }));
                self.state = State::Skipping;
                true
            }
            None if self.buf.len() <= MAX_COMPLETION_CHECK && self.complete.is_some_and(|f| f(&self.buf)) => {
                // Keep a last line that may be the start of the next delimiter.
                let line_start = self.buf.iter().rposition(|&b| b == b'\n').map_or(0, |nl| nl + 1);
                let tail = &self.buf[line_start..];
                let keep_from =
                    if !tail.is_empty() && delimiter.starts_with(tail) { line_start } else { self.buf.len() };
                let rest = self.buf.split_off(keep_from);
                let body = std::mem::replace(&mut self.buf, rest);
                out.push(Ok(split_headers(&body)));
                self.state = State::Skipping;
                true
            }
            None => {
                // Everything but a possible partial `\n--boundary` at the end is searched.
                self.state = State::Body { scanned: self.buf.len().saturating_sub(delimiter.len() + 1) };
                false
            }
        }
    }

    fn skip_body(&mut self) -> bool {
        let delimiter = self.delimiter.as_deref().unwrap_or_default();
        match find_at_line_start(&self.buf, delimiter, 0) {
            Some(at) => {
                self.buf.drain(..at);
                self.state = State::Seeking;
                true
            }
            None => {
                let keep = delimiter.len() + 1;
                if self.buf.len() > keep {
                    self.buf.drain(..self.buf.len() - keep);
                }
                false
            }
        }
    }
}

/// The first `needle` at or after `from` that starts a line (buffer start or after `\n`).
fn find_at_line_start(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    let mut at = from;
    while at + needle.len() <= haystack.len() {
        let rest = &haystack[at..];
        let offset = rest.windows(needle.len()).position(|w| w == needle)?;
        let found = at + offset;
        if found == 0 || haystack[found - 1] == b'\n' {
            return Some(found);
        }
        at = found + 1;
    }
    None
}

fn trim_line(line: &[u8]) -> &[u8] {
    let mut line = line;
    while let [rest @ .., b'\r' | b' ' | b'\t'] = line {
        line = rest;
    }
    line
}

/// Splits a part into headers and body. Blank lines before the headers are skipped (Hikvision
/// sends one), and a part whose first line is not a header has no headers at all.
pub(crate) fn split_headers(raw: &[u8]) -> Part {
    let mut rest = raw;
    while let Some(line_end) = rest.iter().position(|&b| b == b'\n') {
        if trim_line(&rest[..line_end]).is_empty() {
            rest = &rest[line_end + 1..];
        } else {
            break;
        }
    }
    let mut headers = Vec::new();
    let mut cursor = rest;
    loop {
        let Some(line_end) = cursor.iter().position(|&b| b == b'\n') else {
            // Headers without the blank line that ends them: not headers after all.
            return Part { headers: Vec::new(), body: rest.to_vec() };
        };
        let line = trim_line(&cursor[..line_end]);
        cursor = &cursor[line_end + 1..];
        if line.is_empty() {
            return Part { headers, body: cursor.to_vec() };
        }
        match parse_header(line) {
            Some(header) => headers.push(header),
            None => return Part { headers: Vec::new(), body: rest.to_vec() },
        }
    }
}

/// `Name: value`, with an RFC 7230 token as the name.
fn parse_header(line: &[u8]) -> Option<(String, String)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    let is_token = !name.is_empty() && name.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b));
    if !is_token {
        return None;
    }
    let value = String::from_utf8_lossy(&line[colon + 1..]).trim().to_owned();
    Some((String::from_utf8_lossy(name).into_owned(), value))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Splits `input` fed in chunks of `chunk` bytes into `(content-type, body)` pairs, with
    /// errors as `("error", reason)`.
    fn split(input: &[u8], chunk: usize) -> Vec<(String, String)> {
        let mut splitter = MultipartSplitter::new(64);
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            splitter.push(piece, &mut out);
        }
        out.into_iter()
            .map(|r| match r {
                Ok(p) => (
                    p.header("content-type").unwrap_or("-").to_owned(),
                    String::from_utf8_lossy(&p.body).into_owned(),
                ),
                Err(e) => ("error".to_owned(), e.reason().to_owned()),
            })
            .collect()
    }

    fn check(input: &str, expected: &[(&str, &str)]) {
        for chunk in [1, 2, 3, 7, 1000] {
            let got = split(input.as_bytes(), chunk);
            let got: Vec<(&str, &str)> = got.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            assert_eq!(got, expected, "chunk size {chunk}, input {input:?}");
        }
    }

    #[test]
    fn splits_parts() {
        // CRLF, as RFC 2046 says; the last part is only complete once the next delimiter came.
        check(
            "--b\r\nContent-Type: text/plain\r\n\r\none\r\n--b\r\nContent-Type: text/plain\r\n\r\ntwo\r\n--b\r\npartial",
            &[("text/plain", "one"), ("text/plain", "two")],
        );
        // LF only; a preamble; the boundary learnt from the first `--` line.
        check("preamble\n# comment\n--xyz\n\nbody\n--xyz\n", &[("-", "body")]);
        // Hikvision's blank line before the headers.
        check(
            "--boundary\r\n\r\nContent-Type: application/xml\r\nContent-Length: 999\r\n\r\n<a/>\r\n--boundary\r\n",
            &[("application/xml", "<a/>")],
        );
        // No headers at all: the first line is the body.
        check("--m\r\nHeartbeat\r\n--m\r\n", &[("-", "Heartbeat")]);
        // A close delimiter, then the stream goes on.
        check("--b\r\n\r\nx\r\n--b--\r\nepilogue\r\n--b\r\n\r\ny\r\n--b\r\n", &[("-", "x"), ("-", "y")]);
        // A boundary string inside a line is content, not a delimiter.
        check("--b\r\n\r\na --b c\r\n--b\r\n", &[("-", "a --b c")]);
        // Content-Length is ignored: it is wrong in real Hikvision streams.
        check("--b\r\nContent-Length: 2\r\n\r\nlonger\r\n--b\r\n", &[("-", "longer")]);
    }

    #[test]
    fn oversized_part_is_skipped_and_splitting_resumes() {
        let big = "x".repeat(200);
        check(
            &format!("--b\r\n\r\n{big}\r\n--b\r\n\r\nsmall\r\n--b\r\n"),
            &[("error", "too_large"), ("-", "small")],
        );
    }

    #[test]
    fn binary_parts_are_recognised() {
        let mut out = Vec::new();
        let mut splitter = MultipartSplitter::default();
        splitter.push(b"--b\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8\xff\r\n--b\r\n", &mut out);
        let part = out.pop().unwrap().unwrap();
        assert!(part.is_binary());
        assert_eq!(part.body, b"\xff\xd8\xff");
    }

    proptest! {
        /// Chunking never changes the result.
        #[test]
        fn chunking_is_invisible(parts in prop::collection::vec("[a-z<>/ ]{0,20}", 0..6), chunk in 1usize..20) {
            let mut input = String::from("--bnd\r\n");
            for p in &parts {
                input.push_str(&format!("Content-Type: text/plain\r\n\r\n{p}\r\n--bnd\r\n"));
            }
            let whole = split(input.as_bytes(), input.len().max(1));
            prop_assert_eq!(split(input.as_bytes(), chunk), whole.clone());
            let bodies: Vec<String> = whole.into_iter().map(|(_, b)| b).collect();
            prop_assert_eq!(bodies, parts);
        }

        /// Random bytes never panic and never grow the buffer past the limit.
        #[test]
        fn random_bytes_never_panic(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20)) {
            let mut splitter = MultipartSplitter::new(1024);
            let mut out = Vec::new();
            for c in &chunks {
                splitter.push(c, &mut out);
                prop_assert!(splitter.buf.len() <= 1024 + 300 + MAX_BOUNDARY_LINE);
            }
        }
    }
}
