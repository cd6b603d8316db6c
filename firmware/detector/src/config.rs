//! Tunable numbers: every threshold, period and limit the core uses, with where it comes
//! from. None of them is a law; they are starting values from the research notes
//! (`shared/research/firmware.md` §3.2) to be tuned on smoke-room data.

/// One second in the core's millisecond time base.
pub const SECOND_MS: u64 = 1_000;
/// One minute.
pub const MINUTE_MS: u64 = 60 * SECOND_MS;
/// One hour.
pub const HOUR_MS: u64 = 60 * MINUTE_MS;
/// One day.
pub const DAY_MS: u64 = 24 * HOUR_MS;

/// The default blue/IR nuisance-gate boundary ([`Config::nuisance_ratio`]), named so that the
/// scenario vectors that test the gate itself can sit at, just above and just below it.
pub const NUISANCE_RATIO: f32 = 1.2;

/// Factory calibration of one chamber, measured in a smoke box and stored in flash.
///
/// The analog front end reports scattered light in raw counts; calibration turns a count
/// difference from clean air into obscuration in dB/m, the unit of the standards
/// (GB 4715-2024, EN 54-7).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// Clean-air infrared reading at the factory, in counts.
    pub clean_ir: u16,
    /// Clean-air blue reading at the factory, in counts.
    pub clean_blue: u16,
    /// Infrared counts per dB/m of reference smoke.
    pub ir_counts_per_db_m: f32,
    /// Blue counts per dB/m, scaled so that a large-particle reference aerosol gives the
    /// same dB/m on both wavelengths (blue/IR ratio 1.0).
    pub blue_counts_per_db_m: f32,
}

impl Default for Calibration {
    /// A typical ADPD188BI chamber: a clean-air reading near 1,200 counts and 4,000 counts
    /// per dB/m, which puts the 16-bit ceiling near 16 dB/m, far beyond any alarm level.
    fn default() -> Self {
        Calibration {
            clean_ir: 1_200,
            clean_blue: 900,
            ir_counts_per_db_m: 4_000.0,
            blue_counts_per_db_m: 3_000.0,
        }
    }
}

