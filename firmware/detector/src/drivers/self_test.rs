//! The self-test the test button (or a `self_test` downlink) asks for: horn, chamber and
//! battery under load, in the order that loads the battery hardest.

use embedded_hal::delay::DelayNs;
use embedded_hal::digital::{InputPin, OutputPin};

use super::{ChamberSensor, Indicators, LoadedBattery, MillivoltAdc};
use crate::device::SelfTestResult;

/// How long the horn sounds before its current is checked: the piezo driver's supply
/// settles within tens of milliseconds.
pub const HORN_SETTLE_MS: u32 = 100;

/// Runs the self-test:
///
/// 1. sounder and LED on; after [`HORN_SETTLE_MS`] the horn-current sense input must read
///    high (a board without one wires it high, and the horn is then judged by ear);
/// 2. battery measured under load *while the horn sounds*: the worst case the cell meets in
///    a real alarm (GB 20517-2025 §5.11);
/// 3. sounder and LED off, then the chamber's boosted-LED check.
///
/// Any I/O error counts as a failed check, so a broken part is reported, never hidden.
pub fn run_self_test<C, S, L, H, P, A, D, W>(
    chamber: &mut C,
    indicators: &mut Indicators<S, L>,
    horn_sense: &mut H,
    battery: &mut LoadedBattery<P, A, D>,
    delay: &mut W,
) -> SelfTestResult
where
    C: ChamberSensor,
    S: OutputPin,
    L: OutputPin,
    H: InputPin,
    P: OutputPin,
    A: MillivoltAdc,
    D: DelayNs,
    W: DelayNs,
{
    let horn_on = indicators.show(true, true).is_ok();
    delay.delay_ms(HORN_SETTLE_MS);
    let horn_ok = horn_on && horn_sense.is_high().unwrap_or(false);
    // A failed reading reports the lowest voltage the protocol carries: a battery that
    // cannot be measured is treated as a low one.
    let battery_mv = battery.measure_mv().unwrap_or(1_000);
    let horn_off = indicators.show(false, false).is_ok();
    let chamber_ok = chamber.self_check().unwrap_or(false);
    SelfTestResult { horn_ok: horn_ok && horn_off, chamber_ok, battery_mv }
}

#[cfg(test)]
mod tests {
    use embedded_hal_mock::eh1::delay::{CheckedDelay, NoopDelay, Transaction as Delay};
    use embedded_hal_mock::eh1::digital::{Mock as Pin, State, Transaction as P};

    use super::*;
    use crate::drivers::ChamberSample;

    struct Chamber(Result<bool, ()>);
    impl ChamberSensor for Chamber {
        type Error = ();
        fn sample(&mut self) -> Result<ChamberSample, ()> {
            unreachable!("the self-test uses self_check")
        }
        fn self_check(&mut self) -> Result<bool, ()> {
            self.0
        }
    }

    struct Adc(u16);
    impl MillivoltAdc for Adc {
        type Error = ();
        fn read_mv(&mut self) -> Result<u16, ()> {
            Ok(self.0)
        }
    }

    fn check(horn_sense: State, chamber: Result<bool, ()>, expected: SelfTestResult) {
        let sounder = Pin::new(&[P::set(State::High), P::set(State::Low)]);
        let led = Pin::new(&[P::set(State::High), P::set(State::Low)]);
        let mut indicators = Indicators::new(sounder, led);
        let mut sense = Pin::new(&[P::get(horn_sense)]);
        let load = Pin::new(&[P::set(State::High), P::set(State::Low)]);
        let mut battery = LoadedBattery::new(load, Adc(3_280), NoopDelay::new());
        let mut delay = CheckedDelay::new(&[Delay::delay_ms(HORN_SETTLE_MS)]);
        let got = run_self_test(&mut Chamber(chamber), &mut indicators, &mut sense, &mut battery, &mut delay);
        assert_eq!(got, expected);
        let (mut s, mut l) = indicators.release();
        let (mut load, _, _) = battery.release();
        for pin in [&mut s, &mut l, &mut sense, &mut load] {
            pin.done();
        }
        delay.done();
    }

    #[test]
    fn horn_battery_under_horn_load_then_chamber() {
        check(State::High, Ok(true), SelfTestResult { horn_ok: true, chamber_ok: true, battery_mv: 3_280 });
        check(State::Low, Ok(true), SelfTestResult { horn_ok: false, chamber_ok: true, battery_mv: 3_280 });
        check(State::High, Err(()), SelfTestResult { horn_ok: true, chamber_ok: false, battery_mv: 3_280 });
    }
}
