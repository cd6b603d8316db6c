//! Configuration of the Modbus source: which devices to poll, how, and what their registers
//! mean.
//!
//! ```toml
//! [[devices]]
//! id = "b12-riser"
//! transport = "tcp"
//! address = "192.0.2.10:502"
//! unit = 1
//! poll_interval = "5s"
//! timeout = "1s"
//!
//! [[devices.points]]
//! name = "pressure"
//! register = "holding"
//! address = 0
//! type = "f32"
//! word_order = "cdab"
//! unit = "MPa"
//! measures = "pressure_mpa"
//! low = 0.15
//! deadband = 0.02
//! ```

use std::collections::HashSet;
use std::time::Duration;

use firegrid_protocol::DeviceId;
use serde::{Deserialize, Deserializer};

/// Every Modbus device the gateway polls.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(try_from = "RawModbus")]
pub struct ModbusConfig {
    /// The devices, each polled by its own task.
    pub devices: Vec<DeviceConfig>,
}

/// One polled device: a pressure transmitter, a tank level sensor, or a controller that
/// exposes several of them.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceConfig {
    /// Device id, from the same namespace as MQTT devices so both join one registry.
    pub id: DeviceId,
    /// How to reach it.
    pub transport: Transport,
    /// Time between the starts of two polls while the device answers.
    pub poll_interval: Duration,
    /// Time limit for connecting and for each request.
    pub timeout: Duration,
    /// Longest wait between attempts while the device does not answer.
    pub max_backoff: Duration,
    /// Consecutive failed polls after which the device is in sensor fault.
    pub fault_after_failures: u32,
    /// The values read on every poll.
    pub points: Vec<PointConfig>,
}

/// How a device is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Modbus TCP (also a TCP-to-RS-485 gateway in front of serial devices).
    Tcp {
        /// `host:port`, e.g. `192.0.2.10:502`.
        address: String,
        /// Unit identifier (slave id) the requests carry; 1 for most direct TCP devices,
        /// the serial address behind a gateway.
        unit: u8,
    },
    /// Modbus RTU on a local serial port (RS-485 adapter).
    Rtu {
        /// Serial device, e.g. `/dev/ttyUSB0`.
        path: String,
        /// Line speed in baud.
        baud: u32,
        /// Parity bit.
        parity: Parity,
        /// Stop bits (1 or 2).
        stop_bits: u8,
        /// Slave address on the bus (1 to 247).
        unit: u8,
    },
}

/// Serial parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    /// No parity bit.
    None,
    /// Even parity: the Modbus serial-line default.
    Even,
    /// Odd parity.
    Odd,
}

/// Which register table a point is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegisterKind {
    /// Holding registers (function code 3): read/write, where most transmitters put values.
    Holding,
    /// Input registers (function code 4): read-only measurements.
    Input,
}

/// How the registers of a point encode its raw value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    /// Unsigned 16-bit integer, one register.
    U16,
    /// Signed 16-bit integer (two's complement), one register.
    I16,
    /// Unsigned 32-bit integer, two registers.
    U32,
    /// Signed 32-bit integer, two registers.
    I32,
    /// IEEE 754 single precision, two registers.
    F32,
}

impl DataType {
    /// Registers one value occupies.
    pub fn registers(self) -> u16 {
        match self {
            DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
        }
    }
}

/// Order of the two registers of a 32-bit value. Bytes within a register are always
/// big-endian, as the Modbus specification requires; the register order is not specified,
/// and vendors differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WordOrder {
    /// High word first (`ABCD`): the first register holds the most significant half.
    #[default]
    #[serde(alias = "abcd")]
    Big,
    /// Low word first (`CDAB`), common on PLCs that store words little-endian.
    #[serde(alias = "cdab")]
    Little,
}

