//! Real servers for firegrid's integration tests and benchmarks.
//!
//! Each of [`Mosquitto`] (MQTT broker), [`InfluxDb1`] (InfluxDB 1.x), [`VictoriaMetrics`] and
//! [`Postgres`] (PostgreSQL, also as a streaming standby of another) starts the
//! Debian-packaged server as a child process on free 127.0.0.1 port(s) with its own temp dir
//! for config, data and log, waits until it answers, and stops it when dropped, even
//! when the test panics. `restart()` brings it back on the same port with the same data, so a
//! test can check what survives; `kill()` simulates a crash. They share one supervision core,
//! [`ServerProcess`], which any other server can use by implementing [`ServerKind`].
//!
//! Every fallible call returns [`Result`]; [`Error`]'s messages (also through `Debug`, i.e. in
//! `.unwrap()`) quote the tail of the server's log on a failed start, and a missing binary
//! fails with the `apt-get install` command that provides it. The servers' API is blocking
//! (it works inside tokio tests too). Nothing uses fixed ports or shared directories, so tests
//! can run in parallel, in threads (`cargo test`) or processes (`cargo nextest`).
//!
//! Around the servers: [`Firegrid`] runs the gateway binary the same way; [`WebhookReceiver`]
//! records the notifications it sends; [`officers`] writes a duty-officer directory and calls
//! the officer API; [`watch_uplinks`] and [`ack_uplinks`] subscribe to the devices' uplinks
//! (the first only watching, the second answering as the gateway would); [`Publisher`]
//! publishes for many devices and counts the broker's acknowledgements; [`FakeClock`] steps
//! a child process's wall clock through libfaketime; [`chaos`] runs all of their faults at
//! once against a village and checks that no alarm was lost, late or paged twice.
//!
//! ```no_run
//! let broker = firegrid_tests::Mosquitto::start().unwrap();
//! println!("broker at {}:{}", broker.host(), broker.port());
//! ```

pub mod acker;
pub mod browser;
pub mod chaos;
mod error;
pub mod faketime;
pub mod firegrid;
mod http;
pub mod influxdb;
pub mod mosquitto;
pub mod nginx;
pub mod officers;
pub mod ota;
pub mod ota_coap;
pub mod ota_mqtt;
pub mod postgres;
pub mod process;
pub mod publisher;
pub mod pymodbus;
pub mod small_disk;
pub mod uplinks;
pub mod victoria;
pub mod webhook;

pub use acker::ack_uplinks;
pub use error::{Error, Result};
pub use faketime::FakeClock;
pub use firegrid::{Firegrid, firegrid_binary};
pub use influxdb::{InfluxDb1, InfluxSeries};
pub use mosquitto::Mosquitto;
pub use postgres::{Postgres, PostgresTls};
pub use process::{Binary, ServerKind, ServerProcess, free_port, free_ports};
pub use publisher::{Publisher, publish_all};
pub use pymodbus::{Pymodbus, SimRegisters, SimValue};
pub use small_disk::SmallDisk;
pub use uplinks::watch_uplinks;
pub use victoria::{VictoriaMetrics, VmSeries};
pub use webhook::WebhookReceiver;
