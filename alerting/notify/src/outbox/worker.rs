//! The delivery worker: takes due deliveries from the outbox, most urgent first per channel
//! and within each channel's rate limit ([`super::schedule::plan`]), sends them concurrently,
//! records and reports each outcome.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::limit::Window;
use super::policy::{AfterFailure, after_failure};
use super::schedule;
use super::store::{DeliveryKey, Pending};
use super::{DeliveryConfig, DeliveryReport, Outbox, Outcome};
use crate::{Channel, Notifier, SendError, unix_ms};

/// Longest sleep without looking at the table: bounds the effect of a wall-clock jump on the
/// due times, which are wall-clock times because they outlive the process.
const IDLE_RECHECK: Duration = Duration::from_secs(30);

/// Pause after the database failed, so a broken disk slows the worker down instead of making
/// it spin (and resend deliveries whose outcome could not be recorded).
const DB_ERROR_PAUSE: Duration = Duration::from_secs(5);

/// How long sends in flight may finish after shutdown; the rest are abandoned, stay pending
/// and are sent after the next start.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How often a closed gate ([`Outbox::gated`]) is looked at again.
const GATE_RECHECK: Duration = Duration::from_millis(100);

/// How often delivered and given-up deliveries past retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60 * 60);

/// Whether a delivery due at `next_attempt_ms` is due at `now_ms` (both wall clock).
///
/// Due times outlive the process, so they are wall-clock times, and the wall clock can step
/// back (an NTP correction, a clock set by hand). No due time is ever set further ahead than
/// `max_backoff` (the longest wait `policy::after_failure` computes; new deliveries are due at
/// once), so one further ahead than that was set before such a step and is due now: a fire
/// page queued just before the clock went back an hour must not wait that hour.
pub(crate) fn is_due(next_attempt_ms: u64, now_ms: u64, max_backoff: Duration) -> bool {
    next_attempt_ms <= now_ms || next_attempt_ms > now_ms.saturating_add(max_backoff.as_millis() as u64)
}

/// Delivers the outbox through `channels` (by name) until `shutdown` is cancelled.
///
/// Each channel sends its most urgent due delivery first, within its rate limit
/// ([`Channel::rate_limit`]); a delivery held back by the limit waits, unchanged, for room in
/// the channel's window. Up to `settings.concurrency` deliveries are in flight at once, each
/// in its own task, so a slow channel holds only its own deliveries. Each outcome is recorded
/// in the outbox first and then sent to `reports`; when the receiver is slow, only the
/// reporting task waits. A closed `reports` is ignored (deliveries go on). Pending deliveries
/// to a name missing from `channels` fail permanently and are given up.
pub async fn run(
    outbox: Outbox,
    channels: HashMap<String, Channel>,
    settings: DeliveryConfig,
    reports: mpsc::Sender<DeliveryReport>,
    shutdown: CancellationToken,
) {
    let concurrency = settings.concurrency.get();
    let job = Arc::new(Job { outbox: outbox.clone(), channels, settings, reports });
    let mut tasks = JoinSet::new();
    let mut in_flight: HashMap<tokio::task::Id, DeliveryKey> = HashMap::new();
    let mut last_prune: Option<Instant> = None;
    let mut windows: HashMap<String, Window> = job
        .channels
        .iter()
        .filter_map(|(name, channel)| channel.rate_limit().map(|limit| (name.clone(), Window::new(limit))))
        .collect();
    let mut held: HashSet<DeliveryKey> = HashSet::new();
    restore_windows(&outbox, &mut windows).await;
    tracing::info!(
        channels = job.channels.len(),
        location = %outbox.location(),
        "Notification delivery started."
    );

    while !shutdown.is_cancelled() {
        if !outbox.may_send() {
            pause(&shutdown, GATE_RECHECK).await;
            continue;
        }
        if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(Instant::now());
            prune(&job).await;
        }

        // Each channel's `concurrency` most urgent due rows always include every row of it
        // that can be started now: at most `in_flight.len()` of them are already being sent.
        let now = unix_ms();
        let max_backoff = job.settings.max_backoff;
        let due = match outbox.call(move |store| store.due(now, max_backoff, concurrency)).await {
            Ok(due) => due,
            Err(error) => {
                tracing::error!(%error, "Reading the notification outbox failed.");
                pause(&shutdown, DB_ERROR_PAUSE).await;
                continue;
            }
        };
        debug_assert!(due.rows.iter().all(|r| is_due(r.next_attempt_ms, now, max_backoff)));
        let superseded = outbox.take_superseded();
        if !superseded.is_empty() {
            // Sent apart, like every report, so a slow receiver holds no delivery.
            let reports = job.reports.clone();
            tokio::spawn(async move {
                for report in superseded {
                    let _ = reports.send(report).await;
                }
            });
        }
        let busy: HashSet<DeliveryKey> = in_flight.values().cloned().collect();
        let free = concurrency.saturating_sub(in_flight.len());
        let plan = schedule::plan(due.rows, &busy, free, &mut windows, now);
        count_held(&outbox, &mut held, &plan, now);
        for row in plan.start {
            let key = row.key.clone();
            let handle = tasks.spawn(deliver(job.clone(), row));
            in_flight.insert(handle.id(), key);
        }

        let next = match (due.next_due_ms, plan.room_at_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let wait = next.map_or(IDLE_RECHECK, |at| Duration::from_millis(at.saturating_sub(now)));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = outbox.inner.wake.notified() => {}
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let recorded = match done {
                    Ok((id, recorded)) => {
                        in_flight.remove(&id);
                        recorded
                    }
                    Err(error) => {
                        // A panicking channel: the row stays pending and is tried again.
                        in_flight.remove(&error.id());
                        tracing::error!(%error, "A notification delivery task failed.");
                        false
                    }
                };
                if !recorded {
                    pause(&shutdown, DB_ERROR_PAUSE).await;
                }
            }
            _ = tokio::time::sleep(wait.min(IDLE_RECHECK)) => {}
        }
    }

    if !tasks.is_empty() {
        let waited =
            tokio::time::timeout(SHUTDOWN_GRACE, async { while tasks.join_next().await.is_some() {} });
        if waited.await.is_err() {
            tracing::warn!(
                abandoned = tasks.len(),
                "Notification sends still running at shutdown were abandoned; \
                 they are retried after the next start."
            );
            tasks.abort_all();
        }
    }
    tracing::info!("Notification delivery stopped.");
}

