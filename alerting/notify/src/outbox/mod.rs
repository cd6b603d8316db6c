//! The durable outbox: every (notification, channel) pair is a row in SQLite until it is
//! delivered or given up, so a notification survives a failing robot, a restart and `kill -9`.
//!
//! - [`Outbox`]: open, [`enqueue`](Outbox::enqueue) (idempotent), and the queries for metrics
//!   and the API.
//! - [`run`]: the delivery worker, which reports every attempt as a [`DeliveryReport`].
//! - [`policy`]: when to retry, as a pure function.
//! - [`schedule`]: which due deliveries to start now, as a pure function.
//! - [`limit`]: a channel's [`RateLimit`] and the window enforcing it, as plain data.
//! - [`store`]: the table and its synchronous SQL.
//!
//! Fire first. A robot takes about 20 messages a minute; a burst of fault reminders must not
//! hold a fire page behind that limit. Three rules see to it:
//!
//! - **Severity order per channel.** Each channel sends its most urgent due delivery first:
//!   fire, pre-alarm, water, communication loss, offline, fault (the engine's order), then
//!   anything else (`test`); oldest first within a severity. Each row stores its
//!   [`store::priority`]; retries keep theirs.
//! - **Rate limits with a reserve.** A channel with a [`RateLimit`] (WeCom and DingTalk 20 a
//!   minute, Feishu 5 in 3 s by default, none for webhooks and SMS unless configured) sends at
//!   most `messages` in any window of `per`, and routine pages stop at `messages - reserve`:
//!   the last slots of every window are kept for fire and pre-alarm pages, so one goes out at
//!   once even while hundreds of faults wait. A delivery held back by the limit is not an
//!   attempt and not a failure: its row is left as it is. A platform's own refusal (HTTP 429,
//!   WeCom 45009, DingTalk 130101, Feishu 11232/9499) is still a retryable failure, with
//!   backoff. The windows live in memory; at start each counts again the deliveries its
//!   channel accepted within the last window (from the table), so a restart does not hand a
//!   robot a second full window.
//! - **Reminders collapse.** A reminder ("still unacknowledged") enqueued for a case, desk
//!   and channel supersedes that desk's older reminders still pending on that channel: they
//!   are marked `superseded` (kept in the history with the newer one's id, counted, never
//!   sent, and reported as [`Outcome::Superseded`]). First pages, confirmations and
//!   escalations are never superseded.
//!
//! Delivery is at least once: a crash between a channel accepting a message and the row being
//! marked delivered sends it again after the restart. Duplicates of a fire alarm are harmless;
//! a lost one is not.
//!
//! A sick disk (full, read-only, failing): when a write to the file fails for a disk reason,
//! the table is copied into an in-memory SQLite database and every call goes there, so
//! pages are still queued, delivered and recorded; once a second, the memory table is
//! written back to the file, and when that works the file is used again. Nothing is paged
//! twice: delivered rows go back to the file as delivered. A restart while the disk is sick
//! loses the memory table; the alarm loop's replay queues the notifications again (and
//! the case store holds its inputs in memory the same way, see the case service).
//!
//! Threading: every SQLite call blocks on the disk (an fsync per commit with
//! `synchronous = FULL`, 1 to 20 ms on flash) and runs on tokio's blocking pool through
//! `spawn_blocking`, serialised by one mutex around one connection. The outbox sees a few
//! writes per alarm, far below what one connection sustains, and one connection keeps the
//! transactions simple; a dedicated thread would only save the hand-off (microseconds), which
//! is noise beside the fsync.

pub mod config;
pub mod limit;
pub mod policy;
pub mod schedule;
pub mod store;
#[cfg(test)]
mod tests;
mod worker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use firegrid_base::durability::StoreHealth;
use tokio::sync::Notify;

pub use config::DeliveryConfig;
pub use limit::RateLimit;
pub use store::{DeliveryKey, Depth, HistoryEntry, Pending, SharedTable, Status, Store};
pub use worker::run;

use super::Message;

