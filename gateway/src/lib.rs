//! The firegrid edge gateway: ingests device messages over MQTT (and Modbus), writes time
//! series to InfluxDB, and composes the alarm loop whose crates live under `alerting/`
//! (the engine, `firegrid-cases`, `firegrid-notify`, `firegrid-officers`): [`alarm`] starts
//! it and feeds it device signals, [`device_api`] adds the officer API's device routes.
//!
//! Main types: [`runtime::Gateway`] starts and stops everything from a [`config::Config`];
//! [`ingest::Ingest`] takes device messages from the [`sources::mqtt`] sessions through
//! checks ([`uplink::accept`], [`admission`]) into the durable [`spool::Spool`], which the
//! [`sinks::influx`] destinations drain into InfluxDB as [`series::Point`]s.

// The deadline clock, retry backoff, store health and glossary live in `alerting/base`, below
// both the alarm loop and the gateway; the gateway's parts name them as its own modules.
pub use firegrid_base::{clock, durability, glossary, retry};

pub mod admission;
pub mod alarm;
pub mod broker;
pub mod config;
pub mod demo;
pub mod device_api;
pub mod firmware;
pub mod fleet;
pub mod http;
pub mod ingest;
pub mod keys;
pub mod liveness;
pub mod metrics;
pub mod registry;
pub mod runtime;
pub mod series;
pub mod sinks;
pub mod site;
pub mod sources;
pub mod spool;
pub mod tls;
pub mod uplink;