/// Everything the detection core and the device state machine can be tuned with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Pre-alarm threshold in dB/m (settable by downlink). Half the alarm threshold, as
    /// §3.2 of the research suggests.
    pub pre_alarm_db_m: f32,
    /// Alarm threshold in dB/m (settable by downlink). 0.15 dB/m sits inside the EN 54-7
    /// response window and above the 0.05 dB/m floor of GB 4715-2024.
    pub alarm_db_m: f32,
    /// Heavy smoke, as a multiple of the alarm threshold: at or above it the detector alarms
    /// regardless of the nuisance gate and a hush is overridden (§3.2: `T_high = 2·T_alarm`).
    pub heavy_factor: f32,
    /// Sampling period in standby. Microchip RE46C1xx smoke ASICs strobe every 10 s.
    pub standby_period_ms: u64,
    /// Sampling period once smoke is seen; RE46C1xx speed up to verify, §3.2 uses 2 s.
    pub verify_period_ms: u64,
    /// Consecutive samples at or above the alarm threshold needed to alarm (4 to 6 s).
    pub confirmations: u8,
    /// Confirmations on the fast-rise path: a flaming fire that climbs at least a tenth of
    /// the alarm threshold per verify period needs only this many.
    pub fast_rise_confirmations: u8,
    /// Confirmations while the blue/IR ratio says "large particles" (steam, dust, cooking
    /// oil): 30 samples, one minute at 2 s, the longest delay NFPA 72's alarm verification
    /// allows. Heavy smoke is never delayed.
    pub nuisance_confirmations: u8,
    /// While the blue/IR ratio says nuisance, the threshold path counts only samples at or
    /// above this obscuration in dB/m (and never below `alarm_db_m`). UL 217 8th edition's
    /// cooking nuisance test (§54, broiling hamburgers) allows no alarm below 1.5 %/ft,
    /// 0.215 dB/m (the criterion as commonly cited); 0.22 dB/m leaves a little room for the
    /// chamber's noise. With only the minute's delay, a cooking plume rising slowly past
    /// the 0.15 dB/m threshold alarmed at about 0.18 dB/m (the `ul217_cooking_broiling`
    /// vector). The cost: smoke whose ratio says nuisance but which is a fire alarms from
    /// this level instead of from the threshold, still far below UL 217's fire criteria
    /// (5 and 10 %/ft) and EN 54-7's end-of-test levels; heavy smoke alarms whatever its
    /// ratio.
    pub nuisance_alarm_db_m: f32,
    /// Calibrated blue/IR ratio below which smoke is suspected to be a nuisance aerosol.
    /// Sub-micron fire smoke scatters blue light relatively more than micron-sized droplets
    /// and dust (Mie theory; Li et al., Fire 2023, 6(4), 140).
    pub nuisance_ratio: f32,
    /// Slow-smoulder path: smoke held at or above this fraction of the alarm threshold ...
    pub smoulder_fraction: f32,
    /// ... for this long alarms, even though it never crossed the alarm threshold
    /// (smouldering polyurethane that hovers just below it, UL 217 8th ed.).
    pub smoulder_hold_ms: u64,
    /// An alarm ends after this many consecutive samples below `clear_fraction` of the
    /// alarm threshold (hysteresis against chattering).
    pub clear_samples: u8,
    /// See `clear_samples`.
    pub clear_fraction: f32,
    /// Hush length from the test button: 9 minutes, the RE46C1xx timer and within the
    /// 10 minutes building codes allow.
    pub hush_ms: u64,
    /// Battery check period under load. GB 20517-2025 §5.11.1 requires at least every
    /// 24 h; hourly costs nothing and finds a failing cell sooner.
    pub battery_check_ms: u64,
    /// Battery voltage under load at or below which the low-battery fault is raised. For a
    /// 3.6 V Li-SOCl₂ cell this leaves about 9 % of its capacity (see the battery model in
    /// `scenario`), far more than EN 14604's 30 days of warning plus 4 minutes of alarm.
    pub low_battery_mv: u16,
    /// How long the test button silences the low-battery chirp: GB 20517-2025 §5.11.2
    /// requires (7 ± 1) h.
    pub battery_hush_ms: u64,
    /// Low-battery and fault chirp period. UL 217 asks for a chirp at least once a minute;
    /// RE46C1xx parts chirp every 43 s.
    pub chirp_period_ms: u64,
    /// Heartbeat period (settable by downlink). 24 h: NB-IoT practice is 4-24 h and a
    /// daily heartbeat carries the daily battery figure.
    pub heartbeat_ms: u64,
    /// Length of a drill (long press of the test button): the horn sounds temporal-3.
    pub drill_ms: u64,
    /// Unix ms of manufacture; with a valid clock, the device raises end of life this long
    /// after it.
    pub manufactured_unix_ms: u64,
    /// Service life: 10 years for smoke alarms (GB 20517-2025, EN 14604 practice).
    pub service_life_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pre_alarm_db_m: 0.075,
            alarm_db_m: 0.15,
            heavy_factor: 2.0,
            standby_period_ms: 10 * SECOND_MS,
            verify_period_ms: 2 * SECOND_MS,
            confirmations: 3,
            fast_rise_confirmations: 2,
            nuisance_confirmations: 30,
            nuisance_alarm_db_m: 0.22,
            nuisance_ratio: NUISANCE_RATIO,
            smoulder_fraction: 0.8,
            smoulder_hold_ms: 5 * MINUTE_MS,
            clear_samples: 3,
            clear_fraction: 0.8,
            hush_ms: 9 * MINUTE_MS,
            battery_check_ms: HOUR_MS,
            low_battery_mv: 3_100,
            battery_hush_ms: 7 * HOUR_MS,
            chirp_period_ms: 45 * SECOND_MS,
            heartbeat_ms: DAY_MS,
            drill_ms: MINUTE_MS,
            manufactured_unix_ms: 0,
            service_life_ms: 3_652 * DAY_MS,
        }
    }
}

impl Config {
    /// Heavy-smoke level in dB/m.
    pub fn heavy_db_m(&self) -> f32 {
        self.alarm_db_m * self.heavy_factor
    }
}
