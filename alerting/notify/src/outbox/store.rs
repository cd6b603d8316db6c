//! The outbox table in SQLite: one row per (notification, channel), synchronous calls.
//!
//! Each row carries its severity's [`priority`] (so [`Store::due`] can hand the worker each
//! channel's most urgent due deliveries first) and, for a reminder, the desk it reminds (so a
//! newer reminder for the same case, desk and channel supersedes an older one still pending).
//!
//! Durability: WAL journal with `synchronous = FULL`, so a committed enqueue survives power
//! loss, not only `kill -9` (with `NORMAL`, WAL commits since the last checkpoint may be lost
//! on power failure). Every call here blocks on the disk; [`super::Outbox`] runs them off the
//! async threads.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::OutboxError;
use crate::Message;

/// Version of the schema below, in `PRAGMA user_version`; a file of a later version is
/// refused rather than misread, a file of version 1 is migrated (see [`migrate_v1`]).
///
/// - 1: the table keyed by (notification, target), due-time order.
/// - 2: `priority`, `severity` and `reminder_desk` columns, the `superseded` status and the
///   `superseded_by` column.
const SCHEMA_VERSION: i64 = 2;

/// Ids and times are `u64` in Rust and `INTEGER` (i64) in SQLite: ids are stored as the same
/// 64 bits (an id above `i64::MAX` reads back unchanged), times in ms fit as they are.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS delivery (
    notification_id INTEGER NOT NULL,
    target          TEXT    NOT NULL,
    case_id         INTEGER NOT NULL,
    message         TEXT    NOT NULL,
    status          TEXT    NOT NULL
                    CHECK (status IN ('pending', 'delivered', 'dead', 'superseded')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    enqueued_ms     INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL,
    last_error      TEXT,
    finished_ms     INTEGER,
    priority        INTEGER NOT NULL DEFAULT 0,
    severity        TEXT    NOT NULL DEFAULT '',
    reminder_desk   TEXT,
    superseded_by   INTEGER,
    PRIMARY KEY (notification_id, target)
);
CREATE INDEX IF NOT EXISTS delivery_due ON delivery (next_attempt_ms) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS delivery_queue ON delivery (target, priority DESC, enqueued_ms)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS delivery_reminder ON delivery (case_id, target, reminder_desk)
    WHERE status = 'pending' AND reminder_desk IS NOT NULL;
CREATE INDEX IF NOT EXISTS delivery_case ON delivery (case_id);
CREATE INDEX IF NOT EXISTS delivery_finished ON delivery (finished_ms) WHERE status != 'pending';
";

/// The table's rows, column by column, as [`Store::export_rows`] reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    /// The columns' names.
    pub columns: Vec<String>,
    /// The rows, in the columns' order.
    pub rows: Vec<Vec<rusqlite::types::Value>>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not delivered yet; will be (re)tried at `next_attempt_ms`.
    Pending,
    /// The channel accepted it.
    Delivered,
    /// Given up: a permanent failure, or still failing at the maximum age.
    Dead,
    /// A reminder replaced by a newer reminder for the same case, desk and channel before it
    /// was sent; never delivered.
    Superseded,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Delivered => "delivered",
            Status::Dead => "dead",
            Status::Superseded => "superseded",
        }
    }

    fn parse(text: &str) -> Status {
        match text {
            "delivered" => Status::Delivered,
            "dead" => Status::Dead,
            "superseded" => Status::Superseded,
            // The CHECK constraint admits nothing else.
            _ => Status::Pending,
        }
    }
}

/// Identifies one delivery: a notification to one channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryKey {
    /// The notification.
    pub notification_id: u64,
    /// The channel name.
    pub target: String,
}

/// A delivery waiting to be made.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// Which.
    pub key: DeliveryKey,
    /// The case, kept apart from the message so reports can name it even when the stored
    /// message cannot be read.
    pub case_id: u64,
    /// The message, or why the stored JSON cannot be read.
    pub message: Result<Message, String>,
    /// Attempts made so far.
    pub attempts: u32,
    /// When it was enqueued, Unix ms.
    pub enqueued_ms: u64,
    /// When it is due, Unix ms.
    pub next_attempt_ms: u64,
    /// Its severity's [`priority`].
    pub priority: i64,
}

