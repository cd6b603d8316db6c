//! What goes wrong when sending, classified once for the retry policy and for metrics.

use std::fmt;
use std::time::Duration;

/// One failed attempt to send a message through a channel.
///
/// The classification follows what each failure means for a fire alarm: a failure that may
/// pass by itself (network, timeout, 5xx, 408, 429, a robot's rate limit) is retried until the
/// outbox's maximum age; a failure that cannot change without a person (a 4xx, a refused
/// signature, a wrong key, an unknown channel) is reported and given up at once, because
/// retrying it for an hour would only hide the misconfiguration behind "still trying".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection could not be made or broke (refused, reset, DNS, TLS).
    #[error("network error: {0}")]
    Network(String),
    /// No complete answer within the channel's timeout.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The server answered with a non-success HTTP status.
    #[error("HTTP {status}: {body}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// The server's `Retry-After` in seconds, when it sent one.
        retry_after: Option<Duration>,
        /// The start of the response body, for the log and the outbox history.
        body: String,
    },
    /// The platform answered but refused the message in its own reply (a robot's non-zero
    /// `errcode`/`code`, or an SMS gateway's failed success check).
    #[error("{platform} refused the message: code {code}: {message}")]
    Refused {
        /// `wecom`, `dingtalk`, `feishu`, `sms`.
        platform: &'static str,
        /// The platform's error code, as it sent it.
        code: String,
        /// The platform's explanation.
        message: String,
        /// Whether the platform said "later" (rate limit, busy) rather than "no".
        retryable: bool,
    },
    /// A success status with a reply that cannot be read (an HTML page from a proxy or captive
    /// portal, say). Retryable: the message probably did not reach the platform, and for a fire
    /// alarm a duplicate is better than a loss.
    #[error("unreadable reply: {0}")]
    BadReply(String),
    /// The channel's configuration cannot produce a valid request (a bad URL after filling a
    /// template, a header that is not valid HTTP).
    #[error("bad channel configuration: {0}")]
    Config(String),
    /// The outbox holds a delivery for a channel name that is not configured (removed or
    /// renamed since the notification was queued).
    #[error("no notification channel named {0:?} is configured")]
    UnknownTarget(String),
    /// The outbox cannot read the stored message (written by an incompatible version).
    #[error("stored message cannot be read: {0}")]
    Unreadable(String),
}

impl SendError {
    /// The error for a non-success HTTP status.
    pub fn from_status(status: u16, retry_after: Option<Duration>, body: &[u8]) -> SendError {
        SendError::Status { status, retry_after, body: excerpt(body) }
    }

    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            SendError::Network(_) | SendError::Timeout(_) | SendError::BadReply(_) => true,
            SendError::Status { status, .. } => is_retryable_status(*status),
            SendError::Refused { retryable, .. } => *retryable,
            SendError::Config(_) | SendError::UnknownTarget(_) | SendError::Unreadable(_) => false,
        }
    }

    /// How long the server asked to be left alone, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SendError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short, stable label for metrics and dashboards; never changes with the message text.
    pub fn reason(&self) -> &'static str {
        match self {
            SendError::Network(_) => "network",
            SendError::Timeout(_) => "timeout",
            SendError::Status { status: 429, .. } => "rate_limited",
            SendError::Status { status, .. } if *status >= 500 => "server_error",
            SendError::Status { .. } => "client_error",
            SendError::Refused { retryable: true, .. } => "rate_limited",
            SendError::Refused { .. } => "refused",
            SendError::BadReply(_) => "bad_reply",
            SendError::Config(_) => "config",
            SendError::UnknownTarget(_) => "unknown_target",
            SendError::Unreadable(_) => "unreadable",
        }
    }
}

/// Whether an HTTP status is worth retrying: 5xx, 408 (request timeout) and 429 (too many
/// requests). Every other 4xx says this request is wrong and will stay wrong.
pub fn is_retryable_status(status: u16) -> bool {
    status >= 500 || status == 408 || status == 429
}

/// Most characters of a reply kept in an error: enough for any robot's JSON error, short
/// enough that an HTML error page does not fill the outbox history.
const EXCERPT_CHARS: usize = 300;

/// The start of a reply body as text, for errors.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// A channel configuration that cannot be used; the gateway refuses to start with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The channel's name, once known.
    pub channel: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error about the channel named `channel`.
    pub fn new(channel: &str, message: impl Into<String>) -> ConfigError {
        ConfigError { channel: Some(channel.to_owned()), message: message.into() }
    }

    /// An error found by a channel's builder, which does not know the channel's name.
    pub fn msg(message: impl Into<String>) -> ConfigError {
        ConfigError { channel: None, message: message.into() }
    }

    /// The same error, naming the channel.
    pub fn for_channel(self, channel: &str) -> ConfigError {
        ConfigError { channel: Some(channel.to_owned()), ..self }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.channel {
            Some(channel) => write!(f, "notification channel {channel:?}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}
