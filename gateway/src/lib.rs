//! The firegrid edge gateway: ingests device messages over MQTT (and Modbus), runs the
//! alarm loop of `firegrid-alerting`, and writes time series to InfluxDB.
//!
//! Main entry points so far: [`uplink::accept`], which turns an MQTT topic and payload into
//! a checked [`firegrid_protocol::Uplink`] or the one reason it is rejected.

pub mod series;
pub mod sinks;
pub mod spool;
pub mod uplink;