impl Pending {
    /// A fire or pre-alarm page, which may use a channel's reserved slots.
    pub fn is_urgent(&self) -> bool {
        self.priority >= URGENT
    }
}

/// The rank of a severity in the outbox's queue, highest first: the alarm engine's own order
/// of severities (fire, pre-alarm, water, communication loss, offline, fault), and 0 for any
/// other (`test`, or a severity this version does not know).
pub fn priority(severity: &str) -> i64 {
    firegrid_alerting::Severity::ALL.iter().position(|s| s.as_str() == severity).map_or(0, |i| i as i64 + 1)
}

/// The lowest priority that may use a channel's reserved slots: pre-alarm (and fire above it).
pub const URGENT: i64 = firegrid_alerting::Severity::ALL.len() as i64 - 1;

/// What one [`Store::enqueue`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Enqueued {
    /// Deliveries added.
    pub inserted: usize,
    /// Their keys (a replayed enqueue adds none, and writes nothing to a shared table).
    pub added: Vec<DeliveryKey>,
    /// The older pending reminders this one superseded.
    pub superseded: Vec<DeliveryKey>,
}

/// Pending deliveries of one channel and severity, for the queue-depth metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Depth {
    /// The channel name.
    pub target: String,
    /// The severity (empty for a row whose message could not be read at migration).
    pub severity: String,
    /// How many.
    pub pending: u64,
}

/// The due deliveries [`Store::due`] returns, and when the next one not yet due falls.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Due {
    /// Per channel at most the limit asked for, most urgent first, then oldest.
    pub rows: Vec<Pending>,
    /// The earliest due time of a pending delivery not due yet, Unix ms.
    pub next_due_ms: Option<u64>,
}

/// One delivery as the history shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// The notification.
    pub notification_id: u64,
    /// The channel name.
    pub target: String,
    /// Where it stands.
    pub status: Status,
    /// Attempts made.
    pub attempts: u32,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// When it was enqueued, Unix ms.
    pub enqueued_ms: u64,
    /// While pending: when it is next tried, Unix ms.
    pub next_attempt_ms: Option<u64>,
    /// When the channel accepted it, Unix ms.
    pub delivered_ms: Option<u64>,
    /// When it was given up, Unix ms.
    pub gave_up_ms: Option<u64>,
    /// When it was superseded by a newer reminder, Unix ms.
    pub superseded_ms: Option<u64>,
    /// The newer reminder that superseded it.
    pub superseded_by: Option<u64>,
}

/// The outbox table behind one connection: a file, memory, or a mirror in memory of a table
/// shared with the village's other gateway ([`Store::open_shared`]).
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    /// For a mirror: where every write goes first.
    shared: Option<Shared>,
}

/// The outbox's table where both gateways of a village reach it (the case store's
/// PostgreSQL database), behind [`Store::open_shared`]: a standby that takes over carries on
/// with the old active's deliveries (pending ones are sent, delivered ones are not sent
/// again, the rate-limit windows count what it sent), and a gateway that returns finds no
/// stale rows of its own to send.
///
/// The store keeps a mirror of it in memory and reads only from there: one gateway writes
/// the table at a time (the writer of the case store, whose epoch every write carries), so
/// the mirror is the table. A write changes the mirror inside a transaction, hands the rows
/// it touched to [`SharedTable::upsert`], and commits the mirror only when that succeeded.
pub trait SharedTable: Send {
    /// Every row, with the columns of [`COLUMNS`].
    fn load(&mut self) -> Result<Rows, OutboxError>;
    /// Inserts `rows` or replaces those with the same key, in one transaction; refused with
    /// [`OutboxError::Fenced`] once another gateway holds the case store.
    fn upsert(&mut self, rows: &Rows) -> Result<(), OutboxError>;
    /// Deletes delivered, given-up and superseded rows finished before `older_than_ms`.
    fn prune(&mut self, older_than_ms: u64) -> Result<usize, OutboxError>;
    /// Where, for messages: never a password.
    fn describe(&self) -> String;
}

