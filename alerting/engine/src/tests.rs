//! Table-driven tests: each runs a script of inputs and clock advances through one
//! [`check`] helper and compares the trace of actions with the expected text.

use std::fmt::Write;
use std::time::Duration;

use super::*;
use crate::Calendar;

fn at(building: &str) -> Location {
    let grid = if building.starts_with('B') { "G2" } else { "G1" };
    Location {
        district: "Xishan".into(),
        street: "Fuhai".into(),
        community: "C1".into(),
        grid: grid.into(),
        building: building.into(),
    }
}

fn signal(condition: Condition, device: &str, building: &str, active: bool) -> Input {
    Input::Signal(Signal { device: device.into(), location: at(building), condition, active, unplaced: None })
}

/// A device the registry does not know, reporting from village `fuhai-1`: its location
/// names only the street desk and the district above it.
fn stranger(condition: Condition, device: &str, active: bool) -> Input {
    let location = Location { district: "Xishan".into(), street: "Fuhai".into(), ..Location::default() };
    Input::Signal(Signal {
        device: device.into(),
        location,
        condition,
        active,
        unplaced: Some("fuhai-1".into()),
    })
}

fn place(case: u64, building: &str) -> Command {
    Command::Place { case: CaseId(case), location: at(building) }
}

fn smoke(device: &str, building: &str) -> Input {
    signal(Condition::Smoke, device, building, true)
}

fn officer(scope: &str) -> Officer {
    Officer { id: format!("officer-{scope}"), scope: scope.parse().unwrap() }
}

fn by(scope: &str, command: Command) -> Input {
    Input::Officer { officer: officer(scope), command }
}

fn ack(case: u64) -> Command {
    Command::Acknowledge { case: CaseId(case) }
}

fn dispose(case: u64, disposition: Disposition) -> Command {
    Command::Dispose { case: CaseId(case), disposition }
}

fn close(case: u64) -> Command {
    Command::Close {
        case: CaseId(case),
        feedback: Feedback { report: "checked".into(), work_orders: vec![], resident_informed: true },
    }
}

/// One line of a script: at `secs` seconds, handle an input or just let time run to it
/// (ticking at every instant the engine asks for, as the gateway does).
enum Step {
    In(u64, Input),
    Run(u64),
}
use Step::{In, Run};

fn render(now: Millis, action: &Action, trace: &mut String) {
    let t = now / 1000;
    match action {
        Action::Notify(n) => {
            let unverified = if n.unverified { " unverified" } else { "" };
            let _ = writeln!(
                trace,
                "{t}s notify {} {:?} #{} {}{unverified}",
                n.desk,
                n.reason,
                n.case,
                n.severity.as_str()
            );
        }
        Action::Sounders { case, location, on: true, command } => {
            let _ = writeln!(trace, "{t}s sound {} #{case} cmd{command}", location.building);
        }
        Action::Sounders { case, location, on: false, command } => {
            let _ = writeln!(trace, "{t}s silence {} #{case} cmd{command}", location.building);
        }
        Action::Record(r) => {
            let _ = writeln!(
                trace,
                "{t}s #{} {} {}/{}{}",
                r.case,
                r.kind.as_str(),
                r.stage.as_str(),
                r.level.as_str(),
                if r.drill { " drill" } else { "" }
            );
        }
        Action::Kpi(Kpi::Flood { desk, pages, .. }) => {
            let _ = writeln!(trace, "{t}s flood {desk} {pages}");
        }
        Action::Kpi(Kpi::FloodEnded { desk, .. }) => {
            let _ = writeln!(trace, "{t}s flood ended {desk}");
        }
    }
}

fn run(config: Config, script: Vec<Step>) -> (Engine, String) {
    let mut engine = Engine::new(config);
    let mut trace = String::new();
    let mut now = 0;
    for step in script {
        let until = match &step {
            In(s, _) | Run(s) => s * 1000,
        };
        while let Some(wake) = engine.next_wake().filter(|w| *w <= until) {
            now = wake.max(now);
            for action in engine.tick(now) {
                render(now, &action, &mut trace);
            }
        }
        now = until;
        if let In(_, input) = step {
            match engine.handle(now, &input) {
                Ok(actions) => actions.iter().for_each(|a| render(now, a, &mut trace)),
                Err(refusal) => {
                    let _ = writeln!(trace, "{}s refused: {refusal}", now / 1000);
                }
            }
        }
    }
    (engine, trace)
}

#[track_caller]
fn check(script: Vec<Step>, expected: &str) {
    check_with(Config::default(), script, expected)
}

#[track_caller]
fn check_with(config: Config, script: Vec<Step>, expected: &str) {
    let (_, trace) = run(config, script);
    let expected: String =
        expected.lines().map(str::trim).filter(|l| !l.is_empty()).map(|l| format!("{l}\n")).collect();
    assert_eq!(trace, expected, "\n--- got ---\n{trace}\n--- expected ---\n{expected}");
}