/// Counts into each window the deliveries its channel accepted within the window before this
/// start, so a restart (or a crash loop) does not hand a robot a second full window: DingTalk
/// blocks a robot for ten minutes past its limit. Failed attempts left no time and are not
/// counted. A database error leaves the windows empty (logged): delivery goes on.
async fn restore_windows(outbox: &Outbox, windows: &mut HashMap<String, Window>) {
    let now = unix_ms();
    for (name, window) in windows.iter_mut() {
        let since = now.saturating_sub(window.limit().per.as_millis() as u64);
        let target = name.clone();
        match outbox.call(move |store| store.delivered_since(&target, since)).await {
            Ok(times) => times.into_iter().for_each(|t| window.take(t)),
            Err(error) => {
                tracing::error!(target = %name, %error, "Reading recent deliveries for a rate limit failed.")
            }
        }
    }
}

/// Counts the deliveries `plan` holds that were not held in the round before, per channel,
/// and logs a channel that starts holding.
fn count_held(outbox: &Outbox, held: &mut HashSet<DeliveryKey>, plan: &schedule::Plan, now: u64) {
    let before = std::mem::take(held);
    let mut newly: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for key in &plan.held {
        if !before.contains(key) {
            *newly.entry(key.target.as_str()).or_default() += 1;
        }
        held.insert(key.clone());
    }
    if newly.is_empty() {
        return;
    }
    let was_holding: HashSet<&str> = before.iter().map(|k| k.target.as_str()).collect();
    let mut stats = outbox.stats_mut();
    for (target, n) in newly {
        *stats.held.entry(target.to_owned()).or_default() += n;
        if !was_holding.contains(target) {
            tracing::info!(
                target,
                held = n,
                room_in_ms = plan.room_at_ms.map(|at| at.saturating_sub(now)),
                "Notification channel at its rate limit; deliveries wait for room in its window."
            );
        }
    }
}

/// What every delivery task shares.
struct Job {
    outbox: Outbox,
    channels: HashMap<String, Channel>,
    settings: DeliveryConfig,
    reports: mpsc::Sender<DeliveryReport>,
}

