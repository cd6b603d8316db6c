//! The durable store of the alarm cases, on SQLite: the event log that makes the alarm engine
//! survive a restart, and the record of every case that the officer API queries.
//!
//! The engine of `firegrid-alerting` is a deterministic state machine, so durability is event
//! sourcing: every input is appended here (one [`Step`], committed by [`CaseStore::commit`])
//! before its effects are acted on. After a restart, even after `kill -9` or a power cut,
//! [`CaseStore::load`] returns the latest engine snapshot and the inputs logged after it;
//! replaying them reproduces the engine's state exactly, and deadlines that passed while the
//! gateway was down fire on the next tick. Beside that log, each step also records the
//! transitions the engine emitted and the current state of the cases it touched, so closed
//! cases can still be listed ([`CaseStore::list`]), shown ([`CaseStore::case`],
//! [`CaseStore::timeline`]) and audited ([`CaseStore::audit_log`]) after the engine forgets
//! them.
//!
//! The store knows nothing of the engine's types: it keeps JSON text plus the few columns that
//! queries filter on. It is blocking (rusqlite), and one owner drives it: the gateway runs it on
//! a dedicated thread (or inside `spawn_blocking`) and sends it requests; nothing here touches
//! tokio. The connection is `Send` but not `Sync`, which the compiler enforces.
//!
//! Main types: [`CaseStore`], [`Step`] with its [`TransitionRow`]s and [`CaseRow`]s, [`Loaded`],
//! [`CaseFilter`], [`StoreError`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, ToSql, TransactionBehavior, params};

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;

/// The schema this code writes, kept in `PRAGMA user_version`. A file with a higher number
/// was written by a newer gateway and is refused rather than misread.
pub const SCHEMA_VERSION: i64 = 1;

/// Rows [`CaseStore::list`] returns when the filter names no limit.
pub const DEFAULT_LIST_LIMIT: u32 = 100;

/// The most rows [`CaseStore::list`] returns, whatever the filter asks.
pub const MAX_LIST_LIMIT: u32 = 1000;

// If the latest snapshot cannot be decoded (a serialisation bug that shows only after an
// upgrade), the previous one plus a longer replay still restores the engine without loss. One
// snapshot more costs a few kilobytes, and pruning keeps the inputs that replay needs.
const SNAPSHOTS_KEPT: i64 = 2;

// Only one connection writes, so waiting on a lock means someone else has the file open: an
// operator's `sqlite3` shell or a backup. Five seconds rides out a backup step without
// stalling the alarm loop for long.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS inputs (
    -- AUTOINCREMENT: a plain rowid restarts at max + 1, so after pruning every logged input
    -- a new input could get a seq that the snapshot already covers and be skipped on replay.
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms  INTEGER NOT NULL,
    kind   TEXT    NOT NULL,
    actor  TEXT,
    origin TEXT,
    json   TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS inputs_audit ON inputs (at_ms) WHERE actor IS NOT NULL;

