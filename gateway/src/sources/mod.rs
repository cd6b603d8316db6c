//! Where device data comes from, one folder per source.

pub mod modbus;
pub mod mqtt;
