//! Property tests: random sequences of device signals, officer commands, delivery results
//! and clock advances, checked after every step against the engine's invariants, and
//! replayed to check determinism.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    Signal { device: u8, building: u8, condition: u8, active: bool },
    Command { case: u8, scope: u8, command: u8 },
    Delivery { notification: u8, delivered: bool },
    Run { secs: u16 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..12u8, 0..6u8, 0..8u8, any::<bool>())
            .prop_map(|(device, building, condition, active)| Op::Signal { device, building, condition, active }),
        3 => (1..12u8, 0..5u8, 0..11u8).prop_map(|(case, scope, command)| Op::Command { case, scope, command }),
        1 => (1..60u8, any::<bool>()).prop_map(|(notification, delivered)| Op::Delivery { notification, delivered }),
        3 => (0..400u16).prop_map(|secs| Op::Run { secs }),
    ]
}

fn location(building: u8) -> Location {
    Location {
        district: "D".into(),
        street: "S".into(),
        community: "C".into(),
        grid: if building < 3 { "G1".into() } else { "G2".into() },
        building: format!("b{building}"),
    }
}

fn input(op: &Op) -> Option<Input> {
    Some(match *op {
        Op::Signal { device, building, condition, active } => {
            let condition = [
                Condition::Smoke,
                Condition::Smoke,
                Condition::Camera,
                Condition::Fault,
                Condition::Offline,
                Condition::WaterLow,
                Condition::Test,
                Condition::Hushed,
            ][condition as usize];
            // A device lives in one building.
            let building = if matches!(condition, Condition::Smoke | Condition::Test | Condition::Hushed) {
                device % 6
            } else {
                building
            };
            // Devices 10 and 11 are not in the registry: their cases sit at the street desk.
            let unplaced = device >= 10;
            let location = if unplaced {
                Location { district: "D".into(), street: "S".into(), ..Location::default() }
            } else {
                location(building)
            };
            Input::Signal(Signal {
                device: format!("d{device}"),
                location,
                condition,
                active,
                unplaced: unplaced.then(|| "v".into()),
            })
        }
        Op::Command { case, scope, command } => {
            let scope = ["grid:G1", "grid:G2", "community:C", "street:S", "district:D"][scope as usize];
            let case = CaseId(u64::from(case));
            let command = match command {
                0 | 1 => Command::Acknowledge { case },
                2 => Command::Dispatch { case, assignee: "team".into() },
                3 => Command::Dispose {
                    case,
                    disposition: Disposition::FalseAlarm { cause: FalseAlarmCause::Dust },
                },
                4 => Command::Close {
                    case,
                    feedback: Feedback { report: "done".into(), ..Feedback::default() },
                },
                5 => Command::ResetLatch { case, device: None },
                6 => Command::Shelve {
                    case,
                    device: "d1".into(),
                    duration: Duration::from_secs(120),
                    reason: "r".into(),
                },
                7 => Command::Unshelve { case, device: "d1".into() },
                8 => Command::Note { case, text: "n".into() },
                9 => Command::Place { case, location: location(5) },
                _ => Command::Verify { case, method: VerifyMethod::Camera, finding: "f".into() },
            };
            Input::Officer { officer: Officer { id: "o".into(), scope: scope.parse().unwrap() }, command }
        }
        Op::Delivery { notification, delivered } => {
            Input::Delivery { notification: u64::from(notification), delivered }
        }
        Op::Run { .. } => return None,
    })
}

