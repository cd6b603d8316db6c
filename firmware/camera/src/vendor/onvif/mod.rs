//! ONVIF PullPoint events (ONVIF Core Specification §9.1 and Profile S/T/M): the client creates
//! a pull-point subscription on the camera's event service, then calls `PullMessages` in a
//! loop; each answer is a SOAP `PullMessagesResponse` holding `wsnt:NotificationMessage`s.
//!
//! A message names a topic (`tns1:VideoSource/SignalLoss`,
//! `tns1:VideoSource/GlobalSceneChange/ImagingService`, or a vendor's analytics topic such as
//! `tns1:RuleEngine/FireDetector/...`), a `PropertyOperation` (`Initialized` when the
//! subscription starts and reports the current state, `Changed`, `Deleted`), `Source` items
//! naming the video source, and `Data` items holding the state (`State`, `IsFire`, ...).
//! ONVIF events are properties: they change once and stay, so they are not held open by
//! repetition.

mod generate;
mod parse;
pub mod soap;
#[cfg(test)]
mod tests;

pub use generate::{encode, subscription_response};
pub use parse::{MAX_DOCUMENT, OnvifParser, parse_response, topic_kind};

/// The usual path of the event service (the device service's `GetCapabilities` names the real
/// one; configure it when a camera differs).
pub const EVENT_PATH: &str = "/onvif/event_service";
