//! What the values of a device mean: the reading to report and the conditions it raises or
//! clears. A state machine per device that takes decoded values (or a failed poll) and the
//! current time, and returns events. Pure: no clock, no I/O.

use firegrid_protocol::{DeviceId, WaterReading};

use super::config::{DeviceConfig, Measure, PointConfig};

/// A condition a Modbus device can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Condition {
    /// Sprinkler or hydrant pipe pressure below its threshold.
    LowPressure,
    /// Fire water tank level below its threshold.
    LowLevel,
    /// The device does not answer, or reports a physically impossible value: whatever it
    /// measures is unknown until it clears.
    SensorFault,
}

/// A condition raised (`active`) or cleared.
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionEvent {
    /// The device.
    pub device: DeviceId,
    /// Which condition.
    pub condition: Condition,
    /// `true` when raised, `false` when cleared.
    pub active: bool,
    /// The engineering value behind the change; `None` for a sensor fault raised because
    /// the device stopped answering.
    pub value: Option<f64>,
    /// When it changed (Unix ms, the `now_ms` given).
    pub ts_ms: u64,
}

/// The values of one successful poll, as far as they are physically possible.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The device.
    pub device: DeviceId,
    /// When the poll completed (Unix ms).
    pub ts_ms: u64,
    /// Pressure and level, the same reading an MQTT water sensor sends; `None` when the
    /// device measures neither or both are out of range.
    pub water: Option<WaterReading>,
    /// Other named values, in point order.
    pub other: Vec<(String, f64)>,
}

/// What one successful poll produced.
#[derive(Debug, Clone, PartialEq)]
pub struct PollOutcome {
    /// The reading.
    pub reading: Reading,
    /// Conditions raised or cleared by it, sensor fault first.
    pub conditions: Vec<ConditionEvent>,
}

/// The condition state of one device.
#[derive(Debug, Clone)]
pub struct DeviceMonitor {
    device: DeviceId,
    points: Vec<PointConfig>,
    fault_after_failures: u32,
    failures: u32,
    low_pressure: bool,
    low_level: bool,
    sensor_fault: bool,
}

impl DeviceMonitor {
    /// A monitor for `device` with no condition active.
    pub fn new(device: &DeviceConfig) -> Self {
        DeviceMonitor {
            device: device.id.clone(),
            points: device.points.clone(),
            fault_after_failures: device.fault_after_failures,
            failures: 0,
            low_pressure: false,
            low_level: false,
            sensor_fault: false,
        }
    }

    /// Consecutive failed polls so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether `condition` is active.
    pub fn is_active(&self, condition: Condition) -> bool {
        match condition {
            Condition::LowPressure => self.low_pressure,
            Condition::LowLevel => self.low_level,
            Condition::SensorFault => self.sensor_fault,
        }
    }

    /// A poll that failed (no connection, timeout, exception response). The device is in
    /// sensor fault from the `fault_after_failures`-th failure in a row on; low conditions
    /// keep their state, since nothing new is known about the value.
    pub fn poll_failed(&mut self, now_ms: u64) -> Vec<ConditionEvent> {
        self.failures = self.failures.saturating_add(1);
        if self.failures >= self.fault_after_failures && !self.sensor_fault {
            self.sensor_fault = true;
            return vec![self.event(Condition::SensorFault, true, None, now_ms)];
        }
        Vec::new()
    }

    /// A poll that returned `values` (engineering values in point order).
    ///
    /// A value outside its point's physical range (or not a number) raises sensor fault and
    /// is left out of the reading; it does not judge the low thresholds either, because a
    /// broken transmitter reading -0.1 MPa says nothing about the pipe. The fault clears on
    /// the first poll in which every value is possible.
    pub fn poll_ok(&mut self, values: &[f64], now_ms: u64) -> PollOutcome {
        self.failures = 0;
        let mut conditions = Vec::new();
        let mut water = WaterReading { pressure_mpa: None, level_m: None };
        let mut other = Vec::new();
        let mut impossible = None;
        let mut lows = Vec::new();
        for (point, &value) in self.points.iter().zip(values) {
            let possible =
                value.is_finite() && point.range().is_none_or(|(min, max)| (min..=max).contains(&value));
            if !possible {
                impossible.get_or_insert(value);
                continue;
            }
            match &point.measures {
                Measure::PressureMpa => water.pressure_mpa = Some(value as f32),
                Measure::LevelM => water.level_m = Some(value as f32),
                Measure::Other(name) => other.push((name.clone(), value)),
            }
            if let Some(low) = point.low {
                let condition = if point.measures == Measure::PressureMpa {
                    Condition::LowPressure
                } else {
                    Condition::LowLevel
                };
                lows.push((condition, value, low, point.deadband));
            }
        }
        match (impossible, self.sensor_fault) {
            (Some(value), false) => {
                self.sensor_fault = true;
                conditions.push(self.event(Condition::SensorFault, true, Some(value), now_ms));
            }
            (None, true) => {
                self.sensor_fault = false;
                conditions.push(self.event(Condition::SensorFault, false, None, now_ms));
            }
            _ => {}
        }
        for (condition, value, low, deadband) in lows {
            let active = self.is_active(condition);
            // Raise strictly below the threshold, clear only at threshold + deadband: inside
            // the band the condition keeps whatever state it has.
            let next = if active { value < low + deadband } else { value < low };
            if next != active {
                match condition {
                    Condition::LowPressure => self.low_pressure = next,
                    _ => self.low_level = next,
                }
                conditions.push(self.event(condition, next, Some(value), now_ms));
            }
        }
        let water = (water.pressure_mpa.is_some() || water.level_m.is_some()).then_some(water);
        PollOutcome {
            reading: Reading { device: self.device.clone(), ts_ms: now_ms, water, other },
            conditions,
        }
    }

    fn event(&self, condition: Condition, active: bool, value: Option<f64>, ts_ms: u64) -> ConditionEvent {
        ConditionEvent { device: self.device.clone(), condition, active, value, ts_ms }
    }
}
