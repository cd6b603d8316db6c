//! The durable store of the alarm cases: the event log that makes the alarm engine survive a
//! restart, and the record of every case that the officer API queries.
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
//! queries filter on. It has two backends with one schema and the same semantics: an SQLite
//! file, the embedded default ([`CaseStore::open`]), and a PostgreSQL database
//! ([`CaseStore::open_postgres`]), for a street or district tier whose database is replicated
//! and backed up apart from the gateway's disk. Either is blocking, and one owner drives it:
//! the gateway runs it on a dedicated thread (or inside `spawn_blocking`) and sends it
//! requests. The synchronous `postgres` client drives its connection on a runtime of its own,
//! which panics on a thread that already runs async tasks, so the store must never be called
//! from one. The store is `Send` but not `Sync`, which the compiler enforces.
//!
//! Main types: [`CaseStore`], [`Step`] with its [`TransitionRow`]s and [`CaseRow`]s, [`Loaded`],
//! [`CaseFilter`], [`StoreError`].

use std::path::{Path, PathBuf};
use std::time::Duration;

mod postgres;
mod shared_outbox;
mod sqlite;

pub use postgres::LeaseRenewer;

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;

/// The schema this code writes, kept in `PRAGMA user_version` (SQLite) or the `case_store`
/// table (PostgreSQL). A store with a higher number was written by a newer gateway and is
/// refused rather than misread.
pub const SCHEMA_VERSION: i64 = 1;

/// Rows [`CaseStore::list`] returns when the filter names no limit.
pub const DEFAULT_LIST_LIMIT: u32 = 100;

/// The most rows [`CaseStore::list`] returns, whatever the filter asks.
pub const MAX_LIST_LIMIT: u32 = 1000;

// If the latest snapshot cannot be decoded (a serialisation bug that shows only after an
// upgrade), the previous one plus a longer replay still restores the engine without loss. One
// snapshot more costs a few kilobytes, and pruning keeps the inputs that replay needs.
const SNAPSHOTS_KEPT: i64 = 2;

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
    /// The store was written by a newer gateway, whose schema this one does not know.
    #[error(
        "case store {store} has schema version {found}, but this gateway knows only up to \
         {supported}: run the newer gateway, or start on an empty store (move the file away, \
         or drop the tables)"
    )]
    NewerSchema {
        /// The file, or the PostgreSQL database (`user@host:port/dbname`, never the password).
        store: String,
        /// The store's version: `PRAGMA user_version` of the file, `schema_version` of the
        /// `case_store` table in PostgreSQL.
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
    /// An operation on a PostgreSQL store failed: the server unreachable, a login refused, the
    /// connection lost, a full disk on the server. The message names the database as
    /// `user@host:port/dbname` and never carries the password, which is neither in the
    /// connection string shown nor in PostgreSQL's own messages.
    #[error("case store {operation} on PostgreSQL {database}: {}", with_causes(source))]
    Postgres {
        /// What the store was doing, e.g. `"commit"`.
        operation: &'static str,
        /// Which database.
        database: String,
        /// The client's error.
        source: ::postgres::Error,
    },
    /// Another gateway writes this PostgreSQL store: it holds the store's writer lock (a
    /// session-level advisory lock, released when its connection ends). Two gateways on one
    /// store would each run their own alarm loop over the same cases.
    #[error(
        "case store on PostgreSQL {database} is held by another gateway (backend pid {holder}): \
         one gateway writes a village's store; stop the other, or wait for its connection to end"
    )]
    Held {
        /// Which database.
        database: String,
        /// The PostgreSQL backend process of the session holding the lock, to find it in
        /// `pg_stat_activity`; 0 when it ended meanwhile.
        holder: i32,
    },
    /// The TLS settings and the connection string disagree; nothing was sent.
    #[error("case store on PostgreSQL {database}: TLS: {problem}")]
    Tls {
        /// Which database.
        database: String,
        /// What disagrees.
        problem: &'static str,
    },
    /// Another gateway took this PostgreSQL store since this one opened it: the store's lease
    /// has a newer epoch, and the write was refused in its own transaction. A gateway that
    /// sees this has been replaced and must stop acting (a frozen one that woke up).
    #[error(
        "case store on PostgreSQL {database} was taken over by another gateway (epoch {current}, \
         this gateway's was {epoch}): this gateway may no longer write it"
    )]
    Fenced {
        /// Which database.
        database: String,
        /// The epoch this gateway wrote under.
        epoch: u64,
        /// The epoch stored now (0 if none).
        current: u64,
    },
    /// A number handed to the PostgreSQL store does not fit its signed 64-bit `bigint` (SQLite
    /// refuses the same numbers with a [`StoreError::Sqlite`]).
    #[error("case store {operation}: {value} is too large for a PostgreSQL bigint")]
    OutOfRange {
        /// What the store was doing.
        operation: &'static str,
        /// The number.
        value: u64,
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
    /// The database file and its write-ahead log on disk (SQLite), or the store's tables with
    /// their indexes and TOAST data (PostgreSQL).
    pub file_bytes: u64,
}

