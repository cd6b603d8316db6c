//! The liveness state machine (pure: time in, events out).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use firegrid_protocol::DeviceId;

use super::{DeviceStatus, LivenessConfig, LivenessEvent, LivenessSnapshot, SnapshotDevice, SnapshotScope};
use crate::registry::{Registry, Scope};

/// Where a device stands, as kept per device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Healthy,
    Late,
    Offline { reported: bool },
}

/// Per-device state, parallel to [`Registry::devices`]: 48 bytes.
#[derive(Debug, Clone)]
struct Tracked {
    /// Last valid message, or when the clock started (first load, reload).
    heard_ms: u64,
    /// No offline before this (0 for none): set to one interval plus grace after a restart
    /// or a scope restore, cleared by the next message.
    grace_until_ms: u64,
    /// When it went offline (meaningful in `Status::Offline`).
    offline_since_ms: u64,
    /// Its building, grid, community and village in `Liveness::scopes`, narrowest first.
    scopes: [u32; 4],
    status: Status,
    /// Whether it has an entry in the deadline queue (at most one).
    queued: bool,
}

#[derive(Debug, Clone)]
struct ScopeState {
    scope: Scope,
    total: u32,
    /// Devices late or offline.
    late: u32,
    /// When it was lost, if it is.
    lost_since_ms: Option<u64>,
    /// Queued for a restore check at the next tick.
    dirty: bool,
}

/// What one device carried over from a snapshot or the previous registry.
#[derive(Debug, Clone, Copy)]
struct Prior {
    heard_ms: u64,
    grace_until_ms: u64,
    offline: Option<(u64, bool)>,
}

/// The liveness engine for one registry. See the module documentation for the rules.
///
/// Cost: [`Liveness::seen`] is O(1) (a hash lookup, four counter updates, and a heap push
/// only when the device had no pending deadline); [`Liveness::tick`] pops only the
/// deadlines that have passed from a binary heap holding at most one entry per device, so an
/// idle second costs one comparison, not a scan of 50,000 devices. Heap entries are lazy:
/// `seen` only moves the deadline later, and an entry popped early is pushed again with the
/// real deadline, so each device is popped about once per heartbeat interval.
#[derive(Debug, Clone)]
pub struct Liveness {
    config: LivenessConfig,
    registry: Arc<Registry>,
    devices: Vec<Tracked>,
    scopes: Vec<ScopeState>,
    queue: BinaryHeap<Reverse<(u64, u32)>>,
    dirty: Vec<u32>,
}

impl Liveness {
    /// Starts tracking every device of `registry`, with its clock starting at `now_ms`.
    pub fn new(config: LivenessConfig, registry: Arc<Registry>, now_ms: u64) -> Self {
        Liveness::build(config, registry, now_ms, |_| None, Vec::new(), None)
    }

    /// Rebuilds the state after a restart from a snapshot taken before it. Devices keep
    /// when they were last heard from and whether they are offline; lost scopes stay lost;
    /// nothing is emitted. Every device not offline gets at least one interval (plus grace)
    /// from `now_ms` before it can go offline, since its messages may still be queued at
    /// the broker. Devices the snapshot does not know start their clock at `now_ms`;
    /// snapshot entries the registry does not know are dropped.
    pub fn restore(
        config: LivenessConfig,
        snapshot: LivenessSnapshot,
        registry: Arc<Registry>,
        now_ms: u64,
    ) -> Self {
        let prior: HashMap<DeviceId, Prior> = snapshot
            .devices
            .into_iter()
            .map(|SnapshotDevice(id, heard_ms, offline)| (id, Prior { heard_ms, grace_until_ms: 0, offline }))
            .collect();
        let lost = snapshot
            .lost
            .into_iter()
            .map(|SnapshotScope(level, name, since)| (Scope { level, name: name.into() }, since))
            .collect();
        Liveness::build(config, registry, now_ms, |id| prior.get(id).copied(), lost, Some(now_ms))
    }

    /// The state to persist; [`Liveness::restore`] reads it back.
    pub fn snapshot(&self) -> LivenessSnapshot {
        let devices = self
            .registry
            .devices()
            .iter()
            .zip(&self.devices)
            .map(|(d, t)| {
                let Prior { heard_ms, offline, .. } = self.prior_of(t);
                SnapshotDevice(d.id.clone(), heard_ms, offline)
            })
            .collect();
        let lost = self
            .scopes
            .iter()
            .filter_map(|s| {
                s.lost_since_ms.map(|since| SnapshotScope(s.scope.level, s.scope.name.to_string(), since))
            })
            .collect();
        LivenessSnapshot { devices, lost }
    }

