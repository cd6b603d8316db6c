//! The gateway's configuration: one TOML file, overridden by `FIREGRID_*` environment
//! variables, overridden by command-line flags. Every field is documented here, and
//! `gateway/firegrid.example.toml` shows them all with their defaults (a test loads it, so
//! it cannot rot).
//!
//! Environment overrides name a key path with `__` between levels:
//! `FIREGRID_MQTT__HOST=10.0.0.5` sets `[mqtt] host`, `FIREGRID_SPOOL__MAX_MIB=2048` sets
//! `[spool] max_mib`. Values are read as TOML (numbers, booleans, quoted strings) and fall
//! back to plain strings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::admission::AdmissionConfig;
use crate::sinks::influx::DestinationConfig;
use crate::sources::mqtt::MqttConfig;
use crate::spool::{SpoolConfig, WhenFull};

/// Everything the gateway reads at start.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the spool, dead letters and state files live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Address of the HTTP server: the officer API and console, `/healthz`, and (when this is
    /// a loopback address and `ops_listen` is not set) `/metrics` and `/api/unknown-devices`.
    #[serde(default = "default_http_listen")]
    pub http_listen: SocketAddr,
    /// Address for the operations endpoints (`/metrics`, the full `/healthz`,
    /// `/api/unknown-devices`), which say much about a deployment and are not for the
    /// network at large. Default: on `http_listen` when that is loopback, else 127.0.0.1:9091.
    #[serde(default)]
    pub ops_listen: Option<SocketAddr>,
    /// The HTTP listener sits behind a TLS-terminating reverse proxy (README, "Securing a
    /// deployment"). Without it, firegrid refuses to serve officer tokens over plain HTTP on
    /// an address other than loopback.
    #[serde(default)]
    pub http_tls_proxy: bool,
    /// HTTPS for the officer API and console (`[http_tls]`: `cert`, `key`, optional
    /// `client_ca`). The certificate is reloaded when its files change. `firegrid certs`
    /// makes a local CA and certificate.
    #[serde(default)]
    pub http_tls: Option<crate::tls::ServeTls>,
    /// The external broker. Absent: the embedded broker is started (see `embedded_broker`).
    #[serde(default)]
    pub mqtt: Option<MqttConfig>,
    /// The embedded broker, used when `[mqtt]` is absent.
    #[serde(default)]
    pub embedded_broker: EmbeddedBrokerConfig,
    /// The device registry.
    #[serde(default)]
    pub registry: RegistryConfig,
    /// The durable spool between ingest and the databases.
    #[serde(default)]
    pub spool: SpoolSettings,
    /// Per-device duplicate, replay and rate checks.
    #[serde(default)]
    pub admission: AdmissionSettings,
    /// Message checks.
    #[serde(default)]
    pub limits: LimitSettings,
    /// Databases to write to (`[[influx]]`, any number). None: the spool is the local archive.
    #[serde(default)]
    pub influx: Vec<DestinationConfig>,
    /// The CoAP endpoint for NB-IoT detectors' firmware transfers (`[coap]`). Absent: none.
    #[serde(default)]
    pub coap: Option<crate::sources::coap::CoapConfig>,
    /// Modbus water-pressure and tank-level sensors to poll (`[[modbus.devices]]`).
    #[serde(default)]
    pub modbus: Option<crate::sources::modbus::ModbusConfig>,
    /// The alarm loop: deadlines, officers, notification routes.
    #[serde(default)]
    pub alerting: firegrid_cases::AlertingConfig,
    /// Notification channels (`[notify.channels.<name>]`) and delivery settings.
    #[serde(default)]
    pub notify: firegrid_notify::NotifyConfig,
    /// The officers' console (`[console]`): a basemap under the village map.
    #[serde(default)]
    pub console: firegrid_officers::console::ConsoleConfig,
    /// Over-the-air firmware (`[firmware]`): the vendor key images must be signed with.
    #[serde(default)]
    pub firmware: FirmwareConfig,
}

