//! Writes a Dahua attach stream for a sequence of signals (tests and the fleet simulator).

use crate::signal::{CameraSignal, ExtraCodes, SignalKind};
use crate::vendor::{GenerateError, code_for, iso8601};

/// The boundary Dahua cameras declare (`multipart/x-mixed-replace; boundary=myboundary`).
pub const BOUNDARY: &str = "myboundary";

/// One multipart part for `signal`: `Heartbeat`, or a `Code=` block with a small `data`
/// object.
///
/// # Errors
/// [`GenerateError::NoCode`] when neither the built-in table nor `extra` names a `Code` for
/// the signal's kind.
pub fn encode(signal: &CameraSignal, extra: &ExtraCodes, ts_ms: u64) -> Result<Vec<u8>, GenerateError> {
    let text = if signal.kind == SignalKind::Heartbeat {
        "Heartbeat\r\n".to_owned()
    } else {
        let code = code_for(signal.kind, super::parse::code_for(signal.kind), extra)?;
        let action = if signal.active { "Start" } else { "Stop" };
        let index = signal.channel.unwrap_or(1).saturating_sub(1);
        format!(
            "Code={code};action={action};index={index};data={{\n   \"LocaleTime\" : \"{time}\",\n   \"UTC\" : {utc}\n}}\r\n",
            time = iso8601(ts_ms).replace('T', " ").trim_end_matches('Z'),
            utc = ts_ms / 1000,
        )
    };
    Ok(format!("--{BOUNDARY}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{text}", text.len())
        .into_bytes())
}