/// What a point measures.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Measure {
    /// Pipe pressure in MPa: [`firegrid_protocol::WaterReading::pressure_mpa`].
    PressureMpa,
    /// Tank level in metres: [`firegrid_protocol::WaterReading::level_m`].
    LevelM,
    /// Any other value, reported under this name (e.g. `flow_m3h`, `pump_current_a`).
    Other(String),
}

impl<'de> Deserialize<'de> for Measure {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        match name.as_str() {
            "pressure_mpa" => Ok(Measure::PressureMpa),
            "level_m" => Ok(Measure::LevelM),
            other => match firegrid_protocol::check_id(other) {
                Ok(()) => Ok(Measure::Other(name)),
                Err(e) => Err(serde::de::Error::custom(format!("measures {name:?}: {e}"))),
            },
        }
    }
}

/// Physical range of a pressure reading in MPa, the same bounds `firegrid-protocol`
/// validates MQTT water readings against: sprinkler and hydrant systems stay below 2.5 MPa,
/// and a transmitter never reads below zero gauge pressure unless it is broken.
pub const PRESSURE_RANGE_MPA: (f64, f64) = (0.0, 10.0);

/// Physical range of a tank level in metres (also `firegrid-protocol`'s bound).
pub const LEVEL_RANGE_M: (f64, f64) = (0.0, 100.0);

/// One value read from a device.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointConfig {
    /// Name of the point, unique within the device (`A-Z a-z 0-9 . _ -`).
    pub name: String,
    /// Register table: `holding` or `input`.
    pub register: RegisterKind,
    /// Protocol address of the first register, starting at 0 (the "40001" of a vendor
    /// manual is address 0 of the holding registers).
    pub address: u16,
    /// `u16`, `i16`, `u32`, `i32` or `f32`.
    #[serde(rename = "type")]
    pub data_type: DataType,
    /// Register order of 32-bit types: `big` (alias `abcd`, the default) or `little`
    /// (alias `cdab`).
    #[serde(default)]
    pub word_order: WordOrder,
    /// Engineering value = raw value × `scale` + `offset`; e.g. 0.001 for a transmitter that
    /// reports kPa as an integer and a point that measures MPa.
    #[serde(default = "one")]
    pub scale: f64,
    /// Added after scaling, e.g. to correct a sensor mounted above the tank floor.
    #[serde(default)]
    pub offset: f64,
    /// Unit of the engineering value, for people and dashboards (e.g. `MPa`, `m`).
    #[serde(default)]
    pub unit: String,
    /// `pressure_mpa`, `level_m`, or any other name for a value reported as is.
    pub measures: Measure,
    /// Raise low pressure (for `pressure_mpa`) or low level (for `level_m`) when the value
    /// falls below this.
    #[serde(default)]
    pub low: Option<f64>,
    /// The low condition clears only once the value is back at `low + deadband` or above,
    /// so a value hovering at the threshold does not raise and clear it on every poll.
    #[serde(default)]
    pub deadband: f64,
    /// `[min, max]`: a value outside is physically impossible and raises sensor fault
    /// instead of being reported. Defaults to 0–10 MPa for pressure and 0–100 m for
    /// level, none for other values.
    #[serde(default)]
    pub valid_range: Option<[f64; 2]>,
}

fn one() -> f64 {
    1.0
}

