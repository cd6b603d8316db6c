//! The active gateway's side of the case store's lease (`[alerting.store] standby`): a thread
//! that renews it, the local deadline every page, downlink and MQTT reconnection checks, and
//! the exit once that deadline has passed.
//!
//! The database decides who holds the store (its clock expires the lease, its epoch fences
//! every write: `firegrid_cases::store`), but a gateway that froze (SIGSTOP, a paused VM) and
//! woke after a standby took over must not page or publish before it finds out from the
//! database. So it keeps its own deadline on the monotonic clock: the instant before its last
//! successful renewal was sent, plus the lease, less a margin. The server started the renewed
//! lease after that instant, so the local deadline falls before the server's expiry whatever
//! the network delay was; the margin covers the time between a check and the act it guards.
//! Linux's `CLOCK_MONOTONIC` (`Instant`) goes on counting while a process is stopped, so a
//! gateway that wakes sees at once that its deadline has passed.
//!
//! Past the deadline the gateway exits with [`LEASE_LOST_EXIT`] and a log line saying so: its
//! supervisor (systemd `Restart=always`) starts it again, as a standby, since its
//! configuration says `standby`. Exiting drops every MQTT session and connection at once,
//! where demoting in place would have to stop and restart every task cleanly; the restart
//! costs a second, on a gateway that is not the active one any more.
//!
//! Main types: [`Lease`], started by [`Lease::hold`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firegrid_cases::store::{LeaseRenewer, StoreError};

/// The exit status of a gateway whose lease ran out: `EX_TEMPFAIL` of BSD's `sysexits.h`
/// ("temporary failure, try again"), so that a supervisor starts it again (as a standby).
pub const LEASE_LOST_EXIT: i32 = 75;

/// Whether this gateway may still act as the village's active one.
#[derive(Debug)]
pub struct Lease {
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// No lease (SQLite, or a PostgreSQL store without `standby`): always held.
    Unbounded,
    /// Held until this instant, unless renewed.
    Until(Instant),
    /// Another gateway took the store (the database refused a renewal), or the deadline
    /// passed: for good.
    Lost,
}

/// The part of the lease a check must leave for the act it guards (a page in flight, a
/// publish), and for the two clocks' rates: a sixth, 500 ms of the default 3 s.
fn margin(lease: Duration) -> Duration {
    lease / 6
}

impl Lease {
    /// A lease that is always held: for a gateway that has no standby.
    pub fn unbounded() -> Arc<Lease> {
        Arc::new(Lease { state: Mutex::new(State::Unbounded) })
    }

    /// Holds the store's lease: renews it once now (so the local deadline starts from a
    /// renewal this gateway timed), then every `every` on a thread of its own, and exits the
    /// process with [`LEASE_LOST_EXIT`] once it is lost.
    ///
    /// # Errors
    /// The first renewal's, when the store cannot be reached or another gateway took it.
    pub fn hold(mut renewer: LeaseRenewer, every: Duration) -> Result<Arc<Lease>, StoreError> {
        let validity = renewer.lease().saturating_sub(margin(renewer.lease()));
        let sent = Instant::now();
        renewer.renew()?;
        let lease = Arc::new(Lease { state: Mutex::new(State::Until(sent + validity)) });
        tracing::info!(
            epoch = renewer.epoch(),
            lease_ms = renewer.lease().as_millis() as u64,
            "This gateway is the village's active one; it renews its lease on the case store."
        );
        let renewing = lease.clone();
        std::thread::Builder::new()
            .name("lease-renew".into())
            .spawn(move || renew(renewer, every, validity, &renewing))
            .expect("a thread starts");
        let watched = lease.clone();
        std::thread::Builder::new()
            .name("lease-watch".into())
            .spawn(move || watch(&watched))
            .expect("a thread starts");
        Ok(lease)
    }

    /// Whether this gateway still holds the lease on its own clock.
    pub fn holds(&self) -> bool {
        self.holds_at(Instant::now())
    }