#[test]
fn one_detector_is_a_pre_alarm_for_the_grid_reminded_then_escalated_to_the_district() {
    check(
        vec![In(0, smoke("d1", "A1")), Run(400)],
        "
        0s #1 opened warning/grid
        0s notify grid:G1 Opened #1 pre_alarm
        30s notify grid:G1 Reminder #1 pre_alarm
        60s notify grid:G1 Reminder #1 pre_alarm
        90s #1 escalated warning/community
        90s notify grid:G1 Reminder #1 pre_alarm
        90s notify community:C1 Escalated #1 pre_alarm
        120s notify grid:G1 Reminder #1 pre_alarm
        120s notify community:C1 Reminder #1 pre_alarm
        150s notify grid:G1 Reminder #1 pre_alarm
        150s notify community:C1 Reminder #1 pre_alarm
        180s #1 escalated warning/street
        180s notify grid:G1 Reminder #1 pre_alarm
        180s notify community:C1 Reminder #1 pre_alarm
        180s notify street:Fuhai Escalated #1 pre_alarm
        210s notify grid:G1 Reminder #1 pre_alarm
        210s notify community:C1 Reminder #1 pre_alarm
        210s notify street:Fuhai Reminder #1 pre_alarm
        240s notify grid:G1 Reminder #1 pre_alarm
        240s notify community:C1 Reminder #1 pre_alarm
        240s notify street:Fuhai Reminder #1 pre_alarm
        270s notify grid:G1 Reminder #1 pre_alarm
        270s notify community:C1 Reminder #1 pre_alarm
        270s notify street:Fuhai Reminder #1 pre_alarm
        300s #1 escalated warning/district
        300s notify grid:G1 Reminder #1 pre_alarm
        300s notify community:C1 Reminder #1 pre_alarm
        300s notify street:Fuhai Reminder #1 pre_alarm
        300s notify district:Xishan Escalated #1 pre_alarm
        330s notify grid:G1 Reminder #1 pre_alarm
        330s notify community:C1 Reminder #1 pre_alarm
        330s notify street:Fuhai Reminder #1 pre_alarm
        330s notify district:Xishan Reminder #1 pre_alarm
        360s notify grid:G1 Reminder #1 pre_alarm
        360s notify community:C1 Reminder #1 pre_alarm
        360s notify street:Fuhai Reminder #1 pre_alarm
        360s notify district:Xishan Reminder #1 pre_alarm
        390s notify grid:G1 Reminder #1 pre_alarm
        390s notify community:C1 Reminder #1 pre_alarm
        390s notify street:Fuhai Reminder #1 pre_alarm
        390s notify district:Xishan Reminder #1 pre_alarm
        ",
    );
}

#[test]
fn acknowledgement_stops_reminders_and_escalation_and_starts_the_handling_clock() {
    check(
        vec![In(0, smoke("d1", "A1")), In(45, by("grid:G1", ack(1))), Run(1900)],
        "
        0s #1 opened warning/grid
        0s notify grid:G1 Opened #1 pre_alarm
        30s notify grid:G1 Reminder #1 pre_alarm
        45s #1 acknowledged response/grid
        1845s #1 escalated response/community
        1845s notify grid:G1 HandlingOverdue #1 pre_alarm
        1845s notify community:C1 HandlingOverdue #1 pre_alarm
        ",
    );
}

#[test]
fn a_case_is_carried_through_all_four_stages_and_closed_is_terminal() {
    check(
        vec![
            In(0, smoke("d1", "A1")),
            In(10, by("grid:G1", ack(1))),
            In(20, by("grid:G1", Command::Dispatch { case: CaseId(1), assignee: "grid worker Li".into() })),
            In(
                30,
                by(
                    "grid:G1",
                    Command::Verify {
                        case: CaseId(1),
                        method: VerifyMethod::Camera,
                        finding: "pan smoke".into(),
                    },
                ),
            ),
            In(40, by("grid:G1", dispose(1, Disposition::FalseAlarm { cause: FalseAlarmCause::Cooking }))),
            In(50, by("grid:G1", close(1))),
            In(55, signal(Condition::Smoke, "d1", "A1", false)),
            In(60, by("grid:G1", Command::ResetLatch { case: CaseId(1), device: None })),
            In(70, by("grid:G1", close(1))),
            In(80, by("grid:G1", ack(1))),
            In(90, by("grid:G1", Command::Note { case: CaseId(1), text: "resident told".into() })),
            Run(4000),
        ],
        "
        0s #1 opened warning/grid
        0s notify grid:G1 Opened #1 pre_alarm
        10s #1 acknowledged response/grid
        20s #1 dispatched handling/grid
        30s #1 verified handling/grid
        40s #1 disposed handling/grid
        50s refused: case 1 still has latched alarms (d1); reset them before closing
        55s #1 alarm_changed handling/grid
        60s #1 latch_reset handling/grid
        70s #1 closed feedback/grid
        80s refused: case 1 is closed; only notes may be added
        90s #1 noted feedback/grid
        ",
    );
}

#[test]
fn two_detectors_in_one_building_within_the_window_are_a_confirmed_fire_at_street_level() {
    check(
        vec![In(0, smoke("d1", "A1")), In(100, smoke("d2", "A1")), In(110, by("street:Fuhai", ack(1)))],
        "
        0s #1 opened warning/grid
        0s notify grid:G1 Opened #1 pre_alarm
        30s notify grid:G1 Reminder #1 pre_alarm
        60s notify grid:G1 Reminder #1 pre_alarm
        90s #1 escalated warning/community
        90s notify grid:G1 Reminder #1 pre_alarm
        90s notify community:C1 Escalated #1 pre_alarm
        100s #1 alarm_changed warning/community
        100s notify grid:G1 Confirmed #1 fire
        100s notify community:C1 Confirmed #1 fire
        100s notify street:Fuhai Confirmed #1 fire
        100s #1 confirmed warning/street
        100s sound A1 #1 cmd1
        110s #1 acknowledged response/street
        ",
    );
}