    /// A building inside `scope`, to place a case about the scope in the hierarchy.
    pub fn building_in(&self, scope: &Scope) -> Option<Arc<crate::registry::Building>> {
        use crate::registry::ScopeLevel;
        self.registry
            .devices()
            .iter()
            .map(|d| &d.building)
            .find(|b| {
                let name = match scope.level {
                    ScopeLevel::Building => &b.id,
                    ScopeLevel::Grid => &b.grid,
                    ScopeLevel::Community => &b.community,
                    ScopeLevel::Village => &b.village,
                };
                **name == *scope.name
            })
            .cloned()
    }

    /// Switches to a reloaded registry: devices still in it keep their state, new ones
    /// start their clock at `now_ms`, removed devices and scopes are forgotten without
    /// events (their cases are the registry editor's business, not an outage).
    pub fn reload(&mut self, registry: Arc<Registry>, now_ms: u64) {
        let prior: HashMap<&DeviceId, Prior> = self
            .registry
            .devices()
            .iter()
            .zip(&self.devices)
            .map(|(d, t)| (&d.id, self.prior_of(t)))
            .collect();
        let lost = self
            .scopes
            .iter()
            .filter_map(|s| s.lost_since_ms.map(|since| (s.scope.clone(), since)))
            .collect();
        let config = self.config.clone();
        let new = Liveness::build(config, registry, now_ms, |id| prior.get(id).copied(), lost, None);
        *self = new;
    }

    fn prior_of(&self, t: &Tracked) -> Prior {
        let offline = match t.status {
            Status::Offline { reported } => Some((t.offline_since_ms, reported)),
            _ => None,
        };
        Prior { heard_ms: t.heard_ms, grace_until_ms: t.grace_until_ms, offline }
    }

    fn build(
        mut config: LivenessConfig,
        registry: Arc<Registry>,
        now_ms: u64,
        prior: impl Fn(&DeviceId) -> Option<Prior>,
        lost: Vec<(Scope, u64)>,
        restarted_ms: Option<u64>,
    ) -> Self {
        config.missed_heartbeats = config.missed_heartbeats.max(2);
        let mut scopes: Vec<ScopeState> = Vec::new();
        let mut scope_index: HashMap<Scope, u32> = HashMap::new();
        let mut devices = Vec::with_capacity(registry.len());
        let mut queue = BinaryHeap::with_capacity(registry.len());
        for (i, device) in registry.devices().iter().enumerate() {
            let mut ids = [0u32; 4];
            for (slot, scope) in ids.iter_mut().zip(device.scopes()) {
                *slot = *scope_index.entry(scope.clone()).or_insert_with(|| {
                    scopes.push(ScopeState { scope, total: 0, late: 0, lost_since_ms: None, dirty: false });
                    scopes.len() as u32 - 1
                });
                scopes[*slot as usize].total += 1;
            }
            let prior = prior(&device.id);
            // After the clock went backwards a last message lies in the future, which would
            // postpone the device's deadline by the jump: count it as heard now instead.
            let heard_ms = prior.map_or(now_ms, |p| p.heard_ms.min(now_ms));
            let interval = device.heartbeat_ms;
            let grace_until_ms = match restarted_ms {
                Some(restart) => restart + interval + config.grace_ms,
                None => prior.map_or(0, |p| p.grace_until_ms),
            };
            let (status, offline_since_ms) = match prior.and_then(|p| p.offline) {
                Some((since, reported)) => (Status::Offline { reported }, since),
                None if now_ms >= heard_ms + interval + config.grace_ms => (Status::Late, 0),
                None => (Status::Healthy, 0),
            };
            if status != Status::Healthy {
                for s in ids {
                    scopes[s as usize].late += 1;
                }
            }
            let mut tracked =
                Tracked { heard_ms, grace_until_ms, offline_since_ms, scopes: ids, status, queued: false };
            if let Some(deadline) = next_deadline(&tracked, interval, &config) {
                queue.push(Reverse((deadline, i as u32)));
                tracked.queued = true;
            }
            devices.push(tracked);
        }
        let mut dirty = Vec::new();
        for (scope, since) in lost {
            if let Some(&s) = scope_index.get(&scope) {
                scopes[s as usize].lost_since_ms = Some(since);
                scopes[s as usize].dirty = true;
                dirty.push(s);
            }
        }
        let mut me = Liveness { config, registry, devices, scopes, queue, dirty };
        // A device held offline only by a scope that no longer exists is given a fresh
        // window, as at a scope restore, instead of staying silently suppressed forever.
        for i in 0..me.devices.len() {
            if me.devices[i].status == (Status::Offline { reported: false }) && !me.in_lost_scope(i) {
                me.release(i, now_ms);
            }
        }
        me
    }