CREATE TABLE IF NOT EXISTS transitions (
    id      INTEGER PRIMARY KEY,
    seq     INTEGER NOT NULL,
    case_id INTEGER NOT NULL,
    at_ms   INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    json    TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS transitions_case ON transitions (case_id, at_ms, id);

CREATE TABLE IF NOT EXISTS cases (
    case_id     INTEGER PRIMARY KEY,
    opened_ms   INTEGER NOT NULL,
    closed_ms   INTEGER,
    stage       TEXT    NOT NULL,
    severity    TEXT    NOT NULL,
    street      TEXT    NOT NULL,
    community   TEXT    NOT NULL,
    grid        TEXT    NOT NULL,
    building    TEXT    NOT NULL,
    updated_seq INTEGER NOT NULL,
    json        TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS cases_opened ON cases (opened_ms, case_id);
CREATE INDEX IF NOT EXISTS cases_closed ON cases (closed_ms);
CREATE INDEX IF NOT EXISTS cases_street ON cases (street, opened_ms);
CREATE INDEX IF NOT EXISTS cases_community ON cases (community, opened_ms);
CREATE INDEX IF NOT EXISTS cases_grid ON cases (grid, opened_ms);

CREATE TABLE IF NOT EXISTS snapshots (
    upto_seq INTEGER PRIMARY KEY,
    at_ms    INTEGER NOT NULL,
    json     TEXT    NOT NULL
);
";

/// Errors of the case store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory for the file could not be created.
    #[error("case store directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file could not be opened or set up (not an SQLite file, no permission, a full disk).
    #[error("case store {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The file was written by a newer gateway, whose schema this one does not know.
    #[error(
        "case store {path} has schema version {found}, but this gateway knows only up to \
         {supported}: run the newer gateway, or move the file away to start empty"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// `PRAGMA user_version` of the file.
        found: i64,
        /// [`SCHEMA_VERSION`].
        supported: i64,
    },
    /// An operation on an open store failed (a full disk, an I/O error, a number too large for
    /// SQLite's signed 64-bit integers).
    #[error("case store {operation}: {source}")]
    Sqlite {
        /// What the store was doing, e.g. `"commit"`.
        operation: &'static str,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A JSON document handed to the store does not parse; storing it would make a replay or a
    /// query fail later, far from the bug.
    #[error("case store: {what} is not valid JSON: {source}")]
    InvalidJson {
        /// Which document, e.g. `"input"` or `"case"`.
        what: &'static str,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A snapshot claims to cover inputs that were never logged.
    #[error("snapshot up to input {upto_seq} is ahead of the last logged input {last_seq}")]
    SnapshotAhead {
        /// The snapshot's claim.
        upto_seq: u64,
        /// The last input logged.
        last_seq: u64,
    },
    /// A snapshot is older than the latest one stored; keeping it would make the store replay
    /// from the wrong point.
    #[error("snapshot up to input {upto_seq} is older than the stored one up to {latest}")]
    SnapshotBehind {
        /// The snapshot's claim.
        upto_seq: u64,
        /// The latest stored snapshot's.
        latest: u64,
    },
    /// Inputs a replay needs are missing: the file was edited by hand or damaged. Replaying
    /// around the hole would silently rebuild a different state.
    #[error("case store: replay needs input {expected} next, but the log continues at {found}")]
    ReplayGap {
        /// The seq that should follow.
        expected: u64,
        /// The seq found instead.
        found: u64,
    },
}

/// Wraps SQLite's error with what the store was doing.
fn sql(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { operation, source }
}

fn check_json(what: &'static str, json: &str) -> Result<(), StoreError> {
    serde_json::from_str::<serde::de::IgnoredAny>(json)
        .map(drop)
        .map_err(|source| StoreError::InvalidJson { what, source })
}

/// Who did something and from where: recorded with officer actions, `None` for device and
/// timer inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// The officer's account name.
    pub actor: String,
    /// Where the action came from: the remote address, or `"mqtt"` for a panel.
    pub origin: String,
}

/// One engine step, committed all or nothing: the input, the transitions it caused and the
/// new state of the cases it touched.
///
/// Every step is a logged input, because the log must replay to the same state: a timer tick
/// that changed the engine's state is a step like any other (kind `"tick"`), and a tick that
/// changed nothing need not be passed at all.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    /// The engine time the input was handled at (Unix milliseconds).
    pub at_ms: u64,
    /// What kind of input, e.g. `"alarm"`, `"acknowledge"`, `"tick"`.
    pub kind: &'a str,
    /// Who and from where, for officer actions.
    pub audit: Option<&'a Audit>,
    /// The serialised input. May be empty when `kind` and `at_ms` say everything (a tick);
    /// otherwise it must be valid JSON.
    pub input_json: &'a str,
    /// The transitions the engine emitted for this input.
    pub transitions: &'a [TransitionRow<'a>],
    /// The current state of each case the input changed, replacing what was stored.
    pub cases: &'a [CaseRow<'a>],
}

/// A transition of a case (opened, acknowledged, escalated, ...), for its timeline.
#[derive(Debug, Clone, Copy)]
pub struct TransitionRow<'a> {
    /// The case.
    pub case_id: u64,
    /// When it happened (Unix milliseconds).
    pub at_ms: u64,
    /// What happened, e.g. `"opened"`.
    pub kind: &'a str,
    /// The serialised transition.
    pub json: &'a str,
}

