//! Writes an ISAPI alert stream for a sequence of signals (tests and the fleet simulator).

use crate::signal::{CameraSignal, ExtraCodes, SignalKind};
use crate::vendor::{GenerateError, code_for, iso8601};

/// The boundary Hikvision cameras declare (`multipart/mixed; boundary=boundary`).
pub const BOUNDARY: &str = "boundary";

/// One multipart part (delimiter line, headers, `EventNotificationAlert`) for `signal`.
///
/// A heartbeat becomes what cameras send as one: `videoloss`, `inactive`, on channel 1.
///
/// # Errors
/// [`GenerateError::NoCode`] when neither the built-in table nor `extra` names an
/// `eventType` for the signal's kind.
pub fn encode(signal: &CameraSignal, extra: &ExtraCodes, ts_ms: u64) -> Result<Vec<u8>, GenerateError> {
    let (event_type, active, channel) = if signal.kind == SignalKind::Heartbeat {
        ("videoloss".to_owned(), false, 1)
    } else {
        let code = code_for(signal.kind, super::parse::event_type_for(signal.kind), extra)?;
        (code, signal.active, signal.channel.unwrap_or(1))
    };
    let state = if active { "active" } else { "inactive" };
    let xml = format!(
        "<EventNotificationAlert version=\"2.0\" xmlns=\"http://www.hikvision.com/ver20/XMLSchema\">\r\n\
         <ipAddress>192.0.2.64</ipAddress>\r\n\
         <portNo>80</portNo>\r\n\
         <protocol>HTTP</protocol>\r\n\
         <macAddress>00:00:5e:00:53:40</macAddress>\r\n\
         <channelID>{channel}</channelID>\r\n\
         <dateTime>{date}</dateTime>\r\n\
         <activePostCount>1</activePostCount>\r\n\
         <eventType>{event_type}</eventType>\r\n\
         <eventState>{state}</eventState>\r\n\
         <eventDescription>{event_type} alarm</eventDescription>\r\n\
         </EventNotificationAlert>\r\n",
        date = iso8601(ts_ms),
    );
    Ok(format!(
        "--{BOUNDARY}\r\nContent-Type: application/xml; charset=\"UTF-8\"\r\nContent-Length: {}\r\n\r\n{xml}",
        xml.len()
    )
    .into_bytes())
}