/// A [`SharedTable`], shown by where it is.
struct Shared(Box<dyn SharedTable>);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.describe())
    }
}

/// A column's type, for a [`SharedTable`] that is not SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A 64-bit integer (ids, counts, Unix ms), maybe `NULL`.
    Integer,
    /// Text, maybe `NULL`.
    Text,
}

/// The table's columns, in the order of its schema: what a [`SharedTable`] stores.
pub const COLUMNS: &[(&str, Kind)] = &[
    ("notification_id", Kind::Integer),
    ("target", Kind::Text),
    ("case_id", Kind::Integer),
    ("message", Kind::Text),
    ("status", Kind::Text),
    ("attempts", Kind::Integer),
    ("enqueued_ms", Kind::Integer),
    ("next_attempt_ms", Kind::Integer),
    ("last_error", Kind::Text),
    ("finished_ms", Kind::Integer),
    ("priority", Kind::Integer),
    ("severity", Kind::Text),
    ("reminder_desk", Kind::Text),
    ("superseded_by", Kind::Integer),
];

impl Store {
    /// Opens or creates the outbox at `path` (and its directory).
    pub fn open(path: &Path) -> Result<Store, OutboxError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| OutboxError::Io(dir.to_owned(), e))?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(OutboxError::Schema(format!("journal_mode is {mode}, WAL could not be set")));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(OutboxError::Schema(format!(
                "schema version {version} is newer than this gateway's {SCHEMA_VERSION}"
            )));
        }
        let mut conn = conn;
        if version == 1 {
            migrate_v1(&mut conn)?;
        }
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(Store { conn, shared: None })
    }

    /// A mirror in memory of `shared`, loaded from it: every write goes to `shared` first
    /// ([`SharedTable`]). Blocking.
    pub fn open_shared(mut table: Box<dyn SharedTable>) -> Result<Store, OutboxError> {
        let rows = table.load()?;
        let mut store = Store::open_memory()?;
        store.import_rows(&rows)?;
        store.shared = Some(Shared(table));
        Ok(store)
    }

    /// Where the table is, for messages.
    pub fn describe(&self) -> Option<String> {
        self.shared.as_ref().map(|s| s.0.describe())
    }

    /// Runs `op` on the table; for a mirror, in a transaction whose rows `touched` names are
    /// written to the shared table before it commits (and rolled back when that fails).
    fn write<T>(
        &mut self,
        op: impl FnOnce(&mut Connection) -> Result<T, OutboxError>,
        touched: impl FnOnce(&T) -> Vec<DeliveryKey>,
    ) -> Result<T, OutboxError> {
        let Some(shared) = &mut self.shared else { return op(&mut self.conn) };
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let done = op(&mut self.conn).and_then(|value| {
            let keys = touched(&value);
            // Nothing changed (a replayed enqueue): no round trip to the shared table.
            if !keys.is_empty() {
                shared.0.upsert(&rows_of(&self.conn, &keys)?)?;
            }
            Ok(value)
        });
        match done {
            Ok(value) => {
                self.conn.execute_batch("COMMIT")?;
                Ok(value)
            }
            Err(error) => {
                // Nothing was written to the shared table, or its transaction rolled back.
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(error)
            }
        }
    }

    /// An outbox in memory, with the same table: where deliveries go while the file cannot
    /// be written ([`super::Outbox`]).
    pub fn open_memory() -> Result<Store, OutboxError> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store { conn, shared: None })
    }

    /// Every row with every column, and the columns' names: for moving the table between the
    /// file and memory whatever its columns are (a migrated file may have them in another
    /// order than a new table).
    pub fn export_rows(&self) -> Result<Rows, OutboxError> {
        let mut select = self.conn.prepare("SELECT * FROM delivery")?;
        let columns: Vec<String> = select.column_names().into_iter().map(str::to_owned).collect();
        let rows = select.query_map([], |r| (0..columns.len()).map(|i| r.get(i)).collect())?;
        Ok(Rows { rows: rows.collect::<Result<_, _>>()?, columns })
    }

    /// Writes `rows` (from [`Store::export_rows`]), replacing rows with the same key, in one
    /// transaction.
    /// A mirror writes them to its shared table too.
    pub fn import_rows(&mut self, rows: &Rows) -> Result<(), OutboxError> {
        let Some(shared) = &mut self.shared else { return import(&mut self.conn, rows) };
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        match import(&mut self.conn, rows).and_then(|()| shared.0.upsert(rows)) {
            Ok(()) => Ok(self.conn.execute_batch("COMMIT")?),
            Err(error) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(error)
            }
        }
    }

    /// Adds one pending delivery of `msg` per target, in one transaction; a (notification,
    /// target) already present in any state is left alone. A new reminder supersedes the
    /// pending reminders of the same case and desk to the same target (never a first page or
    /// an escalation: only rows that are reminders themselves).
    pub fn enqueue(
        &mut self,
        msg: &Message,
        targets: &[String],
        now_ms: u64,
    ) -> Result<Enqueued, OutboxError> {
        let json = serde_json::to_string(msg).map_err(OutboxError::Encode)?;
        let reminder_desk = msg.is_reminder().then_some(msg.desk.as_str());
        // Only the rows this enqueue changed: a replay after a takeover changes none.
        let keys = |done: &Enqueued| done.added.iter().chain(&done.superseded).cloned().collect();
        self.write(|conn| enqueue(conn, msg, &json, reminder_desk, targets, now_ms), keys)
    }
}

