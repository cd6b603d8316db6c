//! Battery voltage under load.
//!
//! A lithium cell that reads fine at rest can collapse under the sounder's current, so the
//! only honest reading is taken under load (GB 20517-2025 §5.11; EN 14604). The board
//! switches a dummy load (or the LED burst) with an `OutputPin`, waits for the voltage to
//! settle, and reads its ADC through [`MillivoltAdc`].

use embedded_hal::delay::DelayNs;
use embedded_hal::digital::OutputPin;

use super::{PinError, pin_error};

/// Settling time under load: Li-SOCl₂ cells show a voltage dip ("passivation") in the
/// first milliseconds of a pulse; 10 ms reads the plateau the sounder will see.
pub const SETTLE_MS: u32 = 10;

/// A board ADC channel that reads the battery rail in mV (embedded-hal 1.0 has no ADC
/// trait; the board implements this with its HAL's inherent ADC methods).
pub trait MillivoltAdc {
    /// ADC error.
    type Error;
    /// One conversion, scaled to mV at the battery terminal.
    fn read_mv(&mut self) -> Result<u16, Self::Error>;
}

/// Why a battery reading failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatteryError<E> {
    /// The load switch pin failed.
    Pin(PinError),
    /// The ADC failed.
    Adc(E),
}

/// Load switch, ADC and delay for battery readings.
#[derive(Debug)]
pub struct LoadedBattery<L, A, D> {
    load: L,
    adc: A,
    delay: D,
}

impl<L: OutputPin, A: MillivoltAdc, D: DelayNs> LoadedBattery<L, A, D> {
    /// Wraps the parts.
    pub fn new(load: L, adc: A, delay: D) -> Self {
        LoadedBattery { load, adc, delay }
    }

    /// Gives the parts back.
    pub fn release(self) -> (L, A, D) {
        (self.load, self.adc, self.delay)
    }

    /// Switches the load on, waits [`SETTLE_MS`](super::SETTLE_MS), reads, and switches the load off again
    /// (also when the reading failed, so a failed read never leaves the cell loaded).
    pub fn measure_mv(&mut self) -> Result<u16, BatteryError<A::Error>> {
        self.load.set_high().map_err(|e| BatteryError::Pin(pin_error(e)))?;
        self.delay.delay_ms(SETTLE_MS);
        let reading = self.adc.read_mv().map_err(BatteryError::Adc);
        self.load.set_low().map_err(|e| BatteryError::Pin(pin_error(e)))?;
        reading
    }
}

#[cfg(test)]
mod tests {
    use embedded_hal_mock::eh1::delay::CheckedDelay;
    use embedded_hal_mock::eh1::delay::Transaction as Delay;
    use embedded_hal_mock::eh1::digital::{Mock as Pin, State, Transaction as P};

    use super::*;

    struct Adc(Result<u16, ()>);
    impl MillivoltAdc for Adc {
        type Error = ();
        fn read_mv(&mut self) -> Result<u16, ()> {
            self.0
        }
    }

    fn check(adc: Result<u16, ()>, expected: Result<u16, BatteryError<()>>) {
        let pin = Pin::new(&[P::set(State::High), P::set(State::Low)]);
        let delay = CheckedDelay::new(&[Delay::delay_ms(10)]);
        let mut battery = LoadedBattery::new(pin, Adc(adc), delay);
        assert_eq!(battery.measure_mv(), expected);
        let (mut pin, _, mut delay) = battery.release();
        pin.done();
        delay.done();
    }

    #[test]
    fn reads_under_load_and_always_releases_the_load() {
        check(Ok(3_310), Ok(3_310));
        check(Err(()), Err(BatteryError::Adc(())));
    }
}
