//! The alarm loop at run time: one thread owns the [`Engine`] and the [`CaseStore`]. It
//! takes signals, officer commands and delivery results over a channel, logs each input
//! durably (group commit) *before* acting on it, then queues notifications in the outbox,
//! writes transitions as series and answers the officer. After a restart it loads the
//! latest snapshot, replays the inputs logged after it (re-queueing their notifications,
//! which the outbox drops when it already has them) and ticks at once, so a deadline that
//! passed while the gateway was down fires immediately.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firegrid_alerting::{
    Action, CaseId, Command, Engine, Input, Millis, Notification, Officer, Refusal, Signal,
};
use firegrid_base::clock::DeadlineClock;
use firegrid_notify::{Message, Outbox};
use tokio::sync::{broadcast, oneshot};

use super::store::{Audit, CaseFilter, CaseRow, CaseStore, StoreError, StoredTransition, TransitionRow};

/// Inputs logged between two snapshots: a restart replays at most this many.
const SNAPSHOT_EVERY: u64 = 2_000;
/// Most requests taken into one commit.
const BATCH: usize = 256;
/// Most inputs held in memory while the case store cannot write (a full or read-only disk).
/// Each is a few hundred bytes to a few kB with its transitions, so this bounds the memory
/// at some tens of MB; a village produces far fewer inputs than this in a day of outage
/// (alarms, officer actions and one tick per deadline). Beyond it, inputs are still handled
/// (pages go out, officers are answered) but not kept for a restart, which is logged.
const MAX_UNSAVED: usize = 50_000;

/// Why the case service could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// The engine refused the command; nothing changed.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The store failed; the command was not carried out.
    #[error("case store: {0}")]
    Store(#[from] StoreError),
    /// The service has stopped.
    #[error("the alarm loop is not running")]
    Stopped,
}

/// Where notifications go: desk (`grid:G1`) → channel names; `"*"` applies to every desk.
pub type Routes = BTreeMap<String, Vec<String>>;

/// Writes a transition or KPI as a series point, at the given time.
pub type SeriesWriter = Arc<dyn Fn(&Action, Millis) + Send + Sync>;

/// Switches the sounders of a building on or off for a case, with the engine's generation of
/// that state, skipping the devices that already confirmed it.
pub type Sounder = Arc<
    dyn Fn(CaseId, &firegrid_alerting::Location, bool, u64, &std::collections::BTreeSet<String>)
        + Send
        + Sync,
>;

/// Finds the channels that reach a desk: the routes plus on-duty officers of that desk.
pub type DeskChannels = Arc<dyn Fn(&str) -> Vec<String> + Send + Sync>;

enum Request {
    Signal(Signal),
    SounderConfirmed {
        case: CaseId,
        device: String,
        command: u64,
    },
    Delivery {
        notification: u64,
        delivered: bool,
    },
    Officer {
        officer: Officer,
        command: Command,
        audit: Audit,
        reply: oneshot::Sender<Result<Acted, CaseError>>,
    },
    Get {
        id: u64,
        reply: oneshot::Sender<Result<Option<String>, CaseError>>,
    },
    List {
        filter: CaseFilter,
        reply: oneshot::Sender<Result<Vec<String>, CaseError>>,
    },
    Timeline {
        id: u64,
        reply: oneshot::Sender<Result<Vec<StoredTransition>, CaseError>>,
    },
    Stop,
}

/// An officer's command carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acted {
    /// The case after it (JSON).
    pub case: String,
    /// Whether the command is in the case store. `false` while the store cannot write: the
    /// command took effect (pages, escalation, the console), is held in memory and is stored
    /// when the disk takes writes again; a restart before that loses it.
    pub durable: bool,
}

/// The console's address for one case, which notification links point to: the console (at
/// `/console/cases/{id}`) opens on that case once the officer has signed in.
pub fn case_url(console: &str, case: u64) -> String {
    let base = console.trim_end_matches('/');
    let base = base.strip_suffix("/console").unwrap_or(base);
    format!("{base}/console/cases/{case}")
}

/// A handle on the alarm loop. Cheap to clone.
#[derive(Clone)]
pub struct Cases {
    tx: Sender<Request>,
    events: broadcast::Sender<String>,
    open: Arc<std::sync::atomic::AtomicU64>,
}

