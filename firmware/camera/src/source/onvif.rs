//! The ONVIF PullPoint client: creates a subscription on the event service, then pulls in a
//! loop; the answers, concatenated, are the byte stream the ONVIF parser reads. A failed pull
//! ends the stream, and the agent's reconnect creates a new subscription.
//!
//! Authentication is HTTP Digest, which ONVIF devices must support besides WS-Security
//! UsernameToken (ONVIF Core Specification §5.9); the SOAP header stays free of credentials.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, Url};
use tokio_util::io::StreamReader;

use super::http::{CameraClient, join};
use super::{ConnectFuture, Credentials, EventReader, EventTransport, TransportError};
use crate::config::CameraConfig;
use crate::vendor::Vendor;
use crate::vendor::onvif::soap;

/// Messages asked for per pull.
const MESSAGE_LIMIT: u32 = 100;

/// The PullPoint client for one camera.
#[derive(Debug, Clone)]
pub struct OnvifTransport {
    client: CameraClient,
    service: Url,
    /// How long each pull waits for messages; an empty answer after it is the heartbeat.
    pull_timeout: Duration,
}

impl OnvifTransport {
    /// The transport for `camera`; each pull waits up to its heartbeat interval.
    ///
    /// # Errors
    /// [`TransportError::Http`] when the client cannot be built, [`TransportError::Other`]
    /// when the URL is unusable.
    pub fn from_config(camera: &CameraConfig) -> Result<Self, TransportError> {
        let path = camera.event_path.clone().unwrap_or_else(|| Vendor::Onvif.event_path().to_owned());
        // The pull waits on the camera, so the answer may take the whole pull timeout.
        let client =
            CameraClient::new(Credentials::of(camera), camera.connect_timeout + camera.heartbeat_interval)?;
        Ok(OnvifTransport {
            client,
            service: join(&camera.url, &path)?,
            pull_timeout: camera.heartbeat_interval,
        })
    }

    async fn call(
        client: &CameraClient,
        url: &Url,
        action: &str,
        body: String,
    ) -> Result<Bytes, TransportError> {
        let mut headers = HeaderMap::new();
        let content_type = HeaderValue::from_str(&soap::content_type(action))
            .map_err(|e| TransportError::Other(format!("SOAP content type: {e}")))?;
        headers.insert(CONTENT_TYPE, content_type);
        let response = client.send(Method::POST, url, headers, Some(body)).await?;
        Ok(response.bytes().await?)
    }
}

impl EventTransport for OnvifTransport {
    fn connect(&self) -> ConnectFuture {
        let this = self.clone();
        Box::pin(async move {
            let keep = this.pull_timeout.saturating_mul(6).max(Duration::from_secs(60));
            let created = Self::call(
                &this.client,
                &this.service,
                soap::CREATE_ACTION,
                soap::create_subscription(this.service.as_str(), keep),
            )
            .await?;
            let address = soap::subscription_address(&String::from_utf8_lossy(&created))?;
            // Cameras behind NAT or a proxy may name an address relative to themselves; a
            // relative reference resolves against the service URL.
            let subscription = this
                .service
                .join(&address)
                .map_err(|e| TransportError::Other(format!("subscription address {address:?}: {e}")))?;
            let pulls =
                futures_util::stream::unfold((this, subscription), |(this, subscription)| async move {
                    let body = soap::pull_messages(subscription.as_str(), this.pull_timeout, MESSAGE_LIMIT);
                    let answer = Self::call(&this.client, &subscription, soap::PULL_ACTION, body)
                        .await
                        .map_err(std::io::Error::other);
                    Some((answer, (this, subscription)))
                });
            Ok(Box::new(StreamReader::new(Box::pin(pulls))) as EventReader)
        })
    }
}
