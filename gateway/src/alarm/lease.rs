//! The active gateway's side of the case store's lease (`[alerting.store] standby`): a thread
//! that renews it, the local deadline every page, downlink and MQTT reconnection checks, and
//! the exit once that deadline has passed (or once the database, unreachable past it, answers
//! again).
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
//! Past the deadline, with renewals that could not reach the database, the gateway cannot know
//! whether a standby took over, and a standby that cannot reach the database cannot have: it
//! goes on paging and sending downlinks ([`Lease::may_act`]; a page twice is harmless, every
//! page carries its idempotency key, a village gone silent is not) but reconnects no MQTT
//! session ([`Lease::holds`]), so a standby that did take over keeps its sessions. Once the
//! database answers: if it refuses the renewal (another gateway took the store), the gateway
//! exits as below; if it renews this gateway's epoch [`RESUME_AFTER`] times in a row, nobody
//! took over, and it carries on as the active one. Exiting there would lose what it held in
//! memory through the outage: the inputs the case store could not write (a fire that arrived
//! meanwhile, whose MQTT message was acknowledged long ago) and the outbox's rows. A gateway that was stopped past its deadline (its
//! watch finds a gap of over 1.5 s between two looks) or that did not try to renew exits at once.
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

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// No lease (SQLite, or a PostgreSQL store without `standby`): always held.
    Unbounded,
    /// Held until `deadline`, unless renewed. `failing_since`: when the oldest renewal began
    /// that has not gone through (in flight or failed) since the last one that did.
    Until { deadline: Instant, failing_since: Option<Instant> },
    /// The deadline passed while renewals could not reach the database: nobody can know
    /// whether a standby took over, and a standby that cannot reach it either cannot. Pages
    /// and downlinks go on (a page twice is harmless, each carries its idempotency key; a
    /// village gone silent is not), MQTT reconnections do not (a standby that did take over
    /// must keep its sessions). Ends once the database answers: refused, with the exit;
    /// renewed `renewed` times in a row, up to [`RESUME_AFTER`], held again.
    Unreachable { renewed: u32 },
    /// Another gateway took the store (the database refused a renewal), the deadline passed
    /// without a renewal failing, this gateway was stopped past it, or the database answered
    /// after it was unreachable: for good.
    Lost,
}

/// A look at the lease by its watch: go on until `Wait`'s instant, or exit.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Look {
    Wait(Instant),
    Exit,
}

/// A watch that slept (it never sleeps more than 100 ms at a time) this much longer than it
/// meant to was stopped (SIGSTOP, a paused VM), or the machine was too loaded to run it: the
/// gateway takes it as stopped, since a standby may have taken over meanwhile. A takeover
/// needs the database's lease (3 s by default) to run out after the last renewal, which is at
/// most `renew_every` (1 s) old at the stop, so a stop that let one happen lasted 2 s at least.
const STOPPED_GAP: Duration = Duration::from_millis(1_500);

