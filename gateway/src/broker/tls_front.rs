//! MQTT over TLS for the embedded broker, terminated by the gateway itself.
//!
//! rumqttd's own TLS listener reads its certificate once at start and, in the build the
//! gateway uses, verifies no client certificates. So the gateway terminates TLS in front of it
//! with the same rustls acceptor its officer HTTPS listener uses ([`crate::tls::server_config`]):
//! the certificate is reloaded when its files change, `client_ca` makes every client present a
//! certificate that chains to it, and refused handshakes are counted. Each accepted connection
//! is then carried, byte for byte, to rumqttd's plain listener on the same machine, where the
//! MQTT login is judged as for any other connection.
//!
//! Architecture invariant: this front understands no MQTT. It refuses only at the TLS layer
//! (and when full); everything after the handshake is rumqttd's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::BrokerError;
use crate::metrics::{Metrics, ReasonLabel};
use crate::tls::{ReloadingCert, ServeTls};

/// Longest a client may take over its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate files are checked for a renewal.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Counts one refusal (`firegrid_broker_logins_refused_total{reason}`) and logs it, rate-limited.
fn refused(metrics: &Metrics, reason: &'static str, peer: SocketAddr) {
    metrics.broker_refused.get_or_create(&ReasonLabel { reason: reason.into() }).inc();
    if let Some(suppressed) = metrics.may_log(reason) {
        tracing::warn!(%peer, reason, suppressed, "Embedded broker refused a TLS connection.");
    }
}

/// Binds `listen` and serves TLS there on a thread of its own, carrying each connection to
/// `upstream` (rumqttd's plain listener). At most `max_connections` at once; beyond that a new
/// connection is closed at once and counted. Runs until the process exits. A certificate or
/// key that does not load, or an address that cannot be bound, is an error here.
pub fn start(
    listen: SocketAddr,
    files: &ServeTls,
    upstream: SocketAddr,
    max_connections: usize,
    metrics: Arc<Metrics>,
) -> Result<SocketAddr, BrokerError> {
    let tls_error = |e: crate::tls::TlsError| BrokerError::Config(format!("TLS: {e}"));
    let cert = ReloadingCert::load(files).map_err(tls_error)?;
    let acceptor = TlsAcceptor::from(crate::tls::server_config(cert.clone(), &[]).map_err(tls_error)?);
    let listener = std::net::TcpListener::bind(listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| BrokerError::Config(format!("TLS listener {listen}: {e}")))?;
    let bound = listener.local_addr().map_err(|e| BrokerError::Config(e.to_string()))?;
    std::thread::Builder::new()
        .name("embedded-broker-tls".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            runtime.block_on(async move {
                let _watch = cert.watch(RELOAD_EVERY, CancellationToken::new());
                let listener = TcpListener::from_std(listener).expect("a non-blocking std listener");
                serve(listener, acceptor, upstream, max_connections, metrics).await;
            });
        })
        .map_err(|e| BrokerError::Config(e.to_string()))?;
    Ok(bound)
}

async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    upstream: SocketAddr,
    max_connections: usize,
    metrics: Arc<Metrics>,
) {
    let permits = Arc::new(Semaphore::new(max_connections));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, most likely: back off instead of spinning.
                if metrics.may_log("broker_tls_accept").is_some() {
                    tracing::error!(%error, "Embedded broker's TLS listener cannot accept connections.");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused(&metrics, "too_many_connections", peer);
            continue;
        };
        let (acceptor, metrics) = (acceptor.clone(), metrics.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            let mut tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(_)) => return refused(&metrics, "tls_handshake", peer),
                Err(_) => return refused(&metrics, "tls_handshake_timeout", peer),
            };
            let mut plain = match TcpStream::connect(upstream).await {
                Ok(plain) => plain,
                Err(error) => {
                    if metrics.may_log("broker_tls_upstream").is_some() {
                        tracing::error!(%error, %upstream, "Embedded broker's TLS front cannot reach the broker.");
                    }
                    return;
                }
            };
            let _ = plain.set_nodelay(true);
            // Either side closing ends the connection; a reset is how MQTT clients often leave.
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
        });
    }
}
