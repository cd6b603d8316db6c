//! The firegrid edge gateway: ingests device messages over MQTT (and Modbus), runs the
//! alarm loop of `firegrid-alerting`, and writes time series to InfluxDB.
//!
//! Main types: [`runtime::Gateway`] starts and stops everything from a [`config::Config`];
//! [`ingest::Ingest`] takes device messages from the [`sources::mqtt`] sessions through
//! checks ([`uplink::accept`], [`admission`]) into the durable [`spool::Spool`], which the
//! [`sinks::influx`] destinations drain into InfluxDB as [`series::Point`]s.

pub mod admission;
pub mod api;
pub mod broker;
pub mod cases;
pub mod clock;
pub mod config;
pub mod console;
pub mod demo;
pub mod durability;
pub mod firmware;
pub mod fleet;
pub mod glossary;
pub mod http;
pub mod ingest;
pub mod keys;
pub mod liveness;
pub mod metrics;
pub mod notify;
pub mod officers;
pub mod registry;
pub mod retry;
pub mod runtime;
pub mod series;
pub mod sinks;
pub mod site;
pub mod sources;
pub mod spool;
pub mod tls;
pub mod uplink;