/// What the loop thread needs besides its store.
pub struct Wiring {
    /// The notification outbox.
    pub outbox: Outbox,
    /// Desk → channel names.
    pub desk_channels: DeskChannels,
    /// Writes transitions and KPIs as series points (JSON of the action, at ms).
    pub series: SeriesWriter,
    /// Sounds a building's sounders.
    pub sound: Sounder,
    /// Link to the console, for notification texts.
    pub console_url: Option<String>,
    /// What pages say beyond the case: the building's address, deadlines in local time.
    pub pages: PageContext,
    /// Notifications waiting for delivery results: id → targets not yet failed.
    pub pending: Arc<Mutex<HashMap<u64, usize>>>,
    /// How long closed cases are kept.
    pub retention: Duration,
    /// No notification channel is configured at all: cases are seen in the console only.
    pub console_only: bool,
    /// A Tokio runtime handle, to queue into the async outbox from the loop thread.
    pub runtime: tokio::runtime::Handle,
    /// Where the store says it cannot write: the stores' write health that `/healthz` and
    /// `/metrics` show.
    pub health: Arc<firegrid_base::durability::StoreHealth>,
}

impl Cases {
    /// Opens the store, restores the engine (snapshot + replay) and starts the loop thread.
    pub fn start(
        store: CaseStore,
        config: firegrid_alerting::Config,
        wiring: Wiring,
    ) -> Result<(Cases, std::thread::JoinHandle<()>), StoreError> {
        let (engine, replayed, floor) = restore(&store, config)?;
        // Deadlines run on a clock that never steps (firegrid_base::clock); it starts no earlier than
        // the last logged input, so a restart on a wall clock that went back neither replays
        // out of order nor waits for the wall clock to catch up.
        let clock = DeadlineClock::start(floor);
        let (tx, rx) = std::sync::mpsc::channel();
        let (events, _) = broadcast::channel(1024);
        let open = Arc::new(std::sync::atomic::AtomicU64::new(engine.open_cases() as u64));
        let mut worker = Worker {
            engine,
            store,
            wiring,
            events: events.clone(),
            since_snapshot: 0,
            now: floor,
            clock,
            open: open.clone(),
            requests: tx.clone(),
            unsaved: Vec::new(),
        };
        tracing::info!(replayed = replayed.len(), open = worker.engine.open_cases(), "Alarm loop restored.");
        // Notifications of replayed inputs: queue again (the outbox keeps one per id).
        worker.carry_out(&replayed, false);
        // Sounder states: what every held case last asked of its building, oldest first,
        // sent again to the devices that have not confirmed them.
        let mut linkage: Vec<_> = worker
            .engine
            .linkage()
            .map(|(c, l)| (l.command, c.id, c.location.clone(), l.on, l.confirmed.clone()))
            .collect();
        linkage.sort_by_key(|(command, ..)| *command);
        for (command, case, location, on, confirmed) in linkage {
            tracing::info!(building = %location.building, on, command, confirmed = confirmed.len(), "Sounder state sent again after the restart.");
            (worker.wiring.sound)(case, &location, on, command, &confirmed);
        }
        let thread = std::thread::Builder::new()
            .name("alarm-loop".into())
            .spawn(move || worker.run(rx))
            .expect("a thread can be spawned");
        Ok((Cases { tx, events, open }, thread))
    }