/// A failure of the outbox itself (not of a delivery).
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// SQLite refused.
    #[error("outbox database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file is not an outbox this version can use.
    #[error("outbox database: {0}")]
    Schema(String),
    /// The outbox's directory cannot be created.
    #[error("cannot create {0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    /// A message could not be stored.
    #[error("cannot encode a message: {0}")]
    Encode(#[source] serde_json::Error),
    /// The blocking task running a database call failed (panicked or was cancelled).
    #[error("outbox database task failed: {0}")]
    Task(String),
    /// The shared table ([`store::SharedTable`]) cannot be reached or refused a write: the
    /// outbox goes on in memory, as on a full disk, and writes its rows back once it answers.
    #[error("shared outbox {database}: {message}")]
    Unavailable {
        /// Where (never a password).
        database: String,
        /// What failed, with its causes.
        message: String,
    },
    /// Another gateway holds the case store, and with it the shared outbox: this one's epoch
    /// is past, and it must not write.
    #[error(
        "shared outbox {database}: another gateway holds the case store (epoch {current}, this gateway's {epoch})"
    )]
    Fenced {
        /// Where.
        database: String,
        /// This gateway's epoch.
        epoch: u64,
        /// The stored one.
        current: u64,
    },
}

/// What happened to one attempt of one delivery; sent for every attempt, and once for a
/// delivery superseded before its attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The notification.
    pub notification_id: u64,
    /// Its case.
    pub case_id: u64,
    /// The channel name.
    pub target: String,
    /// How it went.
    pub outcome: Outcome,
}

/// The outcome of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The channel accepted the message on attempt `attempt`.
    Delivered {
        /// 1 for the first attempt.
        attempt: u32,
    },
    /// Attempt `attempt` failed. Sent at once, also on the first failure, so the engine can
    /// escalate without waiting for retries.
    Failed {
        /// What went wrong.
        error: String,
        /// [`SendError::reason`](crate::SendError::reason), for metrics.
        reason: &'static str,
        /// Whether it will be retried (unless [`Outcome::GaveUp`] follows).
        retryable: bool,
        /// 1 for the first attempt.
        attempt: u32,
    },
    /// The delivery is given up (permanent failure or maximum age); follows the last
    /// [`Outcome::Failed`].
    GaveUp {
        /// Attempts made.
        attempts: u32,
    },
    /// The delivery (a reminder) was superseded by a newer reminder for the same case and
    /// desk on the same channel, and will not be made; the newer one reports for that channel.
    Superseded {
        /// The newer reminder.
        by: u64,
    },
}

/// The outbox. Cheap to clone; clones share one database connection and one wake-up signal.
#[derive(Debug, Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

/// Counts since the outbox was opened, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Deliveries held back by their channel's rate limit, by channel; a delivery is counted
    /// when it starts waiting, not again for each round of the worker it keeps waiting (a
    /// round with no free delivery slot does not look at the limits, and a delivery still
    /// waiting after one is counted anew).
    pub held: BTreeMap<String, u64>,
    /// Reminders superseded by a newer one.
    pub superseded: u64,
}

#[derive(Debug)]
struct Inner {
    store: Mutex<Stores>,
    /// Where the outbox says that its file cannot be written.
    health: OnceLock<Arc<StoreHealth>>,
    stats: Mutex<Stats>,
    /// Reports of superseded deliveries, for the worker to send with the others.
    superseded: Mutex<Vec<DeliveryReport>>,
    /// Signalled by [`Outbox::enqueue`] so the worker starts delivering at once instead of at
    /// its next timer: alarm latency is the point of the outbox.
    wake: Notify,
    /// The file, or the shared table's database.
    location: String,
    /// Whether deliveries may be sent now ([`Outbox::gated`]); unset, always.
    gate: OnceLock<Gate>,
}

/// The gate, shown by name only.
struct Gate(SendGate);

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate")
    }
}

/// Whether this process may send pages now: false on a gateway that is no longer its
/// village's active one (its lease on the case store ran out). Checked before every attempt.
pub type SendGate = Arc<dyn Fn() -> bool + Send + Sync>;

/// How often a memory table is written back to the file.
const BACK_TO_DISK_EVERY: Duration = Duration::from_secs(1);

