//! The drain loop of one destination.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::classify::{Next, WriteFailure, classify};
use super::config::DestinationConfig;
use super::service::LineWriter;
use crate::spool::{Record, Spool};

/// Most payload bytes per request besides the line limit: keeps one request well under the
/// 10 MB InfluxDB Cloud and 3.x accept, and bounds memory per destination.
const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// How long a destination waits after an authentication, permission or missing-database
/// error before trying again: long enough not to hammer a misconfigured server, short
/// enough that data flows soon after a person fixes it.
const HOLD_RETRY: Duration = Duration::from_secs(30);

/// Counters and gauges of one destination, for `/metrics`.
#[derive(Debug, Default)]
pub struct DestinationStats {
    /// Lines the server acknowledged.
    pub lines_written: AtomicU64,
    /// Write requests that succeeded.
    pub requests_ok: AtomicU64,
    /// Write requests that failed (any reason).
    pub requests_failed: AtomicU64,
    /// Lines moved to the dead-letter file.
    pub lines_dead_lettered: AtomicU64,
    /// Duration of the last successful request, µs.
    pub last_write_micros: AtomicU64,
    /// 1 while the destination is held on an authentication, permission or database error.
    pub held: AtomicU64,
    /// Acceptance time (Unix ms) of the oldest record not yet written, 0 when caught up.
    pub oldest_pending_ms: AtomicU64,
}

impl DestinationStats {
    /// Age in seconds at `now_ms` of the oldest record not yet written; 0 when caught up.
    pub fn backlog_age_s(&self, now_ms: u64) -> f64 {
        match self.oldest_pending_ms.load(Ordering::Relaxed) {
            0 => 0.0,
            oldest => now_ms.saturating_sub(oldest) as f64 / 1000.0,
        }
    }
}

use crate::clock::wall_ms as now_ms;

/// What tells a drain loop when to write.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    /// Signalled by whoever appends to the spool, so new data is picked up at once.
    pub appended: Arc<Notify>,
    /// Raised while a source takes a backlog off the broker (see [`MAX_YIELD`]).
    pub backlog: Arc<crate::ingest::Backlog>,
}

