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

/// Vectors on which the firmware is known to miss its criterion, with what would change
/// that. `every_vector_meets_its_expectation` fails if one of them starts passing on every
/// seed (so the list cannot go stale) or if any other vector misses on any seed; the README
/// lists them with their measured pass rates.
const KNOWN_FAILURES: &[(&str, &str)] = &[(
    "shower_steam",
    "steam held above the nuisance level (`Config::nuisance_alarm_db_m`, UL 217's 1.5 %/ft) for \
     longer than the gate's one-minute delay alarms, by design: the gate delays and raises \
     the level, it does not veto. Only a veto up to the heavy level (twice the threshold) \
     would change it, at the cost of a fire whose smoke reads like steam.",
)];

/// Every vector's outcomes over its [`SEEDS`] noise seeds, run once per test binary.
struct Sweep {
    vector: &'static Vector,
    outcomes: Vec<Outcome>,
}

impl Sweep {
    fn passes(&self) -> usize {
        self.outcomes.iter().filter(|o| o.meets(self.vector.expect)).count()
    }
}

/// Runs every vector over every seed, on two threads (the host tests' machine is shared).
fn sweep() -> &'static [Sweep] {
    static SWEEP: std::sync::OnceLock<Vec<Sweep>> = std::sync::OnceLock::new();
    SWEEP.get_or_init(|| {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let mut done: Vec<Sweep> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    scope.spawn(|| {
                        let mut mine = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(vector) = VECTORS.get(i) else { break mine };
                            let outcomes =
                                (0..SEEDS).map(|run| super::run(&vector.seeded(run), |_| {})).collect();
                            mine.push((i, Sweep { vector, outcomes }));
                        }
                    })
                })
                .collect();
            let mut all: Vec<(usize, Sweep)> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
            all.sort_by_key(|(i, _)| *i);
            all.into_iter().map(|(_, s)| s).collect()
        });
        done.shrink_to_fit();
        done
    })
}

fn level(l: Level) -> String {
    match l {
        Level::PercentPerFoot(p) => format!("{p} %/ft ({:.3} dB/m)", l.db_m()),
        Level::DbPerM(m) => format!("{m} dB/m"),
    }
}

fn criterion(e: Expect) -> String {
    match e {
        Expect::Alarm { deadline_ms, before, not_before } => {
            let mut out = String::from("alarm");
            if let Some(l) = before {
                out += &format!(" before {}", level(l));
            }
            if let Some(l) = not_before {
                out += &format!(", not below {}", level(l));
            }
            out + &format!(", by {}", human(deadline_ms))
        }
        Expect::NoAlarmBelow { level: l } => format!("no alarm below {}", level(l)),
        Expect::NoAlarm => "no alarm".into(),
        Expect::Fault { fault, deadline_ms } => {
            format!("`{}` by {}, no alarm", fault_name(fault), human(deadline_ms))
        }
    }
}

/// The median (the lower of the middle two) and the worst of `values`, `None` if empty.
/// Worst is the largest for a fire (latest, densest) and the smallest for a nuisance source
/// (earliest, thinnest).
fn median_worst<T: Copy + PartialOrd>(mut values: Vec<T>, fire: bool) -> Option<(T, T)> {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (first, last) = (*values.first()?, *values.last()?);
    Some((values[(values.len() - 1) / 2], if fire { last } else { first }))
}

fn measured(s: &Sweep) -> (String, String) {
    let fire = matches!(s.vector.expect, Expect::Alarm { .. });
    let n = s.outcomes.len();
    let alarms: Vec<&Outcome> = s.outcomes.iter().filter(|o| o.alarm_ms.is_some()).collect();
    let times = median_worst(alarms.iter().filter_map(|o| o.alarm_ms).collect(), fire);
    let mut time = match times {
        None => "no alarm".to_string(),
        Some((median, worst)) => format!("{} ({})", human(median), human(worst)),
    };
    if times.is_some() && alarms.len() < n {
        time += &format!(", {} of {n} alarmed", alarms.len());
    }
    let obscuration = match median_worst(alarms.iter().filter_map(|o| o.alarm_db_m).collect(), fire) {
        None => "—".to_string(),
        Some((median, worst)) => format!("{median:.3} ({worst:.3}) dB/m"),
    };
    if let Expect::Fault { .. } = s.vector.expect {
        let faults = median_worst(s.outcomes.iter().filter_map(|o| o.fault_ms).collect(), true);
        if let Some((median, worst)) = faults {
            time += &format!("; fault at {} ({})", human(median), human(worst));
        }
        if let Some((median, worst)) =
            median_worst(s.outcomes.iter().filter_map(|o| o.remaining_mah).collect(), false)
        {
            return (time, format!("{median} ({worst}) mAh left"));
        }
    }
    (time, obscuration)
}

