//! The [`Engine`]: cases, their timers, correlation and flood counting.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::case::{Alarm, Note, Stamp, Unplaced, Verification};
use crate::{
    Action, Case, CaseId, CaseKind, Command, Condition, Config, Input, Kpi, Level, Location, Millis,
    Notification, NotifyReason, Officer, Severity, Signal, Stage, Transition, TransitionKind,
};

/// Why the engine refused an officer's command. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No such case (or closed long ago and no longer held by the engine).
    #[error("case {0} not found")]
    NotFound(CaseId),
    /// The case lies outside the officer's scope.
    #[error("case {0} is outside your scope")]
    OutOfScope(CaseId),
    /// The case is closed; only notes may be added.
    #[error("case {0} is closed; only notes may be added")]
    Closed(CaseId),
    /// Already acknowledged.
    #[error("case {0} is already acknowledged")]
    AlreadyAcknowledged(CaseId),
    /// Closing needs a disposition first.
    #[error("case {0} has no disposition yet; record one before closing")]
    NotDisposed(CaseId),
    /// Closing needs every latched alarm reset first.
    #[error("case {0} still has latched alarms ({1}); reset them before closing")]
    Latched(CaseId, String),
    /// A latched alarm cannot be reset while its device still reports it.
    #[error("device {0} still reports the alarm; it can be reset once it has cleared")]
    StillActive(String),
    /// Nothing to reset.
    #[error("case {0} has no latched alarm that has cleared")]
    NothingToReset(CaseId),
    /// The device is not part of the case.
    #[error("device {0} is not part of this case")]
    UnknownDevice(String),
    /// The device's alarm is not shelved.
    #[error("device {0} is not shelved")]
    NotShelved(String),
    /// A bad argument (empty text, a shelve too long).
    #[error("{0}")]
    Invalid(String),
}

/// What the engine remembers of a device across cases.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Device {
    /// Activation times within the last minute (chatter detection).
    activations: VecDeque<Millis>,
    /// In test mode: out of service.
    out_of_service: bool,
    /// Its alarms are shelved until then.
    shelved_until: Option<Millis>,
    /// The last time a case of this device paged anyone.
    last_paged: Option<Millis>,
}

/// Pages to one desk within the flood window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Desk {
    pages: VecDeque<Millis>,
    flooding: bool,
}

/// Everything that must survive a restart; the indexes are rebuilt from it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct State {
    cases: BTreeMap<CaseId, Case>,
    next_case: u64,
    next_notification: u64,
    devices: BTreeMap<String, Device>,
    desks: BTreeMap<String, Desk>,
    /// Notifications whose delivery is not reported yet: the case and level they went to.
    pending: BTreeMap<u64, (CaseId, Level)>,
    /// Recent fire cases per grid: (opened, building, case), for spread detection.
    grid_fires: BTreeMap<String, VecDeque<(Millis, String, CaseId)>>,
    /// When each village's recent cases of unregistered devices opened, within
    /// [`Config::unplaced_window`]: the aggregate limit against fake devices.
    #[serde(default)]
    unplaced: BTreeMap<String, VecDeque<Millis>>,
    /// The last sounder command id given out.
    #[serde(default)]
    last_command: u64,
}

/// The alarm engine. Feed it [`Input`]s with [`Engine::handle`] and the passing of time with
/// [`Engine::tick`]; carry out the [`Action`]s it returns. Deterministic: the same inputs at
/// the same times give the same state and actions, so replaying a log restores it exactly.
///
/// It serialises (with serde) to a snapshot of its state; deserialising rebuilds its
/// indexes.
#[derive(Debug, Clone)]
pub struct Engine {
    config: Config,
    state: State,
    /// Open case per correlation key.
    open: HashMap<String, CaseId>,
    /// (wake time, case), one entry per case.
    timers: BTreeSet<(Millis, CaseId)>,
    wake: HashMap<CaseId, Millis>,
}

impl Engine {
    /// A new engine with no cases.
    pub fn new(config: Config) -> Engine {
        Engine::from_state(config, State { next_case: 1, next_notification: 1, ..State::default() })
    }

    fn from_state(config: Config, state: State) -> Engine {
        let mut engine =
            Engine { config, state, open: HashMap::new(), timers: BTreeSet::new(), wake: HashMap::new() };
        let ids: Vec<CaseId> = engine.state.cases.keys().copied().collect();
        for id in ids {
            let case = &engine.state.cases[&id];
            if !case.is_closed() {
                engine.open.insert(case_key(case), id);
            }
            engine.reschedule(id);
        }
        engine
    }

