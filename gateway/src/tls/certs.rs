//! `firegrid certs`: a local certificate authority and the certificates signed by it, for the
//! demo, the tests and sites without a CA of their own (rcgen, ECDSA P-256).
//!
//! In the output directory:
//! - `ca.pem`, `ca.key`: the CA (made once; later runs sign with it, so certificates issued
//!   earlier stay valid). Copy `ca.pem` to every client (browsers, brokers, devices); keep
//!   `ca.key` offline where possible.
//! - `server.pem`, `server.key`: a server certificate for every `--host` (DNS names or IP
//!   addresses; `localhost` and `127.0.0.1` are always included), for the officer HTTPS
//!   listener and the MQTT broker.
//! - `client-{name}.pem`, `client-{name}.key` for every `--client`: client certificates (e.g.
//!   the gateway's, for a broker that requires them).
//!
//! Keys are written mode 0600.

use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// Why certificates were not made.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// rcgen refused (e.g. an existing `ca.pem` / `ca.key` that do not parse).
    #[error("{0}")]
    Rcgen(#[from] rcgen::Error),
    /// A `--host` or `--client` that cannot go into a certificate.
    #[error("{0}")]
    Name(String),
}

/// What to make.
#[derive(Debug, Clone)]
pub struct Request {
    /// Output directory.
    pub dir: PathBuf,
    /// Names the server certificate is valid for (beyond localhost and 127.0.0.1).
    pub hosts: Vec<String>,
    /// Client certificates to make, by common name.
    pub clients: Vec<String>,
    /// Validity of new certificates, days.
    pub days: u32,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Made {
    /// Whether the CA was made now (else the existing one signed).
    pub new_ca: bool,
    /// Files written.
    pub files: Vec<PathBuf>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CertsError + '_ {
    move |source| CertsError::Io { path: path.to_owned(), source }
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), CertsError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    file.write_all(text.as_bytes()).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    // A day of slack for clocks behind the issuer's.
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(i64::from(days));
}

fn name(common: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "firegrid");
    dn.push(DnType::CommonName, common);
    dn
}

fn san(host: &str) -> Result<SanType, CertsError> {
    match host.parse::<IpAddr>() {
        Ok(ip) => Ok(SanType::IpAddress(ip)),
        Err(_) => host
            .to_owned()
            .try_into()
            .map(SanType::DnsName)
            .map_err(|_| CertsError::Name(format!("{host:?} is neither a DNS name nor an IP address"))),
    }
}

/// Makes (or reuses) the CA and writes the certificates asked for.
pub fn make(req: &Request) -> Result<Made, CertsError> {
    fs::create_dir_all(&req.dir).map_err(io_err(&req.dir))?;
    let ca_pem = req.dir.join("ca.pem");
    let ca_key = req.dir.join("ca.key");
    let mut made = Made { new_ca: false, files: Vec::new() };
    let (ca_key_pair, ca_cert_pem) = if ca_pem.exists() && ca_key.exists() {
        let key = KeyPair::from_pem(&fs::read_to_string(&ca_key).map_err(io_err(&ca_key))?)?;
        (key, fs::read_to_string(&ca_pem).map_err(io_err(&ca_pem))?)
    } else {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name("firegrid local CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        // The CA outlives the certificates it signs.
        validity(&mut params, req.days.saturating_mul(4).max(3650));
        let cert = params.self_signed(&key)?;
        write(&ca_key, &key.serialize_pem(), true)?;
        write(&ca_pem, &cert.pem(), false)?;
        made.new_ca = true;
        made.files.extend([ca_pem.clone(), ca_key.clone()]);
        (key, cert.pem())
    };
    let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key_pair)?;

    let mut hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    for host in &req.hosts {
        if !hosts.contains(host) {
            hosts.push(host.clone());
        }
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = name(&hosts[hosts.len() - 1]);
    params.subject_alt_names = hosts.iter().map(|h| san(h)).collect::<Result<_, _>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut params, req.days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let (cert_path, key_path) = (req.dir.join("server.pem"), req.dir.join("server.key"));
    write(&key_path, &key.serialize_pem(), true)?;
    write(&cert_path, &cert.pem(), false)?;
    made.files.extend([cert_path, key_path]);

    for client in &req.clients {
        if client.is_empty() || !client.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(CertsError::Name(format!(
                "client name {client:?}: use letters, digits, '-', '_' and '.' (it names the files)"
            )));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = name(client);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut params, req.days);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        let (cert_path, key_path) =
            (req.dir.join(format!("client-{client}.pem")), req.dir.join(format!("client-{client}.key")));
        write(&key_path, &key.serialize_pem(), true)?;
        write(&cert_path, &cert.pem(), false)?;
        made.files.extend([cert_path, key_path]);
    }
    Ok(made)
}
