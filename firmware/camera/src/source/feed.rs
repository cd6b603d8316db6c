//! An in-process event source: a simulator or a test pushes a vendor's bytes (or signals,
//! encoded in the vendor's format) into a [`CameraFeed`], and the agent reads them through
//! the [`FeedTransport`] exactly as it would read a camera's HTTP stream: same parser, same
//! tracker, same outbox and MQTT path.
//!
//! The transport hands out one stream at a time; when the agent drops it (after a silence
//! timeout, say), the next connect picks the feed up where it left off. Dropping every
//! [`CameraFeed`] ends the stream, as a camera closing the connection would.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{Mutex, mpsc};
use tokio_util::io::StreamReader;

use super::{ConnectFuture, EventReader, EventTransport, TransportError};
use crate::signal::{CameraSignal, ExtraCodes};
use crate::vendor::{GenerateError, Vendor};

/// A feed of `vendor`'s format holding up to `capacity` unread chunks; `extra` maps the codes
/// the vendor has no built-in code for (see [`Vendor::encode`]).
pub fn feed(vendor: Vendor, extra: ExtraCodes, capacity: usize) -> (CameraFeed, FeedTransport) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (CameraFeed { tx, vendor, extra }, FeedTransport { rx: Arc::new(Mutex::new(rx)) })
}

/// Why a feed refused input.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The signal has no code in this vendor's format.
    #[error(transparent)]
    Generate(#[from] GenerateError),
    /// The transport (and so the agent) is gone.
    #[error("the agent side of the feed is gone")]
    Closed,
}

/// The camera's side of a feed. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CameraFeed {
    tx: mpsc::Sender<Bytes>,
    vendor: Vendor,
    extra: ExtraCodes,
}

impl CameraFeed {
    /// Sends raw bytes of the vendor's stream, waiting while the feed is full.
    ///
    /// # Errors
    /// [`FeedError::Closed`] when the transport was dropped.
    pub async fn send_bytes(&self, bytes: impl Into<Bytes>) -> Result<(), FeedError> {
        self.tx.send(bytes.into()).await.map_err(|_| FeedError::Closed)
    }

    /// Sends `signal` in the vendor's format, stamped `ts_ms`.
    ///
    /// # Errors
    /// [`FeedError::Generate`] when the vendor has no code for the signal's kind,
    /// [`FeedError::Closed`] when the transport was dropped.
    pub async fn send(&self, signal: &CameraSignal, ts_ms: u64) -> Result<(), FeedError> {
        let bytes = self.vendor.encode(signal, &self.extra, ts_ms)?;
        self.send_bytes(bytes).await
    }
}

/// The agent's side of a feed: an [`EventTransport`].
#[derive(Debug, Clone)]
pub struct FeedTransport {
    rx: Arc<Mutex<mpsc::Receiver<Bytes>>>,
}

impl EventTransport for FeedTransport {
    fn connect(&self) -> ConnectFuture {
        let rx = Arc::clone(&self.rx);
        Box::pin(async move {
            // Held for as long as the stream lives, so a stale stream cannot steal bytes.
            let guard = rx.lock_owned().await;
            let chunks = futures_util::stream::unfold(guard, |mut guard| async move {
                let chunk = guard.recv().await?;
                Some((Ok::<_, std::io::Error>(chunk), guard))
            });
            Ok::<_, TransportError>(Box::new(StreamReader::new(Box::pin(chunks))) as EventReader)
        })
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::signal::{Parsed, SignalKind};

    #[tokio::test]
    async fn signals_come_out_of_the_transport_in_the_vendors_format() {
        let (camera, transport) = feed(Vendor::Dahua, ExtraCodes::new(), 8);
        let signal = CameraSignal::new(Some(3), SignalKind::Smoke, true);
        camera.send(&signal, 0).await.unwrap();
        camera.send(&CameraSignal::heartbeat(), 0).await.unwrap();
        let lane = CameraSignal::new(Some(1), SignalKind::FireLaneBlocked, true);
        assert!(
            matches!(camera.send(&lane, 0).await, Err(FeedError::Generate(_))),
            "Dahua has no built-in code"
        );
        drop(camera);
        let mut bytes = Vec::new();
        transport.connect().await.unwrap().read_to_end(&mut bytes).await.unwrap();
        let mut parser = Vendor::Dahua.parser(&ExtraCodes::new(), &Default::default());
        let mut out = Vec::new();
        parser.feed(&bytes, &mut out);
        let got: Vec<Parsed> = out.into_iter().map(Result::unwrap).collect();
        assert_eq!(got, [Parsed::Signal(signal), Parsed::Signal(CameraSignal::heartbeat())]);
    }

    #[tokio::test]
    async fn a_new_stream_continues_where_the_dropped_one_stopped() {
        let (camera, transport) = feed(Vendor::Hikvision, ExtraCodes::new(), 8);
        camera.send_bytes(&b"one"[..]).await.unwrap();
        let mut first = transport.connect().await.unwrap();
        let mut buf = [0u8; 3];
        first.read_exact(&mut buf).await.unwrap();
        drop(first);
        camera.send_bytes(&b"two"[..]).await.unwrap();
        let mut second = transport.connect().await.unwrap();
        second.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"two");
    }
}