/// The current state of one case, with the fields queries filter on.
#[derive(Debug, Clone, Copy)]
pub struct CaseRow<'a> {
    /// The case.
    pub case_id: u64,
    /// When it was opened (Unix milliseconds).
    pub opened_ms: u64,
    /// When it was closed, `None` while open.
    pub closed_ms: Option<u64>,
    /// Its stage label, e.g. `"warning"`.
    pub stage: &'a str,
    /// Its severity label.
    pub severity: &'a str,
    /// The street (街道) of the place.
    pub street: &'a str,
    /// The community (社区) of the place.
    pub community: &'a str,
    /// The grid (网格) of the place.
    pub grid: &'a str,
    /// The building.
    pub building: &'a str,
    /// The serialised case.
    pub json: &'a str,
}

/// An engine snapshot: its state after applying every input up to `upto_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The last input it includes.
    pub upto_seq: u64,
    /// The engine time it was taken at.
    pub at_ms: u64,
    /// The serialised engine state.
    pub json: String,
}

/// An input from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedInput {
    /// Its place in the log.
    pub seq: u64,
    /// The engine time it was handled at.
    pub at_ms: u64,
    /// Its kind label.
    pub kind: String,
    /// The serialised input (empty for an input that needs none).
    pub json: String,
}

/// What a restart replays: a snapshot (if any was saved) and the inputs after it, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The snapshot to start from; with none, replay starts from an empty engine.
    pub snapshot: Option<Snapshot>,
    /// The inputs logged after the snapshot, by increasing seq, without gaps.
    pub inputs: Vec<LoggedInput>,
}

/// A case as last stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCase {
    /// The case.
    pub case_id: u64,
    /// When it was opened.
    pub opened_ms: u64,
    /// When it was closed, `None` while open.
    pub closed_ms: Option<u64>,
    /// Its stage label.
    pub stage: String,
    /// Its severity label.
    pub severity: String,
    /// The street.
    pub street: String,
    /// The community.
    pub community: String,
    /// The grid.
    pub grid: String,
    /// The building.
    pub building: String,
    /// The input whose step last changed it: grows with every change, so it also serves as
    /// a version for caching.
    pub updated_seq: u64,
    /// The serialised case.
    pub json: String,
}

/// A transition from a case's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTransition {
    /// The input that caused it.
    pub seq: u64,
    /// When it happened.
    pub at_ms: u64,
    /// What happened.
    pub kind: String,
    /// The serialised transition.
    pub json: String,
}

/// An officer action from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Its place in the input log.
    pub seq: u64,
    /// When it was handled.
    pub at_ms: u64,
    /// Its kind label, e.g. `"acknowledge"`.
    pub kind: String,
    /// Who.
    pub actor: String,
    /// From where.
    pub origin: String,
    /// The serialised input.
    pub json: String,
}

/// Which cases [`CaseStore::list`] returns, by open state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CaseState {
    /// Open and closed alike.
    #[default]
    Any,
    /// Not yet closed.
    Open,
    /// Closed.
    Closed,
}

/// What [`CaseStore::list`] selects. Every field is optional and the defaults select
/// everything; text fields match exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseFilter {
    /// Open, closed or both.
    pub state: CaseState,
    /// Only this stage.
    pub stage: Option<String>,
    /// Only this severity.
    pub severity: Option<String>,
    /// Only this street.
    pub street: Option<String>,
    /// Only this community.
    pub community: Option<String>,
    /// Only this grid.
    pub grid: Option<String>,
    /// Only cases opened at or after this time (Unix milliseconds).
    pub opened_since_ms: Option<u64>,
    /// Only cases opened before this time (Unix milliseconds).
    pub opened_until_ms: Option<u64>,
    /// At most this many rows: [`DEFAULT_LIST_LIMIT`] if unset, capped at [`MAX_LIST_LIMIT`].
    pub limit: Option<u32>,
}

/// What [`CaseStore::prune`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Closed cases.
    pub cases: u64,
    /// Transitions of those cases.
    pub transitions: u64,
    /// Logged inputs.
    pub inputs: u64,
}

