//! Configuration of a webhook channel.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::Secret;
use crate::config::default_timeout;
use crate::outbox::RateLimit;

/// A generic JSON webhook.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Address the message is POSTed to (`http` or `https`).
    pub url: String,
    /// Key of the HMAC-SHA256 signature sent in `X-Firegrid-Signature`. Without `secret` or
    /// `secret_env`, requests go unsigned.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Name of an environment variable holding the signing key, read at start (instead of
    /// `secret`, so the key need not sit in the file).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Time limit for one request, connection included.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Extra headers sent with every request (a tenant id, an API key).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Extra headers whose values are read from environment variables at start: header name
    /// to variable name.
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
    /// Most requests per window, e.g. `{ messages = 30, per = "1m" }` for an endpoint that
    /// throttles. None by default: a generic endpoint has no documented limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}