/// Over-the-air firmware updates (`firegrid firmware publish`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FirmwareConfig {
    /// The vendor's Ed25519 public keys by key slot, slot 0 first: 64 hexadecimal digits each
    /// (printed by `firegrid firmware keygen`), the keys the detectors' bootloader is built
    /// with (up to 3: the key in use and its offline spares). An image is rolled out only
    /// when its signature verifies under the key of the slot it names (`firegrid firmware
    /// sign --key-slot`). Absent, and `vendor_public_key` absent too: no rollout starts.
    #[serde(default)]
    pub vendor_public_keys: Option<Vec<String>>,
    /// The older one-key form: the key of slot 0 alone. Setting it together with
    /// `vendor_public_keys` is a configuration error.
    #[serde(default)]
    pub vendor_public_key: Option<String>,
}

impl FirmwareConfig {
    /// The configured vendor keys by slot ([`crate::firmware::delivery::control::vendor_keys`]).
    pub fn vendor_keys(
        &self,
    ) -> Result<crate::firmware::signing::VendorKeys, crate::firmware::delivery::control::ControlError> {
        crate::firmware::delivery::control::vendor_keys(
            self.vendor_public_key.as_deref(),
            self.vendor_public_keys.as_deref(),
        )
    }
}

/// The embedded MQTT broker.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedBrokerConfig {
    /// Address it listens on.
    #[serde(default = "default_broker_listen")]
    pub listen: SocketAddr,
    /// Most client connections it accepts.
    #[serde(default = "default_broker_connections")]
    pub max_connections: usize,
    /// MQTT over TLS beside the plain listener (`[embedded_broker.tls]`: `cert`, `key`,
    /// optional `client_ca`, which makes every device present a certificate that chains to
    /// it). The certificate is reloaded when its files change.
    #[serde(default)]
    pub tls: Option<crate::tls::ServeTls>,
    /// Address of the TLS listener.
    #[serde(default = "default_broker_tls_listen")]
    pub tls_listen: SocketAddr,
    /// Authenticate every login (the gateway, keyed devices, `platforms`). Default: on when
    /// `[registry] keys` is set (device passwords come from their keys), off otherwise.
    #[serde(default)]
    pub authenticate: Option<bool>,
    /// Accounts of carrier platforms and bridges that publish for many devices.
    #[serde(default)]
    pub platforms: Vec<crate::broker::PlatformAccount>,
}

/// The device registry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// CSV file of devices (see `gateway/REGISTRY.md`). Absent: every device is unknown,
    /// accepted and listed at `/api/unknown-devices`.
    #[serde(default)]
    pub csv: Option<PathBuf>,
    /// Device key store (TOML, mode 0600), written by `firegrid devices provision`. Absent:
    /// no device has a key and every message is accepted unsigned (counted as
    /// unauthenticated). Reloaded when the file changes.
    #[serde(default)]
    pub keys: Option<PathBuf>,
}

/// Spool sizing.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpoolSettings {
    /// Size limit of the whole spool, MiB.
    #[serde(default = "default_spool_mib")]
    pub max_mib: u64,
    /// Segment file size, MiB.
    #[serde(default = "default_segment_mib")]
    pub segment_mib: u64,
    /// What gives way at the limit: `shed_oldest_telemetry` (default) or
    /// `drop_new_telemetry`. Alarm and event records are never dropped.
    #[serde(default)]
    pub when_full: WhenFull,
    /// Without databases, how long the local archive keeps data.
    #[serde(default = "default_archive_age", with = "humantime_serde")]
    pub archive_max_age: Duration,
}

/// Admission checks.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdmissionSettings {
    /// Sustained messages per second per device (telemetry and events).
    #[serde(default = "default_rate")]
    pub rate_per_s: f64,
    /// Burst per device (telemetry and events).
    #[serde(default = "default_burst")]
    pub burst: f64,
    /// Sustained alarm-class messages per second per device.
    #[serde(default = "default_alarm_rate")]
    pub alarm_rate_per_s: f64,
    /// Alarm-class burst per device.
    #[serde(default = "default_alarm_burst")]
    pub alarm_burst: f64,
    /// Sustained firmware-transfer statuses (`fw_status`) per second per device: a budget of
    /// their own, so a transfer neither spends the device's telemetry budget nor is refused
    /// by it. A rollout paces its chunks to each device under this rate (with a 25 % margin).
    #[serde(default = "default_firmware_rate")]
    pub firmware_rate_per_s: f64,
    /// Firmware-status burst per device.
    #[serde(default = "default_firmware_burst")]
    pub firmware_burst: f64,
}

