use super::*;

/// Formats a duration as the README shows it.
fn human(ms: u64) -> String {
    let s = ms / 1_000;
    match s {
        s if s >= 86_400 => format!("{}d {:02}h", s / 86_400, (s % 86_400) / 3_600),
        s if s >= 3_600 => format!("{}h {:02}m", s / 3_600, (s % 3_600) / 60),
        s if s >= 60 => format!("{}m {:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

fn expected(e: Expect) -> (String, String) {
    match e {
        Expect::Alarm { deadline_ms } => ("alarm".into(), human(deadline_ms)),
        Expect::NoAlarm => ("no alarm".into(), "—".into()),
        Expect::Fault { fault, deadline_ms } => {
            (format!("`{}`, no alarm", fault_name(fault)), human(deadline_ms))
        }
    }
}

fn measured(v: &Vector, o: &Outcome) -> String {
    let mut parts = Vec::new();
    if let Some(t) = o.alarm_ms {
        parts.push(format!("alarm at {}", human(t)));
    }
    if let Some(t) = o.fault_ms {
        parts.push(format!("fault at {}", human(t)));
    }
    if let Some(mah) = o.remaining_mah {
        parts.push(format!("{mah} mAh left"));
    }
    if o.alarm_ms.is_none() && matches!(v.expect, Expect::NoAlarm) {
        parts.push(match o.pre_alarm_ms {
            Some(t) => format!("no alarm (pre-alarm at {})", human(t)),
            None => "no alarm, no pre-alarm".into(),
        });
    }
    parts.join(", ")
}

/// Renders the README's scenario table from fresh runs.
fn scenario_table() -> String {
    let mut out =
        String::from("| vector | model | expected | deadline | measured |\n|---|---|---|---|---|\n");
    for v in VECTORS {
        let o = run(v, |_| {});
        let (what, deadline) = expected(v.expect);
        out += &format!("| `{}` | {} | {what} | {deadline} | {} |\n", v.name, v.what, measured(v, &o));
    }
    out
}

#[test]
fn every_vector_meets_its_expectation() {
    let mut failures = Vec::new();
    for v in VECTORS {
        let mut log = String::new();
        let o = run(v, |d| {
            write_decision(&mut log, v.name, d).unwrap();
            log.push('\n');
        });
        if !o.meets(v.expect) {
            failures.push(format!("{}: expected {:?}, got {o:?}\n{log}", v.name, v.expect));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn readme_table_is_up_to_date() {
    let table = scenario_table();
    let readme = include_str!("../../README.md");
    assert!(
        readme.contains(&table),
        "README.md's scenario table is out of date; the measured table is:\n{table}"
    );
}

#[test]
fn low_battery_comes_while_the_cell_can_still_sound_the_alarm() {
    let v = VECTORS.iter().find(|v| v.name == "battery_decay").unwrap();
    let o = run(v, |_| {});
    let left = o.remaining_mah.expect("low battery raised") as f32;
    assert!(left >= BATTERY_RESERVE_MAH, "only {left} mAh left at the warning");
    let consumed_at_fault = 1.0 - left / BATTERY_CAPACITY_MAH;
    assert!(battery_mv(consumed_at_fault) > ALARM_MIN_MV);
}

#[test]
fn a_fire_is_never_vetoed_by_the_nuisance_gate() {
    // The worst case for the gate: smoke whose ratio says "steam", growing past the heavy
    // level. The gate may delay it, but it must alarm.
    let steamy_fire = Vector {
        name: "steamy_fire",
        what: "",
        model: fire(0, Growth::TSquared { m_ref: 0.6, t_ref_s: 120.0 }, 0.7),
        duration_ms: 10 * MINUTE_MS,
        expect: Expect::Alarm { deadline_ms: 3 * MINUTE_MS },
        seed: 99,
    };
    let o = run(&steamy_fire, |_| {});
    assert!(o.meets(steamy_fire.expect), "{o:?}");
    // And smoke that sits just above the alarm threshold with a nuisance ratio alarms
    // after the gate's delay.
    let lingering = Vector {
        model: fire(0, Growth::Plume { peak: 0.2, rise_s: 10.0, end_s: 3_600.0, decay_s: 60.0 }, 0.8),
        ..steamy_fire
    };
    let o = run(&lingering, |_| {});
    assert!(o.alarm_ms.is_some_and(|t| t <= 3 * MINUTE_MS), "{o:?}");
}

#[test]
fn models_are_deterministic_and_physical() {
    for v in VECTORS {
        for t in (0..v.duration_ms).step_by((v.duration_ms / 97) as usize) {
            let (m, ratio) = v.model.smoke_at(t);
            assert!(m >= 0.0 && m.is_finite() && ratio > 0.0, "{} at {t}: {m} {ratio}", v.name);
            assert_eq!(
                v.model.sample_at(t, v.duration_ms, v.seed),
                v.model.sample_at(t, v.duration_ms, v.seed)
            );
        }
    }
    assert_eq!(battery_mv(0.0), 3_450);
    assert_eq!(battery_mv(0.85), 3_300);
    assert_eq!(battery_mv(1.0), 2_000);
}

#[test]
fn the_trust_scenario_obeys_only_the_genuine_commands() {
    let mut lines = Vec::new();
    run_trust(&mut fresh_device(), |s| {
        let mut line = String::new();
        write_trust_step(&mut line, s).unwrap();
        lines.push(line);
    });
    assert_eq!(
        lines,
        [
            "trust forged_ack alarm pending 1",
            "trust forged_hush alarm pending 2",
            "trust unsigned_hush alarm pending 3",
            "trust genuine_hush hush pending 3",
            "trust replayed_hush hush pending 4",
            "trust genuine_ack hush acknowledged 4",
        ]
    );
}

#[test]
fn the_journal_scenario_keeps_the_alarm_across_the_reset_until_its_ack() {
    let mut lines = Vec::new();
    let flash: crate::journal::SimulatedNor<4, 1024> = crate::journal::SimulatedNor::new();
    run_journal(&mut fresh_device(), flash, 0..4096, |s| {
        let mut line = String::new();
        write_journal_step(&mut line, s).unwrap();
        lines.push(line);
    });
    // The pre-alarm and the alarm are stored (the heartbeat is not), survive the reset, are
    // resent, and the alarm's record goes once its ack (signed for boot 1) is in.
    assert_eq!(
        lines,
        [
            "journal stored 1 pending 2 0",
            "journal reset 2 pending 2 0",
            "journal resent 2 pending 2 2",
            "journal acknowledged 2 acknowledged 2 2",
            "journal removed 2 acknowledged 1 2",
        ]
    );
}