#[test]
fn a_detector_and_a_camera_confirm_but_alarms_outside_the_window_do_not() {
    check(
        vec![
            In(0, smoke("d1", "A1")),
            In(5, by("grid:G1", ack(1))),
            In(6, signal(Condition::Camera, "cam1", "A1", true)),
            In(7, smoke("d9", "A2")),
            In(8, by("grid:G1", ack(2))),
            In(200, smoke("d10", "A2")),
        ],
        "
        0s #1 opened warning/grid
        0s notify grid:G1 Opened #1 pre_alarm
        5s #1 acknowledged response/grid
        6s #1 alarm_changed response/grid
        6s notify grid:G1 Confirmed #1 fire
        6s notify community:C1 Confirmed #1 fire
        6s notify street:Fuhai Confirmed #1 fire
        6s #1 confirmed response/street
        6s sound A1 #1 cmd1
        7s #2 opened warning/grid
        7s notify grid:G1 Opened #2 pre_alarm
        8s #2 acknowledged response/grid
        200s #2 alarm_changed response/grid
        ",
    );
}

#[test]
fn fires_in_three_buildings_of_a_grid_go_to_the_street_at_once() {
    check(
        vec![
            In(0, smoke("d1", "A1")),
            In(60, smoke("d2", "A2")),
            In(61, by("grid:G1", ack(2))),
            In(120, smoke("d3", "A3")),
        ],
        "
        0s #1 opened warning/grid
        0s notify grid:G1 Opened #1 pre_alarm
        30s notify grid:G1 Reminder #1 pre_alarm
        60s notify grid:G1 Reminder #1 pre_alarm
        60s #2 opened warning/grid
        60s notify grid:G1 Opened #2 pre_alarm
        61s #2 acknowledged response/grid
        90s #1 escalated warning/community
        90s notify grid:G1 Reminder #1 pre_alarm
        90s notify community:C1 Escalated #1 pre_alarm
        120s notify grid:G1 Reminder #1 pre_alarm
        120s notify community:C1 Reminder #1 pre_alarm
        120s #3 opened warning/grid
        120s notify grid:G1 Opened #3 pre_alarm
        120s notify street:Fuhai Spread #1 pre_alarm
        120s #1 spread warning/street
        120s notify community:C1 Spread #2 pre_alarm
        120s notify street:Fuhai Spread #2 pre_alarm
        120s #2 spread response/street
        120s notify community:C1 Spread #3 pre_alarm
        120s notify street:Fuhai Spread #3 pre_alarm
        120s #3 spread warning/street
        ",
    );
}

#[test]
fn faults_of_many_devices_in_a_building_are_one_work_order_due_the_next_working_day() {
    // 2026-11-23 03:00 UTC is Monday 11:00 in China: due Tuesday 09:00 (+08:00).
    let monday = 1_795_402_800;
    let fault = |d: &str| signal(Condition::Fault, d, "A1", true);
    let (engine, trace) = run(
        Config::default(),
        vec![In(monday, fault("d1")), In(monday + 1, fault("d2")), In(monday + 2, fault("d3"))],
    );
    assert_eq!(trace.matches("opened").count(), 1, "{trace}");
    assert_eq!(trace.matches("notify").count(), 1, "{trace}");
    let case = engine.case(CaseId(1)).unwrap();
    assert_eq!(case.alarms.len(), 3);
    assert_eq!(case.ack_due, Some(1_795_482_000_000), "Tuesday 2026-11-24 01:00 UTC");
}

#[test]
fn next_working_day_skips_the_weekend() {
    let next = Deadline::NextWorkingDay { hour: 9, utc_offset_minutes: 480 };
    // Instants from Python's `datetime(..., tzinfo=timezone(timedelta(hours=8))).timestamp()`.
    // Friday 2026-11-27 12:00 +08:00 → Monday 2026-11-30 09:00 +08:00.
    let cal = Calendar::weekdays();
    assert_eq!(next.due(1_795_752_000_000, &cal), 1_796_000_400_000);
    // Saturday 2026-11-28 23:30 +08:00 → Monday.
    assert_eq!(next.due(1_795_879_800_000, &cal), 1_796_000_400_000);
    // Monday 2026-11-23 11:00 → Tuesday 09:00.
    assert_eq!(next.due(1_795_402_800_000, &cal), 1_795_482_000_000);
    // China's calendar agrees on ordinary weeks.
    assert_eq!(next.due(1_795_752_000_000, &Calendar::china()), 1_796_000_400_000);
}