    /// Records a valid message from `id` at `now_ms`. Unknown devices are ignored here
    /// (the registry's caller counts them).
    pub fn seen(&mut self, id: &DeviceId, now_ms: u64) -> Vec<LivenessEvent> {
        let mut events = Vec::new();
        let Some(i) = self.registry.index_of(id) else { return events };
        let interval = self.registry.devices()[i].heartbeat_ms;
        let t = &mut self.devices[i];
        t.heard_ms = t.heard_ms.max(now_ms);
        t.grace_until_ms = 0;
        let was = std::mem::replace(&mut t.status, Status::Healthy);
        if was != Status::Healthy {
            for s in t.scopes {
                let scope = &mut self.scopes[s as usize];
                scope.late -= 1;
                if scope.lost_since_ms.is_some() && !scope.dirty {
                    scope.dirty = true;
                    self.dirty.push(s);
                }
            }
        }
        if was == (Status::Offline { reported: true }) {
            events.push(LivenessEvent::Online {
                device: self.registry.devices()[i].clone(),
                offline_since_ms: t.offline_since_ms,
                at_ms: now_ms,
            });
        }
        if !t.queued {
            t.queued = true;
            self.queue.push(Reverse((t.heard_ms + interval + self.config.grace_ms, i as u32)));
        }
        events
    }

    /// Devices that just turned offline (status `Offline { reported: false }`, their
    /// `offline_since_ms` set): one `ScopeLost` for the widest scope that now qualifies, and an
    /// `Offline` for each device not inside a lost scope.
    fn declare_offline(&mut self, newly_offline: Vec<usize>, now_ms: u64) -> Vec<LivenessEvent> {
        let mut events = Vec::new();
        for i in newly_offline {
            // The widest scope that qualifies, so one cell going down is one event. Scopes
            // inside one already lost are not looked at: the wider case covers them, and a
            // building-by-building cascade under a lost grid is exactly the flood to avoid.
            let widest = self.devices[i]
                .scopes
                .iter()
                .rev()
                .copied()
                .take_while(|&s| self.scopes[s as usize].lost_since_ms.is_none())
                .find(|&s| self.qualifies(s as usize));
            if let Some(s) = widest {
                let scope = &mut self.scopes[s as usize];
                scope.lost_since_ms = Some(now_ms);
                events.push(LivenessEvent::ScopeLost {
                    scope: scope.scope.clone(),
                    offline: scope.late,
                    total: scope.total,
                    since_ms: now_ms,
                });
            }
            if !self.in_lost_scope(i) {
                let t = &mut self.devices[i];
                t.status = Status::Offline { reported: true };
                events.push(LivenessEvent::Offline {
                    device: self.registry.devices()[i].clone(),
                    last_heard_ms: t.heard_ms,
                    at_ms: t.offline_since_ms,
                });
            }
        }

        events
    }

    /// The device's connection dropped (its MQTT last will arrived): it is offline now,
    /// without waiting for missed heartbeats, and correlated like any other offline device.
    /// Its next message brings it back. Unknown and already offline devices are ignored.
    pub fn disconnected(&mut self, id: &DeviceId, now_ms: u64) -> Vec<LivenessEvent> {
        let Some(i) = self.registry.index_of(id) else { return Vec::new() };
        let t = &mut self.devices[i];
        match t.status {
            Status::Offline { .. } => return Vec::new(),
            Status::Healthy => {
                t.status = Status::Late;
                for s in t.scopes {
                    self.scopes[s as usize].late += 1;
                }
            }
            Status::Late => {}
        }
        let t = &mut self.devices[i];
        t.status = Status::Offline { reported: false };
        t.offline_since_ms = now_ms;
        self.declare_offline(vec![i], now_ms)
    }

