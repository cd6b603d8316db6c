//! Getting the firmware's messages to a broker, the two ways real deployments do:
//!
//! - **direct**: every Wi-Fi/Ethernet device holds its own MQTT connection and persistent
//!   session (client id = device id) and subscribes to its own downlink topics;
//! - **platform**: NB-IoT devices reach the street through a carrier IoT platform, which
//!   forwards many devices' messages over a few connections; here `connections` clients
//!   carry every device's topics, and one subscribes to the village's downlinks.
//!
//! Open files: each direct connection is one socket in this process (and one in the
//! broker's). These machines cap a process at 20,000 open files (hard limit; Mosquitto has
//! the same cap), so direct mode tops out near 8,000–9,000 devices per simulator process and
//! per broker. To go further, run several simulator processes, give the broker several
//! loopback addresses, or use platform mode.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use firegrid_protocol::{DeviceId, Topic, VillageId};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio_util_lite::CancelFlag;

use crate::fleet::Sent;

/// How devices reach the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One connection per device.
    Direct,
    /// Devices multiplexed over this many connections.
    Platform {
        /// Connections.
        connections: usize,
    },
}

/// Counters the transport keeps.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Connections up.
    pub connected: AtomicUsize,
    /// Publishes handed to the MQTT client.
    pub published: AtomicU64,
    /// Publishes the client could not take (its queue was full): the firmware resends an
    /// alarm or event; a heartbeat is lost, since the firmware is done with telemetry once it
    /// is handed over.
    pub refused: AtomicU64,
    /// Downlinks received.
    pub downlinks: AtomicU64,
}

/// The transport: MQTT clients and a channel of received downlinks `(device index, payload)`.
pub struct Transport {
    clients: Vec<AsyncClient>,
    /// Device index → its client (direct mode; only devices that send get one).
    client_of: Vec<Option<usize>>,
    mode: Mode,
    topics: Vec<String>,
    /// Counters.
    pub stats: Arc<TransportStats>,
    stop: CancelFlag,
}

/// A tiny shared stop flag (the simulator needs no more than this).
mod tokio_util_lite {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Set once to stop the connection tasks.
    #[derive(Debug, Clone, Default)]
    pub struct CancelFlag(Arc<AtomicBool>);

    impl CancelFlag {
        pub fn cancel(&self) {
            self.0.store(true, Ordering::Relaxed);
        }
        pub fn is_cancelled(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }
    }
}