    /// Open cases, as of the last batch.
    pub fn open_cases(&self) -> u64 {
        self.open.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Hands a device condition to the engine (never blocks).
    pub fn signal(&self, signal: Signal) {
        let _ = self.tx.send(Request::Signal(signal));
    }

    /// A device confirmed a case's sounder state (logged, so a restart skips it).
    pub fn sounder_confirmed(&self, case: CaseId, device: String, command: u64) {
        let _ = self.tx.send(Request::SounderConfirmed { case, device, command });
    }

    /// Reports a delivery result.
    pub fn delivery(&self, notification: u64, delivered: bool) {
        let _ = self.tx.send(Request::Delivery { notification, delivered });
    }

    /// Carries out an officer's command; answers once the command is stored, or once it is
    /// known that the store cannot write ([`Acted::durable`]).
    pub async fn act(&self, officer: Officer, command: Command, audit: Audit) -> Result<Acted, CaseError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Officer { officer, command, audit, reply }).map_err(|_| CaseError::Stopped)?;
        rx.await.map_err(|_| CaseError::Stopped)?
    }

    /// A case (JSON), from the engine if it holds it, else from the store.
    pub async fn get(&self, id: u64) -> Result<Option<String>, CaseError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Get { id, reply }).map_err(|_| CaseError::Stopped)?;
        rx.await.map_err(|_| CaseError::Stopped)?
    }

    /// Cases matching `filter` (JSON documents), newest first.
    pub async fn list(&self, filter: CaseFilter) -> Result<Vec<String>, CaseError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::List { filter, reply }).map_err(|_| CaseError::Stopped)?;
        rx.await.map_err(|_| CaseError::Stopped)?
    }

    /// Every transition of a case, in order.
    pub async fn timeline(&self, id: u64) -> Result<Vec<StoredTransition>, CaseError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Timeline { id, reply }).map_err(|_| CaseError::Stopped)?;
        rx.await.map_err(|_| CaseError::Stopped)?
    }

    /// Every transition as it is committed (JSON of [`firegrid_alerting::Transition`]).
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.events.subscribe()
    }

    /// Stops the loop after it has committed what it has; it writes a snapshot on the way.
    pub fn stop(&self) {
        let _ = self.tx.send(Request::Stop);
    }
}

/// The engine as the store last knew it, the actions of the replayed inputs, and the latest
/// time logged (the engine's clock must not start before it).
type Restored = (Engine, Vec<(Millis, Action)>, Millis);

/// Restores the engine from the store: see [`Restored`].
fn restore(store: &CaseStore, config: firegrid_alerting::Config) -> Result<Restored, StoreError> {
    let loaded = store.load()?;
    let mut engine = match &loaded.snapshot {
        Some(s) => Engine::restore(config.clone(), &mut serde_json::Deserializer::from_str(&s.json))
            .map_err(|source| StoreError::InvalidJson { what: "engine snapshot", source })?,
        None => Engine::new(config),
    };
    let mut actions = Vec::new();
    let mut delivered = std::collections::HashSet::new();
    let floor = loaded
        .inputs
        .iter()
        .map(|input| input.at_ms)
        .chain(loaded.snapshot.as_ref().map(|s| s.at_ms))
        .max()
        .unwrap_or(0);
    for input in &loaded.inputs {
        if input.kind == "tick" {
            actions.extend(engine.tick(input.at_ms).into_iter().map(|a| (input.at_ms, a)));
            continue;
        }
        let parsed: Input = serde_json::from_str(&input.json)
            .map_err(|source| StoreError::InvalidJson { what: "logged input", source })?;
        if let Input::Delivery { notification, delivered: true } = parsed {
            delivered.insert(notification);
        }
        // A logged input was accepted once; the engine is deterministic, so it is again.
        if let Ok(out) = engine.handle(input.at_ms, &parsed) {
            actions.extend(out.into_iter().map(|a| (input.at_ms, a)));
        }
    }
    // A notification whose delivery is logged is not queued again. This gateway's own outbox
    // would drop it as a duplicate anyway; a standby that took over the store has an outbox of
    // its own, which would page it a second time.
    actions.retain(|(_, action)| !matches!(action, Action::Notify(n) if delivered.contains(&n.id)));
    Ok((engine, actions, floor))
}

struct Worker {
    engine: Engine,
    store: CaseStore,
    wiring: Wiring,
    events: broadcast::Sender<String>,
    since_snapshot: u64,
    /// The engine's time for the batch at hand, read once from `clock` per batch.
    now: Millis,
    clock: DeadlineClock,
    open: Arc<std::sync::atomic::AtomicU64>,
    /// Its own queue: a delivery that fails before it starts goes back in like any other.
    requests: Sender<Request>,
    /// Inputs handled but not yet stored, oldest first: the store could not write. Every
    /// commit stores them first, in order, so the log still replays in handling order.
    unsaved: Vec<Done>,
}

/// One input handled, waiting for its commit.
struct Done {
    /// When it was handled (engine time): a held input is stored with its own time, so the
    /// replay handles it when it was handled.
    at: Millis,
    kind: &'static str,
    audit: Option<Audit>,
    input: String,
    actions: Vec<Action>,
    /// A case the engine no longer holds, changed by this input (a note on an archived
    /// case): stored as it is here.
    archived: Option<Box<firegrid_alerting::Case>>,
}

