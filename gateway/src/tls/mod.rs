//! TLS for every link the gateway serves or dials: the officer HTTPS listener, the embedded
//! broker's MQTT-over-TLS listener and the gateway's MQTT client. rustls with the ring provider
//! throughout; certificates are PEM files, and a served certificate is reloaded when its files
//! change (a renewed certificate takes effect without a restart).
//!
//! [`certs`] makes a local CA and certificates for the demo, the tests and small sites
//! (`firegrid certs`).

pub mod certs;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// Why a TLS setting could not be used. Names the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{what} {path}: {source}")]
    Read {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the expected kind.
    #[error("{what} {path}: no {expected} in PEM form")]
    Pem {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What was looked for.
        expected: &'static str,
    },
    /// rustls refused the material (e.g. the key does not match the certificate).
    #[error("{what}: {source}")]
    Rustls {
        /// What was being set up.
        what: &'static str,
        /// Why.
        source: rustls::Error,
    },
    /// A host name that cannot be checked against a certificate.
    #[error("server name {0:?} is neither a DNS name nor an IP address")]
    ServerName(String),
}

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

/// How the gateway's MQTT client checks the broker and, optionally, proves itself.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// PEM CA certificates the broker's certificate must chain to.
    pub ca: PathBuf,
    /// PEM client certificate chain, for brokers that require one (with `client_key`).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

/// The rustls provider every configuration here is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_owned(), source })
}

/// Every certificate in a PEM file.
pub fn load_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(TlsError::Pem { what, path: path.to_owned(), expected: "certificate" });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn load_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(what, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::Pem {
        what,
        path: path.to_owned(),
        expected: "private key",
    })
}

fn roots(what: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(what, path)? {
        roots.add(cert).map_err(|source| TlsError::Rustls { what, source })?;
    }
    Ok(roots)
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

impl ClientTls {
    /// The rustls client configuration: the broker's certificate must chain to `ca` and name
    /// the host (rustls checks the name against the certificate's subject alternative names).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Rustls { what: "TLS versions", source })?
            .with_root_certificates(roots("CA", &self.ca)?);
        let config = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(load_certs("client certificate", cert)?, load_key("client key", key)?)
                .map_err(|source| TlsError::Rustls { what: "client certificate and key", source })?,
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(TlsError::Rustls {
                    what: "client certificate",
                    source: rustls::Error::General("client_cert and client_key go together".into()),
                });
            }
        };
        Ok(Arc::new(config))
    }

    /// Checks that `host` (the broker's address in `[mqtt]`, which its certificate must
    /// name) can be matched against a certificate at all.
    pub fn check_name(host: &str) -> Result<(), TlsError> {
        ServerName::try_from(host.to_owned()).map(|_| ()).map_err(|_| TlsError::ServerName(host.to_owned()))
    }
}

#[cfg(test)]
mod tests;
