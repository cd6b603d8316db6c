//! Where the event bytes come from: an [`EventTransport`] opens a fresh byte stream of the
//! vendor's format each time it is asked (at start and after every disconnect).
//!
//! - [`http::HttpTransport`]: the long-lived HTTP GET of Hikvision and Dahua cameras.
//! - [`onvif::OnvifTransport`]: an ONVIF PullPoint subscription, its answers concatenated.
//! - [`feed::FeedTransport`]: bytes or signals pushed in-process through a
//!   [`feed::CameraFeed`]; how the fleet simulator runs simulated camera channels through the
//!   same agent code without HTTP.
//! - Any closure returning a future of an [`AsyncRead`].

use std::future::Future;
use std::pin::Pin;

use tokio::io::AsyncRead;

use crate::config::{AuthScheme, CameraConfig};
use crate::vendor::Vendor;

pub mod feed;
pub mod http;
pub mod onvif;

/// A connected event stream.
pub type EventReader = Box<dyn AsyncRead + Send + Unpin>;

/// The future [`EventTransport::connect`] returns.
pub type ConnectFuture = Pin<Box<dyn Future<Output = Result<EventReader, TransportError>> + Send>>;

/// Opens event streams. See the module documentation.
pub trait EventTransport: Send + Sync + 'static {
    /// Connects and returns the stream of the vendor's bytes.
    fn connect(&self) -> ConnectFuture;
}

impl<F, Fut, R> EventTransport for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, TransportError>> + Send + 'static,
    R: AsyncRead + Send + Unpin + 'static,
{
    fn connect(&self) -> ConnectFuture {
        let connecting = self();
        Box::pin(async move { Ok(Box::new(connecting.await?) as EventReader) })
    }
}

/// Why an event stream could not be opened or broke.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The HTTP request failed (connect, TLS, protocol).
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    /// The camera answered with an error status.
    #[error("camera answered HTTP {status}")]
    Status {
        /// The status code.
        status: u16,
    },
    /// The camera's authentication challenge could not be answered, or the answer was
    /// refused.
    #[error("authentication: {0}")]
    Auth(String),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The ONVIF event service answered something unusable.
    #[error("ONVIF: {0}")]
    Onvif(#[from] crate::signal::ParseError),
    /// The stream failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The simulator or test behind a custom transport refused.
    #[error("{0}")]
    Other(String),
}

/// Credentials for the camera.
#[derive(Clone)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Scheme.
    pub scheme: AuthScheme,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("Credentials").field("username", &self.username).field("scheme", &self.scheme).finish()
    }
}

impl Credentials {
    /// The credentials of `camera`, if it has a user name.
    pub fn of(camera: &CameraConfig) -> Option<Self> {
        camera.username.as_ref().map(|username| Credentials {
            username: username.clone(),
            password: camera.password.clone().unwrap_or_default(),
            scheme: camera.auth,
        })
    }
}

/// The transport the configuration asks for.
#[derive(Debug, Clone)]
pub enum CameraTransport {
    /// Hikvision or Dahua.
    Http(http::HttpTransport),
    /// ONVIF.
    Onvif(onvif::OnvifTransport),
}

impl CameraTransport {
    /// Builds the transport for `camera`.
    ///
    /// # Errors
    /// [`TransportError::Http`] when the HTTP client cannot be built (TLS setup).
    pub fn from_config(camera: &CameraConfig) -> Result<Self, TransportError> {
        Ok(match camera.vendor {
            Vendor::Hikvision | Vendor::Dahua => {
                CameraTransport::Http(http::HttpTransport::from_config(camera)?)
            }
            Vendor::Onvif => CameraTransport::Onvif(onvif::OnvifTransport::from_config(camera)?),
        })
    }
}

impl EventTransport for CameraTransport {
    fn connect(&self) -> ConnectFuture {
        match self {
            CameraTransport::Http(t) => t.connect(),
            CameraTransport::Onvif(t) => t.connect(),
        }
    }
}