/// Makes one attempt of `row`, records the outcome and reports it. Returns whether the outcome
/// was recorded.
async fn deliver(job: Arc<Job>, row: Pending) -> bool {
    let Pending { key, case_id, message, attempts, enqueued_ms, .. } = row;
    if !job.outbox.may_send() {
        // Closed since the round began: no attempt, nothing recorded; the round's top waits.
        return true;
    }
    let attempt = attempts + 1;
    let sent = match (&message, job.channels.get(&key.target)) {
        (Err(e), _) => Err(SendError::Unreadable(e.clone())),
        (Ok(_), None) => Err(SendError::UnknownTarget(key.target.clone())),
        (Ok(msg), Some(channel)) => channel.send(msg).await,
    };
    let now = unix_ms();
    let report = |outcome| DeliveryReport {
        notification_id: key.notification_id,
        case_id,
        target: key.target.clone(),
        outcome,
    };

    let (recorded, outcomes) = match sent {
        Ok(()) => {
            tracing::info!(
                target = %key.target,
                notification_id = key.notification_id,
                case_id,
                attempt,
                "Notification delivered."
            );
            let k = key.clone();
            let recorded = job.outbox.call(move |s| s.delivered(&k, attempt, now)).await;
            (recorded, vec![Outcome::Delivered { attempt }])
        }
        Err(error) => {
            let text = error.to_string();
            let next = after_failure(&error, attempt, enqueued_ms, now, &job.settings, fastrand::f64());
            let failed = Outcome::Failed {
                error: text.clone(),
                reason: error.reason(),
                retryable: error.is_retryable(),
                attempt,
            };
            let k = key.clone();
            match next {
                AfterFailure::RetryAt(at) => {
                    tracing::warn!(
                        target = %key.target,
                        notification_id = key.notification_id,
                        case_id,
                        attempt,
                        reason = error.reason(),
                        retry_in_ms = at.saturating_sub(now),
                        error = %error,
                        "Notification delivery failed; will retry."
                    );
                    let recorded = job.outbox.call(move |s| s.retry_at(&k, attempt, at, &text)).await;
                    (recorded, vec![failed])
                }
                AfterFailure::GiveUp => {
                    tracing::error!(
                        target = %key.target,
                        notification_id = key.notification_id,
                        case_id,
                        attempt,
                        reason = error.reason(),
                        retryable = error.is_retryable(),
                        error = %error,
                        "Notification delivery failed; giving up."
                    );
                    let recorded = job.outbox.call(move |s| s.dead(&k, attempt, &text, now)).await;
                    (recorded, vec![failed, Outcome::GaveUp { attempts: attempt }])
                }
            }
        }
    };
    if let Err(error) = &recorded {
        tracing::error!(
            target = %key.target,
            notification_id = key.notification_id,
            %error,
            "Recording a notification delivery outcome failed; it may be sent again."
        );
    }
    for outcome in outcomes {
        // A closed receiver means nobody listens any more (shutdown); deliveries go on.
        let _ = job.reports.send(report(outcome)).await;
    }
    recorded.is_ok()
}

/// Deletes finished deliveries past retention.
async fn prune(job: &Job) {
    let bound = unix_ms().saturating_sub(job.settings.retention.as_millis() as u64);
    match job.outbox.prune(bound).await {
        Ok(0) => {}
        Ok(deleted) => tracing::info!(deleted, "Pruned finished notification deliveries past retention."),
        Err(error) => tracing::error!(%error, "Pruning the notification outbox failed."),
    }
}

async fn pause(shutdown: &CancellationToken, wait: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = shutdown.cancelled() => {}
    }
}

#[cfg(test)]
mod due_tests {
    use super::*;

    #[test]
    fn a_due_time_set_before_the_clock_stepped_back_is_due() {
        let max = Duration::from_secs(600);
        let now = 1_763_860_000_000;
        assert!(is_due(now, now, max));
        assert!(is_due(now - 1, now, max));
        // A retry within the longest backoff waits for its time.
        assert!(!is_due(now + 1, now, max));
        assert!(!is_due(now + 600_000, now, max));
        // Further ahead than any backoff: set before the clock went back; due now.
        assert!(is_due(now + 600_001, now, max));
        assert!(is_due(now + 3_600_000, now, max));
    }
}
