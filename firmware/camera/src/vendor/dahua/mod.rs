//! Dahua (and the OEM brands on its firmware): `GET
//! /cgi-bin/eventManager.cgi?action=attach&codes=[All]&heartbeat=N` answers with an endless
//! `multipart/x-mixed-replace; boundary=myboundary` body of `text/plain` parts, each either
//! `Heartbeat` (every `N` seconds) or `Code=SmokeDetection;action=Start;index=0;data={...}`.
//!
//! Unlike Hikvision, Dahua sends a condition once at `Start` and once at `Stop`, so its events
//! are not held open by repetition.

mod generate;
mod parse;
#[cfg(test)]
mod tests;

pub use generate::{BOUNDARY, encode};
pub use parse::{DahuaParser, parse_body};

/// The event stream's path on the camera, without the heartbeat parameter.
pub const EVENT_PATH: &str = "/cgi-bin/eventManager.cgi?action=attach&codes=[All]";
