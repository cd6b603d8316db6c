//! Test button and base tamper switch on two `InputPin`s.

use embedded_hal::digital::InputPin;

use super::{PinError, pin_error};
use crate::device::Press;

/// A press held at least this long is a long press (drill); shorter is a short press.
pub const LONG_PRESS_MS: u64 = 3_000;
/// Presses shorter than this are contact bounce, not a person.
pub const DEBOUNCE_MS: u64 = 50;

/// What changed since the last poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InputEvents {
    /// A completed press of the test button.
    pub press: Option<Press>,
    /// The tamper switch changed: `Some(true)` back on the base, `Some(false)` removed.
    pub in_base: Option<bool>,
}

/// The button (to ground, so low while pressed) and the tamper switch (closed to ground
/// while the detector sits on its base).
#[derive(Debug)]
pub struct Inputs<B, T> {
    button: B,
    tamper: T,
    pressed_since_ms: Option<u64>,
    in_base: Option<bool>,
}

impl<B: InputPin, T: InputPin> Inputs<B, T> {
    /// Wraps the pins.
    pub fn new(button: B, tamper: T) -> Self {
        Inputs { button, tamper, pressed_since_ms: None, in_base: None }
    }

    /// Gives the pins back.
    pub fn release(self) -> (B, T) {
        (self.button, self.tamper)
    }

    /// Reads both pins at `now_ms`. A press is reported when the button is released.
    pub fn poll(&mut self, now_ms: u64) -> Result<InputEvents, PinError> {
        let mut events = InputEvents::default();
        let pressed = self.button.is_low().map_err(pin_error)?;
        match (pressed, self.pressed_since_ms) {
            (true, None) => self.pressed_since_ms = Some(now_ms),
            (false, Some(since)) => {
                self.pressed_since_ms = None;
                let held = now_ms.saturating_sub(since);
                if held >= LONG_PRESS_MS {
                    events.press = Some(Press::Long);
                } else if held >= DEBOUNCE_MS {
                    events.press = Some(Press::Short);
                }
            }
            _ => {}
        }
        let in_base = self.tamper.is_low().map_err(pin_error)?;
        if self.in_base != Some(in_base) {
            self.in_base = Some(in_base);
            events.in_base = Some(in_base);
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use embedded_hal_mock::eh1::digital::{Mock as Pin, State, Transaction as P};

    use super::*;

    /// Polls at each `(time, button, tamper)` step and returns the events seen.
    fn check(steps: &[(u64, State, State)], expected: &[InputEvents]) {
        let button = Pin::new(&steps.iter().map(|s| P::get(s.1)).collect::<Vec<_>>());
        let tamper = Pin::new(&steps.iter().map(|s| P::get(s.2)).collect::<Vec<_>>());
        let mut inputs = Inputs::new(button, tamper);
        let got: Vec<_> = steps.iter().map(|s| inputs.poll(s.0).unwrap()).collect();
        assert_eq!(got, expected);
        let (mut b, mut t) = inputs.release();
        b.done();
        t.done();
    }

    const NONE: InputEvents = InputEvents { press: None, in_base: None };

    #[test]
    fn presses_are_classified_on_release() {
        use State::{High as Up, Low as Down};
        let seated = InputEvents { press: None, in_base: Some(true) };
        let short = InputEvents { press: Some(Press::Short), in_base: None };
        let long = InputEvents { press: Some(Press::Long), in_base: None };
        check(
            &[(0, Up, Down), (10, Down, Down), (200, Up, Down), (300, Down, Down), (3_400, Up, Down)],
            &[seated, NONE, short, NONE, long],
        );
        check(&[(0, Up, Down), (10, Down, Down), (30, Up, Down)], &[seated, NONE, NONE]);
    }

    #[test]
    fn tamper_changes_are_reported_once() {
        use State::{High as Open, Low as Closed};
        let removed = InputEvents { press: None, in_base: Some(false) };
        let back = InputEvents { press: None, in_base: Some(true) };
        check(
            &[(0, Open, Closed), (1, Open, Open), (2, Open, Open), (3, Open, Closed)],
            &[back, removed, NONE, back],
        );
    }
}
