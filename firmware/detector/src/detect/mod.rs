//! Smoke detection: from raw chamber counts to "alarm or not", one sample at a time.
//!
//! [`Detector::judge`] takes a [`ChamberSample`] and the current time and returns a
//! [`Judgement`]. It never reads a clock and keeps only a few bytes of state, so the same
//! code runs in host tests, over the scenario vectors and on the Cortex-M3 image.

use crate::config::{Calibration, Config, DAY_MS};

/// One chamber measurement: scattered light at two wavelengths, dark and ambient light
/// already subtracted by the front end, in raw counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChamberSample {
    /// Infrared (slot A of the ADPD188BI).
    pub ir: u16,
    /// Blue (slot B).
    pub blue: u16,
}

/// Why the detector alarmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Confirmed over consecutive samples at or above the alarm threshold.
    Threshold,
    /// Confirmed on the fast-rise path (flaming fire).
    FastRise,
    /// Held just below the threshold long enough (smouldering fire).
    Smoulder,
    /// Heavy smoke: nothing may delay it.
    Heavy,
}

impl Cause {
    /// A short label for logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Cause::Threshold => "threshold",
            Cause::FastRise => "fast_rise",
            Cause::Smoulder => "smoulder",
            Cause::Heavy => "heavy",
        }
    }
}

/// What one sample means.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judgement {
    /// Obscuration above the compensated clean-air baseline, dB/m, never negative.
    pub obscuration_db_m: f32,
    /// Smoke confirmed: the sounder must sound (unless hushed).
    pub alarm: bool,
    /// Smoke above the pre-alarm threshold, not (yet) confirmed.
    pub pre_alarm: bool,
    /// Heavy smoke: overrides a hush and the nuisance gate.
    pub heavy: bool,
    /// The blue/IR ratio says nuisance aerosol; confirmation is slowed down.
    pub nuisance_suspect: bool,
    /// Why the alarm started (set on the sample that raised it).
    pub cause: Option<Cause>,
    /// Sample every verify period (2 s) instead of every standby period (10 s).
    pub fast_sampling: bool,
    /// Drift compensation reached the contamination limit (GB 20517-2025 §5.21).
    pub contamination: bool,
    /// Chamber, LED or photodiode failed: the clean-air signal has collapsed.
    pub chamber_fault: bool,
}

/// Fixed-point shift of the baseline filters: α = 1/16384, which at 10 s sampling is a
/// time constant of about 45 h (research §3.2). Dust builds up over months; smoke comes and
/// goes in minutes, so the baseline follows the first and ignores the second.
const BASE_SHIFT: u32 = 14;
/// Only samples this close to the baseline (as a fraction of the alarm threshold) move it,
/// so smoke never teaches the detector that smoke is clean air.
const BASE_TRACK_FRACTION: f32 = 0.25;
/// The baseline may move at most this fraction of the alarm threshold per day, however
/// fast the readings drift (research §3.2).
const BASE_MAX_PER_DAY_FRACTION: f32 = 0.05;
/// Compensation headroom as a fraction of the alarm threshold: beyond it the baseline stops
/// following, so sensitivity can only rise, never fall (research §3.2; panel practice).
const COMPENSATION_LIMIT_FRACTION: f32 = 0.7;
/// Contamination fault at this share of the headroom (Notifier panels: "maintenance
/// required" at 92 %; we warn earlier because a detector is serviced less often) ...
const CONTAMINATION_RAISE_PCT: u8 = 80;
/// ... and cleared when cleaning brings it back below this share.
const CONTAMINATION_CLEAR_PCT: u8 = 60;
/// A clean-air reading below this fraction of the factory value means the LED, the
/// photodiode or the chamber has failed ("low chamber" in panel terms).
const CHAMBER_FLOOR_FRACTION: u32 = 2;
/// Consecutive collapsed samples before the chamber fault is raised, and good ones before
/// it clears; one bad sample may be an I2C glitch.
const CHAMBER_FAULT_SAMPLES: u8 = 3;
/// Samples in the slope window of the fast-rise path.
const SLOPE_WINDOW: usize = 5;