/// The days of 国务院办公厅关于2026年部分节假日安排的通知 (2025-11-04): holidays skipped,
/// weekend days worked in their place counted. Instants from Python's `datetime(...,
/// tzinfo=timezone(timedelta(hours=8))).timestamp()`.
#[test]
fn next_working_day_follows_the_official_holiday_calendar() {
    let next = Deadline::NextWorkingDay { hour: 9, utc_offset_minutes: 480 };
    let cn = Calendar::china();
    // Wednesday 2026-09-30 12:00 → National Day week off → Thursday 2026-10-08 09:00.
    assert_eq!(next.due(1_790_740_800_000, &cn), 1_791_421_200_000);
    // Friday 2026-02-13 10:00 → Saturday 2026-02-14 is worked (春节调休) → 09:00 that day.
    assert_eq!(next.due(1_770_948_000_000, &cn), 1_771_030_800_000);
    // Saturday 2026-02-14 18:00 → the Spring Festival's nine days → Tuesday 2026-02-24 09:00.
    assert_eq!(next.due(1_771_063_200_000, &cn), 1_771_894_800_000);
    // Saturday 2026-09-19 08:00 → Sunday 2026-09-20 is worked (国庆调休).
    assert_eq!(next.due(1_789_776_000_000, &cn), 1_789_866_000_000);
    // Beyond the published notices the calendar says so, and counts Monday to Friday.
    assert!(cn.covers(20_818), "2026-12-31 is covered");
    assert!(!cn.covers(20_819), "2027-01-01 is not");
    assert_eq!(cn.known_through().as_deref(), Some("2026-12-31"));
    assert_eq!(next.due(1_798_689_600_000, &cn), 1_798_765_200_000);
}

#[test]
fn calendar_files_are_checked_and_round_trip() {
    // Day numbers agree with the `time` crate's weekdays.
    for day in 20_000..21_000 {
        let ours = crate::calendar::weekday(day);
        assert_eq!(ours, crate::calendar::weekday_of(day).number_days_from_monday(), "day {day}");
    }
    let cn = Calendar::china();
    let text = toml::to_string(&cn).unwrap();
    assert_eq!(Calendar::from_toml(&text).unwrap(), cn);
    assert!(Calendar::from_toml("holidays = [\"2026-02-30\"]").unwrap_err().contains("2026-02-30"));
    assert!(Calendar::from_toml("workdays = [\"2026-02-13\"]").unwrap_err().contains("weekday already"));
    assert!(Calendar::from_toml("holidays = [\"2026-10-07/2026-10-01\"]").is_err());
    assert!(Calendar::from_toml("holydays = []").is_err(), "unknown keys are refused");
}

#[test]
fn a_chattering_detector_is_flagged_and_pages_only_when_its_deadline_passes() {
    let on = |t| In(t, smoke("d1", "A1"));
    let off = |t| In(t, signal(Condition::Smoke, "d1", "A1", false));
    check(
        vec![on(0), off(5), on(10), off(15), on(20), off(25), on(30), Run(100)],
        "
        0s #1 opened warning/grid
        0s notify grid:G1 Opened #1 pre_alarm
        5s #1 alarm_changed warning/grid
        10s #1 alarm_changed warning/grid
        15s #1 alarm_changed warning/grid
        20s #1 alarm_changed warning/grid
        20s #1 chattering warning/grid
        25s #1 alarm_changed warning/grid
        30s #1 alarm_changed warning/grid
        90s #1 escalated warning/community
        90s notify grid:G1 Reminder #1 pre_alarm
        90s notify community:C1 Escalated #1 pre_alarm
        ",
    );
}

#[test]
fn a_shelved_alarm_pauses_reminders_until_the_shelve_ends() {
    let shelve = Command::Shelve {
        case: CaseId(1),
        device: "d1".into(),
        duration: Duration::from_secs(300),
        reason: "chattering, crew on the way".into(),
    };
    let too_long = Command::Shelve {
        case: CaseId(1),
        device: "d1".into(),
        duration: Duration::from_secs(9 * 3600),
        reason: "x".into(),
    };
    check(
        vec![
            In(0, smoke("d1", "A1")),
            In(10, by("grid:G1", too_long)),
            In(20, by("grid:G1", shelve)),
            Run(340),
        ],
        "
        0s #1 opened warning/grid
        0s notify grid:G1 Opened #1 pre_alarm
        10s refused: a shelve lasts more than 0 s and at most 8h
        20s #1 shelved warning/grid
        320s #1 unshelved warning/grid
        320s notify grid:G1 Reminder #1 pre_alarm
        ",
    );
}

#[test]
fn a_device_in_test_mode_makes_a_drill_case_that_pages_nobody() {
    check(
        vec![
            In(0, signal(Condition::Test, "d1", "A1", true)),
            In(1, smoke("d1", "A1")),
            In(2, smoke("d2", "A1")),
            Run(200),
        ],
        "
        1s #1 opened warning/grid drill
        2s #1 alarm_changed warning/grid drill
        2s #1 confirmed warning/street drill
        62s #1 escalated warning/district drill
        ",
    );
}

#[test]
fn officers_act_only_within_their_scope() {
    check(
        vec![
            In(0, smoke("d1", "B1")),
            In(1, by("grid:G1", ack(1))),
            In(2, by("grid:G2", ack(7))),
            In(3, by("community:C1", ack(1))),
            In(4, by("community:C1", ack(1))),
            In(5, by("grid:G2", close(1))),
        ],
        "
        0s #1 opened warning/grid
        0s notify grid:G2 Opened #1 pre_alarm
        1s refused: case 1 is outside your scope
        2s refused: case 7 not found
        3s #1 acknowledged response/grid
        4s refused: case 1 is already acknowledged
        5s refused: case 1 has no disposition yet; record one before closing
        ",
    );
}

#[test]
fn a_failed_delivery_at_the_top_level_escalates_at_once() {
    check(
        vec![In(0, smoke("d1", "A1")), In(2, Input::Delivery { notification: 1, delivered: false })],
        "
        0s #1 opened warning/grid
        0s notify grid:G1 Opened #1 pre_alarm
        2s #1 delivery_failed warning/grid
        2s #1 escalated warning/community
        2s notify grid:G1 Reminder #1 pre_alarm
        2s notify community:C1 DeliveryFailed #1 pre_alarm
        ",
    );
}