/// The store's size, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Inputs in the log.
    pub inputs: u64,
    /// The last seq handed out (0 before the first input).
    pub last_seq: u64,
    /// The latest snapshot's `upto_seq`, if one was saved.
    pub snapshot_seq: Option<u64>,
    /// Inputs a restart would replay now: the measure of when to take the next snapshot.
    pub inputs_since_snapshot: u64,
    /// Cases not yet closed.
    pub open_cases: u64,
    /// Closed cases still kept.
    pub closed_cases: u64,
    /// The database file and its write-ahead log on disk.
    pub file_bytes: u64,
}

/// The durable store of the alarm cases. One owner drives it; see the module docs.
#[derive(Debug)]
pub struct CaseStore {
    conn: Connection,
    path: PathBuf,
}

impl CaseStore {
    /// Opens the store at `path`, creating the file, its parent directory and the schema if
    /// missing. Refuses a file written by a newer gateway ([`StoreError::NewerSchema`]).
    pub fn open(path: impl AsRef<Path>) -> Result<CaseStore, StoreError> {
        let path = path.as_ref().to_owned();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| StoreError::Dir { path: dir.to_owned(), source })?;
        }
        let open_err = |source| StoreError::Open { path: path.clone(), source };
        let mut conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let found: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(open_err)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema { path, found, supported: SCHEMA_VERSION });
        }
        // Deleting a year of closed cases should give the space back, or the file only ever
        // grows. Incremental mode can only be chosen before the first table exists; on an
        // existing file this does nothing.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL").map_err(open_err)?;
        // WAL: readers (an operator's shell, a backup) do not block the alarm loop's commits,
        // and a commit is one append to the log instead of a rewrite of the pages.
        conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
        // FULL syncs the log at every commit. In WAL mode NORMAL would stay consistent but
        // could lose the last commits in a power cut, and a committed officer action (who
        // acknowledged the fire, when) must not vanish.
        conn.pragma_update(None, "synchronous", "FULL").map_err(open_err)?;
        if found < SCHEMA_VERSION {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(open_err)?;
            tx.execute_batch(SCHEMA).map_err(open_err)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(open_err)?;
            tx.commit().map_err(open_err)?;
        }
        Ok(CaseStore { conn, path })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Commits a batch of steps in one transaction and returns the seq of the last input
    /// logged (the last seq so far, for an empty batch).
    ///
    /// When this returns, every step of the batch is on disk, and none of it is after a
    /// failure. Batching the inputs that arrived together is the way to throughput: the cost
    /// of a commit is its fsync, and one is paid per batch, not per step.
    pub fn commit(&mut self, steps: &[Step<'_>]) -> Result<u64, StoreError> {
        for step in steps {
            if !step.input_json.is_empty() {
                check_json("input", step.input_json)?;
            }
            for t in step.transitions {
                check_json("transition", t.json)?;
            }
            for c in step.cases {
                check_json("case", c.json)?;
            }
        }
        if steps.is_empty() {
            return last_seq(&self.conn).map_err(sql("commit"));
        }
        commit_steps(&mut self.conn, steps).map_err(sql("commit"))
    }

    /// Saves the engine's state after every input up to `upto_seq`, keeping the previous
    /// snapshot as a fallback ([`CaseStore::load_previous`]) and deleting older ones.
    pub fn save_snapshot(&mut self, upto_seq: u64, at_ms: u64, json: &str) -> Result<(), StoreError> {
        check_json("snapshot", json)?;
        let tx =
            self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql("snapshot"))?;
        let last_seq = last_seq(&tx).map_err(sql("snapshot"))?;
        if upto_seq > last_seq {
            return Err(StoreError::SnapshotAhead { upto_seq, last_seq });
        }
        if let Some(latest) = snapshot_seqs(&tx).map_err(sql("snapshot"))?.first().copied()
            && upto_seq < latest
        {
            return Err(StoreError::SnapshotBehind { upto_seq, latest });
        }
        let save = || -> rusqlite::Result<()> {
            tx.execute(
                "INSERT OR REPLACE INTO snapshots (upto_seq, at_ms, json) VALUES (?1, ?2, ?3)",
                params![upto_seq, at_ms, json],
            )?;
            tx.execute(
                "DELETE FROM snapshots WHERE upto_seq NOT IN \
                 (SELECT upto_seq FROM snapshots ORDER BY upto_seq DESC LIMIT ?1)",
                [SNAPSHOTS_KEPT],
            )?;
            Ok(())
        };
        save().map_err(sql("snapshot"))?;
        tx.commit().map_err(sql("snapshot"))
    }

    /// What a restart replays: the latest snapshot and the inputs after it, in seq order.
    /// Fails with [`StoreError::ReplayGap`] rather than return a log with a hole.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let snapshot = self.snapshot_at(0)?;
        self.load_from(snapshot)
    }

    /// Like [`CaseStore::load`] but from the snapshot before the latest, for when the latest
    /// cannot be decoded. `None` if fewer than two snapshots were saved.
    pub fn load_previous(&self) -> Result<Option<Loaded>, StoreError> {
        match self.snapshot_at(1)? {
            Some(snapshot) => self.load_from(Some(snapshot)).map(Some),
            None => Ok(None),
        }
    }

    /// The `nth` newest snapshot (0 is the latest).
    fn snapshot_at(&self, nth: i64) -> Result<Option<Snapshot>, StoreError> {
        self.conn
            .query_row(
                "SELECT upto_seq, at_ms, json FROM snapshots ORDER BY upto_seq DESC LIMIT 1 OFFSET ?1",
                [nth],
                |row| Ok(Snapshot { upto_seq: row.get(0)?, at_ms: row.get(1)?, json: row.get(2)? }),
            )
            .optional()
            .map_err(sql("load"))
    }

    fn load_from(&self, snapshot: Option<Snapshot>) -> Result<Loaded, StoreError> {
        let after = snapshot.as_ref().map_or(0, |s| s.upto_seq);
        let inputs = query_all(
            &self.conn,
            "SELECT seq, at_ms, kind, json FROM inputs WHERE seq > ?1 ORDER BY seq",
            &[&after],
            |row| {
                Ok(LoggedInput { seq: row.get(0)?, at_ms: row.get(1)?, kind: row.get(2)?, json: row.get(3)? })
            },
        )
        .map_err(sql("load"))?;
        for (expected, input) in (after + 1..).zip(&inputs) {
            if input.seq != expected {
                return Err(StoreError::ReplayGap { expected, found: input.seq });
            }
        }
        Ok(Loaded { snapshot, inputs })
    }

    /// The stored state of one case, `None` if unknown (or pruned).
    pub fn case(&self, case_id: u64) -> Result<Option<StoredCase>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {CASE_COLUMNS} FROM cases WHERE case_id = ?1"),
                [case_id],
                stored_case,
            )
            .optional()
            .map_err(sql("case"))
    }

    /// The transitions of one case, oldest first (by time, then by the order they were
    /// committed in).
    pub fn timeline(&self, case_id: u64) -> Result<Vec<StoredTransition>, StoreError> {
        query_all(
            &self.conn,
            "SELECT seq, at_ms, kind, json FROM transitions WHERE case_id = ?1 ORDER BY at_ms, id",
            &[&case_id],
            |row| {
                Ok(StoredTransition {
                    seq: row.get(0)?,
                    at_ms: row.get(1)?,
                    kind: row.get(2)?,
                    json: row.get(3)?,
                })
            },
        )
        .map_err(sql("timeline"))
    }

    /// The cases `filter` selects, newest opened first.
    pub fn list(&self, filter: &CaseFilter) -> Result<Vec<StoredCase>, StoreError> {
        // The WHERE clause is put together from fixed fragments, one per filter given, and
        // every value is a bound parameter. A single statement with `(?1 IS NULL OR street =
        // ?1)` for every field would be simpler but keeps SQLite from using the indexes.
        let mut sql_text = format!("SELECT {CASE_COLUMNS} FROM cases WHERE 1 = 1");
        let mut values: Vec<&dyn ToSql> = Vec::new();
        match filter.state {
            CaseState::Any => {}
            CaseState::Open => sql_text.push_str(" AND closed_ms IS NULL"),
            CaseState::Closed => sql_text.push_str(" AND closed_ms IS NOT NULL"),
        }
        let text_fields = [
            (" AND stage = ?", &filter.stage),
            (" AND severity = ?", &filter.severity),
            (" AND street = ?", &filter.street),
            (" AND community = ?", &filter.community),
            (" AND grid = ?", &filter.grid),
        ];
        for (fragment, value) in text_fields {
            if let Some(value) = value {
                sql_text.push_str(fragment);
                values.push(value);
            }
        }
        if let Some(since) = &filter.opened_since_ms {
            sql_text.push_str(" AND opened_ms >= ?");
            values.push(since);
        }
        if let Some(until) = &filter.opened_until_ms {
            sql_text.push_str(" AND opened_ms < ?");
            values.push(until);
        }
        let limit = filter.limit.unwrap_or(DEFAULT_LIST_LIMIT).min(MAX_LIST_LIMIT);
        sql_text.push_str(" ORDER BY opened_ms DESC, case_id DESC LIMIT ?");
        values.push(&limit);
        query_all(&self.conn, &sql_text, &values, stored_case).map_err(sql("list"))
    }

    /// Officer actions handled at or after `since_ms`, oldest first, at most `limit`.
    pub fn audit_log(&self, since_ms: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        query_all(
            &self.conn,
            "SELECT seq, at_ms, kind, actor, origin, json FROM inputs \
             WHERE actor IS NOT NULL AND at_ms >= ?1 ORDER BY seq LIMIT ?2",
            &[&since_ms, &limit],
            |row| {
                Ok(AuditEntry {
                    seq: row.get(0)?,
                    at_ms: row.get(1)?,
                    kind: row.get(2)?,
                    actor: row.get(3)?,
                    origin: row.get(4)?,
                    json: row.get(5)?,
                })
            },
        )
        .map_err(sql("audit log"))
    }

    /// Deletes what is older than `retention` at `now_ms`: closed cases closed before then,
    /// with their transitions, and logged inputs handled before then that every kept snapshot
    /// already covers. Open cases and the inputs a replay needs are never deleted, however
    /// old. The freed pages are returned to the file system.
    pub fn prune(&mut self, now_ms: u64, retention: Duration) -> Result<Pruned, StoreError> {
        let cutoff = now_ms.saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));
        let pruned = prune_before(&mut self.conn, cutoff).map_err(sql("prune"))?;
        if pruned != Pruned::default() {
            // Outside the transaction: incremental vacuum moves pages and truncates the file.
            self.conn.execute_batch("PRAGMA incremental_vacuum").map_err(sql("prune"))?;
        }
        Ok(pruned)
    }

    /// Counts and size, for metrics.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let counts = || -> rusqlite::Result<StoreStats> {
            let last_seq = last_seq(&self.conn)?;
            let snapshot_seq = snapshot_seqs(&self.conn)?.first().copied();
            let (inputs, inputs_since_snapshot): (u64, u64) = self.conn.query_row(
                "SELECT count(*), count(*) FILTER (WHERE seq > ?1) FROM inputs",
                [snapshot_seq.unwrap_or(0)],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?;
            let (open_cases, closed_cases): (u64, u64) = self.conn.query_row(
                "SELECT count(*) FILTER (WHERE closed_ms IS NULL), \
                        count(*) FILTER (WHERE closed_ms IS NOT NULL) FROM cases",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?;
            Ok(StoreStats {
                inputs,
                last_seq,
                snapshot_seq,
                inputs_since_snapshot,
                open_cases,
                closed_cases,
                file_bytes: 0,
            })
        };
        let mut stats = counts().map_err(sql("stats"))?;
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        // A file that cannot be read counts as empty: this is a gauge, not a check.
        stats.file_bytes = [self.path.as_os_str(), wal.as_os_str()]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        Ok(stats)
    }
}

