//! [`ChannelTracker`]: the sans-IO state of a camera's channels. It takes parsed signals, RTSP
//! probe results and the time as arguments and returns the protocol bodies to send: camera
//! events when a condition starts or ends, channel health when a channel's status changes.
//! It never reads a clock and never does I/O, so every timer is testable in microseconds.
//!
//! **Events.** A condition (smoke, fire, fire lane blocked) is reported once when it starts
//! and once when it ends, whatever the vendor repeats in between. Vendors that repeat an
//! active event instead of ending it reliably (Hikvision) get `event_hold`: an event not
//! repeated for that long is reported as ended.
//!
//! **Health.** A channel is `offline` when the event stream missed `missed_heartbeats`
//! heartbeat periods in a row (any message counts as a heartbeat: it proves the stream is
//! alive), or when its RTSP `OPTIONS` probe failed `probe_failures` times in a row; one good
//! heartbeat or probe brings it back (hysteresis: slow to declare a channel dead, quick to
//! trust it again, so a fire camera is never reported offline for one lost packet yet is
//! believed as soon as it speaks). Otherwise it is `video_loss` or `tampered` while the
//! camera says so, else `online`. Health is reported on changes only; the first report comes
//! with the first heartbeat, or as `offline` when none came in time.

use std::collections::BTreeMap;

use firegrid_protocol::{CameraEvent, CameraHealth, ChannelStatus, SnapshotRef, UplinkBody};

use crate::signal::{CameraSignal, SignalKind};

/// Timing and defaults of the tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerConfig {
    /// Channels whose health is reported from the start; channels seen in events join.
    pub channels: Vec<u16>,
    /// The event stream's heartbeat period, ms.
    pub heartbeat_interval_ms: u64,
    /// Heartbeat periods without any message before the channels go offline.
    pub missed_heartbeats: u32,
    /// Consecutive failed RTSP probes before a channel goes offline.
    pub probe_failures: u32,
    /// How long an active event lasts without being repeated, ms; `None` for vendors that
    /// report ends.
    pub event_hold_ms: Option<u64>,
    /// Confidence reported when the vendor gives none. A camera raises an event only above
    /// its own configured sensitivity, so by default it is reported as certain.
    pub default_confidence_pct: u8,
    /// Snapshot reference for events without one: `{channel}` is replaced by the channel
    /// number (e.g. `/ISAPI/Streaming/channels/{channel}01/picture`).
    pub snapshot: Option<String>,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            channels: vec![1],
            heartbeat_interval_ms: 10_000,
            missed_heartbeats: 3,
            probe_failures: 3,
            event_hold_ms: None,
            default_confidence_pct: 100,
            snapshot: None,
        }
    }
}

#[derive(Debug, Clone)]
struct ActiveEvent {
    last_seen_ms: u64,
    confidence_pct: u8,
    snapshot: Option<SnapshotRef>,
}

#[derive(Debug, Clone, Default)]
struct Health {
    video_loss: bool,
    tampered: bool,
    failed_probes: u32,
    reported: Option<ChannelStatus>,
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct ChannelTracker {
    config: TrackerConfig,
    started_ms: u64,
    last_heartbeat_ms: Option<u64>,
    events: BTreeMap<(u16, SignalKind), ActiveEvent>,
    health: BTreeMap<u16, Health>,
}

impl ChannelTracker {
    /// A tracker started at `now_ms`, knowing nothing yet.
    pub fn new(config: TrackerConfig, now_ms: u64) -> Self {
        let health = config.channels.iter().map(|&c| (c, Health::default())).collect();
        ChannelTracker {
            config,
            started_ms: now_ms,
            last_heartbeat_ms: None,
            events: BTreeMap::new(),
            health,
        }
    }

    /// A parsed signal arrived at `now_ms`.
    pub fn on_signal(&mut self, signal: &CameraSignal, now_ms: u64) -> Vec<UplinkBody> {
        let mut out = Vec::new();
        self.last_heartbeat_ms = Some(now_ms);
        let channel = signal.channel.filter(|&c| c >= 1);
        match (signal.kind, channel) {
            (SignalKind::Heartbeat, _) | (_, None) => {}
            (SignalKind::VideoLoss, Some(c)) => self.health.entry(c).or_default().video_loss = signal.active,
            (SignalKind::Tampered, Some(c)) => self.health.entry(c).or_default().tampered = signal.active,
            (kind, Some(c)) => {
                self.health.entry(c).or_default();
                self.on_event(c, kind, signal, now_ms, &mut out);
            }
        }
        self.report_health(now_ms, &mut out);
        out
    }

