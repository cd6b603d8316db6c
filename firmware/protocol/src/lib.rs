//! The firegrid wire contract: what detectors, cameras and sensors say to the gateway over
//! MQTT, and what the gateway says back.
//!
//! This crate is `#![no_std]` and never allocates, so the detector firmware on a Cortex-M
//! and the gateway on Linux share one definition of every message. Its main types:
//!
//! - [`Topic`] builds and parses `fg/v1/{village}/{device}/{up|down}/{kind}` topics, with
//!   [`VillageId`] and [`DeviceId`] restricted to a safe alphabet.
//! - [`Uplink`] (device → gateway) carries a header (schema version, device id, boot
//!   counter, sequence number, device time) and an [`UplinkBody`]: heartbeat, detector state
//!   change, fault, camera event, camera channel health, water reading, command
//!   acknowledgement or connection status. [`Class`] says how urgently each kind travels.
//! - [`Downlink`] (gateway → device) carries a [`DownlinkBody`]: sounders, hush, self-test,
//!   heartbeat interval, thresholds, an application-level acknowledgement of an uplink, or a
//!   step of an over-the-air firmware update ([`firmware`]).
//! - [`auth`]: every uplink and downlink carries an HMAC-SHA-256 tag under the device's own
//!   [`DeviceKey`]; [`Uplink::verify`] and [`DownlinkGuard`] check them.
//! - [`Encoding`] selects JSON (interoperable, what third-party devices send) or the compact
//!   binary encoding for battery devices on NB-IoT; both are produced from the same serde
//!   derives. [`Encoding::detect`] tells them apart from the first byte.
//! - [`Limits`] and the `validate` methods turn a decoded message into a checked one or a
//!   typed [`Error`] whose [`Error::reason`] is a stable label for metrics.
//!
//! The README next to this crate documents every message field by field; it is the contract
//! a third-party device vendor implements.
#![cfg_attr(not(test), no_std)]

pub mod auth;
mod codec;
mod downlink;
mod error;
pub mod firmware;
mod id;
mod topic;
mod uplink;
mod validate;

pub use auth::{AuthError, DeviceKey, DownlinkAuth, DownlinkGuard, KeyError, Tag};
pub use codec::{Encoding, MAX_PAYLOAD};
pub use downlink::{Downlink, DownlinkBody, DownlinkKind};
pub use error::{EncodeError, Error, IdError, TopicError};
pub use firmware::{FirmwareChunk, FirmwareOffer, FirmwareStatus, MAX_CHUNK, UpdateError, UpdateState};
pub use id::{DeviceId, ID_MAX_LEN, VillageId, check_id};
pub use topic::{Direction, MAX_TOPIC_LEN, Topic, TopicBuf, TopicKind, downlink_filter, uplink_filter};
pub use uplink::{
    AckResult, BootAnnouncement, CameraEvent, CameraEventKind, CameraHealth, ChannelStatus, Class,
    CommandAck, DetectorState, Fault, FaultKind, FirmwareVersion, Heartbeat, SnapshotRef, StateChange,
    Status, Uplink, UplinkBody, UplinkKind, WaterReading,
};
pub use validate::{ClockSkew, Limits};

/// The schema version this crate writes into every message, and the newest it accepts.
///
/// Version 1 is the first published contract; version 2 appends the authentication tag
/// (`mac` on uplinks, `auth` on downlinks) and the `boot` / `challenge` kinds. A decoder
/// accepts every version from 1 up to this one (a version-1 message decodes with no tag);
/// newer versions are rejected with [`Error::UnsupportedVersion`] so that a gateway never
/// half-understands a message from firmware newer than itself.
pub const SCHEMA_VERSION: u8 = 2;

#[cfg(test)]
mod tests;
