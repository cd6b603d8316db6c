//! TLS for every link the gateway serves or dials: the officer HTTPS listener, the embedded
//! broker's MQTT-over-TLS listener and the gateway's MQTT client. rustls with the ring provider
//! throughout; certificates are PEM files, and a served certificate is reloaded when its files
//! change (a renewed certificate takes effect without a restart).
//!
//! [`certs`] makes a local CA and certificates for the demo, the tests and small sites
//! (`firegrid certs`).

pub mod certs;

pub use firegrid_base::tls::{ClientTls, TlsError, load_certs, load_key, provider, roots};

use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// A certificate chain and its private key, served by a listener.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServeTls {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1). Keep it mode 0600.
    pub key: PathBuf,
    /// PEM CA certificates that client certificates must chain to. Present: clients without
    /// a valid certificate are refused during the handshake.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

fn certified_key(files: &ServeTls) -> Result<CertifiedKey, TlsError> {
    let chain = load_certs("certificate", &files.cert)?;
    let key = load_key("private key", &files.key)?;
    CertifiedKey::from_der(chain, key, &provider())
        .map_err(|source| TlsError::Rustls { what: "certificate and key", source })
}

/// The certificate a listener serves, swapped in place when its files change.
#[derive(Debug)]
pub struct ReloadingCert {
    files: ServeTls,
    current: RwLock<(Arc<CertifiedKey>, Option<SystemTime>)>,
}

fn modified(files: &ServeTls) -> Option<SystemTime> {
    let cert = fs::metadata(&files.cert).and_then(|m| m.modified()).ok()?;
    let key = fs::metadata(&files.key).and_then(|m| m.modified()).ok()?;
    Some(cert.max(key))
}

impl ReloadingCert {
    /// Loads the files; an error here stops the start.
    pub fn load(files: &ServeTls) -> Result<Arc<Self>, TlsError> {
        let stamp = modified(files);
        let key = certified_key(files)?;
        Ok(Arc::new(ReloadingCert { files: files.clone(), current: RwLock::new((Arc::new(key), stamp)) }))
    }

    /// Reloads when the files changed since the last load. A pair that does not load (a
    /// half-written renewal) is logged and the served certificate kept; it is tried again on
    /// the next change. Returns whether a new certificate is now served.
    pub fn reload_if_changed(&self) -> bool {
        let stamp = modified(&self.files);
        if stamp.is_none() || stamp == self.current.read().expect("certificate lock").1 {
            return false;
        }
        match certified_key(&self.files) {
            Ok(key) => {
                *self.current.write().expect("certificate lock") = (Arc::new(key), stamp);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded.");
                true
            }
            Err(error) => {
                self.current.write().expect("certificate lock").1 = stamp;
                tracing::error!(%error, "TLS certificate changed but does not load; still serving the previous one.");
                false
            }
        }
    }

    /// Checks the files every `every` until `stop`.
    pub fn watch(self: &Arc<Self>, every: Duration, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {
                        let this = this.clone();
                        let _ = tokio::task::spawn_blocking(move || this.reload_if_changed()).await;
                    }
                }
            }
        })
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("certificate lock").0.clone())
    }
}

/// A server configuration serving `cert` (reloaded as it changes), with client certificates
/// required when `files.client_ca` is set.
pub fn server_config(cert: Arc<ReloadingCert>, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls { what: "TLS versions", source })?;
    let builder = match &cert.files.client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots("client CA", ca)?), provider())
                    .build()
                    .map_err(|e| TlsError::Rustls {
                        what: "client CA",
                        source: rustls::Error::General(e.to_string()),
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests;