impl Worker {
    fn run(mut self, rx: Receiver<Request>) {
        let mut stop = false;
        let mut pruned_at: Option<std::time::Instant> = None;
        while !stop {
            // Retention: hourly, closed cases older than the retention and the log entries
            // a replay no longer needs go.
            if pruned_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(3600)) {
                pruned_at = Some(std::time::Instant::now());
                match self.store.prune(self.clock.now_ms(), self.wiring.retention) {
                    Ok(pruned) if pruned.cases > 0 || pruned.inputs > 0 => {
                        tracing::info!(
                            cases = pruned.cases,
                            inputs = pruned.inputs,
                            "Old closed cases pruned."
                        );
                    }
                    Ok(_) => {}
                    Err(error) => tracing::error!(%error, "Cannot prune the case store."),
                }
            }
            let wait = self.engine.next_wake().map_or(Duration::from_secs(1), |w| {
                Duration::from_millis(w.saturating_sub(self.clock.now_ms()).min(1000))
            });
            let mut batch = Vec::new();
            match rx.recv_timeout(wait) {
                Ok(r) => batch.push(r),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stop = true,
            }
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            // The deadline clock never goes back and starts at the last logged input, so the
            // log replays in order.
            self.now = self.clock.now_ms();
            stop |= self.step(batch);
        }
        self.snapshot();
    }

    /// Handles a batch: engine, one commit, then effects and replies. True on `Stop`.
    fn step(&mut self, batch: Vec<Request>) -> bool {
        let now = self.now;
        let mut done: Vec<Done> = Vec::new();
        let mut replies = Vec::new();
        let mut queries = Vec::new();
        let mut stop = false;
        if self.engine.next_wake().is_some_and(|w| w <= now) {
            let actions = self.engine.tick(now);
            done.push(Done {
                at: now,
                kind: "tick",
                audit: None,
                input: String::new(),
                actions,
                archived: None,
            });
        }
        for request in batch {
            match request {
                Request::Signal(signal) => self.handle(now, Input::Signal(signal), None, &mut done),
                Request::Delivery { notification, delivered } => {
                    self.handle(now, Input::Delivery { notification, delivered }, None, &mut done)
                }
                Request::SounderConfirmed { case, device, command } => {
                    self.handle(now, Input::SounderConfirmed { case, device, command }, None, &mut done)
                }
                Request::Officer { officer, command, audit, reply } => {
                    let id = command.case();
                    if let Command::Note { text, .. } = &command
                        && self.engine.case(id).is_none()
                    {
                        match self.note_archived(now, &officer, id.0, text) {
                            Ok((transition, case)) => {
                                let input = Input::Officer { officer, command };
                                let json = serde_json::to_string(&input).expect("inputs serialise");
                                done.push(Done {
                                    at: now,
                                    kind: input.kind(),
                                    audit: Some(audit),
                                    input: json,
                                    actions: vec![Action::Record(transition)],
                                    archived: Some(Box::new(case)),
                                });
                                replies.push((id, reply));
                            }
                            Err(error) => {
                                tracing::info!(officer = %audit.actor, origin = %audit.origin, case = %id, %error, "Officer command refused.");
                                let _ = reply.send(Err(error));
                            }
                        }
                        continue;
                    }
                    let input = Input::Officer { officer, command };
                    match self.engine.handle(now, &input) {
                        Ok(actions) => {
                            let json = serde_json::to_string(&input).expect("inputs serialise");
                            done.push(Done {
                                at: now,
                                kind: input.kind(),
                                audit: Some(audit),
                                input: json,
                                actions,
                                archived: None,
                            });
                            replies.push((id, reply));
                        }
                        Err(refusal) => {
                            tracing::info!(officer = %audit.actor, origin = %audit.origin, case = %id, %refusal, "Officer command refused.");
                            let _ = reply.send(Err(refusal.into()));
                        }
                    }
                }
                Request::Stop => stop = true,
                query => queries.push(query),
            }
        }
        // Inputs the store could not take before go first, so the log keeps handling order.
        let mut steps = std::mem::take(&mut self.unsaved);
        let earlier = steps.len();
        steps.extend(done);
        let durable = match self.commit(&steps) {
            Ok(()) => {
                if earlier > 0 {
                    tracing::warn!(inputs = earlier, "Alarm-loop inputs held in memory are stored.");
                }
                self.wiring.health.recovered(firegrid_base::durability::Store::Cases);
                true
            }
            Err(error) => {
                self.wiring.health.failed(firegrid_base::durability::Store::Cases, &error);
                false
            }
        };
        // Effects go out whether or not the commit went through: a fire must page whether or
        // not the disk is healthy. What could not be stored stays in memory and is stored with
        // the next commit that goes through.
        let new = steps.split_off(earlier);
        // Stored: the inputs are done with, their actions move out. Not stored: they stay
        // held, so their actions are copied.
        let actions: Vec<(Millis, Action)> = if durable {
            new.into_iter().flat_map(|d| d.actions.into_iter().map(|a| (now, a))).collect()
        } else {
            let actions = new.iter().flat_map(|d| d.actions.iter().map(|a| (now, a.clone()))).collect();
            steps.extend(new);
            if steps.len() > MAX_UNSAVED {
                let lost = steps.len() - MAX_UNSAVED;
                tracing::error!(
                    lost,
                    held = MAX_UNSAVED,
                    "The case store has not written for too long; the oldest held inputs are dropped (they took effect, but a restart will not replay them)."
                );
                steps.drain(..lost);
            }
            self.unsaved = steps;
            actions
        };
        self.wiring.health.set_held(firegrid_base::durability::Store::Cases, self.unsaved.len() as u64);
        self.carry_out(&actions, true);
        for (id, reply) in replies {
            let case = self.case_json(id.0).ok().flatten().unwrap_or_default();
            let _ = reply.send(Ok(Acted { case, durable }));
        }
        for query in queries {
            self.answer(query);
        }
        self.open.store(self.engine.open_cases() as u64, std::sync::atomic::Ordering::Relaxed);
        // A snapshot holds the effects of every input handled, so it may only be taken when
        // every one of them is stored too: a replay would apply the unstored ones twice.
        if self.since_snapshot >= SNAPSHOT_EVERY && self.unsaved.is_empty() {
            self.snapshot();
        }
        stop
    }

    /// A note on a case only the store still has; the case with the note and its transition.
    fn note_archived(
        &self,
        now: Millis,
        officer: &Officer,
        id: u64,
        text: &str,
    ) -> Result<(firegrid_alerting::Transition, firegrid_alerting::Case), CaseError> {
        let stored = self.store.case(id)?.ok_or(Refusal::NotFound(CaseId(id)))?;
        let mut case: firegrid_alerting::Case = serde_json::from_str(&stored.json)
            .map_err(|source| StoreError::InvalidJson { what: "case document", source })?;
        let transition = Engine::note_archived(now, officer, &mut case, text)?;
        Ok((transition, case))
    }

    fn handle(&mut self, now: Millis, input: Input, audit: Option<Audit>, done: &mut Vec<Done>) {
        if let Ok(actions) = self.engine.handle(now, &input) {
            let json = serde_json::to_string(&input).expect("inputs serialise");
            done.push(Done { at: now, kind: input.kind(), audit, input: json, actions, archived: None });
        }
    }

    fn commit(&mut self, done: &[Done]) -> Result<(), StoreError> {
        if done.is_empty() {
            return Ok(());
        }
        // Each step's transitions; each touched case's document once, with the last step that
        // touched it (the store replaces a case's row, so only its final state counts).
        let transitions: Vec<Vec<(u64, Millis, &'static str, String)>> = done
            .iter()
            .map(|d| {
                d.actions
                    .iter()
                    .filter_map(|a| match a {
                        Action::Record(t) => Some((
                            t.case.0,
                            t.at,
                            t.kind.as_str(),
                            serde_json::to_string(t).expect("serialises"),
                        )),
                        _ => None,
                    })
                    .collect()
            })
            .collect();
        let mut last_touch: BTreeMap<u64, usize> = BTreeMap::new();
        for (i, rows) in transitions.iter().enumerate() {
            for (case, ..) in rows {
                last_touch.insert(*case, i);
            }
        }
        let docs: Vec<(usize, &firegrid_alerting::Case, String)> = last_touch
            .into_iter()
            .filter_map(|(id, i)| {
                let case = self.engine.case(CaseId(id)).or(done[i].archived.as_deref())?;
                Some((i, case, serde_json::to_string(case).expect("serialises")))
            })
            .collect();
        let mut case_rows: Vec<Vec<CaseRow<'_>>> = done.iter().map(|_| Vec::new()).collect();
        for (i, c, json) in &docs {
            case_rows[*i].push(CaseRow {
                case_id: c.id.0,
                opened_ms: c.opened,
                closed_ms: c.closed.as_ref().map(|(s, _)| s.at),
                stage: c.stage.as_str(),
                severity: c.severity.as_str(),
                street: &c.location.street,
                community: &c.location.community,
                grid: &c.location.grid,
                building: &c.location.building,
                json,
            });
        }
        let transition_rows: Vec<Vec<TransitionRow<'_>>> = transitions
            .iter()
            .map(|rows| {
                rows.iter()
                    .map(|(case_id, at_ms, kind, json)| TransitionRow {
                        case_id: *case_id,
                        at_ms: *at_ms,
                        kind,
                        json,
                    })
                    .collect()
            })
            .collect();
        let steps: Vec<super::store::Step<'_>> = done
            .iter()
            .zip(transition_rows.iter().zip(&case_rows))
            .map(|(d, (transitions, cases))| super::store::Step {
                at_ms: d.at,
                kind: d.kind,
                audit: d.audit.as_ref(),
                input_json: &d.input,
                transitions,
                cases,
            })
            .collect();
        self.store.commit(&steps)?;
        self.since_snapshot += steps.len() as u64;
        Ok(())
    }

    fn snapshot(&mut self) {
        let mut json = Vec::new();
        if let Err(error) = self.engine.snapshot(&mut serde_json::Serializer::new(&mut json)) {
            tracing::error!(%error, "Cannot serialise the alarm engine.");
            return;
        }
        let upto = match self.store.stats() {
            Ok(stats) => stats.last_seq,
            Err(error) => {
                tracing::error!(%error, "Cannot read the case store.");
                return;
            }
        };
        let json = String::from_utf8(json).expect("serde_json writes UTF-8");
        match self.store.save_snapshot(upto, self.now, &json) {
            Ok(()) => self.since_snapshot = 0,
            Err(error) => tracing::error!(%error, "Cannot save the alarm engine snapshot."),
        }
    }

    /// Notifications to the outbox, transitions to series and SSE, sounders to the field.
    /// `live` is false while replaying: then only notifications are queued again.
    fn carry_out(&mut self, actions: &[(Millis, Action)], live: bool) {
        for (at, action) in actions {
            match action {
                Action::Notify(n) => self.notify(n, *at, live),
                Action::Sounders { location, case, on, command } if live => {
                    if *on {
                        tracing::warn!(case = %case, building = %location.building, command, "Fire: sounding the building's sounders.");
                    } else {
                        tracing::info!(case = %case, building = %location.building, command, "Silencing the building's sounders.");
                    }
                    (self.wiring.sound)(*case, location, *on, *command, &Default::default());
                }
                Action::Record(t) if live => {
                    (self.wiring.series)(action, *at);
                    let _ = self.events.send(serde_json::to_string(t).expect("serialises"));
                }
                Action::Kpi(_) if live => (self.wiring.series)(action, *at),
                _ => {}
            }
        }
    }

    fn notify(&mut self, n: &Notification, at: Millis, live: bool) {
        let desk = n.desk.to_string();
        let targets = (self.wiring.desk_channels)(&desk);
        if targets.is_empty() {
            // With no channel configured at all, the console and the API are the only way
            // cases are seen: nothing to deliver, nothing failed.
            if live && !self.wiring.console_only {
                tracing::warn!(desk = %desk, case = %n.case, "No notification channel reaches this desk; counting it as a failed delivery.");
                // Nobody can be told at this desk: the engine escalates at once (the next
                // batch, which starts without waiting since the queue is not empty).
                let _ = self.requests.send(Request::Delivery { notification: n.id, delivered: false });
            }
            return;
        }
        let msg = message(n, at, self.wiring.console_url.as_deref(), &self.wiring.pages);
        self.wiring.pending.lock().unwrap().insert(n.id, targets.len());
        let outbox = self.wiring.outbox.clone();
        if let Err(error) = self.wiring.runtime.block_on(outbox.enqueue(&msg, &targets)) {
            tracing::error!(%error, case = %n.case, "Cannot queue a notification.");
        }
    }

    fn case_json(&self, id: u64) -> Result<Option<String>, StoreError> {
        if let Some(case) = self.engine.case(CaseId(id)) {
            return Ok(Some(serde_json::to_string(case).expect("serialises")));
        }
        Ok(self.store.case(id)?.map(|c| c.json))
    }

    fn answer(&self, query: Request) {
        match query {
            Request::Get { id, reply } => {
                let _ = reply.send(self.case_json(id).map_err(Into::into));
            }
            Request::List { filter, reply } => {
                let listed =
                    self.store.list(&filter).map(|cases| cases.into_iter().map(|c| c.json).collect());
                let _ = reply.send(listed.map_err(Into::into));
            }
            Request::Timeline { id, reply } => {
                let _ = reply.send(self.store.timeline(id).map_err(Into::into));
            }
            _ => {}
        }
    }
}