#[test]
fn more_than_ten_pages_to_a_desk_in_ten_minutes_is_a_flood() {
    let mut script: Vec<Step> = (0..11).map(|i| In(i, smoke(&format!("d{i}"), &format!("A{i}")))).collect();
    script.extend((0..11).map(|i| In(20 + i, by("grid:G1", ack(i + 1)))));
    let (_, trace) = run(Config { spread_buildings: 100, ..Config::default() }, script);
    assert!(trace.contains("10s flood grid:G1 11"), "{trace}");
    assert_eq!(trace.matches("flood").count(), 1, "{trace}");
}

#[test]
fn a_stale_alarm_is_flagged_after_a_day() {
    let (_, trace) = run(
        Config::default(),
        vec![In(0, signal(Condition::WaterLow, "w1", "A1", true)), In(1, by("grid:G1", ack(1))), Run(86_401)],
    );
    assert!(trace.contains("86400s #1 stale"), "{trace}");
}

#[test]
fn a_snapshot_restores_the_same_engine_and_its_timers() {
    let (engine, _) = run(Config::default(), vec![In(0, smoke("d1", "A1")), In(50, smoke("d1", "A2"))]);
    let json = {
        let mut buf = Vec::new();
        engine.snapshot(&mut serde_json::Serializer::new(&mut buf)).unwrap();
        buf
    };
    let mut restored =
        Engine::restore(Config::default(), &mut serde_json::Deserializer::from_slice(&json)).unwrap();
    let mut original = engine;
    assert_eq!(restored.next_wake(), original.next_wake());
    assert_eq!(restored.tick(10_000_000), original.tick(10_000_000));
    assert_eq!(restored.open_cases(), 2);
}

#[test]
fn escalation_climbs_every_level_once_and_stops_at_the_district() {
    let mut path = vec![Level::Grid];
    while let Some(next) = path.last().unwrap().escalate() {
        path.push(next);
    }
    assert_eq!(path, Level::ALL);
}

#[test]
fn stages_only_move_forward_and_feedback_is_terminal() {
    let all = [Stage::Warning, Stage::Response, Stage::Handling, Stage::Feedback];
    for (i, from) in all.iter().enumerate() {
        for (j, to) in all.iter().enumerate() {
            assert_eq!(from.may_advance_to(*to), j > i, "{from:?} → {to:?}");
        }
    }
}

#[test]
fn default_config_is_valid_and_scopes_parse() {
    Config::default().validate().unwrap();
    assert_eq!("grid:G1".parse::<Scope>().unwrap().to_string(), "grid:G1");
    assert!("block:7".parse::<Scope>().is_err());
    assert!("grid:".parse::<Scope>().is_err());
}

#[test]
fn failed_deliveries_at_the_district_are_recorded_without_escalating_further() {
    let (mut engine, trace) = run(Config::default(), vec![In(0, smoke("d1", "A1")), Run(300)]);
    let sent = trace.matches("notify").count();
    let case = engine.case(CaseId(1)).unwrap();
    assert_eq!(case.level, Level::District);
    // Fail every notification ever sent: each is recorded, the case stays at the district
    // and nothing pages in a loop.
    let mut recorded = 0;
    for n in 1..200 {
        let actions = engine.handle(300_000, &Input::Delivery { notification: n, delivered: false }).unwrap();
        assert!(actions.iter().all(|a| !matches!(a, Action::Notify(_))), "no new page on {n}: {actions:?}");
        recorded += actions.len();
    }
    assert_eq!(recorded, sent, "every failed notification is recorded once");
    assert_eq!(engine.case(CaseId(1)).unwrap().level, Level::District);
}

#[test]
fn a_shelved_acknowledged_case_still_escalates_when_its_handling_is_overdue() {
    let shelve = Command::Shelve {
        case: CaseId(1),
        device: "d1".into(),
        duration: Duration::from_secs(8 * 3600),
        reason: "crew on site, detector keeps sounding".into(),
    };
    let (_, trace) = run(
        Config::default(),
        vec![
            In(0, smoke("d1", "A1")),
            In(10, by("grid:G1", ack(1))),
            In(20, by("grid:G1", shelve)),
            Run(2000),
        ],
    );
    assert!(trace.contains("1810s #1 escalated response/community"), "{trace}");
    assert!(trace.contains("1810s notify community:C1 HandlingOverdue #1 pre_alarm"), "{trace}");
}

#[test]
fn an_unplaced_detector_opens_an_unverified_case_at_its_desk_on_the_street_deadlines_of_a_pre_alarm() {
    check(
        vec![
            In(0, stranger(Condition::Smoke, "x1", true)),
            Run(130),
            In(131, stranger(Condition::Smoke, "x1", false)),
        ],
        "
        0s #1 opened warning/street
        0s notify street:Fuhai Opened #1 pre_alarm unverified
        30s notify street:Fuhai Reminder #1 pre_alarm unverified
        60s notify street:Fuhai Reminder #1 pre_alarm unverified
        90s notify street:Fuhai Reminder #1 pre_alarm unverified
        120s #1 escalated warning/district
        120s notify street:Fuhai Reminder #1 pre_alarm unverified
        120s notify district:Xishan Escalated #1 pre_alarm unverified
        131s #1 alarm_changed warning/district
        ",
    );
}

