//! The Modbus source: polls water-pressure transmitters and tank level sensors over Modbus
//! TCP or RTU and turns their registers into water readings and conditions.
//!
//! - [`config`]: [`ModbusConfig`], the devices with their transport and [`PointConfig`]s
//!   (register table, address, data type, word order, scale, thresholds).
//! - [`registers`] (pure): [`plan_reads`] batches touching points into one request,
//!   [`decode`] turns words into values for every data type and word order.
//! - [`conditions`] (pure): [`DeviceMonitor`], the per-device state machine that takes values
//!   or a failed poll and the current time and returns a [`Reading`] and
//!   [`ConditionEvent`]s: low pressure, low level (each with a deadband) and sensor fault.
//! - [`source`] (I/O): [`run`] spawns one task per device that polls with a timeout on every
//!   request, reconnects with exponential backoff and jitter, and sends [`ModbusEvent`]s;
//!   [`ModbusStats`] holds its counters for `/metrics`.

pub mod conditions;
pub mod config;
pub mod registers;
pub mod source;

pub use conditions::{Condition, ConditionEvent, DeviceMonitor, PollOutcome, Reading};
pub use config::{
    DataType, DeviceConfig, Measure, ModbusConfig, Parity, PointConfig, RegisterKind, Transport, WordOrder,
};
pub use registers::{Read, decode, decode_reads, encode, plan_reads};
pub use source::{DeviceStats, ModbusEvent, ModbusStats, run, run_device};

#[cfg(test)]
mod tests;
