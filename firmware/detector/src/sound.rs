//! What the sounder plays, as a pure function of time.
//!
//! The device state machine decides *which* [`Sound`]; the board asks [`Sound::is_on`] at
//! its own pace and switches the sounder pin. Patterns never depend on how often they are
//! asked.

/// Temporal-3 evacuation pattern (ISO 8201, NFPA 72 §18.4.2): three 0.5 s tones 0.5 s
/// apart, then 1.5 s of silence; a 4 s cycle.
const TEMPORAL3_CYCLE_MS: u64 = 4_000;
const TEMPORAL3_TONE_MS: u64 = 500;
/// One fault chirp: short enough to cost little battery, long enough to be heard.
pub const CHIRP_MS: u64 = 100;
/// Gap between the chirps of a multi-chirp fault signal.
const CHIRP_GAP_MS: u64 = 400;

/// A sounder pattern, anchored at the time it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sound {
    /// Silent.
    Off,
    /// Fire alarm or drill: temporal-3, from `since_ms`.
    Temporal3 {
        /// Start of the pattern.
        since_ms: u64,
    },
    /// Fault signal: `count` chirps every `period_ms`. GB 20517-2025 §5.11 wants the
    /// battery-fault sound distinct from other faults: one chirp for a low battery, two
    /// for any other fault, three once when the detector leaves its base.
    Chirps {
        /// Start of the pattern.
        since_ms: u64,
        /// Chirps per period.
        count: u8,
        /// Pattern period.
        period_ms: u64,
    },
}

impl Sound {
    /// Whether the sounder is on at `now_ms`.
    pub fn is_on(self, now_ms: u64) -> bool {
        match self {
            Sound::Off => false,
            Sound::Temporal3 { since_ms } => {
                let t = now_ms.saturating_sub(since_ms) % TEMPORAL3_CYCLE_MS;
                t < 6 * TEMPORAL3_TONE_MS && (t / TEMPORAL3_TONE_MS).is_multiple_of(2)
            }
            Sound::Chirps { since_ms, count, period_ms } => {
                let t = now_ms.saturating_sub(since_ms) % period_ms.max(1);
                let slot = t / (CHIRP_MS + CHIRP_GAP_MS);
                slot < u64::from(count) && t % (CHIRP_MS + CHIRP_GAP_MS) < CHIRP_MS
            }
        }
    }

    /// Whether the pattern is a fire-alarm (or drill) signal.
    pub fn is_alarm(self) -> bool {
        matches!(self, Sound::Temporal3 { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On/off at every 250 ms step of the first `ms` milliseconds.
    fn trace(sound: Sound, ms: u64) -> heapless::String<64> {
        let mut out = heapless::String::new();
        for t in (0..ms).step_by(250) {
            out.push(if sound.is_on(1_000 + t) { '#' } else { '.' }).unwrap();
        }
        out
    }

    #[test]
    fn temporal3_is_three_half_second_tones_then_one_and_a_half_seconds_of_silence() {
        assert_eq!(trace(Sound::Temporal3 { since_ms: 1_000 }, 8_000), "##..##..##......##..##..##......");
    }

    #[test]
    fn chirps_are_short_and_counted() {
        let one = Sound::Chirps { since_ms: 0, count: 1, period_ms: 45_000 };
        let two = Sound::Chirps { since_ms: 0, count: 2, period_ms: 45_000 };
        let on_ms = |s: Sound| (0..45_000).filter(|&t| s.is_on(t)).count();
        assert_eq!(on_ms(one), 100);
        assert_eq!(on_ms(two), 200);
        assert!(one.is_on(45_050) && !one.is_on(45_500), "repeats every period");
        assert!(!Sound::Off.is_on(0));
        assert!(Sound::Temporal3 { since_ms: 0 }.is_alarm() && !one.is_alarm());
    }
}
