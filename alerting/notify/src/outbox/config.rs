//! Delivery settings of the outbox (`[notify.delivery]`).

use std::num::NonZeroUsize;
use std::time::Duration;

use serde::Deserialize;

/// How the outbox retries, gives up and forgets.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Most deliveries in flight at once, over all channels. A slow channel holds only its
    /// own deliveries' slots, so with 16 one hung robot cannot hold back the others.
    #[serde(default = "default_concurrency")]
    pub concurrency: NonZeroUsize,
    /// Wait before the first retry; doubles with each failed attempt (with jitter).
    #[serde(default = "default_min_backoff", with = "humantime_serde")]
    pub min_backoff: Duration,
    /// Longest wait between two attempts.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// How long after enqueueing a delivery is retried; the last attempt is made at this age,
    /// and a delivery still failing then is given up (kept as `dead` in the history). An
    /// hour-old fire alarm has been escalated by other means long before.
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// How long delivered and given-up deliveries are kept for the history. Must exceed how
    /// far back the alarm engine replays its log after a restart: a replayed notification
    /// whose record was pruned would be sent again.
    #[serde(default = "default_retention", with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            concurrency: default_concurrency(),
            min_backoff: default_min_backoff(),
            max_backoff: default_max_backoff(),
            max_age: default_max_age(),
            retention: default_retention(),
        }
    }
}

fn default_concurrency() -> NonZeroUsize {
    NonZeroUsize::new(16).expect("16 is not zero")
}
fn default_min_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(5 * 60)
}
fn default_max_age() -> Duration {
    Duration::from_secs(60 * 60)
}
fn default_retention() -> Duration {
    Duration::from_secs(30 * 24 * 60 * 60)
}
