//! The embedded MQTT broker (rumqttd), started when no external broker is configured, so that
//! one command runs the whole system on one machine. Production deployments point the gateway
//! at Mosquitto or an EMQX cluster instead (`[mqtt]` in the configuration).
//!
//! With a device key store it authenticates every login ([`Accounts`]): the gateway's own
//! connections, each keyed device (user name its id, password derived from its key, as in the
//! Mosquitto files of [`mosquitto`]), and the platform accounts of the configuration (carrier
//! platforms and bridges that publish for many devices). rumqttd has no topic ACLs, so a device
//! that logs in may publish under another device's topic; the message tags refuse what it
//! sends there. With `[embedded_broker.tls]` it also listens for MQTT over TLS (8883),
//! terminated by the gateway in front of rumqttd ([`tls_front`]): certificates reload when
//! renewed, and `client_ca` requires client certificates.

pub mod mosquitto;
pub mod tls_front;

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use firegrid_protocol::DeviceId;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::keys::KeyStore;
use crate::metrics::{Metrics, ReasonLabel};

/// Why the embedded broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The generated configuration was rejected.
    #[error("embedded broker configuration: {0}")]
    Config(String),
    /// The broker did not accept connections in time (the port may be taken).
    #[error("embedded broker did not start listening on {0} (is the port in use?)")]
    NotListening(SocketAddr),
}

/// An account of a platform or bridge that publishes for many devices (`[[embedded_broker.platforms]]`).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PlatformAccount {
    /// User name.
    pub username: String,
    /// SHA-256 of the password, 64 hexadecimal digits (`printf %s PASSWORD | sha256sum`). Use a
    /// random password of at least 128 bits: a hash of a guessable one is no protection.
    pub password_sha256: String,
}

impl std::fmt::Debug for PlatformAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformAccount").field("username", &self.username).finish_non_exhaustive()
    }
}

/// Who logged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Account {
    /// The gateway's own sessions.
    Gateway,
    /// A keyed device, by its own credentials.
    Device,
    /// A platform account.
    Platform,
}

/// Why a login was refused (the `reason` label of `firegrid_broker_logins_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefusal {
    /// No such account.
    UnknownUser,
    /// The account exists; the password is not its.
    WrongPassword,
    /// The device's key is revoked.
    Revoked,
}

impl LoginRefusal {
    /// Its label.
    pub fn label(self) -> &'static str {
        match self {
            LoginRefusal::UnknownUser => "unknown_user",
            LoginRefusal::WrongPassword => "wrong_password",
            LoginRefusal::Revoked => "revoked",
        }
    }
}

/// The gateway's user name on the embedded broker.
pub const GATEWAY_USER: &str = mosquitto::GATEWAY_USER;

/// The embedded broker's accounts.
pub struct Accounts {
    gateway_password: Zeroizing<String>,
    platforms: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts").field("platforms", &self.platforms.len()).finish_non_exhaustive()
    }
}

impl Accounts {
    /// The gateway's account with a fresh random password (it lives only in this process), and
    /// the platform accounts. Refuses a malformed `password_sha256`.
    pub fn new(platforms: &[PlatformAccount]) -> Result<Accounts, BrokerError> {
        let mut bytes = Zeroizing::new([0u8; 16]);
        getrandom::fill(&mut bytes[..]).expect("the operating system's random generator failed");
        let mut list = Vec::new();
        for p in platforms {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(p.password_sha256.trim(), &mut hash).map_err(|_| {
                BrokerError::Config(format!(
                    "platform account {:?}: password_sha256 must be 64 hexadecimal digits",
                    p.username
                ))
            })?;
            if p.username == GATEWAY_USER {
                return Err(BrokerError::Config(format!(
                    "platform account {:?}: name is reserved",
                    p.username
                )));
            }
            list.push((p.username.clone(), hash));
        }
        Ok(Accounts { gateway_password: Zeroizing::new(hex::encode(&bytes[..])), platforms: list })
    }

    /// The gateway's own password, for its MQTT sessions.
    pub fn gateway_password(&self) -> &str {
        &self.gateway_password
    }

    /// Judges one login against the accounts and the current key store at `now_ms` (Unix ms,
    /// for a rotation's grace period). Every comparison is constant-time.
    pub fn judge(
        &self,
        keys: &KeyStore,
        user: &str,
        password: &str,
        now_ms: u64,
    ) -> Result<Account, LoginRefusal> {
        if user == GATEWAY_USER {
            return match bool::from(password.as_bytes().ct_eq(self.gateway_password.as_bytes())) {
                true => Ok(Account::Gateway),
                false => Err(LoginRefusal::WrongPassword),
            };
        }
        if let Some((_, hash)) = self.platforms.iter().find(|(name, _)| name == user) {
            let given: [u8; 32] = Sha256::digest(password.as_bytes()).into();
            return match bool::from(given.ct_eq(hash)) {
                true => Ok(Account::Platform),
                false => Err(LoginRefusal::WrongPassword),
            };
        }
        let entry = DeviceId::new(user).ok().and_then(|id| keys.get(&id)).ok_or(LoginRefusal::UnknownUser)?;
        if entry.revoked {
            return Err(LoginRefusal::Revoked);
        }
        let current = entry.key.mqtt_password();
        // During a rotation's grace period the previous key's password still logs in.
        let previous =
            entry.previous.as_ref().filter(|(_, until)| now_ms < *until).map(|(key, _)| key.mqtt_password());
        let matches = |p: &str| bool::from(p.as_bytes().ct_eq(password.as_bytes()));
        if matches(&current) || previous.as_deref().is_some_and(matches) {
            Ok(Account::Device)
        } else {
            Err(LoginRefusal::WrongPassword)
        }
    }
}

