//! The registered fleet at run time: the registry (reloaded when its file changes) and the
//! liveness engine (fed by every accepted message, ticked every second, persisted so that a
//! restart neither floods false offline events nor forgets real ones).
//!
//! The pure parts live in [`crate::registry`] and [`crate::liveness`]; this module owns the
//! clock, the files and the task.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use firegrid_protocol::{Class, DeviceId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::DeadlineClock;
use crate::ingest::{Accepted, Directory, Ingest};
use crate::liveness::{Liveness, LivenessConfig, LivenessEvent, LivenessSnapshot};
use crate::registry::{Device, Registry, ScopeLevel};
use crate::series::schema::{Placement, communication_loss_point, device_status_point};

/// How often the liveness state is written to disk. A crash loses at most this much of it,
/// which only delays (never invents) an offline event by as much.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(10);

/// How often the registry file's modification time is checked.
const REGISTRY_POLL: Duration = Duration::from_secs(5);

/// The placement tags of a registered device.
pub fn placement(device: &Device) -> Placement<'_> {
    let b = &device.building;
    Placement {
        village: &b.village,
        street: &b.street,
        community: &b.community,
        grid: &b.grid,
        building: &b.id,
        device_kind: device.kind.as_str(),
    }
}

impl Directory for Registry {
    fn placement(&self, device: &DeviceId) -> Option<Placement<'_>> {
        self.get(device).map(|d| placement(d))
    }

    fn sounders_in(&self, building: &str) -> Vec<(firegrid_protocol::VillageId, DeviceId)> {
        self.devices()
            .iter()
            .filter(|d| &*d.building.id == building && d.kind == crate::registry::DeviceKind::SmokeDetector)
            .filter_map(|d| {
                Some((firegrid_protocol::VillageId::new(&d.building.village).ok()?, d.id.clone()))
            })
            .collect()
    }
}

/// The name of a scope level in series and logs.
pub fn level_name(level: ScopeLevel) -> &'static str {
    match level {
        ScopeLevel::Building => "building",
        ScopeLevel::Grid => "grid",
        ScopeLevel::Community => "community",
        ScopeLevel::Village => "village",
    }
}

/// Loads the registry for the first time and restores (or starts) liveness, with the clock
/// it runs on: a [`DeadlineClock`] that starts no earlier than the snapshot's latest time, so
/// that neither a wall clock stepped forward (every device offline at once) nor one stepped
/// back (no device ever late) moves a heartbeat deadline.
pub fn start(
    csv: &Path,
    snapshot: &Path,
    ingest: &Ingest,
) -> Result<(Arc<Registry>, Liveness, DeadlineClock), crate::registry::RegistryError> {
    let registry = Arc::new(Registry::load(csv)?);
    tracing::info!(devices = registry.len(), file = %csv.display(), "Registry loaded.");
    ingest.set_directory(registry.clone());
    let snapshot = read_snapshot(snapshot);
    let clock = DeadlineClock::start(snapshot.as_ref().map_or(0, LivenessSnapshot::latest_ms));
    let now = clock.now_ms();
    let liveness = match snapshot {
        Some(s) => Liveness::restore(LivenessConfig::default(), s, registry.clone(), now),
        None => Liveness::new(LivenessConfig::default(), registry.clone(), now),
    };
    Ok((registry, liveness, clock))
}

fn read_snapshot(path: &Path) -> Option<LivenessSnapshot> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(s) => Some(s),
        Err(error) => {
            tracing::error!(file = %path.display(), %error, "Liveness snapshot unreadable; starting fresh.");
            None
        }
    }
}

