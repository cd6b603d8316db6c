//! Starting the alarm loop inside the gateway: its store, the notification outbox and its
//! delivery worker, the linkage command client, and the feeds from ingest, liveness and
//! Modbus.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firegrid_alerting::{Location, Millis};
use firegrid_cases::service::{Cases, DeskChannels, Wiring};
use firegrid_cases::store::{CaseStore, PostgresOptions};
use firegrid_cases::{AlertingConfig, StoreConfig, feed_deliveries};
use firegrid_notify::{NotifyConfig, Outbox};
use firegrid_officers::DirectoryWatch;
use firegrid_protocol::{DeviceId, Downlink, DownlinkBody, Encoding, Limits};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::lease::Lease;
use super::linkage::{Answer, Linkage, SounderCommand, Waiting};
use crate::ingest::{Accepted, Ingest};
use crate::metrics::Metrics;
use crate::sources::mqtt::MqttConfig;

/// The running alarm loop and its helpers.
pub struct AlarmLoop {
    /// The handle the API and the feeds use.
    pub cases: Cases,
    /// The officer directory, if configured.
    pub officers: Option<Arc<DirectoryWatch>>,
    /// Sounder commands the devices have not answered yet.
    pub linkage: Arc<Mutex<Linkage>>,
    /// Whether this gateway still holds the case store's lease: checked before every page,
    /// downlink and MQTT reconnection.
    pub lease: Arc<Lease>,
    thread: Option<std::thread::JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
    stop: CancellationToken,
}