/// The client's error with its causes: rust-postgres shows only its kind ("db error", "error
/// performing TLS handshake"), and what an operator needs (the server's `FATAL: password
/// authentication failed`, the certificate rustls refused) is in the causes.
fn with_causes(error: &::postgres::Error) -> String {
    let mut shown = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(next) = cause {
        shown.push_str(": ");
        shown.push_str(&next.to_string());
        cause = next.source();
    }
    shown
}

/// How [`CaseStore::open_postgres_with`] reaches and holds a PostgreSQL store.
#[derive(Clone)]
pub struct PostgresOptions {
    /// The password; it replaces one in the connection string.
    pub password: Option<String>,
    /// How long opening waits for the store's writer lock ([`StoreError::Held`] after that);
    /// `Duration::MAX`: as long as it takes (a standby).
    pub wait: std::time::Duration,
    /// How long the store's lease lasts without a renewal; `None`: for ever.
    pub lease: Option<std::time::Duration>,
    /// TLS for every connection: the server's certificate checked against these roots and
    /// the host name, no fallback to plain text. `None`: plain TCP (a warning is logged unless
    /// every host is a Unix socket or a loopback address).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions { password: None, wait: postgres::OPEN_WAIT, lease: None, tls: None }
    }
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("PostgresOptions")
            .field("password", &self.password.as_ref().map(|_| "(set)"))
            .field("wait", &self.wait)
            .field("lease", &self.lease)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// The durable store of the alarm cases, on SQLite or PostgreSQL. One owner drives it; see the
/// module docs.
#[derive(Debug)]
pub struct CaseStore {
    backend: Box<dyn Backend>,
}

impl CaseStore {
    /// Opens the SQLite store at `path`, creating the file, its parent directory and the
    /// schema if missing. Refuses a file written by a newer gateway
    /// ([`StoreError::NewerSchema`]).
    pub fn open(path: impl AsRef<Path>) -> Result<CaseStore, StoreError> {
        Ok(CaseStore { backend: Box::new(sqlite::SqliteStore::open(path.as_ref())?) })
    }

    /// Opens the PostgreSQL store in the database that `conninfo` names (a libpq connection
    /// string, `host=db.example port=5432 user=firegrid dbname=firegrid`, or a
    /// `postgresql://` URL), creating the schema if missing, and logging in with `password`
    /// when given (it replaces one in `conninfo`). Refuses a database written by a newer
    /// gateway ([`StoreError::NewerSchema`]). Must not be called on an async task's thread
    /// (module docs).
    pub fn open_postgres(conninfo: &str, password: Option<&str>) -> Result<CaseStore, StoreError> {
        Self::open_postgres_within(conninfo, password, postgres::OPEN_WAIT)
    }