/// Message checks.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Largest payload accepted, bytes.
    #[serde(default = "default_max_payload")]
    pub max_payload: usize,
    /// A device clock further ahead of the gateway's than this is flagged: the message is
    /// accepted and stamped with the gateway's time, `firegrid_skewed_timestamps_total
    /// {direction="ahead"}` counts it, and the device is logged (rate-limited). Never a
    /// reason to refuse a message: a detector with a wrong clock still reports fires.
    #[serde(default = "default_clock_ahead", with = "humantime_serde", alias = "max_future")]
    pub clock_ahead: Duration,
    /// The same for a device clock behind the gateway's. Messages held in a device outbox
    /// through an outage are legitimately behind, hence the wider default.
    #[serde(default = "default_clock_behind", with = "humantime_serde")]
    pub clock_behind: Duration,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("firegrid-data")
}
fn default_http_listen() -> SocketAddr {
    "127.0.0.1:8080".parse().unwrap()
}
fn default_broker_listen() -> SocketAddr {
    "127.0.0.1:1883".parse().unwrap()
}
fn default_broker_tls_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8883))
}
fn default_broker_connections() -> usize {
    20_000
}
fn default_spool_mib() -> u64 {
    1024
}
fn default_segment_mib() -> u64 {
    16
}
fn default_archive_age() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
fn default_rate() -> f64 {
    AdmissionConfig::default().rate_per_s
}
fn default_burst() -> f64 {
    AdmissionConfig::default().burst
}
fn default_alarm_rate() -> f64 {
    AdmissionConfig::default().alarm_rate_per_s
}
fn default_alarm_burst() -> f64 {
    AdmissionConfig::default().alarm_burst
}
fn default_firmware_rate() -> f64 {
    AdmissionConfig::default().firmware_rate_per_s
}
fn default_firmware_burst() -> f64 {
    AdmissionConfig::default().firmware_burst
}
fn default_max_payload() -> usize {
    firegrid_protocol::MAX_PAYLOAD
}
fn default_clock_ahead() -> Duration {
    Duration::from_millis(firegrid_protocol::Limits::default().clock_ahead_ms)
}
fn default_clock_behind() -> Duration {
    Duration::from_millis(firegrid_protocol::Limits::default().clock_behind_ms)
}

macro_rules! default_from_serde {
    ($($t:ty),*) => {$(
        impl Default for $t {
            fn default() -> Self {
                toml::from_str("").expect("every field has a default")
            }
        }
    )*};
}
default_from_serde!(Config, EmbeddedBrokerConfig, SpoolSettings, AdmissionSettings, LimitSettings);

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file (or an override) does not fit the schema; the message has the line and column.
    #[error("{origin}: {message}")]
    Invalid {
        /// The file, or "environment".
        origin: String,
        /// What is wrong, and where.
        message: String,
    },
    /// Several problems, each on its own line.
    #[error("{} problems:\n{}", .0.len(), .0.iter().map(|p| format!("- {p}")).collect::<Vec<_>>().join("\n"))]
    Many(Vec<ConfigError>),
}

