//! Analog Devices ADPD188BI smoke-detection front end on I2C.
//!
//! The module holds a blue and an infrared LED and two photodiodes behind a 14-bit ADC
//! with ambient-light rejection. Time slot A drives the IR LED, slot B the blue one; the
//! driver runs one-shot measurements (standby between samples, which is what keeps a
//! ten-year battery alive) and reads the 16-bit slot registers.
//!
//! Register addresses follow the open-source driver mauriciobarroso/adpd188bi
//! (`include/adpd188.h`); the configuration values are the part's documented defaults as
//! recalled in the research notes and must be checked against the datasheet revision on
//! the bench before production.

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

use super::{ChamberSample, ChamberSensor};

/// 7-bit I2C address of the ADPD188BI.
pub const I2C_ADDRESS: u8 = 0x64;

/// Register addresses (16-bit registers, big-endian on the bus).
pub mod reg {
    /// Device id; the low byte identifies the part.
    pub const DEVID: u8 = 0x08;
    /// Software reset (write 1).
    pub const SW_RESET: u8 = 0x0F;
    /// Operating mode: 0 standby, 1 program, 2 normal (measuring).
    pub const MODE: u8 = 0x10;
    /// Time-slot enables and data formats.
    pub const SLOT_EN: u8 = 0x11;
    /// Which LED and photodiodes each slot uses.
    pub const PD_LED_SELECT: u8 = 0x14;
    /// Samples averaged per output.
    pub const NUM_AVG: u8 = 0x15;
    /// Blue LED current, coarse.
    pub const ILED_BLUE_COARSE: u8 = 0x22;
    /// IR LED current, coarse.
    pub const ILED_IR_COARSE: u8 = 0x23;
    /// Holds the slot data registers still while they are read.
    pub const DATA_ACCESS_CTL: u8 = 0x5F;
    /// Slot A (IR) data, channel 1.
    pub const SLOT_A_DATA: u8 = 0x64;
    /// Slot B (blue) data, channel 1.
    pub const SLOT_B_DATA: u8 = 0x68;
}

/// Low byte of [`reg::DEVID`] on an ADPD188BI.
pub const DEVICE_ID: u8 = 0x16;
/// Mode values.
const MODE_STANDBY: u16 = 0x0000;
const MODE_PROGRAM: u16 = 0x0001;
const MODE_NORMAL: u16 = 0x0002;
/// Slots A and B on, 16-bit results.
const SLOT_EN_AB: u16 = 0x3011;
/// Slot A: IR LED; slot B: blue LED; both into the combined photodiode.
const PD_LED_AB: u16 = 0x0552;
/// No extra averaging: the detection core filters over samples itself.
const NUM_AVG_ONE: u16 = 0x0000;
/// Normal LED current (coarse code) and the boosted current of the self-test.
const ILED_NORMAL: u16 = 0x3005;
const ILED_BOOST: u16 = 0x300F;
/// Time for one pulse train of both slots, with margin.
const CONVERSION_MS: u32 = 2;
/// Hold bits for slots A and B in DATA_ACCESS_CTL.
const HOLD_AB: u16 = 0x0006;
/// In the self-test the boosted LED current must raise the clean-air reading by at least
/// a quarter; a dead LED or a blocked chamber does not.
const SELF_CHECK_GAIN_NUM: u32 = 5;
const SELF_CHECK_GAIN_DEN: u32 = 4;

/// What went wrong talking to the front end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfeError<E> {
    /// The bus failed.
    Bus(E),
    /// Something answered at the address but it is not an ADPD188BI.
    WrongDevice {
        /// The id register read.
        devid: u16,
    },
}

/// The driver. See the module documentation.
#[derive(Debug)]
pub struct Adpd188<I, D> {
    i2c: I,
    delay: D,
}

