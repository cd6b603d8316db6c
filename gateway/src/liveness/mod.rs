//! Liveness (巡检): which devices stopped talking, and which whole buildings, grids,
//! communities or villages went dark together.
//!
//! [`Liveness`] is a sans-IO state machine: [`Liveness::seen`] on every valid message,
//! [`Liveness::tick`] about once a second, both with the current time as an argument, both
//! returning [`LivenessEvent`]s. It never reads a clock and never does I/O, so every timer
//! is tested in microseconds and the state survives a restart through
//! [`Liveness::snapshot`] and [`Liveness::restore`].
//!
//! The rules, and why:
//!
//! - **Offline after N missed heartbeats.** A device is offline once silent for
//!   `N × interval + grace`; N defaults to 3. GB 50440 asks for a patrol of every link at
//!   least every 2 h: powered devices meet it many times over (a camera at 60 s is offline
//!   after 3.5 min). NB-IoT detectors report every 4–24 h to last ten years on a battery, so
//!   for them no N can meet it; their interval is the lever (the registry's `heartbeat`
//!   column), not N. They also lose single uplinks to coverage and PSM timing, so one or two
//!   missed heartbeats are routine; three in a row is a device or network fault worth a
//!   person's visit, while N = 1 or 2 would page grid workers for radio noise.
//! - **Hysteresis.** A device is back online on its next valid message, and the next
//!   offline needs a full new silence window from that message, so Offline → Online →
//!   Offline takes at least `N × interval`; each transition emits at most one event, and
//!   every [`LivenessEvent::Online`] follows an [`LivenessEvent::Offline`] of the same device.
//! - **Correlated outages.** When one NB-IoT cell or a building's power fails, every device
//!   behind it stops at once, but their offline deadlines spread over a whole heartbeat
//!   interval because their heartbeat phases are spread. So the engine also counts devices
//!   that are *late* (missed at least one heartbeat): those all turn late within one
//!   interval, well before the first of them crosses N (N ≥ 2). When a device turns offline
//!   and, in one of its scopes, at least `scope_lost_percent` of the devices (and at least
//!   `scope_min_devices`) are late or offline, the widest such scope is lost: one
//!   [`LivenessEvent::ScopeLost`], and no per-device `Offline` for any device inside a lost
//!   scope. A scope inside an already lost one is never lost on its own (no cascade of
//!   building events under a lost grid), while a wider one still can be, as the outage
//!   grows. A radio cell does not follow the grid map: a cell covering half of each of
//!   several grids is reported per building or grid that crosses the threshold, still far
//!   fewer events than devices. A scope is restored ([`LivenessEvent::ScopeRestored`]) once
//!   `scope_restored_percent` of its devices have been heard from again; the gap between the
//!   two thresholds keeps a scope from flapping. Devices heard from inside a lost scope emit
//!   nothing (the scope's case covers them) unless they had their own `Offline` before the
//!   scope was lost, which their `Online` then closes. Devices still silent when the scope is
//!   restored get one more interval (plus grace) to report before their own `Offline`: a
//!   detector that only reports daily cannot show it survived the outage any sooner.
//! - **Restart.** After a restart every device gets one interval (plus grace) from the
//!   restart before it can go offline, because its messages may still be queued at the
//!   broker; devices offline before the restart stay offline, lost scopes stay lost, and
//!   nothing is re-emitted.
//! - **Registry reload** ([`Liveness::reload`]): new devices start their clock at the
//!   reload, removed devices and scopes are forgotten without events, the rest keep their
//!   state.

mod engine;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use engine::Liveness;
use firegrid_protocol::DeviceId;

use crate::registry::{Device, Scope, ScopeLevel};