/// The detection core. See the module documentation.
#[derive(Debug, Clone)]
pub struct Detector {
    cal: Calibration,
    /// Baselines in counts with [`BASE_SHIFT`] fractional bits.
    base_ir: i64,
    base_blue: i64,
    /// Start of the current drift-limit day and the baselines then.
    day_start_ms: Option<u64>,
    day_base_ir: i64,
    day_base_blue: i64,
    alarm: bool,
    pre_alarm: bool,
    confirmed: u8,
    heavy_count: u8,
    clear_count: u8,
    below_pre_count: u8,
    smoulder_since_ms: Option<u64>,
    smoulder_pause_ms: u64,
    last_ms: Option<u64>,
    window: [(u64, f32); SLOPE_WINDOW],
    window_len: usize,
    contamination: bool,
    collapsed: u8,
    healthy: u8,
    chamber_fault: bool,
}

impl Detector {
    /// A detector starting from the factory clean-air calibration.
    pub fn new(cal: Calibration) -> Self {
        let base_ir = i64::from(cal.clean_ir) << BASE_SHIFT;
        let base_blue = i64::from(cal.clean_blue) << BASE_SHIFT;
        Detector {
            cal,
            base_ir,
            base_blue,
            day_start_ms: None,
            day_base_ir: base_ir,
            day_base_blue: base_blue,
            alarm: false,
            pre_alarm: false,
            confirmed: 0,
            heavy_count: 0,
            clear_count: 0,
            below_pre_count: 0,
            smoulder_since_ms: None,
            smoulder_pause_ms: 0,
            last_ms: None,
            window: [(0, 0.0); SLOPE_WINDOW],
            window_len: 0,
            contamination: false,
            collapsed: 0,
            healthy: 0,
            chamber_fault: false,
        }
    }

    /// The compensated clean-air infrared baseline, in counts.
    pub fn baseline_ir(&self) -> u16 {
        (self.base_ir >> BASE_SHIFT).clamp(0, i64::from(u16::MAX)) as u16
    }

    /// Drift compensation in use as a percentage of the allowed headroom (0-100), the
    /// heartbeat's `drift_pct`.
    pub fn drift_pct(&self, cfg: &Config) -> u8 {
        let drift = (self.base_ir >> BASE_SHIFT) - i64::from(self.cal.clean_ir);
        let limit = self.compensation_limit(cfg);
        if drift <= 0 || limit <= 0 { 0 } else { (drift * 100 / limit).min(100) as u8 }
    }

    /// Whether the detector currently holds a confirmed alarm.
    pub fn alarm(&self) -> bool {
        self.alarm
    }

    fn compensation_limit(&self, cfg: &Config) -> i64 {
        (COMPENSATION_LIMIT_FRACTION * cfg.alarm_db_m * self.cal.ir_counts_per_db_m) as i64
    }

