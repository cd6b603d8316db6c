//! The notification outbox's table in the case store's PostgreSQL database
//! (`notify_outbox`), so that the gateway that holds the store also holds the outbox: a
//! standby that takes over carries on with the old active's deliveries, and a former active
//! that returns has no stale rows of its own to send.
//!
//! `firegrid-notify` keeps the table's mirror in memory and queries only that
//! ([`firegrid_notify::outbox::SharedTable`]); this side loads the table, writes the rows a
//! write touched, and deletes what retention says. Every write runs in a transaction that
//! first locks the lease row (`FOR SHARE`) and compares its epoch with this store's, as every
//! commit of the case store does, so a gateway paused past its lease can never write again:
//! otherwise its stale engine could insert a notification id the new active then uses for
//! another page, and the new one's `INSERT OR IGNORE` would drop it.
//!
//! Its own connection (no writer lock: the fencing is the epoch), so deliveries never wait
//! for a case commit, nor a case commit for a delivery. A server that does not answer is
//! tried again at most every [`RECONNECT_EVERY`], and the outbox goes on in memory meanwhile.

use std::time::{Duration, Instant};

use firegrid_notify::OutboxError;
use firegrid_notify::outbox::store::{COLUMNS, Kind, Rows};
use postgres::Client;
use postgres::types::ToSql;
use rusqlite::types::Value;

use super::postgres::{Dialer, FENCE, SESSION};

/// The table: the SQLite outbox's columns, and the epoch of the gateway that last wrote
/// each row. Created with the lease table (before the case store's version is read) and
/// read by no older gateway.
pub(super) const TABLE: &str = "
CREATE TABLE IF NOT EXISTS notify_outbox (
    notification_id BIGINT NOT NULL,
    target          TEXT   NOT NULL,
    case_id         BIGINT NOT NULL,
    message         TEXT   NOT NULL,
    status          TEXT   NOT NULL
                    CHECK (status IN ('pending', 'delivered', 'dead', 'superseded')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    enqueued_ms     BIGINT NOT NULL,
    next_attempt_ms BIGINT NOT NULL,
    last_error      TEXT,
    finished_ms     BIGINT,
    priority        BIGINT NOT NULL DEFAULT 0,
    severity        TEXT   NOT NULL DEFAULT '',
    reminder_desk   TEXT,
    superseded_by   BIGINT,
    written_epoch   BIGINT NOT NULL,
    PRIMARY KEY (notification_id, target)
);
CREATE INDEX IF NOT EXISTS notify_outbox_finished ON notify_outbox (finished_ms) WHERE status <> 'pending';
";

/// How long after a failed connection the next one is tried: in between, a write fails at
/// once and the outbox stays in memory. A server whose machine is gone holds each attempt
/// for the connect timeout (5 s by default), during which the outbox cannot deliver; trying
/// at most this often bounds that share of the time.
pub const RECONNECT_EVERY: Duration = Duration::from_secs(10);

/// The outbox's table in the store's database, written under the store's epoch.
pub(super) struct SharedOutbox {
    dialer: Dialer,
    database: String,
    epoch: i64,
    client: Option<Client>,
    /// When the last connection attempt failed.
    failed_at: Option<Instant>,
}

impl SharedOutbox {
    pub(super) fn new(dialer: Dialer, database: String, epoch: i64) -> SharedOutbox {
        SharedOutbox { dialer, database, epoch, client: None, failed_at: None }
    }

    fn unavailable(&self, message: String) -> OutboxError {
        OutboxError::Unavailable { database: self.database.clone(), message }
    }

    /// The connection, opening one if there is none or it closed.
    fn client(&mut self) -> Result<&mut Client, OutboxError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        if self.client.is_none() {
            if let Some(at) = self.failed_at
                && at.elapsed() < RECONNECT_EVERY
            {
                return Err(
                    self.unavailable(format!("not reachable, tried {} s ago", at.elapsed().as_secs()))
                );
            }
            let opened = self.dialer.connect().and_then(|mut client| {
                client.batch_execute(SESSION)?;
                // A commit must be durable when it returns, as the case store's are.
                client.batch_execute("SET synchronous_commit = on")?;
                Ok(client)
            });
            match opened {
                Ok(client) => {
                    self.failed_at = None;
                    self.client = Some(client);
                }
                Err(error) => {
                    self.failed_at = Some(Instant::now());
                    return Err(self.unavailable(super::with_causes(&error)));
                }
            }
        }
        Ok(self.client.as_mut().expect("set above"))
    }

    /// Runs `f` in a transaction fenced by the epoch: [`OutboxError::Fenced`] when the lease
    /// row's epoch is not this store's, [`OutboxError::Unavailable`] when the server fails.
    fn fenced<T>(
        &mut self,
        f: impl FnOnce(&mut postgres::Transaction<'_>, i64) -> Result<T, postgres::Error>,
    ) -> Result<T, OutboxError> {
        let epoch = self.epoch;
        let client = self.client()?;
        let result = (|| {
            let mut tx = client.transaction()?;
            let stored: Option<i64> = tx.query_opt(FENCE, &[])?.map(|row| row.get(0));
            if stored != Some(epoch) {
                return Ok(Err(stored));
            }
            let value = f(&mut tx, epoch)?;
            tx.commit()?;
            Ok(Ok(value))
        })();
        let closed = client.is_closed();
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(stored)) => Err(OutboxError::Fenced {
                database: self.database.clone(),
                epoch: epoch as u64,
                current: stored.unwrap_or(0) as u64,
            }),
            Err(error) => {
                if closed {
                    self.client = None;
                }
                Err(self.unavailable(super::with_causes(&error)))
            }
        }
    }
}