/// [`Store::enqueue`] on `conn`.
fn enqueue(
    conn: &mut Connection,
    msg: &Message,
    json: &str,
    reminder_desk: Option<&str>,
    targets: &[String],
    now_ms: u64,
) -> Result<Enqueued, OutboxError> {
    let tx = conn.savepoint()?;
    let mut done = Enqueued::default();
    {
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO delivery
                 (notification_id, target, case_id, message, status, enqueued_ms, next_attempt_ms,
                  priority, severity, reminder_desk)
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5, ?6, ?7, ?8)",
        )?;
        let mut supersede = tx.prepare_cached(
            "UPDATE delivery SET status = 'superseded', finished_ms = ?5, superseded_by = ?3
                 WHERE case_id = ?1 AND target = ?2 AND reminder_desk = ?4 AND status = 'pending'
                   AND notification_id != ?3
                 RETURNING notification_id",
        )?;
        for target in targets {
            let new = insert.execute(params![
                msg.notification_id as i64,
                target,
                msg.case_id as i64,
                json,
                now_ms as i64,
                priority(&msg.severity),
                msg.severity,
                reminder_desk,
            ])?;
            done.inserted += new;
            if new == 1 {
                done.added.push(DeliveryKey { notification_id: msg.notification_id, target: target.clone() });
            }
            // Only a reminder inserted now supersedes: a replayed one (already present)
            // must not supersede the newer reminders queued after it.
            if let (1, Some(desk)) = (new, reminder_desk) {
                let ids = supersede.query_map(
                    params![msg.case_id as i64, target, msg.notification_id as i64, desk, now_ms as i64],
                    |r| r.get::<_, i64>(0),
                )?;
                for id in ids {
                    done.superseded.push(DeliveryKey { notification_id: id? as u64, target: target.clone() });
                }
            }
        }
    }
    tx.commit()?;
    Ok(done)
}