    fn holds_at(&self, now: Instant) -> bool {
        match *self.state.lock().unwrap() {
            State::Unbounded => true,
            State::Until(deadline) => now < deadline,
            State::Lost => false,
        }
    }

    fn renewed(&self, until: Instant) {
        let mut state = self.state.lock().unwrap();
        // A lease that ran out stays out: the standby may have taken it meanwhile, and a
        // renewal that went through after the deadline does not undo what the checks refused.
        if let State::Until(deadline) = *state
            && Instant::now() < deadline
        {
            *state = State::Until(until.max(deadline));
        }
    }

    fn lose(&self) {
        *self.state.lock().unwrap() = State::Lost;
    }

    /// When the lease runs out on the local clock, if it can.
    fn deadline(&self) -> Option<Instant> {
        match *self.state.lock().unwrap() {
            State::Unbounded => None,
            State::Until(deadline) => Some(deadline),
            State::Lost => Some(Instant::now()),
        }
    }
}

/// Renews every `every` until the lease is lost. A failed renewal is logged once until one
/// succeeds again (the database unreachable for a moment is no news every second).
fn renew(mut renewer: LeaseRenewer, every: Duration, validity: Duration, lease: &Lease) {
    let mut failing = false;
    while lease.holds() {
        std::thread::sleep(every);
        let sent = Instant::now();
        match renewer.renew() {
            Ok(()) => {
                if failing {
                    tracing::info!("The case store's lease is renewed again.");
                    failing = false;
                }
                lease.renewed(sent + validity);
            }
            Err(error @ StoreError::Fenced { .. }) => {
                tracing::error!(%error, "Another gateway took the case store.");
                lease.lose();
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "Cannot renew the case store's lease; this gateway stops acting when it runs out.");
                    failing = true;
                }
            }
        }
    }
}

/// Sleeps until the lease's local deadline; once it has passed without a renewal, exits.
fn watch(lease: &Lease) {
    loop {
        let Some(deadline) = lease.deadline() else { return };
        let now = Instant::now();
        if !lease.holds_at(now) {
            break;
        }
        // Short sleeps: a renewal moves the deadline, and a stop (SIGSTOP) between two looks
        // is seen on the first look after it.
        std::thread::sleep(deadline.saturating_duration_since(now).min(Duration::from_millis(100)));
    }
    tracing::error!(
        exit_status = LEASE_LOST_EXIT,
        "This gateway's lease on the case store ran out: it is not the village's active gateway any more. \
         Exiting so that it starts again as a standby."
    );
    std::process::exit(LEASE_LOST_EXIT);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_holds_until_its_deadline_and_a_lost_one_for_good() {
        let start = Instant::now();
        let lease = Lease { state: Mutex::new(State::Until(start + Duration::from_secs(2))) };
        assert!(lease.holds_at(start + Duration::from_millis(1999)));
        assert!(!lease.holds_at(start + Duration::from_secs(2)), "the deadline itself is too late");
        lease.renewed(start + Duration::from_secs(60));
        assert!(lease.holds_at(start + Duration::from_secs(59)));
        lease.lose();
        assert!(!lease.holds_at(start));
        lease.renewed(start + Duration::from_secs(120));
        assert!(!lease.holds_at(start), "a lost lease is not renewed");
        assert!(Lease::unbounded().holds());
    }

    #[test]
    fn a_lease_that_ran_out_is_not_renewed_late() {
        let past = Instant::now() - Duration::from_millis(1);
        let lease = Lease { state: Mutex::new(State::Until(past)) };
        lease.renewed(Instant::now() + Duration::from_secs(60));
        assert!(!lease.holds());
    }

    #[test]
    fn the_margin_leaves_a_sixth_of_the_lease() {
        assert_eq!(margin(Duration::from_secs(3)), Duration::from_millis(500));
    }
}
