//! The agent's configuration: one TOML file. Every field is documented here, and
//! `firmware/camera/firegrid-camera.example.toml` shows them all (a test loads it, so it
//! cannot rot). Durations are human-readable (`"10s"`, `"2m"`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use firegrid_protocol::{DeviceId, DeviceKey, Encoding, IdError, VillageId};
use serde::Deserialize;

use crate::channel::TrackerConfig;
use crate::signal::ExtraCodes;
use crate::vendor::Vendor;

/// Everything the agent reads at start.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The village id, the second level of every topic (`fg/v1/{village}/...`).
    pub village: String,
    /// This camera's device id in the firegrid registry (topic level and `dev` field).
    pub device: String,
    /// Directory for the outbox (`outbox.jsonl`) and the boot counter (`boot.json`). Must
    /// survive reboots: the outbox holds events not yet acknowledged.
    pub state_dir: PathBuf,
    /// The camera and its event API.
    pub camera: CameraConfig,
    /// The channels whose health is reported, each with an optional RTSP URL to probe.
    /// Channels that appear in events are added on the fly.
    #[serde(default = "default_channels")]
    pub channels: Vec<ChannelConfig>,
    /// The RTSP `OPTIONS` probe of channels with an `rtsp` URL.
    #[serde(default)]
    pub probe: ProbeConfig,
    /// The MQTT broker the gateway listens on.
    pub mqtt: MqttConfig,
    /// The outbox.
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// This camera's device key: 64 hexadecimal digits, its `key` column in the provisioning
    /// file `firegrid devices provision` writes. With a key every uplink is signed and every
    /// downlink must be authenticated (unsigned, forged, wrong-boot and replayed commands are
    /// refused and counted); without one uplinks go unsigned and unsigned commands are
    /// accepted, as in schema version 1 (the migration path). Keep the file readable by the
    /// agent only (mode 0600): the key is a secret, and no log or error prints it.
    #[serde(default)]
    pub key: Option<KeyText>,
}

/// The text of a device key from the configuration. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct KeyText(String);

impl KeyText {
    /// A key's text (64 hexadecimal digits).
    pub fn new(hex: impl Into<String>) -> Self {
        KeyText(hex.into())
    }
}

impl std::fmt::Debug for KeyText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyText(redacted)")
    }
}

/// How to reach the camera's events.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// `hikvision` (ISAPI alert stream), `dahua` (eventManager attach stream) or `onvif`
    /// (PullPoint subscription).
    pub vendor: Vendor,
    /// The camera's base URL, e.g. `http://192.168.1.64` (HTTPS works too).
    pub url: String,
    /// The event endpoint's path and query, if not the vendor's usual one
    /// (`/ISAPI/Event/notification/alertStream`, `/cgi-bin/eventManager.cgi?action=attach&codes=[All]`
    /// plus `&heartbeat=`, `/onvif/event_service`).
    #[serde(default)]
    pub event_path: Option<String>,
    /// User name; no authentication when absent.
    #[serde(default)]
    pub username: Option<String>,
    /// Password.
    #[serde(default)]
    pub password: Option<String>,
    /// `digest` (what Hikvision, Dahua and ONVIF cameras ask for by default) or `basic`
    /// (cameras where an installer enabled it; only over HTTPS or a trusted LAN).
    #[serde(default)]
    pub auth: AuthScheme,
    /// How often the camera sends a heartbeat on its event stream (Dahua is asked for this
    /// period; Hikvision's is about 10 s; for ONVIF it is the `PullMessages` wait).
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Heartbeat periods without a message before the channels are reported offline and
    /// the stream is reconnected.
    #[serde(default = "default_missed_heartbeats")]
    pub missed_heartbeats: u32,
    /// How long an event lasts without being repeated, for vendors that repeat active events
    /// instead of ending them (Hikvision). 30 s: alerts repeat about every second, and ending
    /// a fire alarm late is harmless while ending it early makes it flap.
    #[serde(default = "default_event_hold", with = "humantime_serde")]
    pub event_hold: Duration,
    /// Time allowed to connect and get the response headers.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// First wait before reconnecting the event stream; doubles up to `reconnect_max`, with
    /// jitter.
    #[serde(default = "default_reconnect_min", with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest wait between reconnects.
    #[serde(default = "default_reconnect_max", with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Confidence (0-100) reported for events when the camera gives none.
    #[serde(default = "default_confidence")]
    pub default_confidence_pct: u8,
    /// Snapshot reference sent with events, `{channel}` replaced by the channel number: a
    /// relative URL on the camera (never with credentials), e.g.
    /// `/ISAPI/Streaming/channels/{channel}01/picture` or `/cgi-bin/snapshot.cgi?channel={channel}`.
    #[serde(default)]
    pub snapshot: Option<String>,
    /// Vendor event codes (Hikvision `eventType`, Dahua `Code`, ONVIF topic) to map besides
    /// the built-in ones, to `smoke`, `fire`, `fire_lane_blocked`, `video_loss`, `tampered` or
    /// `heartbeat`; e.g. `{ ParkingDetection = "fire_lane_blocked" }` on a Dahua camera whose
    /// parking rule watches a fire lane.
    #[serde(default)]
    pub extra_codes: ExtraCodes,
    /// ONVIF video source tokens and their channel numbers, for cameras whose tokens do not
    /// end in the channel number.
    #[serde(default)]
    pub onvif_sources: BTreeMap<String, u16>,
}

