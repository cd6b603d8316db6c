//! Where device data comes from, one folder per source.

pub mod coap;
pub mod modbus;
pub mod mqtt;