#[test]
fn unplaced_devices_never_confirm_a_fire_and_a_fault_is_a_case_of_its_own() {
    check(
        vec![
            In(0, stranger(Condition::Smoke, "x1", true)),
            In(1, stranger(Condition::Smoke, "x1", true)),
            In(2, stranger(Condition::Fault, "x1/tamper", true)),
            In(3, stranger(Condition::Smoke, "x2", true)),
            In(4, by("street:Fuhai", ack(1))),
            In(4, by("street:Fuhai", ack(2))),
            In(4, by("street:Fuhai", ack(3))),
        ],
        "
        0s #1 opened warning/street
        0s notify street:Fuhai Opened #1 pre_alarm unverified
        2s #2 opened warning/street
        2s notify street:Fuhai Opened #2 fault unverified
        3s #3 opened warning/street
        3s notify street:Fuhai Opened #3 pre_alarm unverified
        4s #1 acknowledged response/street
        4s #2 acknowledged response/street
        4s #3 acknowledged response/street
        ",
    );
}

#[test]
fn beyond_the_limit_unplaced_devices_fold_into_one_flood_case_per_village() {
    let config = Config { unplaced_limit: 2, unplaced_window: Duration::from_secs(600), ..Config::default() };
    check_with(
        config,
        vec![
            In(0, stranger(Condition::Smoke, "x1", true)),
            In(1, stranger(Condition::Smoke, "x2", true)),
            In(2, by("street:Fuhai", ack(1))),
            In(2, by("street:Fuhai", ack(2))),
            // The third and fourth stranger within ten minutes: one flood case, paged once.
            In(3, stranger(Condition::Smoke, "x3", true)),
            In(4, stranger(Condition::Smoke, "x4", true)),
            // A device already folded stays in the flood case when it clears, and when it
            // alarms again.
            In(5, stranger(Condition::Smoke, "x3", false)),
            In(6, stranger(Condition::Smoke, "x3", true)),
            In(7, by("street:Fuhai", ack(3))),
            // Once the window has passed, a new stranger gets a case of its own again.
            In(601, stranger(Condition::Smoke, "x5", true)),
            In(602, by("street:Fuhai", ack(4))),
        ],
        "
        0s #1 opened warning/street
        0s notify street:Fuhai Opened #1 pre_alarm unverified
        1s #2 opened warning/street
        1s notify street:Fuhai Opened #2 pre_alarm unverified
        2s #1 acknowledged response/street
        2s #2 acknowledged response/street
        3s #3 opened warning/street
        3s notify street:Fuhai Opened #3 pre_alarm unverified
        4s #3 alarm_changed warning/street
        5s #3 alarm_changed warning/street
        6s #3 alarm_changed warning/street
        7s #3 acknowledged response/street
        601s #4 opened warning/street
        601s notify street:Fuhai Opened #4 pre_alarm unverified
        602s #4 acknowledged response/street
        ",
    );
    let (engine, _) = run(
        Config { unplaced_limit: 2, ..Config::default() },
        (1..=5).map(|i| In(i, stranger(Condition::Smoke, &format!("x{i}"), true))).collect(),
    );
    let flood = engine.case(CaseId(3)).unwrap();
    assert!(flood.unplaced.as_ref().is_some_and(|u| u.flood));
    assert_eq!(flood.devices(), ["x3", "x4", "x5"]);
    assert_eq!(engine.open_cases(), 3);
}

/// Invented village ids do not buy a stranger more cases: beyond the limit of all villages
/// together, every further unregistered device folds into one flood case for all villages.
#[test]
fn invented_villages_fold_into_one_flood_case_beyond_the_total_limit() {
    let config = Config { unplaced_limit: 2, unplaced_total_limit: 4, ..Config::default() };
    let from = |village: &str, device: &str| {
        let Input::Signal(mut s) = stranger(Condition::Smoke, device, true) else { unreachable!() };
        s.unplaced = Some(village.into());
        Input::Signal(s)
    };
    let inputs = (0..40u64).map(|i| In(i, from(&format!("v{i}"), &format!("x{i}")))).collect();
    let (engine, _) = run(config, inputs);
    assert_eq!(engine.open_cases(), 5, "four cases of their own and one flood case for all villages");
    let flood = engine.case(CaseId(5)).unwrap();
    let marker = flood.unplaced.as_ref().unwrap();
    assert!(marker.flood && marker.village == crate::ALL_VILLAGES, "{marker:?}");
    assert_eq!(flood.devices().len(), 36);
}

#[test]
fn placing_an_unplaced_device_gives_its_case_the_building_and_tells_its_grid() {
    check(
        vec![
            In(0, stranger(Condition::Smoke, "x1", true)),
            In(1, by("grid:G1", place(1, "A1"))),
            In(2, by("street:Fuhai", Command::Place { case: CaseId(1), location: Location::default() })),
            In(3, by("street:Fuhai", place(1, "A1"))),
            // Now it is a case of building A1: the building's next detector confirms a fire.
            In(4, smoke("d2", "A1")),
            In(5, by("street:Fuhai", place(1, "A2"))),
        ],
        "
        0s #1 opened warning/street
        0s notify street:Fuhai Opened #1 pre_alarm unverified
        1s refused: case 1 is outside your scope
        2s refused: a place names its building, grid, community and street
        3s #1 placed warning/street
        3s notify grid:G1 Opened #1 pre_alarm
        4s #1 alarm_changed warning/street
        4s notify grid:G1 Confirmed #1 fire
        4s notify community:C1 Confirmed #1 fire
        4s notify street:Fuhai Confirmed #1 fire
        4s #1 confirmed warning/street
        4s sound A1 #1 cmd1
        5s refused: case 1 is not a case of an unplaced device
        ",
    );
}