    /// Serialises the state (not the config) for a snapshot.
    pub fn snapshot<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.state.serialize(serializer)
    }

    /// Restores an engine from a [`Engine::snapshot`], with the given config.
    pub fn restore<'de, D: serde::Deserializer<'de>>(
        config: Config,
        snapshot: D,
    ) -> Result<Engine, D::Error> {
        Ok(Engine::from_state(config, State::deserialize(snapshot)?))
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A case the engine holds (open, or closed within [`Config::keep_closed`]).
    pub fn case(&self, id: CaseId) -> Option<&Case> {
        self.state.cases.get(&id)
    }

    /// Every case the engine holds, oldest first.
    pub fn cases(&self) -> impl Iterator<Item = &Case> {
        self.state.cases.values()
    }

    /// Open cases.
    pub fn open_cases(&self) -> usize {
        self.open.len()
    }

    /// When [`Engine::tick`] next has something to do.
    pub fn next_wake(&self) -> Option<Millis> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Handles one input at `now`. A refused officer command changes nothing.
    pub fn handle(&mut self, now: Millis, input: &Input) -> Result<Vec<Action>, Refusal> {
        let mut out = Vec::new();
        match input {
            Input::Signal(signal) => self.signal(now, signal, &mut out),
            Input::Officer { officer, command } => self.command(now, officer, command, &mut out)?,
            Input::SounderConfirmed { case, device, command } => {
                let linkage = self.state.cases.get_mut(case).and_then(|c| c.linkage.as_mut());
                if let Some(linkage) = linkage.filter(|l| l.command == *command) {
                    linkage.confirmed.insert(device.clone());
                }
            }
            Input::Delivery { notification, delivered } => {
                self.delivery(now, *notification, *delivered, &mut out)
            }
        }
        Ok(out)
    }

    /// Does whatever is due at `now`: escalations, reminders, handling timeouts, stale
    /// alarms, expired shelves, forgetting long-closed cases.
    pub fn tick(&mut self, now: Millis) -> Vec<Action> {
        let mut out = Vec::new();
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            self.wake.remove(&id);
            self.due(now, id, &mut out);
        }
        out
    }

    fn ms(d: std::time::Duration) -> Millis {
        d.as_millis() as Millis
    }

    fn reschedule(&mut self, id: CaseId) {
        if let Some(old) = self.wake.remove(&id) {
            self.timers.remove(&(old, id));
        }
        let keep = Self::ms(self.config.keep_closed);
        let stale = Self::ms(self.config.stale_after);
        if let Some(at) = self.state.cases.get(&id).and_then(|c| c.wake_at(keep, stale)) {
            self.timers.insert((at, id));
            self.wake.insert(id, at);
        }
    }

    // ---- signals -------------------------------------------------------------------

    fn signal(&mut self, now: Millis, signal: &Signal, out: &mut Vec<Action>) {
        let kind = match signal.condition {
            Condition::Smoke | Condition::Camera => CaseKind::Fire,
            Condition::Fault => CaseKind::Fault,
            Condition::Offline => CaseKind::Offline,
            Condition::CommunicationLoss => CaseKind::CommunicationLoss,
            Condition::WaterLow => CaseKind::Water,
            Condition::Test => {
                self.state.devices.entry(signal.device.clone()).or_default().out_of_service = signal.active;
                return;
            }
            Condition::Hushed => {
                if signal.active {
                    let holding: Vec<CaseId> = self
                        .open
                        .values()
                        .copied()
                        .filter(|id| self.state.cases[id].alarms.contains_key(&signal.device))
                        .collect();
                    for id in holding {
                        let text = "silenced at the device (hush); the alarm stays latched".to_owned();
                        self.record(now, id, TransitionKind::Noted { text }, None, Some(&signal.device), out);
                    }
                }
                return;
            }
        };
        let (key, unplaced) = match &signal.unplaced {
            None => (key(kind, &signal.location), None),
            Some(village) => {
                let (key, unplaced) = self.route_unplaced(now, kind, village, signal);
                (key, Some(unplaced))
            }
        };
        // Only a rising edge counts towards chattering; a repeated "still active" does not.
        let open = self.open.get(&key).map(|id| &self.state.cases[id]);
        let was_active = open.and_then(|c| c.alarms.get(&signal.device)).is_some_and(|a| a.active);
        let chattering = signal.active && !was_active && self.count_activation(now, &signal.device);
        match self.open.get(&key).copied() {
            Some(id) => self.merge(now, id, signal, chattering, out),
            None if signal.active => self.open_case(now, kind, signal, chattering, unplaced, out),
            None => {}
        }
    }

    /// Where a signal of an unregistered device goes: its own case (one per device and
    /// kind), or, beyond the village's limit, the village's flood case. Returns the
    /// correlation key and the marker a case opened under it carries.
    fn route_unplaced(
        &mut self,
        now: Millis,
        kind: CaseKind,
        village: &str,
        signal: &Signal,
    ) -> (String, Unplaced) {
        let device = signal.device.split('/').next().unwrap_or(&signal.device).to_owned();
        let own = Unplaced { village: village.to_owned(), flood: false, device };
        let own_key = unplaced_key(kind, &own);
        if self.open.contains_key(&own_key) {
            return (own_key, own);
        }
        let flood = Unplaced { flood: true, ..own.clone() };
        let flood_key = unplaced_key(kind, &flood);
        // Beyond the limit of all villages together: one flood case for every village.
        let everywhere = Unplaced { village: ALL_VILLAGES.into(), ..flood.clone() };
        let everywhere_key = unplaced_key(kind, &everywhere);
        for (key, marker) in [(&flood_key, &flood), (&everywhere_key, &everywhere)] {
            let folded =
                self.open.get(key).is_some_and(|id| self.state.cases[id].alarms.contains_key(&signal.device));
            if folded {
                return (key.clone(), marker.clone());
            }
        }
        if !signal.active {
            return (own_key, own);
        }
        let window = Self::ms(self.config.unplaced_window);
        // Villages whose window emptied are forgotten: invented village names cost nothing.
        let state = &mut self.state.unplaced;
        for opened in state.values_mut() {
            while opened.front().is_some_and(|t| *t + window <= now) {
                opened.pop_front();
            }
        }
        state.retain(|v, opened| v == village || !opened.is_empty());
        let total: usize = state.values().map(VecDeque::len).sum();
        if total >= self.config.unplaced_total_limit {
            return (everywhere_key, everywhere);
        }
        let opened = state.entry(village.to_owned()).or_default();
        if opened.len() >= self.config.unplaced_limit {
            return (flood_key, flood);
        }
        opened.push_back(now);
        (own_key, own)
    }

    /// Records an activation; whether the device now chatters.
    fn count_activation(&mut self, now: Millis, device: &str) -> bool {
        let device = self.state.devices.entry(device.to_owned()).or_default();
        device.activations.push_back(now);
        while device.activations.front().is_some_and(|t| *t + 60_000 <= now) {
            device.activations.pop_front();
        }
        device.activations.len() >= self.config.chatter_cycles
    }

    fn open_case(
        &mut self,
        now: Millis,
        kind: CaseKind,
        signal: &Signal,
        chattering: bool,
        unplaced: Option<Unplaced>,
        out: &mut Vec<Action>,
    ) {
        let key = match &unplaced {
            Some(u) => unplaced_key(kind, u),
            None => key(kind, &signal.location),
        };
        let severity = match kind {
            CaseKind::Fire => Severity::PreAlarm,
            CaseKind::Fault => Severity::Fault,
            CaseKind::Offline => Severity::Offline,
            CaseKind::CommunicationLoss => Severity::CommunicationLoss,
            CaseKind::Water => Severity::Water,
        };
        let policy = self.config.policy(severity).clone();
        let device = self.state.devices.get(&signal.device).cloned().unwrap_or_default();
        let id = CaseId(self.state.next_case);
        self.state.next_case += 1;
        let reached = entry_levels(&policy.entry, &signal.location);
        let level = *reached.last().expect("entry_levels names at least one level");
        let alarm = Alarm {
            active: true,
            acked: false,
            latched: policy.latched,
            camera: signal.condition == Condition::Camera,
            since: now,
            first: now,
            shelved_until: device.shelved_until.filter(|until| *until > now),
            stale: false,
        };
        let case = Case {
            id,
            kind,
            severity,
            location: signal.location.clone(),
            stage: Stage::Warning,
            level,
            reached: reached.clone(),
            opened: now,
            confirmed: false,
            spread: false,
            chattering,
            drill: device.out_of_service,
            alarms: BTreeMap::from([(signal.device.clone(), alarm)]),
            acknowledged: None,
            dispatched: None,
            verifications: Vec::new(),
            disposition: None,
            closed: None,
            notes: Vec::new(),
            escalations: 0,
            ack_due: Some(policy.ack[level as usize].due(now, &self.config.holidays)),
            handle_due: None,
            next_reminder: (!chattering).then(|| now + Self::ms(policy.renotify)),
            unplaced,
            linkage: None,
        };
        self.state.cases.insert(id, case);
        self.open.insert(key, id);
        self.record(now, id, TransitionKind::Opened, None, Some(&signal.device), out);
        // A chattering device pages at most once per deadline.
        let quiet = chattering
            && device
                .last_paged
                .is_some_and(|at| policy.ack[Level::Grid as usize].due(at, &self.config.holidays) > now);
        if !quiet {
            for level in reached {
                self.notify(now, id, level, NotifyReason::Opened, out);
            }
        }
        if kind == CaseKind::Fire && self.state.cases[&id].unplaced.is_none() {
            if self.config.sound_single_detector && signal.condition == Condition::Smoke {
                self.sounders(id, true, out);
            }
            self.check_spread(now, id, out);
        }
        self.reschedule(id);
    }

    fn merge(&mut self, now: Millis, id: CaseId, signal: &Signal, chattering: bool, out: &mut Vec<Action>) {
        let latched = self.config.policy(self.state.cases[&id].severity).latched;
        let shelved_until = self.state.devices.get(&signal.device).and_then(|d| d.shelved_until);
        let case = self.state.cases.get_mut(&id).expect("open index points at a held case");
        let camera = signal.condition == Condition::Camera;
        let alarm = case.alarms.entry(signal.device.clone()).or_insert(Alarm {
            active: false,
            acked: case.acknowledged.is_some(),
            latched: false,
            camera,
            since: now,
            first: now,
            shelved_until: shelved_until.filter(|until| *until > now),
            stale: false,
        });
        let changed = alarm.active != signal.active;
        alarm.active = signal.active;
        if signal.active && changed {
            alarm.since = now;
            alarm.stale = false;
            alarm.latched |= latched;
            // A new activation after acknowledgement is acknowledged with its case.
            alarm.acked = case.acknowledged.is_some();
        }
        let newly_chattering = chattering && !case.chattering;
        if newly_chattering {
            case.chattering = true;
            // Reminders stop; the case pages only when its deadline passes.
            case.next_reminder = None;
        }
        if changed {
            let kind = TransitionKind::AlarmChanged { active: signal.active };
            self.record(now, id, kind, None, Some(&signal.device), out);
        }
        if newly_chattering {
            self.record(now, id, TransitionKind::Chattering, None, Some(&signal.device), out);
        }
        // Devices nobody registered confirm nothing: two invented ids must not make a fire
        // and sound a building.
        let placed = self.state.cases[&id].unplaced.is_none();
        if signal.active && changed && placed && self.state.cases[&id].kind == CaseKind::Fire {
            self.check_confirmed(now, id, out);
        }
        self.resume(now, id, out);
        self.reschedule(id);
    }

    /// Two detectors, or a detector and a camera, active in the building within the
    /// confirmation window make a confirmed fire.
    fn check_confirmed(&mut self, now: Millis, id: CaseId, out: &mut Vec<Action>) {
        let window = Self::ms(self.config.confirm_window);
        let case = &self.state.cases[&id];
        if case.confirmed || case.is_closed() {
            return;
        }
        let recent = case.alarms.values().filter(|a| a.active && a.since + window >= now);
        let (cameras, detectors) =
            recent.fold((0, 0), |(c, d), a| if a.camera { (c + 1, d) } else { (c, d + 1) });
        if !(detectors >= 2 || (detectors >= 1 && cameras >= 1)) {
            return;
        }
        let fire = self.config.fire.clone();
        let case = self.state.cases.get_mut(&id).unwrap();
        case.confirmed = true;
        case.severity = Severity::Fire;
        for alarm in case.alarms.values_mut() {
            alarm.latched |= fire.latched && (alarm.active || alarm.latched);
        }
        self.raise(now, id, &fire.entry, NotifyReason::Confirmed, out);
        self.record(now, id, TransitionKind::Confirmed, None, None, out);
        self.sounders(id, true, out);
        self.check_spread(now, id, out);
    }

    /// Switches the case's building's sounders, unless they already are so (or the case is a
    /// drill, or has no building).
    fn sounders(&mut self, id: CaseId, on: bool, out: &mut Vec<Action>) {
        let case = &self.state.cases[&id];
        let sounding = case.linkage.as_ref().is_some_and(|l| l.on);
        if on == sounding || case.drill || case.unplaced.is_some() || case.location.building.is_empty() {
            return;
        }
        self.state.last_command += 1;
        let command = self.state.last_command;
        let case = self.state.cases.get_mut(&id).unwrap();
        case.linkage = Some(crate::Linkage { on, command, confirmed: Default::default() });
        out.push(Action::Sounders { case: id, location: case.location.clone(), on, command });
    }

    /// The sounder state every held case asks for, for a caller that must make sure the
    /// devices follow it (after a restart, commands nobody confirmed are sent again).
    pub fn linkage(&self) -> impl Iterator<Item = (&Case, &crate::Linkage)> {
        self.state.cases.values().filter_map(|c| c.linkage.as_ref().map(|l| (c, l)))
    }

    /// Fires in `spread_buildings` buildings of one grid within the window go to the
    /// street at once.
    fn check_spread(&mut self, now: Millis, id: CaseId, out: &mut Vec<Action>) {
        let window = Self::ms(self.config.spread_window);
        let case = &self.state.cases[&id];
        let grid = key(CaseKind::Fire, &Location { building: String::new(), ..case.location.clone() });
        let building = case.location.building.clone();
        let fires = self.state.grid_fires.entry(grid).or_default();
        if !fires.iter().any(|(_, _, c)| *c == id) {
            fires.push_back((now, building, id));
        }
        while fires.front().is_some_and(|(at, _, _)| *at + window < now) {
            fires.pop_front();
        }
        let cases = &self.state.cases;
        let live: Vec<CaseId> = fires
            .iter()
            .map(|(_, _, c)| *c)
            .filter(|c| cases.get(c).is_some_and(|c| !c.is_closed()))
            .collect();
        let buildings: BTreeSet<&str> = live.iter().map(|c| cases[c].location.building.as_str()).collect();
        if buildings.len() < self.config.spread_buildings {
            return;
        }
        let street = [Level::Grid, Level::Community, Level::Street];
        for case in live {
            if self.state.cases[&case].spread {
                continue;
            }
            self.state.cases.get_mut(&case).unwrap().spread = true;
            self.raise(now, case, &street, NotifyReason::Spread, out);
            self.record(now, case, TransitionKind::Spread, None, None, out);
            self.reschedule(case);
        }
    }

    /// Makes sure `levels` are reached. Newly reached levels are told; for a confirmation
    /// every reached level is told, since what they were told before is now out of date.
    fn raise(
        &mut self,
        now: Millis,
        id: CaseId,
        levels: &[Level],
        reason: NotifyReason,
        out: &mut Vec<Action>,
    ) {
        let case = self.state.cases.get_mut(&id).unwrap();
        let before = case.reached.clone();
        let from = case.level;
        for level in levels {
            if !case.reached.contains(level) {
                case.reached.push(*level);
            }
        }
        case.reached.sort();
        case.level = *case.reached.last().unwrap();
        if case.level > from {
            case.escalations += 1;
        }
        let policy = self.config.policy(case.severity).clone();
        let told: Vec<Level> = case
            .reached
            .iter()
            .copied()
            .filter(|l| reason == NotifyReason::Confirmed || !before.contains(l))
            .collect();
        if let Some(acked) = &case.acknowledged {
            if case.disposition.is_none() {
                let due = policy.handle.due(acked.at, &self.config.holidays);
                case.handle_due = Some(case.handle_due.map_or(due, |d| d.min(due)));
            }
        } else {
            // A new top level gets its own full deadline; otherwise the running one stands
            // (or a stricter one, when the severity rose).
            let due = policy.ack[case.level as usize].due(now, &self.config.holidays);
            case.ack_due =
                Some(if case.level > from { due } else { case.ack_due.map_or(due, |d| d.min(due)) });
            if !case.chattering && !told.is_empty() {
                case.next_reminder = Some(now + Self::ms(policy.renotify));
            }
        }
        for level in told {
            self.notify(now, id, level, reason, out);
        }
    }

    // ---- time ----------------------------------------------------------------------

    fn due(&mut self, now: Millis, id: CaseId, out: &mut Vec<Action>) {
        let Some(case) = self.state.cases.get(&id) else { return };
        if let Some((stamp, _)) = &case.closed {
            if stamp.at + Self::ms(self.config.keep_closed) <= now {
                self.state.cases.remove(&id);
                self.state.pending.retain(|_, (c, _)| *c != id);
            } else {
                self.reschedule(id);
            }
            return;
        }
        // Expired shelves first: they decide whether the case is silenced.
        let expired: Vec<String> = case
            .alarms
            .iter()
            .filter(|(_, a)| a.shelved_until.is_some_and(|until| until <= now))
            .map(|(d, _)| d.clone())
            .collect();
        for device in expired {
            self.unshelve(now, id, &device, None, out);
        }
        let stale_after = Self::ms(self.config.stale_after);
        let stale: Vec<String> = self.state.cases[&id]
            .alarms
            .iter()
            .filter(|(_, a)| a.active && !a.stale && a.since + stale_after <= now)
            .map(|(d, _)| d.clone())
            .collect();
        for device in stale {
            self.state.cases.get_mut(&id).unwrap().alarms.get_mut(&device).unwrap().stale = true;
            self.record(now, id, TransitionKind::Stale, None, Some(&device), out);
        }
        let case = &self.state.cases[&id];
        let policy = self.config.policy(case.severity).clone();
        if case.acknowledged.is_none() && case.silenced(now) {
            // Shelved: the acknowledgement clock and reminders wait for the shelve to end (its
            // expiry wakes the case). An acknowledged case's handling deadline does not wait:
            // shelving silences an alarm, it does not excuse the handling of the case.
            let case = self.state.cases.get_mut(&id).unwrap();
            case.ack_due = None;
            case.next_reminder = None;
        } else if case.acknowledged.is_none() {
            if case.ack_due.is_some_and(|due| due <= now) {
                self.escalate(now, id, NotifyReason::Escalated, out);
            } else if case.next_reminder.is_some_and(|due| due <= now) {
                for level in case.reached.clone() {
                    self.notify(now, id, level, NotifyReason::Reminder, out);
                }
                let case = self.state.cases.get_mut(&id).unwrap();
                case.next_reminder = Some(now + Self::ms(policy.renotify));
            }
        } else if case.disposition.is_none() && case.handle_due.is_some_and(|due| due <= now) {
            self.escalate(now, id, NotifyReason::HandlingOverdue, out);
        }
        self.reschedule(id);
        // Whatever was due at `now` has been dealt with; a wake time not in the future would
        // be a bug that spins `tick` forever, so it is caught here in tests and, in a
        // release build, turned into a retry a millisecond later.
        if let Some(at) = self.wake.get(&id).copied().filter(|at| *at <= now) {
            debug_assert!(false, "case {id} wakes again at {at} after being handled at {now}");
            self.timers.remove(&(at, id));
            self.timers.insert((now + 1, id));
            self.wake.insert(id, now + 1);
        }
    }

    /// One level up (if there is one), telling the new level and reminding the others.
    fn escalate(&mut self, now: Millis, id: CaseId, reason: NotifyReason, out: &mut Vec<Action>) {
        let case = self.state.cases.get_mut(&id).unwrap();
        let policy = self.config.policy(case.severity).clone();
        let from = case.level;
        if let Some(up) = above(&case.location, from) {
            case.level = up;
            if !case.reached.contains(&up) {
                case.reached.push(up);
                case.reached.sort();
            }
            case.escalations += 1;
        }
        let level = case.level;
        if case.acknowledged.is_none() {
            case.ack_due = Some(policy.ack[level as usize].due(now, &self.config.holidays));
            if !case.chattering {
                case.next_reminder = Some(now + Self::ms(policy.renotify));
            }
        } else {
            case.handle_due = Some(policy.handle.due(now, &self.config.holidays));
        }
        let reached = case.reached.clone();
        if level != from {
            self.record(now, id, TransitionKind::Escalated { from, reason }, None, None, out);
        }
        for l in reached {
            let why = match reason {
                NotifyReason::HandlingOverdue => reason,
                _ if l == level && level != from => reason,
                _ => NotifyReason::Reminder,
            };
            self.notify(now, id, l, why, out);
        }
    }

    fn delivery(&mut self, now: Millis, notification: u64, delivered: bool, out: &mut Vec<Action>) {
        let Some((id, level)) = self.state.pending.remove(&notification) else { return };
        if delivered {
            return;
        }
        let Some(case) = self.state.cases.get(&id) else { return };
        if case.is_closed() {
            return;
        }
        self.record(now, id, TransitionKind::DeliveryFailed { notification }, None, None, out);
        // Only a failure at the top level reached leaves nobody told: escalate at once
        // instead of waiting out the deadline. At the district there is nowhere further to
        // go; its reminders go on.
        let case = &self.state.cases[&id];
        if case.acknowledged.is_none()
            && level == case.level
            && above(&case.location, level).is_some()
            && !case.silenced(now)
        {
            self.escalate(now, id, NotifyReason::DeliveryFailed, out);
        }
        self.reschedule(id);
    }

    // ---- officers ------------------------------------------------------------------

    fn command(
        &mut self,
        now: Millis,
        officer: &Officer,
        command: &Command,
        out: &mut Vec<Action>,
    ) -> Result<(), Refusal> {
        let id = command.case();
        let case = self.state.cases.get(&id).ok_or(Refusal::NotFound(id))?;
        if !officer.scope.covers(&case.location) {
            return Err(Refusal::OutOfScope(id));
        }
        let stamp = Stamp { officer: officer.id.clone(), at: now };
        let who = Some(officer.id.as_str());
        if let Command::Note { text, .. } = command {
            let text = note_text(text)?;
            let case = self.state.cases.get_mut(&id).unwrap();
            case.notes.push(Note { by: stamp, text: text.clone() });
            self.record(now, id, TransitionKind::Noted { text }, who, None, out);
            return Ok(());
        }
        if case.is_closed() {
            return Err(Refusal::Closed(id));
        }
        match command {
            Command::Acknowledge { .. } => {
                if case.acknowledged.is_some() {
                    return Err(Refusal::AlreadyAcknowledged(id));
                }
                self.acknowledge(now, id, &stamp, out);
            }
            Command::Dispatch { assignee, .. } => {
                let assignee = nonempty(assignee, "assignee")?;
                self.acknowledge(now, id, &stamp, out);
                let case = self.state.cases.get_mut(&id).unwrap();
                case.dispatched = Some((stamp.clone(), assignee.clone()));
                case.stage = case.stage.max(Stage::Handling);
                self.record(now, id, TransitionKind::Dispatched { assignee }, who, None, out);
            }
            Command::Verify { method, finding, .. } => {
                let finding = nonempty(finding, "finding")?;
                self.acknowledge(now, id, &stamp, out);
                let case = self.state.cases.get_mut(&id).unwrap();
                case.verifications.push(Verification {
                    by: stamp.clone(),
                    method: *method,
                    finding: finding.clone(),
                });
                self.record(now, id, TransitionKind::Verified { method: *method, finding }, who, None, out);
            }
            Command::Dispose { disposition, .. } => {
                self.acknowledge(now, id, &stamp, out);
                let case = self.state.cases.get_mut(&id).unwrap();
                case.disposition = Some((stamp.clone(), *disposition));
                case.stage = case.stage.max(Stage::Handling);
                case.handle_due = None;
                self.record(now, id, TransitionKind::Disposed { disposition: *disposition }, who, None, out);
                // A false alarm is silenced at once; a real fire sounds on until it is reset
                // or closed.
                if matches!(disposition, crate::Disposition::FalseAlarm { .. } | crate::Disposition::Drill) {
                    self.sounders(id, false, out);
                }
            }
            Command::Close { feedback, .. } => {
                if case.disposition.is_none() {
                    return Err(Refusal::NotDisposed(id));
                }
                let latched: Vec<&str> =
                    case.alarms.iter().filter(|(_, a)| a.latched).map(|(d, _)| d.as_str()).collect();
                if !latched.is_empty() {
                    return Err(Refusal::Latched(id, latched.join(", ")));
                }
                nonempty(&feedback.report, "report")?;
                let key = case_key(case);
                let case = self.state.cases.get_mut(&id).unwrap();
                case.stage = Stage::Feedback;
                case.closed = Some((stamp.clone(), feedback.clone()));
                case.ack_due = None;
                case.handle_due = None;
                case.next_reminder = None;
                self.open.remove(&key);
                self.record(now, id, TransitionKind::Closed { feedback: feedback.clone() }, who, None, out);
                self.sounders(id, false, out);
            }
            Command::Shelve { device, duration, reason, .. } => {
                let reason = nonempty(reason, "reason")?;
                if duration.is_zero() || *duration > self.config.max_shelve {
                    return Err(Refusal::Invalid(format!(
                        "a shelve lasts more than 0 s and at most {}",
                        humantime::format_duration(self.config.max_shelve)
                    )));
                }
                if !case.alarms.contains_key(device) {
                    return Err(Refusal::UnknownDevice(device.clone()));
                }
                let until = now + Self::ms(*duration);
                let case = self.state.cases.get_mut(&id).unwrap();
                case.alarms.get_mut(device).unwrap().shelved_until = Some(until);
                self.state.devices.entry(device.clone()).or_default().shelved_until = Some(until);
                self.record(now, id, TransitionKind::Shelved { until, reason }, who, Some(device), out);
            }
            Command::Unshelve { device, .. } => {
                let alarm = case.alarms.get(device).ok_or_else(|| Refusal::UnknownDevice(device.clone()))?;
                if !alarm.shelved(now) {
                    return Err(Refusal::NotShelved(device.clone()));
                }
                self.unshelve(now, id, device, who, out);
            }
            Command::ResetLatch { device, .. } => {
                let targets: Vec<String> = match device {
                    Some(device) => {
                        let alarm =
                            case.alarms.get(device).ok_or_else(|| Refusal::UnknownDevice(device.clone()))?;
                        if alarm.active {
                            return Err(Refusal::StillActive(device.clone()));
                        }
                        if !alarm.latched {
                            return Err(Refusal::NothingToReset(id));
                        }
                        vec![device.clone()]
                    }
                    None => case
                        .alarms
                        .iter()
                        .filter(|(_, a)| a.latched && !a.active)
                        .map(|(d, _)| d.clone())
                        .collect(),
                };
                if targets.is_empty() {
                    return Err(Refusal::NothingToReset(id));
                }
                for device in targets {
                    self.state.cases.get_mut(&id).unwrap().alarms.get_mut(&device).unwrap().latched = false;
                    self.record(now, id, TransitionKind::LatchReset, who, Some(&device), out);
                }
                // Reset with nothing left in alarm: the building is quiet again.
                if self.state.cases[&id].alarms.values().all(|a| !a.active && !a.latched) {
                    self.sounders(id, false, out);
                }
            }
            Command::Place { location, .. } => self.place(now, officer, id, location, out)?,
            Command::Note { .. } => unreachable!("handled above"),
        }
        self.reschedule(id);
        Ok(())
    }

    /// Gives an unplaced device's case its building: it leaves the unplaced desk's key for
    /// the building's, and the building's entry levels that were not told yet are told.
    fn place(
        &mut self,
        now: Millis,
        officer: &Officer,
        id: CaseId,
        location: &Location,
        out: &mut Vec<Action>,
    ) -> Result<(), Refusal> {
        let case = &self.state.cases[&id];
        let Some(unplaced) = &case.unplaced else {
            return Err(Refusal::Invalid(format!("case {id} is not a case of an unplaced device")));
        };
        if unplaced.flood {
            return Err(Refusal::Invalid(format!(
                "case {id} gathers a flood of unplaced devices; place each device in the registry"
            )));
        }
        let names = [&location.grid, &location.community, &location.street, &location.building];
        if names.iter().any(|n| n.trim().is_empty()) {
            return Err(Refusal::Invalid("a place names its building, grid, community and street".into()));
        }
        if !officer.scope.covers(location) {
            return Err(Refusal::OutOfScope(id));
        }
        let old = case_key(case);
        let new = key(case.kind, location);
        if let Some(other) = self.open.get(&new) {
            return Err(Refusal::Invalid(format!(
                "building {} already has open case {other} of this kind; the device's next messages join it",
                location.building
            )));
        }
        let entry = self.config.policy(case.severity).entry.clone();
        let case = self.state.cases.get_mut(&id).unwrap();
        case.location = location.clone();
        case.unplaced = None;
        self.open.remove(&old);
        self.open.insert(new, id);
        let building = location.building.clone();
        self.record(now, id, TransitionKind::Placed { building }, Some(&officer.id), None, out);
        let levels = entry_levels(&entry, location);
        self.raise(now, id, &levels, NotifyReason::Opened, out);
        Ok(())
    }

    /// 响应, unless already done: stops reminders and escalation, starts the handling clock.
    fn acknowledge(&mut self, now: Millis, id: CaseId, stamp: &Stamp, out: &mut Vec<Action>) {
        let case = self.state.cases.get_mut(&id).unwrap();
        if case.acknowledged.is_some() {
            return;
        }
        let policy = self.config.policy(case.severity);
        case.acknowledged = Some(stamp.clone());
        case.stage = case.stage.max(Stage::Response);
        case.ack_due = None;
        case.next_reminder = None;
        case.handle_due = Some(policy.handle.due(now, &self.config.holidays));
        for alarm in case.alarms.values_mut() {
            alarm.acked = true;
        }
        self.record(now, id, TransitionKind::Acknowledged, Some(&stamp.officer), None, out);
    }

    fn unshelve(&mut self, now: Millis, id: CaseId, device: &str, who: Option<&str>, out: &mut Vec<Action>) {
        let case = self.state.cases.get_mut(&id).unwrap();
        case.alarms.get_mut(device).unwrap().shelved_until = None;
        if let Some(d) = self.state.devices.get_mut(device) {
            d.shelved_until = None;
        }
        self.record(now, id, TransitionKind::Unshelved, who, Some(device), out);
        self.resume(now, id, out);
    }

    /// Back from silence (a shelve ended, or an alarm that is not shelved joined): every
    /// level reached is told again and the acknowledgement clock restarts at this level.
    fn resume(&mut self, now: Millis, id: CaseId, out: &mut Vec<Action>) {
        let case = self.state.cases.get_mut(&id).unwrap();
        if case.acknowledged.is_some() || case.silenced(now) || case.ack_due.is_some() || case.is_closed() {
            return;
        }
        let policy = self.config.policy(case.severity).clone();
        case.ack_due = Some(policy.ack[case.level as usize].due(now, &self.config.holidays));
        case.next_reminder = (!case.chattering).then(|| now + Self::ms(policy.renotify));
        for level in case.reached.clone() {
            self.notify(now, id, level, NotifyReason::Reminder, out);
        }
    }

    // ---- outputs -------------------------------------------------------------------

    fn notify(&mut self, now: Millis, id: CaseId, level: Level, reason: NotifyReason, out: &mut Vec<Action>) {
        let case = &self.state.cases[&id];
        if case.drill {
            return;
        }
        let notification = self.state.next_notification;
        self.state.next_notification += 1;
        self.state.pending.insert(notification, (id, level));
        let desk = case.location.desk(level);
        let deadline = case.ack_due.or(case.handle_due);
        for device in case.alarms.keys() {
            if let Some(d) = self.state.devices.get_mut(device) {
                d.last_paged = Some(now);
            }
        }
        out.push(Action::Notify(Notification {
            id: notification,
            case: id,
            desk: desk.clone(),
            reason,
            severity: case.severity,
            kind: case.kind,
            location: case.location.clone(),
            stage: case.stage,
            devices: case.devices(),
            chattering: case.chattering,
            deadline,
            unverified: case.unplaced.is_some(),
        }));
        // A flood counts alarms annunciated to a desk, not reminders of ones it already has.
        if matches!(reason, NotifyReason::Reminder | NotifyReason::HandlingOverdue | NotifyReason::Confirmed)
        {
            return;
        }
        let window = Self::ms(self.config.flood_window);
        let threshold = self.config.flood_threshold;
        let load = self.state.desks.entry(desk.to_string()).or_default();
        load.pages.push_back(now);
        while load.pages.front().is_some_and(|t| *t + window <= now) {
            load.pages.pop_front();
        }
        let pages = load.pages.len();
        if pages > threshold && !load.flooding {
            load.flooding = true;
            out.push(Action::Kpi(Kpi::Flood { desk, pages, at: now }));
        } else if pages <= threshold && load.flooding {
            load.flooding = false;
            out.push(Action::Kpi(Kpi::FloodEnded { desk, at: now }));
        }
    }

    fn record(
        &self,
        now: Millis,
        id: CaseId,
        kind: TransitionKind,
        officer: Option<&str>,
        device: Option<&str>,
        out: &mut Vec<Action>,
    ) {
        out.push(Action::Record(transition(&self.state.cases[&id], now, kind, officer, device)));
    }

    /// A note on a case the engine no longer holds: closed longer than
    /// [`Config::keep_closed`] ago, so only the case store has it. The same rules as
    /// [`Command::Note`] on a held case (the officer's scope, 1 to 4,000 characters); `case`
    /// (the stored document) gets the note, and the returned transition records it. A closed
    /// case's report can still be completed months later (an investigation's finding, an
    /// insurer's question) without the engine keeping every case in memory.
    pub fn note_archived(
        now: Millis,
        officer: &Officer,
        case: &mut Case,
        text: &str,
    ) -> Result<Transition, Refusal> {
        if !officer.scope.covers(&case.location) {
            return Err(Refusal::OutOfScope(case.id));
        }
        let text = note_text(text)?;
        case.notes.push(Note { by: Stamp { officer: officer.id.clone(), at: now }, text: text.clone() });
        Ok(transition(case, now, TransitionKind::Noted { text }, Some(officer.id.as_str()), None))
    }
}

