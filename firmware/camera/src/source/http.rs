//! The HTTP side: the long-lived event GET of Hikvision and Dahua, and the authenticated
//! request helper the ONVIF transport shares.
//!
//! Authentication: Hikvision, Dahua and ONVIF cameras ask for HTTP Digest (RFC 7616/2617,
//! MD5 with `qop=auth` in practice). The `digest_auth` crate computes the `Authorization`
//! header from the camera's challenge; the request itself stays plain reqwest. `diqwest`, which
//! wraps the same crate around reqwest, was not used: its current release targets reqwest
//! 0.13 while the workspace is on 0.12, and the event GET needs nothing from it but the
//! header. The last challenge is kept, so repeated requests (ONVIF pulls) answer it at once
//! with a growing nonce count instead of taking a 401 round trip each time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use digest_auth::{AuthContext, HttpMethod, WwwAuthenticateHeader};
use futures_util::TryStreamExt;
use reqwest::header::{AUTHORIZATION, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode, Url};
use tokio_util::io::StreamReader;

use super::{ConnectFuture, Credentials, EventReader, EventTransport, TransportError};
use crate::config::{AuthScheme, CameraConfig};
use crate::vendor::Vendor;

/// An HTTP client that authenticates the way the camera asks.
#[derive(Debug, Clone)]
pub struct CameraClient {
    client: reqwest::Client,
    credentials: Option<Credentials>,
    /// The last Digest challenge, answered again for the next request.
    challenge: Arc<Mutex<Option<WwwAuthenticateHeader>>>,
    timeout: Duration,
}

impl CameraClient {
    /// A client with `credentials`, allowing `timeout` for connect and response headers.
    ///
    /// # Errors
    /// [`TransportError::Http`] when the client cannot be built.
    pub fn new(credentials: Option<Credentials>, timeout: Duration) -> Result<Self, TransportError> {
        // No overall request timeout: the event stream lasts as long as the camera is up.
        let client = reqwest::Client::builder().connect_timeout(timeout).tcp_nodelay(true).build()?;
        Ok(CameraClient { client, credentials, challenge: Arc::new(Mutex::new(None)), timeout })
    }

    /// Sends a request, answering an authentication challenge once, and returns the response
    /// once its headers arrived with a success status.
    ///
    /// # Errors
    /// [`TransportError::Status`] for an error status, [`TransportError::Auth`] when the
    /// credentials were refused, [`TransportError::Timeout`], [`TransportError::Http`].
    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        headers: HeaderMap,
        body: Option<String>,
    ) -> Result<reqwest::Response, TransportError> {
        let mut authorization = self.preemptive(&method, url, body.as_deref())?;
        for attempt in 0..2 {
            let mut request = self.client.request(method.clone(), url.clone()).headers(headers.clone());
            if let Some(body) = &body {
                request = request.body(body.clone());
            }
            if let Some(value) = &authorization {
                request = request.header(AUTHORIZATION, value);
            }
            let response = tokio::time::timeout(self.timeout, request.send())
                .await
                .map_err(|_| TransportError::Timeout(self.timeout))??;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && attempt == 0 && self.credentials.is_some() {
                authorization = Some(self.answer(response.headers(), &method, url, body.as_deref())?);
                continue;
            }
            if status == StatusCode::UNAUTHORIZED {
                *self.challenge.lock().unwrap_or_else(|p| p.into_inner()) = None;
                return Err(TransportError::Auth("the camera refused the credentials".into()));
            }
            if !status.is_success() {
                return Err(TransportError::Status { status: status.as_u16() });
            }
            return Ok(response);
        }
        Err(TransportError::Auth("the camera kept asking for authentication".into()))
    }

    /// The `Authorization` value to send before any challenge: Basic, or Digest when a
    /// challenge from an earlier request is known.
    fn preemptive(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&str>,
    ) -> Result<Option<String>, TransportError> {
        let Some(credentials) = &self.credentials else {
            return Ok(None);
        };
        match credentials.scheme {
            AuthScheme::Basic => Ok(Some(basic(credentials))),
            AuthScheme::Digest => {
                let mut challenge = self.challenge.lock().unwrap_or_else(|p| p.into_inner());
                match challenge.as_mut() {
                    Some(prompt) => Ok(Some(digest(prompt, credentials, method, url, body)?)),
                    None => Ok(None),
                }
            }
        }
    }

    /// Answers the challenge of a 401.
    fn answer(
        &self,
        headers: &HeaderMap,
        method: &Method,
        url: &Url,
        body: Option<&str>,
    ) -> Result<String, TransportError> {
        let credentials =
            self.credentials.as_ref().ok_or_else(|| TransportError::Auth("no credentials".into()))?;
        let challenges: Vec<&str> =
            headers.get_all(WWW_AUTHENTICATE).iter().filter_map(|v| v.to_str().ok()).collect();
        let digest_challenge =
            challenges.iter().find(|c| c.trim_start().to_ascii_lowercase().starts_with("digest"));
        match (credentials.scheme, digest_challenge) {
            (AuthScheme::Digest, Some(text)) => {
                let mut prompt = digest_auth::parse(text)
                    .map_err(|e| TransportError::Auth(format!("bad Digest challenge: {e}")))?;
                let value = digest(&mut prompt, credentials, method, url, body)?;
                *self.challenge.lock().unwrap_or_else(|p| p.into_inner()) = Some(prompt);
                Ok(value)
            }
            (AuthScheme::Digest, None) => Err(TransportError::Auth(format!(
                "Digest configured but the camera offers {}",
                if challenges.is_empty() { "no scheme".to_owned() } else { challenges.join(", ") }
            ))),
            (AuthScheme::Basic, _) => Ok(basic(credentials)),
        }
    }

    /// The underlying reqwest client.
    pub fn inner(&self) -> &reqwest::Client {
        &self.client
    }
}