/// The synchronous client runs a runtime of its own, and closing it on a thread that drives
/// async tasks panics; the outbox is shared by async tasks, so its last clone may well be
/// dropped on one. The connection is then closed on a thread of its own.
impl Drop for SharedOutbox {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                std::thread::spawn(move || drop(client));
            } else {
                drop(client);
            }
        }
    }
}

impl firegrid_notify::outbox::SharedTable for SharedOutbox {
    fn load(&mut self) -> Result<Rows, OutboxError> {
        let names: Vec<&str> = COLUMNS.iter().map(|(name, _)| *name).collect();
        let select = format!("SELECT {} FROM notify_outbox", names.join(", "));
        // Read under the fence too: a store that lost the lease must not start from a table
        // another gateway is writing.
        let rows = self.fenced(|tx, _| tx.query(&select, &[]))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut values = Vec::with_capacity(COLUMNS.len());
            for (i, (_, kind)) in COLUMNS.iter().enumerate() {
                let value = match kind {
                    Kind::Integer => {
                        row.try_get::<_, Option<i64>>(i).map(|v| v.map_or(Value::Null, Value::Integer))
                    }
                    Kind::Text => {
                        row.try_get::<_, Option<String>>(i).map(|v| v.map_or(Value::Null, Value::Text))
                    }
                };
                values.push(value.map_err(|e| self.unavailable(super::with_causes(&e)))?);
            }
            out.push(values);
        }
        Ok(Rows { columns: names.into_iter().map(str::to_owned).collect(), rows: out })
    }

    fn upsert(&mut self, rows: &Rows) -> Result<(), OutboxError> {
        if rows.rows.is_empty() {
            return Ok(());
        }
        // Column by column, as arrays (`unnest`): one statement whatever the number of rows,
        // as the case store writes its batches.
        let mut integers: Vec<Vec<Option<i64>>> = Vec::new();
        let mut texts: Vec<Vec<Option<String>>> = Vec::new();
        let mut slots = Vec::with_capacity(COLUMNS.len());
        for (name, kind) in COLUMNS {
            let Some(at) = rows.columns.iter().position(|c| c == name) else {
                return Err(OutboxError::Schema(format!("the outbox's rows have no column {name}")));
            };
            match kind {
                Kind::Integer => {
                    let column = rows.rows.iter().map(|row| match &row[at] {
                        Value::Integer(v) => Ok(Some(*v)),
                        Value::Null => Ok(None),
                        other => Err(other.data_type()),
                    });
                    let column = column.collect::<Result<Vec<_>, _>>().map_err(|t| {
                        OutboxError::Schema(format!("column {name} holds {t}, not an integer"))
                    })?;
                    slots.push((Kind::Integer, integers.len()));
                    integers.push(column);
                }
                Kind::Text => {
                    let column = rows.rows.iter().map(|row| match &row[at] {
                        Value::Text(v) => Ok(Some(v.clone())),
                        Value::Null => Ok(None),
                        other => Err(other.data_type()),
                    });
                    let column = column
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|t| OutboxError::Schema(format!("column {name} holds {t}, not text")))?;
                    slots.push((Kind::Text, texts.len()));
                    texts.push(column);
                }
            }
        }
        let statement = upsert_statement();
        self.fenced(|tx, epoch| {
            let mut params: Vec<&(dyn ToSql + Sync)> = slots
                .iter()
                .map(|&(kind, i)| match kind {
                    Kind::Integer => &integers[i] as &(dyn ToSql + Sync),
                    Kind::Text => &texts[i] as &(dyn ToSql + Sync),
                })
                .collect();
            params.push(&epoch);
            tx.execute(&statement, &params).map(drop)
        })
    }

    fn prune(&mut self, older_than_ms: u64) -> Result<usize, OutboxError> {
        let cutoff = older_than_ms.min(i64::MAX as u64) as i64;
        self.fenced(|tx, _| {
            tx.execute("DELETE FROM notify_outbox WHERE status <> 'pending' AND finished_ms < $1", &[&cutoff])
        })
        .map(|n| n as usize)
    }

    fn describe(&self) -> String {
        self.database.clone()
    }
}

/// `INSERT ... SELECT * FROM unnest(...) ON CONFLICT DO UPDATE` for every column of
/// [`COLUMNS`], the last parameter being the writer's epoch.
fn upsert_statement() -> String {
    let names: Vec<&str> = COLUMNS.iter().map(|(name, _)| *name).collect();
    let arrays: Vec<String> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, (_, kind))| match kind {
            Kind::Integer => format!("${}::bigint[]", i + 1),
            Kind::Text => format!("${}::text[]", i + 1),
        })
        .collect();
    let updates: Vec<String> = names
        .iter()
        .filter(|n| !matches!(**n, "notification_id" | "target"))
        .map(|n| format!("{n} = excluded.{n}"))
        .collect();
    format!(
        "INSERT INTO notify_outbox ({names}, written_epoch) SELECT *, ${epoch}::bigint FROM unnest({arrays}) \
         ON CONFLICT (notification_id, target) DO UPDATE SET {updates}, written_epoch = excluded.written_epoch",
        names = names.join(", "),
        epoch = COLUMNS.len() + 1,
        arrays = arrays.join(", "),
        updates = updates.join(", "),
    )
}

#[cfg(test)]
#[path = "shared_outbox_tests.rs"]
mod tests;
