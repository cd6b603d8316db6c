//! The outbox table in SQLite: one row per (notification, channel), synchronous calls.
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
use crate::notify::Message;

/// Version of the schema below, in `PRAGMA user_version`; a file of a later version is
/// refused rather than misread.
const SCHEMA_VERSION: i64 = 1;

/// Ids and times are `u64` in Rust and `INTEGER` (i64) in SQLite: ids are stored as the same
/// 64 bits (an id above `i64::MAX` reads back unchanged), times in ms fit as they are.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS delivery (
    notification_id INTEGER NOT NULL,
    target          TEXT    NOT NULL,
    case_id         INTEGER NOT NULL,
    message         TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    enqueued_ms     INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL,
    last_error      TEXT,
    finished_ms     INTEGER,
    PRIMARY KEY (notification_id, target)
);
CREATE INDEX IF NOT EXISTS delivery_due ON delivery (next_attempt_ms) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS delivery_case ON delivery (case_id);
CREATE INDEX IF NOT EXISTS delivery_finished ON delivery (finished_ms) WHERE status != 'pending';
";

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
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Delivered => "delivered",
            Status::Dead => "dead",
        }
    }

    fn parse(text: &str) -> Status {
        match text {
            "delivered" => Status::Delivered,
            "dead" => Status::Dead,
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
}

/// The outbox table behind one connection.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

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
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(Store { conn })
    }

    /// An outbox in memory, with the same table: where deliveries go while the file cannot
    /// be written ([`super::Outbox`]).
    pub fn open_memory() -> Result<Store, OutboxError> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store { conn })
    }

    /// Every row, every column, in table order: for moving the table between the file and
    /// memory whatever its columns are.
    pub fn export_rows(&self) -> Result<Vec<Vec<rusqlite::types::Value>>, OutboxError> {
        let mut select = self.conn.prepare("SELECT * FROM delivery")?;
        let columns = select.column_count();
        let rows = select.query_map([], |r| (0..columns).map(|i| r.get(i)).collect())?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Writes `rows` (from [`Store::export_rows`] of a store of the same schema), replacing
    /// rows with the same key, in one transaction.
    pub fn import_rows(&mut self, rows: &[Vec<rusqlite::types::Value>]) -> Result<(), OutboxError> {
        let tx = self.conn.transaction()?;
        if let Some(first) = rows.first() {
            let marks = vec!["?"; first.len()].join(", ");
            let mut insert = tx.prepare(&format!("INSERT OR REPLACE INTO delivery VALUES ({marks})"))?;
            for row in rows {
                insert.execute(rusqlite::params_from_iter(row))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Adds one pending delivery of `msg` per target, in one transaction; a (notification,
    /// target) already present in any state is left alone. Returns how many were new.
    pub fn enqueue(&mut self, msg: &Message, targets: &[String], now_ms: u64) -> Result<usize, OutboxError> {
        let json = serde_json::to_string(msg).map_err(OutboxError::Encode)?;
        let tx = self.conn.transaction()?;
        let mut inserted = 0;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO delivery
                 (notification_id, target, case_id, message, status, enqueued_ms, next_attempt_ms)
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5)",
            )?;
            for target in targets {
                inserted += insert.execute(params![
                    msg.notification_id as i64,
                    target,
                    msg.case_id as i64,
                    json,
                    now_ms as i64
                ])?;
            }
        }
        tx.commit()?;
        Ok(inserted)
    }

    /// The `limit` pending deliveries due first (due or not), earliest first.
    pub fn earliest(&self, limit: usize) -> Result<Vec<Pending>, OutboxError> {
        let mut select = self.conn.prepare_cached(
            "SELECT notification_id, target, case_id, message, attempts, enqueued_ms, next_attempt_ms
             FROM delivery WHERE status = 'pending' ORDER BY next_attempt_ms LIMIT ?1",
        )?;
        let rows = select.query_map([limit as i64], |r| {
            let json: String = r.get(3)?;
            Ok(Pending {
                key: DeliveryKey { notification_id: r.get::<_, i64>(0)? as u64, target: r.get(1)? },
                case_id: r.get::<_, i64>(2)? as u64,
                message: serde_json::from_str(&json).map_err(|e| e.to_string()),
                attempts: r.get(4)?,
                enqueued_ms: r.get::<_, i64>(5)? as u64,
                next_attempt_ms: r.get::<_, i64>(6)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records that attempt `attempts` delivered `key` at `now_ms`.
    pub fn delivered(&mut self, key: &DeliveryKey, attempts: u32, now_ms: u64) -> Result<(), OutboxError> {
        self.finish(key, Status::Delivered, attempts, None, now_ms)
    }

    /// Records that attempt `attempts` failed with `error` and gave the delivery up.
    pub fn dead(
        &mut self,
        key: &DeliveryKey,
        attempts: u32,
        error: &str,
        now_ms: u64,
    ) -> Result<(), OutboxError> {
        self.finish(key, Status::Dead, attempts, Some(error), now_ms)
    }

    fn finish(
        &mut self,
        key: &DeliveryKey,
        status: Status,
        attempts: u32,
        error: Option<&str>,
        now_ms: u64,
    ) -> Result<(), OutboxError> {
        self.conn
            .prepare_cached(
                "UPDATE delivery SET status = ?3, attempts = ?4, last_error = COALESCE(?5, last_error),
                 finished_ms = ?6 WHERE notification_id = ?1 AND target = ?2 AND status = 'pending'",
            )?
            .execute(params![
                key.notification_id as i64,
                key.target,
                status.as_str(),
                attempts,
                error,
                now_ms as i64
            ])?;
        Ok(())
    }

    /// Records that attempt `attempts` failed with `error`; the next is due at `next_ms`.
    pub fn retry_at(
        &mut self,
        key: &DeliveryKey,
        attempts: u32,
        next_ms: u64,
        error: &str,
    ) -> Result<(), OutboxError> {
        self.conn
            .prepare_cached(
                "UPDATE delivery SET attempts = ?3, next_attempt_ms = ?4, last_error = ?5
                 WHERE notification_id = ?1 AND target = ?2 AND status = 'pending'",
            )?
            .execute(params![key.notification_id as i64, key.target, attempts, next_ms as i64, error])?;
        Ok(())
    }

    /// Deliveries not yet delivered nor given up.
    pub fn pending_count(&self) -> Result<u64, OutboxError> {
        self.count(Status::Pending)
    }

    /// Deliveries given up (still within retention).
    pub fn dead_count(&self) -> Result<u64, OutboxError> {
        self.count(Status::Dead)
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
                    finished_ms
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
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes delivered and given-up deliveries finished before `older_than_ms`; pending ones
    /// are never deleted. Returns how many went.
    pub fn prune(&mut self, older_than_ms: u64) -> Result<usize, OutboxError> {
        Ok(self.conn.execute(
            "DELETE FROM delivery WHERE status != 'pending' AND finished_ms < ?1",
            [older_than_ms as i64],
        )?)
    }
}
