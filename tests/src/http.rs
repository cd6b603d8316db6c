//! A small blocking HTTP helper over `ureq` for the servers' loopback APIs.
//!
//! Blocking on purpose: it works the same from plain `#[test]`s and from inside a tokio
//! runtime (unlike `reqwest::blocking`, which panics there).

use std::time::Duration;

use crate::error::{Error, Result};

/// Largest response body the harness reads (exports of a long benchmark can be big).
const MAX_BODY: u64 = 1 << 30;

/// A status code and body read back from a server.
pub(crate) struct Reply {
    pub status: u16,
    pub body: String,
}

/// HTTP client bound to one server's base URL.
#[derive(Clone)]
pub(crate) struct Http {
    agent: ureq::Agent,
    base: String,
}

impl Http {
    /// A client for `base` (e.g. `http://127.0.0.1:8086`) whose requests give up after `timeout`.
    pub(crate) fn new(base: String, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            // Never route loopback traffic through a proxy from the environment.
            .proxy(None)
            // No pooled keep-alive connections: a restarted server would find them dead.
            .max_idle_connections(0)
            .build()
            .into();
        Http { agent, base }
    }

    /// `GET base+path?query`.
    pub(crate) fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Reply> {
        let url = format!("{}{path}", self.base);
        let request = || format!("GET {url}");
        let response = self.agent.get(&url).query_pairs(query.iter().copied()).call();
        read(response, request)
    }

    /// `POST base+path?query` with a plain-text body.
    pub(crate) fn post(&self, path: &str, query: &[(&str, &str)], body: &str) -> Result<Reply> {
        let url = format!("{}{path}", self.base);
        let request = || format!("POST {url}");
        let response = self
            .agent
            .post(&url)
            .query_pairs(query.iter().copied())
            .content_type("text/plain; charset=utf-8")
            .send(body);
        read(response, request)
    }
}

fn read(
    response: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    request: impl Fn() -> String,
) -> Result<Reply> {
    let mut response = response.map_err(|e| Error::Http { request: request(), detail: e.to_string() })?;
    let status = response.status().as_u16();
    let body = response.body_mut().with_config().limit(MAX_BODY).read_to_string().map_err(|e| {
        Error::Http { request: request(), detail: format!("HTTP {status}, reading the body failed: {e}") }
    })?;
    Ok(Reply { status, body })
}

impl Reply {
    /// `Ok(self)` if the status is `expected`, else an [`Error::Http`] quoting status and body.
    pub(crate) fn expect(self, expected: u16, request: impl FnOnce() -> String) -> Result<Self> {
        if self.status == expected {
            Ok(self)
        } else {
            Err(Error::Http {
                request: request(),
                detail: format!("expected HTTP {expected}, got HTTP {}: {}", self.status, self.body.trim()),
            })
        }
    }

    /// Parses the body as JSON.
    pub(crate) fn json(&self, request: impl FnOnce() -> String) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body).map_err(|e| Error::Http {
            request: request(),
            detail: format!("invalid JSON ({e}): {}", self.body.trim()),
        })
    }
}