    /// As [`open_postgres`](Self::open_postgres), waiting at most `wait` for the store's
    /// writer lock ([`StoreError::Held`] after that): one gateway writes a store, and the
    /// session of one that just died may take a moment to end.
    pub fn open_postgres_within(
        conninfo: &str,
        password: Option<&str>,
        wait: std::time::Duration,
    ) -> Result<CaseStore, StoreError> {
        let options =
            PostgresOptions { password: password.map(str::to_owned), wait, ..PostgresOptions::default() };
        Self::open_postgres_with(conninfo, &options)
    }

    /// As [`open_postgres`](Self::open_postgres), with every setting of [`PostgresOptions`]:
    /// the wait for the writer lock, the lease, TLS.
    ///
    /// With a lease length, the store's lease is taken for that long at a time (`None`: for
    /// ever). The holder must renew it ([`lease_renewer`](Self::lease_renewer)) well within
    /// that: once it has expired on the server's clock, a gateway waiting for the store ends
    /// this one's session and takes over. Every store opened bumps the lease's epoch, and
    /// every write checks it ([`StoreError::Fenced`]).
    ///
    /// A connection string may name several servers (`host=db1,db2 port=5432,5432
    /// target_session_attrs=read-write`): every connection, including the reconnection after a
    /// lost one, goes to the first that accepts writes, so the store follows a standby that
    /// was promoted, without a restart.
    pub fn open_postgres_with(conninfo: &str, options: &PostgresOptions) -> Result<CaseStore, StoreError> {
        Ok(CaseStore { backend: Box::new(postgres::PostgresStore::open(conninfo, options)?) })
    }

    /// The lease epoch this store writes under (PostgreSQL); `None` for SQLite.
    pub fn epoch(&self) -> Option<u64> {
        self.backend.epoch()
    }

    /// A renewer of the store's lease, on a connection of its own; `None` for SQLite and for
    /// a store opened without a lease length.
    pub fn lease_renewer(&self) -> Option<LeaseRenewer> {
        self.backend.renewer()
    }

    /// The notification outbox's table in this store's database, written under this store's
    /// epoch (fenced like every write of the case store), for
    /// [`Outbox::open_shared`](firegrid_notify::Outbox::open_shared): on PostgreSQL, so that
    /// whoever holds the case store holds the outbox. `None` for SQLite, whose outbox is a file
    /// of its own beside it, and before the store first held its writer lock.
    pub fn shared_outbox(&self) -> Option<Box<dyn firegrid_notify::outbox::SharedTable>> {
        self.backend.shared_outbox()
    }