/// [`Store::import_rows`] on `conn`.
fn import(conn: &mut Connection, rows: &Rows) -> Result<(), OutboxError> {
    let tx = conn.savepoint()?;
    if !rows.rows.is_empty() {
        let marks = vec!["?"; rows.columns.len()].join(", ");
        let names = rows.columns.join(", ");
        let mut insert =
            tx.prepare(&format!("INSERT OR REPLACE INTO delivery ({names}) VALUES ({marks})"))?;
        for row in &rows.rows {
            insert.execute(rusqlite::params_from_iter(row))?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The rows of `keys` (those present), every column.
fn rows_of(conn: &Connection, keys: &[DeliveryKey]) -> Result<Rows, OutboxError> {
    let mut select =
        conn.prepare_cached("SELECT * FROM delivery WHERE notification_id = ?1 AND target = ?2")?;
    let columns: Vec<String> = select.column_names().into_iter().map(str::to_owned).collect();
    let mut rows = Vec::with_capacity(keys.len());
    for key in keys {
        let found = select
            .query_row(params![key.notification_id as i64, key.target], |r| {
                (0..columns.len()).map(|i| r.get(i)).collect::<rusqlite::Result<Vec<_>>>()
            })
            .optional()?;
        rows.extend(found);
    }
    Ok(Rows { columns, rows })
}

impl Store {
    /// The deliveries due at `now_ms`, at most `per_target` per channel, each channel's most
    /// urgent first and then oldest, and when the next not yet due falls. Due as
    /// the worker's `is_due` says: a due time further ahead than `max_backoff` was set
    /// before the wall clock stepped back and is due now.
    pub fn due(&self, now_ms: u64, max_backoff: Duration, per_target: usize) -> Result<Due, OutboxError> {
        let horizon = now_ms.saturating_add(max_backoff.as_millis() as u64).min(i64::MAX as u64) as i64;
        let now = now_ms.min(i64::MAX as u64) as i64;
        let mut select = self.conn.prepare_cached(
            "SELECT notification_id, target, case_id, message, attempts, enqueued_ms, next_attempt_ms,
                    priority
             FROM (SELECT *, ROW_NUMBER() OVER (
                       PARTITION BY target ORDER BY priority DESC, enqueued_ms, notification_id) AS rank
                   FROM delivery
                   WHERE status = 'pending' AND (next_attempt_ms <= ?1 OR next_attempt_ms > ?2))
             WHERE rank <= ?3
             ORDER BY priority DESC, enqueued_ms, notification_id, target",
        )?;
        let rows = select.query_map(params![now, horizon, per_target as i64], pending_row)?;
        let rows = rows.collect::<Result<_, _>>()?;
        let next_due_ms: Option<i64> = self.conn.query_row(
            "SELECT MIN(next_attempt_ms) FROM delivery
             WHERE status = 'pending' AND next_attempt_ms > ?1 AND next_attempt_ms <= ?2",
            params![now, horizon],
            |r| r.get(0),
        )?;
        Ok(Due { rows, next_due_ms: next_due_ms.map(|ms| ms as u64) })
    }

    /// When each delivery to `target` accepted at or after `since_ms` was accepted, oldest
    /// first: the sends a rate-limit window counts again after a restart.
    pub fn delivered_since(&self, target: &str, since_ms: u64) -> Result<Vec<u64>, OutboxError> {
        let mut select = self.conn.prepare_cached(
            "SELECT finished_ms FROM delivery
             WHERE target = ?1 AND status = 'delivered' AND finished_ms >= ?2 ORDER BY finished_ms",
        )?;
        let rows = select.query_map(params![target, since_ms as i64], |r| r.get::<_, i64>(0))?;
        Ok(rows.map(|ms| ms.map(|ms| ms as u64)).collect::<Result<_, _>>()?)
    }

    /// Pending deliveries by channel and severity.
    pub fn depth(&self) -> Result<Vec<Depth>, OutboxError> {
        let mut select = self.conn.prepare_cached(
            "SELECT target, severity, COUNT(*) FROM delivery WHERE status = 'pending'
             GROUP BY target, severity ORDER BY target, severity",
        )?;
        let rows = select.query_map([], |r| {
            Ok(Depth { target: r.get(0)?, severity: r.get(1)?, pending: r.get::<_, i64>(2)? as u64 })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The `limit` pending deliveries due first (due or not), earliest first.
    pub fn earliest(&self, limit: usize) -> Result<Vec<Pending>, OutboxError> {
        let mut select = self.conn.prepare_cached(
            "SELECT notification_id, target, case_id, message, attempts, enqueued_ms, next_attempt_ms,
                    priority
             FROM delivery WHERE status = 'pending' ORDER BY next_attempt_ms LIMIT ?1",
        )?;
        let rows = select.query_map([limit as i64], pending_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records that attempt `attempts` delivered `key` at `now_ms`. A reminder superseded while
    /// it was being sent is recorded as delivered too (it was), keeping `superseded_by`.
    pub fn delivered(&mut self, key: &DeliveryKey, attempts: u32, now_ms: u64) -> Result<(), OutboxError> {
        self.write(
            |conn| {
                conn.prepare_cached(
                    "UPDATE delivery SET status = 'delivered', attempts = ?3, finished_ms = ?4
                 WHERE notification_id = ?1 AND target = ?2 AND status IN ('pending', 'superseded')",
                )?
                .execute(params![
                    key.notification_id as i64,
                    key.target,
                    attempts,
                    now_ms as i64
                ])?;
                Ok(())
            },
            |()| vec![key.clone()],
        )
    }

    /// Records that attempt `attempts` failed with `error` and gave the delivery up.
    pub fn dead(
        &mut self,
        key: &DeliveryKey,
        attempts: u32,
        error: &str,
        now_ms: u64,
    ) -> Result<(), OutboxError> {
        self.write(
            |conn| {
                conn.prepare_cached(
                    "UPDATE delivery SET status = 'dead', attempts = ?3, last_error = ?4, finished_ms = ?5
                 WHERE notification_id = ?1 AND target = ?2 AND status = 'pending'",
                )?
                .execute(params![
                    key.notification_id as i64,
                    key.target,
                    attempts,
                    error,
                    now_ms as i64
                ])?;
                Ok(())
            },
            |()| vec![key.clone()],
        )
    }

    /// Records that attempt `attempts` failed with `error`; the next is due at `next_ms`.
    pub fn retry_at(
        &mut self,
        key: &DeliveryKey,
        attempts: u32,
        next_ms: u64,
        error: &str,
    ) -> Result<(), OutboxError> {
        self.write(
            |conn| {
                conn.prepare_cached(
                    "UPDATE delivery SET attempts = ?3, next_attempt_ms = ?4, last_error = ?5
                 WHERE notification_id = ?1 AND target = ?2 AND status = 'pending'",
                )?
                .execute(params![
                    key.notification_id as i64,
                    key.target,
                    attempts,
                    next_ms as i64,
                    error
                ])?;
                Ok(())
            },
            |()| vec![key.clone()],
        )
    }

    /// Deliveries not yet delivered nor given up.
    pub fn pending_count(&self) -> Result<u64, OutboxError> {
        self.count(Status::Pending)
    }

    /// Deliveries given up (still within retention).
    pub fn dead_count(&self) -> Result<u64, OutboxError> {
        self.count(Status::Dead)
    }

    /// Reminders superseded (still within retention).
    pub fn superseded_count(&self) -> Result<u64, OutboxError> {
        self.count(Status::Superseded)
    }

    fn count(&self, status: Status) -> Result<u64, OutboxError> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM delivery WHERE status = ?1",
            [status.as_str()],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Enqueue time of the oldest pending delivery, Unix ms.
    pub fn oldest_pending_ms(&self) -> Result<Option<u64>, OutboxError> {
        let oldest: Option<i64> = self
            .conn
            .query_row("SELECT MIN(enqueued_ms) FROM delivery WHERE status = 'pending'", [], |r| r.get(0))
            .optional()?
            .flatten();
        Ok(oldest.map(|ms| ms as u64))
    }

    /// Every delivery of `case_id`, oldest notification first.
    pub fn history(&self, case_id: u64) -> Result<Vec<HistoryEntry>, OutboxError> {
        let mut select = self.conn.prepare_cached(
            "SELECT notification_id, target, status, attempts, last_error, enqueued_ms, next_attempt_ms,
                    finished_ms, superseded_by
             FROM delivery WHERE case_id = ?1 ORDER BY enqueued_ms, notification_id, target",
        )?;
        let rows = select.query_map([case_id as i64], |r| {
            let status = Status::parse(&r.get::<_, String>(2)?);
            let finished: Option<i64> = r.get(7)?;
            let at = |s| finished.filter(|_| status == s).map(|ms| ms as u64);
            Ok(HistoryEntry {
                notification_id: r.get::<_, i64>(0)? as u64,
                target: r.get(1)?,
                status,
                attempts: r.get(3)?,
                last_error: r.get(4)?,
                enqueued_ms: r.get::<_, i64>(5)? as u64,
                next_attempt_ms: (status == Status::Pending).then_some(r.get::<_, i64>(6)? as u64),
                delivered_ms: at(Status::Delivered),
                gave_up_ms: at(Status::Dead),
                superseded_ms: at(Status::Superseded),
                superseded_by: r.get::<_, Option<i64>>(8)?.map(|id| id as u64),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes delivered and given-up deliveries finished before `older_than_ms`; pending ones
    /// are never deleted. Returns how many went.
    pub fn prune(&mut self, older_than_ms: u64) -> Result<usize, OutboxError> {
        if let Some(shared) = &mut self.shared {
            shared.0.prune(older_than_ms)?;
        }
        Ok(self.conn.execute(
            "DELETE FROM delivery WHERE status != 'pending' AND finished_ms < ?1",
            [older_than_ms as i64],
        )?)
    }
}

/// A [`Pending`] from the columns notification_id, target, case_id, message, attempts,
/// enqueued_ms, next_attempt_ms, priority.
fn pending_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Pending> {
    let json: String = r.get(3)?;
    Ok(Pending {
        key: DeliveryKey { notification_id: r.get::<_, i64>(0)? as u64, target: r.get(1)? },
        case_id: r.get::<_, i64>(2)? as u64,
        message: serde_json::from_str(&json).map_err(|e| e.to_string()),
        attempts: r.get(4)?,
        enqueued_ms: r.get::<_, i64>(5)? as u64,
        next_attempt_ms: r.get::<_, i64>(6)? as u64,
        priority: r.get(7)?,
    })
}

/// Version 1 to 2, in one transaction: the table is rebuilt (SQLite cannot widen a `CHECK`
/// constraint in place) with every row kept, and each row's priority and severity are read
/// from its stored message. Rows of version 1 carry no reason, so none is taken for a
/// reminder: they are delivered as they are, never superseded.
fn migrate_v1(conn: &mut Connection) -> Result<(), OutboxError> {
    let tx = conn.transaction()?;
    tx.execute_batch(
        "DROP INDEX IF EXISTS delivery_due;
         DROP INDEX IF EXISTS delivery_case;
         DROP INDEX IF EXISTS delivery_finished;
         ALTER TABLE delivery RENAME TO delivery_v1;",
    )?;
    tx.execute_batch(SCHEMA)?;
    tx.execute_batch(
        "INSERT INTO delivery (notification_id, target, case_id, message, status, attempts,
                               enqueued_ms, next_attempt_ms, last_error, finished_ms)
         SELECT notification_id, target, case_id, message, status, attempts,
                enqueued_ms, next_attempt_ms, last_error, finished_ms
         FROM delivery_v1;
         DROP TABLE delivery_v1;",
    )?;
    let rows: Vec<(i64, String)> = {
        let mut select = tx.prepare("SELECT rowid, message FROM delivery")?;
        select.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
    };
    {
        let mut update = tx.prepare("UPDATE delivery SET priority = ?2, severity = ?3 WHERE rowid = ?1")?;
        for (rowid, json) in rows {
            // An unreadable message keeps priority 0 and no severity; the worker reports it.
            if let Ok(msg) = serde_json::from_str::<Message>(&json) {
                update.execute(params![rowid, priority(&msg.severity), msg.severity])?;
            }
        }
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    tracing::info!("Notification outbox migrated from schema version 1 to 2.");
    Ok(())
}