/// The file, and the memory table while the file cannot be written.
#[derive(Debug)]
struct Stores {
    disk: Store,
    /// The memory table, and when writing it back was last tried.
    memory: Option<(Store, Instant)>,
}

/// Whether `error` says that the disk cannot take writes now (rather than a bug or a
/// corrupt file): full, read-only, an I/O error, or a file it cannot open.
/// A shared table that cannot be reached counts as such a disk.
fn is_disk_error(error: &OutboxError) -> bool {
    use rusqlite::ErrorCode::*;
    match error {
        OutboxError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
            matches!(e.code, DiskFull | ReadOnly | SystemIoFailure | CannotOpen)
        }
        OutboxError::Unavailable { .. } => true,
        _ => false,
    }
}

impl Stores {
    /// Runs `f` where the table is now, moving it to memory when the file fails and back
    /// when the file takes writes again.
    fn call<T>(
        &mut self,
        f: &impl Fn(&mut Store) -> Result<T, OutboxError>,
        health: Option<&StoreHealth>,
    ) -> Result<T, OutboxError> {
        use firegrid_base::durability::Store as Which;
        if let Some((memory, tried)) = &mut self.memory
            && tried.elapsed() >= BACK_TO_DISK_EVERY
        {
            *tried = Instant::now();
            if memory.export_rows().and_then(|rows| self.disk.import_rows(&rows)).is_ok() {
                tracing::warn!("Notification outbox rows held in memory are written to its table again.");
                self.memory = None;
                if let Some(h) = health {
                    h.recovered(Which::Outbox);
                    h.set_held(Which::Outbox, 0);
                }
            }
        }
        if let Some((memory, _)) = &mut self.memory {
            let result = f(memory);
            if let Some(h) = health {
                h.set_held(Which::Outbox, memory.pending_count().unwrap_or(0));
            }
            return result;
        }
        match f(&mut self.disk) {
            Err(error) if is_disk_error(&error) => {
                if let Some(h) = health {
                    h.failed(Which::Outbox, &error);
                }
                // Reading still works on a full or read-only disk: the memory table starts as
                // a copy of the file, so the history and idempotency stay whole.
                let mut memory = Store::open_memory()?;
                memory.import_rows(&self.disk.export_rows()?)?;
                let result = f(&mut memory);
                self.memory = Some((memory, Instant::now()));
                result
            }
            other => other,
        }
    }
}

impl Outbox {
    /// Opens or creates the outbox file at `path` (WAL, `synchronous = FULL`). Blocking: call
    /// it at start, or through `spawn_blocking`.
    pub fn open(path: &Path) -> Result<Outbox, OutboxError> {
        let store = Store::open(path)?;
        Ok(Outbox::with(store, path.display().to_string()))
    }

    /// Opens the outbox on a table shared with the village's other gateway (the case store's
    /// PostgreSQL database, see [`store::SharedTable`]), loading it into memory. Blocking.
    pub fn open_shared(table: Box<dyn store::SharedTable>) -> Result<Outbox, OutboxError> {
        let location = table.describe();
        Ok(Outbox::with(Store::open_shared(table)?, location))
    }

    fn with(store: Store, location: String) -> Outbox {
        Outbox {
            inner: Arc::new(Inner {
                store: Mutex::new(Stores { disk: store, memory: None }),
                health: OnceLock::new(),
                stats: Mutex::default(),
                superseded: Mutex::default(),
                wake: Notify::new(),
                location,
                gate: OnceLock::new(),
            }),
        }
    }

    /// Reports a file that cannot be written to `health`, the stores' write health that
    /// `/healthz` and `/metrics` show.
    pub fn report_to(self, health: Arc<StoreHealth>) -> Outbox {
        let _ = self.inner.health.set(health);
        self
    }

    /// Sends nothing while `gate` says no: the worker checks it before each round and again
    /// right before each attempt, and a delivery it holds back is no attempt (nothing is
    /// recorded; it stays pending).
    pub fn gated(self, gate: SendGate) -> Outbox {
        let _ = self.inner.gate.set(Gate(gate));
        self
    }