    /// The file this store lives in; `None` for PostgreSQL.
    pub fn path(&self) -> Option<&Path> {
        self.backend.path()
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
            return self.backend.last_seq();
        }
        self.backend.commit_steps(steps)
    }

    /// Saves the engine's state after every input up to `upto_seq`, keeping the previous
    /// snapshot as a fallback ([`CaseStore::load_previous`]) and deleting older ones.
    pub fn save_snapshot(&mut self, upto_seq: u64, at_ms: u64, json: &str) -> Result<(), StoreError> {
        check_json("snapshot", json)?;
        self.backend.save_snapshot(upto_seq, at_ms, json)
    }

    /// What a restart replays: the latest snapshot and the inputs after it, in seq order.
    /// Fails with [`StoreError::ReplayGap`] rather than return a log with a hole.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let snapshot = self.backend.snapshot_at(0)?;
        self.load_from(snapshot)
    }

    /// Like [`CaseStore::load`] but from the snapshot before the latest, for when the latest
    /// cannot be decoded. `None` if fewer than two snapshots were saved.
    pub fn load_previous(&self) -> Result<Option<Loaded>, StoreError> {
        match self.backend.snapshot_at(1)? {
            Some(snapshot) => self.load_from(Some(snapshot)).map(Some),
            None => Ok(None),
        }
    }

    fn load_from(&self, snapshot: Option<Snapshot>) -> Result<Loaded, StoreError> {
        let after = snapshot.as_ref().map_or(0, |s| s.upto_seq);
        let inputs = self.backend.inputs_after(after)?;
        for (expected, input) in (after + 1..).zip(&inputs) {
            if input.seq != expected {
                return Err(StoreError::ReplayGap { expected, found: input.seq });
            }
        }
        Ok(Loaded { snapshot, inputs })
    }

    /// The stored state of one case, `None` if unknown (or pruned).
    pub fn case(&self, case_id: u64) -> Result<Option<StoredCase>, StoreError> {
        self.backend.case(case_id)
    }

    /// The transitions of one case, oldest first (by time, then by the order they were
    /// committed in).
    pub fn timeline(&self, case_id: u64) -> Result<Vec<StoredTransition>, StoreError> {
        self.backend.timeline(case_id)
    }

    /// The cases `filter` selects, newest opened first.
    pub fn list(&self, filter: &CaseFilter) -> Result<Vec<StoredCase>, StoreError> {
        // The WHERE clause is put together from fixed fragments, one per filter given, and
        // every value is a bound parameter. A single statement with `($1 IS NULL OR street =
        // $1)` for every field would be simpler but keeps the databases from using the indexes.
        let mut sql_text = format!("SELECT {CASE_COLUMNS} FROM cases WHERE 1 = 1");
        let mut values = Vec::new();
        match filter.state {
            CaseState::Any => {}
            CaseState::Open => sql_text.push_str(" AND closed_ms IS NULL"),
            CaseState::Closed => sql_text.push_str(" AND closed_ms IS NOT NULL"),
        }
        let text_fields = [
            ("stage =", &filter.stage),
            ("severity =", &filter.severity),
            ("street =", &filter.street),
            ("community =", &filter.community),
            ("grid =", &filter.grid),
        ];
        for (column, value) in text_fields {
            if let Some(value) = value {
                values.push(FilterValue::Text(value));
                sql_text.push_str(&format!(" AND {column} ${}", values.len()));
            }
        }
        for (column, value) in
            [("opened_ms >=", filter.opened_since_ms), ("opened_ms <", filter.opened_until_ms)]
        {
            if let Some(value) = value {
                values.push(FilterValue::Integer(value));
                sql_text.push_str(&format!(" AND {column} ${}", values.len()));
            }
        }
        let limit = filter.limit.unwrap_or(DEFAULT_LIST_LIMIT).min(MAX_LIST_LIMIT);
        values.push(FilterValue::Integer(limit.into()));
        sql_text.push_str(&format!(" ORDER BY opened_ms DESC, case_id DESC LIMIT ${}", values.len()));
        self.backend.list(&sql_text, &values)
    }

    /// Officer actions handled at or after `since_ms`, oldest first, at most `limit`.
    pub fn audit_log(&self, since_ms: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        self.backend.audit_log(since_ms, limit)
    }

    /// Deletes what is older than `retention` at `now_ms`: closed cases closed before then,
    /// with their transitions, and logged inputs handled before then that every kept snapshot
    /// already covers. Open cases and the inputs a replay needs are never deleted, however
    /// old. The space is given back: SQLite returns the freed pages to the file system,
    /// PostgreSQL's autovacuum makes them reusable.
    pub fn prune(&mut self, now_ms: u64, retention: Duration) -> Result<Pruned, StoreError> {
        let cutoff = now_ms.saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));
        self.backend.prune_before(cutoff)
    }

    /// Counts and size, for metrics.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        self.backend.stats()
    }
}

/// What the tests look at beneath the API.
#[cfg(test)]
impl CaseStore {
    /// Runs a query whose columns are all integers (`count(*)`, seqs); a `DELETE` with
    /// `RETURNING` edits the store behind its back.
    fn integers(&mut self, sql_text: &str) -> Vec<Vec<i64>> {
        self.backend.integers(sql_text)
    }

    fn schema_version(&mut self) -> i64 {
        self.backend.schema_version()
    }

    fn set_schema_version(&mut self, version: i64) {
        self.backend.set_schema_version(version)
    }