/// Tuning of the liveness rules (see the module documentation for the reasoning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LivenessConfig {
    /// N: heartbeats missed in a row before a device is offline. Default 3; values below 2
    /// are treated as 2, because correlation needs the late stage before the offline one.
    pub missed_heartbeats: u32,
    /// Added to every silence window, ms: covers transport delay and a device clock that
    /// runs a little slow. Default 30 s.
    pub grace_ms: u64,
    /// Share of a scope's devices, in percent, that must be late or offline for the scope to
    /// be lost. Default 50.
    pub scope_lost_percent: u32,
    /// Share of a lost scope's devices, in percent, that must be heard from again for the
    /// scope to be restored. Default 75.
    pub scope_restored_percent: u32,
    /// Fewest late or offline devices that make a lost scope: below it, a small building
    /// raises per-device events, which are few anyway. Default 5.
    pub scope_min_devices: u32,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        LivenessConfig {
            missed_heartbeats: 3,
            grace_ms: 30_000,
            scope_lost_percent: 50,
            scope_restored_percent: 75,
            scope_min_devices: 5,
        }
    }
}

/// What the liveness engine tells the alerting engine.
#[derive(Debug, Clone, PartialEq)]
pub enum LivenessEvent {
    /// A device missed N heartbeats and is not inside a lost scope.
    Offline {
        /// The device, with its kind, building, grid, community and village.
        device: Arc<Device>,
        /// When it was last heard from (or its clock started).
        last_heard_ms: u64,
        /// When it became offline: `last_heard_ms + N × interval + grace`, or later after a
        /// restart.
        at_ms: u64,
    },
    /// A device that had an `Offline` sent a valid message.
    Online {
        /// The device.
        device: Arc<Device>,
        /// When it became offline.
        offline_since_ms: u64,
        /// When it was heard from.
        at_ms: u64,
    },
    /// A large share of a scope went silent together: one communication-loss condition for
    /// the scope instead of one per device.
    ScopeLost {
        /// The building, grid, community or village.
        scope: Scope,
        /// Devices in it that are late or offline.
        offline: u32,
        /// Devices in it.
        total: u32,
        /// When the loss was recognised.
        since_ms: u64,
    },
    /// Most of a lost scope is heard from again.
    ScopeRestored {
        /// The scope.
        scope: Scope,
        /// Devices in it still late or offline.
        offline: u32,
        /// Devices in it.
        total: u32,
        /// When it was lost.
        lost_since_ms: u64,
        /// When it was restored.
        at_ms: u64,
    },
}

impl LivenessEvent {
    /// When the event happened (for a lost scope: when the loss was recognised).
    pub fn at_ms(&self) -> u64 {
        match self {
            LivenessEvent::Offline { at_ms, .. }
            | LivenessEvent::Online { at_ms, .. }
            | LivenessEvent::ScopeRestored { at_ms, .. } => *at_ms,
            LivenessEvent::ScopeLost { since_ms, .. } => *since_ms,
        }
    }
}

/// Where one device stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceStatus {
    /// Heard from within its interval (plus grace).
    Online,
    /// Missed at least one heartbeat, not yet N.
    Late,
    /// Missed N heartbeats.
    Offline {
        /// Since when.
        since_ms: u64,
        /// Whether an `Offline` event was sent for it (false: covered by a lost scope).
        reported: bool,
    },
}

/// The liveness state to persist across a restart: when each device was last heard from,
/// which are offline, which scopes are lost. Serde-serialisable, with short field names and
/// tuples so that 50,000 devices stay around 2 MB as JSON; works with non-self-describing
/// formats (postcard, bincode) too.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LivenessSnapshot {
    #[serde(rename = "d")]
    devices: Vec<SnapshotDevice>,
    #[serde(rename = "l")]
    lost: Vec<SnapshotScope>,
}

impl LivenessSnapshot {
    /// The latest time the snapshot records (a device last heard, offline or lost), Unix
    /// ms; 0 for an empty one. The liveness clock must not start before it after a restart.
    pub fn latest_ms(&self) -> u64 {
        let devices = self.devices.iter().flat_map(|SnapshotDevice(_, heard, offline)| {
            std::iter::once(*heard).chain(offline.map(|(since, _)| since))
        });
        let scopes = self.lost.iter().map(|SnapshotScope(_, _, since)| *since);
        devices.chain(scopes).max().unwrap_or(0)
    }
}

/// Device id, last heard, and (offline since, reported) if offline.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct SnapshotDevice(DeviceId, u64, Option<(u64, bool)>);

/// A lost scope and when it was lost.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct SnapshotScope(ScopeLevel, String, u64);