fn write_snapshot(path: &Path, liveness: &Liveness) {
    let tmp = path.with_extension("json.tmp");
    let written = serde_json::to_vec(&liveness.snapshot())
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(error) = written {
        tracing::error!(file = %path.display(), %error, "Cannot write the liveness snapshot.");
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// What the fleet task needs.
pub struct FleetTask {
    /// The registry file.
    pub csv: PathBuf,
    /// Where the liveness snapshot lives.
    pub snapshot: PathBuf,
    /// The liveness engine, restored by [`start`].
    pub liveness: Liveness,
    /// The clock liveness runs on, from [`start`].
    pub clock: DeadlineClock,
    /// Ingest, for storing events and swapping the directory.
    pub ingest: Arc<Ingest>,
    /// The alarm loop and the district name, when it runs.
    pub alarms: Option<(firegrid_cases::Cases, String)>,
    /// What the console shows; gets every reloaded registry.
    pub site: Arc<crate::site::Site>,
}

/// Most accepted messages taken at once (what is queued, up to this).
const BATCH: usize = 512;

/// Runs until `shutdown`: feeds accepted messages to liveness and forwards them to `onward`
/// (the alarm loop), ticks liveness every second, stores its events, reloads the registry when
/// its file changes (a bad file keeps the old registry and logs every bad line), and writes
/// the snapshot every 10 s and at the end.
pub async fn run(
    mut task: FleetTask,
    mut accepted: mpsc::UnboundedReceiver<Accepted>,
    onward: Option<mpsc::UnboundedSender<Accepted>>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut snapshot_at = tokio::time::Instant::now() + SNAPSHOT_EVERY;
    let mut registry_checked = tokio::time::Instant::now();
    let mut registry_mtime = modified(&task.csv);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            n = accepted.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break;
                }
                // A whole batch's events in one commit: after a restart (or a new registry)
                // every device's first message is a state change, and a commit (an fsync)
                // per message would make a backlog crawl.
                let mut events = Vec::new();
                for a in &batch {
                    events.extend(match &a.msg.body {
                        // The device's last will: its connection is gone now.
                        firegrid_protocol::UplinkBody::Status(s) if !s.online => {
                            task.liveness.disconnected(&a.msg.dev, task.clock.now_ms())
                        }
                        // Heard now on the liveness clock: the acceptance stamp is wall time.
                        _ => task.liveness.seen(&a.msg.dev, task.clock.now_ms()),
                    });
                }
                // The commit fsyncs (and may wait for the spool's lock): off the runtime's
                // other tasks, so an alarm batch's delivery or the API never waits for it.
                if !events.is_empty() {
                    tokio::task::block_in_place(|| store(&task.ingest, &events));
                }
                signal(&task, &events);
                for a in batch.drain(..) {
                    log_alarm(&a);
                    if let Some(tx) = &onward {
                        let _ = tx.send(a);
                    }
                }
            }
            _ = tick.tick() => {
                let events = task.liveness.tick(task.clock.now_ms());
                if !events.is_empty() {
                    tokio::task::block_in_place(|| store(&task.ingest, &events));
                }
                signal(&task, &events);
                let now = tokio::time::Instant::now();
                if now >= snapshot_at {
                    write_snapshot(&task.snapshot, &task.liveness);
                    snapshot_at = now + SNAPSHOT_EVERY;
                }
                if now.duration_since(registry_checked) >= REGISTRY_POLL {
                    registry_checked = now;
                    let mtime = modified(&task.csv);
                    if mtime != registry_mtime {
                        registry_mtime = mtime;
                        reload(&mut task);
                    }
                }
            }
            _ = shutdown.cancelled() => break,
        }
    }
    write_snapshot(&task.snapshot, &task.liveness);
}

fn reload(task: &mut FleetTask) {
    match Registry::load(&task.csv) {
        Ok(registry) => {
            let registry = Arc::new(registry);
            tracing::info!(devices = registry.len(), "Registry reloaded.");
            task.ingest.set_directory(registry.clone());
            task.site.set_registry(registry.clone());
            task.liveness.reload(registry, task.clock.now_ms());
        }
        Err(error) => {
            tracing::error!(%error, "Registry file changed but cannot be loaded; keeping the previous registry.");
        }
    }
}

