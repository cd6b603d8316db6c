//! The PostgreSQL backend: the same tables as SQLite's in a database of the operator's, over
//! the synchronous `postgres` client (rust-postgres).
//!
//! Differences that matter, and why:
//! - Seqs come from a counter row (`case_store.last_seq`) bumped inside each commit's
//!   transaction, not from a sequence: PostgreSQL sequences are not transactional (a rolled
//!   back `nextval` stays used, PostgreSQL manual, "Sequence Manipulation Functions"), and a
//!   hole in the log would make every later replay fail with [`StoreError::ReplayGap`].
//! - A commit returns once PostgreSQL reports it durable under the server's
//!   `synchronous_commit`; a session where it is `off` is set back to `on` on open, since
//!   `off` may lose committed transactions in a server crash (manual, "Asynchronous Commit").
//! - A lost connection fails the operation in progress and is opened again by the next one
//!   (the alarm loop holds and retries what could not be stored). A connection lost while
//!   `COMMIT` was on its way leaves the client not knowing whether the transaction went
//!   through (PostgreSQL says so when it cuts a session waiting for a synchronous standby:
//!   "the transaction has already committed locally"). The store remembers such a batch
//!   ([`InDoubt`]); when the next commit starts with the same steps, as the alarm loop's retry
//!   does, and the log shows that the batch did go through, those steps are not logged twice.
//! - One gateway writes a store: every connection takes the store's writer lock
//!   (`pg_try_advisory_lock`, held for the session) before it reads or writes, and a
//!   connection that cannot take it fails with [`StoreError::Held`]. The lock goes with the
//!   session, so a gateway that dies, or whose connection is cut, frees it, and a gateway that
//!   lost its connection has to win the lock again before its next write: one that was paused
//!   while another took over cannot write again. The server is asked to probe an idle client
//!   (`tcp_keepalives_*`, about 11 s) so that the lock of a machine that lost power is not held
//!   for the kernel's default two hours. Opening waits up to [`OPEN_WAIT`] for the lock, so
//!   that a gateway restarted at once finds the session of its previous run ended; a
//!   reconnection while running does not wait (the alarm loop holds and retries).
//! - The lock follows the session, and a frozen gateway (SIGSTOP, a paused VM) keeps its
//!   session, because its kernel still answers the server's keepalives. So the store also keeps
//!   a lease (`case_store_lease`: the holder, an epoch, the writer session's backend pid and an
//!   expiry on the **database's** clock). Opening the store bumps the epoch, and every commit,
//!   snapshot and prune checks it in its own transaction ([`StoreError::Fenced`] when another
//!   gateway took the store since). With a lease length ([`CaseStore::open_postgres_with`])
//!   the holder renews it ([`LeaseRenewer`]); a gateway waiting for the store terminates the
//!   writer session of a holder whose lease expired (`pg_terminate_backend`, allowed between
//!   sessions of one role), which frees the advisory lock for it. Without a lease length the
//!   lease never expires and nobody breaks it.

use std::cell::{RefCell, RefMut};
use std::collections::BTreeMap;
use std::path::Path;

use postgres::config::{Host, SslMode};
use postgres::types::ToSql;
use postgres::{Client, Config, NoTls, Row, Statement};
use rustls::ClientConfig;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{
    AuditEntry, Backend, CASE_COLUMNS, CaseRow, Columns, FilterValue, LoggedInput, Pruned, SCHEMA_VERSION,
    SNAPSHOTS_KEPT, Snapshot, Step, StoreError, StoreStats, StoredCase, StoredTransition, TransitionRow,
    check_snapshot,
};

/// The store's own row: its schema version and the last seq handed out. Created before the
/// version is read, so it has to stay the same in every version.
const META: &str = "
CREATE TABLE IF NOT EXISTS case_store (
    only_row       BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    schema_version BIGINT NOT NULL,
    last_seq       BIGINT NOT NULL
);
";

/// The tables in PostgreSQL's dialect: seqs are written as the counter row hands them out,
/// transitions numbered by an identity column (its gaps do not matter: it only orders).
fn schema() -> String {
    super::schema("BIGINT", "BIGINT PRIMARY KEY", "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY")
}

/// The lease: one row, replaced by every gateway that takes the store. Created before the
/// version is read, like [`META`], and read by no older gateway.
const LEASE: &str = "
CREATE TABLE IF NOT EXISTS case_store_lease (
    only_row    BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    epoch       BIGINT NOT NULL,
    holder      TEXT NOT NULL,
    backend_pid INTEGER NOT NULL,
    expires_at  TIMESTAMPTZ
);
";

/// Takes the lease for this session: the next epoch, this session's backend, and an expiry
/// `$2` milliseconds from now on the server's clock (never, for `NULL`).
const TAKE_LEASE: &str = "
INSERT INTO case_store_lease (epoch, holder, backend_pid, expires_at)
VALUES (1, $1, pg_backend_pid(), now() + $2::bigint * interval '1 millisecond')
ON CONFLICT (only_row) DO UPDATE SET epoch = case_store_lease.epoch + 1, holder = excluded.holder,
    backend_pid = excluded.backend_pid, expires_at = excluded.expires_at