/// The EN 54-7 response-threshold runs: the first six seeds of each linear-rise vector.
const THRESHOLD_RUNS: usize = 6;

fn threshold_vectors() -> impl Iterator<Item = &'static Sweep> {
    sweep()
        .iter()
        .filter(|s| matches!(s.vector.model.sources[0], Some(Source { growth: Growth::Linear { .. }, .. })))
}

/// The m values at alarm of one threshold vector's six runs, and their max:min ratio.
fn threshold_values(s: &Sweep) -> (Vec<f32>, f32) {
    let m: Vec<f32> = s.outcomes[..THRESHOLD_RUNS].iter().map(|o| o.alarm_db_m.unwrap_or(f32::NAN)).collect();
    let max = m.iter().copied().fold(f32::MIN, f32::max);
    let min = m.iter().copied().fold(f32::MAX, f32::min);
    (m, max / min)
}

/// Renders the README's scenario tables and failure list from fresh runs.
fn scenario_section() -> String {
    let mut out = format!(
        "| vector | source | criterion | pass ({SEEDS} seeds) | alarm at, median (worst) | obscuration at alarm, median (worst) |\n|---|---|---|---|---|---|\n"
    );
    for s in sweep() {
        let (time, obscuration) = measured(s);
        out += &format!(
            "| `{}` | {} | {} | {}/{} | {time} | {obscuration} |\n",
            s.vector.name,
            s.vector.what,
            criterion(s.vector.expect),
            s.passes(),
            s.outcomes.len()
        );
    }
    out += &format!(
        "\nEN 54-7 response threshold, {THRESHOLD_RUNS} runs (seeds) per rate; criterion: max:min at most 1.6, each at least 0.05 dB/m:\n\n| vector | m at alarm, dB/m | max:min |\n|---|---|---|\n"
    );
    for s in threshold_vectors() {
        let (m, ratio) = threshold_values(s);
        let m: Vec<String> = m.iter().map(|m| format!("{m:.3}")).collect();
        out += &format!("| `{}` | {} | {ratio:.2} |\n", s.vector.name, m.join(", "));
    }
    out += "\nWhere the firmware misses a criterion:\n\n";
    for (name, why) in KNOWN_FAILURES {
        let s = sweep().iter().find(|s| s.vector.name == *name).unwrap();
        out += &format!("- `{name}` passes {} of {}: {why}\n", s.passes(), s.outcomes.len());
    }
    out
}

