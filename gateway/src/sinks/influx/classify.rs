//! What to do after a write: the retry policy as a pure function.
//!
//! The classes come from what goes wrong with today's tools: Telegraf retried a poison batch
//! forever while new data piled up (telegraf #8571), dropped on 400 silently, and split on 413
//! only later (#10130). Here every outcome has exactly one next step.

use std::time::Duration;

/// A failed write, as far as the policy needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFailure {
    /// HTTP status, or `None` for a network error or timeout.
    pub status: Option<u16>,
    /// The server's `Retry-After`, when it sent one and the client could read it.
    pub retry_after: Option<Duration>,
    /// The server's explanation or the client error, for logs and dead letters.
    pub message: String,
}

/// The next step for a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// The server refused these points for good (bad type, bad syntax, outside retention):
    /// move the batch to the dead-letter file with the reason and go on.
    DeadLetter,
    /// The request is too large: write each half separately.
    Split,
    /// Credentials, permissions or the database are wrong: nothing will change until a
    /// person acts. Hold the batch, raise a gateway-health alarm, retry slowly.
    Hold,
    /// The server asked to be left alone for this long.
    RetryAfter(Duration),
    /// A transient failure (5xx, network, timeout): retry with exponential backoff.
    Backoff,
}

/// Longest `Retry-After` honoured; a server asking for more is retried after this anyway so a
/// misconfigured proxy cannot park the data for a day.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Decides the next step after `failure`.
pub fn classify(failure: &WriteFailure) -> Next {
    match failure.status {
        Some(400 | 422) => Next::DeadLetter,
        Some(413) => Next::Split,
        Some(401 | 403 | 404) => Next::Hold,
        Some(429 | 503) => match failure.retry_after {
            Some(wait) => Next::RetryAfter(wait.min(MAX_RETRY_AFTER)),
            None => Next::Backoff,
        },
        // Any other 4xx is a request this gateway built wrongly; retrying it as-is cannot
        // help, so it is kept aside with the server's reason rather than lost or looped on.
        Some(s) if (400..500).contains(&s) => Next::DeadLetter,
        Some(_) | None => Next::Backoff,
    }
}

/// Parses a `Retry-After` header given in seconds (the form InfluxDB and proxies send; the
/// HTTP-date form is treated as absent and falls back to backoff).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}