const CASE_COLUMNS: &str =
    "case_id, opened_ms, closed_ms, stage, severity, street, community, grid, building, updated_seq, json";

fn stored_case(row: &Row<'_>) -> rusqlite::Result<StoredCase> {
    Ok(StoredCase {
        case_id: row.get(0)?,
        opened_ms: row.get(1)?,
        closed_ms: row.get(2)?,
        stage: row.get(3)?,
        severity: row.get(4)?,
        street: row.get(5)?,
        community: row.get(6)?,
        grid: row.get(7)?,
        building: row.get(8)?,
        updated_seq: row.get(9)?,
        json: row.get(10)?,
    })
}

fn query_all<T>(
    conn: &Connection,
    sql_text: &str,
    values: &[&dyn ToSql],
    map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql_text)?;
    stmt.query_map(values, map)?.collect()
}

/// The last seq handed out, from SQLite's AUTOINCREMENT counter: it survives the pruning of
/// the inputs themselves.
fn last_seq(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT seq FROM sqlite_sequence WHERE name = 'inputs'", [], |row| row.get(0))
        .optional()
        .map(Option::unwrap_or_default)
}

/// The kept snapshots' `upto_seq`, newest first.
fn snapshot_seqs(conn: &Connection) -> rusqlite::Result<Vec<u64>> {
    query_all(conn, "SELECT upto_seq FROM snapshots ORDER BY upto_seq DESC", &[], |row| row.get(0))
}

