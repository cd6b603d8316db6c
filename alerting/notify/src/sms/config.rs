//! Configuration of an SMS or voice gateway.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::Secret;
use crate::config::default_timeout;
use crate::outbox::RateLimit;
use crate::transport::Method;

/// An HTTP SMS or voice gateway. Templates may hold the placeholders listed in
/// [`super::template::PLACEHOLDERS`]; an unknown `{name}` is refused at start, so a typo
/// cannot send a literal `{titel}` to a duty officer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsConfig {
    /// `POST` (default) or `GET`.
    #[serde(default)]
    pub method: Method,
    /// Address template; placeholder values are percent-encoded, e.g.
    /// `https://sms.example/send?to={phone}&msg={summary}`.
    pub url: String,
    /// Extra headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Extra headers whose values are read from environment variables at start: header name
    /// to variable name (for API keys).
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
    /// How placeholder values are escaped in `body`: `json` (default; as JSON string content,
    /// the template supplies the quotes), `form` (percent-encoded, for
    /// `application/x-www-form-urlencoded`) or `raw` (as they are).
    #[serde(default)]
    pub body_format: BodyFormat,
    /// Body template; absent for none (`GET`, or everything in the URL).
    #[serde(default)]
    pub body: Option<String>,
    /// `Content-Type` of the body; default by `body_format`: `application/json`,
    /// `application/x-www-form-urlencoded`, `text/plain`, each with `charset=utf-8`.
    #[serde(default)]
    pub content_type: Option<String>,
    /// The numbers to notify.
    pub phones: Vec<String>,
    /// `each` (default): one request per number, `{phone}` is that number; `joined`: one
    /// request, `{phone}` is every number joined by `phone_separator`.
    #[serde(default)]
    pub batch: PhoneBatch,
    /// Separator of `joined` numbers.
    #[serde(default = "default_separator")]
    pub phone_separator: String,
    /// Value of the `{secret}` placeholder (an API key in the body or URL).
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Name of an environment variable holding the `{secret}` value, read at start.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// A field of the JSON reply that must equal `success_value` for a 2xx reply to count as
    /// sent: a top-level name (`code`) or a JSON pointer (`/result/code`). Absent: any 2xx.
    #[serde(default)]
    pub success_field: Option<String>,
    /// The value `success_field` must have, compared as text (`"0"` matches `0` and `"0"`).
    #[serde(default)]
    pub success_value: Option<String>,
    /// Time limit for one request, connection included.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Most deliveries per window (one delivery is every number of `phones`), e.g.
    /// `{ messages = 60, per = "1m" }`. None by default: SMS gateways' limits are per
    /// account and contract, not documented in general.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}

/// Escaping of placeholder values in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    /// JSON string content.
    #[default]
    Json,
    /// Percent-encoded form fields.
    Form,
    /// Unchanged.
    Raw,
}

/// Numbers per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhoneBatch {
    /// One request per number.
    #[default]
    Each,
    /// One request for all numbers.
    Joined,
}

fn default_separator() -> String {
    ",".to_owned()
}