#[test]
fn an_unplaced_case_survives_a_snapshot_with_its_marker_and_limit() {
    let config = Config { unplaced_limit: 1, ..Config::default() };
    let (engine, _) = run(config.clone(), vec![In(0, stranger(Condition::Smoke, "x1", true))]);
    let mut json = Vec::new();
    engine.snapshot(&mut serde_json::Serializer::new(&mut json)).unwrap();
    let mut restored = Engine::restore(config, &mut serde_json::Deserializer::from_slice(&json)).unwrap();
    // The limit is remembered: the next stranger folds into the flood case.
    restored.handle(1000, &stranger(Condition::Smoke, "x2", true)).unwrap();
    assert!(restored.case(CaseId(2)).unwrap().unplaced.as_ref().is_some_and(|u| u.flood));
    // The first case is still found by its device.
    let actions = restored.handle(2000, &stranger(Condition::Smoke, "x1", false)).unwrap();
    assert!(matches!(&actions[..], [Action::Record(t)] if t.case == CaseId(1)), "{actions:?}");
}

fn clear(device: &str, building: &str) -> Input {
    signal(Condition::Smoke, device, building, false)
}

fn reset(case: u64) -> Command {
    Command::ResetLatch { case: CaseId(case), device: None }
}

#[test]
fn sounders_go_off_when_a_confirmed_fire_is_disposed_as_a_false_alarm() {
    let false_alarm = Disposition::FalseAlarm { cause: FalseAlarmCause::Cooking };
    check(
        vec![
            In(0, smoke("d1", "A1")),
            In(1, by("grid:G1", ack(1))),
            In(2, smoke("d2", "A1")),
            In(3, by("grid:G1", dispose(1, false_alarm))),
            // Already silent: closing sends nothing more.
            In(4, clear("d1", "A1")),
            In(4, clear("d2", "A1")),
            In(5, by("grid:G1", reset(1))),
            In(6, by("grid:G1", close(1))),
        ],
        "
        0s #1 opened warning/grid
        0s notify grid:G1 Opened #1 pre_alarm
        1s #1 acknowledged response/grid
        2s #1 alarm_changed response/grid
        2s notify grid:G1 Confirmed #1 fire
        2s notify community:C1 Confirmed #1 fire
        2s notify street:Fuhai Confirmed #1 fire
        2s #1 confirmed response/street
        2s sound A1 #1 cmd1
        3s #1 disposed handling/street
        3s silence A1 #1 cmd2
        4s #1 alarm_changed handling/street
        4s #1 alarm_changed handling/street
        5s #1 latch_reset handling/street
        5s #1 latch_reset handling/street
        6s #1 closed feedback/street
        ",
    );
}

#[test]
fn sounders_of_a_real_fire_go_off_on_reset_once_nothing_is_in_alarm_or_at_close() {
    let script = vec![
        In(0, smoke("d1", "A1")),
        In(0, smoke("d2", "A1")),
        In(1, by("street:Fuhai", dispose(1, Disposition::RealFire))),
        In(2, clear("d1", "A1")),
        // d2 still reports smoke: resetting d1 leaves the building sounding.
        In(3, by("street:Fuhai", Command::ResetLatch { case: CaseId(1), device: Some("d1".into()) })),
        In(4, clear("d2", "A1")),
        In(5, by("street:Fuhai", reset(1))),
    ];
    let (engine, trace) = run(Config::default(), script);
    let sounders: Vec<&str> =
        trace.lines().filter(|l| l.contains("sound") || l.contains("silence")).collect();
    assert_eq!(sounders, ["0s sound A1 #1 cmd1", "5s silence A1 #1 cmd2"], "{trace}");
    let off = Linkage { on: false, command: 2, confirmed: Default::default() };
    assert_eq!(engine.linkage().map(|(c, l)| (c.id, l.clone())).collect::<Vec<_>>(), [(CaseId(1), off)]);
    // Closed without a reset first (a latch-free fire policy): off at close.
    let config = Config { fire: Policy { latched: false, ..Config::default().fire }, ..Config::default() };
    let config = Config { pre_alarm: Policy { latched: false, ..config.pre_alarm.clone() }, ..config };
    let (_, trace) = run(
        config,
        vec![
            In(0, smoke("d1", "A1")),
            In(0, smoke("d2", "A1")),
            In(1, by("street:Fuhai", dispose(1, Disposition::RealFire))),
            In(2, by("street:Fuhai", close(1))),
        ],
    );
    assert!(trace.contains("2s silence A1 #1 cmd2"), "{trace}");
}

