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
    /// A device clock further ahead of the receiver's than this, in ms, is flagged by
    /// [`Uplink::clock_skew`]. Devices with a clock set from the network rarely drift more
    /// than seconds; five minutes tolerates a badly set RTC.
    pub clock_ahead_ms: u64,
    /// A device clock further behind the receiver's than this, in ms, is flagged. Messages
    /// a device held in its outbox through an outage are legitimately behind, so this bound
    /// is wider: an hour is longer than any outage an outbox should ride out unnoticed.
    pub clock_behind_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_payload: crate::MAX_PAYLOAD, clock_ahead_ms: 5 * 60 * 1000, clock_behind_ms: 3_600_000 }
    }
}

/// A device clock off the receiver's by more than [`Limits`] allows.
///
/// Skew is a property of the device, not of the message: the message is still valid and
/// must be accepted (refusing a fire alarm because the detector's RTC is wrong would make
/// the device resend it forever). Receivers stamp such a message with their own time and
/// flag the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockSkew {
    /// The device clock is this many ms ahead.
    Ahead(u64),
    /// The device clock is this many ms behind.
    Behind(u64),
}

impl ClockSkew {
    /// `"ahead"` or `"behind"`, for metrics labels and logs.
    pub fn direction(&self) -> &'static str {
        match self {
            ClockSkew::Ahead(_) => "ahead",
            ClockSkew::Behind(_) => "behind",
        }
    }

    /// How far off the device clock is, in ms.
    pub fn ms(&self) -> u64 {
        match *self {
            ClockSkew::Ahead(ms) | ClockSkew::Behind(ms) => ms,
        }
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
/// Detection thresholds in dB/m, the span a point smoke detector may be set to: from
/// 0.05 dB/m, the lowest response threshold GB 4715 accepts as not over-sensitive, to
/// 4.0 %/ft, the least sensitive setting UL 268's sensitivity test admits (0.5-4.0 %/ft);
/// 4 %/ft is -10·log10(1 - 0.04) / 0.3048 m = 0.58 dB/m. A command outside it would make a
/// detector useless or a nuisance, so a device refuses it whoever signed it.
pub(crate) const THRESHOLD_DB_M: (f32, f32) = (0.05, 0.58);

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
    /// Checks every field: version, device id, physical ranges of readings and text
    /// alphabets. The timestamp is not judged here: a wrong device clock does not make a
    /// message invalid (see [`Uplink::clock_skew`]).
    pub fn validate(&self) -> Result<(), Error> {
        check_version(self.v)?;
        self.dev.check().map_err(Error::BadDeviceId)?;
        match &self.body {
            UplinkBody::Heartbeat(hb) => hb.validate(),
            UplinkBody::State(s) => s.validate(),
            UplinkBody::Fault(_)
            | UplinkBody::CameraHealth(_)
            | UplinkBody::CommandAck(_)
            | UplinkBody::Status(_)
            | UplinkBody::Boot(_) => Ok(()),
            UplinkBody::FwStatus(s) => check_text("version", &s.version),
            UplinkBody::CameraEvent(e) => e.validate(),
            UplinkBody::Water(w) => w.validate(),
        }
    }
}

impl Uplink {
    /// How far the device clock (`ts_ms`) is off the receiver's (`now_ms`, Unix ms), when
    /// that is beyond `limits`; `None` when it is within them or the device has no clock
    /// (`ts_ms` 0).
    pub fn clock_skew(&self, now_ms: u64, limits: &Limits) -> Option<ClockSkew> {
        if self.ts_ms == 0 {
            None
        } else if self.ts_ms > now_ms.saturating_add(limits.clock_ahead_ms) {
            Some(ClockSkew::Ahead(self.ts_ms - now_ms))
        } else if self.ts_ms < now_ms.saturating_sub(limits.clock_behind_ms) {
            Some(ClockSkew::Behind(now_ms - self.ts_ms))
        } else {
            None
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
        match &self.body {
            &DownlinkBody::Hush { duration_s } => in_range("duration_s", duration_s, HUSH_S),
            &DownlinkBody::SetHeartbeat { interval_s } => in_range("interval_s", interval_s, HEARTBEAT_S),
            &DownlinkBody::SetThresholds { pre_alarm_db_m, alarm_db_m } => {
                in_range("pre_alarm_db_m", pre_alarm_db_m, THRESHOLD_DB_M)?;
                in_range("alarm_db_m", alarm_db_m, THRESHOLD_DB_M)?;
                if pre_alarm_db_m < alarm_db_m {
                    Ok(())
                } else {
                    Err(Error::OutOfRange { field: "pre_alarm_db_m" })
                }
            }
            DownlinkBody::Sounders { .. }
            | DownlinkBody::SelfTest {}
            | DownlinkBody::Ack { .. }
            | DownlinkBody::Challenge { .. }
            | DownlinkBody::FwCommit {}
            | DownlinkBody::FwAbort {}
            | DownlinkBody::FwConfirm {} => Ok(()),
            DownlinkBody::FwOffer(offer) => {
                check_text("version", &offer.version)?;
                if offer.size == 0 { Err(Error::OutOfRange { field: "size" }) } else { Ok(()) }
            }
            DownlinkBody::FwChunk(chunk) => {
                if chunk.data.0.is_empty() {
                    Err(Error::OutOfRange { field: "data" })
                } else {
                    Ok(())
                }
            }
        }
    }
}
