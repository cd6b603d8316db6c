//! Running a fleet against a broker in simulated time: `speed` simulated seconds per real
//! second (1 = real time; 60 = a day in 24 minutes), deterministic for a seed as far as the
//! devices go (the broker and the network add their own timing).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::fleet::{Fleet, Sent};
use crate::scenario::BadFirmware;
use crate::transport::{Mode, Transport, TransportStats};

/// How to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Direct or platform.
    pub mode: Mode,
    /// Simulated seconds per real second.
    pub speed: f64,
    /// Simulated time to run.
    pub duration: Duration,
    /// Print a progress line this often (real time); `None` for silence.
    pub report_every: Option<Duration>,
    /// Run the village's cameras through the camera agent, with their state (outbox, boot
    /// counter) under this directory; `None` leaves cameras out.
    pub camera_state: Option<std::path::PathBuf>,
    /// MQTT user name and password of the fleet's connections (a platform account). Cameras
    /// with a key log in with their own account instead (user name the device id, password
    /// derived from the key).
    pub credentials: Option<(String, String)>,
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Report {
    /// Simulated ms reached.
    pub simulated_ms: u64,
    /// Real time taken.
    pub wall: Duration,
    /// Messages the firmware sent (first sends and retransmissions).
    pub sent: u64,
    /// Publishes handed to MQTT.
    pub published: u64,
    /// Publishes the MQTT client refused (its queue was full): an alarm or event is resent by
    /// the firmware, a heartbeat is lost (the firmware was done with it once handed over).
    pub refused: u64,
    /// Downlinks received (acknowledgements, commands).
    pub downlinks: u64,
    /// Messages still in outboxes at the end (alarms and events not acknowledged, anything
    /// not yet sent).
    pub outbox_total: usize,
    /// The fullest outbox at the end.
    pub outbox_max: usize,
    /// Connections.
    pub connections: usize,
    /// Real time spent connecting before simulated time 0.
    pub connecting: Duration,
    /// Camera channels simulated through the camera agent.
    pub camera_channels: usize,
}

/// Runs `fleet` until the simulated duration has passed, then waits (up to `drain` of real
/// time) for the outboxes to empty.
pub async fn run(fleet: &mut Fleet, cfg: &RunConfig, bad: Option<&BadFirmware>, drain: Duration) -> Report {
    let ids: Vec<String> = fleet.village().devices.iter().map(|d| d.id.clone()).collect();
    let village = fleet.village().village.clone();
    let sends: Vec<bool> =
        fleet.village().devices.iter().map(|d| d.kind == crate::village::Kind::Detector).collect();
    let (transport, mut downlinks) =
        Transport::connect(&village, &ids, &sends, (&cfg.host, cfg.port, cfg.credentials.as_ref()), cfg.mode);
    let stats = transport.stats.clone();
    let mut cameras = match &cfg.camera_state {
        Some(dir) => {
            match crate::cameras::Cameras::start(fleet.village(), &cfg.host, cfg.port, dir, fleet.keys()) {
                Ok(cameras) => Some(cameras),
                Err(error) => {
                    tracing::error!(%error, "Cameras not started.");
                    None
                }
            }
        }
        None => None,
    };
    let camera_channels = cameras.as_ref().map_or(0, |c| c.channels());
    let mut camera_beat = Instant::now() - Duration::from_secs(60);
    // Let connections come up before the first messages (they would be resent anyway).
    let started = Instant::now();
    while stats.connected.load(Ordering::Relaxed) < transport.connections()
        && started.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bad_devices: Vec<usize> =
        bad.map_or(Vec::new(), |b| (0..b.devices.min(ids.len())).map(|k| (k * 131) % ids.len()).collect());
    let bad_every_ms = bad.map_or(u64::MAX, |b| (60_000.0 / b.per_minute.max(0.001)) as u64);
    let mut next_bad = bad_every_ms;

    let connecting = started.elapsed();
    let epoch = Instant::now();
    let simulated = |at: Instant| (at.duration_since(epoch).as_secs_f64() * cfg.speed * 1000.0) as u64;
    let end = cfg.duration.as_millis() as u64;
    let mut out: Vec<Sent> = Vec::new();
    let mut last_report = Instant::now();
    let mut now = 0;
    loop {
        now = simulated(Instant::now()).min(end).max(now);
        fleet.run_until(now, &mut out);
        while let Ok((device, payload)) = downlinks.try_recv() {
            fleet.deliver(device, &payload, now, &mut out);
        }
        if !out.is_empty() {
            transport.publish(&out);
            out.clear();
        }
        if let Some(cameras) = cameras.as_mut() {
            // Camera streams carry a heartbeat every few seconds of real time: the agent's
            // channel health runs on the real clock.
            if camera_beat.elapsed() >= Duration::from_secs(2) {
                camera_beat = Instant::now();
                cameras.heartbeat();
            }
            cameras.see_fires(fleet.village(), fleet.fires(), fleet.fire_ends(), now);
        }
        while next_bad <= now && !bad_devices.is_empty() {
            for d in &bad_devices {
                transport.publish_raw(*d, "state", b"{\"v\":1,\"dev\":".to_vec());
            }
            next_bad += bad_every_ms;
        }
        if let Some(every) = cfg.report_every
            && last_report.elapsed() >= every
        {
            last_report = Instant::now();
            print_progress(fleet, &stats, now, transport.connections());
        }
        let (total, _) = fleet.outbox_depth();
        if now >= end && (total == 0 || epoch.elapsed() >= cfg.duration.div_f64(cfg.speed) + drain) {
            break;
        }
        // Sleep until the next device is due (in real time), or a downlink arrives.
        let next = fleet.next_wake().unwrap_or(end).min(end).max(now + 1);
        let wait = Duration::from_secs_f64(((next - now) as f64 / 1000.0 / cfg.speed).min(0.05));
        tokio::select! {
            got = downlinks.recv() => {
                if let Some((device, payload)) = got {
                    fleet.deliver(device, &payload, now, &mut out);
                }
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
    let (outbox_total, outbox_max) = fleet.outbox_depth();
    let report = Report {
        simulated_ms: now,
        wall: epoch.elapsed(),
        sent: fleet.sent(),
        published: stats.published.load(Ordering::Relaxed),
        refused: stats.refused.load(Ordering::Relaxed),
        downlinks: stats.downlinks.load(Ordering::Relaxed),
        outbox_total,
        outbox_max,
        connections: transport.connections(),
        connecting,
        camera_channels,
    };
    transport.stop();
    if let Some(cameras) = cameras {
        // A last heartbeat and a moment for the agents' outboxes to be acknowledged.
        cameras.heartbeat();
        tokio::time::sleep(Duration::from_secs(1)).await;
        cameras.stop().await;
    }
    report
}

fn print_progress(fleet: &Fleet, stats: &Arc<TransportStats>, now: u64, connections: usize) {
    let (total, max) = fleet.outbox_depth();
    println!(
        "t={} connected {}/{} sent {} published {} downlinks {} outboxes {} (max {})",
        humantime::format_duration(Duration::from_secs(now / 1000)),
        stats.connected.load(Ordering::Relaxed),
        connections,
        fleet.sent(),
        stats.published.load(Ordering::Relaxed),
        stats.downlinks.load(Ordering::Relaxed),
        total,
        max
    );
}