    /// Judges one sample taken at `now_ms`.
    pub fn judge(&mut self, cfg: &Config, now_ms: u64, sample: ChamberSample) -> Judgement {
        let ir = i64::from(sample.ir);
        let blue = i64::from(sample.blue);
        let obscuration = ((ir - (self.base_ir >> BASE_SHIFT)) as f32) / self.cal.ir_counts_per_db_m;
        let blue_obscuration =
            ((blue - (self.base_blue >> BASE_SHIFT)) as f32) / self.cal.blue_counts_per_db_m;

        self.check_chamber(sample);
        let m = if obscuration > 0.0 { obscuration } else { 0.0 };
        // A saturated front end is read as dense smoke: of the two wrong answers, a false
        // alarm is the one that cannot kill anybody.
        let heavy = m >= cfg.heavy_db_m() || sample.ir == u16::MAX;
        let above_pre = m >= cfg.pre_alarm_db_m;
        // The ratio is only meaningful once there is enough smoke for both channels to rise
        // clearly above their noise.
        let nuisance_suspect = above_pre && blue_obscuration < cfg.nuisance_ratio * m;
        // Smoke that reads like cooking or steam must also reach UL 217's cooking level
        // before it counts towards an alarm (see `Config::nuisance_alarm_db_m`).
        let alarm_level =
            if nuisance_suspect { cfg.nuisance_alarm_db_m.max(cfg.alarm_db_m) } else { cfg.alarm_db_m };
        let above_alarm = m >= alarm_level;

        self.push_window(now_ms, m);
        let fast_rise = self.fast_rise(cfg);

        self.confirmed = if above_alarm { self.confirmed.saturating_add(1) } else { 0 };
        self.heavy_count = if heavy { self.heavy_count.saturating_add(1) } else { 0 };
        let held = self.smoulder_held(cfg, now_ms, m, nuisance_suspect);

        let mut cause = None;
        if self.alarm {
            self.clear_count =
                if m < cfg.clear_fraction * cfg.alarm_db_m { self.clear_count.saturating_add(1) } else { 0 };
            if self.clear_count >= cfg.clear_samples {
                self.alarm = false;
                self.clear_count = 0;
            }
        } else {
            let needed = if nuisance_suspect {
                cfg.nuisance_confirmations
            } else if fast_rise {
                cfg.fast_rise_confirmations
            } else {
                cfg.confirmations
            };
            // Heavy smoke needs two samples, not one, so that a single corrupted reading
            // cannot sound the horn; no gate delays it further.
            cause = if self.heavy_count >= 2 {
                Some(Cause::Heavy)
            } else if self.confirmed >= needed {
                Some(if nuisance_suspect || !fast_rise { Cause::Threshold } else { Cause::FastRise })
            } else if held {
                Some(Cause::Smoulder)
            } else {
                None
            };
            if cause.is_some() {
                self.alarm = true;
                self.clear_count = 0;
            }
        }

        // Pre-alarm: smoke above the pre-alarm level, left after three samples below
        // `clear_fraction` of it (the same hysteresis as the alarm, so smoke hovering at the
        // level does not chatter between pre-alarm and normal).
        if above_pre || self.confirmed > 0 {
            self.pre_alarm = true;
            self.below_pre_count = 0;
        } else if self.pre_alarm {
            let clear = m < cfg.clear_fraction * cfg.pre_alarm_db_m;
            self.below_pre_count = if clear { self.below_pre_count.saturating_add(1) } else { 0 };
            if self.below_pre_count >= cfg.clear_samples {
                self.pre_alarm = false;
            }
        }

        let quiet = !self.alarm && !self.pre_alarm && self.smoulder_since_ms.is_none();
        if quiet && !self.chamber_fault {
            self.track_baseline(cfg, now_ms, ir, blue);
        }
        self.last_ms = Some(now_ms);

        Judgement {
            obscuration_db_m: m,
            alarm: self.alarm,
            pre_alarm: self.pre_alarm && !self.alarm,
            heavy,
            nuisance_suspect,
            cause,
            fast_sampling: !quiet,
            contamination: self.contamination,
            chamber_fault: self.chamber_fault,
        }
    }

    fn push_window(&mut self, now_ms: u64, m: f32) {
        if self.window_len == SLOPE_WINDOW {
            self.window.copy_within(1.., 0);
            self.window_len -= 1;
        }
        self.window[self.window_len] = (now_ms, m);
        self.window_len += 1;
    }

    /// Fast rise: over the slope window the obscuration climbed by at least a tenth of the
    /// alarm threshold per verify period (research §3.2).
    fn fast_rise(&self, cfg: &Config) -> bool {
        if self.window_len < SLOPE_WINDOW {
            return false;
        }
        let (t0, m0) = self.window[0];
        let (t1, m1) = self.window[SLOPE_WINDOW - 1];
        let periods = (t1.saturating_sub(t0)) as f32 / cfg.verify_period_ms as f32;
        periods > 0.0 && (m1 - m0) >= 0.1 * cfg.alarm_db_m * periods
    }