/// Tells the alarm loop about devices offline and scopes lost, and their recovery.
fn signal(task: &FleetTask, events: &[LivenessEvent]) {
    use firegrid_alerting::{Condition, Location, Signal};
    let Some((cases, district)) = &task.alarms else { return };
    let place = |b: &crate::registry::Building, building: bool| Location {
        district: district.clone(),
        street: b.street.to_string(),
        community: b.community.to_string(),
        grid: b.grid.to_string(),
        building: if building { b.id.to_string() } else { String::new() },
    };
    for event in events {
        let signal = match event {
            LivenessEvent::Offline { device, .. } | LivenessEvent::Online { device, .. } => Signal {
                device: device.id.to_string(),
                location: place(&device.building, true),
                condition: Condition::Offline,
                active: matches!(event, LivenessEvent::Offline { .. }),
                unplaced: None,
            },
            LivenessEvent::ScopeLost { scope, .. } | LivenessEvent::ScopeRestored { scope, .. } => {
                let Some(building) = task.liveness.building_in(scope) else { continue };
                // The case sits at the lost scope: a grid's loss belongs to its grid desk, a
                // community's to the community (its grid left empty), a village's to the street.
                let mut location = place(&building, scope.level == ScopeLevel::Building);
                match scope.level {
                    ScopeLevel::Building | ScopeLevel::Grid => {}
                    ScopeLevel::Community => location.grid.clear(),
                    ScopeLevel::Village => {
                        location.grid.clear();
                        location.community.clear();
                    }
                }
                Signal {
                    device: format!("{}:{}", level_name(scope.level), scope.name),
                    location,
                    condition: Condition::CommunicationLoss,
                    active: matches!(event, LivenessEvent::ScopeLost { .. }),
                    unplaced: None,
                }
            }
        };
        cases.signal(signal);
    }
}

fn log_alarm(a: &Accepted) {
    if a.msg.class() == Class::Alarm {
        tracing::info!(device = %a.msg.dev, village = %a.topic.village, body = ?a.msg.body, "Alarm-class message accepted.");
    }
}

