//! The embedded backend: one SQLite file (rusqlite, SQLite compiled in) in write-ahead-log
//! mode with every commit synced.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, ToSql, TransactionBehavior, params};

use super::{
    AuditEntry, Backend, CASE_COLUMNS, Columns, FilterValue, LoggedInput, Pruned, SCHEMA_VERSION,
    SNAPSHOTS_KEPT, Snapshot, Step, StoreError, StoreStats, StoredCase, StoredTransition, check_snapshot,
};

// Only one connection writes, so waiting on a lock means someone else has the file open: an
// operator's `sqlite3` shell or a backup. Five seconds rides out a backup step without
// stalling the alarm loop for long.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The tables in SQLite's dialect. `INTEGER PRIMARY KEY` makes the key the rowid;
/// AUTOINCREMENT on the input log, because a plain rowid restarts at max + 1, so after pruning
/// every logged input a new input could get a seq that the snapshot already covers and be
/// skipped on replay.
fn schema() -> String {
    super::schema("INTEGER", "INTEGER PRIMARY KEY AUTOINCREMENT", "INTEGER PRIMARY KEY")
}

/// Wraps SQLite's error with what the store was doing.
fn sql(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { operation, source }
}

/// The case store in one SQLite file.
#[derive(Debug)]
pub(super) struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens the file at `path`, creating it, its parent directory and the schema if missing.
    pub(super) fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let path = path.to_owned();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| StoreError::Dir { path: dir.to_owned(), source })?;
        }
        let open_err = |source| StoreError::Open { path: path.clone(), source };
        let mut conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let found: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(open_err)?;
        if found > SCHEMA_VERSION {
            let store = path.display().to_string();
            return Err(StoreError::NewerSchema { store, found, supported: SCHEMA_VERSION });
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
            tx.execute_batch(&schema()).map_err(open_err)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(open_err)?;
            tx.commit().map_err(open_err)?;
        }
        Ok(SqliteStore { conn, path })
    }
}

impl Backend for SqliteStore {
    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn last_seq(&self) -> Result<u64, StoreError> {
        last_seq(&self.conn).map_err(sql("commit"))
    }

    fn commit_steps(&mut self, steps: &[Step<'_>]) -> Result<u64, StoreError> {
        commit_steps(&mut self.conn, steps).map_err(sql("commit"))
    }

    fn save_snapshot(&mut self, upto_seq: u64, at_ms: u64, json: &str) -> Result<(), StoreError> {
        let tx =
            self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql("snapshot"))?;
        let last_seq = last_seq(&tx).map_err(sql("snapshot"))?;
        let latest = snapshot_seqs(&tx).map_err(sql("snapshot"))?.first().copied();
        check_snapshot(upto_seq, last_seq, latest)?;
        let save = || -> rusqlite::Result<()> {
            tx.execute(super::SAVE_SNAPSHOT, params![upto_seq, at_ms, json])?;
            tx.execute(super::DELETE_OLD_SNAPSHOTS, [SNAPSHOTS_KEPT])?;
            Ok(())
        };
        save().map_err(sql("snapshot"))?;
        tx.commit().map_err(sql("snapshot"))
    }

    fn snapshot_at(&self, nth: i64) -> Result<Option<Snapshot>, StoreError> {
        self.conn
            .query_row(super::SNAPSHOT_AT, [nth], |row| Snapshot::read(row))
            .optional()
            .map_err(sql("load"))
    }

    fn inputs_after(&self, after: u64) -> Result<Vec<LoggedInput>, StoreError> {
        query_all(&self.conn, super::INPUTS_AFTER, &[&after], |row| LoggedInput::read(row))
            .map_err(sql("load"))
    }

    fn case(&self, case_id: u64) -> Result<Option<StoredCase>, StoreError> {
        self.conn
            .query_row(&format!("SELECT {CASE_COLUMNS} FROM cases WHERE case_id = $1"), [case_id], |row| {
                StoredCase::read(row)
            })
            .optional()
            .map_err(sql("case"))
    }