/// A building's address by building id (from the registry), for pages.
pub type AddressOf = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What a page says besides the case itself.
#[derive(Clone)]
pub struct PageContext {
    /// The officers' time zone, for deadlines.
    pub time_zone: chrono_tz::Tz,
    /// The building's address.
    pub address: AddressOf,
}

impl PageContext {
    /// Deadlines in `time_zone`, no addresses (no registry).
    pub fn without_addresses(time_zone: chrono_tz::Tz) -> PageContext {
        PageContext { time_zone, address: Arc::new(|_| None) }
    }
}

/// `12-02 08:57`: Unix ms as month, day and minute in `zone`. The zone's name goes next to
/// it in the page, so that nobody reads it as UTC.
pub fn local_minute(at_ms: Millis, zone: chrono_tz::Tz) -> String {
    let utc = chrono::DateTime::from_timestamp_millis(at_ms as i64).unwrap_or_default();
    utc.with_timezone(&zone).format("%m-%d %H:%M").to_string()
}

/// The human message for a notification.
pub fn message(n: &Notification, at: Millis, console: Option<&str>, pages: &PageContext) -> Message {
    use firegrid_alerting::NotifyReason::*;
    let why = match n.reason {
        Opened => "新警情 new case",
        Confirmed => "确认火警 confirmed fire",
        Spread => "多楼火情 spreading across buildings",
        Escalated => "升级 escalated: not acknowledged in time",
        Reminder => "提醒 reminder: still not acknowledged",
        HandlingOverdue => "处置超时 handling overdue",
        DeliveryFailed => "升级 escalated: the desk below could not be reached",
    };
    let place = &n.location;
    // An unplaced device has no building; its page must say that nobody vouches for it, and
    // a duty officer must still act on it as the fire it may be.
    let building = if n.unverified { "未登记设备 unplaced device" } else { place.building.as_str() };
    // The field's word for the kind of case, from the glossary the console shares.
    let kind = firegrid_base::glossary::Glossary::get()
        .term("case_kind", n.kind.as_str())
        .map_or_else(|| n.kind.as_str().to_owned(), |t| format!("{} {}", t.zh, t.en));
    let title = format!("{building} {kind} · {why}");
    let names = [&place.street, &place.community, &place.grid, &place.building];
    let mut text = names.iter().filter(|n| !n.is_empty()).map(|n| n.as_str()).collect::<Vec<_>>().join(" / ");
    if let Some(address) = (!n.unverified).then(|| (pages.address)(&place.building)).flatten() {
        text.push_str(&format!("; 地址 address: {address}"));
    }
    text.push_str(&format!("; 设备 devices: {}", n.devices.join(", ")));
    if n.unverified {
        text.push_str(
            "; 未核实 unverified: the registry does not know this device (place it from the console)",
        );
    }
    if n.chattering {
        text.push_str("; chattering device (频繁误报)");
    }
    if let Some(deadline) = n.deadline {
        let zone = pages.time_zone;
        text.push_str(&format!(
            "; 请于 {} 前响应 ({}) answer by then",
            local_minute(deadline, zone),
            zone.name()
        ));
    }
    Message {
        notification_id: n.id,
        case_id: n.case.0,
        severity: n.severity.as_str().to_owned(),
        level: n.desk.level.as_str().to_owned(),
        desk: n.desk.to_string(),
        title,
        text,
        url: console.map(|base| case_url(base, n.case.0)),
        at_ms: at,
        reason: reason_name(n.reason).to_owned(),
        local_at: Some(format!("{} ({})", local_minute(at, pages.time_zone), pages.time_zone.name())),
    }
}