/// HTTP authentication scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthScheme {
    /// RFC 7616 Digest.
    #[default]
    Digest,
    /// RFC 7617 Basic.
    Basic,
}

/// One channel.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// The channel number (1-based, as the camera or NVR counts).
    pub channel: u16,
    /// RTSP URL of the channel's stream, probed with `OPTIONS`, e.g.
    /// `rtsp://192.168.1.64:554/Streaming/Channels/101`. No probe when absent.
    #[serde(default)]
    pub rtsp: Option<String>,
}

/// The RTSP probe.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Time between probes of each channel.
    #[serde(default = "default_probe_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Time allowed for connect, request and answer.
    #[serde(default = "default_probe_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failed probes before the channel is reported offline.
    #[serde(default = "default_missed_heartbeats")]
    pub failures: u32,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            interval: default_probe_interval(),
            timeout: default_probe_timeout(),
            failures: default_missed_heartbeats(),
        }
    }
}

/// The MQTT connection.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or address.
    pub host: String,
    /// Broker port.
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    /// MQTT client id; the device id when absent.
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name, if the broker wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password.
    #[serde(default)]
    pub password: Option<String>,
    /// MQTT keep-alive: how soon a dead connection is noticed, by both sides.
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Payload encoding, `json` or `compact`.
    #[serde(default)]
    pub encoding: PayloadEncoding,
    /// When a message leaves the outbox: `gateway_ack` (default) when the gateway's
    /// `down/ack` for its `(boot, seq)` arrives, or `broker` at the broker's PUBACK, for
    /// setups without a firegrid gateway.
    #[serde(default)]
    pub delivery: Delivery,
    /// How long to wait for an acknowledgement before sending a message again. 10 s: GB
    /// 26875.1 gives a fire alarm 10 s to reach the monitoring centre.
    #[serde(default = "default_ack_timeout", with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// Publish `status` `online` after each connect, with `status` `offline` as the last
    /// will, as the protocol asks of powered devices. Each connection then uses two adjacent
    /// sequence numbers, the will's (published by the broker only if the connection drops)
    /// and right after it the status': the only gap a receiver may see is the one just
    /// before a `status` `online`.
    #[serde(default = "default_true")]
    pub status: bool,
    /// Publish `status` `online` this often while running, so the gateway hears the camera
    /// even when nothing changes (health and events are sent only on change). It is the
    /// camera's heartbeat: the registry's `heartbeat` for the camera (default 60 s; the
    /// gateway declares it offline after 3 missed) must not be shorter. `0s` turns it off.
    #[serde(default = "default_status_every", with = "humantime_serde")]
    pub status_every: Duration,
    /// First wait before reconnecting to the broker; doubles up to `reconnect_max`, with
    /// jitter.
    #[serde(default = "default_reconnect_min", with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest wait between broker reconnects.
    #[serde(default = "default_mqtt_reconnect_max", with = "humantime_serde")]
    pub reconnect_max: Duration,
}

/// Payload encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadEncoding {
    /// JSON, readable with `mosquitto_sub`.
    #[default]
    Json,
    /// The compact binary encoding.
    Compact,
}

impl From<PayloadEncoding> for Encoding {
    fn from(e: PayloadEncoding) -> Encoding {
        match e {
            PayloadEncoding::Json => Encoding::Json,
            PayloadEncoding::Compact => Encoding::Compact,
        }
    }
}

/// What removes a message from the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// The gateway's application-level `down/ack`: the message is durable at the gateway.
    /// A PUBACK only proves the broker has it, and a broker can lose it (restarted without
    /// persistence, or the gateway's session expired).
    #[default]
    GatewayAck,
    /// The broker's PUBACK.
    Broker,
}