/// The key store as it is now (reloaded by the gateway while it runs).
pub type CurrentKeys = Arc<dyn Fn() -> Arc<KeyStore> + Send + Sync>;

/// How the embedded broker runs.
pub struct Embedded {
    /// Plain MQTT listener.
    pub listen: SocketAddr,
    /// Most client connections.
    pub max_connections: usize,
    /// MQTT over TLS: listener and certificate files (reloaded when they change).
    pub tls: Option<(SocketAddr, crate::tls::ServeTls)>,
    /// Authenticate logins: the accounts and the key store they are judged against (read at
    /// each login, so rotations and revocations apply at once).
    pub auth: Option<(Arc<Accounts>, CurrentKeys)>,
    /// Where refused logins and TLS connections are counted.
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("listen", &self.listen)
            .field("tls", &self.tls.as_ref().map(|t| t.0))
            .field("auth", &self.auth.is_some())
            .finish()
    }
}

/// Starts rumqttd in its own threads and waits until it accepts connections. It runs until
/// the process exits.
pub fn start_embedded(embedded: Embedded) -> Result<(), BrokerError> {
    let Embedded { listen, max_connections, tls, auth, metrics } = embedded;
    // Persistent sessions (clean session off) are kept in memory while the process runs; the
    // in-flight window of 500 lets the gateway batch its fsyncs; payloads up to 256 KiB.
    let text = format!(
        r#"
        id = 0
        [router]
        id = 0
        max_connections = {max_connections}
        max_outgoing_packet_count = 500
        max_segment_size = 104857600
        max_segment_count = 10
        [v4.1]
        name = "v4-1"
        listen = "{listen}"
        next_connection_delay_ms = 0
        [v4.1.connections]
        connection_timeout_ms = 60000
        max_payload_size = 262144
        max_inflight_count = 500
        dynamic_filters = true
        "#
    );
    let mut config: rumqttd::Config =
        toml::from_str(&text).map_err(|e| BrokerError::Config(e.to_string()))?;
    let servers = config.v4.as_mut().expect("the v4 server is configured above");
    if let Some((accounts, keys)) = auth {
        for settings in servers.values_mut() {
            let (accounts, keys, metrics) = (accounts.clone(), keys.clone(), metrics.clone());
            settings.set_auth_handler(move |client_id: String, user: String, password: String| {
                let verdict = accounts.judge(&keys(), &user, &password, crate::clock::wall_ms());
                if let Err(refusal) = verdict {
                    metrics.broker_refused.get_or_create(&ReasonLabel { reason: refusal.label().into() }).inc();
                    if let Some(suppressed) = metrics.may_log("broker_login_refused") {
                        // The user name is logged (it says which account is under attack), the
                        // password never.
                        tracing::warn!(%client_id, %user, reason = refusal.label(), suppressed, "Embedded broker refused a login.");
                    }
                }
                std::future::ready(verdict.is_ok())
            });
        }
    }
    // TLS is terminated in front of rumqttd and carried to its plain listener. Started first,
    // so that a certificate that does not load stops the start before rumqttd runs.
    let client_certificates = tls.as_ref().is_some_and(|(_, files)| files.client_ca.is_some());
    let tls_bound = match &tls {
        Some((tls_listen, files)) => {
            let upstream = match listen.ip().is_unspecified() {
                true if listen.is_ipv4() => SocketAddr::from(([127, 0, 0, 1], listen.port())),
                true => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, listen.port())),
                false => listen,
            };
            Some(tls_front::start(*tls_listen, files, upstream, max_connections, metrics.clone())?)
        }
        None => None,
    };
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(error) = broker.start() {
                tracing::error!(%error, "Embedded MQTT broker stopped.");
            }
        })
        .map_err(|e| BrokerError::Config(e.to_string()))?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok() {
            match tls_bound {
                Some(tls_listen) => {
                    tracing::info!(%listen, %tls_listen, client_certificates, "Embedded MQTT broker listening (plain and TLS).")
                }
                None => tracing::info!(%listen, "Embedded MQTT broker listening."),
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(BrokerError::NotListening(listen))
}

#[cfg(test)]
mod tests;