/// Why the alarm loop did not start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The case store.
    #[error(transparent)]
    Store(#[from] firegrid_cases::store::StoreError),
    /// The outbox.
    #[error(transparent)]
    Outbox(#[from] firegrid_notify::OutboxError),
    /// A channel's configuration.
    #[error(transparent)]
    Channel(#[from] firegrid_notify::ConfigError),
    /// The officer directory.
    #[error(transparent)]
    Officers(#[from] firegrid_officers::DirectoryError),
    /// Inconsistent settings.
    #[error("{0}")]
    Invalid(String),
}

/// Opens the case store that `[alerting.store]` selects.
fn open_store(config: &StoreConfig, data_dir: &std::path::Path) -> Result<CaseStore, LaunchError> {
    let Some(conninfo) = &config.postgres else {
        return Ok(CaseStore::open(data_dir.join("cases.sqlite"))?);
    };
    let password = config.password(|name| std::env::var(name).ok()).map_err(|e| {
        let file = config.password_file.as_deref().unwrap_or(std::path::Path::new("?"));
        LaunchError::Invalid(format!("[alerting.store] password_file {}: {e}", file.display()))
    })?;
    let tls = config
        .tls
        .as_ref()
        .map(|tls| tls.client_config())
        .transpose()
        .map_err(|e| LaunchError::Invalid(format!("[alerting.store] tls: {e}")))?;
    let mut options = PostgresOptions { password, tls, ..PostgresOptions::default() };
    if config.standby {
        tracing::info!("Standing by until this gateway holds the case store in PostgreSQL.");
        (options.wait, options.lease) = (std::time::Duration::MAX, Some(config.lease));
    }
    let store = CaseStore::open_postgres_with(conninfo, &options)?;
    tracing::info!("The case store is in PostgreSQL.");
    Ok(store)
}

impl AlarmLoop {
    /// Opens everything under `data_dir` and starts the loop.
    pub async fn start(
        cfg: &AlertingConfig,
        notify: &NotifyConfig,
        data_dir: &std::path::Path,
        ingest: Arc<Ingest>,
        metrics: Arc<Metrics>,
        mqtt: &MqttConfig,
        site: Arc<crate::site::Site>,
    ) -> Result<AlarmLoop, LaunchError> {
        cfg.engine.validate().map_err(LaunchError::Invalid)?;
        if let Some(desk) = &cfg.unplaced_desk {
            desk.parse::<firegrid_alerting::Scope>()
                .map_err(|e| LaunchError::Invalid(format!("[alerting] unplaced_desk: {e}")))?;
        }
        let channels = firegrid_notify::build_channels(&notify.channels)?;
        for (desk, names) in &cfg.routes {
            if desk != "*" && desk.parse::<firegrid_alerting::Scope>().is_err() {
                return Err(LaunchError::Invalid(format!(
                    "[alerting.routes] {desk:?} is not `level:name` or `*`"
                )));
            }
            if let Some(missing) = names.iter().find(|n| !channels.contains_key(*n)) {
                return Err(LaunchError::Invalid(format!(
                    "[alerting.routes] {desk:?} names unknown channel {missing:?}"
                )));
            }
        }
        let console_only = channels.is_empty();
        if console_only {
            tracing::warn!(
                "No notification channel is configured ([notify.channels]): cases show in the API and console only."
            );
        }
        let officers = match &cfg.officers {
            Some(path) => Some(Arc::new(DirectoryWatch::open(path.clone())?)),
            None => None,
        };
        let dir = data_dir.to_owned();
        let outbox_health = metrics.stores.clone();
        let store_config = cfg.store.clone();
        // On the blocking pool: the PostgreSQL client must not run on an async worker thread.
        let renew_every = store_config.renew_every;
        let (store, outbox, lease) = tokio::task::spawn_blocking(move || {
            let store = open_store(&store_config, &dir)?;
            let lease = match store.lease_renewer() {
                Some(renewer) => Lease::hold(renewer, renew_every)?,
                None => Lease::unbounded(),
            };
            let gate = lease.clone();
            // With the case store in PostgreSQL the outbox is there too, under the same
            // epoch: whoever holds the store holds the outbox (ARCHITECTURE.md).
            let local = dir.join("notify-outbox.sqlite");
            let outbox = match store.shared_outbox() {
                Some(table) => {
                    if local.exists() {
                        tracing::warn!(
                            path = %local.display(),
                            "The local notification outbox file is not used: the outbox is in the case store's database. Deliveries still pending in it are not sent; the alarm loop's replay queues again what it has not seen delivered."
                        );
                    }
                    Outbox::open_shared(table)?
                }
                None => Outbox::open(&local)?,
            };
            let outbox = outbox
                .report_to(outbox_health)
                .gated(Arc::new(move || gate.may_act()));
            Ok::<_, LaunchError>((store, outbox, lease))
        })
        .await
        .expect("opening files does not panic")?;

        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        let (reports_tx, reports_rx) = mpsc::channel(4096);
        tasks.push(tokio::spawn(firegrid_notify::outbox::run(
            outbox.clone(),
            channels,
            notify.delivery.clone(),
            reports_tx,
            stop.clone(),
        )));

        tasks.push(tokio::spawn(publish_outbox_metrics(outbox.clone(), metrics.clone(), stop.clone())));

        let routes = cfg.routes.clone();
        let directory = officers.clone();
        let desk_channels: DeskChannels = Arc::new(move |desk: &str| {
            let mut names: Vec<String> =
                routes.get(desk).into_iter().chain(routes.get("*")).flatten().cloned().collect();
            if let (Some(dir), Ok(scope)) = (&directory, desk.parse::<firegrid_alerting::Scope>()) {
                names.extend(dir.current().on_duty_channels(&scope));
            }
            names.sort();
            names.dedup();
            names
        });

        let (commands, command_loop) = command_client(mqtt, "commands", lease.clone(), stop.clone());
        tasks.push(command_loop);
        let linkage = Arc::new(Mutex::new(Linkage::default()));
        let sound_ingest = ingest.clone();
        let sound_linkage = linkage.clone();
        let sound_client = commands.clone();
        let sound_lease = lease.clone();
        let sound = Arc::new(
            move |case,
                  location: &Location,
                  on: bool,
                  command: u64,
                  confirmed: &std::collections::BTreeSet<String>| {
                let directory = sound_ingest.directory();
                let now = crate::clock::wall_ms();
                let devices = directory.sounders_in(&location.building);
                let mut linkage = sound_linkage.lock().unwrap();
                if devices.is_empty() {
                    // Right after a restart the registry is not loaded yet: the resend task
                    // expands the building once it is.
                    let confirmed = confirmed.clone();
                    linkage.wait(&location.building, Waiting { case, on, generation: command, confirmed });
                }
                for (village, device) in devices.into_iter().filter(|(_, d)| !confirmed.contains(d.as_str()))
                {
                    if let Some(cmd) = linkage.command(now, village, device, case, on, command) {
                        publish_sounders(&sound_client, &sound_ingest, &sound_lease, &mut linkage, &cmd);
                    }
                }
            },
        );
        tasks.push(tokio::spawn(resend_sounders(
            linkage.clone(),
            commands,
            ingest.clone(),
            lease.clone(),
            cfg.linkage_resend,
            stop.clone(),
        )));
        let series_ingest = ingest.clone();
        let series = Arc::new(move |action: &firegrid_alerting::Action, at: Millis| {
            use crate::series::schema::{alarm_flood_point, case_transition_point};
            let ts = (at as i64).saturating_mul(1_000_000);
            let point = match action {
                firegrid_alerting::Action::Record(t) => case_transition_point(t, ts),
                firegrid_alerting::Action::Kpi(k) => alarm_flood_point(k, ts),
                _ => return,
            };
            if let Err(error) = series_ingest.store_points(&[point], firegrid_protocol::Class::Event, at) {
                tracing::error!(%error, "Cannot store a case transition in the spool.");
            }
        });
        let pending = Arc::new(Mutex::new(HashMap::new()));
        let wiring = Wiring {
            outbox,
            desk_channels,
            series,
            sound,
            console_url: cfg.console_url.clone(),
            pages: firegrid_cases::service::PageContext {
                time_zone: cfg.time_zone,
                address: {
                    let site = site.clone();
                    Arc::new(move |building: &str| {
                        site.building(building).map(|(b, _)| b.address.to_string())
                    })
                },
            },
            pending: pending.clone(),
            console_only,
            retention: cfg.retention,
            runtime: tokio::runtime::Handle::current(),
            health: metrics.stores.clone(),
        };
        let mut engine = cfg.engine.clone();
        if let Some(path) = &cfg.holidays {
            let text = std::fs::read_to_string(path)
                .map_err(|e| LaunchError::Invalid(format!("[alerting] holidays {}: {e}", path.display())))?;
            engine.holidays = firegrid_alerting::Calendar::from_toml(&text)
                .map_err(|e| LaunchError::Invalid(format!("[alerting] holidays {}: {e}", path.display())))?;
        }
        // A next-working-day deadline within the next 60 days must know its holidays.
        let soon = (crate::clock::wall_ms() / 86_400_000) as i64 + 60;
        if !engine.holidays.covers(soon) {
            tracing::warn!(
                known_through = engine.holidays.known_through().as_deref().unwrap_or("never"),
                "The holiday calendar ends within 60 days: next-working-day deadlines after it count Monday to Friday. \
                 Add the State Council's notice for next year ([alerting] holidays)."
            );
        }
        // Restoring replays the log and queues its notifications through the runtime, so it
        // runs off the async threads.
        let (cases, thread) = tokio::task::spawn_blocking(move || Cases::start(store, engine, wiring))
            .await
            .expect("restoring does not panic")?;
        // Every delivery attempt is counted by outcome (`delivered`, a failure reason, `gave_up`).
        let count_attempt = move |outcome: &str| {
            metrics
                .notifications
                .get_or_create(&crate::metrics::ReasonLabel { reason: outcome.into() })
                .inc();
        };
        tasks.push(tokio::spawn(feed_deliveries(reports_rx, pending, cases.clone(), count_attempt)));
        if let Some(watch) = &officers {
            tasks.push(tokio::spawn(firegrid_officers::run(
                watch.clone(),
                Duration::from_secs(5),
                stop.clone(),
            )));
        }
        Ok(AlarmLoop { cases, officers, linkage, lease, thread: Some(thread), tasks, stop })
    }

    /// Stops the loop (it snapshots) and its helpers.
    pub async fn stop(mut self) {
        self.cases.stop();
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.stop.cancel();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

/// How often the outbox's queue depth is read for the metrics: one grouped count over the
/// pending rows, cheap at any realistic depth.
const OUTBOX_METRICS_EVERY: Duration = Duration::from_secs(5);

/// Publishes the outbox's queue depth and counts to the metrics until `stop`.
async fn publish_outbox_metrics(outbox: Outbox, metrics: Arc<Metrics>, stop: CancellationToken) {
    let mut shown = crate::metrics::OutboxShown::default();
    let mut ticks = tokio::time::interval(OUTBOX_METRICS_EVERY);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.cancelled() => return,
        }
        match outbox.depth().await {
            Ok(depth) => metrics.outbox(&depth, &outbox.stats(), &mut shown),
            Err(error) => tracing::warn!(%error, "Reading the notification outbox's depth failed."),
        }
    }
}

/// The location of a registered device as the engine sees it.
pub fn location_of(ingest: &Ingest, device: &DeviceId, district: &str) -> Option<Location> {
    let directory = ingest.directory();
    let place = directory.placement(device)?;
    Some(Location {
        district: district.to_owned(),
        street: place.street.to_owned(),
        community: place.community.to_owned(),
        grid: place.grid.to_owned(),
        building: place.building.to_owned(),
    })
}

/// The location of some registered building of `village`, if the registry knows one.
fn known_in_village(site: &crate::site::Site, village: &str, district: &str) -> Option<Location> {
    use crate::registry::{Scope, ScopeLevel};
    let registry = site.registry()?;
    let device = registry.in_scope(&Scope { level: ScopeLevel::Village, name: village.into() }).next()?;
    let b = &device.building;
    Some(Location {
        district: district.to_owned(),
        street: b.street.to_string(),
        community: b.community.to_string(),
        grid: b.grid.to_string(),
        building: b.id.to_string(),
    })
}

/// What [`feed_accepted`] hands messages to.
pub struct Feed {
    /// The alarm loop.
    pub cases: Cases,
    /// For registry lookups.
    pub ingest: Arc<Ingest>,
    /// The district (the top of every location).
    pub district: String,
    /// `[alerting] unplaced_desk`, parsed.
    pub unplaced_desk: Option<firegrid_alerting::Scope>,
    /// What the console shows about places.
    pub site: Arc<crate::site::Site>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Sounder commands waiting for their `command_ack`.
    pub linkage: Arc<Mutex<Linkage>>,
}

/// Feeds accepted device messages to the alarm loop, and on to `onward`. Alarms, faults and
/// camera events of devices the registry does not know go to `unplaced_desk` (see
/// [`super::signals::unplaced_location`]): an unregistered detector's fire is still a fire.
pub async fn feed_accepted(
    mut rx: mpsc::UnboundedReceiver<Accepted>,
    onward: Option<mpsc::UnboundedSender<Accepted>>,
    feed: Feed,
) {
    let Feed { cases, ingest, district, unplaced_desk, site, metrics, linkage } = feed;
    while let Some(a) = rx.recv().await {
        // The console shows registered places: an unregistered id (which anyone can invent)
        // never grows its maps.
        if a.registered {
            site.record(&a.msg, a.accepted_ms);
        }
        if let firegrid_protocol::UplinkBody::CommandAck(ack) = &a.msg.body {
            let answer = linkage.lock().unwrap().answer(&a.msg.dev, ack.cmd_seq, ack.result);
            match answer {
                Answer::Confirmed(case, command) => {
                    cases.sounder_confirmed(case, a.msg.dev.to_string(), command)
                }
                Answer::Refused => {
                    tracing::warn!(device = %a.msg.dev, cmd_seq = ack.cmd_seq, result = ?ack.result, "A device refused its sounder command.");
                }
                Answer::Stale => {}
            }
        }
        // Heartbeats, water readings and acknowledgements (almost all traffic) raise nothing:
        // they skip the registry lookup.
        let signals =
            match super::signals::may_signal(&a.msg).then(|| location_of(&ingest, &a.msg.dev, &district)) {
                Some(Some(location)) => super::signals::from_uplink(&a.msg, &location),
                Some(None) => {
                    let village = a.topic.village.as_str();
                    let known = known_in_village(&site, village, &district);
                    let location = super::signals::unplaced_location(
                        unplaced_desk.as_ref(),
                        village,
                        known.as_ref(),
                        &district,
                    );
                    let signals = super::signals::from_unplaced(&a.msg, village, &location);
                    if !signals.is_empty() {
                        let desk = unplaced_desk
                            .as_ref()
                            .map_or_else(|| format!("street:{}", location.street), ToString::to_string);
                        metrics.unplaced_signal(a.msg.dev.as_str(), &desk);
                    }
                    signals
                }
                None => Vec::new(),
            };
        for signal in signals {
            cases.signal(signal);
        }
        if let Some(tx) = &onward {
            let _ = tx.send(a);
        }
    }
}

/// A client for commands (linkage: `-commands`; firmware: `-firmware`), with its own session
/// so its publishes survive reconnects. It reconnects only while this gateway holds the case
/// store's lease (`lease`): a gateway that woke from a freeze must not take the session back
/// from the standby that took over.
pub(crate) fn command_client(
    mqtt: &MqttConfig,
    suffix: &str,
    lease: Arc<Lease>,
    stop: CancellationToken,
) -> (AsyncClient, JoinHandle<()>) {
    // The TLS settings were loaded once at start (`Config::check`); a file that went bad since
    // falls back to no client at all rather than to plain text.
    let id = format!("{}-{suffix}", mqtt.client_id);
    let mut opts = match mqtt.options(id.clone()) {
        Ok(opts) => opts,
        Err(error) => {
            tracing::error!(%error, client = %id, "Command client cannot be configured; commands are not sent.");
            MqttOptions::new(id, "invalid.invalid", 1)
        }
    };
    opts.set_clean_session(false);
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    let max = mqtt.max_backoff;
    let task = tokio::spawn(async move {
        let mut waits = crate::retry::backoff(Duration::from_millis(200), max);
        loop {
            tokio::select! {
                polled = eventloop.poll() => match polled {
                    Ok(_) => waits = crate::retry::backoff(Duration::from_millis(200), max),
                    Err(error) => {
                        tracing::debug!(%error, "Command client disconnected.");
                        let wait = waits.next().unwrap_or(max);
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = stop.cancelled() => return,
                        }
                        if !lease.holds() {
                            tracing::warn!("Command client not reconnected: this gateway's lease on the case store ran out.");
                            return;
                        }
                    }
                },
                _ = stop.cancelled() => return,
            }
        }
    });
    (client, task)
}

/// Publishes unanswered sounder commands again every `every` until the devices answer.
async fn resend_sounders(
    linkage: Arc<Mutex<Linkage>>,
    client: AsyncClient,
    ingest: Arc<Ingest>,
    lease: Arc<Lease>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut ticks =
        tokio::time::interval((every / 4).clamp(Duration::from_millis(100), Duration::from_secs(1)));
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.cancelled() => return,
        }
        let now = crate::clock::wall_ms();
        let mut due = Vec::new();
        let mut linkage = linkage.lock().unwrap();
        if linkage.waiting() > 0 {
            let directory = ingest.directory();
            for (building, w) in linkage.take_waiting() {
                let devices = directory.sounders_in(&building);
                if devices.is_empty() {
                    linkage.wait(&building, w);
                    continue;
                }
                for (village, device) in
                    devices.into_iter().filter(|(_, d)| !w.confirmed.contains(d.as_str()))
                {
                    due.extend(linkage.command(now, village, device, w.case, w.on, w.generation));
                }
            }
        }
        due.extend(linkage.due(now, every.as_millis() as Millis));
        for cmd in &due {
            tracing::debug!(device = %cmd.device, on = cmd.on, generation = cmd.generation, "Sounder state sent again: not confirmed yet.");
            publish_sounders(&client, &ingest, &lease, &mut linkage, cmd);
        }
    }
}

