//! The HTTP side: one [`LineWriter`] per destination.

use std::io::Write;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;

use super::classify::{WriteFailure, parse_retry_after};
use super::config::{DestinationConfig, DestinationKind};

/// Writes a body of line protocol (nanosecond timestamps) to one server.
#[derive(Debug, Clone)]
pub enum LineWriter {
    /// InfluxDB 1.x API.
    V1(V1Writer),
    /// InfluxDB 2.x/3.x API.
    V2(V2Writer),
}

impl LineWriter {
    /// Writes `body`; `Ok` only when the server stored it (any 2xx).
    pub async fn write(&self, body: &[u8]) -> Result<(), WriteFailure> {
        match self {
            LineWriter::V1(w) => w.write(body).await,
            LineWriter::V2(w) => w.write(body).await,
        }
    }
}

/// Builds the writer a destination's configuration asks for.
pub fn writer_for(cfg: &DestinationConfig) -> Result<LineWriter, String> {
    match &cfg.kind {
        DestinationKind::V1 { database, retention_policy, username, password } => {
            let mut url = reqwest::Url::parse(&cfg.url).map_err(|e| format!("bad url {:?}: {e}", cfg.url))?;
            url.set_path("/write");
            url.query_pairs_mut().append_pair("db", database).append_pair("precision", "ns");
            if let Some(rp) = retention_policy {
                url.query_pairs_mut().append_pair("rp", rp);
            }
            let client = reqwest::Client::builder()
                .timeout(cfg.timeout)
                .build()
                .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
            Ok(LineWriter::V1(V1Writer {
                client,
                url,
                auth: username.clone().map(|u| (u, password.clone().unwrap_or_default())),
                gzip: cfg.gzip,
            }))
        }
        DestinationKind::V2 { org, bucket, token } => {
            reqwest::Url::parse(&cfg.url).map_err(|e| format!("bad url {:?}: {e}", cfg.url))?;
            Ok(LineWriter::V2(V2Writer {
                client: influxdb2::Client::new(cfg.url.clone(), org.clone(), token.clone()),
                org: org.clone(),
                bucket: bucket.clone(),
                timeout: cfg.timeout,
            }))
        }
    }
}

/// InfluxDB 1.x `/write`, through reqwest.
#[derive(Debug, Clone)]
pub struct V1Writer {
    client: reqwest::Client,
    url: reqwest::Url,
    auth: Option<(String, String)>,
    gzip: bool,
}

impl V1Writer {
    async fn write(&self, body: &[u8]) -> Result<(), WriteFailure> {
        let mut request = self.client.post(self.url.clone());
        if let Some((user, password)) = &self.auth {
            request = request.basic_auth(user, Some(password));
        }
        // Compressing into memory cannot fail; the body goes uncompressed if it ever does.
        let compressed = self.gzip.then(|| gzip(body).ok()).flatten();
        request = match compressed {
            Some(compressed) => request.header("Content-Encoding", "gzip").body(compressed),
            None => request.body(body.to_vec()),
        };
        let response = request.send().await.map_err(network_failure)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after =
            response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let message = response.text().await.unwrap_or_default();
        Err(WriteFailure { status: Some(status.as_u16()), retry_after, message })
    }
}

fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    // Level 1: most of the size reduction for a fraction of the CPU of the default level.
    let mut gz = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
    gz.write_all(body)?;
    gz.finish()
}

fn network_failure(e: reqwest::Error) -> WriteFailure {
    let what = if e.is_timeout() { "timed out" } else { "failed" };
    WriteFailure { status: None, retry_after: None, message: format!("request {what}: {e}") }
}

/// InfluxDB 2.x/3.x `/api/v2/write`, through the `influxdb2` crate. The crate hides response
/// headers, so a `Retry-After` from this API cannot be honoured and 429/503 fall back to
/// exponential backoff.
#[derive(Debug, Clone)]
pub struct V2Writer {
    client: influxdb2::Client,
    org: String,
    bucket: String,
    timeout: Duration,
}

impl V2Writer {
    async fn write(&self, body: &[u8]) -> Result<(), WriteFailure> {
        let write = self.client.write_line_protocol(&self.org, &self.bucket, body.to_vec());
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(influxdb2::RequestError::Http { status, text })) => {
                Err(WriteFailure { status: Some(status.as_u16()), retry_after: None, message: text })
            }
            Ok(Err(other)) => {
                Err(WriteFailure { status: None, retry_after: None, message: other.to_string() })
            }
            Err(_) => Err(WriteFailure {
                status: None,
                retry_after: None,
                message: format!("request timed out after {:?}", self.timeout),
            }),
        }
    }
}
