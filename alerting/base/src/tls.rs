//! TLS material for every link that dials out: the gateway's MQTT client and the case store's
//! PostgreSQL connections. rustls with the ring provider throughout; certificates and keys are
//! PEM files. [`ClientTls`] is the configuration block (`[mqtt] tls`, `[alerting.store] tls`)
//! and [`ClientTls::client_config`] the rustls configuration made from it.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde::Deserialize;

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

/// How a client checks the server it dials (the broker, the database) and, optionally, proves
/// itself with a certificate of its own.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// PEM CA certificates the server's certificate must chain to.
    pub ca: PathBuf,
    /// PEM client certificate chain, for servers that require one (with `client_key`).
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

/// The certificates of a PEM file as trust anchors.
pub fn roots(what: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(what, path)? {
        roots.add(cert).map_err(|source| TlsError::Rustls { what, source })?;
    }
    Ok(roots)
}

impl ClientTls {
    /// The rustls client configuration: the server's certificate must chain to `ca` and name
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

    /// Checks that `host` (the server's address, which its certificate must name) can be
    /// matched against a certificate at all.
    pub fn check_name(host: &str) -> Result<(), TlsError> {
        ServerName::try_from(host.to_owned()).map(|_| ()).map_err(|_| TlsError::ServerName(host.to_owned()))
    }
}