RETURNING epoch";

/// A reconnection of the holder: the lease's session is this one now, if the epoch is still
/// the holder's.
const MOVE_LEASE: &str = "UPDATE case_store_lease SET backend_pid = pg_backend_pid() WHERE epoch = $1";

/// A renewal: `$2` milliseconds from now, if the epoch is still the renewer's.
const RENEW_LEASE: &str =
    "UPDATE case_store_lease SET expires_at = now() + $2::bigint * interval '1 millisecond' WHERE epoch = $1";

/// The fencing inside a write's transaction: the stored epoch, its row locked against a
/// takeover's epoch bump until the transaction ends.
pub(super) const FENCE: &str = "SELECT epoch FROM case_store_lease FOR SHARE";

/// Terminates the writer session of a holder whose lease expired on the server's clock, if
/// that session still holds the writer lock `$1`; returns the terminated backend's pid and
/// its holder.
const BREAK_STALE_LEASE: &str = "
SELECT s.backend_pid, s.holder, pg_terminate_backend(s.backend_pid)
FROM case_store_lease s
WHERE s.expires_at < now() AND s.backend_pid <> pg_backend_pid()
  AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
              AND l.pid = s.backend_pid AND ((l.classid::bigint << 32) | l.objid::bigint) = $1::bigint)";

/// How often a gateway waiting for the store looks for a stale lease to break.
const STALE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Serialises two gateways creating the schema in one database at the same time
/// (`pg_advisory_xact_lock`; the number is arbitrary, the same in every version).
const SCHEMA_LOCK: i64 = 0x6669_7265_6772_6964;

/// The store's writer lock (`pg_try_advisory_lock`, session level; arbitrary, the same in every
/// version, and not [`SCHEMA_LOCK`]).
const WRITER_LOCK: i64 = 0x6669_7265_6772_6965;

/// How long opening the store waits for the writer lock.
pub const OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long one attempt to reach a server may take, unless the connection string says
/// (`connect_timeout`). Without a bound, a server whose machine is gone (no RST, only silence)
/// holds a connection attempt for the kernel's SYN retries, about two minutes on Linux
/// (`tcp_syn_retries` = 6, tcp(7)), during which the alarm loop cannot store anything; with a
/// list of hosts, the next one would be tried only after that.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long data sent on a connection may go unacknowledged before the connection is given
/// up, unless the connection string says (`tcp_user_timeout`). A commit sent to a server
/// whose machine died would otherwise wait for TCP's retransmissions, about 15 minutes on
/// Linux (`tcp_retries2` = 15, tcp(7)); the store then reconnects, to the promoted standby
/// when the connection string lists it.
const TCP_USER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How every connection of the store is made (the writer's, the lease renewer's, the stale
/// lease breaker's): the parsed connection string and, with TLS, rustls.
#[derive(Clone)]
pub(super) struct Dialer {
    config: Config,
    /// With `[alerting.store] tls`: every connection is TLS (`sslmode=require` is forced: no
    /// fallback to plain text when a server, or something in between, declines), and the
    /// server's certificate must chain to the configured CA and name the host, which is
    /// what libpq calls `verify-full`.
    tls: Option<MakeRustlsConnect>,
}

impl Dialer {
    pub(super) fn connect(&self) -> Result<Client, postgres::Error> {
        match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        }
    }

    fn encrypted(&self) -> bool {
        self.tls.is_some()
    }
}

/// The server's probes of an idle client connection: silent for 5 s, then a probe every 2 s,
/// and gone after 3 unanswered, so a dead gateway's lock is freed in about 11 s
/// (PostgreSQL manual, "Connections and Authentication": `tcp_keepalives_idle`,
/// `tcp_keepalives_interval`, `tcp_keepalives_count`). And no notices below warnings: every
/// connection runs the schema's `CREATE TABLE IF NOT EXISTS`, whose "already exists,
/// skipping" notices the client would log on every reconnection (`client_min_messages`).
pub(super) const SESSION: &str = "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; \
                       SET tcp_keepalives_count = 3; SET client_min_messages = warning";

/// The case store in a PostgreSQL database.
pub(super) struct PostgresStore {
    dialer: Dialer,
    /// `user@host:port/dbname`, for messages: never the password.
    database: String,
    /// `None` once the connection was found closed, until the next operation opens it again.
    conn: RefCell<Option<Connection>>,
    /// The last batch whose `COMMIT` got no answer.
    in_doubt: Option<InDoubt>,
    /// How long a renewal of the lease lasts; `None`: the lease never expires.
    lease: Option<std::time::Duration>,
    /// Who this gateway is, in the lease row (for the messages of the one that takes over).
    holder: String,
    /// The epoch this store took when it first got the writer lock; every write carries it.
    epoch: std::cell::Cell<Option<i64>>,
}