    /// Advances time to `now_ms`: devices whose deadline passed turn late or offline,
    /// scopes are lost and restored. Call it about once a second; calling it less often
    /// only delays events, their times (`at_ms`) stay exact.
    pub fn tick(&mut self, now_ms: u64) -> Vec<LivenessEvent> {
        let mut events = Vec::new();
        let mut newly_offline = Vec::new();
        while let Some(&Reverse((deadline, i))) = self.queue.peek() {
            if deadline > now_ms {
                break;
            }
            self.queue.pop();
            let interval = self.registry.devices()[i as usize].heartbeat_ms;
            let t = &mut self.devices[i as usize];
            t.queued = false;
            if t.status == Status::Healthy && now_ms >= t.heard_ms + interval + self.config.grace_ms {
                t.status = Status::Late;
                for s in t.scopes {
                    self.scopes[s as usize].late += 1;
                }
            }
            if t.status == Status::Late && now_ms >= offline_at(t, interval, &self.config) {
                t.status = Status::Offline { reported: false };
                t.offline_since_ms = offline_at(t, interval, &self.config);
                newly_offline.push(i as usize);
            }
            if let Some(next) = next_deadline(t, interval, &self.config) {
                t.queued = true;
                self.queue.push(Reverse((next, i)));
            }
        }

        events.extend(self.declare_offline(newly_offline, now_ms));

        for s in std::mem::take(&mut self.dirty) {
            let scope = &mut self.scopes[s as usize];
            scope.dirty = false;
            let Some(lost_since_ms) = scope.lost_since_ms else { continue };
            let heard = (scope.total - scope.late) as u64;
            if heard * 100 < self.config.scope_restored_percent as u64 * scope.total as u64 {
                continue;
            }
            scope.lost_since_ms = None;
            events.push(LivenessEvent::ScopeRestored {
                scope: scope.scope.clone(),
                offline: scope.late,
                total: scope.total,
                lost_since_ms,
                at_ms: now_ms,
            });
            let members = self.registry.clone();
            for &m in members.scope_members(&self.scopes[s as usize].scope) {
                let m = m as usize;
                if self.devices[m].status == (Status::Offline { reported: false }) && !self.in_lost_scope(m) {
                    self.release(m, now_ms);
                }
            }
        }
        events
    }

    /// Whether enough of scope `s` is late or offline for it to be lost.
    fn qualifies(&self, s: usize) -> bool {
        let scope = &self.scopes[s];
        scope.late >= self.config.scope_min_devices
            && scope.late as u64 * 100 >= self.config.scope_lost_percent as u64 * scope.total as u64
    }

    fn in_lost_scope(&self, i: usize) -> bool {
        self.devices[i].scopes.iter().any(|&s| self.scopes[s as usize].lost_since_ms.is_some())
    }

    /// Takes a device that was offline only under a lost scope back to late, with one more
    /// interval (plus grace) from `now_ms` to report before its own `Offline`.
    fn release(&mut self, i: usize, now_ms: u64) {
        let interval = self.registry.devices()[i].heartbeat_ms;
        let t = &mut self.devices[i];
        t.status = Status::Late;
        t.grace_until_ms = now_ms + interval + self.config.grace_ms;
        if !t.queued {
            t.queued = true;
            self.queue.push(Reverse((offline_at(t, interval, &self.config), i as u32)));
        }
    }

    /// Where a device stands; `None` for a device not in the registry.
    pub fn status(&self, id: &DeviceId) -> Option<DeviceStatus> {
        let t = &self.devices[self.registry.index_of(id)?];
        Some(match t.status {
            Status::Healthy => DeviceStatus::Online,
            Status::Late => DeviceStatus::Late,
            Status::Offline { reported } => DeviceStatus::Offline { since_ms: t.offline_since_ms, reported },
        })
    }

    /// The lost scopes and since when, for `/metrics` and the duty desk's overview.
    pub fn lost_scopes(&self) -> Vec<(Scope, u64)> {
        let mut lost: Vec<_> =
            self.scopes.iter().filter_map(|s| s.lost_since_ms.map(|t| (s.scope.clone(), t))).collect();
        lost.sort();
        lost
    }

    /// Number of devices offline (reported or inside a lost scope), for `/metrics`. O(devices):
    /// meant for a scrape every few seconds, not for every message.
    pub fn offline_count(&self) -> usize {
        self.devices.iter().filter(|t| matches!(t.status, Status::Offline { .. })).count()
    }

    /// The registry this engine tracks.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }
}

/// The next time a device's status can change without a message: turning late, then
/// offline; none once offline (only a message changes that).
fn next_deadline(t: &Tracked, interval: u64, config: &LivenessConfig) -> Option<u64> {
    match t.status {
        Status::Healthy => Some(t.heard_ms + interval + config.grace_ms),
        Status::Late => Some(offline_at(t, interval, config)),
        Status::Offline { .. } => None,
    }
}

/// When a late device goes offline: N intervals plus grace after it was last heard from, or
/// at the end of a grace period after a restart or a scope restore, whichever is later.
fn offline_at(t: &Tracked, interval: u64, config: &LivenessConfig) -> u64 {
    (t.heard_ms + config.missed_heartbeats as u64 * interval + config.grace_ms).max(t.grace_until_ms)
}