    /// Slow-smoulder path: smoke at or above `smoulder_fraction` of the alarm threshold for
    /// `smoulder_hold_ms`. Time under a nuisance-suspect ratio does not count (steam hangs
    /// below the threshold for minutes too), but it does not restart the clock either; smoke
    /// at the alarm level is confirmed by the threshold path whatever its ratio.
    fn smoulder_held(&mut self, cfg: &Config, now_ms: u64, m: f32, nuisance_suspect: bool) -> bool {
        if m < cfg.smoulder_fraction * cfg.alarm_db_m {
            self.smoulder_since_ms = None;
            self.smoulder_pause_ms = 0;
            return false;
        }
        let since = *self.smoulder_since_ms.get_or_insert(now_ms);
        if nuisance_suspect {
            let dt = self.last_ms.map_or(0, |last| now_ms.saturating_sub(last));
            self.smoulder_pause_ms = self.smoulder_pause_ms.saturating_add(dt);
        }
        now_ms.saturating_sub(since).saturating_sub(self.smoulder_pause_ms) >= cfg.smoulder_hold_ms
    }

    fn check_chamber(&mut self, sample: ChamberSample) {
        let collapsed = u32::from(sample.ir) * CHAMBER_FLOOR_FRACTION < u32::from(self.cal.clean_ir)
            || u32::from(sample.blue) * CHAMBER_FLOOR_FRACTION < u32::from(self.cal.clean_blue);
        if collapsed {
            self.healthy = 0;
            self.collapsed = self.collapsed.saturating_add(1);
            if self.collapsed >= CHAMBER_FAULT_SAMPLES {
                self.chamber_fault = true;
            }
        } else {
            self.collapsed = 0;
            self.healthy = self.healthy.saturating_add(1);
            if self.healthy >= CHAMBER_FAULT_SAMPLES {
                self.chamber_fault = false;
            }
        }
    }

    /// Moves the baselines toward clean-air readings: a slow exponential average, limited
    /// per day and capped at the compensation headroom.
    fn track_baseline(&mut self, cfg: &Config, now_ms: u64, ir: i64, blue: i64) {
        let track = (BASE_TRACK_FRACTION * cfg.alarm_db_m * self.cal.ir_counts_per_db_m) as i64;
        if (ir - (self.base_ir >> BASE_SHIFT)).abs() >= track {
            return;
        }
        let day_start = *self.day_start_ms.get_or_insert(now_ms);
        if now_ms.saturating_sub(day_start) >= DAY_MS {
            self.day_start_ms = Some(now_ms);
            self.day_base_ir = self.base_ir;
            self.day_base_blue = self.base_blue;
        }
        let per_day_ir =
            ((BASE_MAX_PER_DAY_FRACTION * cfg.alarm_db_m * self.cal.ir_counts_per_db_m) as i64) << BASE_SHIFT;
        let per_day_blue = ((BASE_MAX_PER_DAY_FRACTION * cfg.alarm_db_m * self.cal.blue_counts_per_db_m)
            as i64)
            << BASE_SHIFT;
        let limit = self.compensation_limit(cfg) << BASE_SHIFT;
        let clean_ir = i64::from(self.cal.clean_ir) << BASE_SHIFT;

        let next_ir = self.base_ir + ir - (self.base_ir >> BASE_SHIFT);
        let next_ir = next_ir.clamp(self.day_base_ir - per_day_ir, self.day_base_ir + per_day_ir);
        // Upward compensation stops at the headroom: past it, dust makes the detector more
        // sensitive, never less.
        self.base_ir = next_ir.min(clean_ir + limit);
        let next_blue = self.base_blue + blue - (self.base_blue >> BASE_SHIFT);
        self.base_blue =
            next_blue.clamp(self.day_base_blue - per_day_blue, self.day_base_blue + per_day_blue);

        let pct = self.drift_pct(cfg);
        if pct >= CONTAMINATION_RAISE_PCT {
            self.contamination = true;
        } else if pct < CONTAMINATION_CLEAR_PCT {
            self.contamination = false;
        }
    }
}

#[cfg(test)]
mod tests;