/// The transition `kind` of `case` at `now`, in the case's state after it.
fn transition(
    case: &Case,
    now: Millis,
    kind: TransitionKind,
    officer: Option<&str>,
    device: Option<&str>,
) -> Transition {
    Transition {
        case: case.id,
        at: now,
        kind,
        stage: case.stage,
        level: case.level,
        severity: case.severity,
        case_kind: case.kind,
        location: case.location.clone(),
        officer: officer.map(str::to_owned),
        device: device.map(str::to_owned),
        since_open_ms: now.saturating_sub(case.opened),
        drill: case.drill,
    }
}

/// A note's text, trimmed: 1 to 4,000 characters.
fn note_text(text: &str) -> Result<String, Refusal> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > 4000 {
        return Err(Refusal::Invalid("a note is 1 to 4,000 characters".into()));
    }
    Ok(text.to_owned())
}

fn nonempty(text: &str, what: &str) -> Result<String, Refusal> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > 4000 {
        return Err(Refusal::Invalid(format!("`{what}` must be 1 to 4,000 characters")));
    }
    Ok(text.to_owned())
}

/// The correlation key of a case: by place, or for an unplaced device by device (or by
/// village for the flood).
///
/// The flood case beyond the limit of all villages together carries [`ALL_VILLAGES`] as its
/// village.
fn case_key(case: &Case) -> String {
    match &case.unplaced {
        Some(unplaced) => unplaced_key(case.kind, unplaced),
        None => key(case.kind, &case.location),
    }
}

