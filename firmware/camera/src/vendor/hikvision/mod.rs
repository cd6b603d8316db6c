//! Hikvision ISAPI: `GET /ISAPI/Event/notification/alertStream` answers with an endless
//! `multipart/mixed; boundary=boundary` body whose parts are `EventNotificationAlert` XML
//! documents (and, for some analytics, JPEG snapshots).
//!
//! Each alert names its `eventType`, `eventState` (`active` / `inactive`), `channelID` (and on
//! NVRs `dynChannelID`) and `activePostCount`. While a condition lasts, the camera repeats the
//! `active` alert about once a second with a growing `activePostCount`, and many analytics
//! never send `inactive` at all; the channel tracker therefore ends a Hikvision event that has
//! not been repeated for `event_hold` (see [`crate::channel`]). The stream's keep-alive is an
//! `inactive` `videoloss` alert every few seconds.

mod generate;
mod parse;
#[cfg(test)]
mod tests;

pub use generate::{BOUNDARY, encode};
pub use parse::{HikvisionParser, parse_alert};

/// The event stream's path on the camera.
pub const EVENT_PATH: &str = "/ISAPI/Event/notification/alertStream";