fn basic(credentials: &Credentials) -> String {
    let raw = format!("{}:{}", credentials.username, credentials.password);
    format!("Basic {}", base64_encode(raw.as_bytes()))
}

fn digest(
    prompt: &mut WwwAuthenticateHeader,
    credentials: &Credentials,
    method: &Method,
    url: &Url,
    body: Option<&str>,
) -> Result<String, TransportError> {
    // The digest covers the request-target as sent: path and query.
    let uri = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let context = AuthContext::new_with_method(
        credentials.username.as_str(),
        credentials.password.as_str(),
        uri,
        body.map(str::as_bytes),
        HttpMethod::from(method.as_str().to_owned()),
    );
    let header = prompt.respond(&context).map_err(|e| TransportError::Auth(format!("Digest: {e}")))?;
    Ok(header.to_header_string())
}

/// Standard base64 with padding (RFC 4648 §4), for the Basic header only.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The event GET of Hikvision and Dahua cameras.
#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: CameraClient,
    url: Url,
}

impl HttpTransport {
    /// The transport for `camera`: its URL plus the vendor's event path (Dahua with the
    /// configured heartbeat period).
    ///
    /// # Errors
    /// [`TransportError::Http`] when the client cannot be built, [`TransportError::Other`]
    /// when the URL is unusable.
    pub fn from_config(camera: &CameraConfig) -> Result<Self, TransportError> {
        let path = match (&camera.event_path, camera.vendor) {
            (Some(path), _) => path.clone(),
            (None, Vendor::Dahua) => {
                format!(
                    "{}&heartbeat={}",
                    Vendor::Dahua.event_path(),
                    camera.heartbeat_interval.as_secs().max(1)
                )
            }
            (None, vendor) => vendor.event_path().to_owned(),
        };
        let url = join(&camera.url, &path)?;
        Ok(HttpTransport { client: CameraClient::new(Credentials::of(camera), camera.connect_timeout)?, url })
    }

    /// The URL the transport GETs.
    pub fn url(&self) -> &Url {
        &self.url
    }
}

/// `base` with `path` (which may hold a query) appended.
pub(crate) fn join(base: &str, path: &str) -> Result<Url, TransportError> {
    let text = format!("{}/{}", base.trim_end_matches('/'), path.trim_start_matches('/'));
    Url::parse(&text).map_err(|e| TransportError::Other(format!("camera URL {text:?}: {e}")))
}

impl EventTransport for HttpTransport {
    fn connect(&self) -> ConnectFuture {
        let (client, url) = (self.client.clone(), self.url.clone());
        Box::pin(async move {
            let response = client.send(Method::GET, &url, HeaderMap::new(), None).await?;
            let bytes = response.bytes_stream().map_err(std::io::Error::other);
            Ok(Box::new(StreamReader::new(bytes)) as EventReader)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_of_basic_credentials() {
        // RFC 7617 §2's example.
        assert_eq!(base64_encode(b"Aladdin:open sesame"), "QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"a"), "YQ==");
        assert_eq!(base64_encode(b"ab"), "YWI=");
        assert_eq!(base64_encode(b"abc"), "YWJj");
    }

    #[test]
    fn urls_join_paths_with_queries() {
        let url =
            join("http://192.0.2.1/", "/cgi-bin/eventManager.cgi?action=attach&codes=[All]&heartbeat=5")
                .unwrap();
        assert_eq!(url.path(), "/cgi-bin/eventManager.cgi");
        assert!(url.query().unwrap().contains("heartbeat=5"));
    }
}
