//! Sounder and LED on two `OutputPin`s.

use embedded_hal::digital::OutputPin;

use super::{PinError, pin_error};

/// The sounder driver (piezo with its own oscillator, on when high) and the red LED.
/// Pins are written only when their level changes: the board calls [`Indicators::show`]
/// every time it wakes and a GPIO write costs energy and bus time.
#[derive(Debug)]
pub struct Indicators<S, L> {
    sounder: S,
    led: L,
    shown: Option<(bool, bool)>,
}

impl<S: OutputPin, L: OutputPin> Indicators<S, L> {
    /// Wraps the pins; their level is unknown until the first [`Indicators::show`].
    pub fn new(sounder: S, led: L) -> Self {
        Indicators { sounder, led, shown: None }
    }

    /// Gives the pins back.
    pub fn release(self) -> (S, L) {
        (self.sounder, self.led)
    }

    /// Drives both outputs.
    pub fn show(&mut self, sounder_on: bool, led_on: bool) -> Result<(), PinError> {
        let (old_sounder, old_led) = match self.shown {
            Some((s, l)) => (Some(s), Some(l)),
            None => (None, None),
        };
        if old_sounder != Some(sounder_on) {
            self.sounder.set_state(sounder_on.into()).map_err(pin_error)?;
        }
        if old_led != Some(led_on) {
            self.led.set_state(led_on.into()).map_err(pin_error)?;
        }
        self.shown = Some((sounder_on, led_on));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use embedded_hal_mock::eh1::digital::{Mock as Pin, State, Transaction as P};

    use super::*;

    #[test]
    fn writes_only_changes() {
        let sounder = Pin::new(&[P::set(State::Low), P::set(State::High), P::set(State::Low)]);
        let led = Pin::new(&[P::set(State::Low), P::set(State::High)]);
        let mut io = Indicators::new(sounder, led);
        io.show(false, false).unwrap();
        io.show(false, false).unwrap();
        io.show(true, true).unwrap();
        io.show(false, true).unwrap();
        let (mut s, mut l) = io.release();
        s.done();
        l.done();
    }
}