#[test]
fn every_vector_meets_its_expectation() {
    let mut failures = Vec::new();
    for s in sweep() {
        let known = KNOWN_FAILURES.iter().any(|(name, _)| *name == s.vector.name);
        let passes = s.passes();
        if !known && passes < s.outcomes.len() {
            let run = s.outcomes.iter().position(|o| !o.meets(s.vector.expect)).unwrap() as u32;
            let v = s.vector.seeded(run);
            let mut log = String::new();
            let o = run_logged(&v, &mut log);
            failures.push(format!("{} (seed run {run}): expected {:?}, got {o:?}\n{log}", v.name, v.expect));
        }
        if known && passes == s.outcomes.len() {
            failures.push(format!("{} now passes on every seed: take it off KNOWN_FAILURES", s.vector.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn run_logged(v: &Vector, log: &mut String) -> Outcome {
    run(v, |d| {
        write_decision(log, v.name, d).unwrap();
        log.push('\n');
    })
}

#[test]
fn readme_table_is_up_to_date() {
    let section = scenario_section();
    let readme = include_str!("../../README.md");
    assert!(
        readme.contains(&section),
        "README.md's scenario section is out of date; the measured tables are:\n{section}"
    );
}

#[test]
fn en54_7_response_threshold_is_repeatable() {
    let mut count = 0;
    for s in threshold_vectors() {
        let (m, ratio) = threshold_values(s);
        assert!(m.iter().all(|m| *m >= 0.05), "{}: {m:?} below EN 54-7's 0.05 dB/m", s.vector.name);
        assert!(ratio <= 1.6, "{}: max:min {ratio} over EN 54-7's 1.6 ({m:?})", s.vector.name);
        count += 1;
    }
    assert_eq!(count, 2, "both ends of EN 54-7's rate window are tested");
}

#[test]
fn the_gate_delays_smoke_below_its_boundary_and_no_more() {
    let median = |name: &str| {
        let s = sweep().iter().find(|s| s.vector.name == name).unwrap();
        median_worst(s.outcomes.iter().map(|o| o.alarm_ms.expect("the gate never vetoes")).collect(), true)
            .unwrap()
            .0
    };
    let cfg = Config::default();
    // The gate asks for `nuisance_confirmations` samples instead of `confirmations`; the
    // seeds' sampling phases move each median by up to one verify period.
    let delay = u64::from(cfg.nuisance_confirmations - cfg.confirmations - 1) * cfg.verify_period_ms;
    let (below, at, above) =
        (median("gate_ratio_below"), median("gate_ratio_at"), median("gate_ratio_above"));
    assert!(below >= above + delay, "below {below} ms, above {above} ms, delay {delay} ms");
    assert!(above <= at && at <= below, "below {below}, at {at}, above {above}");
}

#[test]
fn criteria_convert_between_percent_per_foot_and_db_per_m() {
    for (p, db) in [(1.5, 0.215), (5.0, 0.731), (10.0, 1.501)] {
        let m = Level::PercentPerFoot(p).db_m();
        assert!((m - db).abs() < 0.001, "{p} %/ft is {m} dB/m");
        assert!((Level::percent_per_foot(m) - p).abs() < 1e-3);
    }
    // The UL 217 profiles reach their criterion's level where their text says.
    let ul = |name: &str| VECTORS.iter().find(|v| v.name == name).unwrap().model;
    let flaming = ul("ul217_flaming_polyurethane").smoke_at(IGNITION_MS + 4 * MINUTE_MS).0;
    assert!((flaming - Level::PercentPerFoot(5.0).db_m()).abs() < 0.002, "{flaming}");
    let smouldering = ul("ul217_smouldering_polyurethane").smoke_at(SMOULDER_START_MS + 60 * MINUTE_MS).0;
    assert!((smouldering - Level::PercentPerFoot(10.0).db_m()).abs() < 0.01, "{smouldering}");
}

#[test]
fn low_battery_comes_while_the_cell_can_still_sound_the_alarm() {
    let s = sweep().iter().find(|s| s.vector.name == "battery_decay").unwrap();
    for o in &s.outcomes {
        let left = o.remaining_mah.expect("low battery raised") as f32;
        assert!(left >= BATTERY_RESERVE_MAH, "only {left} mAh left at the warning");
        let consumed_at_fault = 1.0 - left / BATTERY_CAPACITY_MAH;
        assert!(battery_mv(consumed_at_fault) > ALARM_MIN_MV);
    }
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
        expect: Expect::Alarm { deadline_ms: 3 * MINUTE_MS, before: None, not_before: None },
        seed: 99,
    };
    let o = run(&steamy_fire, |_| {});
    assert!(o.meets(steamy_fire.expect), "{o:?}");
    // And smoke that sits just above the nuisance level with a nuisance ratio alarms after
    // the gate's delay.
    let lingering = Vector {
        model: fire(0, Growth::Plume { peak: 0.25, rise_s: 10.0, end_s: 3_600.0, decay_s: 60.0 }, 0.8),
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
