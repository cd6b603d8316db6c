//! The one place where a channel's pure [`Request`] becomes an HTTP exchange, and where the
//! replies of the robot platforms are judged.
//!
//! Every channel builds its request as plain data (testable without a socket) and judges the
//! [`Reply`] with a plain function; only [`exchange`] touches the network.

use std::time::Duration;

use serde::Deserialize;

use super::error::{ConfigError, SendError, excerpt};

/// HTTP method of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// `POST` (accepted as `post` too).
    #[default]
    #[serde(alias = "post")]
    Post,
    /// `GET` (accepted as `get` too).
    #[serde(alias = "get")]
    Get,
}

/// One HTTP request, fully built: what a channel's pure part produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method.
    pub method: Method,
    /// Full URL, query included.
    pub url: String,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// Body; empty for none.
    pub body: Vec<u8>,
}

impl Request {
    /// A `POST` of a JSON body.
    pub fn post_json(url: impl Into<String>, body: &serde_json::Value) -> Request {
        Request {
            method: Method::Post,
            url: url.into(),
            headers: vec![("Content-Type".to_owned(), "application/json; charset=utf-8".to_owned())],
            body: body.to_string().into_bytes(),
        }
    }

    /// The value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// `Retry-After`, when sent in seconds.
    pub retry_after: Option<Duration>,
    /// Body, at most [`MAX_REPLY_BYTES`].
    pub body: Vec<u8>,
}

impl Reply {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Most reply bytes read: robot replies are a few dozen bytes of JSON; a misconfigured URL
/// pointing at a large page must not be read whole.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Checks a configured endpoint: an absolute `http` or `https` URL.
pub fn parse_url(url: &str) -> Result<reqwest::Url, ConfigError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| ConfigError::msg(format!("bad url {url:?}: {e}")))?;
    match parsed.scheme() {
        "http" | "https" => Ok(parsed),
        other => Err(ConfigError::msg(format!("url {url:?}: scheme {other:?} is not http or https"))),
    }
}

/// An HTTP client whose every request, connection included, ends within `timeout`.
pub fn client(timeout: Duration) -> Result<reqwest::Client, ConfigError> {
    reqwest::Client::builder()
        .timeout(timeout)
        // A connection that cannot be set up within a few seconds will not be; leave the rest
        // of the timeout to slow servers rather than to SYN retransmissions.
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .build()
        .map_err(|e| ConfigError::msg(format!("cannot build an HTTP client: {e}")))
}

/// Sends `request` and reads the reply. Any HTTP status is a [`Reply`]; only failures to get
/// one are errors.
pub async fn exchange(client: &reqwest::Client, request: Request) -> Result<Reply, SendError> {
    let mut builder = match request.method {
        Method::Post => client.post(&request.url),
        Method::Get => client.get(&request.url),
    };
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    if !request.body.is_empty() {
        builder = builder.body(request.body);
    }
    let mut response = builder.send().await.map_err(network_error)?;
    let status = response.status().as_u16();
    let retry_after =
        response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(network_error)? {
        let room = MAX_REPLY_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == MAX_REPLY_BYTES {
            break;
        }
    }
    Ok(Reply { status, retry_after, body })
}

fn network_error(e: reqwest::Error) -> SendError {
    // reqwest's Display hides the cause ("error sending request"); the chain says "connection
    // refused" or "dns error", which is what a person needs to read.
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if e.is_timeout() {
        SendError::Timeout(text)
    } else if e.is_builder() {
        SendError::Config(text)
    } else {
        SendError::Network(text)
    }
}

/// Success on 2xx, whatever the body.
pub fn check_status(reply: &Reply) -> Result<(), SendError> {
    if reply.is_success() {
        Ok(())
    } else {
        Err(SendError::from_status(reply.status, reply.retry_after, &reply.body))
    }
}

/// How a robot platform reports the outcome in its JSON reply.
#[derive(Debug, Clone, Copy)]
pub struct CodedReply {
    /// Platform name for errors.
    pub platform: &'static str,
    /// Fields that may hold the result code, first present wins (`errcode`; `code` or the
    /// older `StatusCode` for Feishu).
    pub code_fields: &'static [&'static str],
    /// Fields that may hold the explanation.
    pub message_fields: &'static [&'static str],
    /// Codes that mean "later" (rate limits, busy), retried like a 429.
    pub retryable_codes: &'static [i64],
}

/// Judges a robot's reply: success needs a 2xx status **and** a zero result code. Robots
/// answer most refusals with HTTP 200 and a non-zero code, and some (Feishu) with a 4xx and
/// the code in the body; a rate-limit code is recognised whatever the status, otherwise a
/// non-2xx status is judged as such (its body, with any code, kept in the error).
pub fn check_coded_reply(reply: &Reply, platform: &CodedReply) -> Result<(), SendError> {
    let json: Option<serde_json::Value> = serde_json::from_slice(&reply.body).ok();
    let field = |names: &[&str]| names.iter().find_map(|n| json.as_ref()?.get(*n).cloned());
    let code = field(platform.code_fields).and_then(|c| c.as_i64());
    let refused = |code: i64, retryable: bool| {
        let message = match field(platform.message_fields) {
            Some(serde_json::Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        SendError::Refused { platform: platform.platform, code: code.to_string(), message, retryable }
    };
    match code {
        Some(code) if platform.retryable_codes.contains(&code) => Err(refused(code, true)),
        _ if !reply.is_success() => check_status(reply),
        Some(0) => Ok(()),
        Some(code) => Err(refused(code, false)),
        None => Err(SendError::BadReply(format!(
            "HTTP {} without a result code from {}: {}",
            reply.status,
            platform.platform,
            excerpt(&reply.body)
        ))),
    }
}

/// Parses a `Retry-After` header given in seconds (the form the robot platforms and proxies
/// send, RFC 9110 §10.2.3); the HTTP-date form is treated as absent and falls back to the
/// outbox's backoff.
fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}