    /// Whether the gate ([`Outbox::gated`]) lets deliveries go now.
    pub(crate) fn may_send(&self) -> bool {
        self.inner.gate.get().is_none_or(|gate| (gate.0)())
    }

    /// Where the table is: the file, or the shared table's database.
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    /// Queues `msg` for each of `targets` (channel names) and wakes the worker; returns how
    /// many deliveries are new. Idempotent per (notification id, target): the engine replays
    /// its log after a restart and emits the same notifications again, and those must not be
    /// sent twice, delivered or not. A new reminder supersedes the same desk's older pending
    /// reminders of the case on the same channels. Durable when it returns.
    pub async fn enqueue(&self, msg: &Message, targets: &[String]) -> Result<usize, OutboxError> {
        let (id, case_id) = (msg.notification_id, msg.case_id);
        let (msg, targets) = (msg.clone(), targets.to_vec());
        let now = super::unix_ms();
        let done = self.call(move |store| store.enqueue(&msg, &targets, now)).await?;
        if !done.superseded.is_empty() {
            self.stats_mut().superseded += done.superseded.len() as u64;
            tracing::info!(
                notification_id = id,
                case_id,
                superseded = done.superseded.len(),
                "Older reminders superseded by a newer one; they will not be sent."
            );
            let reports = done.superseded.into_iter().map(|key| DeliveryReport {
                notification_id: key.notification_id,
                case_id,
                target: key.target,
                outcome: Outcome::Superseded { by: id },
            });
            self.inner.superseded.lock().unwrap_or_else(PoisonError::into_inner).extend(reports);
        }
        if done.inserted > 0 {
            self.inner.wake.notify_one();
        }
        Ok(done.inserted)
    }

    /// Pending deliveries by channel and severity.
    pub async fn depth(&self) -> Result<Vec<Depth>, OutboxError> {
        self.call(|store| store.depth()).await
    }

    /// Counts since the outbox was opened.
    pub fn stats(&self) -> Stats {
        self.stats_mut().clone()
    }

    /// The reports of superseded deliveries not yet sent.
    fn take_superseded(&self) -> Vec<DeliveryReport> {
        std::mem::take(&mut *self.inner.superseded.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn stats_mut(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.inner.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Deliveries not yet delivered nor given up.
    pub async fn pending_count(&self) -> Result<u64, OutboxError> {
        self.call(|store| store.pending_count()).await
    }

    /// Deliveries given up, within retention.
    pub async fn dead_count(&self) -> Result<u64, OutboxError> {
        self.call(|store| store.dead_count()).await
    }

    /// Enqueue time (Unix ms) of the oldest pending delivery: the outbox's backlog age.
    pub async fn oldest_pending_ms(&self) -> Result<Option<u64>, OutboxError> {
        self.call(|store| store.oldest_pending_ms()).await
    }

    /// Every delivery of a case, for the console.
    pub async fn history(&self, case_id: u64) -> Result<Vec<HistoryEntry>, OutboxError> {
        self.call(move |store| store.history(case_id)).await
    }

    /// Deletes delivered and given-up deliveries finished before `older_than_ms` (the worker
    /// does this by itself per [`DeliveryConfig::retention`]).
    pub async fn prune(&self, older_than_ms: u64) -> Result<usize, OutboxError> {
        self.call(move |store| store.prune(older_than_ms)).await
    }

    /// Runs `f` on the store on the blocking pool (twice when the file refuses a write: the
    /// failed transaction rolled back, and `f` runs again on the memory table).
    async fn call<T: Send + 'static>(
        &self,
        f: impl Fn(&mut Store) -> Result<T, OutboxError> + Send + 'static,
    ) -> Result<T, OutboxError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            // A panic inside a call leaves no half-done transaction (it rolls back on drop),
            // so the store stays usable after a poisoned lock.
            let mut stores = inner.store.lock().unwrap_or_else(PoisonError::into_inner);
            stores.call(&f, inner.health.get().map(|h| &**h))
        })
        .await
        .map_err(|e| OutboxError::Task(e.to_string()))?
    }
}
