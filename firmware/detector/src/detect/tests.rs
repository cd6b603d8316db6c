use super::*;
use crate::config::{HOUR_MS, SECOND_MS};

const CAL: Calibration = crate::scenario::CALIBRATION;

fn sample(m: f32, ratio: f32) -> ChamberSample {
    ChamberSample {
        ir: (f32::from(CAL.clean_ir) + m * CAL.ir_counts_per_db_m) as u16,
        blue: (f32::from(CAL.clean_blue) + m * ratio * CAL.blue_counts_per_db_m) as u16,
    }
}

/// Feeds `levels` (dB/m) every 2 s and returns the index of the sample that alarmed and
/// its cause.
fn check(levels: &[f32], ratio: f32) -> Option<(usize, Cause)> {
    let cfg = Config::default();
    let mut d = Detector::new(CAL);
    levels.iter().enumerate().find_map(|(i, &m)| {
        let j = d.judge(&cfg, i as u64 * 2 * SECOND_MS, sample(m, ratio));
        j.cause.map(|c| (i, c))
    })
}

#[test]
fn confirmation_paths() {
    // Three consecutive samples at the threshold.
    assert_eq!(check(&[0.0, 0.16, 0.16, 0.16], 1.6), Some((3, Cause::Threshold)));
    assert_eq!(check(&[0.0, 0.16, 0.16, 0.0, 0.16, 0.16], 1.6), None, "not consecutive");
    // Fast rise: two confirmations.
    assert_eq!(check(&[0.0, 0.04, 0.08, 0.12, 0.16, 0.2], 1.6), Some((5, Cause::FastRise)));
    // Nuisance ratio: thirty confirmations at or above UL 217's cooking level; heavy smoke
    // cuts through after two samples.
    assert_eq!(check(&[0.16f32; 40], 0.8), None, "above the threshold, below the nuisance level");
    let steam = [0.23f32; 40];
    assert_eq!(check(&steam, 0.8), Some((29, Cause::Threshold)), "the 30th sample");
    assert_eq!(check(&[0.0, 0.4, 0.4], 0.8), Some((2, Cause::Heavy)));
    assert_eq!(check(&[0.0, 0.4, 0.0, 0.4], 0.8), None, "one heavy glitch is not a fire");
}

#[test]
fn smoulder_path_alarms_below_the_threshold_but_not_for_steam() {
    let held = [0.13f32; 160]; // 320 s at 2 s
    assert_eq!(check(&held, 1.6).map(|(i, c)| (i * 2, c)), Some((300, Cause::Smoulder)));
    assert_eq!(check(&held, 0.8), None);
}

#[test]
fn alarm_clears_with_hysteresis() {
    let cfg = Config::default();
    let mut d = Detector::new(CAL);
    let mut t = 0;
    let mut feed = |d: &mut Detector, m: f32| {
        t += 2_000;
        d.judge(&cfg, t, sample(m, 1.6))
    };
    for _ in 0..3 {
        feed(&mut d, 0.2);
    }
    assert!(d.alarm());
    for _ in 0..5 {
        assert!(feed(&mut d, 0.13).alarm, "0.13 is above 0.8 × threshold: still alarm");
    }
    feed(&mut d, 0.1);
    feed(&mut d, 0.1);
    assert!(!feed(&mut d, 0.1).alarm);
}

#[test]
fn baseline_follows_dust_within_the_daily_limit_and_never_learns_smoke() {
    let cfg = Config::default();
    let mut d = Detector::new(CAL);
    // A step of 100 counts of dust (well under the tracking window): after a day the
    // baseline may have moved at most 5 % of the alarm threshold (30 counts).
    let dusty = ChamberSample { ir: CAL.clean_ir + 100, blue: CAL.clean_blue + 50 };
    let mut t = 0;
    while t <= 24 * HOUR_MS {
        d.judge(&cfg, t, dusty);
        t += 10 * SECOND_MS;
    }
    let moved = d.baseline_ir() - CAL.clean_ir;
    assert!(moved > 20 && moved <= 31, "moved {moved}");
    // Smoke does not move it.
    let before = d.baseline_ir();
    for i in 0..1_000 {
        d.judge(&cfg, t + i * 2_000, sample(0.1, 1.6));
    }
    assert_eq!(d.baseline_ir(), before);
}

#[test]
fn compensation_stops_at_the_headroom_and_raises_contamination_first() {
    let cfg = Config::default();
    let mut d = Detector::new(CAL);
    let mut t = 0;
    let mut ir = u32::from(CAL.clean_ir);
    let mut raised_at_pct = None;
    for day in 0..40u32 {
        // 20 counts of dust a day, 800 in 40 days: beyond the 420-count headroom.
        for _ in 0..8_640 {
            let j = d.judge(&cfg, t, ChamberSample { ir: ir as u16, blue: CAL.clean_blue });
            assert!(!j.alarm && !j.pre_alarm || day > 30, "no false alarm while compensating");
            if j.contamination && raised_at_pct.is_none() {
                raised_at_pct = Some(d.drift_pct(&cfg));
            }
            t += 10 * SECOND_MS;
        }
        ir += 20;
    }
    assert_eq!(raised_at_pct, Some(80));
    assert_eq!(d.drift_pct(&cfg), 100);
    assert_eq!(d.baseline_ir(), CAL.clean_ir + 420, "capped: sensitivity can only rise");
}

#[test]
fn a_collapsed_chamber_is_a_fault_after_three_samples() {
    let cfg = Config::default();
    let mut d = Detector::new(CAL);
    let dead = ChamberSample { ir: 100, blue: 80 };
    assert!(!d.judge(&cfg, 0, dead).chamber_fault);
    assert!(!d.judge(&cfg, 10_000, dead).chamber_fault);
    let j = d.judge(&cfg, 20_000, dead);
    assert!(j.chamber_fault && !j.alarm && !j.pre_alarm);
    let clean = sample(0.0, 1.0);
    for t in [30_000, 40_000] {
        assert!(d.judge(&cfg, t, clean).chamber_fault);
    }
    assert!(!d.judge(&cfg, 50_000, clean).chamber_fault);
}
