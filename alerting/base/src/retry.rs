//! Exponential backoff with jitter, for everything that reconnects or retries (MQTT sessions,
//! database writes, Modbus polls). Jitter matters here: after a shared outage (a broker
//! restart, a dead switch) hundreds of connections would otherwise retry at the same instants.

use std::time::Duration;

use backon::BackoffBuilder;

/// Waits starting at `min`, doubling up to `max`, each with random jitter, never ending.
pub fn backoff(min: Duration, max: Duration) -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_never_ends() {
        let waits: Vec<_> = backoff(Duration::from_millis(100), Duration::from_secs(2)).take(20).collect();
        assert_eq!(waits.len(), 20);
        assert!(
            waits[0] >= Duration::from_millis(100) && waits[0] <= Duration::from_millis(200),
            "{waits:?}"
        );
        assert!(
            waits.iter().all(|w| *w <= Duration::from_secs(4)),
            "capped (jitter adds at most the wait itself): {waits:?}"
        );
        assert!(waits[19] >= Duration::from_secs(2), "reaches the cap: {waits:?}");
    }
}
