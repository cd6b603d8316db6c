//! A village in a box: the firegrid fleet simulator.
//!
//! Main types: [`village::Village`] (streets, communities, grids, buildings with coordinates
//! and their devices, generated from [`village::VillageParams`] with a seed and written as the
//! gateway's registry CSV), [`scenario::Scenario`] (what happens, as data), [`fleet::Fleet`]
//! (every detector is the `firegrid-detector` firmware core on a simulated ADPD188 front end
//! whose room follows the scenario's physics; messages leave only through the firmware's own
//! outbox and pump), [`transport::Transport`] (direct or carrier-platform MQTT) and
//! [`runner::run`] (simulated time at any speed). Camera channels run through the real camera
//! agent (`firegrid-camera`) fed with the vendor's own stream format ([`cameras::Cameras`]).
//! Devices listed in a provisioning file ([`keys::Keys`], the file `firegrid devices
//! provision` writes) carry their key: they sign every uplink and admit only authenticated
//! downlinks, because the firmware core does. Water sensors answer the gateway's Modbus TCP polls from a simulated pump-room gateway
//! ([`water::WaterSensors`]), which also writes the gateway's `[modbus]` section.
//!
//! The simulator never publishes for a working device itself: sequence numbers, priorities
//! and retransmission until the gateway acknowledges are the firmware's. Only devices with
//! "bad firmware" in the scenario publish malformed messages directly.

pub mod cameras;
pub mod fleet;
pub mod keys;
pub mod runner;
pub mod scenario;
pub mod transport;
pub mod village;
pub mod water;

pub use fleet::Fleet;
pub use keys::{Keys, KeysError};
pub use runner::{Report, RunConfig, run};
pub use scenario::Scenario;
pub use transport::Mode;
pub use village::{Village, VillageParams, VillageShape};
pub use water::WaterSensors;