impl Transport {
    /// Connects `devices` (ids, in village order) to the broker at `host:port`; in direct
    /// mode only those marked in `sends` get a connection (cameras bring their own agent).
    pub fn connect(
        village: &str,
        devices: &[String],
        sends: &[bool],
        (host, port, credentials): (&str, u16, Option<&(String, String)>),
        mode: Mode,
    ) -> (Transport, mpsc::UnboundedReceiver<(usize, Vec<u8>)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(TransportStats::default());
        let stop = CancelFlag::default();
        let index: Arc<HashMap<String, usize>> =
            Arc::new(devices.iter().enumerate().map(|(i, d)| (d.clone(), i)).collect());
        let village_id = VillageId::new(village).ok();
        let topics = devices.iter().map(|d| format!("fg/v1/{village}/{d}/up/")).collect();
        let direct: Vec<usize> =
            (0..devices.len()).filter(|i| sends.get(*i).copied().unwrap_or(true)).collect();
        let mut client_of = vec![None; devices.len()];
        let n = match mode {
            Mode::Direct => {
                for (c, i) in direct.iter().enumerate() {
                    client_of[*i] = Some(c);
                }
                direct.len()
            }
            Mode::Platform { connections } => connections.max(1),
        };
        let mut clients = Vec::with_capacity(n);
        for c in 0..n {
            let device = direct.get(c).and_then(|i| devices.get(*i));
            let (client_id, filter, capacity) = match (mode, device) {
                (Mode::Direct, Some(device)) => {
                    let filter = match (&village_id, DeviceId::new(device)) {
                        (Some(v), Ok(d)) => firegrid_protocol::downlink_filter(v, &d).to_string(),
                        _ => format!("fg/v1/{village}/{device}/down/#"),
                    };
                    (device.clone(), Some(filter), 64)
                }
                _ => {
                    let filter = (c == 0).then(|| format!("fg/v1/{village}/+/down/#"));
                    (format!("platform-{village}-{c}"), filter, 100_000)
                }
            };
            let mut opts = MqttOptions::new(client_id, host, port);
            opts.set_clean_session(false).set_keep_alive(Duration::from_secs(60)).set_inflight(1000);
            if let Some((user, password)) = credentials {
                opts.set_credentials(user.clone(), password.clone());
            }
            let (client, mut eventloop) = AsyncClient::new(opts, capacity);
            let (tx, stats, stop, index, sub) =
                (tx.clone(), stats.clone(), stop.clone(), index.clone(), client.clone());
            tokio::spawn(async move {
                let mut up = false;
                let mut wait = Duration::from_millis(100);
                while !stop.is_cancelled() {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                            if !up {
                                stats.connected.fetch_add(1, Ordering::Relaxed);
                                up = true;
                            }
                            wait = Duration::from_millis(100);
                            if let Some(f) = &filter
                                && !ack.session_present
                            {
                                let _ = sub.try_subscribe(f.clone(), QoS::AtLeastOnce);
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            stats.downlinks.fetch_add(1, Ordering::Relaxed);
                            if let Ok(topic) = Topic::parse(&p.topic)
                                && let Some(i) = index.get(topic.device.as_str())
                            {
                                let _ = tx.send((*i, p.payload.to_vec()));
                            }
                        }
                        Ok(_) => {}
                        Err(_) => {
                            if up {
                                stats.connected.fetch_sub(1, Ordering::Relaxed);
                                up = false;
                            }
                            // Backoff with jitter: a restarted broker is not hit by every
                            // device at the same instant.
                            tokio::time::sleep(wait + Duration::from_millis(fastrand::u64(0..100))).await;
                            wait = (wait * 2).min(Duration::from_secs(5));
                        }
                    }
                }
                if up {
                    stats.connected.fetch_sub(1, Ordering::Relaxed);
                }
            });
            clients.push(client);
        }
        (Transport { clients, client_of, mode, topics, stats, stop }, rx)
    }

    /// Publishes what the firmware sent, at QoS 1, never waiting: a full client queue is
    /// counted (`refused`); the firmware resends an alarm or event when its outbox says, and a
    /// refused heartbeat is lost.
    pub fn publish(&self, sent: &[Sent]) {
        for s in sent {
            let Some(client) = self.client(s.device) else { continue };
            let topic = format!("{}{}", self.topics[s.device], s.kind.as_str());
            match client.try_publish(topic, QoS::AtLeastOnce, false, s.payload.clone()) {
                Ok(()) => self.stats.published.fetch_add(1, Ordering::Relaxed),
                Err(_) => self.stats.refused.fetch_add(1, Ordering::Relaxed),
            };
        }
    }

    /// Publishes a raw (malformed) payload on a device's topic: what bad firmware does.
    pub fn publish_raw(&self, device: usize, kind: &str, payload: Vec<u8>) {
        let Some(client) = self.client(device) else { return };
        let _ =
            client.try_publish(format!("{}{kind}", self.topics[device]), QoS::AtLeastOnce, false, payload);
    }

    fn client(&self, device: usize) -> Option<&AsyncClient> {
        match self.mode {
            Mode::Direct => self.client_of.get(device).copied().flatten().map(|c| &self.clients[c]),
            Mode::Platform { .. } => self.clients.get(device % self.clients.len().max(1)),
        }
    }

    /// Connections in use.
    pub fn connections(&self) -> usize {
        self.clients.len()
    }

    /// Stops the connection tasks.
    pub fn stop(&self) {
        self.stop.cancel();
        for c in &self.clients {
            let _ = c.try_disconnect();
        }
    }
}
