//! The MQTT source: device uplinks from a broker (Mosquitto, EMQX, or the embedded one).
//!
//! - [`config`]: [`MqttConfig`], the broker and session settings.
//! - [`source`]: [`run_session`], one persistent MQTT session with manual acknowledgements.
//!
//! The gateway holds two sessions: [`Session::Alarm`] subscribes to the alarm-class kinds
//! (detector state, camera events) and [`Session::Telemetry`] to everything else. The broker
//! keeps a separate queue per session, so an alarm is never queued behind a backlog of
//! heartbeats, in the broker or in the gateway.

pub mod config;
pub mod source;
#[cfg(test)]
mod tests;

pub use config::{MqttConfig, Session};
pub use source::run_session;
