//! Simulated camera channels, published through the real camera agent (`firegrid-camera`):
//! each simulated camera is an `Agent` whose event stream is an in-process feed of the
//! vendor's own format (Hikvision ISAPI alert stream), so parsing, channel health, the
//! outbox and the MQTT delivery are the agent's.

use std::path::Path;
use std::time::Duration;

use firegrid_camera::{Agent, CameraFeed, CameraSignal, Config, SignalKind, Vendor};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::village::{Kind, Village};

/// How often each simulated camera's agent says it is online, in real time: its heartbeat,
/// the interval a registry lists for it (the agent's default).
pub const STATUS_EVERY: Duration = Duration::from_secs(60);

/// What a camera has reported of a fire in its building.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SmokeSeen {
    Not,
    Active,
    Ended,
}

/// The running camera agents.
pub struct Cameras {
    feeds: Vec<(usize, CameraFeed, u16)>,
    tasks: Vec<JoinHandle<()>>,
    stop: CancellationToken,
    smoke_sent: Vec<SmokeSeen>,
}

/// Why the cameras did not start.
#[derive(Debug, thiserror::Error)]
pub enum CameraError {
    /// The agent's configuration or state directory.
    #[error("camera {device}: {message}")]
    Agent {
        /// The camera.
        device: String,
        /// What went wrong.
        message: String,
    },
}

impl Cameras {
    /// Starts one agent per camera of `village`, publishing to `host:port` in the compact
    /// encoding, each with its outbox and boot counter under `state_dir/<device>`, and with its
    /// key from `keys` if it has one (the agent then signs and verifies).
    pub fn start(
        village: &Village,
        host: &str,
        port: u16,
        state_dir: &Path,
        keys: &crate::keys::Keys,
    ) -> Result<Cameras, CameraError> {
        let stop = CancellationToken::new();
        let mut feeds = Vec::new();
        let mut tasks = Vec::new();
        for (index, device) in village.devices.iter().enumerate() {
            let Kind::Camera(channels) = device.kind else { continue };
            let err = |message: String| CameraError::Agent { device: device.id.clone(), message };
            let dir = state_dir.join(&device.id);
            std::fs::create_dir_all(&dir).map_err(|e| err(e.to_string()))?;
            let channel_list: String =
                (1..=channels).map(|c| format!("[[channels]]\nchannel = {c}\n")).collect();
            let toml = format!(
                "village = \"{}\"\ndevice = \"{}\"\nstate_dir = \"{}\"\n\n[camera]\nvendor = \"hikvision\"\nurl = \"http://127.0.0.1:9\"\nheartbeat_interval = \"10s\"\n\n{channel_list}\n[mqtt]\nhost = \"{host}\"\nport = {port}\nencoding = \"compact\"\n",
                village.village,
                device.id,
                dir.display(),
            );
            let mut config = Config::from_toml(&toml).map_err(|e| err(e.to_string()))?;
            config.mqtt.status_every = STATUS_EVERY;
            if let Some(key) = keys.get(&village.village, &device.id) {
                let mut hex = [0u8; 64];
                let hex = base16ct::lower::encode_str(key.expose(), &mut hex).unwrap_or_default();
                config.key = Some(firegrid_camera::config::KeyText::new(hex));
                // Its own broker account, as `firegrid broker mosquitto` and the embedded
                // broker define it.
                config.mqtt.username = Some(device.id.clone());
                config.mqtt.password = Some(key.mqtt_password().to_string());
                config.validate().map_err(|e| err(e.to_string()))?;
            }
            let (feed, transport) = firegrid_camera::feed(Vendor::Hikvision, Default::default(), 256);
            let agent = Agent::new(config, transport).map_err(|e| err(e.to_string()))?;
            let shutdown = stop.clone();
            let id = device.id.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(error) = agent.run(shutdown).await {
                    tracing::error!(camera = %id, %error, "Camera agent stopped.");
                }
            }));
            feeds.push((index, feed, channels));
        }
        let smoke_sent = vec![SmokeSeen::Not; feeds.len()];
        Ok(Cameras { feeds, tasks, stop, smoke_sent })
    }

    /// Camera channels simulated.
    pub fn channels(&self) -> usize {
        self.feeds.iter().map(|(_, _, c)| usize::from(*c)).sum()
    }

    /// Sends every camera's stream heartbeat (cameras send one every few seconds).
    pub fn heartbeat(&self) {
        for (_, feed, _) in &self.feeds {
            let feed = feed.clone();
            tokio::spawn(async move {
                let _ = feed.send(&CameraSignal::heartbeat(), 0).await;
            });
        }
    }

    /// At simulated `now`, a camera in a building whose fire started at least a minute ago
    /// sees smoke on its first channel (once, with a snapshot reference), and sees it end a
    /// minute after the fire is put out (`ends`).
    pub fn see_fires(
        &mut self,
        village: &Village,
        fires: &[Option<(u64, crate::scenario::FireGrowth)>],
        ends: &[Option<u64>],
        now: u64,
    ) {
        for (k, (index, feed, _)) in self.feeds.iter().enumerate() {
            let building = village.devices[*index].building;
            let Some((start, _)) = fires[building] else { continue };
            // The analytics see smoke a minute in, and see it gone a minute after the fire is
            // put out.
            let seen = now >= start + 60_000;
            let gone = ends[building].is_some_and(|end| now >= end + 60_000);
            let state = &mut self.smoke_sent[k];
            let send = match (*state, seen, gone) {
                (SmokeSeen::Not, true, _) => Some(true),
                (SmokeSeen::Active, _, true) => Some(false),
                _ => None,
            };
            let Some(active) = send else { continue };
            *state = if active { SmokeSeen::Active } else { SmokeSeen::Ended };
            let feed = feed.clone();
            let camera = village.devices[*index].id.clone();
            tokio::spawn(async move {
                let smoke = CameraSignal {
                    channel: Some(1),
                    kind: SignalKind::Smoke,
                    active,
                    confidence_pct: Some(90),
                    // Where the recorder keeps the picture taken at the event.
                    snapshot: active.then(|| format!("snap/{camera}/1/{}.jpg", start + 60_000)),
                };
                let _ = feed.send(&smoke, 0).await;
            });
        }
    }

    /// Stops the agents (their outboxes keep what was not acknowledged).
    pub async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}