/// A batch whose `COMMIT` was sent but never answered: it may be in the log or not.
#[derive(Debug)]
struct InDoubt {
    /// The last seq before the batch.
    before: u64,
    /// Its steps, as `(at_ms, kind, input_json)`, to recognise them in a retry.
    steps: Vec<(u64, String, String)>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("database", &self.database).finish_non_exhaustive()
    }
}

/// One connection and the commit path's statements, prepared on it.
struct Connection {
    client: Client,
    bump_seq: Statement,
    inputs: Statement,
    transitions: Statement,
    cases: Statement,
}

impl PostgresStore {
    /// Connects, creates or checks the schema, and prepares the commit path.
    pub(super) fn open(
        conninfo: &str,
        options: &super::PostgresOptions,
    ) -> Result<PostgresStore, StoreError> {
        let super::PostgresOptions { password, wait, lease, tls } = options;
        let (wait, lease) = (*wait, *lease);
        let mut config: Config = conninfo.parse().map_err(|source| StoreError::Postgres {
            operation: "open",
            database: "(connection string)".into(),
            source,
        })?;
        if let Some(password) = password {
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        let tls = match tls {
            Some(_) if config.get_ssl_mode() == SslMode::Disable => {
                return Err(StoreError::Tls {
                    database: describe(&config),
                    problem: "the connection string says sslmode=disable",
                });
            }
            Some(tls) => {
                config.ssl_mode(SslMode::Require);
                Some(MakeRustlsConnect::new(ClientConfig::clone(tls)))
            }
            None if config.get_ssl_mode() == SslMode::Require => {
                return Err(StoreError::Tls {
                    database: describe(&config),
                    problem: "sslmode=require needs the CA to check the server against",
                });
            }
            None => None,
        };
        let database = describe(&config);
        let dialer = Dialer { config, tls };
        if !dialer.encrypted() && !local_only(&dialer.config) {
            tracing::warn!(database = %database, "The case store's connection to PostgreSQL is not encrypted: set [alerting.store] tls.");
        }
        let store = PostgresStore {
            dialer,
            database,
            conn: RefCell::new(None),
            in_doubt: None,
            lease,
            holder: holder_name(),
            epoch: std::cell::Cell::new(None),
        };
        // `Duration::MAX`: a standby's wait, for as long as it takes, in one session queued for
        // the lock (`pg_advisory_lock`), so that it takes over the moment the holder's session
        // ends, and is seen waiting in `pg_stat_activity` (`wait_event = 'advisory'`).
        let Some(deadline) = std::time::Instant::now().checked_add(wait) else {
            tracing::info!(database = %store.database, "Waiting for the case store's writer lock.");
            let breaker = StaleBreaker::start(store.dialer.clone(), store.database.clone());
            let conn = store.connect("open", true);
            breaker.stop();
            *store.conn.borrow_mut() = Some(conn?);
            return Ok(store);
        };
        let mut waited = false;
        loop {
            let opened = store.connection("open").map(drop);
            match opened {
                Err(StoreError::Held { holder, .. }) if std::time::Instant::now() < deadline => {
                    if !waited {
                        tracing::warn!(database = %store.database, holder, "Another session holds the case store's writer lock; waiting for it to end.");
                        waited = true;
                    }
                    // Best effort: a failure here is a failure of the next attempt to open.
                    if let Ok(mut client) = store.dialer.connect() {
                        let _ = break_stale_lease(&mut client, &store.database);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                Err(error) => return Err(error),
                Ok(()) => return Ok(store),
            }
        }
    }

    /// The lease's epoch this store writes under, once it has held the writer lock.
    pub(super) fn epoch(&self) -> Option<u64> {
        self.epoch.get().map(unsigned)
    }

    /// A renewer of this store's lease, on a connection of its own; `None` without a lease
    /// length, or before the store held the writer lock.
    pub(super) fn renewer(&self) -> Option<LeaseRenewer> {
        let (lease, epoch) = (self.lease?, self.epoch.get()?);
        let mut dialer = self.dialer.clone();
        // A renewal that cannot connect within the lease is too late anyway.
        dialer.config.connect_timeout(lease);
        Some(LeaseRenewer { dialer, database: self.database.clone(), epoch, lease, client: None })
    }

    /// [`StoreError::Fenced`] unless the stored epoch is this store's, its row locked until
    /// `tx` ends so that no takeover commits in between.
    fn fence(&self, tx: &mut postgres::Transaction<'_>, operation: &'static str) -> Result<(), StoreError> {
        let stored: Option<i64> =
            tx.query_opt(FENCE, &[]).map_err(self.error(operation))?.map(|row| row.get(0));
        match (stored, self.epoch.get()) {
            (Some(stored), Some(ours)) if stored == ours => Ok(()),
            (stored, ours) => Err(StoreError::Fenced {
                database: self.database.clone(),
                epoch: ours.map_or(0, unsigned),
                current: stored.map_or(0, unsigned),
            }),
        }
    }

    fn error(&self, operation: &'static str) -> impl Fn(postgres::Error) -> StoreError + '_ {
        move |source| StoreError::Postgres { operation, database: self.database.clone(), source }
    }

    /// The open connection, opening (and setting up) a new one if there is none or it closed.
    fn connection(&self, operation: &'static str) -> Result<RefMut<'_, Connection>, StoreError> {
        let mut slot = self.conn.borrow_mut();
        if slot.as_ref().is_none_or(|conn| conn.client.is_closed()) {
            *slot = None;
            *slot = Some(self.connect(operation, false)?);
        }
        Ok(RefMut::map(slot, |slot| slot.as_mut().expect("set above")))
    }

    /// A new connection holding the writer lock: waiting for it when `queue`, else refused
    /// with [`StoreError::Held`] at once.
    fn connect(&self, operation: &'static str, queue: bool) -> Result<Connection, StoreError> {
        let err = self.error(operation);
        let mut client = self.dialer.connect().map_err(&err)?;
        client.batch_execute(SESSION).map_err(&err)?;
        if queue {
            client.execute("SELECT pg_advisory_lock($1)", &[&WRITER_LOCK]).map_err(&err)?;
        } else if !client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&WRITER_LOCK])
            .map_err(&err)?
            .try_get::<_, bool>(0)
            .map_err(&err)?
        {
            // Who holds it, for the message; best effort (the holder may be gone already).
            let holder = client
                .query_opt(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
                     AND (classid::bigint << 32) | objid::bigint = $1::bigint",
                    &[&WRITER_LOCK],
                )
                .ok()
                .flatten()
                .and_then(|row| row.try_get::<_, i32>(0).ok())
                .unwrap_or(0);
            return Err(StoreError::Held { database: self.database.clone(), holder });
        }
        let durable = client.query_one("SHOW synchronous_commit", &[]).map_err(&err)?;
        if durable.try_get::<_, String>(0).map_err(&err)? == "off" {
            client.batch_execute("SET synchronous_commit = on").map_err(&err)?;
        }
        let mut tx = client.transaction().map_err(&err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK]).map_err(&err)?;
        tx.batch_execute(META).map_err(&err)?;
        tx.batch_execute(LEASE).map_err(&err)?;
        tx.batch_execute(super::shared_outbox::TABLE).map_err(&err)?;
        let found = tx.query_opt("SELECT schema_version FROM case_store", &[]).map_err(&err)?;
        let found: i64 = found.map(|row| row.try_get(0)).transpose().map_err(&err)?.unwrap_or(0);
        if found > SCHEMA_VERSION {
            let store = self.database.clone();
            return Err(StoreError::NewerSchema { store, found, supported: SCHEMA_VERSION });
        }
        if found < SCHEMA_VERSION {
            tx.batch_execute(&schema()).map_err(&err)?;
            tx.execute(
                "INSERT INTO case_store (schema_version, last_seq) VALUES ($1, 0) \
                 ON CONFLICT (only_row) DO UPDATE SET schema_version = excluded.schema_version",
                &[&SCHEMA_VERSION],
            )
            .map_err(&err)?;
        }
        match self.epoch.get() {
            None => {
                let lease_ms = self.lease.map(|l| signed("open", l.as_millis() as u64)).transpose()?;
                let row = tx.query_one(TAKE_LEASE, &[&self.holder, &lease_ms]).map_err(&err)?;
                let epoch: i64 = row.try_get(0).map_err(&err)?;
                tracing::info!(database = %self.database, epoch, "This gateway holds the case store.");
                self.epoch.set(Some(epoch));
            }
            Some(epoch) => {
                if tx.execute(MOVE_LEASE, &[&epoch]).map_err(&err)? == 0 {
                    self.fence(&mut tx, operation)?;
                }
            }
        }
        tx.commit().map_err(&err)?;
        let bump_seq = client
            .prepare("UPDATE case_store SET last_seq = last_seq + $1 RETURNING last_seq")
            .map_err(&err)?;
        // A batch's rows go in one statement per table, as arrays (`unnest`): a commit is then
        // six round trips whatever its size, where one statement per row made a batch of 100
        // cost 300 (BENCHMARKS.md).
        let inputs = client
            .prepare(
                "INSERT INTO inputs (seq, at_ms, kind, actor, origin, json) \
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[])",
            )
            .map_err(&err)?;
        // In the order given (WITH ORDINALITY), so that `id` orders a timeline's transitions
        // of one millisecond as they were committed.
        let transitions = client
            .prepare(&super::insert_transitions(
                "SELECT seq, case_id, at_ms, kind, json FROM unnest($1::bigint[], $2::bigint[], \
                 $3::bigint[], $4::text[], $5::text[]) WITH ORDINALITY AS t (seq, case_id, at_ms, kind, json, n) \
                 ORDER BY n",
            ))
            .map_err(&err)?;
        let cases = client
            .prepare(&super::upsert_cases(
                "SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], \
                 $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[], $11::text[])",
            ))
            .map_err(&err)?;
        Ok(Connection { client, bump_seq, inputs, transitions, cases })
    }

    /// Runs a read on the connection.
    fn read<T>(
        &self,
        operation: &'static str,
        query: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let mut conn = self.connection(operation)?;
        query(&mut conn.client).map_err(self.error(operation))
    }

    /// How many of `steps`, from the first, an [`InDoubt`] batch already logged: all of it if
    /// the log grew by exactly that batch and `steps` starts with it, else none.
    fn already_logged(
        &self,
        conn: &mut Connection,
        in_doubt: &InDoubt,
        steps: &[Step<'_>],
    ) -> Result<usize, StoreError> {
        let logged = last_seq(&mut conn.client).map_err(self.error("commit"))?;
        let n = in_doubt.steps.len();
        let retried = steps.len() >= n
            && steps.iter().zip(&in_doubt.steps).all(|(step, (at_ms, kind, input))| {
                (step.at_ms, step.kind, step.input_json) == (*at_ms, kind.as_str(), input.as_str())
            });
        Ok(if retried && logged == in_doubt.before + n as u64 { n } else { 0 })
    }

    /// Commits `steps` in one transaction; a `COMMIT` that got no answer leaves `doubt` set.
    fn commit_steps_on(
        &self,
        conn: &mut Connection,
        steps: &[Step<'_>],
        doubt: &mut Option<InDoubt>,
    ) -> Result<u64, StoreError> {
        let err = self.error("commit");
        let signed = |value| signed("commit", value);
        let mut tx = conn.client.transaction().map_err(&err)?;
        self.fence(&mut tx, "commit")?;
        let count = signed(steps.len() as u64)?;
        let last: i64 = tx.query_one(&conn.bump_seq, &[&count]).map_err(&err)?.try_get(0).map_err(&err)?;
        let seqs: Vec<i64> = (last - count + 1..=last).collect();
        let at_ms = steps.iter().map(|s| signed(s.at_ms)).collect::<Result<Vec<_>, _>>()?;
        let kinds: Vec<&str> = steps.iter().map(|s| s.kind).collect();
        let actors: Vec<Option<&str>> = steps.iter().map(|s| s.audit.map(|a| a.actor.as_str())).collect();
        let origins: Vec<Option<&str>> = steps.iter().map(|s| s.audit.map(|a| a.origin.as_str())).collect();
        let jsons: Vec<&str> = steps.iter().map(|s| s.input_json).collect();
        tx.execute(&conn.inputs, &[&seqs, &at_ms, &kinds, &actors, &origins, &jsons]).map_err(&err)?;

        let transitions: Vec<(i64, &TransitionRow<'_>)> = seqs
            .iter()
            .zip(steps)
            .flat_map(|(&seq, s)| s.transitions.iter().map(move |t| (seq, t)))
            .collect();
        if !transitions.is_empty() {
            let t_seqs: Vec<i64> = transitions.iter().map(|(seq, _)| *seq).collect();
            let case_ids =
                transitions.iter().map(|(_, t)| signed(t.case_id)).collect::<Result<Vec<_>, _>>()?;
            let t_at = transitions.iter().map(|(_, t)| signed(t.at_ms)).collect::<Result<Vec<_>, _>>()?;
            let t_kinds: Vec<&str> = transitions.iter().map(|(_, t)| t.kind).collect();
            let t_jsons: Vec<&str> = transitions.iter().map(|(_, t)| t.json).collect();
            tx.execute(&conn.transitions, &[&t_seqs, &case_ids, &t_at, &t_kinds, &t_jsons]).map_err(&err)?;
        }

        // One row per case, its last state in the batch: an upsert may not touch a row twice
        // in one statement, and each later step replaced the earlier one anyway.
        let mut latest: BTreeMap<u64, (i64, &CaseRow<'_>)> = BTreeMap::new();
        for (&seq, step) in seqs.iter().zip(steps) {
            for case in step.cases {
                latest.insert(case.case_id, (seq, case));
            }
        }
        if !latest.is_empty() {
            let rows: Vec<&(i64, &CaseRow<'_>)> = latest.values().collect();
            let numbers = |f: fn(&CaseRow<'_>) -> u64| {
                rows.iter().map(|(_, c)| signed(f(c))).collect::<Result<Vec<_>, _>>()
            };
            let texts = |f: for<'c> fn(&'c CaseRow<'_>) -> &'c str| {
                rows.iter().map(|(_, c)| f(c)).collect::<Vec<&str>>()
            };
            let ids = numbers(|c| c.case_id)?;
            let opened = numbers(|c| c.opened_ms)?;
            let closed = rows
                .iter()
                .map(|(_, c)| c.closed_ms.map(signed).transpose())
                .collect::<Result<Vec<_>, _>>()?;
            let updated: Vec<i64> = rows.iter().map(|(seq, _)| *seq).collect();
            let values: [&(dyn ToSql + Sync); 11] = [
                &ids,
                &opened,
                &closed,
                &texts(|c| c.stage),
                &texts(|c| c.severity),
                &texts(|c| c.street),
                &texts(|c| c.community),
                &texts(|c| c.grid),
                &texts(|c| c.building),
                &updated,
                &texts(|c| c.json),
            ];
            tx.execute(&conn.cases, &values).map_err(&err)?;
        }
        if let Err(error) = tx.commit() {
            // With the connection still open PostgreSQL answered, so it rolled back.
            if conn.client.is_closed() {
                *doubt = Some(InDoubt {
                    before: unsigned(last - count),
                    steps: steps
                        .iter()
                        .map(|s| (s.at_ms, s.kind.to_owned(), s.input_json.to_owned()))
                        .collect(),
                });
            }
            return Err(err(error));
        }
        Ok(unsigned(last))
    }
}

impl Backend for PostgresStore {
    fn path(&self) -> Option<&Path> {
        None
    }

    fn epoch(&self) -> Option<u64> {
        PostgresStore::epoch(self)
    }

    fn renewer(&self) -> Option<super::LeaseRenewer> {
        PostgresStore::renewer(self)
    }

    fn shared_outbox(&self) -> Option<Box<dyn firegrid_notify::outbox::SharedTable>> {
        let epoch = self.epoch.get()?;
        Some(Box::new(super::shared_outbox::SharedOutbox::new(
            self.dialer.clone(),
            self.database.clone(),
            epoch,
        )))
    }

    fn last_seq(&self) -> Result<u64, StoreError> {
        self.read("commit", last_seq)
    }

    fn commit_steps(&mut self, steps: &[Step<'_>]) -> Result<u64, StoreError> {
        let mut conn = self.connection("commit")?;
        let skip = match &self.in_doubt {
            Some(in_doubt) => self.already_logged(&mut conn, in_doubt, steps)?,
            None => 0,
        };
        if skip > 0 {
            tracing::warn!(
                steps = skip,
                "A case-store commit whose answer was lost did go through; its retry is not logged twice."
            );
        }
        let mut doubt = None;
        let result = match &steps[skip..] {
            [] => last_seq(&mut conn.client).map_err(self.error("commit")),
            rest => self.commit_steps_on(&mut conn, rest, &mut doubt),
        };
        drop(conn);
        // A failure short of `COMMIT` leaves an earlier doubt as it was: the retry still
        // starts with that batch.
        if result.is_ok() || doubt.is_some() {
            self.in_doubt = doubt;
        }
        result
    }

    fn save_snapshot(&mut self, upto_seq: u64, at_ms: u64, json: &str) -> Result<(), StoreError> {
        let err = self.error("snapshot");
        let (upto, at) = (signed("snapshot", upto_seq)?, signed("snapshot", at_ms)?);
        let mut conn = self.connection("snapshot")?;
        let mut tx = conn.client.transaction().map_err(&err)?;
        self.fence(&mut tx, "snapshot")?;
        // FOR UPDATE holds off a commit until the snapshot is in, as SQLite's write lock does.
        let last = tx.query_one("SELECT last_seq FROM case_store FOR UPDATE", &[]).map_err(&err)?;
        let last_seq = unsigned(last.try_get(0).map_err(&err)?);
        let latest = snapshot_seqs(&mut tx).map_err(&err)?.first().copied();
        check_snapshot(upto_seq, last_seq, latest)?;
        tx.execute(super::SAVE_SNAPSHOT, &[&upto, &at, &json]).map_err(&err)?;
        tx.execute(super::DELETE_OLD_SNAPSHOTS, &[&SNAPSHOTS_KEPT]).map_err(&err)?;
        tx.commit().map_err(&err)
    }

    fn snapshot_at(&self, nth: i64) -> Result<Option<Snapshot>, StoreError> {
        self.read("load", |client| {
            let row = client.query_opt(super::SNAPSHOT_AT, &[&nth])?;
            row.as_ref().map(Snapshot::read).transpose()
        })
    }

    fn inputs_after(&self, after: u64) -> Result<Vec<LoggedInput>, StoreError> {
        let after = signed("load", after)?;
        self.read("load", |client| {
            client.query(super::INPUTS_AFTER, &[&after])?.iter().map(LoggedInput::read).collect()
        })
    }

    fn case(&self, case_id: u64) -> Result<Option<StoredCase>, StoreError> {
        let case_id = signed("case", case_id)?;
        self.read("case", |client| {
            let row = client
                .query_opt(&format!("SELECT {CASE_COLUMNS} FROM cases WHERE case_id = $1"), &[&case_id])?;
            row.as_ref().map(StoredCase::read).transpose()
        })
    }

    fn timeline(&self, case_id: u64) -> Result<Vec<StoredTransition>, StoreError> {
        let case_id = signed("timeline", case_id)?;
        self.read("timeline", |client| {
            client.query(super::TIMELINE, &[&case_id])?.iter().map(StoredTransition::read).collect()
        })
    }

    fn list(&self, sql_text: &str, values: &[FilterValue<'_>]) -> Result<Vec<StoredCase>, StoreError> {
        let numbers = values
            .iter()
            .map(|value| match value {
                FilterValue::Integer(number) => signed("list", *number),
                FilterValue::Text(_) => Ok(0),
            })
            .collect::<Result<Vec<i64>, _>>()?;
        let bound: Vec<&(dyn ToSql + Sync)> = values
            .iter()
            .zip(&numbers)
            .map(|(value, number)| match value {
                FilterValue::Text(text) => text as &(dyn ToSql + Sync),
                FilterValue::Integer(_) => number as &(dyn ToSql + Sync),
            })
            .collect();
        self.read("list", |client| client.query(sql_text, &bound)?.iter().map(StoredCase::read).collect())
    }

    fn audit_log(&self, since_ms: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let (since_ms, limit) = (signed("audit log", since_ms)?, i64::from(limit));
        self.read("audit log", |client| {
            client.query(super::AUDIT_LOG, &[&since_ms, &limit])?.iter().map(AuditEntry::read).collect()
        })
    }

    fn prune_before(&mut self, cutoff_ms: u64) -> Result<Pruned, StoreError> {
        let cutoff = signed("prune", cutoff_ms)?;
        let err = self.error("prune");
        let mut conn = self.connection("prune")?;
        let mut tx = conn.client.transaction().map_err(&err)?;
        self.fence(&mut tx, "prune")?;
        let transitions = tx.execute(super::PRUNE_TRANSITIONS, &[&cutoff]).map_err(&err)?;
        let cases = tx.execute(super::PRUNE_CASES, &[&cutoff]).map_err(&err)?;
        // As in SQLite: only what the oldest kept snapshot covers is no longer needed.
        let inputs = match snapshot_seqs(&mut tx).map_err(&err)?.last() {
            Some(&covered) => tx.execute(super::PRUNE_INPUTS, &[&(covered as i64), &cutoff]).map_err(&err)?,
            None => 0,
        };
        tx.commit().map_err(&err)?;
        Ok(Pruned { cases, transitions, inputs })
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        self.read("stats", |client| {
            let last_seq = last_seq(client)?;
            let snapshot_seq = snapshot_seqs(client)?.first().copied();
            let since = snapshot_seq.unwrap_or(0) as i64;
            let counts = client.query_one(super::COUNT_INPUTS, &[&since])?;
            let cases = client.query_one(super::COUNT_CASES, &[])?;
            let size = client.query_one(
                "SELECT coalesce(sum(pg_total_relation_size(to_regclass(t))), 0)::bigint \
                 FROM unnest(ARRAY['inputs', 'transitions', 'cases', 'snapshots', 'case_store']) AS t",
                &[],
            )?;
            Ok(StoreStats {
                inputs: counts.number(0)?,
                last_seq,
                snapshot_seq,
                inputs_since_snapshot: counts.number(1)?,
                open_cases: cases.number(0)?,
                closed_cases: cases.number(1)?,
                file_bytes: size.number(0)?,
            })
        })
    }

    #[cfg(test)]
    fn integers(&mut self, sql_text: &str) -> Vec<Vec<i64>> {
        let rows = self.read("test", |client| client.query(sql_text, &[])).unwrap();
        rows.iter().map(|row| (0..row.len()).map(|i| row.get(i)).collect()).collect()
    }

    #[cfg(test)]
    fn schema_version(&mut self) -> i64 {
        self.read("test", |client| client.query_one("SELECT schema_version FROM case_store", &[]))
            .unwrap()
            .get(0)
    }

    #[cfg(test)]
    fn set_schema_version(&mut self, version: i64) {
        self.read("test", |client| client.execute("UPDATE case_store SET schema_version = $1", &[&version]))
            .unwrap();
    }
}

/// Renews a PostgreSQL store's lease, on a connection of its own so that a renewal never
/// waits behind a commit: [`CaseStore::lease_renewer`](super::CaseStore::lease_renewer).
/// Blocking, like the store; run it on a thread of its own.
pub struct LeaseRenewer {
    dialer: Dialer,
    database: String,
    epoch: i64,
    lease: std::time::Duration,
    client: Option<Client>,
}

impl std::fmt::Debug for LeaseRenewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseRenewer")
            .field("database", &self.database)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl LeaseRenewer {
    /// How long one renewal lasts on the server's clock.
    pub fn lease(&self) -> std::time::Duration {
        self.lease
    }

    /// The epoch renewed.
    pub fn epoch(&self) -> u64 {
        unsigned(self.epoch)
    }

    /// Extends the lease to [`lease`](Self::lease) from now on the server's clock. Fails with
    /// [`StoreError::Fenced`] once another gateway took the store (its epoch replaced this
    /// one), and with [`StoreError::Postgres`] when the server cannot be reached (the next call
    /// connects again).
    pub fn renew(&mut self) -> Result<(), StoreError> {
        let err = |source| StoreError::Postgres {
            operation: "renew lease",
            database: self.database.clone(),
            source,
        };
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            self.client = Some(self.dialer.connect().map_err(err)?);
        }
        let client = self.client.as_mut().expect("set above");
        let lease_ms = signed("renew lease", self.lease.as_millis() as u64)?;
        let renewed = client.execute(RENEW_LEASE, &[&self.epoch, &lease_ms]).map_err(|source| {
            StoreError::Postgres { operation: "renew lease", database: self.database.clone(), source }
        })?;
        if renewed == 0 {
            let current = client
                .query_opt("SELECT epoch FROM case_store_lease", &[])
                .ok()
                .flatten()
                .map_or(0, |row| unsigned(row.get(0)));
            return Err(StoreError::Fenced {
                database: self.database.clone(),
                epoch: unsigned(self.epoch),
                current,
            });
        }
        Ok(())
    }
}

/// While a gateway queues for the writer lock: a thread with a connection of its own that
/// breaks the holder's lease once it is stale, so the queue moves.
struct StaleBreaker {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl StaleBreaker {
    fn start(dialer: Dialer, database: String) -> StaleBreaker {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let spawned = std::thread::Builder::new().name("case-store-lease".into()).spawn(move || {
            let mut client: Option<Client> = None;
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                if client.as_ref().is_none_or(Client::is_closed) {
                    client = dialer.connect().ok();
                }
                if let Some(client) = client.as_mut()
                    && let Err(error) = break_stale_lease(client, &database)
                {
                    tracing::debug!(%error, "Cannot look at the case store's lease.");
                }
                std::thread::sleep(STALE_CHECK_EVERY);
            }
        });
        if let Err(error) = spawned {
            tracing::error!(%error, "Cannot start the thread that breaks a stale case-store lease.");
        }
        StaleBreaker { stop }
    }

    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Terminates the writer session of a holder whose lease expired, if there is one.
fn break_stale_lease(client: &mut Client, database: &str) -> Result<(), postgres::Error> {
    // Before the first gateway created the schema there is no lease to break.
    let exists: bool = client.query_one("SELECT to_regclass('case_store_lease') IS NOT NULL", &[])?.get(0);
    if !exists {
        return Ok(());
    }
    for row in client.query(BREAK_STALE_LEASE, &[&WRITER_LOCK])? {
        let (pid, holder, ended): (i32, String, bool) = (row.get(0), row.get(1), row.get(2));
        tracing::warn!(
            database,
            backend_pid = pid,
            holder,
            terminated = ended,
            "The case store's holder let its lease expire; its session is terminated so that this gateway takes over."
        );
    }
    Ok(())
}

/// This gateway in the lease row: the host and the process.
fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    format!("{} pid {}", if host.is_empty() { "?" } else { host }, std::process::id())
}

/// Whether every host of `config` is a Unix socket or a loopback address, where traffic never
/// leaves the machine.
fn local_only(config: &Config) -> bool {
    config.get_hosts().iter().all(|host| match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
    })
}

/// `user@host:port/dbname`: what messages name the database by.
fn describe(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            Host::Tcp(name) => name.clone(),
            Host::Unix(dir) => dir.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    format!(
        "{}@{}:{}/{}",
        config.get_user().unwrap_or("?"),
        if hosts.is_empty() { "localhost".to_owned() } else { hosts.join(",") },
        if ports.is_empty() { "5432".to_owned() } else { ports.join(",") },
        config.get_dbname().unwrap_or("?"),
    )
}

/// A number for a `bigint` column, or [`StoreError::OutOfRange`].
fn signed(operation: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { operation, value })
}

/// A number from a `bigint` column. Every one the store reads was written through [`signed`]
/// or counted, so none is negative.
fn unsigned(value: i64) -> u64 {
    value.max(0) as u64
}

impl Columns for Row {
    type Error = postgres::Error;

    fn number(&self, column: usize) -> Result<u64, postgres::Error> {
        self.try_get::<_, i64>(column).map(unsigned)
    }

    fn optional_number(&self, column: usize) -> Result<Option<u64>, postgres::Error> {
        Ok(self.try_get::<_, Option<i64>>(column)?.map(unsigned))
    }

    fn text(&self, column: usize) -> Result<String, postgres::Error> {
        self.try_get(column)
    }
}

fn last_seq(client: &mut impl postgres::GenericClient) -> Result<u64, postgres::Error> {
    let row = client.query_opt("SELECT last_seq FROM case_store", &[])?;
    row.map_or(Ok(0), |row| row.number(0))
}

/// The kept snapshots' `upto_seq`, newest first.
fn snapshot_seqs(client: &mut impl postgres::GenericClient) -> Result<Vec<u64>, postgres::Error> {
    client.query(super::SNAPSHOT_SEQS, &[])?.iter().map(|row| row.number(0)).collect()
}