impl<I: I2c, D: DelayNs> Adpd188<I, D> {
    /// Wraps the bus; call [`Adpd188::init`] before sampling.
    pub fn new(i2c: I, delay: D) -> Self {
        Adpd188 { i2c, delay }
    }

    /// The bus, e.g. to reach a simulated chip.
    pub fn bus_mut(&mut self) -> &mut I {
        &mut self.i2c
    }

    /// Gives the bus and delay back.
    pub fn release(self) -> (I, D) {
        (self.i2c, self.delay)
    }

    /// Writes one 16-bit register.
    pub fn write_reg(&mut self, reg: u8, value: u16) -> Result<(), AfeError<I::Error>> {
        let [hi, lo] = value.to_be_bytes();
        self.i2c.write(I2C_ADDRESS, &[reg, hi, lo]).map_err(AfeError::Bus)
    }

    /// Reads one 16-bit register.
    pub fn read_reg(&mut self, reg: u8) -> Result<u16, AfeError<I::Error>> {
        let mut buf = [0u8; 2];
        self.i2c.write_read(I2C_ADDRESS, &[reg], &mut buf).map_err(AfeError::Bus)?;
        Ok(u16::from_be_bytes(buf))
    }

    /// Checks the id, resets the part and programs both slots, leaving it in standby.
    pub fn init(&mut self) -> Result<(), AfeError<I::Error>> {
        let devid = self.read_reg(reg::DEVID)?;
        if devid & 0xFF != u16::from(DEVICE_ID) {
            return Err(AfeError::WrongDevice { devid });
        }
        self.write_reg(reg::SW_RESET, 0x0001)?;
        self.delay.delay_ms(1);
        self.write_reg(reg::MODE, MODE_PROGRAM)?;
        self.write_reg(reg::SLOT_EN, SLOT_EN_AB)?;
        self.write_reg(reg::PD_LED_SELECT, PD_LED_AB)?;
        self.write_reg(reg::NUM_AVG, NUM_AVG_ONE)?;
        self.write_reg(reg::ILED_IR_COARSE, ILED_NORMAL)?;
        self.write_reg(reg::ILED_BLUE_COARSE, ILED_NORMAL)?;
        self.write_reg(reg::MODE, MODE_STANDBY)
    }

    /// One one-shot measurement of both slots.
    pub fn measure(&mut self) -> Result<ChamberSample, AfeError<I::Error>> {
        self.write_reg(reg::MODE, MODE_NORMAL)?;
        self.delay.delay_ms(CONVERSION_MS);
        self.write_reg(reg::DATA_ACCESS_CTL, HOLD_AB)?;
        let ir = self.read_reg(reg::SLOT_A_DATA)?;
        let blue = self.read_reg(reg::SLOT_B_DATA)?;
        self.write_reg(reg::DATA_ACCESS_CTL, 0)?;
        self.write_reg(reg::MODE, MODE_STANDBY)?;
        Ok(ChamberSample { ir, blue })
    }

    fn set_led_current(&mut self, code: u16) -> Result<(), AfeError<I::Error>> {
        self.write_reg(reg::MODE, MODE_PROGRAM)?;
        self.write_reg(reg::ILED_IR_COARSE, code)?;
        self.write_reg(reg::ILED_BLUE_COARSE, code)?;
        self.write_reg(reg::MODE, MODE_STANDBY)
    }
}

impl<I: I2c, D: DelayNs> ChamberSensor for Adpd188<I, D> {
    type Error = AfeError<I::Error>;

    fn sample(&mut self) -> Result<ChamberSample, Self::Error> {
        self.measure()
    }

    fn self_check(&mut self) -> Result<bool, Self::Error> {
        let normal = self.measure()?;
        self.set_led_current(ILED_BOOST)?;
        let boosted = self.measure();
        // Restore the normal current even when the boosted measurement failed.
        self.set_led_current(ILED_NORMAL)?;
        let boosted = boosted?;
        let rises = |n: u16, b: u16| u32::from(b) * SELF_CHECK_GAIN_DEN >= u32::from(n) * SELF_CHECK_GAIN_NUM;
        Ok(normal.ir > 0
            && normal.blue > 0
            && rises(normal.ir, boosted.ir)
            && rises(normal.blue, boosted.blue))
    }
}