impl Config {
    /// Reads `path` (or the defaults, when `None`) and applies `FIREGRID_*` overrides from
    /// `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (origin, text) = match path {
            Some(p) => (
                p.display().to_string(),
                std::fs::read_to_string(p)
                    .map_err(|source| ConfigError::Read { path: p.to_owned(), source })?,
            ),
            None => ("defaults".to_owned(), String::new()),
        };
        let overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| (k.starts_with("FIREGRID_") && k.contains("__")) || is_top_level_override(k))
            .collect();
        if overrides.is_empty() {
            // Parsing the text itself keeps line and column numbers in every error.
            return toml::from_str(&text)
                .map_err(|e| ConfigError::Invalid { origin, message: toml_problem(&text, &e) });
        }
        let mut table: toml::Table = toml::from_str(&text)
            .map_err(|e| ConfigError::Invalid { origin: origin.clone(), message: toml_problem(&text, &e) })?;
        for (key, value) in &overrides {
            apply_override(&mut table, key, value);
        }
        Config::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Invalid {
            origin: format!(
                "{origin} with overrides from {}",
                overrides.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", ")
            ),
            message: e.to_string(),
        })
    }

    /// The spool settings as the spool takes them.
    pub fn spool_config(&self) -> SpoolConfig {
        SpoolConfig {
            dir: self.data_dir.join("spool"),
            segment_bytes: self.spool.segment_mib * 1024 * 1024,
            max_bytes: self.spool.max_mib * 1024 * 1024,
            when_full: self.spool.when_full,
            archive_max_age_ms: Some(self.spool.archive_max_age.as_millis() as u64),
        }
    }

    /// The admission settings as the checks take them.
    pub fn admission_config(&self) -> AdmissionConfig {
        AdmissionConfig {
            rate_per_s: self.admission.rate_per_s,
            burst: self.admission.burst,
            alarm_rate_per_s: self.admission.alarm_rate_per_s,
            alarm_burst: self.admission.alarm_burst,
            firmware_rate_per_s: self.admission.firmware_rate_per_s,
            firmware_burst: self.admission.firmware_burst,
            ..AdmissionConfig::default()
        }
    }

    /// The shortest time between two firmware commands to one device: each is answered by one
    /// `fw_status`, and these must stay within `[admission] firmware_rate_per_s`. A quarter
    /// more than the rate's interval, so statuses the network bunched (or a gateway clock a
    /// little fast against the bucket's) are absorbed by the burst instead of refused.
    pub fn firmware_command_gap(&self) -> Duration {
        // `check` refuses a rate that is not positive; the minimum keeps this total.
        Duration::from_secs_f64(1.25 / self.admission.firmware_rate_per_s.max(0.01))
    }

    /// The message limits as the protocol takes them.
    pub fn protocol_limits(&self) -> firegrid_protocol::Limits {
        firegrid_protocol::Limits {
            max_payload: self.limits.max_payload,
            clock_ahead_ms: self.limits.clock_ahead.as_millis() as u64,
            clock_behind_ms: self.limits.clock_behind.as_millis() as u64,
        }
    }

    /// Checks everything `run` checks before it starts (what serde cannot: unique names, TLS
    /// files, the registry, key store, officer directory and holiday files, routes to defined
    /// channels, officers' scopes the registry knows) and returns every problem at once.
    pub fn check(&self) -> Result<(), ConfigError> {
        let problems = self.problems();
        match problems.len() {
            0 => Ok(()),
            1 => Err(problems.into_iter().next().expect("one problem")),
            _ => Err(ConfigError::Many(problems)),
        }
    }

    /// Every problem [`Config::check`] finds.
    pub fn problems(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        let mut problem = |origin: &str, message: String| {
            out.push(ConfigError::Invalid { origin: origin.to_owned(), message });
        };
        let firmware = &self.firmware;
        if let Err(e) = firmware.vendor_keys()
            && (firmware.vendor_public_key.is_some() || firmware.vendor_public_keys.is_some())
        {
            let origin = if firmware.vendor_public_keys.is_some() {
                "[firmware] vendor_public_keys"
            } else {
                "[firmware] vendor_public_key"
            };
            problem(origin, e.to_string());
        }
        // Zero would refuse every status of a transfer, so no image could ever arrive.
        let firmware_rate = self.admission.firmware_rate_per_s;
        if !(firmware_rate > 0.0 && firmware_rate.is_finite()) || self.admission.firmware_burst < 1.0 {
            problem(
                "[admission] firmware_rate_per_s",
                "firmware_rate_per_s must be a positive number and firmware_burst at least 1".into(),
            );
        }
        let mut names: Vec<&str> = self.influx.iter().map(|d| d.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            problem("[[influx]]", format!("destination name {:?} is used twice", w[0]));
        }
        if !self.http_listen.ip().is_loopback()
            && self.alerting.officers.is_some()
            && !self.http_tls_proxy
            && self.http_tls.is_none()
        {
            problem(
                "http_listen",
                format!(
                    "refusing to serve officer tokens over plain HTTP on {}: configure [http_tls], or listen \
                     on loopback behind a TLS-terminating proxy and set http_tls_proxy = true (README, \
                     \"Securing a deployment\")",
                    self.http_listen
                ),
            );
        }
        if self.alerting.store.standby && self.mqtt.is_none() {
            problem(
                "[alerting.store] standby",
                "a standby shares the active gateway's broker: configure [mqtt] (an embedded broker would be a second one)"
                    .to_owned(),
            );
        }
        if let Some(mqtt) = &self.mqtt {
            for session in crate::sources::mqtt::Session::ALL {
                if let Err(message) = mqtt.filters(session) {
                    problem("[mqtt]", message);
                    break;
                }
            }
            if let Err(e) = mqtt.options(String::new()) {
                problem("[mqtt.tls]", e.to_string());
            }
            // The broker splits a shared subscription's messages between the replicas, and each
            // would keep its own cases and liveness: a fire's two detectors confirmed on
            // neither, about half of every device's heartbeats seen by each (offline cases
            // that are not), duplicates judged per replica. So replicas only ever ingest.
            if mqtt.shared_group.is_some() && (self.alerting.enabled || self.registry.csv.is_some()) {
                problem(
                    "[mqtt] shared_group",
                    "replicas on a shared subscription each see only part of every device's messages, \
                     which splits the alarm loop's cases and the registry's liveness between them: \
                     use shared_group only for ingest-only replicas ([alerting] enabled = false and no \
                     [registry] csv), and run the alarm loop on one gateway"
                        .to_owned(),
                );
            }
        }
        if let Some(tls) = &self.http_tls
            && let Err(e) =
                crate::tls::ReloadingCert::load(tls).and_then(|cert| crate::tls::server_config(cert, &[]))
        {
            problem("[http_tls]", e.to_string());
        }
        if let Some(tls) = &self.embedded_broker.tls
            && self.mqtt.is_none()
            && let Err(e) =
                crate::tls::ReloadingCert::load(tls).and_then(|cert| crate::tls::server_config(cert, &[]))
        {
            problem("[embedded_broker.tls]", e.to_string());
        }
        if let Some(basemap) = &self.console.basemap
            && let Err(problems) = basemap.check()
        {
            for message in problems {
                problem("[console.basemap]", message);
            }
        }
        if let Err(e) = crate::broker::Accounts::new(&self.embedded_broker.platforms) {
            problem("[[embedded_broker.platforms]]", e.to_string());
        }
        if self.embedded_broker.authenticate == Some(true)
            && self.registry.keys.is_none()
            && self.mqtt.is_none()
        {
            tracing::warn!(
                "embedded_broker.authenticate is on without [registry] keys: only the gateway and platform accounts can log in."
            );
        }
        let registry = match &self.registry.csv {
            Some(path) => match crate::registry::Registry::load(path) {
                Ok(registry) => Some(registry),
                Err(e) => {
                    problem("[registry] csv", e.to_string());
                    None
                }
            },
            None => None,
        };
        if let Some(path) = &self.registry.keys
            && let Err(e) = crate::keys::KeyStore::load(path)
        {
            problem("[registry] keys", e.to_string());
        }
        if self.alerting.enabled {
            self.alerting_problems(registry.as_ref(), &mut problem);
        }
        out
    }

    fn alerting_problems(
        &self,
        registry: Option<&crate::registry::Registry>,
        problem: &mut impl FnMut(&str, String),
    ) {
        let alerting = &self.alerting;
        if let Err(message) = alerting.engine.validate() {
            problem("[alerting.engine]", message);
        }
        if let Some(message) = alerting.store.problem() {
            problem("[alerting.store]", message);
        }
        if let Some(tls) = &alerting.store.tls
            && let Err(e) = tls.client_config()
        {
            problem("[alerting.store] tls", e.to_string());
        }
        if let Some(desk) = &alerting.unplaced_desk
            && let Err(e) = desk.parse::<firegrid_alerting::Scope>()
        {
            problem("[alerting] unplaced_desk", e.to_string());
        }
        if let Some(path) = &alerting.holidays {
            let read = std::fs::read_to_string(path).map_err(|e| e.to_string());
            if let Err(message) = read.and_then(|text| firegrid_alerting::Calendar::from_toml(&text)) {
                problem("[alerting] holidays", format!("{}: {message}", path.display()));
            }
        }
        let channels: Vec<&String> = self.notify.channels.keys().collect();
        if let Err(e) = firegrid_notify::build_channels(&self.notify.channels) {
            problem("[notify.channels]", e.to_string());
        }
        for (desk, names) in &alerting.routes {
            if desk != "*" && desk.parse::<firegrid_alerting::Scope>().is_err() {
                problem("[alerting.routes]", format!("{desk:?} is not `level:name` or `*`"));
            }
            for missing in names.iter().filter(|n| !channels.contains(n)) {
                problem(
                    "[alerting.routes]",
                    format!("{desk:?} names channel {missing:?}, which [notify.channels] does not define"),
                );
            }
        }
        let Some(path) = &alerting.officers else { return };
        let directory = match firegrid_officers::Directory::load(path) {
            Ok(directory) => directory,
            Err(e) => return problem("[alerting] officers", e.to_string()),
        };
        // An officer whose scope names no place the registry knows sees nothing and is paged
        // for nothing: almost always a typo.
        let Some(registry) = registry else { return };
        for officer in directory.officers() {
            let scope = &officer.scope;
            use firegrid_alerting::Level;
            let known = match scope.level {
                Level::District => {
                    scope.name == alerting.district || registry.district() == Some(&scope.name)
                }
                level => registry.devices().iter().any(|d| {
                    let b = &d.building;
                    let name = match level {
                        Level::Grid => &b.grid,
                        Level::Community => &b.community,
                        _ => &b.street,
                    };
                    **name == *scope.name
                }),
            };
            if !known {
                problem(
                    "[alerting] officers",
                    format!(
                        "{}: officer {:?} has scope {scope}, which no device in {} belongs to",
                        path.display(),
                        officer.id,
                        self.registry.csv.as_ref().map_or_else(String::new, |p| p.display().to_string())
                    ),
                );
            }
        }
    }

    /// Where the operations endpoints are served: `None` when on `http_listen` itself.
    pub fn ops_listener(&self) -> Option<SocketAddr> {
        match self.ops_listen {
            Some(ops) if ops != self.http_listen => Some(ops),
            Some(_) => None,
            None if self.http_listen.ip().is_loopback() => None,
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9091))),
        }
    }
}