/// The outbox.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Most messages kept waiting. When full, the oldest channel-health message is shed; a
    /// camera event is never shed (it is refused and logged instead). 100,000 messages are
    /// about 20 MB: days of a busy camera without a broker.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig { max_pending: default_max_pending() }
    }
}

fn default_channels() -> Vec<ChannelConfig> {
    vec![ChannelConfig { channel: 1, rtsp: None }]
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(10)
}
fn default_missed_heartbeats() -> u32 {
    3
}
fn default_event_hold() -> Duration {
    Duration::from_secs(30)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_reconnect_min() -> Duration {
    Duration::from_secs(1)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(60)
}
fn default_mqtt_reconnect_max() -> Duration {
    Duration::from_secs(30)
}
fn default_confidence() -> u8 {
    100
}
fn default_status_every() -> Duration {
    Duration::from_secs(60)
}

fn default_probe_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_probe_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_mqtt_port() -> u16 {
    1883
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_ack_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_true() -> bool {
    true
}
fn default_max_pending() -> usize {
    100_000
}

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown or mistyped fields. Only the line and the
    /// parser's message are kept, never the offending text: the line may hold the device key.
    #[error("line {line}{}: {message}", field.as_deref().map(|f| format!(", `{f}`")).unwrap_or_default())]
    Toml {
        /// 1-based line of the problem.
        line: usize,
        /// The name on that line (`name = ...`), if it has one.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// The village id breaks the id rules.
    #[error("village id {id:?}: {source}")]
    Village {
        /// The id.
        id: String,
        /// Which rule.
        source: IdError,
    },
    /// The device id breaks the id rules.
    #[error("device id {id:?}: {source}")]
    Device {
        /// The id.
        id: String,
        /// Which rule.
        source: IdError,
    },
    /// Another field has an impossible value.
    #[error("`{field}`: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl Config {
    /// Reads and checks a TOML file.
    ///
    /// # Errors
    /// See [`ConfigError`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&text)
    }

    /// Parses and checks TOML text.
    ///
    /// # Errors
    /// See [`ConfigError`].
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line =
                e.span().map_or(1, |span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            let field = text
                .lines()
                .nth(line - 1)
                .and_then(|l| l.split_once('='))
                .map(|(name, _)| name.trim().to_owned())
                .filter(|name| !name.is_empty());
            ConfigError::Toml { line, field, message: e.message().to_owned() }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: ids, channel numbers, URLs, ranges.
    ///
    /// # Errors
    /// See [`ConfigError`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.village_id()?;
        self.device_id()?;
        self.device_key()?;
        let invalid = |field, reason: &str| Err(ConfigError::Invalid { field, reason: reason.to_owned() });
        if reqwest::Url::parse(&self.camera.url).is_err() {
            return invalid("camera.url", "not a URL");
        }
        if self.camera.default_confidence_pct > 100 {
            return invalid("camera.default_confidence_pct", "above 100");
        }
        if self.camera.heartbeat_interval.is_zero() || self.camera.missed_heartbeats == 0 {
            return invalid("camera.heartbeat_interval", "must be positive, with missed_heartbeats ≥ 1");
        }
        if self.camera.onvif_sources.values().any(|&c| c == 0) {
            return invalid("camera.onvif_sources", "channels count from 1");
        }
        for channel in &self.channels {
            if channel.channel == 0 {
                return invalid("channels.channel", "channels count from 1");
            }
            if let Some(url) = &channel.rtsp
                && crate::rtsp::target(url).is_none()
            {
                return invalid("channels.rtsp", &format!("{url:?} is not an rtsp:// URL"));
            }
        }
        if self.mqtt.ack_timeout.is_zero() {
            return invalid("mqtt.ack_timeout", "must be positive");
        }
        Ok(())
    }

    /// The checked village id.
    ///
    /// # Errors
    /// [`ConfigError::Village`].
    pub fn village_id(&self) -> Result<VillageId, ConfigError> {
        VillageId::new(&self.village)
            .map_err(|source| ConfigError::Village { id: self.village.clone(), source })
    }

    /// The device key, if one is configured.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for `key` when it is not 64 hexadecimal digits (the message
    /// does not quote it).
    pub fn device_key(&self) -> Result<Option<DeviceKey>, ConfigError> {
        self.key
            .as_ref()
            .map(|text| {
                DeviceKey::from_hex(text.0.trim()).map_err(|_| ConfigError::Invalid {
                    field: "key",
                    reason: "must be 64 hexadecimal digits".to_owned(),
                })
            })
            .transpose()
    }

    /// The checked device id.
    ///
    /// # Errors
    /// [`ConfigError::Device`].
    pub fn device_id(&self) -> Result<DeviceId, ConfigError> {
        DeviceId::new(&self.device).map_err(|source| ConfigError::Device { id: self.device.clone(), source })
    }

    /// The channel tracker's settings.
    pub fn tracker(&self) -> TrackerConfig {
        TrackerConfig {
            channels: self.channels.iter().map(|c| c.channel).collect(),
            heartbeat_interval_ms: duration_ms(self.camera.heartbeat_interval),
            missed_heartbeats: self.camera.missed_heartbeats,
            probe_failures: self.probe.failures,
            event_hold_ms: self
                .camera
                .vendor
                .repeats_active_events()
                .then(|| duration_ms(self.camera.event_hold)),
            default_confidence_pct: self.camera.default_confidence_pct,
            snapshot: self.camera.snapshot.clone(),
        }
    }

    /// How long the event stream may stay silent before it is reconnected.
    pub fn stream_silence(&self) -> Duration {
        self.camera.heartbeat_interval.saturating_mul(self.camera.missed_heartbeats.max(1))
    }
}

pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("firegrid-camera.example.toml");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.camera.vendor, Vendor::Hikvision);
        assert_eq!(config.channels.len(), 2);
        assert_eq!(config.mqtt.delivery, Delivery::GatewayAck);
        assert_eq!(config.tracker().event_hold_ms, Some(30_000));
    }

    #[test]
    fn a_key_is_64_hex_digits_and_never_shown() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("firegrid-camera.example.toml");
        let base = std::fs::read_to_string(path).unwrap();
        let hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
        let keyed = Config::from_toml(&format!("key = \"{hex}\"\n{base}")).unwrap();
        assert_eq!(keyed.device_key().unwrap().unwrap().expose()[31], 0x1f);
        assert!(!format!("{keyed:?}").contains("0a0b0c"), "Debug shows the key");
        assert_eq!(Config::from_toml(&base).unwrap().device_key().unwrap(), None);
        let bad = Config::from_toml(&format!("key = \"{}\"\n{base}", &hex[..60])).unwrap_err().to_string();
        assert_eq!(bad, "`key`: must be 64 hexadecimal digits");
        // A line the parser cannot read is named by its number, not echoed.
        let unquoted = Config::from_toml(&format!("key = {hex}\n{base}")).unwrap_err().to_string();
        assert!(unquoted.starts_with("line 1, `key`") && !unquoted.contains(&hex[..20]), "{unquoted}");
    }

    fn check(toml_text: &str, expected: Result<(), &str>) {
        let got = Config::from_toml(toml_text).map(|_| ()).map_err(|e| e.to_string());
        match (&got, expected) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err(want)) => assert!(e.contains(want), "{e:?} should mention {want:?}"),
            _ => panic!("got {got:?}, expected {expected:?} for\n{toml_text}"),
        }
    }

    const MINIMAL: &str = "village = \"v1\"\ndevice = \"cam-1\"\nstate_dir = \"/tmp/x\"\n\
        [camera]\nvendor = \"dahua\"\nurl = \"http://192.0.2.10\"\n[mqtt]\nhost = \"127.0.0.1\"\n";

    #[test]
    fn validation() {
        check(MINIMAL, Ok(()));
        check(&MINIMAL.replace("cam-1", "cam/1"), Err("device id"));
        check(&MINIMAL.replace("\"v1\"", "\"v+\""), Err("village id"));
        check(&MINIMAL.replace("http://192.0.2.10", "not a url"), Err("camera.url"));
        check(&MINIMAL.replace("vendor = \"dahua\"", "vendor = \"axis\""), Err("unknown variant"));
        check(&format!("{MINIMAL}colour = 1\n"), Err("unknown field"));
        check(&format!("{MINIMAL}[[channels]]\nchannel = 0\n"), Err("channels.channel"));
        check(&format!("{MINIMAL}[[channels]]\nchannel = 1\nrtsp = \"http://x\"\n"), Err("channels.rtsp"));
        check(
            &MINIMAL.replace(
                "url = \"http://192.0.2.10\"",
                "url = \"http://192.0.2.10\"\nheartbeat_interval = \"ten\"",
            ),
            Err("heartbeat_interval"),
        );
    }
}