/// The village of the one flood case for all villages (not a valid village id, so no real
/// village's flood case can share its key).
pub const ALL_VILLAGES: &str = "*";

fn unplaced_key(kind: CaseKind, u: &Unplaced) -> String {
    if u.flood {
        format!("{}\u{1f}unplaced-flood\u{1f}{}", kind.as_str(), u.village)
    } else {
        format!("{}\u{1f}unplaced\u{1f}{}\u{1f}{}", kind.as_str(), u.village, u.device)
    }
}

/// The levels a new case is told: the policy's entry levels that have a desk at `location`
/// (an unplaced device's location names only the levels from its desk up), or else the
/// lowest desk above them.
fn entry_levels(entry: &[Level], location: &Location) -> Vec<Level> {
    let mut reached: Vec<Level> =
        entry.iter().copied().filter(|l| !location.name_at(*l).is_empty()).collect();
    reached.sort();
    reached.dedup();
    if reached.is_empty() {
        let lowest = entry.iter().min().copied().unwrap_or(Level::Grid);
        let desk = Level::ALL.into_iter().find(|l| *l >= lowest && !location.name_at(*l).is_empty());
        reached.push(desk.unwrap_or(Level::District));
    }
    reached
}

/// The next level up that has a desk at `location`.
fn above(location: &Location, level: Level) -> Option<Level> {
    let mut up = level.escalate();
    while let Some(l) = up {
        if !location.name_at(l).is_empty() {
            return Some(l);
        }
        up = l.escalate();
    }
    None
}

/// The correlation key: one open case per kind and place.
fn key(kind: CaseKind, l: &Location) -> String {
    format!(
        "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
        kind.as_str(),
        l.district,
        l.street,
        l.community,
        l.grid,
        l.building
    )
}
