//! MQTT settings.

use std::time::Duration;

use firegrid_protocol::{UplinkKind, VillageId, uplink_filter};
use serde::Deserialize;

/// How the gateway connects to its broker.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host.
    #[serde(default = "default_host")]
    pub host: String,
    /// Broker port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Client id prefix; the sessions append `-alarm` and `-telemetry`. Fixed, so that the
    /// broker keeps the gateway's persistent sessions (and queues messages for them) while it
    /// is down. Each gateway replica needs its own.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// User name, when the broker requires one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password, when the broker requires one.
    #[serde(default)]
    pub password: Option<String>,
    /// Villages to subscribe to; empty means every village on the broker.
    #[serde(default)]
    pub villages: Vec<String>,
    /// Share the subscriptions with other gateway replicas in this group
    /// (`$share/<group>/...`): the broker splits the messages between them.
    #[serde(default)]
    pub shared_group: Option<String>,
    /// Keep-alive interval: how fast a half-open connection is noticed.
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Largest MQTT packet accepted or sent, bytes. rumqttc's default of 10 KiB is too small
    /// for camera metadata.
    #[serde(default = "default_max_packet")]
    pub max_packet_bytes: usize,
    /// Most messages processed (and fsynced) together.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Longest wait between reconnection attempts.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// MQTT over TLS (`[mqtt.tls]`): the broker's certificate must chain to `ca` and carry
    /// `host`; a client certificate when the broker requires one. Absent: plain TCP, for a
    /// broker on the same machine or a segment no one else reaches.
    #[serde(default)]
    pub tls: Option<crate::tls::ClientTls>,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    1883
}
fn default_client_id() -> String {
    "firegrid-gateway".into()
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(15)
}
fn default_max_packet() -> usize {
    256 * 1024
}
fn default_max_batch() -> usize {
    500
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(10)
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            host: default_host(),
            port: default_port(),
            client_id: default_client_id(),
            username: None,
            password: None,
            villages: Vec::new(),
            shared_group: None,
            keep_alive: default_keep_alive(),
            max_packet_bytes: default_max_packet(),
            max_batch: default_max_batch(),
            max_backoff: default_max_backoff(),
            tls: None,
        }
    }
}

/// One of the gateway's two MQTT sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Session {
    /// Alarm-class kinds: detector state changes and camera events.
    Alarm,
    /// Every other kind.
    Telemetry,
}

impl Session {
    /// Both sessions.
    pub const ALL: [Session; 2] = [Session::Alarm, Session::Telemetry];

    /// Its name in client ids, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Session::Alarm => "alarm",
            Session::Telemetry => "telemetry",
        }
    }

    /// The uplink kinds it subscribes to.
    pub fn kinds(self) -> impl Iterator<Item = UplinkKind> {
        UplinkKind::ALL
            .into_iter()
            .filter(move |k| (k.class() == firegrid_protocol::Class::Alarm) == (self == Session::Alarm))
    }
}

impl MqttConfig {
    /// Connection options for one client of the gateway's: the broker address, the
    /// credentials and, with `[mqtt.tls]`, TLS checked against the configured CA and `host`.
    pub fn options(&self, client_id: String) -> Result<rumqttc::MqttOptions, crate::tls::TlsError> {
        let mut opts = rumqttc::MqttOptions::new(client_id, self.host.clone(), self.port);
        opts.set_keep_alive(self.keep_alive);
        if let Some(user) = &self.username {
            opts.set_credentials(user.clone(), self.password.clone().unwrap_or_default());
        }
        if let Some(tls) = &self.tls {
            crate::tls::ClientTls::check_name(&self.host)?;
            let config = tls.client_config()?;
            opts.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(
                config,
            )));
        }
        Ok(opts)
    }

    /// The session's client id.
    pub fn client_id(&self, session: Session) -> String {
        format!("{}-{}", self.client_id, session.name())
    }

    /// The topic filters a session subscribes to.
    pub fn filters(&self, session: Session) -> Result<Vec<String>, String> {
        let villages: Vec<Option<VillageId>> = if self.villages.is_empty() {
            vec![None]
        } else {
            self.villages
                .iter()
                .map(|v| VillageId::new(v).map(Some).map_err(|e| format!("village {v:?}: {e}")))
                .collect::<Result<_, _>>()?
        };
        let prefix = match &self.shared_group {
            Some(group) => {
                firegrid_protocol::check_id(group).map_err(|e| format!("shared_group {group:?}: {e}"))?;
                format!("$share/{group}/")
            }
            None => String::new(),
        };
        Ok(villages
            .iter()
            .flat_map(|v| session.kinds().map(move |k| uplink_filter(v.as_ref(), Some(k))))
            .map(|f| format!("{prefix}{f}"))
            .collect())
    }
}
