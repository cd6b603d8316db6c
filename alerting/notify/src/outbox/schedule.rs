//! Which due deliveries to start now, as a pure function of the due rows, what is in flight,
//! each channel's rate-limit window and the time.
//!
//! Per channel, the most urgent due delivery goes first (fire, then pre-alarm, ...; oldest
//! first within a severity): a channel that a rate limit lets send one message every few
//! seconds sends the fire page before the fault reminders queued ahead of it. Across channels
//! the same order decides who gets the worker's free slots.

use std::collections::{HashMap, HashSet};

use super::limit::Window;
use super::store::{DeliveryKey, Pending};

/// What to do now.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Start these, in this order; each has taken its slot in its channel's window.
    pub start: Vec<Pending>,
    /// Due, but held back by their channel's rate limit. Not an attempt: nothing is recorded.
    pub held: Vec<DeliveryKey>,
    /// When a held delivery's channel has room again, Unix ms (the earliest over channels).
    pub room_at_ms: Option<u64>,
}

/// Plans the start of `due` (most urgent first, as [`super::Store::due`] returns them) at
/// `now_ms` with `free` delivery slots, skipping those in `busy`. Each started delivery takes
/// a slot of its channel's window in `windows` (channels absent from it have no limit).
///
/// A channel whose window refuses its best remaining delivery is done for this round: the
/// rest of its rows are no more urgent, so the window refuses them too.
pub fn plan(
    due: Vec<Pending>,
    busy: &HashSet<DeliveryKey>,
    free: usize,
    windows: &mut HashMap<String, Window>,
    now_ms: u64,
) -> Plan {
    let mut plan = Plan::default();
    let mut closed: HashSet<String> = HashSet::new();
    for row in due {
        if busy.contains(&row.key) {
            continue;
        }
        if closed.contains(&row.key.target) {
            plan.held.push(row.key);
            continue;
        }
        if plan.start.len() >= free {
            // No slot left: the rest wait for a delivery to finish, not for a limit.
            continue;
        }
        if let Some(window) = windows.get_mut(&row.key.target) {
            if let Err(at) = window.check(now_ms, row.is_urgent()) {
                plan.room_at_ms = Some(plan.room_at_ms.map_or(at, |t| t.min(at)));
                closed.insert(row.key.target.clone());
                plan.held.push(row.key);
                continue;
            }
            window.take(now_ms);
        }
        plan.start.push(row);
    }
    plan
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::limit::RateLimit;
    use super::super::store::priority;
    use super::*;

    /// A due row of `target`; ids encode the order the tests expect.
    fn row(id: u64, target: &str, severity: &str, enqueued_ms: u64) -> Pending {
        Pending {
            key: DeliveryKey { notification_id: id, target: target.to_owned() },
            case_id: id,
            message: Err("not needed".into()),
            attempts: 0,
            enqueued_ms,
            next_attempt_ms: enqueued_ms,
            priority: priority(severity),
        }
    }

    /// Sorted as the store returns them: priority descending, then oldest.
    fn due(mut rows: Vec<Pending>) -> Vec<Pending> {
        rows.sort_by_key(|r| (std::cmp::Reverse(r.priority), r.enqueued_ms, r.key.notification_id));
        rows
    }

    fn ids(rows: &[Pending]) -> Vec<u64> {
        rows.iter().map(|r| r.key.notification_id).collect()
    }

    fn limited(target: &str, messages: u32, per_s: u64, reserve: u32) -> HashMap<String, Window> {
        let limit =
            RateLimit { reserve: Some(reserve), ..RateLimit::new(messages, Duration::from_secs(per_s)) };
        HashMap::from([(target.to_owned(), Window::new(limit))])
    }

    #[test]
    fn severity_orders_before_age() {
        assert!(priority("fire") > priority("pre_alarm"));
        assert!(priority("pre_alarm") > priority("water"));
        assert!(priority("offline") > priority("fault"));
        assert!(priority("fault") > priority("test"));
        assert_eq!(priority("test"), priority("something_new"));
        let rows = due(vec![
            row(10, "hook", "fault", 1),
            row(11, "hook", "test", 0),
            row(12, "hook", "fire", 9),
            row(13, "hook", "pre_alarm", 5),
            row(14, "hook", "fault", 2),
        ]);
        let plan = plan(rows, &HashSet::new(), 16, &mut HashMap::new(), 100);
        assert_eq!(ids(&plan.start), [12, 13, 10, 14, 11]);
        assert!(plan.held.is_empty());
    }

    #[test]
    fn a_fire_queued_behind_a_burst_of_faults_takes_the_reserved_slot() {
        // 3 per 10 s with 1 reserved: two faults go, the third waits; the fire goes at once.
        let mut windows = limited("hook", 3, 10, 1);
        let faults: Vec<_> = (0..10).map(|i| row(i, "hook", "fault", i)).collect();
        let first = plan(due(faults.clone()), &HashSet::new(), 16, &mut windows, 1_000);
        assert_eq!(ids(&first.start), [0, 1]);
        assert_eq!(first.held.len(), 8);
        assert_eq!(first.room_at_ms, Some(11_000));

        let mut rest: Vec<_> = faults[2..].to_vec();
        rest.push(row(99, "hook", "fire", 2_000));
        let second = plan(due(rest.clone()), &HashSet::new(), 16, &mut windows, 2_000);
        assert_eq!(ids(&second.start), [99], "the fire goes first, in the reserve");
        assert_eq!(second.held.len(), 8, "the faults stay held");

        // Without a reserve the fire waits for the window, but is still first once it opens.
        let mut windows = limited("hook", 3, 10, 0);
        let first = plan(due(faults), &HashSet::new(), 16, &mut windows, 1_000);
        assert_eq!(ids(&first.start), [0, 1, 2]);
        let held = plan(due(rest.clone()), &HashSet::new(), 16, &mut windows, 2_000);
        assert!(held.start.is_empty());
        assert_eq!(held.room_at_ms, Some(11_000));
        let opened = plan(due(rest), &HashSet::new(), 16, &mut windows, 11_000);
        assert_eq!(ids(&opened.start)[0], 99);
    }

    #[test]
    fn a_held_channel_holds_only_itself_and_busy_rows_are_skipped() {
        let mut windows = limited("robot", 1, 60, 0);
        let rows = due(vec![
            row(1, "robot", "fault", 0),
            row(2, "robot", "fault", 1),
            row(3, "hook", "fault", 2),
            row(4, "hook", "fault", 3),
        ]);
        let busy = HashSet::from([DeliveryKey { notification_id: 3, target: "hook".into() }]);
        let plan = plan(rows, &busy, 16, &mut windows, 0);
        assert_eq!(ids(&plan.start), [1, 4]);
        assert_eq!(plan.held, [DeliveryKey { notification_id: 2, target: "robot".into() }]);
        assert_eq!(plan.room_at_ms, Some(60_000));
    }

    #[test]
    fn free_slots_go_to_the_most_urgent_across_channels_and_no_slot_is_taken_for_nothing() {
        let mut windows = limited("robot", 5, 60, 0);
        let rows =
            due(vec![row(1, "hook", "fault", 0), row(2, "robot", "fire", 5), row(3, "robot", "fault", 1)]);
        let plan = plan(rows, &HashSet::new(), 1, &mut windows, 0);
        assert_eq!(ids(&plan.start), [2]);
        assert!(plan.held.is_empty(), "waiting for a slot is not being held by a limit");
        assert_eq!(windows.get_mut("robot").unwrap().used(0), 1, "only the started row took a slot");
    }
}