/// The stable name of a notification reason, as the engine serialises it.
fn reason_name(reason: firegrid_alerting::NotifyReason) -> &'static str {
    use firegrid_alerting::NotifyReason::*;
    match reason {
        Opened => "opened",
        Confirmed => "confirmed",
        Spread => "spread",
        Escalated => "escalated",
        Reminder => "reminder",
        HandlingOverdue => "handling_overdue",
        DeliveryFailed => "delivery_failed",
    }
}

#[cfg(test)]
mod tests {
    use firegrid_alerting::{CaseId, CaseKind, Level, Location, NotifyReason, Scope, Severity, Stage};

    use super::*;

    fn notification(location: Location, unverified: bool) -> Notification {
        Notification {
            id: 7,
            case: CaseId(3),
            desk: Scope { level: Level::Street, name: "Fuhai".into() },
            reason: NotifyReason::Opened,
            severity: Severity::PreAlarm,
            kind: CaseKind::Fire,
            location,
            stage: Stage::Warning,
            devices: vec!["x1".into()],
            chattering: false,
            deadline: None,
            unverified,
        }
    }

    #[test]
    fn every_case_kind_has_the_fields_words_and_a_page_is_stamped_on_the_officers_clock() {
        for kind in
            [CaseKind::Fire, CaseKind::Fault, CaseKind::Offline, CaseKind::CommunicationLoss, CaseKind::Water]
        {
            assert!(
                firegrid_base::glossary::Glossary::get().term("case_kind", kind.as_str()).is_some(),
                "{kind:?}"
            );
        }
        // 2026-12-02T00:57:08Z is 08:57 in Shanghai.
        let pages = PageContext::without_addresses(chrono_tz::Asia::Shanghai);
        let m = message(&notification(Location::default(), false), 1_796_173_028_000, None, &pages);
        assert_eq!(m.local_at.as_deref(), Some("12-02 08:57 (Asia/Shanghai)"));
    }

