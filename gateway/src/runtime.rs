//! Starting and stopping the whole gateway: spool, destinations, MQTT sessions (and the
//! embedded broker), HTTP server. [`Gateway::start`] is what `firegrid run` calls; tests and
//! benchmarks call it too.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::ingest::{Accepted, Ingest};
use crate::metrics::{DestinationLabel, DeviceLabel, Metrics, SessionLabel};
use crate::sinks::influx::{DestinationStats, run_destination, writer_for};
use crate::sources::modbus::{ModbusEvent, ModbusStats};
use crate::sources::mqtt::{MqttConfig, Session, run_session};
use crate::spool::{Durability, Spool, SpoolError};

/// How long a stopping gateway lets its destinations catch up before it leaves the rest in the
/// spool for the next start.
const DRAIN_ON_STOP: Duration = Duration::from_secs(5);

/// Why the gateway did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The spool could not be opened.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// A destination is misconfigured.
    #[error("destination {name}: {message}")]
    Destination {
        /// Destination name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The embedded broker did not start.
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
    /// A TLS certificate or key did not load.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The registry file cannot be loaded (every bad line is listed).
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    /// The device key store cannot be loaded.
    #[error(transparent)]
    Keys(#[from] crate::keys::KeyStoreError),
    /// The downlink command counter cannot be read.
    #[error("downlink command counter {path}: {source}")]
    Counter {
        /// Its file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The alarm loop did not start.
    #[error("alarm loop: {0}")]
    Alarm(#[from] crate::alarm::launch::LaunchError),
    /// The HTTP server could not bind.
    #[error("HTTP server on {listen}: {source}")]
    Http {
        /// The address.
        listen: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The CoAP endpoint could not bind its UDP port.
    #[error("CoAP endpoint ([coap] listen): {0}")]
    Coap(std::io::Error),
}

/// State the HTTP handlers read.
pub struct Shared {
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// Ingest, for the unknown-device list.
    pub ingest: Arc<Ingest>,
    spool: Arc<Mutex<Spool>>,
    destinations: Vec<(String, Arc<DestinationStats>)>,
    modbus: Option<Arc<ModbusStats>>,
    /// The officer API, when the alarm loop runs.
    pub api: Option<crate::device_api::DeviceApiState>,
    /// Buildings, devices heard from and camera events.
    pub site: Arc<crate::site::Site>,
    /// The console's basemap, checked.
    pub basemap: Option<Arc<firegrid_officers::console::Basemap>>,
}

/// What `/healthz` reports.
#[derive(Debug, serde::Serialize)]
pub struct Health {
    /// Both MQTT sessions connected and no destination refusing writes.
    pub ok: bool,
    /// Sessions not connected.
    pub mqtt_disconnected: Vec<&'static str>,
    /// Destinations refusing writes (credentials, permissions, database).
    pub destinations_held: Vec<String>,
    /// Bytes in the spool.
    pub spool_bytes: u64,
    /// Stores that cannot write to their disk (`spool`, `cases`, `outbox`): alarms are still
    /// handled and paged, held in memory; telemetry is shed.
    pub stores_unwritable: Vec<&'static str>,
    /// Records held in memory, waiting for the disk, over all stores.
    pub held_in_memory: u64,
}

use crate::clock::wall_ms as now_ms;

impl Shared {
    /// Copies the spool's and destinations' own counters into the exported gauges.
    pub fn refresh_gauges(&self) {
        let spool = self.spool.lock().unwrap();
        let m = &self.metrics;
        m.spool_bytes.set(spool.total_bytes() as i64);
        m.spool_shed.set(spool.stats().shed as i64);
        if let Some(api) = &self.api {
            m.open_cases.set(api.api.cases.open_cases() as i64);
        }
        let now = now_ms();
        for (name, stats) in &self.destinations {
            use std::sync::atomic::Ordering::Relaxed;
            let label = DestinationLabel { destination: name.clone() };
            m.spool_depth.get_or_create(&label).set(spool.depth(name).unwrap_or(0) as i64);
            m.spool_age_seconds.get_or_create(&label).set(stats.backlog_age_s(now));
            m.lines_written.get_or_create(&label).set(stats.lines_written.load(Relaxed) as i64);
            m.write_failures.get_or_create(&label).set(stats.requests_failed.load(Relaxed) as i64);
            m.dead_lettered.get_or_create(&label).set(stats.lines_dead_lettered.load(Relaxed) as i64);
            m.write_seconds.get_or_create(&label).set(stats.last_write_micros.load(Relaxed) as f64 / 1e6);
            m.destination_held.get_or_create(&label).set(stats.held.load(Relaxed) as i64);
        }
        for (device, stats) in self.modbus.iter().flat_map(|m| m.devices.iter()) {
            use std::sync::atomic::Ordering::Relaxed;
            let label = DeviceLabel { device: device.to_string() };
            m.modbus_polls_ok.get_or_create(&label).set(stats.polls_ok.load(Relaxed) as i64);
            m.modbus_polls_failed.get_or_create(&label).set(stats.polls_failed.load(Relaxed) as i64);
            m.modbus_failing.get_or_create(&label).set(stats.failing.load(Relaxed) as i64);
        }
    }

    /// The gateway's own health as points: overall figures, message counts by kind and by
    /// rejection reason, and each destination's backlog and writes. Counters are totals since
    /// start; dashboards take their rate (`non_negative_derivative`).
    pub fn health_points(&self, gateway: &str, ts_ns: i64) -> Vec<crate::series::Point> {
        use crate::series::schema::measurement::{GATEWAY_DESTINATION, GATEWAY_HEALTH, GATEWAY_MESSAGES};
        use crate::series::{Field, Point};
        use std::sync::atomic::Ordering::Relaxed;
        let counts = self.metrics.counts();
        let health = self.health();
        let spool = self.spool.lock().unwrap();
        let mut points = vec![
            Point::new(GATEWAY_HEALTH, ts_ns)
                .tag("gateway", gateway)
                .field("accepted", Field::I64(counts.accepted.values().sum::<u64>() as i64))
                .field("rejected", Field::I64(counts.rejected.values().sum::<u64>() as i64))
                .field("duplicates", Field::I64(self.metrics.duplicates.get() as i64))
                .field("unknown_devices", Field::I64(self.metrics.unknown_devices.get()))
                .field("mqtt_connected", Field::I64(health.mqtt_disconnected.is_empty().into()))
                .field("spool_bytes", Field::I64(spool.total_bytes() as i64))
                .field("spool_shed", Field::I64(spool.stats().shed as i64)),
        ];
        for (kind, n) in &counts.accepted {
            points.push(
                Point::new(GATEWAY_MESSAGES, ts_ns)
                    .tag("gateway", gateway)
                    .tag("outcome", "accepted")
                    .tag("kind", *kind)
                    .field("count", Field::I64(*n as i64)),
            );
        }
        for (reason, n) in &counts.rejected {
            points.push(
                Point::new(GATEWAY_MESSAGES, ts_ns)
                    .tag("gateway", gateway)
                    .tag("outcome", "rejected")
                    .tag("reason", *reason)
                    .field("count", Field::I64(*n as i64)),
            );
        }
        let now = now_ms();
        for (name, stats) in &self.destinations {
            points.push(
                Point::new(GATEWAY_DESTINATION, ts_ns)
                    .tag("gateway", gateway)
                    .tag("destination", name.as_str())
                    .field("depth", Field::I64(spool.depth(name).unwrap_or(0) as i64))
                    .field("age_s", Field::F64(stats.backlog_age_s(now)))
                    .field("lines_written", Field::I64(stats.lines_written.load(Relaxed) as i64))
                    .field("write_failures", Field::I64(stats.requests_failed.load(Relaxed) as i64))
                    .field("dead_lettered", Field::I64(stats.lines_dead_lettered.load(Relaxed) as i64))
                    .field("write_seconds", Field::F64(stats.last_write_micros.load(Relaxed) as f64 / 1e6))
                    .field("held", Field::I64(stats.held.load(Relaxed) as i64)),
            );
        }
        points
    }

    /// Records not yet written, summed over destinations.
    pub fn pending(&self) -> u64 {
        let spool = self.spool.lock().unwrap();
        self.destinations.iter().map(|(n, _)| spool.depth(n).unwrap_or(0)).sum()
    }

    /// The gateway's health.
    pub fn health(&self) -> Health {
        let mqtt_disconnected: Vec<_> = Session::ALL
            .into_iter()
            .filter(|s| {
                self.metrics.mqtt_connected.get_or_create(&SessionLabel { session: s.name().into() }).get()
                    != 1
            })
            .map(Session::name)
            .collect();
        let destinations_held: Vec<_> = self
            .destinations
            .iter()
            .filter(|(_, s)| s.held.load(std::sync::atomic::Ordering::Relaxed) == 1)
            .map(|(n, _)| n.clone())
            .collect();
        let stores = &self.metrics.stores;
        let stores_unwritable = stores.unwritable();
        Health {
            ok: mqtt_disconnected.is_empty() && destinations_held.is_empty() && stores_unwritable.is_empty(),
            mqtt_disconnected,
            destinations_held,
            spool_bytes: self.spool.lock().unwrap().total_bytes(),
            stores_unwritable,
            held_in_memory: crate::durability::Store::ALL.into_iter().map(|s| stores.held(s)).sum(),
        }
    }
}

/// A running gateway.
pub struct Gateway {
    /// Address of the HTTP server.
    pub http_addr: SocketAddr,
    /// The broker the gateway uses (the embedded one's address when it runs one).
    pub mqtt: MqttConfig,
    /// Shared state (metrics, ingest).
    pub shared: Arc<Shared>,
    spool: Arc<Mutex<Spool>>,
    sessions: Vec<JoinHandle<Result<(), String>>>,
    sessions_stop: CancellationToken,
    destinations: Vec<JoinHandle<()>>,
    destinations_stop: CancellationToken,
    http: Vec<JoinHandle<()>>,
    http_stop: CancellationToken,
    fleet: JoinHandle<()>,
    fleet_stop: CancellationToken,
    /// The firmware delivery task and its command session.
    firmware: [JoinHandle<()>; 2],
    health_task: JoinHandle<()>,
    modbus: Option<(JoinHandle<()>, JoinHandle<()>)>,
    coap: Option<JoinHandle<()>>,
    alarm: Option<crate::alarm::AlarmLoop>,
}

impl Gateway {
    /// Starts everything `cfg` describes. Accepted messages go to `handoff` (the alarm loop);
    /// without one they are logged when alarm-class.
    pub async fn start(
        cfg: Config,
        handoff: Option<mpsc::UnboundedSender<Accepted>>,
    ) -> Result<Gateway, StartError> {
        cfg.check()?;
        // Checked just above, so only a file changed in between fails here; it leaves the
        // console on its scatter map, with a warning.
        let basemap = cfg.console.basemap.as_ref().and_then(|b| match b.check() {
            Ok(basemap) => Some(Arc::new(basemap)),
            Err(problems) => {
                tracing::warn!(
                    ?problems,
                    "The console's basemap is not usable; the map shows the buildings alone."
                );
                None
            }
        });
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|source| SpoolError::Io { path: cfg.data_dir.clone(), source })?;
        let names: Vec<&str> = cfg.influx.iter().map(|d| d.name.as_str()).collect();
        let spool = Arc::new(Mutex::new(Spool::open(cfg.spool_config(), &names)?));
        let metrics = Arc::new(Metrics::new());
        let wake = Arc::new(Notify::new());

        let destinations_stop = CancellationToken::new();
        let backlog = Arc::new(crate::ingest::Backlog::default());
        let mut destinations = Vec::new();
        let mut destination_stats = Vec::new();
        for dest in &cfg.influx {
            let writer = writer_for(dest)
                .map_err(|message| StartError::Destination { name: dest.name.clone(), message })?;
            let stats = Arc::new(DestinationStats::default());
            destination_stats.push((dest.name.clone(), stats.clone()));
            destinations.push(tokio::spawn(run_destination(
                spool.clone(),
                dest.clone(),
                writer,
                crate::sinks::influx::Signals { appended: wake.clone(), backlog: backlog.clone() },
                stats,
                cfg.data_dir.join("dead-letter"),
                destinations_stop.clone(),
            )));
        }
        if cfg.influx.is_empty() {
            tracing::info!(dir = %cfg.spool_config().dir.display(), "No database configured; the spool is the local archive.");
        }

        let ingest = Arc::new(
            Ingest::new(
                spool.clone(),
                wake,
                cfg.admission_config(),
                cfg.protocol_limits(),
                metrics.clone(),
                now_ms(),
            )?
            .with_command_counter(open_counter(&cfg.data_dir)?)
            .with_backlog(backlog),
        );
        // Bound before anything starts, so a taken port fails the start with its address.
        let coap_socket = match &cfg.coap {
            Some(config) => Some(crate::sources::coap::server::bind(config).map_err(StartError::Coap)?),
            None => None,
        };
        if let Some(path) = &cfg.registry.keys {
            let keys = crate::keys::KeyStore::load(path)?;
            tracing::info!(devices = keys.len(), file = %path.display(), "Device keys loaded.");
            ingest.set_keys(Arc::new(keys));
        } else {
            tracing::warn!(
                "No device key store configured ([registry] keys): no message can be authenticated; every one is accepted unsigned and counted."
            );
        }

        let mqtt = match &cfg.mqtt {
            Some(mqtt) => mqtt.clone(),
            None => {
                let broker = &cfg.embedded_broker;
                let listen = broker.listen;
                let mut own = MqttConfig {
                    host: listen.ip().to_string(),
                    port: listen.port(),
                    ..MqttConfig::default()
                };
                let authenticate = broker.authenticate.unwrap_or(cfg.registry.keys.is_some());
                let auth = if authenticate {
                    let accounts = Arc::new(crate::broker::Accounts::new(&broker.platforms)?);
                    own.username = Some(crate::broker::GATEWAY_USER.into());
                    own.password = Some(accounts.gateway_password().to_owned());
                    let keys = ingest.clone();
                    let keys: Arc<dyn Fn() -> Arc<crate::keys::KeyStore> + Send + Sync> =
                        Arc::new(move || keys.keys());
                    Some((accounts, keys))
                } else {
                    tracing::warn!(
                        %listen,
                        "The embedded broker accepts every login (no [registry] keys, authenticate not set): anyone who reaches it may connect."
                    );
                    None
                };
                let embedded = crate::broker::Embedded {
                    listen,
                    max_connections: broker.max_connections,
                    tls: broker.tls.clone().map(|files| (broker.tls_listen, files)),
                    auth,
                    metrics: metrics.clone(),
                };
                tokio::task::spawn_blocking(move || crate::broker::start_embedded(embedded))
                    .await
                    .expect("the broker start does not panic")?;
                own
            }
        };

        let site = Arc::new(crate::site::Site::new());
        let alarm = if cfg.alerting.enabled {
            let started = crate::alarm::AlarmLoop::start(
                &cfg.alerting,
                &cfg.notify,
                &cfg.data_dir,
                ingest.clone(),
                metrics.clone(),
                &mqtt,
                site.clone(),
            )
            .await?;
            Some(started)
        } else {
            None
        };
        // Accepted messages go on to the alarm loop (which passes them on to `handoff`).
        let handoff = match &alarm {
            Some(alarm) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let feed = crate::alarm::launch::Feed {
                    cases: alarm.cases.clone(),
                    ingest: ingest.clone(),
                    district: cfg.alerting.district.clone(),
                    unplaced_desk: cfg.alerting.unplaced_desk.as_ref().and_then(|d| d.parse().ok()),
                    site: site.clone(),
                    metrics: metrics.clone(),
                    linkage: alarm.linkage.clone(),
                };
                tokio::spawn(crate::alarm::launch::feed_accepted(rx, handoff, feed));
                Some(tx)
            }
            None => handoff,
        };
        let alarms = alarm.as_ref().map(|a| (a.cases.clone(), cfg.alerting.district.clone()));

        // Every accepted message passes the fleet task (liveness) on its way to `handoff`.
        let (accepted_tx, accepted_rx) = mpsc::unbounded_channel();
        let fleet_stop = CancellationToken::new();
        if let Some(path) = cfg.registry.keys.clone() {
            tokio::spawn(reload_keys(path, ingest.clone(), fleet_stop.clone()));
        }
        let fleet = match &cfg.registry.csv {
            Some(csv) => {
                let snapshot = cfg.data_dir.join("liveness.json");
                let (registry, liveness, clock) = crate::fleet::start(csv, &snapshot, &ingest)?;
                site.set_registry(registry);
                let task = crate::fleet::FleetTask {
                    csv: csv.clone(),
                    snapshot,
                    liveness,
                    clock,
                    ingest: ingest.clone(),
                    alarms: alarms.clone(),
                    site: site.clone(),
                };
                tokio::spawn(crate::fleet::run(task, accepted_rx, handoff, fleet_stop.clone()))
            }
            None => tokio::spawn(forward(accepted_rx, handoff)),
        };
        // Firmware rollouts: `fw_status` uplinks are tapped off the accepted stream on its way
        // to liveness and the alarm loop, and the delivery task answers them over MQTT.
        let firmware = Arc::new(crate::firmware::delivery::driver::Board::default());
        let (tapped_tx, tapped_rx) = mpsc::unbounded_channel();
        let (statuses_tx, statuses) = mpsc::unbounded_channel();
        tokio::spawn(crate::firmware::delivery::driver::tap(tapped_rx, accepted_tx, statuses_tx));
        let lease = alarm.as_ref().map_or_else(crate::alarm::lease::Lease::unbounded, |a| a.lease.clone());
        let (firmware_client, firmware_loop) =
            crate::alarm::launch::command_client(&mqtt, "firmware", lease.clone(), fleet_stop.clone());
        let vendor = (cfg.firmware.vendor_public_key.is_some() || cfg.firmware.vendor_public_keys.is_some())
            .then(|| cfg.firmware.vendor_keys().expect("checked by Config::check"));
        let coap_routes = Arc::new(crate::sources::coap::routes::Routes::default());
        let driver = crate::firmware::delivery::driver::Driver {
            dir: crate::firmware::delivery::control::dir(&cfg.data_dir),
            vendor,
            ingest: ingest.clone(),
            client: firmware_client,
            coap: coap_routes.clone(),
            statuses,
            metrics: metrics.clone(),
            board: firmware.clone(),
            min_gap: cfg.firmware_command_gap(),
        };
        let firmware_task = tokio::spawn(crate::firmware::delivery::driver::run(driver, fleet_stop.clone()));
        let handoff = tapped_tx;
        let sessions_stop = CancellationToken::new();
        let coap = match (&cfg.coap, coap_socket) {
            (Some(config), Some(socket)) => {
                let server = crate::sources::coap::server::Server {
                    config: config.clone(),
                    ingest: ingest.clone(),
                    handoff: handoff.clone(),
                    routes: coap_routes,
                    metrics: metrics.clone(),
                    lease: lease.clone(),
                };
                Some(tokio::spawn(crate::sources::coap::server::run(server, socket, sessions_stop.clone())))
            }
            _ => None,
        };
        let sessions = Session::ALL
            .into_iter()
            .map(|session| {
                tokio::spawn(supervise_session(
                    session,
                    mqtt.clone(),
                    ingest.clone(),
                    handoff.clone(),
                    metrics.clone(),
                    lease.clone(),
                    sessions_stop.clone(),
                ))
            })
            .collect();

        let modbus_stats = cfg.modbus.as_ref().map(|m| Arc::new(ModbusStats::new(m)));
        let modbus = match (&cfg.modbus, &modbus_stats) {
            (Some(modbus), Some(stats)) if !modbus.devices.is_empty() => {
                // Bounded: a stalled spool slows the pollers down rather than piling up
                // readings in memory.
                let (tx, rx) = mpsc::channel(1024);
                let pollers = tokio::spawn(crate::sources::modbus::run(
                    modbus.clone(),
                    tx,
                    stats.clone(),
                    sessions_stop.clone(),
                ));
                Some((pollers, tokio::spawn(store_modbus(rx, ingest.clone(), alarms.clone()))))
            }
            _ => None,
        };

        let shared = Arc::new(Shared {
            metrics: metrics.clone(),
            ingest: ingest.clone(),
            spool: spool.clone(),
            destinations: destination_stats,
            modbus: modbus_stats,
            api: alarm.as_ref().map(|a| crate::device_api::DeviceApiState {
                api: firegrid_officers::api::ApiState {
                    cases: a.cases.clone(),
                    officers: a.officers.clone(),
                    metrics: metrics.clone(),
                    places: site.clone(),
                    district: cfg.alerting.district.clone(),
                    time_zone: cfg.alerting.time_zone,
                },
                site: site.clone(),
                registry: cfg.registry.csv.clone(),
                placing: Arc::default(),
                ingest: ingest.clone(),
                firmware: firmware.clone(),
            }),
            site: site.clone(),
            basemap,
        });
        let health_task = tokio::spawn(write_health(
            shared.clone(),
            cfg.mqtt.as_ref().map_or("embedded", |m| m.client_id.as_str()).to_owned(),
            sessions_stop.clone(),
        ));
        let http_stop = CancellationToken::new();
        let mut cert_watch = None;
        let http_tls = match &cfg.http_tls {
            Some(files) => {
                let cert = crate::tls::ReloadingCert::load(files)?;
                // A renewed certificate is served within seconds of being written.
                cert_watch = Some(cert.watch(Duration::from_secs(2), http_stop.clone()));
                Some(crate::tls::server_config(cert, &[b"http/1.1"])?)
            }
            None => None,
        };
        let (http_addr, mut http) = crate::http::serve(
            cfg.http_listen,
            cfg.ops_listener(),
            http_tls,
            shared.clone(),
            http_stop.clone(),
        )
        .await
        .map_err(|source| StartError::Http { listen: cfg.http_listen, source })?;
        http.extend(cert_watch);
        tracing::info!(%http_addr, mqtt = %format!("{}:{}", mqtt.host, mqtt.port), "Gateway running.");
        Ok(Gateway {
            http_addr,
            mqtt,
            shared,
            spool,
            sessions,
            sessions_stop,
            destinations,
            destinations_stop,
            http,
            http_stop,
            fleet,
            fleet_stop,
            firmware: [firmware_task, firmware_loop],
            health_task,
            modbus,
            coap,
            alarm,
        })
    }

    /// Stops in order: the MQTT sessions finish and acknowledge what they took; the spool is
    /// fsynced; the destinations get 5 s to catch up; then the HTTP server.
    /// Nothing accepted is lost: what is not written stays in the spool.
    pub async fn stop(self) {
        self.sessions_stop.cancel();
        for session in self.sessions {
            match session.await {
                Ok(Err(error)) => tracing::error!(%error, "MQTT session ended with an error."),
                Err(error) => tracing::error!(%error, "MQTT session task failed."),
                Ok(Ok(())) => {}
            }
        }
        let _ = self.health_task.await;
        if let Some(coap) = self.coap {
            let _ = coap.await;
        }
        if let Some((pollers, store)) = self.modbus {
            let _ = pollers.await;
            let _ = store.await;
        }
        if let Some(alarm) = self.alarm {
            alarm.stop().await;
        }
        if let Err(error) = self.spool.lock().unwrap().commit(Durability::Disk) {
            tracing::error!(%error, "Final spool sync failed.");
        }
        let started = Instant::now();
        while started.elapsed() < DRAIN_ON_STOP {
            if self.shared.pending() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.destinations_stop.cancel();
        for d in self.destinations {
            let _ = d.await;
        }
        self.http_stop.cancel();
        for task in self.http {
            let _ = task.await;
        }
        self.fleet_stop.cancel();
        let _ = self.fleet.await;
        for task in self.firmware {
            let _ = task.await;
        }
        tracing::info!("Gateway stopped.");
    }
}

/// How long a session whose batch could not be stored waits before it reconnects.
const SESSION_RESTART: Duration = Duration::from_secs(5);

/// Runs a session until `stop`. A session that ends early (the spool could not store a
/// batch, say on a full disk) is started again after [`SESSION_RESTART`]; the broker then
/// redelivers everything it had not had acknowledged. A configuration error ends it for good.
async fn supervise_session(
    session: Session,
    mqtt: MqttConfig,
    ingest: Arc<Ingest>,
    handoff: mpsc::UnboundedSender<Accepted>,
    metrics: Arc<Metrics>,
    lease: Arc<crate::alarm::lease::Lease>,
    stop: CancellationToken,
) -> Result<(), String> {
    mqtt.filters(session)?;
    loop {
        let ended = run_session(
            session,
            mqtt.clone(),
            ingest.clone(),
            handoff.clone(),
            metrics.clone(),
            lease.clone(),
            stop.clone(),
        )
        .await;
        if stop.is_cancelled() || !lease.holds() {
            return ended;
        }
        if let Err(error) = ended {
            tracing::error!(session = session.name(), %error, retry_in_s = SESSION_RESTART.as_secs(), "MQTT session stopped; restarting.");
        }
        tokio::select! {
            _ = tokio::time::sleep(SESSION_RESTART) => {}
            _ = stop.cancelled() => return Ok(()),
        }
    }
}

/// How often the gateway writes its own health into the spool.
const HEALTH_EVERY: Duration = Duration::from_secs(10);

/// Writes [`Shared::health_points`] into the spool every 10 s until `stop`.
async fn write_health(shared: Arc<Shared>, gateway: String, stop: CancellationToken) {
    let mut every = tokio::time::interval(HEALTH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => return,
        }
        // Off the runtime: both take the spool's lock, and storing commits with an fsync.
        let (shared, gateway) = (shared.clone(), gateway.clone());
        let stored = tokio::task::spawn_blocking(move || {
            let now = now_ms();
            let points = shared.health_points(&gateway, (now as i64).saturating_mul(1_000_000));
            shared.ingest.store_points(&points, firegrid_protocol::Class::Telemetry, now)
        })
        .await
        .expect("storing the health does not panic");
        if let Err(error) = stored {
            tracing::error!(%error, "Cannot store the gateway's health.");
        }
    }
}

/// Stores what the Modbus pollers report: readings as telemetry, conditions as events.
async fn store_modbus(
    mut rx: mpsc::Receiver<ModbusEvent>,
    ingest: Arc<Ingest>,
    alarms: Option<(firegrid_cases::Cases, String)>,
) {
    use crate::series::schema::{modbus_condition_point, modbus_reading_point};
    while let Some(event) = rx.recv().await {
        let stored = match &event {
            ModbusEvent::Reading(r) => {
                ingest.store_local(&r.device, firegrid_protocol::Class::Telemetry, r.ts_ms, |place, ts| {
                    modbus_reading_point(r, place, ts)
                })
            }
            ModbusEvent::Condition(c) => {
                if let Some((cases, district)) = &alarms
                    && let Some(location) = crate::alarm::launch::location_of(&ingest, &c.device, district)
                {
                    cases.signal(crate::alarm::signals::from_modbus(c, &location));
                }
                tracing::warn!(device = %c.device, condition = ?c.condition, active = c.active, value = c.value, "Water sensor condition changed.");
                ingest.store_local(&c.device, firegrid_protocol::Class::Event, c.ts_ms, |place, ts| {
                    modbus_condition_point(c, place, ts)
                })
            }
            ModbusEvent::PollFailed { .. } => Ok(()),
        };
        if let Err(error) = stored {
            tracing::error!(%error, "Cannot store a Modbus event in the spool.");
        }
    }
}

/// The downlink command counter in the data directory.
fn open_counter(data_dir: &std::path::Path) -> Result<crate::keys::CommandCounter, StartError> {
    let path = data_dir.join("downlink-seq");
    crate::keys::CommandCounter::open(&path)
        .map_err(|source| StartError::Counter { path: path.display().to_string(), source })
}

/// Reloads the key store when its file changes (`firegrid devices rotate|revoke` on a running
/// gateway). A file that cannot be loaded keeps the previous keys.
async fn reload_keys(path: std::path::PathBuf, ingest: Arc<Ingest>, stop: CancellationToken) {
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen = modified(&path);
    let mut every = tokio::time::interval(std::time::Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => return,
        }
        let now = modified(&path);
        if now == seen {
            continue;
        }
        seen = now;
        // Parsing a street's store takes tens of milliseconds: off the runtime's workers.
        let file = path.clone();
        let loaded = tokio::task::spawn_blocking(move || crate::keys::KeyStore::load(&file)).await;
        match loaded.expect("loading keys does not panic") {
            Ok(keys) => {
                tracing::info!(devices = keys.len(), "Device keys reloaded.");
                ingest.set_keys(Arc::new(keys));
            }
            Err(error) => {
                tracing::error!(%error, "Key store changed but cannot be loaded; keeping the previous keys.")
            }
        }
    }
}

/// Without a registry there is no liveness to feed: accepted messages go straight on, and
/// alarm-class ones are logged.
async fn forward(mut rx: mpsc::UnboundedReceiver<Accepted>, onward: Option<mpsc::UnboundedSender<Accepted>>) {
    while let Some(a) = rx.recv().await {
        if a.msg.class() == firegrid_protocol::Class::Alarm {
            tracing::info!(device = %a.msg.dev, village = %a.topic.village, body = ?a.msg.body, "Alarm-class message accepted.");
        }
        if let Some(tx) = &onward {
            let _ = tx.send(a);
        }
    }
}