/// Publishes one sounder state as a new downlink, numbered so that no number repeats and
/// signed for a keyed detector's current boot, and records its number for the device's
/// `command_ack`. Nothing goes out once this gateway's lease ran out (`lease`).
fn publish_sounders(
    client: &AsyncClient,
    ingest: &Ingest,
    lease: &Lease,
    linkage: &mut Linkage,
    cmd: &SounderCommand,
) {
    if !lease.may_act() {
        tracing::warn!(device = %cmd.device, "Sounder command not sent: this gateway is not the village's active one any more.");
        return;
    }
    let now = crate::clock::wall_ms();
    // In the device's own encoding (a compact-only board reads no JSON).
    let body = DownlinkBody::Sounders { on: cmd.on };
    let Some((topic, payload)) = ingest.command_for(&cmd.village, &cmd.device, body, now) else {
        tracing::warn!(device = %cmd.device, "No sounder command for a revoked device.");
        return;
    };
    // The number the device will answer: read back from the command as it goes out.
    if let Ok(sent) = Downlink::decode(&payload, Encoding::detect(&payload), &Limits::default()) {
        linkage.sent(&cmd.device, cmd.generation, sent.seq);
    }
    if let Err(error) = client.try_publish(topic, QoS::AtLeastOnce, false, payload) {
        tracing::error!(%error, "Cannot queue a sounder command.");
    }
}