impl PointConfig {
    /// The physical range configured or implied by what the point measures.
    pub fn range(&self) -> Option<(f64, f64)> {
        match (self.valid_range, &self.measures) {
            (Some([min, max]), _) => Some((min, max)),
            (None, Measure::PressureMpa) => Some(PRESSURE_RANGE_MPA),
            (None, Measure::LevelM) => Some(LEVEL_RANGE_M),
            (None, Measure::Other(_)) => None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModbus {
    /// The polled devices. Each is checked as it is read, so an error points at its table.
    #[serde(default)]
    devices: Vec<DeviceConfig>,
}

/// A device as written in the configuration file: one flat table, checked and turned into a
/// [`DeviceConfig`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    /// Device id (`A-Z a-z 0-9 . _ -`, at most 32 bytes), unique among all devices.
    id: String,
    /// `tcp` or `rtu`.
    transport: TransportKind,
    /// tcp: `host:port` of the device or of a TCP-to-serial gateway.
    address: Option<String>,
    /// Unit identifier (tcp, default 1) or slave address (rtu, required).
    unit: Option<u8>,
    /// rtu: serial device path, e.g. `/dev/ttyUSB0`.
    path: Option<String>,
    /// rtu: line speed in baud (default 9600).
    baud: Option<u32>,
    /// rtu: `none`, `even` (default, as the Modbus serial-line specification says) or `odd`.
    parity: Option<Parity>,
    /// rtu: stop bits; default 1 with parity and 2 without, as the Modbus serial-line
    /// specification requires to keep the character 11 bits long.
    stop_bits: Option<u8>,
    /// Time between the starts of two polls while the device answers. Water pressure and
    /// tank level change over minutes; 5 s sees a pump failure quickly without loading a
    /// shared RS-485 bus.
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    poll_interval: Duration,
    /// Time limit for connecting and for each request. tokio-modbus has none of its own, so
    /// without it a device that accepts the connection and never answers would stall the
    /// poll forever.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    timeout: Duration,
    /// Longest wait between attempts while the device does not answer; the wait starts at
    /// `poll_interval` and doubles, with jitter, up to this.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    max_backoff: Duration,
    /// Consecutive failed polls after which the device is in sensor fault. Three rides out a
    /// single lost frame or a device reboot without hiding a dead sensor for long.
    #[serde(default = "default_fault_after")]
    fault_after_failures: u32,
    /// The values read on every poll.
    points: Vec<PointConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum TransportKind {
    Tcp,
    Rtu,
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(60)
}
fn default_fault_after() -> u32 {
    3
}

/// Most registers one read may ask for (Modbus application protocol §6.3).
pub const MAX_READ_REGISTERS: u16 = 125;

impl TryFrom<RawModbus> for ModbusConfig {
    type Error = String;

    fn try_from(raw: RawModbus) -> Result<Self, String> {
        let mut ids = HashSet::new();
        let mut serial_paths = HashSet::new();
        let mut devices = Vec::with_capacity(raw.devices.len());
        for device in raw.devices {
            if !ids.insert(device.id.clone()) {
                return Err(format!("device {:?} is configured twice", device.id.as_str()));
            }
            // One task per device owns its connection. Two devices on one serial port would
            // open it twice and garble each other's frames; a shared RS-485 bus needs one
            // poller per port, which this source does not have yet.
            if let Transport::Rtu { path, .. } = &device.transport
                && !serial_paths.insert(path.clone())
            {
                return Err(format!(
                    "device {:?}: serial port {path:?} is already used by another device",
                    device.id.as_str()
                ));
            }
            devices.push(device);
        }
        Ok(ModbusConfig { devices })
    }
}

impl TryFrom<RawDevice> for DeviceConfig {
    type Error = String;

    fn try_from(raw: RawDevice) -> Result<Self, String> {
        let id = DeviceId::new(&raw.id).map_err(|e| format!("device id {:?}: {e}", raw.id))?;
        let name = raw.id.as_str();
        let misplaced = |kind: &str, fields: &[(&str, bool)]| match fields.iter().find(|(_, set)| *set) {
            Some((field, _)) => {
                Err(format!("device {name:?}: `{field}` does not apply to transport = \"{kind}\""))
            }
            None => Ok(()),
        };
        let transport = match raw.transport {
            TransportKind::Tcp => {
                misplaced(
                    "tcp",
                    &[
                        ("path", raw.path.is_some()),
                        ("baud", raw.baud.is_some()),
                        ("parity", raw.parity.is_some()),
                        ("stop_bits", raw.stop_bits.is_some()),
                    ],
                )?;
                let address = raw
                    .address
                    .ok_or_else(|| format!("device {name:?}: transport = \"tcp\" needs `address`"))?;
                match address.rsplit_once(':') {
                    Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
                    _ => return Err(format!("device {name:?}: address {address:?} is not `host:port`")),
                }
                Transport::Tcp { address, unit: raw.unit.unwrap_or(1) }
            }
            TransportKind::Rtu => {
                misplaced("rtu", &[("address", raw.address.is_some())])?;
                let path =
                    raw.path.ok_or_else(|| format!("device {name:?}: transport = \"rtu\" needs `path`"))?;
                let unit =
                    raw.unit.ok_or_else(|| format!("device {name:?}: transport = \"rtu\" needs `unit`"))?;
                if !(1..=247).contains(&unit) {
                    return Err(format!("device {name:?}: unit {unit} is not a slave address (1 to 247)"));
                }
                let parity = raw.parity.unwrap_or(Parity::Even);
                let stop_bits = raw.stop_bits.unwrap_or(if parity == Parity::None { 2 } else { 1 });
                if !matches!(stop_bits, 1 | 2) {
                    return Err(format!("device {name:?}: stop_bits must be 1 or 2"));
                }
                let baud = raw.baud.unwrap_or(9600);
                if baud == 0 {
                    return Err(format!("device {name:?}: baud must be positive"));
                }
                Transport::Rtu { path, baud, parity, stop_bits, unit }
            }
        };
        if raw.poll_interval.is_zero() || raw.timeout.is_zero() {
            return Err(format!("device {name:?}: poll_interval and timeout must be positive"));
        }
        if raw.fault_after_failures == 0 {
            return Err(format!("device {name:?}: fault_after_failures must be at least 1"));
        }
        if raw.points.is_empty() {
            return Err(format!("device {name:?}: no points configured"));
        }
        let mut names = HashSet::new();
        let (mut pressure, mut level) = (0, 0);
        for point in &raw.points {
            let at = |what: String| format!("device {name:?} point {:?}: {what}", point.name);
            firegrid_protocol::check_id(&point.name).map_err(|e| at(format!("name: {e}")))?;
            if !names.insert(point.name.as_str()) {
                return Err(at("name used twice".into()));
            }
            if u32::from(point.address) + u32::from(point.data_type.registers()) > 0x1_0000 {
                return Err(at("registers run past address 65535".into()));
            }
            if !point.scale.is_finite() || point.scale == 0.0 || !point.offset.is_finite() {
                return Err(at("scale must be finite and non-zero, offset finite".into()));
            }
            match point.measures {
                Measure::PressureMpa => pressure += 1,
                Measure::LevelM => level += 1,
                Measure::Other(_) => {
                    if point.low.is_some() {
                        return Err(at("`low` applies only to pressure_mpa and level_m".into()));
                    }
                }
            }
            if point.low.is_some_and(|low| !low.is_finite())
                || !point.deadband.is_finite()
                || point.deadband < 0.0
            {
                return Err(at("low must be finite and deadband finite and not negative".into()));
            }
            if let Some([min, max]) = point.valid_range
                && !(min.is_finite() && max.is_finite() && min < max)
            {
                return Err(at("valid_range must be [min, max] with min < max".into()));
            }
        }
        // A water reading holds one pressure and one level; a second point of either would
        // have nowhere to go. Use a second device id for a second transmitter.
        if pressure > 1 || level > 1 {
            return Err(format!(
                "device {name:?}: at most one pressure_mpa and one level_m point per device"
            ));
        }
        Ok(DeviceConfig {
            id,
            transport,
            poll_interval: raw.poll_interval,
            timeout: raw.timeout,
            max_backoff: raw.max_backoff.max(raw.poll_interval),
            fault_after_failures: raw.fault_after_failures,
            points: raw.points,
        })
    }
}

impl<'de> Deserialize<'de> for DeviceConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawDevice::deserialize(deserializer)?;
        DeviceConfig::try_from(raw).map_err(serde::de::Error::custom)
    }
}
