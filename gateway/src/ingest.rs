//! Ingest: from a batch of MQTT messages to durable spool records, acknowledgements and the
//! hand-off to the alarm loop.
//!
//! [`Ingest::process`] is the one place every device message goes through, whichever MQTT
//! session delivered it:
//!
//! 1. topic and payload checked against each other ([`crate::uplink::accept`]),
//! 2. authentication: the tag verified under the device's key, or the message accepted
//!    without proof for a keyless (or migrating) device, or refused ([`crate::keys`]),
//! 3. admission: duplicate, replay and rate-limit checks ([`crate::admission`]); only verified
//!    messages move the replay window, and a verified message from an earlier boot is answered
//!    with a challenge,
//! 4. placement looked up in the registry (unknown devices are accepted, counted and listed:
//!    an unregistered detector is a safety gap someone must see, and its fire alarm is still
//!    a fire alarm),
//! 5. the point appended to the spool, stamped once with the acceptance time,
//! 6. one commit for the batch: fsynced when it holds an alarm- or event-class record,
//!    written to the OS otherwise,
//!
//! and only then does the caller acknowledge to the broker, in arrival order, and publish the
//! application-level `down/ack` for each alarm- and event-class message.
//!
//! Telemetry gets no `down/ack` ([`Class::is_acknowledged`]): a newer reading supersedes it,
//! QoS 1 carries it to the broker, and from there this persistent session, acknowledged only
//! after the commit, carries it; liveness tolerates a missed heartbeat. One `down/ack` per
//! heartbeat cost about a third of the ingest rate (BENCHMARKS.md, "Ingest efficiency").

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use firegrid_protocol::{
    Class, DeviceId, Downlink, DownlinkBody, Encoding, Limits, Topic, Uplink, VillageId,
};
use influxdb_line_protocol::{FieldValue, parse_lines};
use tokio::sync::Notify;

use crate::admission::{Admission, AdmissionConfig, Budget, Verdict};
use crate::durability::Store;
use crate::keys::{Auth, CommandCounter, KeyStore};
use crate::metrics::Metrics;
use crate::series::schema::{Placement, placement_tags, unplaced_uplink_point};
use crate::spool::held::{Held, HeldRecord, OwedAck};
use crate::spool::{Appended, Durability, Spool, SpoolError};

/// Unknown devices remembered for the list (and given a series of their own); more are
/// counted, and their points share the series of [`UNLISTED`].
const UNKNOWN_LIST_CAP: usize = 10_000;

/// The `device` tag of unknown devices beyond the 10,000 listed ones.
pub const UNLISTED: &str = "unlisted";

/// Where devices are. The registry implements it; [`NoDirectory`] knows no device.
pub trait Directory: Send + Sync {
    /// The placement of `device`, or `None` when it is not registered.
    fn placement(&self, device: &DeviceId) -> Option<Placement<'_>>;

    /// The devices in `building` that sound an alarm (the smoke detectors: cameras and water
    /// sensors have no sounder and answer a sounder command `unsupported`), with their village
    /// (for downlink topics).
    fn sounders_in(&self, _building: &str) -> Vec<(VillageId, DeviceId)> {
        Vec::new()
    }
}

/// A directory without devices: every device is unknown (until a registry is loaded).
#[derive(Debug, Default)]
pub struct NoDirectory;

impl Directory for NoDirectory {
    fn placement(&self, _: &DeviceId) -> Option<Placement<'_>> {
        None
    }
}

/// A message accepted and stored, handed to the alarm loop and liveness tracking.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Its topic.
    pub topic: Topic,
    /// The message.
    pub msg: Uplink,
    /// Acceptance time, Unix ms.
    pub accepted_ms: u64,
    /// Whether the device is in the registry.
    pub registered: bool,
}

/// What became of one message of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// An alarm- or event-class message stored (or a duplicate of one stored): acknowledge to
    /// the broker and send the device its application-level acknowledgement on `ack_topic`.
    Accepted {
        /// Topic of the `down/ack`.
        ack_topic: String,
        /// Encoded `down/ack`.
        ack_payload: Vec<u8>,
    },
    /// A telemetry message stored (or a duplicate of one stored): acknowledge to the broker
    /// and nothing else; the device does not wait for a `down/ack` (module documentation).
    Stored,
    /// Rejected or shed: acknowledge to the broker (so it is not redelivered) and nothing
    /// else.
    Dropped,
    /// An alarm- or event-class message (or a retransmission of one) handed to the alarm
    /// loop but held in memory because the spool cannot write ([`crate::spool::held`]):
    /// acknowledge to the broker; its `down/ack` follows in [`Processed::released`] once it
    /// is durable.
    Held,
    /// Rejected as from an earlier boot, but signed: acknowledge to the broker and send the
    /// device a `down/challenge` ([`firegrid_protocol::DownlinkBody::Challenge`]) on `topic`.
    Challenged {
        /// Topic of the `down/challenge`.
        topic: String,
        /// Encoded `down/challenge`.
        payload: Vec<u8>,
    },
}

/// One processed batch.
#[derive(Debug, Default)]
pub struct Processed {
    /// One outcome per input message, in input order.
    pub outcomes: Vec<Outcome>,
    /// The fresh messages, for the alarm loop and liveness.
    pub accepted: Vec<Accepted>,
    /// `down/ack`s (topic, payload) of messages held earlier ([`Outcome::Held`]) that are
    /// durable now: publish them like the others.
    pub released: Vec<(String, Vec<u8>)>,
}

/// An unknown device as listed by [`Ingest::unknown_devices`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnknownDevice {
    /// Device id.
    pub device: String,
    /// Village from its topic.
    pub village: String,
    /// First message, Unix ms.
    pub first_seen_ms: u64,
    /// Last message, Unix ms.
    pub last_seen_ms: u64,
    /// Messages received.
    pub messages: u64,
}

/// Shared ingest state; both MQTT sessions call [`Ingest::process`].
pub struct Ingest {
    spool: Arc<Mutex<Spool>>,
    /// What the spool could not take (locked after `spool`, never alone while writing).
    held: Mutex<Held>,
    wake_destinations: Arc<Notify>,
    /// The directory and its generation, which starts with each [`Ingest::set_directory`]
    /// (the head cache's placed heads are made for one generation).
    directory: RwLock<(Arc<dyn Directory>, u64)>,
    admission: Mutex<Admission>,
    limits: Limits,
    metrics: Arc<Metrics>,
    unknown: Mutex<HashMap<DeviceId, UnknownDevice>>,
    last_ts_ns: AtomicI64,
    /// Encoded line-protocol heads (locked after `held`).
    heads: Mutex<crate::series::HeadCache>,
    keys: RwLock<Arc<KeyStore>>,
    commands: CommandCounter,
    backlog: Arc<Backlog>,
}