/// Runs the ops, ticking at every wake like the gateway; returns the log of
/// (time, input) the gateway would store, and checks invariants after every step.
fn drive(engine: &mut Engine, ops: &[Op]) -> Vec<(Millis, Option<Input>)> {
    let config = engine.config().clone();
    let mut now: Millis = 1_000_000;
    let mut log = Vec::new();
    let mut opened: BTreeSet<CaseId> = BTreeSet::new();
    let mut last_page: BTreeMap<CaseId, Millis> = BTreeMap::new();
    let mut levels: BTreeMap<CaseId, Level> = BTreeMap::new();
    let mut closed: BTreeMap<CaseId, Millis> = BTreeMap::new();
    for op in ops {
        let until = match op {
            Op::Run { secs } => now + u64::from(*secs) * 1000,
            _ => now + 100,
        };
        let mut actions = Vec::new();
        while let Some(wake) = engine.next_wake().filter(|w| *w <= until) {
            now = wake.max(now);
            // Every tick with a due timer may change state, with or without actions (a
            // drill's reminder pages nobody), so the gateway logs each of them.
            let out = engine.tick(now);
            log.push((now, None));
            actions.extend(out.into_iter().map(|a| (now, a)));
        }
        now = until;
        if let Some(input) = input(op)
            && let Ok(out) = engine.handle(now, &input)
        {
            log.push((now, Some(input)));
            actions.extend(out.into_iter().map(|a| (now, a)));
        }
        for (at, action) in &actions {
            match action {
                Action::Record(t) if t.kind == TransitionKind::Opened => {
                    assert!(opened.insert(t.case), "case {} opened twice", t.case);
                }
                Action::Record(t) => {
                    assert!(opened.contains(&t.case), "transition of unknown case {}", t.case)
                }
                Action::Notify(n) => {
                    last_page.insert(n.case, *at);
                }
                _ => {}
            }
        }
        // Never lost: every case opened is still held (runs are far shorter than keep_closed).
        let mut keys = BTreeSet::new();
        for id in &opened {
            let case = engine.case(*id).unwrap_or_else(|| panic!("case {id} lost"));
            // Level never decreases.
            let before = levels.insert(*id, case.level).unwrap_or(Level::Grid);
            assert!(case.level >= before, "case {id} level fell from {before:?} to {:?}", case.level);
            // Closed is terminal.
            if let Some(at) = closed.get(id) {
                assert!(case.is_closed(), "case {id} reopened");
                assert_eq!(case.closed.as_ref().unwrap().0.at, *at);
            } else if let Some((stamp, _)) = &case.closed {
                closed.insert(*id, stamp.at);
            }
            // A confirmed fire reaches the street.
            if case.confirmed {
                assert!(case.level >= Level::Street, "confirmed case {id} at {:?}", case.level);
            }
            if !case.is_closed() {
                // Never duplicated: one open case per kind and place (per unregistered
                // device, or the village's one flood case, at the unplaced desk).
                let unplaced =
                    case.unplaced.as_ref().map(|u| if u.flood { "*".into() } else { u.device.clone() });
                assert!(
                    keys.insert((case.kind, case.location.clone(), unplaced)),
                    "two open cases for {:?}",
                    case.location
                );
                // Every unacknowledged case has been told recently and has no deadline
                // overdue.
                if case.acknowledged.is_none() && !case.drill && !case.silenced(now) {
                    let policy = config.policy(case.severity);
                    let bound = if case.chattering {
                        policy.ack.iter().map(|d| d.due(0, &crate::Calendar::weekdays())).max().unwrap()
                    } else {
                        policy.renotify.as_millis() as u64
                    };
                    // A chattering device's new case may stay quiet until its deadline.
                    let last = last_page.get(id).copied().or(case.chattering.then_some(case.opened));
                    assert!(
                        last.is_some_and(|t| now - t <= bound),
                        "case {id} last paged at {last:?}, now {now}, bound {bound}"
                    );
                    assert!(case.ack_due.is_some_and(|due| due >= now), "case {id} deadline overdue");
                }
            }
        }
        assert_eq!(engine.open_cases(), keys.len());
    }
    log
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn invariants_hold_for_random_event_and_time_sequences(ops in proptest::collection::vec(op(), 1..120)) {
        let mut engine = Engine::new(Config::default());
        drive(&mut engine, &ops);
    }

    #[test]
    fn replaying_the_log_or_restoring_a_snapshot_gives_the_same_engine(
        ops in proptest::collection::vec(op(), 1..80),
        split in 0usize..80,
    ) {
        let mut engine = Engine::new(Config::default());
        let log = drive(&mut engine, &ops);
        let snapshot = |e: &Engine| {
            let mut buf = Vec::new();
            e.snapshot(&mut serde_json::Serializer::new(&mut buf)).unwrap();
            String::from_utf8(buf).unwrap()
        };
        let replay = |e: &mut Engine, entries: &[(Millis, Option<Input>)]| {
            for (at, input) in entries {
                match input {
                    Some(input) => { e.handle(*at, input).unwrap(); }
                    None => { e.tick(*at); }
                }
            }
        };
        let mut replayed = Engine::new(Config::default());
        replay(&mut replayed, &log);
        prop_assert_eq!(snapshot(&replayed), snapshot(&engine));

        let split = split.min(log.len());
        let mut first = Engine::new(Config::default());
        replay(&mut first, &log[..split]);
        let json = snapshot(&first);
        let mut restored =
            Engine::restore(Config::default(), &mut serde_json::Deserializer::from_str(&json)).unwrap();
        replay(&mut restored, &log[split..]);
        prop_assert_eq!(snapshot(&restored), snapshot(&engine));
        prop_assert_eq!(restored.next_wake(), engine.next_wake());
    }
}