    /// An RTSP probe of `channel` finished at `now_ms`.
    pub fn on_probe(&mut self, channel: u16, ok: bool, now_ms: u64) -> Vec<UplinkBody> {
        let health = self.health.entry(channel).or_default();
        health.failed_probes = if ok { 0 } else { health.failed_probes.saturating_add(1) };
        let mut out = Vec::new();
        self.report_health(now_ms, &mut out);
        out
    }

    /// Time passed: ends held events that were not repeated, and takes channels offline when
    /// heartbeats stopped.
    pub fn tick(&mut self, now_ms: u64) -> Vec<UplinkBody> {
        let mut out = Vec::new();
        if let Some(hold) = self.config.event_hold_ms {
            let expired: Vec<(u16, SignalKind)> = self
                .events
                .iter()
                .filter(|(_, e)| now_ms.saturating_sub(e.last_seen_ms) >= hold)
                .map(|(key, _)| *key)
                .collect();
            for (channel, kind) in expired {
                if let Some(event) = self.events.remove(&(channel, kind)) {
                    out.extend(event_body(channel, kind, false, event.confidence_pct, event.snapshot));
                }
            }
        }
        self.report_health(now_ms, &mut out);
        out
    }

    /// The status last reported for `channel`, if any.
    pub fn reported(&self, channel: u16) -> Option<ChannelStatus> {
        self.health.get(&channel).and_then(|h| h.reported)
    }

    /// Whether a condition is currently active on `channel`.
    pub fn is_active(&self, channel: u16, kind: SignalKind) -> bool {
        self.events.contains_key(&(channel, kind))
    }

    fn on_event(
        &mut self,
        channel: u16,
        kind: SignalKind,
        signal: &CameraSignal,
        now_ms: u64,
        out: &mut Vec<UplinkBody>,
    ) {
        match (self.events.get_mut(&(channel, kind)), signal.active) {
            // A repetition: the event goes on.
            (Some(event), true) => event.last_seen_ms = now_ms,
            (None, true) => {
                let confidence_pct =
                    signal.confidence_pct.unwrap_or(self.config.default_confidence_pct).min(100);
                let snapshot = self.snapshot(channel, signal.snapshot.as_deref());
                out.extend(event_body(channel, kind, true, confidence_pct, snapshot.clone()));
                self.events
                    .insert((channel, kind), ActiveEvent { last_seen_ms: now_ms, confidence_pct, snapshot });
            }
            (Some(_), false) => {
                if let Some(event) = self.events.remove(&(channel, kind)) {
                    out.extend(event_body(channel, kind, false, event.confidence_pct, event.snapshot));
                }
            }
            // The end of something never reported as started (e.g. ONVIF's `Initialized`
            // false at subscription): nothing to say.
            (None, false) => {}
        }
    }

    /// The snapshot reference: the vendor's if it is valid protocol text, else the template.
    fn snapshot(&self, channel: u16, vendor: Option<&str>) -> Option<SnapshotRef> {
        let text = vendor.map(str::to_owned).or_else(|| {
            self.config.snapshot.as_ref().map(|t| t.replace("{channel}", &channel.to_string()))
        })?;
        let valid = text.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'\\'));
        if valid { SnapshotRef::try_from(text.as_str()).ok() } else { None }
    }

    fn stream_down(&self, now_ms: u64) -> bool {
        let since = self.last_heartbeat_ms.unwrap_or(self.started_ms);
        let limit =
            self.config.heartbeat_interval_ms.saturating_mul(u64::from(self.config.missed_heartbeats));
        now_ms.saturating_sub(since) >= limit
    }

    fn report_health(&mut self, now_ms: u64, out: &mut Vec<UplinkBody>) {
        let stream_down = self.stream_down(now_ms);
        let heard = self.last_heartbeat_ms.is_some();
        let probe_limit = self.config.probe_failures.max(1);
        for (&channel, health) in &mut self.health {
            let status = if stream_down || health.failed_probes >= probe_limit {
                Some(ChannelStatus::Offline)
            } else if !heard {
                None
            } else if health.video_loss {
                Some(ChannelStatus::VideoLoss)
            } else if health.tampered {
                Some(ChannelStatus::Tampered)
            } else {
                Some(ChannelStatus::Online)
            };
            if status.is_some() && status != health.reported {
                health.reported = status;
                out.extend(status.map(|status| UplinkBody::CameraHealth(CameraHealth { channel, status })));
            }
        }
    }
}

fn event_body(
    channel: u16,
    kind: SignalKind,
    active: bool,
    confidence_pct: u8,
    snapshot: Option<SnapshotRef>,
) -> Option<UplinkBody> {
    Some(UplinkBody::CameraEvent(CameraEvent {
        channel,
        event: kind.camera_event()?,
        active,
        confidence_pct,
        snapshot,
    }))
}

#[cfg(test)]
mod tests;