fn commit_steps(conn: &mut Connection, steps: &[Step<'_>]) -> rusqlite::Result<u64> {
    // IMMEDIATE takes the write lock at the start, so a busy file shows at BEGIN and the
    // busy timeout applies, instead of failing midway when a read would upgrade to a write.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut seq = 0;
    {
        let mut input = tx.prepare_cached(
            "INSERT INTO inputs (at_ms, kind, actor, origin, json) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut transition = tx.prepare_cached(
            "INSERT INTO transitions (seq, case_id, at_ms, kind, json) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut case = tx.prepare_cached(
            "INSERT INTO cases (case_id, opened_ms, closed_ms, stage, severity, street, community, grid, \
                                building, updated_seq, json) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
             ON CONFLICT (case_id) DO UPDATE SET \
                opened_ms = excluded.opened_ms, closed_ms = excluded.closed_ms, stage = excluded.stage, \
                severity = excluded.severity, street = excluded.street, community = excluded.community, \
                grid = excluded.grid, building = excluded.building, updated_seq = excluded.updated_seq, \
                json = excluded.json",
        )?;
        for step in steps {
            let (actor, origin) = step.audit.map(|a| (&a.actor, &a.origin)).unzip();
            seq = input.insert(params![step.at_ms, step.kind, actor, origin, step.input_json])?;
            for t in step.transitions {
                transition.execute(params![seq, t.case_id, t.at_ms, t.kind, t.json])?;
            }
            for c in step.cases {
                case.execute(params![
                    c.case_id,
                    c.opened_ms,
                    c.closed_ms,
                    c.stage,
                    c.severity,
                    c.street,
                    c.community,
                    c.grid,
                    c.building,
                    seq,
                    c.json
                ])?;
            }
        }
    }
    tx.commit()?;
    // A rowid is never negative.
    Ok(seq as u64)
}

fn prune_before(conn: &mut Connection, cutoff_ms: u64) -> rusqlite::Result<Pruned> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let transitions = tx.execute(
        "DELETE FROM transitions WHERE case_id IN \
         (SELECT case_id FROM cases WHERE closed_ms IS NOT NULL AND closed_ms < ?1)",
        [cutoff_ms],
    )?;
    let cases =
        tx.execute("DELETE FROM cases WHERE closed_ms IS NOT NULL AND closed_ms < ?1", [cutoff_ms])?;
    // A replay may start from any kept snapshot (the latest or its fallback), so only what the
    // oldest kept one covers is no longer needed. Without a snapshot every input is needed.
    let inputs = match snapshot_seqs(&tx)?.last() {
        Some(&covered) => {
            tx.execute("DELETE FROM inputs WHERE seq <= ?1 AND at_ms < ?2", [covered, cutoff_ms])?
        }
        None => 0,
    };
    tx.commit()?;
    Ok(Pruned { cases: cases as u64, transitions: transitions as u64, inputs: inputs as u64 })
}