/// The part of the lease a check must leave for the act it guards (a page in flight, a
/// publish), and for the two clocks' rates: a sixth, 500 ms of the default 3 s.
///
/// Renewals that must go through in a row before a gateway whose lease ran out while the
/// database was away holds it again. One is not enough: a standby that looked at the lease
/// just before this gateway's first renewal saw it expired, and may be ending this one's
/// session and taking the store; that takes it milliseconds, so the next renewal, `every`
/// (1 s) later, is refused if it did. Meanwhile this gateway still reconnects no MQTT session.
pub const RESUME_AFTER: u32 = 2;
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
        let lease = Arc::new(Lease {
            state: Mutex::new(State::Until { deadline: sent + validity, failing_since: None }),
        });
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

    /// Whether this gateway still holds the lease on its own clock: checked before every MQTT
    /// reconnection, which would take a session from a standby that took over.
    pub fn holds(&self) -> bool {
        self.holds_at(Instant::now())
    }

    /// Whether this gateway may page and publish downlinks: while it holds the lease, and
    /// while the database cannot be reached to say otherwise.
    pub fn may_act(&self) -> bool {
        matches!(*self.state.lock().unwrap(), State::Unreachable { .. }) || self.holds()
    }

    fn holds_at(&self, now: Instant) -> bool {
        match *self.state.lock().unwrap() {
            State::Unbounded => true,
            State::Until { deadline, .. } => now < deadline,
            State::Unreachable { .. } | State::Lost => false,
        }
    }

    /// A renewal begins at `at`.
    fn attempting(&self, at: Instant) {
        if let State::Until { failing_since, .. } = &mut *self.state.lock().unwrap() {
            failing_since.get_or_insert(at);
        }
    }

    /// A renewal sent at `sent` went through; it holds until `until`.
    fn renewed(&self, until: Instant) {
        let mut state = self.state.lock().unwrap();
        match *state {
            // A lease that ran out stays out: the standby may have taken it meanwhile, and a
            // renewal that went through after the deadline does not undo what the checks
            // refused.
            State::Until { deadline, .. } if Instant::now() < deadline => {
                *state = State::Until { deadline: until.max(deadline), failing_since: None };
            }
            // The database answers again after the deadline and renews this gateway's epoch:
            // nobody took over. Held again after [`RESUME_AFTER`] renewals in a row.
            State::Unreachable { renewed } if renewed + 1 < RESUME_AFTER => {
                *state = State::Unreachable { renewed: renewed + 1 };
            }
            State::Unreachable { .. } => {
                tracing::warn!(
                    "The case store answers again and this gateway's lease is still its own: it goes on as the \
                     village's active gateway, writes what it held in memory and reconnects its sessions."
                );
                *state = State::Until { deadline: until, failing_since: None };
            }
            _ => {}
        }
    }

    /// A renewal failed (not refused): renewals in a row start again from none.
    fn failed(&self) {
        if let State::Unreachable { renewed } = &mut *self.state.lock().unwrap() {
            *renewed = 0;
        }
    }

    fn lose(&self) {
        *self.state.lock().unwrap() = State::Lost;
    }

    /// The watch's look at `now`; `stopped` when it slept far longer than it meant to.
    fn look(&self, now: Instant, stopped: bool) -> Option<Look> {
        let mut state = self.state.lock().unwrap();
        match *state {
            State::Unbounded => None,
            State::Lost => Some(Look::Exit),
            // Within the deadline nobody can have taken over, stopped or not: the database's
            // lease outlasts the local deadline.
            State::Until { deadline, .. } if now < deadline => Some(Look::Wait(deadline)),
            // Stopped past it: a standby may have taken over meanwhile, whatever the renewals
            // did before the stop.
            State::Until { .. } if stopped => Some(Look::Exit),
            // Past the deadline with renewals that did not go through: the database is away.
            State::Until { failing_since: Some(_), .. } => {
                tracing::error!(
                    "The case store cannot be reached and this gateway's lease ran out on its own clock. \
                     It goes on paging and sending downlinks (a page twice is harmless, a silent village \
                     is not), and reconnects no MQTT session until the database renews its lease again \
                     (it restarts as a standby if the database says another gateway took the store)."
                );
                *state = State::Unreachable { renewed: 0 };
                Some(Look::Wait(now + Duration::from_millis(100)))
            }
            State::Unreachable { .. } => Some(Look::Wait(now + Duration::from_millis(100))),
            // Past the deadline and not one renewal tried since the last that went through.
            State::Until { failing_since: None, .. } => Some(Look::Exit),
        }
    }
}

/// Renews every `every` until the lease is lost. A renewal that fails is tried again at once
/// (a session the database ended, as a standby does to a stale holder, reconnects), and a
/// failure is logged once until one goes through again.
fn renew(mut renewer: LeaseRenewer, every: Duration, validity: Duration, lease: &Lease) {
    let mut failing = false;
    while *lease.state.lock().unwrap() != State::Lost {
        std::thread::sleep(every);
        let sent = Instant::now();
        lease.attempting(sent);
        let result = match renewer.renew() {
            Err(error) if !matches!(error, StoreError::Fenced { .. }) => renewer.renew(),
            result => result,
        };
        match result {
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
                lease.failed();
                if !failing {
                    tracing::warn!(%error, "Cannot renew the case store's lease; this gateway stops reconnecting when it runs out.");
                    failing = true;
                }
            }
        }
    }
}

