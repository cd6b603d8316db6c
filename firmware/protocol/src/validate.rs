//! Range and consistency checks on decoded messages.
//!
//! Decoding proves a payload has the right shape; validation proves its values are
//! physically possible. The ranges are deliberately wide (any real device fits with room to
//! spare) because their job is to catch corrupt, spoofed or buggy messages, not to judge
//! readings: judging readings is the gateway's and the alerting engine's job.

use crate::downlink::{Downlink, DownlinkBody};
use crate::error::Error;
use crate::uplink::{CameraEvent, Heartbeat, StateChange, Uplink, UplinkBody, WaterReading};

/// Receiver-side limits that a deployment may tune.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload accepted, in bytes.
    pub max_payload: usize,
    /// How far a device timestamp may run ahead of the receiver's clock, in ms. Devices
    /// with a clock set from the network rarely drift more than seconds; five minutes
    /// tolerates a badly set RTC while rejecting garbage dates.
    pub max_future_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_payload: crate::MAX_PAYLOAD, max_future_ms: 5 * 60 * 1000 }
    }
}

/// Battery voltage range in mV: from a deeply discharged 3 V lithium cell (below 1 V a cell
/// cannot power any electronics, so such a figure is corrupt) to a fresh 9 V alkaline
/// block with margin.
pub(crate) const BATTERY_MV: (u16, u16) = (1_000, 12_000);
/// Signal strength in dBm: NB-IoT RSRP bottoms out near -140 dBm, and no receiver
/// reports above 0 dBm.
pub(crate) const SIGNAL_DBM: (i16, i16) = (-150, 0);
/// Electronics temperature range in °C (industrial grade parts).
pub(crate) const TEMPERATURE_C: (f32, f32) = (-40.0, 125.0);
/// Obscuration in dB/m: 0 is clean air; 20 dB/m is a beam that loses 99 % of its light in
/// 10 cm, far past any room fire a detector survives. Negative values are impossible.
pub(crate) const OBSCURATION_DB_M: (f32, f32) = (0.0, 20.0);
/// Pipe pressure in MPa: sprinkler and hydrant systems stay below 2.5 MPa; 10 leaves room.
pub(crate) const PRESSURE_MPA: (f32, f32) = (0.0, 10.0);
/// Tank level in metres.
pub(crate) const LEVEL_M: (f32, f32) = (0.0, 100.0);
/// Hush duration in s: EN 14604 and UL 217 bound a hush to about 10-15 min.
pub(crate) const HUSH_S: (u16, u16) = (1, 900);
/// Heartbeat period in s: one minute to one week.
pub(crate) const HEARTBEAT_S: (u32, u32) = (60, 7 * 24 * 3600);
/// Detection thresholds in dB/m: GB 4715-2024 requires a sensitivity of at least
/// 0.05 dB/m; no point detector is set above 2 dB/m.
pub(crate) const THRESHOLD_DB_M: (f32, f32) = (0.02, 2.0);

fn in_range<T: PartialOrd>(field: &'static str, value: T, (lo, hi): (T, T)) -> Result<(), Error> {
    // Written as "inside" rather than "not outside" so that NaN, which compares false with
    // everything, is rejected too.
    if value >= lo && value <= hi { Ok(()) } else { Err(Error::OutOfRange { field }) }
}

/// Text fields other than ids: printable ASCII without spaces, quotes or backslashes, so
/// they are safe in logs, line protocol and URLs without escaping.
fn check_text(field: &'static str, text: &str) -> Result<(), Error> {
    let ok =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'\\'));
    if ok { Ok(()) } else { Err(Error::BadText { field }) }
}

pub(crate) fn check_version(v: u8) -> Result<(), Error> {
    if v == 0 || v > crate::SCHEMA_VERSION { Err(Error::UnsupportedVersion { version: v }) } else { Ok(()) }
}

impl Uplink {
    /// Checks every field: version, device id, physical ranges of readings, text alphabets,
    /// and that the device timestamp is not further than `limits.max_future_ms` ahead of
    /// `now_ms` (a timestamp of 0 means "no clock" and is accepted).
    pub fn validate(&self, now_ms: u64, limits: &Limits) -> Result<(), Error> {
        check_version(self.v)?;
        self.dev.check().map_err(Error::BadDeviceId)?;
        if self.ts_ms > now_ms.saturating_add(limits.max_future_ms) {
            return Err(Error::TimestampInFuture { ts_ms: self.ts_ms, ahead_ms: self.ts_ms - now_ms });
        }
        match &self.body {
            UplinkBody::Heartbeat(hb) => hb.validate(),
            UplinkBody::State(s) => s.validate(),
            UplinkBody::Fault(_)
            | UplinkBody::CameraHealth(_)
            | UplinkBody::CommandAck(_)
            | UplinkBody::Status(_) => Ok(()),
            UplinkBody::CameraEvent(e) => e.validate(),
            UplinkBody::Water(w) => w.validate(),
        }
    }
}

impl Heartbeat {
    fn validate(&self) -> Result<(), Error> {
        if let Some(mv) = self.battery_mv {
            in_range("battery_mv", mv, BATTERY_MV)?;
        }
        in_range("signal_dbm", self.signal_dbm, SIGNAL_DBM)?;
        if let Some(pct) = self.drift_pct {
            in_range("drift_pct", pct, (0, 100))?;
        }
        in_range("temperature_c", self.temperature_c, TEMPERATURE_C)?;
        check_text("firmware", &self.firmware)
    }
}

impl StateChange {
    fn validate(&self) -> Result<(), Error> {
        in_range("obscuration_db_m", self.obscuration_db_m, OBSCURATION_DB_M)
    }
}

impl CameraEvent {
    fn validate(&self) -> Result<(), Error> {
        in_range("channel", self.channel, (1, u16::MAX))?;
        in_range("confidence_pct", self.confidence_pct, (0, 100))?;
        match &self.snapshot {
            Some(s) => check_text("snapshot", s),
            None => Ok(()),
        }
    }
}

impl WaterReading {
    fn validate(&self) -> Result<(), Error> {
        if self.pressure_mpa.is_none() && self.level_m.is_none() {
            return Err(Error::OutOfRange { field: "pressure_mpa" });
        }
        if let Some(p) = self.pressure_mpa {
            in_range("pressure_mpa", p, PRESSURE_MPA)?;
        }
        if let Some(l) = self.level_m {
            in_range("level_m", l, LEVEL_M)?;
        }
        Ok(())
    }
}

impl Downlink {
    /// Checks the command's version and argument ranges, as a device must before applying it.
    pub fn validate(&self) -> Result<(), Error> {
        check_version(self.v)?;
        match self.body {
            DownlinkBody::Hush { duration_s } => in_range("duration_s", duration_s, HUSH_S),
            DownlinkBody::SetHeartbeat { interval_s } => in_range("interval_s", interval_s, HEARTBEAT_S),
            DownlinkBody::SetThresholds { pre_alarm_db_m, alarm_db_m } => {
                in_range("pre_alarm_db_m", pre_alarm_db_m, THRESHOLD_DB_M)?;
                in_range("alarm_db_m", alarm_db_m, THRESHOLD_DB_M)?;
                if pre_alarm_db_m < alarm_db_m {
                    Ok(())
                } else {
                    Err(Error::OutOfRange { field: "pre_alarm_db_m" })
                }
            }
            DownlinkBody::Sounders { .. } | DownlinkBody::SelfTest {} | DownlinkBody::Ack { .. } => Ok(()),
        }
    }
}