/// Drains `spool` into one destination until `shutdown` is cancelled. A write in progress is
/// finished first; whatever is not acknowledged stays in the spool for the next start.
///
/// `signals.appended` is signalled by whoever appends to the spool, so new data is picked up
/// at once.
/// Batches fill up to `batch_lines` or wait at most `flush_interval` since their oldest
/// record was accepted.
pub async fn run_destination(
    spool: Arc<Mutex<Spool>>,
    cfg: DestinationConfig,
    writer: LineWriter,
    signals: Signals,
    stats: Arc<DestinationStats>,
    dead_letter_dir: PathBuf,
    shutdown: CancellationToken,
) {
    let new_backoff = || crate::retry::backoff(Duration::from_millis(200), cfg.max_backoff);
    let mut backoff = new_backoff();
    let name = cfg.name.as_str();
    let dead_letters = DeadLetters { path: dead_letter_dir.join(format!("{name}.lp")), stats: &stats };
    while !shutdown.is_cancelled() {
        let (owned, lines_wanted) = (cfg.name.clone(), cfg.batch_lines);
        let read = with_spool(&spool, move |s| s.read(&owned, lines_wanted, BATCH_BYTES)).await;
        let batch = match read {
            Ok(batch) => batch,
            Err(error) => {
                tracing::error!(destination = name, %error, "Reading the spool failed.");
                pause(&shutdown, Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(first) = batch.first() else {
            stats.oldest_pending_ms.store(0, Ordering::Relaxed);
            tokio::select! {
                _ = signals.appended.notified() => {}
                // A notification sent between the read and this wait is not lost: the timer
                // looks again.
                _ = tokio::time::sleep(cfg.flush_interval) => {}
                _ = shutdown.cancelled() => {}
            }
            continue;
        };
        stats.oldest_pending_ms.store(first.ts_ms, Ordering::Relaxed);
        let age = Duration::from_millis(now_ms().saturating_sub(first.ts_ms));
        if batch.len() < cfg.batch_lines && age < cfg.flush_interval {
            // Give the batch time to fill; it is read again afterwards.
            let owned = cfg.name.clone();
            with_spool(&spool, move |s| s.rewind(&owned).ok()).await;
            pause(&shutdown, cfg.flush_interval - age).await;
            continue;
        }

        // Ingest first: while a source takes a backlog off the broker, the write waits (the
        // records are in the spool), but never more than MAX_YIELD in a row, so a source
        // that is always busy cannot stop the database from catching up.
        let mut yielded = Duration::ZERO;
        while signals.backlog.busy() && yielded < MAX_YIELD && !shutdown.is_cancelled() {
            pause(&shutdown, YIELD_STEP).await;
            yielded += YIELD_STEP;
        }
        let started = Instant::now();
        match deliver(&writer, &lines(&batch), &dead_letters).await {
            Ok(()) => {
                let last = batch.last().unwrap().id;
                let owned = cfg.name.clone();
                let acked = with_spool(&spool, move |s| s.ack(&owned, last)).await;
                if let Err(error) = acked {
                    tracing::error!(destination = name, %error, "Recording a delivered batch in the spool failed.");
                }
                stats.requests_ok.fetch_add(1, Ordering::Relaxed);
                stats.lines_written.fetch_add(line_count(&batch), Ordering::Relaxed);
                stats.last_write_micros.store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                if stats.held.swap(0, Ordering::Relaxed) == 1 {
                    tracing::info!(destination = name, "Destination accepts writes again.");
                }
                backoff = new_backoff();
            }
            Err((next, failure)) => {
                stats.requests_failed.fetch_add(1, Ordering::Relaxed);
                let owned = cfg.name.clone();
                with_spool(&spool, move |s| s.rewind(&owned).ok()).await;
                let wait = match next {
                    Next::Hold => {
                        // Logged once per hold period: a person must fix credentials or create
                        // the database, and the health metric stays raised until then.
                        stats.held.store(1, Ordering::Relaxed);
                        tracing::error!(
                            destination = name,
                            status = failure.status,
                            error = %failure.message,
                            "Destination refuses writes (credentials, permissions or database); holding the data and retrying."
                        );
                        HOLD_RETRY
                    }
                    Next::RetryAfter(wait) => wait,
                    _ => backoff.next().unwrap_or(cfg.max_backoff),
                };
                tracing::warn!(
                    destination = name,
                    status = failure.status,
                    error = %failure.message,
                    retry_in_ms = wait.as_millis() as u64,
                    "Write failed; will retry."
                );
                pause(&shutdown, wait).await;
            }
        }
    }
}

/// Longest a database write waits for a source taking a backlog off the broker.
pub const MAX_YIELD: Duration = Duration::from_secs(2);
const YIELD_STEP: Duration = Duration::from_millis(50);

async fn pause(shutdown: &CancellationToken, wait: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = shutdown.cancelled() => {}
    }
}

/// The lines of a batch, each with its `\n`: a record may hold several, and a batch that is
/// too large is split by lines, not records.
fn lines(records: &[Record]) -> Vec<&[u8]> {
    records.iter().flat_map(|r| r.payload.split_inclusive(|b| *b == b'\n')).collect()
}

/// Lines in a batch.
fn line_count(records: &[Record]) -> u64 {
    records.iter().map(|r| r.payload.iter().filter(|b| **b == b'\n').count() as u64).sum()
}

/// Writes `lines`; poison batches go to the dead-letter file and count as delivered, too
/// large ones are split in halves down to single lines. `Err` means "retry the whole batch
/// later".
async fn deliver(
    writer: &LineWriter,
    lines: &[&[u8]],
    dead_letters: &DeadLetters<'_>,
) -> Result<(), (Next, WriteFailure)> {
    let Err(failure) = writer.write(&lines.concat()).await else {
        return Ok(());
    };
    match classify(&failure) {
        Next::Split if lines.len() > 1 => {
            let (a, b) = lines.split_at(lines.len() / 2);
            // Halves that were already written are written again if the other half fails and
            // the batch is retried; same points, same timestamps, so they overwrite.
            Box::pin(deliver(writer, a, dead_letters)).await?;
            Box::pin(deliver(writer, b, dead_letters)).await
        }
        Next::Split | Next::DeadLetter => {
            dead_letters.store(lines, &failure).map_err(|e| {
                let message =
                    format!("cannot write the dead-letter file: {e}; original error: {}", failure.message);
                (Next::Backoff, WriteFailure { message, ..failure.clone() })
            })?;
            Ok(())
        }
        next => Err((next, failure)),
    }
}

/// The dead-letter file of one destination: refused batches in line protocol, each preceded
/// by a `#` comment line (line protocol's comment syntax) with the time, status and the
/// server's reason, so the file can be fixed by hand and replayed with any InfluxDB client.
struct DeadLetters<'a> {
    path: PathBuf,
    stats: &'a DestinationStats,
}

impl DeadLetters<'_> {
    fn store(&self, lines: &[&[u8]], failure: &WriteFailure) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        let reason: String = failure.message.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        let mut out = format!(
            "# {} status={} lines={} reason={}\n",
            humantime::format_rfc3339_millis(SystemTime::now()),
            failure.status.map_or_else(|| "none".to_owned(), |s| s.to_string()),
            lines.len(),
            reason.trim()
        )
        .into_bytes();
        out.extend_from_slice(&lines.concat());
        file.write_all(&out)?;
        file.sync_data()?;
        self.stats.lines_dead_lettered.fetch_add(lines.len() as u64, Ordering::Relaxed);
        tracing::error!(
            file = %self.path.display(),
            lines = lines.len(),
            status = failure.status,
            reason = %reason.trim(),
            "Server refused a batch for good; moved it to the dead-letter file."
        );
        Ok(())
    }
}

/// Runs `f` on the spool off the async runtime: reading, rewinding and acknowledging touch the
/// disk, and the ingest may hold the lock through an fsync, so a runtime worker (which also
/// carries the alarm session and the outbox) must not wait for it.
async fn with_spool<T: Send + 'static>(
    spool: &Arc<Mutex<Spool>>,
    f: impl FnOnce(&mut Spool) -> T + Send + 'static,
) -> T {
    let spool = spool.clone();
    tokio::task::spawn_blocking(move || f(&mut spool.lock().unwrap()))
        .await
        .expect("a spool call does not panic")
}
