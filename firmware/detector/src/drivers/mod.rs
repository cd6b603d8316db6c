//! Drivers over embedded-hal 1.0 traits.
//!
//! embedded-hal 1.0 has no ADC trait (it was removed before 1.0, embedded-hal #376), so the
//! two analog measurements sit behind small traits of our own: [`ChamberSensor`] for the
//! smoke chamber and [`MillivoltAdc`] for the battery. Everything else is a plain
//! `I2c`, `OutputPin`, `InputPin` or `DelayNs`, so any HAL's types plug in.

mod adpd188;
mod battery;
mod indicators;
mod inputs;
mod self_test;

pub use adpd188::{Adpd188, AfeError, I2C_ADDRESS, reg};
pub use battery::{BatteryError, LoadedBattery, MillivoltAdc, SETTLE_MS};
pub use indicators::Indicators;
pub use inputs::{InputEvents, Inputs, LONG_PRESS_MS};
pub use self_test::{HORN_SETTLE_MS, run_self_test};

pub use crate::detect::ChamberSample;

/// A smoke chamber front end: what the detection core needs, nothing about buses.
pub trait ChamberSensor {
    /// Bus or device error.
    type Error;

    /// One measurement at both wavelengths.
    fn sample(&mut self) -> Result<ChamberSample, Self::Error>;

    /// Self-test: drives the LEDs harder and checks that the chamber answers with more
    /// scattered light, proving LED, chamber and photodiode work.
    fn self_check(&mut self) -> Result<bool, Self::Error>;
}

/// An output or input pin failed; the kind comes from the HAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinError(pub embedded_hal::digital::ErrorKind);

fn pin_error<E: embedded_hal::digital::Error>(e: E) -> PinError {
    PinError(e.kind())
}