#[cfg(test)]
mod tests {
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};

    use super::*;

    fn write(reg: u8, value: u16) -> T {
        let [hi, lo] = value.to_be_bytes();
        T::write(I2C_ADDRESS, vec![reg, hi, lo])
    }

    fn read(reg: u8, value: u16) -> T {
        T::write_read(I2C_ADDRESS, vec![reg], value.to_be_bytes().to_vec())
    }

    fn measure(ir: u16, blue: u16) -> Vec<T> {
        vec![
            write(reg::MODE, 2),
            write(reg::DATA_ACCESS_CTL, 6),
            read(reg::SLOT_A_DATA, ir),
            read(reg::SLOT_B_DATA, blue),
            write(reg::DATA_ACCESS_CTL, 0),
            write(reg::MODE, 0),
        ]
    }

    fn leds(code: u16) -> Vec<T> {
        vec![
            write(reg::MODE, 1),
            write(reg::ILED_IR_COARSE, code),
            write(reg::ILED_BLUE_COARSE, code),
            write(reg::MODE, 0),
        ]
    }

    /// Runs `f` on a driver whose bus expects exactly `expected`, then checks every
    /// expectation was used.
    fn check<R>(expected: &[T], f: impl FnOnce(&mut Adpd188<Mock, NoopDelay>) -> R) -> R {
        let mut afe = Adpd188::new(Mock::new(expected), NoopDelay::new());
        let out = f(&mut afe);
        afe.release().0.done();
        out
    }

    #[test]
    fn init_checks_the_id_then_programs_both_slots() {
        let expected = [
            read(reg::DEVID, 0x0A16),
            write(reg::SW_RESET, 1),
            write(reg::MODE, 1),
            write(reg::SLOT_EN, 0x3011),
            write(reg::PD_LED_SELECT, 0x0552),
            write(reg::NUM_AVG, 0),
            write(reg::ILED_IR_COARSE, 0x3005),
            write(reg::ILED_BLUE_COARSE, 0x3005),
            write(reg::MODE, 0),
        ];
        check(&expected, |afe| afe.init()).unwrap();
    }

    #[test]
    fn init_refuses_another_part() {
        let got = check(&[read(reg::DEVID, 0x0A17)], |afe| afe.init());
        assert_eq!(got, Err(AfeError::WrongDevice { devid: 0x0A17 }));
    }

    #[test]
    fn a_sample_is_a_one_shot_measurement_of_both_slots() {
        let got = check(&measure(0x04B0, 0x0384), |afe| afe.sample()).unwrap();
        assert_eq!(got, ChamberSample { ir: 1_200, blue: 900 });
    }

    #[test]
    fn bus_errors_surface() {
        use embedded_hal::i2c::ErrorKind;
        let expected = [write(reg::MODE, 2).with_error(ErrorKind::Other)];
        let got = check(&expected, |afe| afe.sample());
        assert_eq!(got, Err(AfeError::Bus(ErrorKind::Other)));
    }

    #[test]
    fn self_check_boosts_the_leds_and_restores_them() {
        let mut expected = measure(1_200, 900);
        expected.extend(leds(0x300F));
        expected.extend(measure(2_400, 1_800));
        expected.extend(leds(0x3005));
        assert!(check(&expected, |afe| afe.self_check()).unwrap());

        let mut dead = measure(1_200, 900);
        dead.extend(leds(0x300F));
        dead.extend(measure(1_210, 905));
        dead.extend(leds(0x3005));
        assert!(!check(&dead, |afe| afe.self_check()).unwrap(), "an LED that does not respond fails");
    }
}