/// A TOML error as `line L, `name`: what is wrong`, without the offending text: the file
/// holds passwords, webhook secrets and robot keys, which an error message must not repeat.
fn toml_problem(text: &str, e: &toml::de::Error) -> String {
    let line = e.span().map_or(1, |span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let name = text
        .lines()
        .nth(line - 1)
        .and_then(|l| l.split_once('='))
        .map(|(name, _)| format!(", `{}`", name.trim()))
        .unwrap_or_default();
    format!("line {line}{name}: {}", e.message())
}

/// `FIREGRID_DATA_DIR` and `FIREGRID_HTTP_LISTEN` set top-level keys.
fn is_top_level_override(key: &str) -> bool {
    matches!(key, "FIREGRID_DATA_DIR" | "FIREGRID_HTTP_LISTEN")
}

fn apply_override(table: &mut toml::Table, key: &str, value: &str) {
    let path: Vec<String> =
        key.trim_start_matches("FIREGRID_").split("__").map(|s| s.to_ascii_lowercase()).collect();
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let mut node = table;
    for part in &path[..path.len() - 1] {
        let entry = node.entry(part.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        node = entry.as_table_mut().unwrap();
    }
    node.insert(path[path.len() - 1].clone(), parsed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_example_config_loads_and_equals_the_defaults_where_it_says_so() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("firegrid.example.toml");
        let cfg = Config::load(Some(&path), env(&[])).unwrap();
        cfg.check().unwrap();
        assert_eq!(cfg.spool, SpoolSettings::default());
        assert_eq!(cfg.admission, AdmissionSettings::default());
        // 5 statuses/s with a quarter's margin: a command every 250 ms per device.
        assert_eq!(cfg.firmware_command_gap(), Duration::from_millis(250));
        assert_eq!(cfg.limits, LimitSettings::default());
        assert_eq!(cfg.influx.len(), 2);
        assert!(cfg.mqtt.is_none(), "the example runs the embedded broker");
        // The engine settings shown are the defaults, so the example documents them.
        assert_eq!(cfg.alerting.engine, firegrid_alerting::Config::default());
        assert_eq!(cfg.alerting.retention, firegrid_cases::AlertingConfig::default().retention);
        let channels = firegrid_notify::build_channels(&cfg.notify.channels).unwrap();
        for names in cfg.alerting.routes.values() {
            assert!(
                names.iter().all(|n| channels.contains_key(n)),
                "routes name configured channels: {names:?}"
            );
        }
    }

    #[test]
    fn a_firmware_budget_that_refuses_every_status_is_refused() {
        for (rate, burst) in [("0.0", "20.0"), ("-1.0", "20.0"), ("5.0", "0.5")] {
            let cfg = Config::load(
                None,
                env(&[
                    ("FIREGRID_ADMISSION__FIRMWARE_RATE_PER_S", rate),
                    ("FIREGRID_ADMISSION__FIRMWARE_BURST", burst),
                ]),
            )
            .unwrap();
            let problems = cfg.problems().iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n");
            assert!(problems.contains("[admission] firmware_rate_per_s"), "{rate}, {burst}: {problems}");
        }
    }

    #[test]
    fn vendor_keys_by_slot_or_the_single_key_but_never_both() {
        let dir = tempfile::tempdir().unwrap();
        let (k0, k1) = (
            "2152f8d19b791d24453242e15f2eab6cb7cffa7b6a5ed30097960e069881db12",
            "22fc297792f0b6ffc0bfcfdb7edb0c0aa14e025a365ec0e342e86e3829cb74b6",
        );
        let problems = |firmware: &str| {
            let path = dir.path().join("firmware.toml");
            std::fs::write(&path, format!("[firmware]\n{firmware}\n")).unwrap();
            let cfg = Config::load(Some(&path), env(&[])).unwrap();
            let vendor = cfg.firmware.vendor_keys().map(|k| k.len()).ok();
            let problems: Vec<String> =
                cfg.problems().iter().map(|p| p.to_string()).filter(|p| p.contains("[firmware]")).collect();
            (vendor, problems.join("\n"))
        };
        assert_eq!(problems(&format!("vendor_public_key = \"{k0}\"")), (Some(1), String::new()));
        assert_eq!(problems(&format!("vendor_public_keys = [\"{k0}\", \"{k1}\"]")), (Some(2), String::new()));
        let (vendor, both) =
            problems(&format!("vendor_public_key = \"{k0}\"\nvendor_public_keys = [\"{k0}\", \"{k1}\"]"));
        assert_eq!(vendor, None);
        assert!(both.contains("sets both vendor_public_key and vendor_public_keys"), "{both}");
        let (_, bad) = problems(&format!("vendor_public_keys = [\"{k0}\", \"12\"]"));
        assert!(bad.contains("vendor_public_keys") && bad.contains("slot 1"), "{bad}");
        assert_eq!(problems(""), (None, String::new()), "none configured: no rollout, no problem");
    }

    #[test]
    fn errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "data_dir = \"x\"\n\n[spool]\nmax_mb = 5\n").unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("max_mb"), "{err}");
        // A broken line holding a secret is named, never echoed.
        std::fs::write(&path, "[mqtt]\nhost = \"h\"\npassword = s3cr3t-unquoted\n").unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("password") && !err.contains("s3cr3t"), "{err}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let cfg = Config::load(
            None,
            env(&[
                ("FIREGRID_MQTT__HOST", "broker.local"),
                ("FIREGRID_MQTT__PORT", "1884"),
                ("FIREGRID_SPOOL__MAX_MIB", "64"),
                ("FIREGRID_DATA_DIR", "/tmp/fg"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        let mqtt = cfg.mqtt.unwrap();
        assert_eq!((mqtt.host.as_str(), mqtt.port), ("broker.local", 1884));
        assert_eq!(cfg.spool.max_mib, 64);
        assert_eq!(cfg.data_dir, PathBuf::from("/tmp/fg"));
        let err = Config::load(None, env(&[("FIREGRID_SPOOL__MAX_MIB", "lots")])).unwrap_err().to_string();
        assert!(err.contains("FIREGRID_SPOOL__MAX_MIB"), "{err}");
    }

    #[test]
    fn a_shared_subscription_is_refused_with_the_alarm_loop_or_liveness_on() {
        let dir = tempfile::tempdir().unwrap();
        let registry = dir.path().join("registry.csv");
        std::fs::write(
            &registry,
            "device_id,kind,model,building_id,building_address,lat,lon,grid,community,street,village\n",
        )
        .unwrap();
        let mqtt = "[mqtt]\nhost = \"h\"\nshared_group = \"gw\"\n";
        let refused = |text: &str| {
            let path = dir.path().join("shared.toml");
            std::fs::write(&path, text).unwrap();
            let cfg = Config::load(Some(&path), env(&[])).unwrap();
            cfg.problems().iter().any(|p| p.to_string().contains("shared_group"))
        };
        // The alarm loop is on by default.
        assert!(refused(mqtt));
        let liveness = format!("{mqtt}[alerting]\nenabled = false\n[registry]\ncsv = {registry:?}\n");
        assert!(refused(&liveness));
        assert!(!refused(&format!("{mqtt}[alerting]\nenabled = false\n")));
    }

    #[test]
    fn the_case_store_can_be_put_in_postgresql_without_a_password_in_the_file() {
        let load = |conninfo: &str| {
            let vars = [("FIREGRID_ALERTING__STORE__POSTGRES", conninfo)];
            Config::load(None, env(&vars)).unwrap()
        };
        assert_eq!(Config::default().alerting.store, firegrid_cases::StoreConfig::default());
        let cfg = load("host=db.example user=firegrid dbname=firegrid");
        assert_eq!(
            cfg.alerting.store.postgres.as_deref(),
            Some("host=db.example user=firegrid dbname=firegrid")
        );
        assert!(cfg.alerting.store.problem().is_none());
        for (conninfo, expected) in [
            ("host=db.example password=hunter22", "not in the connection string"),
            ("postgresql://firegrid:hunter22@db.example/firegrid", "not in the connection string"),
            ("host=db.example port=hunter22", "not a connection string"),
        ] {
            let message = load(conninfo).check().unwrap_err().to_string();
            assert!(message.contains("[alerting.store]") && message.contains(expected), "{message}");
            assert!(!message.contains("hunter22"), "{message}");
        }

        // TLS and the connection string's sslmode must agree; the CA must load.
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let with_tls = |conninfo: &str, ca: &std::path::Path| {
            let mut cfg = load(conninfo);
            cfg.alerting.store.tls =
                Some(crate::tls::ClientTls { ca: ca.to_owned(), client_cert: None, client_key: None });
            cfg
        };
        crate::tls::certs::make(&crate::tls::certs::Request {
            dir: dir.path().to_owned(),
            hosts: vec!["db.example".into()],
            clients: Vec::new(),
            days: 30,
        })
        .unwrap();
        with_tls("host=db.example user=firegrid dbname=firegrid", &ca).check().unwrap();
        for (cfg, expected) in [
            (with_tls("host=db.example sslmode=disable", &ca), "sslmode=disable contradicts tls"),
            (load("host=db.example sslmode=require"), "sslmode=require needs tls"),
            (with_tls("host=db.example", &dir.path().join("no-such-ca.pem")), "no-such-ca.pem"),
        ] {
            let message = cfg.check().unwrap_err().to_string();
            assert!(message.contains("[alerting.store]") && message.contains(expected), "{message}");
        }

        // The password: the file's first line, else the environment.
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cr3t\n").unwrap();
        let from_env =
            |name: &str| (name == firegrid_cases::POSTGRES_PASSWORD_ENV).then(|| "from-env".to_owned());
        let mut store = cfg.alerting.store;
        assert_eq!(store.password(from_env).unwrap().as_deref(), Some("from-env"));
        store.password_file = Some(file);
        assert_eq!(store.password(from_env).unwrap().as_deref(), Some("s3cr3t"));
        store.password_file = Some(dir.path().join("missing"));
        assert!(store.password(from_env).is_err());
    }

    #[test]
    fn clock_bounds_reach_the_protocol_limits() {
        let defaults = Config::default().protocol_limits();
        assert_eq!(defaults, firegrid_protocol::Limits::default());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clock.toml");
        // `max_future`, the earlier name of `clock_ahead`, is still read.
        std::fs::write(&path, "[limits]\nmax_future = \"10m\"\nclock_behind = \"2h\"\n").unwrap();
        let limits = Config::load(Some(&path), env(&[])).unwrap().protocol_limits();
        assert_eq!((limits.clock_ahead_ms, limits.clock_behind_ms), (600_000, 7_200_000));
    }
}