/// Stores liveness events as series (events class: never shed), all of them in one commit
/// (a grid coming back online is hundreds of events, which one fsync each would put in front of
/// any alarm waiting for the spool), and logs them.
fn store(ingest: &Ingest, events: &[LivenessEvent]) {
    let Some(latest) = events.iter().map(LivenessEvent::at_ms).max() else { return };
    let mut points = Vec::with_capacity(events.len());
    for event in events {
        let point = match event {
            LivenessEvent::Offline { device, last_heard_ms, at_ms } => {
                tracing::warn!(device = %device.id, building = %device.building.id, silent_ms = at_ms - last_heard_ms, "Device offline.");
                ingest.local_point(&device.id, *at_ms, |place, ts| {
                    device_status_point(place, device.id.as_str(), false, at_ms - last_heard_ms, ts)
                })
            }
            LivenessEvent::Online { device, offline_since_ms, at_ms } => {
                tracing::info!(device = %device.id, offline_ms = at_ms - offline_since_ms, "Device back online.");
                ingest.local_point(&device.id, *at_ms, |place, ts| {
                    device_status_point(place, device.id.as_str(), true, 0, ts)
                })
            }
            LivenessEvent::ScopeLost { scope, offline, total, since_ms } => {
                tracing::error!(level = level_name(scope.level), scope = %scope.name, offline, total, "Communication loss: most devices of this scope went silent together.");
                ingest.scope_point(*since_ms, |ts| {
                    communication_loss_point(level_name(scope.level), &scope.name, true, *offline, *total, ts)
                })
            }
            LivenessEvent::ScopeRestored { scope, offline, total, at_ms, .. } => {
                tracing::info!(level = level_name(scope.level), scope = %scope.name, offline, total, "Communication restored.");
                ingest.scope_point(*at_ms, |ts| {
                    communication_loss_point(
                        level_name(scope.level),
                        &scope.name,
                        false,
                        *offline,
                        *total,
                        ts,
                    )
                })
            }
        };
        points.push(point);
    }
    if let Err(error) = ingest.store_points(&points, Class::Event, latest) {
        tracing::error!(%error, events = points.len(), "Cannot store liveness events in the spool.");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use firegrid_protocol::{Limits, VillageId};
    use tokio::sync::Notify;

    use super::*;
    use crate::admission::AdmissionConfig;
    use crate::metrics::Metrics;
    use crate::registry::{DeviceKind, DeviceRecord};
    use crate::spool::{Spool, SpoolConfig};

    /// A device of `kind` in `building`, in grid g1 of village fuhai-1.
    fn record(id: &str, kind: DeviceKind, building: &str) -> DeviceRecord {
        DeviceRecord {
            id: DeviceId::new(id).unwrap(),
            kind,
            model: "JTY-GD".into(),
            building: building.into(),
            address: "Lane 1".into(),
            lat: 25.0,
            lon: 102.6,
            grid: "g1".into(),
            community: "c1".into(),
            street: "fuhai".into(),
            village: VillageId::new("fuhai-1").unwrap(),
            district: None,
            heartbeat_ms: None,
            channels: (kind == DeviceKind::Camera).then_some(4),
        }
    }

    /// A grid coming back online: 500 events, one commit and one fsync, so an alarm waiting
    /// for the spool waits for one fsync, not five hundred.
    #[test]
    fn a_batch_of_liveness_events_is_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Mutex::new(Spool::open(SpoolConfig::new(dir.path()), &["db"]).unwrap()));
        let ingest = Ingest::new(
            spool.clone(),
            Arc::new(Notify::new()),
            AdmissionConfig::default(),
            Limits::default(),
            Arc::new(Metrics::new()),
            1,
        )
        .unwrap();
        let records = (0..500)
            .map(|i| record(&format!("sd-{i:04}"), DeviceKind::SmokeDetector, &format!("b{}", i / 5)));
        let registry = Arc::new(Registry::from_records(records).unwrap());
        ingest.set_directory(registry.clone());
        let events: Vec<_> = registry
            .devices()
            .iter()
            .map(|d| LivenessEvent::Online { device: d.clone(), offline_since_ms: 1_000, at_ms: 9_000 })
            .collect();
        let before = spool.lock().unwrap().stats().clone();
        store(&ingest, &events);
        let after = spool.lock().unwrap().stats().clone();
        assert_eq!(after.appended - before.appended, 500, "every event is stored");
        assert_eq!(after.syncs - before.syncs, 1, "in one fsynced commit");
        let lines = spool.lock().unwrap().read("db", 1_000, usize::MAX).unwrap();
        assert!(
            lines
                .iter()
                .all(|r| std::str::from_utf8(&r.payload).unwrap().contains("device_kind=smoke_detector"))
        );
    }

    /// A fire's sounder command goes to the building's smoke detectors only: a camera or a
    /// water sensor in the same building has no sounder and would answer `unsupported`.
    #[test]
    fn only_smoke_detectors_are_sounders() {
        let registry = Registry::from_records([
            record("sd-1", DeviceKind::SmokeDetector, "b1"),
            record("cam-1", DeviceKind::Camera, "b1"),
            record("ws-1", DeviceKind::WaterSensor, "b1"),
            record("sd-2", DeviceKind::SmokeDetector, "b1"),
            record("sd-3", DeviceKind::SmokeDetector, "b2"),
        ])
        .unwrap();
        let mut sounders: Vec<String> =
            registry.sounders_in("b1").into_iter().map(|(_, d)| d.as_str().to_owned()).collect();
        sounders.sort();
        assert_eq!(sounders, ["sd-1", "sd-2"]);
        assert!(registry.sounders_in("b9").is_empty());
    }
}