    /// The SQLite connection; panics on another backend.
    fn sqlite_conn(&self) -> &rusqlite::Connection {
        let debug = format!("{:?}", self.backend);
        self.backend.sqlite().unwrap_or_else(|| panic!("not an SQLite store: {debug}"))
    }
}

/// What a backend does; [`CaseStore`] checks its arguments and shares the logic that does not
/// depend on the database.
trait Backend: std::fmt::Debug + Send {
    fn path(&self) -> Option<&Path>;
    /// The last seq handed out, surviving the pruning of the inputs themselves.
    fn last_seq(&self) -> Result<u64, StoreError>;
    /// Commits a non-empty batch in one transaction; returns the last seq.
    fn commit_steps(&mut self, steps: &[Step<'_>]) -> Result<u64, StoreError>;
    /// Saves a snapshot after [`check_snapshot`], in one transaction.
    fn save_snapshot(&mut self, upto_seq: u64, at_ms: u64, json: &str) -> Result<(), StoreError>;
    /// The `nth` newest snapshot (0 is the latest).
    fn snapshot_at(&self, nth: i64) -> Result<Option<Snapshot>, StoreError>;
    /// The inputs after seq `after`, in seq order.
    fn inputs_after(&self, after: u64) -> Result<Vec<LoggedInput>, StoreError>;
    fn case(&self, case_id: u64) -> Result<Option<StoredCase>, StoreError>;
    fn timeline(&self, case_id: u64) -> Result<Vec<StoredTransition>, StoreError>;
    /// Runs the query [`CaseStore::list`] put together, its `$n` bound to `values[n - 1]`.
    fn list(&self, sql_text: &str, values: &[FilterValue<'_>]) -> Result<Vec<StoredCase>, StoreError>;
    fn audit_log(&self, since_ms: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;
    /// Deletes what [`CaseStore::prune`] says, with `cutoff_ms` worked out, in one transaction.
    fn prune_before(&mut self, cutoff_ms: u64) -> Result<Pruned, StoreError>;
    fn stats(&self) -> Result<StoreStats, StoreError>;
    /// The lease epoch the backend writes under, if it has one.
    fn epoch(&self) -> Option<u64> {
        None
    }
    /// A renewer of the backend's lease, if it has one with a length.
    fn renewer(&self) -> Option<LeaseRenewer> {
        None
    }
    /// The notification outbox's table in the same database, written under the same epoch.
    fn shared_outbox(&self) -> Option<Box<dyn firegrid_notify::outbox::SharedTable>> {
        None
    }

    /// Runs a query whose columns are all integers, for tests that look beneath the API.
    #[cfg(test)]
    fn integers(&mut self, sql_text: &str) -> Vec<Vec<i64>>;
    #[cfg(test)]
    fn schema_version(&mut self) -> i64;
    #[cfg(test)]
    fn set_schema_version(&mut self, version: i64);
    /// The SQLite connection, on that backend.
    #[cfg(test)]
    fn sqlite(&self) -> Option<&rusqlite::Connection> {
        None
    }
}

/// A value bound in [`CaseStore::list`]'s query.
#[derive(Debug, Clone, Copy)]
enum FilterValue<'a> {
    Text(&'a str),
    Integer(u64),
}

/// Refuses a snapshot ahead of the log or behind the latest one.
fn check_snapshot(upto_seq: u64, last_seq: u64, latest: Option<u64>) -> Result<(), StoreError> {
    if upto_seq > last_seq {
        return Err(StoreError::SnapshotAhead { upto_seq, last_seq });
    }
    if let Some(latest) = latest
        && upto_seq < latest
    {
        return Err(StoreError::SnapshotBehind { upto_seq, latest });
    }
    Ok(())
}

/// The schema, version [`SCHEMA_VERSION`], in a backend's dialect: `integer` is its 64-bit
/// integer type, `seq_key` the input log's key, `row_key` the transitions' own numbering.
fn schema(integer: &str, seq_key: &str, row_key: &str) -> String {
    SCHEMA.replace("{seq_key}", seq_key).replace("{row_key}", row_key).replace("{int}", integer)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS inputs (
    seq    {seq_key},
    at_ms  {int} NOT NULL,
    kind   TEXT  NOT NULL,
    actor  TEXT,
    origin TEXT,
    json   TEXT  NOT NULL
);
CREATE INDEX IF NOT EXISTS inputs_audit ON inputs (at_ms) WHERE actor IS NOT NULL;

CREATE TABLE IF NOT EXISTS transitions (
    id      {row_key},
    seq     {int} NOT NULL,
    case_id {int} NOT NULL,
    at_ms   {int} NOT NULL,
    kind    TEXT  NOT NULL,
    json    TEXT  NOT NULL
);
CREATE INDEX IF NOT EXISTS transitions_case ON transitions (case_id, at_ms, id);

CREATE TABLE IF NOT EXISTS cases (
    case_id     {int} PRIMARY KEY,
    opened_ms   {int} NOT NULL,
    closed_ms   {int},
    stage       TEXT  NOT NULL,
    severity    TEXT  NOT NULL,
    street      TEXT  NOT NULL,
    community   TEXT  NOT NULL,
    grid        TEXT  NOT NULL,
    building    TEXT  NOT NULL,
    updated_seq {int} NOT NULL,
    json        TEXT  NOT NULL
);
CREATE INDEX IF NOT EXISTS cases_opened ON cases (opened_ms, case_id);
CREATE INDEX IF NOT EXISTS cases_closed ON cases (closed_ms);
CREATE INDEX IF NOT EXISTS cases_street ON cases (street, opened_ms);
CREATE INDEX IF NOT EXISTS cases_community ON cases (community, opened_ms);
CREATE INDEX IF NOT EXISTS cases_grid ON cases (grid, opened_ms);

CREATE TABLE IF NOT EXISTS snapshots (
    upto_seq {int} PRIMARY KEY,
    at_ms    {int} NOT NULL,
    json     TEXT  NOT NULL
);
";

// The statements both backends run as they are. SQLite numbers `$N` parameters in the order
// they first appear (sqlite.org/lang_expr.html, "Parameters"), PostgreSQL by N, so they agree
// where the numbers first appear in ascending order, as here.

const CASE_COLUMNS: &str =
    "case_id, opened_ms, closed_ms, stage, severity, street, community, grid, building, updated_seq, json";

/// Inserts transitions, their rows given as `rows` (`VALUES` or a `SELECT`).
fn insert_transitions(rows: &str) -> String {
    format!("INSERT INTO transitions (seq, case_id, at_ms, kind, json) {rows}")
}

/// Inserts or replaces cases, their rows (in [`CASE_COLUMNS`] order) given as `rows`.
fn upsert_cases(rows: &str) -> String {
    format!(
        "INSERT INTO cases ({CASE_COLUMNS}) {rows} \
         ON CONFLICT (case_id) DO UPDATE SET \
            opened_ms = excluded.opened_ms, closed_ms = excluded.closed_ms, stage = excluded.stage, \
            severity = excluded.severity, street = excluded.street, community = excluded.community, \
            grid = excluded.grid, building = excluded.building, updated_seq = excluded.updated_seq, \
            json = excluded.json"
    )
}

const PRUNE_TRANSITIONS: &str = "DELETE FROM transitions WHERE case_id IN \
     (SELECT case_id FROM cases WHERE closed_ms IS NOT NULL AND closed_ms < $1)";

const PRUNE_CASES: &str = "DELETE FROM cases WHERE closed_ms IS NOT NULL AND closed_ms < $1";

const PRUNE_INPUTS: &str = "DELETE FROM inputs WHERE seq <= $1 AND at_ms < $2";

/// Keeps the latest `SNAPSHOTS_KEPT` snapshots.
const DELETE_OLD_SNAPSHOTS: &str = "DELETE FROM snapshots WHERE upto_seq NOT IN \
     (SELECT upto_seq FROM snapshots ORDER BY upto_seq DESC LIMIT $1)";

const SAVE_SNAPSHOT: &str = "INSERT INTO snapshots (upto_seq, at_ms, json) VALUES ($1, $2, $3) \
     ON CONFLICT (upto_seq) DO UPDATE SET at_ms = excluded.at_ms, json = excluded.json";

/// The `nth` newest snapshot.
const SNAPSHOT_AT: &str =
    "SELECT upto_seq, at_ms, json FROM snapshots ORDER BY upto_seq DESC LIMIT 1 OFFSET $1";

const INPUTS_AFTER: &str = "SELECT seq, at_ms, kind, json FROM inputs WHERE seq > $1 ORDER BY seq";

const TIMELINE: &str = "SELECT seq, at_ms, kind, json FROM transitions WHERE case_id = $1 ORDER BY at_ms, id";

const AUDIT_LOG: &str = "SELECT seq, at_ms, kind, actor, origin, json FROM inputs \
     WHERE actor IS NOT NULL AND at_ms >= $1 ORDER BY seq LIMIT $2";

const SNAPSHOT_SEQS: &str = "SELECT upto_seq FROM snapshots ORDER BY upto_seq DESC";

const COUNT_INPUTS: &str = "SELECT count(*), count(*) FILTER (WHERE seq > $1) FROM inputs";

const COUNT_CASES: &str = "SELECT count(*) FILTER (WHERE closed_ms IS NULL), \
     count(*) FILTER (WHERE closed_ms IS NOT NULL) FROM cases";

/// A result row of either backend, read column by column, so that each row type is put
/// together in one place.
trait Columns {
    type Error;
    fn number(&self, column: usize) -> Result<u64, Self::Error>;
    fn optional_number(&self, column: usize) -> Result<Option<u64>, Self::Error>;
    fn text(&self, column: usize) -> Result<String, Self::Error>;
}

impl Snapshot {
    /// From `upto_seq, at_ms, json`.
    fn read<R: Columns>(row: &R) -> Result<Snapshot, R::Error> {
        Ok(Snapshot { upto_seq: row.number(0)?, at_ms: row.number(1)?, json: row.text(2)? })
    }
}

impl LoggedInput {
    /// From `seq, at_ms, kind, json`.
    fn read<R: Columns>(row: &R) -> Result<LoggedInput, R::Error> {
        Ok(LoggedInput { seq: row.number(0)?, at_ms: row.number(1)?, kind: row.text(2)?, json: row.text(3)? })
    }
}

impl StoredTransition {
    /// From `seq, at_ms, kind, json`, like a logged input.
    fn read<R: Columns>(row: &R) -> Result<StoredTransition, R::Error> {
        let LoggedInput { seq, at_ms, kind, json } = LoggedInput::read(row)?;
        Ok(StoredTransition { seq, at_ms, kind, json })
    }
}

impl StoredCase {
    /// From [`CASE_COLUMNS`].
    fn read<R: Columns>(row: &R) -> Result<StoredCase, R::Error> {
        Ok(StoredCase {
            case_id: row.number(0)?,
            opened_ms: row.number(1)?,
            closed_ms: row.optional_number(2)?,
            stage: row.text(3)?,
            severity: row.text(4)?,
            street: row.text(5)?,
            community: row.text(6)?,
            grid: row.text(7)?,
            building: row.text(8)?,
            updated_seq: row.number(9)?,
            json: row.text(10)?,
        })
    }
}

impl AuditEntry {
    /// From `seq, at_ms, kind, actor, origin, json`.
    fn read<R: Columns>(row: &R) -> Result<AuditEntry, R::Error> {
        Ok(AuditEntry {
            seq: row.number(0)?,
            at_ms: row.number(1)?,
            kind: row.text(2)?,
            actor: row.text(3)?,
            origin: row.text(4)?,
            json: row.text(5)?,
        })
    }
}
