//! The InfluxDB sink: drains the spool into InfluxDB 1.x (`/write`) or InfluxDB 2.x/3.x and
//! compatible servers (`/api/v2/write` through the `influxdb2` crate), one independent reader
//! per configured destination.
//!
//! - [`config`]: [`DestinationConfig`], what each destination needs.
//! - [`mod@classify`]: the pure policy turning a write's outcome into the next step.
//! - [`service`]: [`LineWriter`] and its two HTTP implementations, with the timeouts and
//!   status handling the `influxdb2` crate lacks.
//! - [`sink`]: [`run_destination`], the drain loop with batching, retries and dead letters.

pub mod classify;
pub mod config;
pub mod service;
pub mod sink;
#[cfg(test)]
mod tests;

pub use classify::{Next, WriteFailure, classify};
pub use config::{DestinationConfig, DestinationKind};
pub use service::{LineWriter, V1Writer, V2Writer, writer_for};
pub use sink::{DestinationStats, Signals, run_destination};