/// Whether a source is taking a backlog off the broker (full batches, one after another), so
/// that the database writers can let it go first: the broker's queue for a session is bounded
/// and drops what overflows it (Mosquitto's `max_queued_messages`), the spool is durable, so
/// emptying the broker first is what loses nothing. Alarms never wait on this: they are
/// handed to the alarm loop from ingest, not from the database writers.
#[derive(Debug)]
pub struct Backlog {
    epoch: std::time::Instant,
    /// Milliseconds since `epoch` until which a backlog is assumed; 0: none seen.
    until_ms: std::sync::atomic::AtomicU64,
}

impl Default for Backlog {
    fn default() -> Self {
        Backlog { epoch: std::time::Instant::now(), until_ms: std::sync::atomic::AtomicU64::new(0) }
    }
}

impl Backlog {
    /// How long after the last full batch a backlog is still assumed.
    pub const LINGER: std::time::Duration = std::time::Duration::from_millis(250);

    /// A source took a full batch: more are queued behind it.
    pub fn note_full_batch(&self) {
        let until = self.epoch.elapsed() + Self::LINGER;
        self.until_ms.store(until.as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether a source has been taking full batches within [`Backlog::LINGER`].
    pub fn busy(&self) -> bool {
        (self.epoch.elapsed().as_millis() as u64) < self.until_ms.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl Ingest {
    /// Ingest into `spool`, waking `wake_destinations` after each commit.
    ///
    /// The admission window is seeded from the newest `recent` spool records, so messages
    /// the gateway stored but could not acknowledge before a crash count as duplicates when
    /// the broker redelivers them, instead of being stored twice.
    pub fn new(
        spool: Arc<Mutex<Spool>>,
        wake_destinations: Arc<Notify>,
        admission: AdmissionConfig,
        limits: Limits,
        metrics: Arc<Metrics>,
        now_ms: u64,
    ) -> Result<Self, SpoolError> {
        let mut admission = Admission::new(admission);
        let recent = spool.lock().unwrap().tail(RECENT_ON_START)?;
        let remembered = remember_recent(&mut admission, &recent, now_ms);
        if remembered > 0 {
            tracing::info!(
                messages = remembered,
                "Seeded duplicate detection from the spool's newest records."
            );
        }
        Ok(Ingest {
            spool,
            held: Mutex::new(Held::default()),
            wake_destinations,
            directory: RwLock::new((Arc::new(NoDirectory), 0)),
            admission: Mutex::new(admission),
            limits,
            metrics,
            unknown: Mutex::new(HashMap::new()),
            last_ts_ns: AtomicI64::new(0),
            heads: Mutex::new(crate::series::HeadCache::default()),
            keys: RwLock::new(Arc::new(KeyStore::empty())),
            commands: CommandCounter::in_memory(),
            backlog: Arc::default(),
        })
    }

    /// Shares `backlog` with the database writers (the default is this ingest's own).
    pub fn with_backlog(mut self, backlog: Arc<Backlog>) -> Self {
        self.backlog = backlog;
        self
    }

    /// The backlog signal the sources raise and the database writers read.
    pub fn backlog(&self) -> &Backlog {
        &self.backlog
    }

    /// Numbers downlink commands from `counter` (durable, so that numbers never repeat across
    /// restarts; the default counts in memory from 1).
    pub fn with_command_counter(mut self, counter: CommandCounter) -> Self {
        self.commands = counter;
        self
    }

    /// Replaces the device keys (a key store reload).
    pub fn set_keys(&self, keys: Arc<KeyStore>) {
        *self.keys.write().unwrap() = keys;
    }

    /// The current device keys.
    pub fn keys(&self) -> Arc<KeyStore> {
        self.keys.read().unwrap().clone()
    }

    /// Forgets the authenticated replay window of `device`, so that its next signed message
    /// starts a new one (an officer's reset of a device whose boot counter went backwards).
    /// `false` when the gateway has never heard from it.
    pub fn reset_window(&self, device: &DeviceId) -> bool {
        self.admission.lock().unwrap().reset(device)
    }

    /// A command for `device` in the boot the gateway last authenticated from it and in the
    /// encoding of its latest message (JSON for a device never heard) (see [`Ingest::command`]).
    pub fn command_for(
        &self,
        village: &VillageId,
        device: &DeviceId,
        body: DownlinkBody,
        ts_ms: u64,
    ) -> Option<(String, Vec<u8>)> {
        let (boot, compact) = {
            let admission = self.admission.lock().unwrap();
            (admission.boot(device).unwrap_or(0), admission.prefers_compact(device))
        };
        let encoding = if compact { Encoding::Compact } else { Encoding::Json };
        self.command(village, device, boot, body, encoding, ts_ms)
    }

    /// A command for `device`, numbered, signed with its key (in its boot `boot`) when it has
    /// one, and encoded: schema version 2 for a keyed device, version 1 (which keyless
    /// firmware decodes) otherwise. `None` when the device is revoked or no number could be
    /// reserved; the caller sends nothing then.
    pub fn command(
        &self,
        village: &VillageId,
        device: &DeviceId,
        boot: u16,
        body: DownlinkBody,
        encoding: Encoding,
        ts_ms: u64,
    ) -> Option<(String, Vec<u8>)> {
        let keys = self.keys.read().unwrap().clone();
        self.command_with(&keys, village, device, boot, body, encoding, ts_ms)
    }

    #[allow(clippy::too_many_arguments)]
    fn command_with(
        &self,
        keys: &KeyStore,
        village: &VillageId,
        device: &DeviceId,
        boot: u16,
        body: DownlinkBody,
        encoding: Encoding,
        ts_ms: u64,
    ) -> Option<(String, Vec<u8>)> {
        let kind = body.kind();
        let seq = match self.commands.next() {
            Ok(seq) => seq,
            Err(error) => {
                self.metrics.rejected("command_counter", device.as_str(), &error);
                return None;
            }
        };
        let mut cmd = Downlink::new(seq, ts_ms, body);
        match keys.get(device) {
            Some(entry) if entry.revoked => return None,
            Some(_) => {
                keys.sign(&mut cmd, village, device, boot);
            }
            None => cmd.v = 1,
        }
        // Room for the largest command, a firmware chunk in JSON (`MAX_CHUNK` as hex).
        let mut buf = [0u8; firegrid_protocol::MAX_PAYLOAD];
        let payload = cmd.encode(encoding, &mut buf).ok()?.to_vec();
        let topic = Topic::downlink(village.clone(), device.clone(), kind).to_buf().to_string();
        Some((topic, payload))
    }

    /// Replaces the directory (a registry reload). Batches in progress finish with the old
    /// one.
    pub fn set_directory(&self, directory: Arc<dyn Directory>) {
        let mut current = self.directory.write().unwrap();
        *current = (directory, current.1 + 1);
    }

    /// The current directory.
    pub fn directory(&self) -> Arc<dyn Directory> {
        self.directory.read().unwrap().0.clone()
    }

    /// Stores a point the gateway produced itself for `device` (a Modbus reading, a
    /// liveness change): placed like the device's MQTT messages, stamped like them, committed
    /// at once (fsynced unless `class` is telemetry).
    pub fn store_local(
        &self,
        device: &DeviceId,
        class: Class,
        now_ms: u64,
        build: impl FnOnce(&Placement<'_>, i64) -> crate::series::Point,
    ) -> Result<(), SpoolError> {
        let point = self.local_point(device, now_ms, build);
        self.store_points(std::slice::from_ref(&point), class, now_ms)
    }

    /// A point the gateway produced itself for `device`, placed and stamped like the device's
    /// MQTT messages, for [`Ingest::store_points`] (many in one commit).
    pub fn local_point(
        &self,
        device: &DeviceId,
        now_ms: u64,
        build: impl FnOnce(&Placement<'_>, i64) -> crate::series::Point,
    ) -> crate::series::Point {
        let directory = self.directory();
        let place = directory
            .placement(device)
            .unwrap_or(Placement { device_kind: "unregistered", ..Placement::default() });
        build(&place, self.stamp(now_ms))
    }

    /// A point about a whole scope (no device placement), stamped, for [`Ingest::store_points`].
    pub fn scope_point(
        &self,
        now_ms: u64,
        build: impl FnOnce(i64) -> crate::series::Point,
    ) -> crate::series::Point {
        build(self.stamp(now_ms))
    }

    /// Stores an event-class point about a whole scope (no device placement).
    pub fn store_scope(
        &self,
        now_ms: u64,
        build: impl FnOnce(i64) -> crate::series::Point,
    ) -> Result<(), SpoolError> {
        let point = self.scope_point(now_ms, build);
        self.store_points(std::slice::from_ref(&point), Class::Event, now_ms)
    }

    /// Stores points the gateway produced itself, already stamped, with one commit (fsynced
    /// unless `class` is telemetry).
    pub fn store_points(
        &self,
        points: &[crate::series::Point],
        class: Class,
        now_ms: u64,
    ) -> Result<(), SpoolError> {
        let mut spool = self.spool.lock().unwrap();
        let mut held = self.held.lock().unwrap();
        self.store_held(&mut spool, &mut held, now_ms);
        let mut heads = self.heads.lock().unwrap();
        let mut lines = Vec::with_capacity(points.len());
        for point in points {
            let mut line = Vec::with_capacity(256);
            if let Err(error) = point.encode_cached(&mut heads, &mut line) {
                self.metrics.rejected("unencodable", &point.measurement, &error);
                continue;
            }
            lines.push(line);
        }
        let mut written = Ok(());
        if !held.is_sick() {
            written = lines.iter().try_for_each(|line| spool.append(class, now_ms, line).map(drop));
            written = written.and_then(|()| {
                spool.commit(if class == Class::Telemetry { Durability::Os } else { Durability::Disk })
            });
            if written.is_ok() {
                self.stored(&held);
                drop((spool, held));
                self.wake_destinations.notify_waiters();
                return Ok(());
            }
        }
        // The spool cannot write: events wait in memory, telemetry is shed.
        if let Err(error) = written {
            self.spool_failed(&mut spool, &mut held, &error, now_ms);
        }
        for line in lines {
            let kept = class != Class::Telemetry
                && held.push(HeldRecord { class, ts_ms: now_ms, line, key: None, ack: None });
            if !kept {
                self.metrics.rejected("disk_unwritable", "gateway", &"point shed: the spool cannot write");
            }
        }
        self.metrics.stores.set_held(Store::Spool, held.len() as u64);
        Ok(())
    }

    /// Tries to store what is held (at most every [`crate::spool::held::RETRY_EVERY_MS`]),
    /// and says so when it worked. The spool lock is held by the caller.
    fn store_held(&self, spool: &mut Spool, held: &mut Held, now_ms: u64) {
        if let Ok(stored @ 1..) = held.store(spool, now_ms) {
            tracing::warn!(records = stored, "Records held in memory are in the spool now.");
            self.wake_destinations.notify_waiters();
            self.stored(held);
        }
    }

    /// A write to the spool went through: it is healthy (again).
    fn stored(&self, held: &Held) {
        self.metrics.stores.recovered(Store::Spool);
        self.metrics.stores.set_held(Store::Spool, held.len() as u64);
    }

    /// A spool write failed: says so, and resets the spool to its files.
    fn spool_failed(&self, spool: &mut Spool, held: &mut Held, error: &SpoolError, now_ms: u64) {
        self.metrics.stores.failed(Store::Spool, error);
        held.failed(spool, now_ms);
    }

    /// Tries to store what the spool holds in memory (called on a timer, so that a quiet
    /// village's held alarms are stored soon after the disk recovers). The `down/ack`s of
    /// what was stored go out with the next processed batch.
    pub fn retry_held(&self, now_ms: u64) {
        let mut spool = self.spool.lock().unwrap();
        let mut held = self.held.lock().unwrap();
        self.store_held(&mut spool, &mut held, now_ms);
    }

    /// Unknown devices seen, most recent first.
    pub fn unknown_devices(&self) -> Vec<UnknownDevice> {
        let mut list: Vec<_> = self.unknown.lock().unwrap().values().cloned().collect();
        list.sort_by(|a, b| b.last_seen_ms.cmp(&a.last_seen_ms).then_with(|| a.device.cmp(&b.device)));
        list
    }

    /// The acceptance timestamp: the clock in ns, made strictly increasing so that two
    /// messages of one device in the same millisecond never overwrite each other.
    fn stamp(&self, now_ms: u64) -> i64 {
        let now_ns = (now_ms as i64).saturating_mul(1_000_000);
        let prev = self.last_ts_ns.fetch_max(now_ns, Ordering::Relaxed);
        if prev < now_ns { now_ns } else { self.last_ts_ns.fetch_add(1, Ordering::Relaxed) + 1 }
    }

    /// Processes a batch of `(topic, payload)` received at `now_ms`. On `Err` nothing of the
    /// batch may be acknowledged: the spool could not store it.
    pub fn process(&self, batch: &[(&str, &[u8])], now_ms: u64) -> Result<Processed, SpoolError> {
        let (directory, generation) = self.directory.read().unwrap().clone();
        let keys = self.keys.read().unwrap().clone();
        let mut out = Processed {
            outcomes: Vec::with_capacity(batch.len()),
            accepted: Vec::new(),
            released: Vec::new(),
        };
        let mut durability = None;
        let mut line = Vec::with_capacity(256);
        let mut spool = self.spool.lock().unwrap();
        let mut held = self.held.lock().unwrap();
        let mut heads = self.heads.lock().unwrap();
        heads.keep_generation(generation);
        self.store_held(&mut spool, &mut held, now_ms);
        for owed in held.take_released() {
            match self.owed_ack(&keys, &owed) {
                Some(ack) => {
                    held.settle(&owed);
                    out.released.push(ack);
                }
                None => held.owe(owed),
            }
        }
        // This batch's records in the spool's buffer, until the commit: alarm- and event-class
        // ones (with a copy, to hold them if the commit fails) and telemetry ones, each with its
        // kind, counted accepted once the commit settles what became of it.
        let mut appended: Vec<(usize, HeldRecord, &'static str)> = Vec::new();
        let mut appended_telemetry: Vec<(usize, &'static str)> = Vec::new();
        // `down/ack`s this batch owes but could not make, owed once the batch is committed.
        let mut unmade: Vec<OwedAck> = Vec::new();
        for (topic, payload) in batch {
            let accepted = match crate::uplink::accept(topic, payload, &self.limits) {
                Ok(a) => a,
                Err(error) => {
                    self.metrics.rejected(error.reason(), topic, &error);
                    out.outcomes.push(Outcome::Dropped);
                    continue;
                }
            };
            let msg = &accepted.msg;
            let class = msg.class();
            let verified = match keys.judge(&accepted.topic.village, msg, now_ms) {
                Auth::Verified => true,
                Auth::Unauthenticated => false,
                Auth::Refused(reason) => {
                    let error = format!("{reason} (device {}, boot {}, seq {})", msg.dev, msg.boot, msg.seq);
                    self.metrics.rejected(reason, topic, &error);
                    out.outcomes.push(Outcome::Dropped);
                    continue;
                }
            };
            let verdict = {
                let budget = Budget::of(msg.kind());
                let mut admission = self.admission.lock().unwrap();
                let verdict = if msg.kind() == firegrid_protocol::UplinkKind::Status {
                    admission.check_rate_only(&msg.dev, msg.boot, msg.seq, budget, now_ms)
                } else if verified {
                    admission.check(&msg.dev, msg.boot, msg.seq, budget, now_ms)
                } else {
                    admission.check_unauthenticated(&msg.dev, msg.boot, msg.seq, budget, now_ms)
                };
                let verdict = match (&msg.body, verdict) {
                    // The signed answer to a challenge restarts the window at its boot.
                    (firegrid_protocol::UplinkBody::Boot(b), Verdict::EarlierBoot | Verdict::Replayed)
                        if verified && admission.answer(&msg.dev, msg.boot, msg.seq, b.nonce, now_ms) =>
                    {
                        tracing::warn!(device = %msg.dev, boot = msg.boot, "Device proved a new boot counter below its last one (reflashed?); its replay window restarts.");
                        Verdict::Fresh
                    }
                    (_, Verdict::EarlierBoot) if verified => {
                        let nonce = random_nonce();
                        match admission.challenge(&msg.dev, msg.boot, now_ms, nonce) {
                            Some(nonce) => {
                                drop(admission);
                                let error = format!(
                                    "earlier_boot (device {}, boot {}, seq {}): challenged",
                                    msg.dev, msg.boot, msg.seq
                                );
                                self.metrics.rejected(Verdict::EarlierBoot.reason(), topic, &error);
                                let challenge = self.command_with(
                                    &keys,
                                    &accepted.topic.village,
                                    &msg.dev,
                                    msg.boot,
                                    DownlinkBody::Challenge { nonce },
                                    Encoding::detect(payload),
                                    now_ms,
                                );
                                out.outcomes.push(match challenge {
                                    Some((topic, payload)) => Outcome::Challenged { topic, payload },
                                    None => Outcome::Dropped,
                                });
                                continue;
                            }
                            None => verdict,
                        }
                    }
                    _ => verdict,
                };
                if verdict == Verdict::Fresh {
                    admission.note_encoding(&msg.dev, Encoding::detect(payload) == Encoding::Compact);
                }
                verdict
            };
            match verdict {
                Verdict::Fresh => {}
                Verdict::Duplicate => {
                    self.metrics.duplicates.inc();
                    // A retransmission of a held message: its `down/ack` waits for the disk.
                    let key = (msg.dev.clone(), msg.boot, msg.seq);
                    out.outcomes.push(if held.holds(&key) {
                        Outcome::Held
                    } else {
                        self.ack_for(&keys, &accepted.topic, msg, verified, payload)
                    });
                    continue;
                }
                Verdict::Replayed | Verdict::EarlierBoot | Verdict::RateLimited => {
                    let error = format!(
                        "{} (device {}, boot {}, seq {})",
                        verdict.reason(),
                        msg.dev,
                        msg.boot,
                        msg.seq
                    );
                    self.metrics.rejected(verdict.reason(), topic, &error);
                    out.outcomes.push(Outcome::Dropped);
                    continue;
                }
            }
            if let Some(skew) = msg.clock_skew(now_ms, &self.limits) {
                self.metrics.clock_skew(msg.dev.as_str(), skew);
            }
            let placement = directory.placement(&msg.dev);
            let registered = placement.is_some();
            let place = placement.unwrap_or(Placement {
                village: accepted.topic.village.as_str(),
                device_kind: "unregistered",
                ..Placement::default()
            });
            // Past the list's cap, further unknown ids share one series (`device=unlisted`), so
            // that invented ids cannot create a database series per message.
            let unlisted = !registered && !self.note_unknown(&accepted.topic, now_ms);
            line.clear();
            // The head is keyed by the topic's village and the device: within this directory's
            // generation they decide the placement tags (`placement` above).
            let device = if unlisted { UNLISTED } else { msg.dev.as_str() };
            let point = unplaced_uplink_point(msg, self.stamp(now_ms));
            let source = [accepted.topic.village.as_str(), device];
            if let Err(error) =
                point.encode_placed(&mut heads, &source, || placement_tags(&place, device), &mut line)
            {
                // Cannot happen for validated messages and registry tags; counted if it does.
                self.metrics.rejected("unencodable", topic, &error);
                out.outcomes.push(Outcome::Dropped);
                continue;
            }
            let appended_now = if held.is_sick() {
                false
            } else {
                match spool.append(class, now_ms, &line) {
                    Ok(Appended::Stored(_)) => true,
                    Ok(Appended::Dropped) => {
                        self.metrics.rejected("spool_full", topic, &"telemetry shed: the spool is full");
                        out.outcomes.push(Outcome::Dropped);
                        continue;
                    }
                    Err(error) => {
                        self.batch_failed(
                            &mut spool,
                            &mut held,
                            &error,
                            now_ms,
                            &mut out,
                            &mut appended,
                            &mut appended_telemetry,
                        );
                        durability = None;
                        false
                    }
                }
            };
            let key = Some((msg.dev.clone(), msg.boot, msg.seq));
            if appended_now {
                let needed = if class == Class::Telemetry { Durability::Os } else { Durability::Disk };
                durability = durability.max(Some(needed));
                let kind = msg.kind().as_str();
                if class == Class::Telemetry {
                    appended_telemetry.push((out.outcomes.len(), kind));
                } else {
                    let ack = owed(&accepted.topic, msg, verified, payload);
                    let record = HeldRecord { class, ts_ms: now_ms, line: line.clone(), key, ack };
                    appended.push((out.outcomes.len(), record, kind));
                }
                let ack = self.ack_for(&keys, &accepted.topic, msg, verified, payload);
                match (ack, owed(&accepted.topic, msg, verified, payload)) {
                    // Owed but not made (a full disk refused the downlink counter): made later.
                    (Outcome::Stored, Some(owed)) => {
                        unmade.push(owed);
                        out.outcomes.push(Outcome::Held);
                    }
                    (ack, _) => out.outcomes.push(ack),
                }
            } else if class == Class::Telemetry {
                // Shed, but still heard: liveness must not see a sick disk as silent devices.
                self.metrics.rejected("disk_unwritable", topic, &"telemetry shed: the spool cannot write");
                out.outcomes.push(Outcome::Dropped);
            } else {
                let ack = owed(&accepted.topic, msg, verified, payload);
                if held.push(HeldRecord { class, ts_ms: now_ms, line: line.clone(), key, ack }) {
                    out.outcomes.push(Outcome::Held);
                    self.metrics.accepted(msg.kind().as_str());
                } else {
                    // Handed to the alarm loop all the same; the device resends it (no
                    // `down/ack`), and a resend after the disk recovers is stored.
                    self.metrics.rejected("held_full", topic, &"held in memory beyond its bound: not stored");
                    out.outcomes.push(Outcome::Dropped);
                }
            }
            if !verified {
                self.metrics.unauthenticated(msg.kind().as_str(), msg.dev.as_str());
            }
            out.accepted.push(Accepted {
                topic: accepted.topic,
                msg: accepted.msg,
                accepted_ms: now_ms,
                registered,
            });
        }
        if let Some(durability) = durability {
            match spool.commit(durability) {
                Ok(()) => {
                    let kinds = appended.iter().map(|(_, _, kind)| *kind);
                    let mut counted: Vec<(&'static str, u64)> = Vec::new();
                    for kind in kinds.chain(appended_telemetry.iter().map(|(_, kind)| *kind)) {
                        match counted.iter_mut().find(|(k, _)| *k == kind) {
                            Some((_, n)) => *n += 1,
                            None => counted.push((kind, 1)),
                        }
                    }
                    counted.into_iter().for_each(|(kind, n)| self.metrics.accepted_n(kind, n));
                    unmade.into_iter().for_each(|owed| held.owe(owed));
                    self.stored(&held);
                    drop((spool, held));
                    self.wake_destinations.notify_waiters();
                    return Ok(out);
                }
                Err(error) => self.batch_failed(
                    &mut spool,
                    &mut held,
                    &error,
                    now_ms,
                    &mut out,
                    &mut appended,
                    &mut appended_telemetry,
                ),
            }
        }
        self.metrics.stores.set_held(Store::Spool, held.len() as u64);
        Ok(out)
    }

    /// A spool write failed mid-batch: what this batch appended is gone with the spool's
    /// buffer, so its alarm- and event-class records are held instead (their `down/ack`s
    /// withheld) and its telemetry is shed.
    #[allow(clippy::too_many_arguments)]
    fn batch_failed(
        &self,
        spool: &mut Spool,
        held: &mut Held,
        error: &SpoolError,
        now_ms: u64,
        out: &mut Processed,
        appended: &mut Vec<(usize, HeldRecord, &'static str)>,
        appended_telemetry: &mut Vec<(usize, &'static str)>,
    ) {
        self.spool_failed(spool, held, error, now_ms);
        for (index, record, kind) in appended.drain(..) {
            out.outcomes[index] = if held.push(record) {
                self.metrics.accepted(kind);
                Outcome::Held
            } else {
                self.metrics.rejected("held_full", "batch", &"held in memory beyond its bound: not stored");
                Outcome::Dropped
            };
        }
        for (index, _) in appended_telemetry.drain(..) {
            out.outcomes[index] = Outcome::Dropped;
            self.metrics.rejected("disk_unwritable", "batch", &"telemetry shed: the spool cannot write");
        }
    }

    /// The `down/ack` owed to a held message, now that it is durable.
    fn owed_ack(&self, keys: &KeyStore, owed: &OwedAck) -> Option<(String, Vec<u8>)> {
        let body = DownlinkBody::Ack { boot: owed.boot, seq: owed.seq };
        let keys = if owed.verified { keys } else { &KeyStore::empty() };
        self.command_with(keys, &owed.topic.village, &owed.topic.device, owed.boot, body, owed.encoding, 0)
    }

    /// The outcome of a stored (or duplicate) `msg`: for alarm and event classes its
    /// application-level acknowledgement, in the encoding the device used, signed when the
    /// message was (an unsigned message from a migrating device gets an unsigned, version-1
    /// acknowledgement its firmware can read).
    fn ack_for(
        &self,
        keys: &KeyStore,
        topic: &Topic,
        msg: &Uplink,
        verified: bool,
        payload: &[u8],
    ) -> Outcome {
        if !msg.class().is_acknowledged() {
            return Outcome::Stored;
        }
        let body = DownlinkBody::Ack { boot: msg.boot, seq: msg.seq };
        let encoding = Encoding::detect(payload);
        let ack = if verified {
            self.command_with(keys, &topic.village, &topic.device, msg.boot, body, encoding, 0)
        } else {
            self.command_with(&KeyStore::empty(), &topic.village, &topic.device, msg.boot, body, encoding, 0)
        };
        match ack {
            Some((ack_topic, ack_payload)) => Outcome::Accepted { ack_topic, ack_payload },
            None => Outcome::Stored,
        }
    }

    /// Counts a message from an unknown device and lists it; `false` when the list is full
    /// and the device is not on it.
    fn note_unknown(&self, topic: &Topic, now_ms: u64) -> bool {
        let mut unknown = self.unknown.lock().unwrap();
        let len = unknown.len();
        let listed = match unknown.get_mut(&topic.device) {
            Some(u) => {
                u.last_seen_ms = now_ms;
                u.messages += 1;
                true
            }
            None if len < UNKNOWN_LIST_CAP => {
                unknown.insert(
                    topic.device.clone(),
                    UnknownDevice {
                        device: topic.device.to_string(),
                        village: topic.village.to_string(),
                        first_seen_ms: now_ms,
                        last_seen_ms: now_ms,
                        messages: 1,
                    },
                );
                true
            }
            None => false,
        };
        let distinct = unknown.len();
        drop(unknown);
        self.metrics.unknown_device(topic.device.as_str(), distinct);
        listed
    }
}

/// A challenge nonce from the operating system's generator.
/// What a held alarm- or event-class `msg` is owed once durable (telemetry is owed nothing).
fn owed(topic: &Topic, msg: &Uplink, verified: bool, payload: &[u8]) -> Option<OwedAck> {
    msg.class().is_acknowledged().then(|| OwedAck {
        topic: topic.clone(),
        boot: msg.boot,
        seq: msg.seq,
        verified,
        encoding: Encoding::detect(payload),
    })
}

fn random_nonce() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system's random generator failed");
    u64::from_le_bytes(bytes)
}

/// Spool records read back on start to seed duplicate detection: more than the broker can
/// have in flight for the gateway when it stops (its inflight window, at most a few
/// thousand), so every message stored but not acknowledged is among them.
const RECENT_ON_START: usize = 20_000;

/// Feeds the `(device, boot, seq)` of stored points to the admission window.
fn remember_recent(admission: &mut Admission, records: &[crate::spool::Record], now_ms: u64) -> usize {
    let mut n = 0;
    for record in records {
        let Ok(text) = std::str::from_utf8(&record.payload) else { continue };
        for line in parse_lines(text).flatten() {
            let device = line.tag_value("device").and_then(|d| DeviceId::new(d.as_str()).ok());
            let int = |k| match line.field_value(k) {
                Some(FieldValue::I64(v)) => Some(*v),
                _ => None,
            };
            if let (Some(device), Some(boot), Some(seq)) = (device, int("boot"), int("seq")) {
                // Only messages stored as verified may seed the authenticated window.
                if int("signed") == Some(1) {
                    admission.remember(&device, boot as u16, seq as u32, now_ms);
                } else {
                    admission.remember_unauthenticated(&device, boot as u16, seq as u32, now_ms);
                }
                n += 1;
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use firegrid_protocol::{DetectorState, Fault, FaultKind, Heartbeat, StateChange, UplinkBody};

    use super::*;
    use crate::spool::SpoolConfig;

    const NOW: u64 = 1_763_860_000_000;

    #[test]
    fn a_backlog_is_assumed_only_after_a_full_batch_and_ends_after_its_linger() {
        let backlog = Backlog::default();
        assert!(!backlog.busy(), "no backlog before any full batch");
        backlog.note_full_batch();
        assert!(backlog.busy(), "a full batch means more are queued");
        // At least LINGER later (a sleep never returns early), with no full batch since.
        std::thread::sleep(Backlog::LINGER + std::time::Duration::from_millis(20));
        assert!(!backlog.busy(), "the backlog ends once the batches are no longer full");
    }

    fn ingest(dir: &std::path::Path) -> (Ingest, Arc<Mutex<Spool>>, Arc<Metrics>) {
        let spool = Arc::new(Mutex::new(Spool::open(SpoolConfig::new(dir), &["db"]).unwrap()));
        let metrics = Arc::new(Metrics::new());
        let ingest = Ingest::new(
            spool.clone(),
            Arc::new(Notify::new()),
            AdmissionConfig::default(),
            Limits::default(),
            metrics.clone(),
            NOW,
        )
        .unwrap();
        (ingest, spool, metrics)
    }

    fn alarm(dev: &str, seq: u32, enc: Encoding) -> Vec<u8> {
        let msg = Uplink::new(
            DeviceId::new(dev).unwrap(),
            1,
            seq,
            NOW,
            UplinkBody::State(StateChange { state: DetectorState::Alarm, obscuration_db_m: 0.3 }),
        );
        msg.encode(enc, &mut [0u8; 512]).unwrap().to_vec()
    }

    fn heartbeat(dev: &str, seq: u32) -> Vec<u8> {
        let body = UplinkBody::Heartbeat(Heartbeat {
            battery_mv: Some(3000),
            signal_dbm: -90,
            chamber_baseline: None,
            drift_pct: None,
            temperature_c: 20.0,
            firmware: heapless::String::try_from("1.0").unwrap(),
            uptime_s: 5,
        });
        let msg = Uplink::new(DeviceId::new(dev).unwrap(), 1, seq, NOW, body);
        msg.encode(Encoding::Json, &mut [0u8; 512]).unwrap().to_vec()
    }

    fn kinds(outcomes: &[Outcome]) -> Vec<&'static str> {
        outcomes
            .iter()
            .map(|o| match o {
                Outcome::Accepted { .. } => "accepted",
                Outcome::Stored => "stored",
                Outcome::Dropped => "dropped",
                Outcome::Held => "held",
                Outcome::Challenged { .. } => "challenged",
            })
            .collect()
    }

    fn fault(dev: &str, seq: u32) -> Vec<u8> {
        let body = UplinkBody::Fault(Fault { fault: FaultKind::Tamper, active: true });
        let msg = Uplink::new(DeviceId::new(dev).unwrap(), 1, seq, NOW, body);
        msg.encode(Encoding::Json, &mut [0u8; 512]).unwrap().to_vec()
    }

    #[test]
    fn a_batch_is_stored_acknowledged_and_rejected_message_by_message() {
        let dir = tempfile::tempdir().unwrap();
        let (ingest, spool, metrics) = ingest(dir.path());
        let a = alarm("sd-1", 0, Encoding::Compact);
        let hb = heartbeat("sd-2", 0);
        let batch: Vec<(&str, &[u8])> = vec![
            ("fg/v1/v/sd-1/up/state", &a),
            ("fg/v1/v/sd-2/up/heartbeat", &hb),
            ("fg/v1/v/sd-1/up/state", &a),     // a retransmission
            ("fg/v1/v/sd-9/up/state", &a),     // spoofed: topic says sd-9
            ("fg/v1/v/sd-1/up/state", b"{{{"), // malformed
        ];
        let out = ingest.process(&batch, NOW).unwrap();
        assert_eq!(kinds(&out.outcomes), ["accepted", "stored", "accepted", "dropped", "dropped"]);
        assert_eq!(out.accepted.len(), 2, "the duplicate is acknowledged but not handed on");
        let Outcome::Accepted { ack_topic, ack_payload } = &out.outcomes[0] else { unreachable!() };
        assert_eq!(ack_topic, "fg/v1/v/sd-1/down/ack");
        let ack = Downlink::receive(ack_payload, &Limits::default()).unwrap();
        assert_eq!(ack.body, DownlinkBody::Ack { boot: 1, seq: 0 });
        assert_eq!(Encoding::detect(ack_payload), Encoding::Compact, "answered in the device's encoding");

        let stored = spool.lock().unwrap().read("db", 100, usize::MAX).unwrap();
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[0].class, Class::Alarm);
        let text = String::from_utf8(stored[0].payload.clone()).unwrap();
        assert!(
            text.starts_with("detector_state,device=sd-1,device_kind=unregistered,state=alarm,village=v "),
            "{text}"
        );
        let m = metrics.encode();
        assert!(m.contains(r#"firegrid_messages_rejected_total{reason="device_mismatch"} 1"#), "{m}");
        assert!(m.contains(r#"firegrid_messages_rejected_total{reason="malformed"} 1"#), "{m}");
        assert!(m.contains("firegrid_messages_duplicate_total 1"), "{m}");
        assert_eq!(ingest.unknown_devices().len(), 2);
    }

    #[test]
    fn alarms_and_events_get_a_down_ack_telemetry_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let (ingest, spool, _) = ingest(dir.path());
        let (a, f, hb) = (alarm("sd-1", 0, Encoding::Json), fault("sd-1", 1), heartbeat("sd-1", 2));
        let batch: Vec<(&str, &[u8])> = vec![
            ("fg/v1/v/sd-1/up/heartbeat", &hb),
            ("fg/v1/v/sd-1/up/state", &a),
            ("fg/v1/v/sd-1/up/fault", &f),
            ("fg/v1/v/sd-1/up/heartbeat", &hb), // a duplicate heartbeat: still no down/ack
        ];
        let out = ingest.process(&batch, NOW).unwrap();
        assert_eq!(kinds(&out.outcomes), ["stored", "accepted", "accepted", "stored"]);
        let acked: Vec<_> = out
            .outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Accepted { ack_topic, ack_payload } => Some((
                    ack_topic.as_str(),
                    Downlink::receive(ack_payload, &Limits::default()).unwrap().body,
                )),
                _ => None,
            })
            .collect();
        assert_eq!(
            acked,
            [
                ("fg/v1/v/sd-1/down/ack", DownlinkBody::Ack { boot: 1, seq: 0 }),
                ("fg/v1/v/sd-1/down/ack", DownlinkBody::Ack { boot: 1, seq: 1 }),
            ]
        );
        assert_eq!(out.accepted.len(), 3, "the heartbeat is stored and handed on like the others");
        assert_eq!(spool.lock().unwrap().read("db", 100, usize::MAX).unwrap().len(), 3);
    }

    #[test]
    fn stored_messages_are_duplicates_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let a = alarm("sd-1", 5, Encoding::Json);
        {
            let (ingest, _, _) = ingest(dir.path());
            let out = ingest.process(&[("fg/v1/v/sd-1/up/state", &a)], NOW).unwrap();
            assert_eq!(out.accepted.len(), 1);
        }
        let (ingest, spool, _) = ingest(dir.path());
        let out = ingest.process(&[("fg/v1/v/sd-1/up/state", &a)], NOW + 1_000).unwrap();
        assert_eq!(kinds(&out.outcomes), ["accepted"], "acknowledged again");
        assert!(out.accepted.is_empty(), "but not stored twice");
        assert_eq!(spool.lock().unwrap().read("db", 100, usize::MAX).unwrap().len(), 1);
    }

    #[test]
    fn timestamps_are_unique_even_within_a_millisecond() {
        let dir = tempfile::tempdir().unwrap();
        let (ingest, _, _) = ingest(dir.path());
        let stamps: Vec<_> = (0..5).map(|_| ingest.stamp(NOW)).collect();
        assert_eq!(stamps, (0..5).map(|i| NOW as i64 * 1_000_000 + i).collect::<Vec<_>>());
        assert!(ingest.stamp(NOW + 1) > stamps[4]);
    }

    // ---- Authentication (issue "Trust") ----

    fn key() -> firegrid_protocol::DeviceKey {
        firegrid_protocol::DeviceKey::from_bytes([0x42; 32])
    }

    fn keyed_ingest(dir: &std::path::Path, accept_unsigned: bool) -> (Ingest, Arc<Metrics>) {
        let (ingest, _, metrics) = ingest(dir);
        let mut keys = KeyStore::empty();
        let mut entry = crate::keys::DeviceKeys::new(key());
        entry.accept_unsigned = accept_unsigned;
        keys.insert(DeviceId::new("sd-1").unwrap(), entry);
        ingest.set_keys(Arc::new(keys));
        (ingest, metrics)
    }

    fn signed(boot: u16, seq: u32, body: UplinkBody) -> Vec<u8> {
        let mut msg = Uplink::new(DeviceId::new("sd-1").unwrap(), boot, seq, NOW, body);
        msg.sign(&VillageId::new("v").unwrap(), &key());
        msg.encode(Encoding::Compact, &mut [0u8; 512]).unwrap().to_vec()
    }

    fn signed_alarm(boot: u16, seq: u32) -> Vec<u8> {
        signed(
            boot,
            seq,
            UplinkBody::State(StateChange { state: DetectorState::Alarm, obscuration_db_m: 0.3 }),
        )
    }

    /// An unsigned heartbeat in sd-1's name, as anyone on the broker can send.
    fn forged_heartbeat(seq: u32) -> Vec<u8> {
        heartbeat("sd-1", seq)
    }

    fn rejected(metrics: &Metrics, reason: &'static str) -> u64 {
        metrics.counts().rejected.get(reason).copied().unwrap_or(0)
    }

    #[test]
    fn a_forged_heartbeat_cannot_silence_a_keyed_detector() {
        for accept_unsigned in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (ingest, metrics) = keyed_ingest(dir.path(), accept_unsigned);
            let first = signed_alarm(1, 0);
            let out = ingest.process(&[("fg/v1/v/sd-1/up/state", &first)], NOW).unwrap();
            assert_eq!(kinds(&out.outcomes), ["accepted"]);
            // The attack: a heartbeat for the same boot with a huge sequence number.
            let forged = forged_heartbeat(4_000_000_000);
            let out = ingest.process(&[("fg/v1/v/sd-1/up/heartbeat", &forged)], NOW).unwrap();
            if accept_unsigned {
                assert_eq!(out.accepted.len(), 1, "a migrating device's unsigned messages are accepted");
                assert_eq!(
                    metrics
                        .unauthenticated
                        .get_or_create(&crate::metrics::KindLabel { kind: "heartbeat".into() })
                        .get(),
                    1
                );
            } else {
                assert_eq!(kinds(&out.outcomes), ["dropped"]);
                assert_eq!(rejected(&metrics, "unsigned"), 1);
            }
            // Signed with another key, or the real device's message with one bit changed.
            let mut other = Uplink::receive(&signed_alarm(1, 1), &Limits::default()).unwrap();
            other.sign(&VillageId::new("v").unwrap(), &firegrid_protocol::DeviceKey::from_bytes([1; 32]));
            let other = other.encode(Encoding::Json, &mut [0u8; 512]).unwrap().to_vec();
            let mut flipped = signed_alarm(1, 1);
            let last = flipped.len() - 1;
            flipped[last] ^= 1;
            let out = ingest
                .process(&[("fg/v1/v/sd-1/up/state", &other), ("fg/v1/v/sd-1/up/state", &flipped)], NOW)
                .unwrap();
            assert_eq!(kinds(&out.outcomes), ["dropped", "dropped"]);
            assert_eq!(rejected(&metrics, "bad_signature"), 2);
            // The detector's real alarm that follows opens its case.
            let real = signed_alarm(1, 1);
            let out = ingest.process(&[("fg/v1/v/sd-1/up/state", &real)], NOW).unwrap();
            assert_eq!(out.accepted.len(), 1, "accept_unsigned={accept_unsigned}");
            // Its acknowledgement is signed for the detector, which admits it once.
            let Outcome::Accepted { ack_payload, .. } = &out.outcomes[0] else {
                panic!("{:?}", out.outcomes)
            };
            let ack = Downlink::receive(ack_payload, &Limits::default()).unwrap();
            let mut guard = firegrid_protocol::DownlinkGuard::new();
            let (village, device) = (VillageId::new("v").unwrap(), DeviceId::new("sd-1").unwrap());
            assert_eq!(guard.admit(&ack, &village, &device, 1, &key()), Ok(()));
            assert_eq!(ack.body, DownlinkBody::Ack { boot: 1, seq: 1 });
        }
    }

    #[test]
    fn unsigned_devices_get_version_1_commands_and_a_window_that_cannot_be_poisoned() {
        let dir = tempfile::tempdir().unwrap();
        let (ingest, _, _) = ingest(dir.path());
        let forged = forged_heartbeat(4_000_000_000);
        let a = alarm("sd-1", 3, Encoding::Json);
        let out = ingest
            .process(&[("fg/v1/v/sd-1/up/heartbeat", &forged), ("fg/v1/v/sd-1/up/state", &a)], NOW)
            .unwrap();
        assert_eq!(out.accepted.len(), 2, "the keyless detector's alarm is not taken for a replay");
        let Outcome::Accepted { ack_payload, .. } = &out.outcomes[1] else { panic!() };
        let ack = Downlink::receive(ack_payload, &Limits::default()).unwrap();
        assert_eq!((ack.v, ack.auth), (1, None), "version-1 firmware can read it");
        let out = ingest.process(&[("fg/v1/v/sd-1/up/state", &a)], NOW).unwrap();
        assert!(out.accepted.is_empty(), "its retransmission is still a duplicate");
    }

    #[test]
    fn a_reflashed_detector_is_challenged_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let (ingest, metrics) = keyed_ingest(dir.path(), false);
        let before = signed_alarm(57, 9);
        assert_eq!(ingest.process(&[("fg/v1/v/sd-1/up/state", &before)], NOW).unwrap().accepted.len(), 1);
        // Reflashed: boot 1. Its signed alarm looks like a replay and is answered with a challenge.
        let after = signed_alarm(1, 0);
        let out = ingest.process(&[("fg/v1/v/sd-1/up/state", &after)], NOW).unwrap();
        let Outcome::Challenged { topic, payload } = &out.outcomes[0] else { panic!("{:?}", out.outcomes) };
        assert_eq!(topic, "fg/v1/v/sd-1/down/challenge");
        assert_eq!(rejected(&metrics, "earlier_boot"), 1);
        let challenge = Downlink::receive(payload, &Limits::default()).unwrap();
        let (village, device) = (VillageId::new("v").unwrap(), DeviceId::new("sd-1").unwrap());
        assert_eq!(challenge.verify(&village, &device, &key()), Ok(1), "issued for the device's new boot");
        let DownlinkBody::Challenge { nonce } = challenge.body else { panic!() };
        // A wrong answer changes nothing; the right one restarts the window.
        let wrong = signed(1, 1, UplinkBody::Boot(firegrid_protocol::BootAnnouncement { nonce: nonce ^ 1 }));
        assert!(ingest.process(&[("fg/v1/v/sd-1/up/boot", &wrong)], NOW).unwrap().accepted.is_empty());
        let answer = signed(1, 2, UplinkBody::Boot(firegrid_protocol::BootAnnouncement { nonce }));
        assert_eq!(ingest.process(&[("fg/v1/v/sd-1/up/boot", &answer)], NOW).unwrap().accepted.len(), 1);
        let resent = signed_alarm(1, 3);
        assert_eq!(ingest.process(&[("fg/v1/v/sd-1/up/state", &resent)], NOW).unwrap().accepted.len(), 1);
    }

    #[test]
    fn only_verified_records_seed_the_window_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (ingest, _) = keyed_ingest(dir.path(), true);
            let forged = forged_heartbeat(4_000_000_000);
            let real = signed_alarm(1, 5);
            let out = ingest
                .process(&[("fg/v1/v/sd-1/up/heartbeat", &forged), ("fg/v1/v/sd-1/up/state", &real)], NOW)
                .unwrap();
            assert_eq!(out.accepted.len(), 2);
        }
        let (ingest, _) = keyed_ingest(dir.path(), true);
        let real = signed_alarm(1, 5);
        let out = ingest.process(&[("fg/v1/v/sd-1/up/state", &real)], NOW).unwrap();
        assert!(out.accepted.is_empty(), "the signed alarm's redelivery is a duplicate");
        let next = signed_alarm(1, 6);
        assert_eq!(ingest.process(&[("fg/v1/v/sd-1/up/state", &next)], NOW).unwrap().accepted.len(), 1);
    }
}
