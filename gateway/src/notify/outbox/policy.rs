//! When to try a failed delivery again, as a pure function of the failure, the attempt count
//! and the time.
//!
//! The backoff is computed from the attempt count stored with each delivery rather than from
//! an in-memory iterator (such as [`crate::retry::backoff`]), so that it survives restarts and
//! each delivery keeps its own pace.

use std::time::Duration;

use super::config::DeliveryConfig;
use crate::notify::SendError;

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

/// What to do after attempt `attempt` of a delivery enqueued at `enqueued_ms` failed with
/// `error` at `now_ms`. Retryable failures are retried until `max_age` after enqueueing, with
/// one last attempt at that age; a server's `Retry-After` is honoured up to `max_backoff`.
pub fn after_failure(
    error: &SendError,
    attempt: u32,
    enqueued_ms: u64,
    now_ms: u64,
    settings: &DeliveryConfig,
    jitter: f64,
) -> AfterFailure {
    let deadline = enqueued_ms.saturating_add(settings.max_age.as_millis() as u64);
    if !error.is_retryable() || now_ms >= deadline {
        return AfterFailure::GiveUp;
    }
    let mut wait = backoff(attempt, settings.min_backoff, settings.max_backoff, jitter);
    if let Some(asked) = error.retry_after() {
        wait = wait.max(asked.min(settings.max_backoff));
    }
    AfterFailure::RetryAt(now_ms.saturating_add(wait.as_millis() as u64).min(deadline))
}