    #[test]
    fn a_message_names_its_reason_as_the_engine_serialises_it() {
        use NotifyReason::*;
        for reason in [Opened, Confirmed, Spread, Escalated, Reminder, HandlingOverdue, DeliveryFailed] {
            let pages = PageContext::without_addresses(chrono_tz::Asia::Shanghai);
            let m = message(
                &Notification { reason, ..notification(Location::default(), false) },
                0,
                None,
                &pages,
            );
            assert_eq!(serde_json::to_value(reason).unwrap(), m.reason.as_str(), "{reason:?}");
            assert_eq!(m.is_reminder(), reason == Reminder);
        }
    }

    #[test]
    fn an_unplaced_device_pages_as_unverified_without_empty_places() {
        let street = Location { district: "Xishan".into(), street: "Fuhai".into(), ..Location::default() };
        let pages = PageContext {
            time_zone: chrono_tz::Asia::Shanghai,
            address: Arc::new(|b| (b == "A1").then(|| "富海村 3 号".to_owned())),
        };
        let m = message(&notification(street, true), 0, None, &pages);
        assert_eq!(m.title, "未登记设备 unplaced device 火情 fire · 新警情 new case");
        assert!(m.text.starts_with("Fuhai; 设备 devices: x1; 未核实 unverified"), "{}", m.text);
        let placed = Location {
            district: "Xishan".into(),
            street: "Fuhai".into(),
            community: "C1".into(),
            grid: "G1".into(),
            building: "A1".into(),
        };
        let m = message(&notification(placed, false), 0, None, &pages);
        assert_eq!(m.title, "A1 火情 fire · 新警情 new case");
        assert_eq!(m.text, "Fuhai / C1 / G1 / A1; 地址 address: 富海村 3 号; 设备 devices: x1");
    }

    /// The deadline in the officers' zone with the zone named, not in UTC: 2026-12-02T00:57:08Z
    /// is 08:57 in Shanghai.
    #[test]
    fn a_deadline_is_given_on_the_officers_clock() {
        let check = |zone: chrono_tz::Tz, expected: &str| {
            let mut n = notification(Location::default(), false);
            n.deadline = Some(1_796_173_028_000);
            let m = message(&n, 0, None, &PageContext::without_addresses(zone));
            assert!(m.text.ends_with(expected), "{}", m.text);
        };
        check(chrono_tz::Asia::Shanghai, "; 请于 12-02 08:57 前响应 (Asia/Shanghai) answer by then");
        check(chrono_tz::UTC, "; 请于 12-02 00:57 前响应 (UTC) answer by then");
    }
}
