//! The firegrid smoke detector firmware core: `#![no_std]`, no allocator, no clock, no I/O
//! of its own.
//!
//! Its main types:
//!
//! - [`Detector`] turns chamber samples into smoke judgements: clean-air baseline with
//!   bounded drift compensation, pre-alarm and alarm thresholds in dB/m, confirmation over
//!   consecutive samples, a fast-rise path for flaming fires, a slow-smoulder path and a
//!   dual-wavelength nuisance gate that delays an alarm and raises its level to UL 217's
//!   cooking criterion, but never holds back heavy smoke.
//! - [`Device`] is the detector's state machine (standby, pre-alarm, alarm, hush,
//!   self-test, drill, faults). It takes samples, button presses, tamper changes, battery
//!   readings and downlink commands **together with the current time** and answers with
//!   what the sounder and LED must do ([`Sound`]) and which messages to send.
//! - [`Outbox`] holds the uplinks ([`firegrid_protocol::Uplink`]): alarms and events until
//!   the gateway acknowledges them (retransmitted), telemetry until it is handed to the link;
//!   alarm class first, bounded, shedding the oldest telemetry (never an alarm) when full.
//! - [`link::Uplink`] is the transport seam; [`mqtt::MqttUplink`] implements it on minimq
//!   over `embedded-nal`, and [`link::pump`] moves messages between outbox, transport and
//!   device.
//! - [`journal`] keeps the alarm- and event-class part of the outbox in NOR flash
//!   ([`journal::FlashJournal`], on sequential-storage) from before its first transmission
//!   until the gateway's `ack`, so a reset loses none of it; [`link::pump_journaled`] keeps
//!   it up to date and [`journal::restore`] reloads it at boot.
//! - [`drivers`] holds the embedded-hal 1.0 drivers: the [`drivers::Adpd188`] chamber front
//!   end behind [`drivers::ChamberSensor`], the [`drivers::Indicators`] (sounder and LED),
//!   the [`drivers::Inputs`] (test button and base tamper switch), the
//!   [`drivers::LoadedBattery`] probe and [`drivers::run_self_test`].
//! - [`Identity`] names the device on the wire (village, id, boot counter) and holds its
//!   optional [`firegrid_protocol::DeviceKey`]: with one, every uplink is signed when queued
//!   and every downlink is authenticated before it is looked at; refusals are counted in
//!   [`Refusals`] ([`trust`]).
//! - [`update`] receives over-the-air firmware updates: [`update::Updater`] writes the
//!   authenticated chunks into the DFU slot, resumes after a reset, checks the SHA-256 and
//!   requests embassy-boot's swap; the bootloader ([`firegrid_boot`]) verifies the Ed25519
//!   signature. A new image on trial marks itself good after its self-test and the gateway's
//!   `fw_confirm`. [`link::pump_updating`] feeds it.
//! - [`scenario`] generates the sensor traces of the detection contract from documented
//!   physical models and runs the device over them, on the host and on the Cortex-M3 image
//!   alike.
//!
//! Logging goes through `defmt` (feature `defmt`), `log` (feature `log`) or nowhere.
#![cfg_attr(not(test), no_std)]

mod fmt;

pub mod config;
pub mod detect;
pub mod device;
pub mod drivers;
pub mod journal;
pub mod link;
pub mod mqtt;
pub mod outbox;
pub mod scenario;
pub mod sound;
pub mod trust;
pub mod update;

pub use config::{Calibration, Config};
pub use detect::{Cause, Detector, Judgement};
pub use device::{Device, Identity, Mode, Press, SelfTestResult};
pub use outbox::Outbox;
pub use sound::Sound;
pub use trust::Refusals;

/// Firmware version reported in heartbeats.
pub const FIRMWARE_VERSION: &str = env!("CARGO_PKG_VERSION");