/// Looks at the lease every 100 ms at most; exits once it is lost ([`Lease::look`]).
fn watch(lease: &Lease) {
    let mut last = Instant::now();
    loop {
        let now = Instant::now();
        // Short sleeps: a renewal moves the deadline, and a stop (SIGSTOP) between two looks
        // shows as a gap on the first look after it.
        let stopped = now.duration_since(last) > STOPPED_GAP;
        last = now;
        match lease.look(now, stopped) {
            None => return,
            Some(Look::Wait(until)) => {
                std::thread::sleep(until.saturating_duration_since(now).min(Duration::from_millis(100)));
            }
            Some(Look::Exit) => break,
        }
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

    fn until(deadline: Instant, failing_since: Option<Instant>) -> Lease {
        Lease { state: Mutex::new(State::Until { deadline, failing_since }) }
    }

    #[test]
    fn a_lease_holds_until_its_deadline_and_a_lost_one_for_good() {
        let start = Instant::now();
        let lease = until(start + Duration::from_secs(2), None);
        assert!(lease.holds_at(start + Duration::from_millis(1999)));
        assert!(!lease.holds_at(start + Duration::from_secs(2)), "the deadline itself is too late");
        lease.renewed(start + Duration::from_secs(60));
        assert!(lease.holds_at(start + Duration::from_secs(59)));
        lease.lose();
        assert!(!lease.holds_at(start));
        assert!(!lease.may_act());
        lease.renewed(start + Duration::from_secs(120));
        assert!(!lease.holds_at(start), "a lost lease is not renewed");
        assert!(Lease::unbounded().holds() && Lease::unbounded().may_act());
    }

    #[test]
    fn a_lease_that_ran_out_is_not_renewed_late() {
        let past = Instant::now() - Duration::from_millis(1);
        let lease = until(past, None);
        lease.renewed(Instant::now() + Duration::from_secs(60));
        assert!(!lease.holds());
        assert!(!lease.may_act());
    }

    #[test]
    fn past_its_deadline_a_gateway_whose_renewals_did_not_go_through_keeps_paging_but_reconnects_nothing() {
        let start = Instant::now();
        let lease = until(start + Duration::from_secs(2), None);
        lease.attempting(start + Duration::from_secs(1));
        assert_eq!(
            lease.look(start + Duration::from_secs(1), false),
            Some(Look::Wait(start + Duration::from_secs(2)))
        );
        // The deadline passes with that renewal unanswered: the database is away.
        let past = start + Duration::from_millis(2100);
        assert!(matches!(lease.look(past, false), Some(Look::Wait(_))));
        assert!(lease.may_act(), "pages and downlinks go on");
        assert!(!lease.holds(), "MQTT sessions are not taken back");
        // Unreachable and then stopped: it goes on until the database answers (a page twice at
        // most, until its next renewal is refused).
        assert!(matches!(lease.look(past + Duration::from_secs(5), true), Some(Look::Wait(_))));
        // Or the database answers again and renews this gateway's epoch: after RESUME_AFTER
        // renewals in a row (a failure between them starts the count again) it holds the
        // lease again, and reconnects.
        let answered = until(start + Duration::from_secs(2), Some(start));
        answered.look(past, false);
        let later = Instant::now() + Duration::from_secs(60);
        answered.renewed(later);
        assert!(!answered.holds() && answered.may_act(), "one renewal is not enough");
        answered.failed();
        answered.renewed(later);
        assert!(!answered.holds(), "the count started again after the failure");
        answered.renewed(later);
        assert!(answered.holds(), "held again after {RESUME_AFTER} renewals in a row");
        assert_eq!(answered.look(past, false), Some(Look::Wait(later)));
        // Or it refuses the renewal (another gateway took the store): the exit.
        let taken = until(start + Duration::from_secs(2), Some(start));
        taken.look(past, false);
        taken.lose();
        assert_eq!(taken.look(past, false), Some(Look::Exit));
        assert!(!taken.may_act());
    }

    #[test]
    fn a_gateway_stopped_past_its_deadline_or_that_never_tried_to_renew_exits() {
        // Deadlines in the past of the real clock, which `may_act` reads.
        let start = Instant::now() - Duration::from_secs(10);
        // A renewal that failed before a freeze does not keep a woken gateway paging.
        let frozen = until(start + Duration::from_secs(2), Some(start + Duration::from_secs(1)));
        assert_eq!(frozen.look(start + Duration::from_secs(9), true), Some(Look::Exit));
        assert!(!frozen.may_act());
        // A gap within the deadline (a loaded machine, a short stop) changes nothing.
        let loaded = until(start + Duration::from_secs(2), None);
        assert_eq!(
            loaded.look(start + Duration::from_secs(1), true),
            Some(Look::Wait(start + Duration::from_secs(2)))
        );
        let silent = until(start + Duration::from_secs(2), None);
        assert_eq!(silent.look(start + Duration::from_secs(3), false), Some(Look::Exit));
        assert!(!silent.may_act());
        // A renewal that went through clears the failure.
        let renewed = until(Instant::now() + Duration::from_secs(60), Some(start));
        renewed.renewed(Instant::now() + Duration::from_secs(90));
        let state = *renewed.state.lock().unwrap();
        assert!(matches!(state, State::Until { failing_since: None, .. }), "{state:?}");
        assert_eq!(Lease::unbounded().look(start, true), None, "no lease, no watch");
    }

    #[test]
    fn the_margin_leaves_a_sixth_of_the_lease() {
        assert_eq!(margin(Duration::from_secs(3)), Duration::from_millis(500));
    }
}
