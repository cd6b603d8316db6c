//! When to try a failed delivery again, as a pure function of the failure, the attempt count
//! and the time.
//!
//! The backoff is computed from the attempt count stored with each delivery rather than from
//! an in-memory iterator (such as [`firegrid_base::retry::backoff`]), so that it survives restarts and
//! each delivery keeps its own pace.

use std::time::Duration;

use super::config::DeliveryConfig;
use crate::SendError;

/// The next step after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again at this time, Unix ms.
    RetryAt(u64),
    /// Stop: the failure is permanent, or the delivery has reached its maximum age.
    GiveUp,
}

/// The wait before attempt `attempt + 1`, after `attempt` (≥ 1) failures: `min_backoff`
/// doubled per failure up to `max_backoff`, then "equal jitter" (uniformly between half and
/// all of it, never below `min_backoff`). Jitter spreads the retries of the many deliveries a
/// shared outage fails at once; the floor keeps the first retry prompt. `jitter` is uniform
/// in `[0, 1)`.
pub fn backoff(attempt: u32, min: Duration, max: Duration, jitter: f64) -> Duration {
    let min = min.min(max);
    let doublings = attempt.saturating_sub(1).min(30);
    let full = min.saturating_mul(1 << doublings).min(max);
    let half = full / 2;
    (half + half.mul_f64(jitter.clamp(0.0, 1.0))).max(min)
}

/// The fewest attempts a delivery makes within `max_age` when every wait is the longest
/// [`backoff`] allows, counting the first attempt and the last one at `max_age` itself.
pub fn attempts_within(max_age: Duration, min: Duration, max: Duration) -> u32 {
    let (mut attempts, mut elapsed) = (1u32, Duration::ZERO);
    loop {
        let wait = backoff(attempts, min, max, 1.0);
        if elapsed + wait >= max_age || attempts == u32::MAX - 1 {
            return attempts + 1;
        }
        elapsed += wait;
        attempts += 1;
    }
}

/// What to do after attempt `attempt` of a delivery enqueued at `enqueued_ms` failed with
/// `error` at `now_ms`. Retryable failures are retried until `max_age` after enqueueing, with
/// one last attempt at that age; a server's `Retry-After` is honoured up to `max_backoff`.
///
/// The age is wall-clock time, because it outlives the process, and a wall clock can jump
/// forward by hours (a bad NTP source, a clock set by hand). So a delivery is given up for its
/// age only once it has also made at least [`attempts_within`] `max_age` attempts: a fire page
/// queued a minute before the clock jumped an hour ahead keeps being tried at its own pace
/// instead of being dropped at its next failure.
pub fn after_failure(
    error: &SendError,
    attempt: u32,
    enqueued_ms: u64,
    now_ms: u64,
    settings: &DeliveryConfig,
    jitter: f64,
) -> AfterFailure {
    let deadline = enqueued_ms.saturating_add(settings.max_age.as_millis() as u64);
    let tried_long_enough =
        attempt >= attempts_within(settings.max_age, settings.min_backoff, settings.max_backoff);
    if !error.is_retryable() || (now_ms >= deadline && tried_long_enough) {
        return AfterFailure::GiveUp;
    }
    let mut wait = backoff(attempt, settings.min_backoff, settings.max_backoff, jitter);
    if let Some(asked) = error.retry_after() {
        wait = wait.max(asked.min(settings.max_backoff));
    }
    let next = now_ms.saturating_add(wait.as_millis() as u64);
    // The last attempt at the maximum age, unless the clock already went past it.
    AfterFailure::RetryAt(if now_ms < deadline { next.min(deadline) } else { next })
}