#[test]
fn by_policy_one_detector_sounds_the_building_and_commands_never_repeat_an_id() {
    let config = Config { sound_single_detector: true, ..Config::default() };
    let false_alarm = Disposition::FalseAlarm { cause: FalseAlarmCause::Steam };
    let (engine, trace) = run(
        config.clone(),
        vec![
            In(0, smoke("d1", "A1")),
            In(0, signal(Condition::Camera, "cam/ch1", "A2", true)),
            In(0, stranger(Condition::Smoke, "x1", true)),
            In(1, by("grid:G1", dispose(1, false_alarm))),
            In(2, smoke("d3", "A3")),
        ],
    );
    let sounders: Vec<&str> =
        trace.lines().filter(|l| l.contains("sound") || l.contains("silence")).collect();
    // A camera alone and a stranger sound nothing.
    assert_eq!(sounders, ["0s sound A1 #1 cmd1", "1s silence A1 #1 cmd2", "2s sound A3 #4 cmd3"], "{trace}");
    // A snapshot keeps the counter: the next command after a restart is a new id.
    let mut json = Vec::new();
    engine.snapshot(&mut serde_json::Serializer::new(&mut json)).unwrap();
    let mut restored = Engine::restore(config, &mut serde_json::Deserializer::from_slice(&json)).unwrap();
    let actions = restored.handle(3000, &smoke("d5", "A5")).unwrap();
    assert!(
        actions.iter().any(|a| matches!(a, Action::Sounders { on: true, command: 4, .. })),
        "{actions:?}"
    );
    let without = Config::default();
    let (_, trace) = run(without, vec![In(0, smoke("d1", "A1"))]);
    assert!(!trace.contains("sound"), "one detector sounds nothing by default: {trace}");
}

#[test]
fn confirmations_count_for_the_current_generation_only_and_survive_a_snapshot() {
    let confirm =
        |device: &str, command| Input::SounderConfirmed { case: CaseId(1), device: device.into(), command };
    let (mut engine, _) = run(Config::default(), vec![In(0, smoke("d1", "A1")), In(0, smoke("d2", "A1"))]);
    engine.handle(1000, &confirm("d1", 1)).unwrap();
    engine.handle(1000, &confirm("d2", 7)).unwrap();
    let (_, linkage) = engine.linkage().next().unwrap();
    assert_eq!(linkage.confirmed.iter().collect::<Vec<_>>(), ["d1"], "only the current generation counts");
    let mut json = Vec::new();
    engine.snapshot(&mut serde_json::Serializer::new(&mut json)).unwrap();
    let mut restored =
        Engine::restore(Config::default(), &mut serde_json::Deserializer::from_slice(&json)).unwrap();
    assert_eq!(restored.linkage().next().unwrap().1.confirmed.len(), 1);
    // A new state starts with nobody confirmed.
    let false_alarm = Disposition::FalseAlarm { cause: FalseAlarmCause::Dust };
    restored.handle(2000, &by("street:Fuhai", dispose(1, false_alarm))).unwrap();
    let (_, linkage) = restored.linkage().next().unwrap();
    assert!(!linkage.on && linkage.confirmed.is_empty(), "{linkage:?}");
}

#[test]
fn a_hush_at_the_device_is_recorded_on_the_case_holding_its_alarm_and_opens_nothing() {
    let hush = |t, d: &str, b: &str| In(t, signal(Condition::Hushed, d, b, true));
    check(
        vec![
            hush(0, "d9", "B9"),
            In(1, smoke("d1", "A1")),
            hush(5, "d1", "A1"),
            hush(6, "d2", "A1"),
            Run(10),
        ],
        "
        1s #1 opened warning/grid
        1s notify grid:G1 Opened #1 pre_alarm
        5s #1 noted warning/grid
        ",
    );
    // The alarm stays latched: the case is still a pre-alarm awaiting its officer.
    let (engine, _) = run(Config::default(), vec![In(1, smoke("d1", "A1")), hush(5, "d1", "A1")]);
    assert_eq!(engine.open_cases(), 1);
    assert!(engine.case(CaseId(1)).unwrap().alarms["d1"].active);
}

#[test]
fn a_case_past_keep_closed_still_takes_notes_from_its_scope_only() {
    let (engine, _) = run(
        Config::default(),
        vec![
            In(0, smoke("d1", "A1")),
            In(10, by("grid:G1", ack(1))),
            In(40, by("grid:G1", dispose(1, Disposition::FalseAlarm { cause: FalseAlarmCause::Cooking }))),
            In(55, signal(Condition::Smoke, "d1", "A1", false)),
            In(60, by("grid:G1", Command::ResetLatch { case: CaseId(1), device: None })),
            In(70, by("grid:G1", close(1))),
        ],
    );
    let mut archived = engine.case(CaseId(1)).expect("closed just now, still held").clone();
    let later = 70_000 + 2 * 24 * 3600 * 1000;
    let t = Engine::note_archived(later, &officer("grid:G1"), &mut archived, "  insurer asked  ").unwrap();
    assert_eq!(t.kind, TransitionKind::Noted { text: "insurer asked".into() });
    assert_eq!(
        (t.case, t.at, t.stage, t.officer.as_deref()),
        (CaseId(1), later, Stage::Feedback, Some("officer-grid:G1"))
    );
    assert_eq!(archived.notes.last().map(|n| (n.text.as_str(), n.by.at)), Some(("insurer asked", later)));
    assert!(matches!(
        Engine::note_archived(later, &officer("grid:G2"), &mut archived, "not mine"),
        Err(Refusal::OutOfScope(CaseId(1)))
    ));
    assert!(matches!(
        Engine::note_archived(later, &officer("grid:G1"), &mut archived, "   "),
        Err(Refusal::Invalid(_))
    ));
    assert_eq!(archived.notes.len(), 1, "refused notes change nothing");
}