    fn timeline(&self, case_id: u64) -> Result<Vec<StoredTransition>, StoreError> {
        query_all(&self.conn, super::TIMELINE, &[&case_id], |row| StoredTransition::read(row))
            .map_err(sql("timeline"))
    }

    fn list(&self, sql_text: &str, values: &[FilterValue<'_>]) -> Result<Vec<StoredCase>, StoreError> {
        let values: Vec<&dyn ToSql> = values
            .iter()
            .map(|value| match value {
                FilterValue::Text(text) => text as &dyn ToSql,
                FilterValue::Integer(number) => number as &dyn ToSql,
            })
            .collect();
        query_all(&self.conn, sql_text, &values, |row| StoredCase::read(row)).map_err(sql("list"))
    }

    fn audit_log(&self, since_ms: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        query_all(&self.conn, super::AUDIT_LOG, &[&since_ms, &limit], |row| AuditEntry::read(row))
            .map_err(sql("audit log"))
    }

    fn prune_before(&mut self, cutoff_ms: u64) -> Result<Pruned, StoreError> {
        let pruned = prune_before(&mut self.conn, cutoff_ms).map_err(sql("prune"))?;
        if pruned != Pruned::default() {
            // Outside the transaction: incremental vacuum moves pages and truncates the file,
            // returning the freed pages to the file system.
            self.conn.execute_batch("PRAGMA incremental_vacuum").map_err(sql("prune"))?;
        }
        Ok(pruned)
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        let counts = || -> rusqlite::Result<StoreStats> {
            let last_seq = last_seq(&self.conn)?;
            let snapshot_seq = snapshot_seqs(&self.conn)?.first().copied();
            let (inputs, inputs_since_snapshot): (u64, u64) =
                self.conn.query_row(super::COUNT_INPUTS, [snapshot_seq.unwrap_or(0)], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?;
            let (open_cases, closed_cases): (u64, u64) =
                self.conn.query_row(super::COUNT_CASES, [], |row| Ok((row.get(0)?, row.get(1)?)))?;
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

    #[cfg(test)]
    fn integers(&mut self, sql_text: &str) -> Vec<Vec<i64>> {
        let mut stmt = self.conn.prepare(sql_text).unwrap();
        let columns = stmt.column_count();
        stmt.query_map([], |row| (0..columns).map(|i| row.get(i)).collect())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[cfg(test)]
    fn sqlite(&self) -> Option<&Connection> {
        Some(&self.conn)
    }

    #[cfg(test)]
    fn schema_version(&mut self) -> i64 {
        self.conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap()
    }

    #[cfg(test)]
    fn set_schema_version(&mut self, version: i64) {
        self.conn.pragma_update(None, "user_version", version).unwrap();
    }
}

impl Columns for Row<'_> {
    type Error = rusqlite::Error;

    fn number(&self, column: usize) -> rusqlite::Result<u64> {
        self.get(column)
    }

    fn optional_number(&self, column: usize) -> rusqlite::Result<Option<u64>> {
        self.get(column)
    }

    fn text(&self, column: usize) -> rusqlite::Result<String> {
        self.get(column)
    }
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
    query_all(conn, super::SNAPSHOT_SEQS, &[], |row| row.get(0))
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
        let mut transition = tx.prepare_cached(&super::insert_transitions("VALUES ($1, $2, $3, $4, $5)"))?;
        let mut case =
            tx.prepare_cached(&super::upsert_cases("VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"))?;
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
    let transitions = tx.execute(super::PRUNE_TRANSITIONS, [cutoff_ms])?;
    let cases = tx.execute(super::PRUNE_CASES, [cutoff_ms])?;
    // A replay may start from any kept snapshot (the latest or its fallback), so only what the
    // oldest kept one covers is no longer needed. Without a snapshot every input is needed.
    let inputs = match snapshot_seqs(&tx)?.last() {
        Some(&covered) => tx.execute(super::PRUNE_INPUTS, [covered, cutoff_ms])?,
        None => 0,
    };
    tx.commit()?;
    Ok(Pruned { cases: cases as u64, transitions: transitions as u64, inputs: inputs as u64 })
}
