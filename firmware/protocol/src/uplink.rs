//! Device → gateway messages.

use serde::{Deserialize, Serialize};

use crate::auth::Tag;
use crate::firmware::FirmwareStatus;
use crate::id::DeviceId;

/// One message from a field device to the gateway.
///
/// Every uplink carries the sending device's id, a per-boot sequence number and a boot
/// counter. The pair `(boot, seq)` identifies the message for de-duplication and for the
/// gateway's application-level acknowledgement ([`crate::DownlinkBody::Ack`]): after a
/// reboot `seq` restarts while `boot` grows, so a fresh message never looks like a replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Uplink {
    /// Schema version, [`crate::SCHEMA_VERSION`] when written by this crate.
    pub v: u8,
    /// The sending device.
    pub dev: DeviceId,
    /// Boot counter, incremented by the device on every start (wraps at 65,535).
    pub boot: u16,
    /// Sequence number within this boot, starting at 0, incremented per message.
    pub seq: u32,
    /// Device clock when the message was created, Unix milliseconds; 0 when the device has
    /// no valid time (the gateway then uses its receive time).
    pub ts_ms: u64,
    /// What happened.
    pub body: UplinkBody,
    /// The message authentication tag ([`crate::auth`]), from schema version 2; `None` for
    /// a device without a key (and for every version-1 message).
    #[serde(default)]
    pub mac: Option<Tag>,
}

/// The kind-specific part of an [`Uplink`].
///
/// In JSON the kind is the single key of the `body` object (`{"state": {...}}`); in the
/// compact encoding it is a varint index in declaration order. New kinds are only ever
/// appended, so indices never change meaning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UplinkBody {
    /// Periodic proof of life with device health figures.
    Heartbeat(Heartbeat),
    /// The detector's alarm state changed.
    State(StateChange),
    /// A device fault was raised or cleared.
    Fault(Fault),
    /// A camera's video analytics raised or ended an event.
    CameraEvent(CameraEvent),
    /// A camera channel's health changed.
    CameraHealth(CameraHealth),
    /// A water pressure or level reading.
    Water(WaterReading),
    /// The device's answer to a downlink command.
    CommandAck(CommandAck),
    /// The device's connection state, for powered devices that stay connected: `online`
    /// after connecting, and `offline` as their MQTT last will, which the broker publishes
    /// when the connection drops without a goodbye.
    Status(Status),
    /// The device's answer to the gateway's [`crate::DownlinkBody::Challenge`]: proof that
    /// a boot counter lower than the gateway last saw is the device's live one (it was
    /// reflashed or its flash was erased), so the gateway may restart its replay window.
    Boot(BootAnnouncement),
    /// Firmware update progress ([`crate::firmware`]).
    FwStatus(FirmwareStatus),
}

/// The kinds of uplink, as they appear in topics and JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UplinkKind {
    /// [`UplinkBody::Heartbeat`]
    Heartbeat,
    /// [`UplinkBody::State`]
    State,
    /// [`UplinkBody::Fault`]
    Fault,
    /// [`UplinkBody::CameraEvent`]
    CameraEvent,
    /// [`UplinkBody::CameraHealth`]
    CameraHealth,
    /// [`UplinkBody::Water`]
    Water,
    /// [`UplinkBody::CommandAck`]
    CommandAck,
    /// [`UplinkBody::Status`]
    Status,
    /// [`UplinkBody::Boot`]
    Boot,
    /// [`UplinkBody::FwStatus`]
    FwStatus,
}

impl UplinkKind {
    /// Every kind, in wire-index order.
    pub const ALL: [UplinkKind; 10] = [
        UplinkKind::Heartbeat,
        UplinkKind::State,
        UplinkKind::Fault,
        UplinkKind::CameraEvent,
        UplinkKind::CameraHealth,
        UplinkKind::Water,
        UplinkKind::CommandAck,
        UplinkKind::Status,
        UplinkKind::Boot,
        UplinkKind::FwStatus,
    ];

    /// The kind's name in topics and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            UplinkKind::Heartbeat => "heartbeat",
            UplinkKind::State => "state",
            UplinkKind::Fault => "fault",
            UplinkKind::CameraEvent => "camera_event",
            UplinkKind::CameraHealth => "camera_health",
            UplinkKind::Water => "water",
            UplinkKind::CommandAck => "command_ack",
            UplinkKind::Status => "status",
            UplinkKind::Boot => "boot",
            UplinkKind::FwStatus => "fw_status",
        }
    }

    /// Parses a kind name; `None` for names this schema version does not define.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// How urgently messages of this kind must travel.
    pub const fn class(self) -> Class {
        match self {
            UplinkKind::State | UplinkKind::CameraEvent => Class::Alarm,
            UplinkKind::Fault
            | UplinkKind::CameraHealth
            | UplinkKind::CommandAck
            | UplinkKind::Status
            | UplinkKind::Boot => Class::Event,
            UplinkKind::Heartbeat | UplinkKind::Water | UplinkKind::FwStatus => Class::Telemetry,
        }
    }
}

/// Delivery class of a message: how it is queued, what may be shed under pressure, and
/// whether the gateway acknowledges it.
///
/// Both the detector's outbox and the gateway's queues send `Alarm` before anything else
/// and never drop `Alarm` or `Event` messages; only `Telemetry`, which the next periodic
/// message supersedes, is shed (oldest first) when a bounded queue is full. For the same
/// reason only `Alarm` and `Event` messages get the gateway's application-level
/// acknowledgement ([`Class::is_acknowledged`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// Fire-relevant: detector state changes and camera smoke/fire events. Never queued
    /// behind anything else.
    Alarm,
    /// Must arrive but is not urgent: faults, channel health, command acknowledgements.
    Event,
    /// Periodic readings that a newer reading supersedes: heartbeats, water readings.
    Telemetry,
}

impl Class {
    /// Whether the gateway answers messages of this class with a `down/ack`
    /// ([`crate::DownlinkBody::Ack`]), and a device therefore keeps them and resends them
    /// until it comes: `Alarm` and `Event`.
    ///
    /// `Telemetry` is not acknowledged: a newer reading supersedes it, QoS 1 carries it to the
    /// broker, and the gateway's persistent session (acknowledged to the broker only after
    /// the message is durable) carries it from there. One `down/ack` per heartbeat cost the
    /// gateway about a third of its ingest rate (BENCHMARKS.md, "Ingest efficiency").
    pub const fn is_acknowledged(self) -> bool {
        matches!(self, Class::Alarm | Class::Event)
    }
}

impl UplinkBody {
    /// The body's kind.
    pub const fn kind(&self) -> UplinkKind {
        match self {
            UplinkBody::Heartbeat(_) => UplinkKind::Heartbeat,
            UplinkBody::State(_) => UplinkKind::State,
            UplinkBody::Fault(_) => UplinkKind::Fault,
            UplinkBody::CameraEvent(_) => UplinkKind::CameraEvent,
            UplinkBody::CameraHealth(_) => UplinkKind::CameraHealth,
            UplinkBody::Water(_) => UplinkKind::Water,
            UplinkBody::CommandAck(_) => UplinkKind::CommandAck,
            UplinkBody::Status(_) => UplinkKind::Status,
            UplinkBody::Boot(_) => UplinkKind::Boot,
            UplinkBody::FwStatus(_) => UplinkKind::FwStatus,
        }
    }
}

impl Uplink {
    /// An unsigned message of the current schema version ([`Uplink::sign`] signs it).
    pub fn new(dev: DeviceId, boot: u16, seq: u32, ts_ms: u64, body: UplinkBody) -> Self {
        Uplink { v: crate::SCHEMA_VERSION, dev, boot, seq, ts_ms, body, mac: None }
    }

    /// The message's kind.
    pub const fn kind(&self) -> UplinkKind {
        self.body.kind()
    }

    /// The message's delivery class.
    pub const fn class(&self) -> Class {
        self.body.kind().class()
    }
}

/// Firmware version text, e.g. `1.4.2` or `2026.11-rc1`: 1 to 16 printable ASCII
/// characters without spaces, quotes or backslashes.
pub type FirmwareVersion = heapless::String<16>;

/// Reference to a camera snapshot held by the camera or gateway (an object key or a
/// relative URL, never credentials): 1 to 96 printable ASCII characters without spaces,
/// quotes or backslashes.
pub type SnapshotRef = heapless::String<96>;

/// Periodic proof of life. Detectors on NB-IoT send one every few hours (24 h by default,
/// settable by [`crate::DownlinkBody::SetHeartbeat`]); powered devices more often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Battery voltage under load in millivolts; `None` for mains-powered devices.
    pub battery_mv: Option<u16>,
    /// Received signal strength (NB-IoT RSRP or Wi-Fi RSSI) in dBm.
    pub signal_dbm: i16,
    /// Clean-air chamber reading in raw sensor counts; `None` for devices without a chamber.
    pub chamber_baseline: Option<u16>,
    /// Drift compensation in use, as a percentage of the most the detector allows before it
    /// raises a contamination fault.
    pub drift_pct: Option<u8>,
    /// Temperature at the device in °C.
    pub temperature_c: f32,
    /// Running firmware version.
    pub firmware: FirmwareVersion,
    /// Seconds since this boot.
    pub uptime_s: u32,
}

/// A detector's alarm state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorState {
    /// Standby, no smoke.
    Normal,
    /// Smoke above the pre-alarm threshold; the detector is confirming.
    PreAlarm,
    /// Smoke confirmed above the alarm threshold; the sounder is on.
    Alarm,
    /// The alarm was silenced at the detector for a bounded time.
    Hush,
    /// Smoke has gone; the alarm ended.
    Cleared,
    /// Test or drill mode (self-test button, commissioning).
    Test,
}

/// A detector state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateChange {
    /// The new state.
    pub state: DetectorState,
    /// Smoke obscuration measured when the state changed, in dB/m (0 = clean air).
    pub obscuration_db_m: f32,
}

/// A device fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Battery below the low-battery threshold (checked at least every 24 h, GB 20517-2025).
    LowBattery,
    /// Chamber contaminated: drift compensation exhausted (GB 20517-2025 §5.21).
    Contamination,
    /// Removed from its base or opened.
    Tamper,
    /// Optical chamber, LED or sensor front end failed.
    SensorFault,
    /// Past its service life (10 years from manufacture for smoke alarms).
    EndOfLife,
}

/// A fault raised or cleared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// Which fault.
    pub fault: FaultKind,
    /// `true` when raised, `false` when cleared.
    pub active: bool,
}

/// What a camera's analytics saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraEventKind {
    /// Smoke in view.
    Smoke,
    /// Flame in view.
    Fire,
    /// A fire lane or escape route is blocked.
    FireLaneBlocked,
}

/// A camera analytics event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraEvent {
    /// Camera channel (1-based, as the NVR numbers it).
    pub channel: u16,
    /// What was seen.
    pub event: CameraEventKind,
    /// `true` when the event starts, `false` when it ends.
    pub active: bool,
    /// The analytics' confidence, 0 to 100 %.
    pub confidence_pct: u8,
    /// Where to fetch the snapshot taken at the event, if one was taken.
    pub snapshot: Option<SnapshotRef>,
}

/// Health of a camera channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelStatus {
    /// Streaming normally.
    Online,
    /// No video signal on the channel.
    VideoLoss,
    /// Lens covered, moved or defocused.
    Tampered,
    /// Channel unreachable.
    Offline,
}

/// A camera channel health report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraHealth {
    /// Camera channel (1-based).
    pub channel: u16,
    /// Its status.
    pub status: ChannelStatus,
}

/// A water reading from a sprinkler-pipe pressure sensor or a tank level sensor. At least
/// one of the two values is present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaterReading {
    /// Pipe pressure in MPa (sprinkler systems run at roughly 0.1 to 1.2 MPa).
    pub pressure_mpa: Option<f32>,
    /// Water level in metres above the tank floor.
    pub level_m: Option<f32>,
}

/// How a device handled a downlink command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckResult {
    /// Done.
    Applied,
    /// Understood but refused (out of range, wrong state).
    Rejected,
    /// This device does not implement the command.
    Unsupported,
}

/// A device's answer to a downlink command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandAck {
    /// The [`crate::Downlink::seq`] of the command answered.
    pub cmd_seq: u32,
    /// The outcome.
    pub result: AckResult,
}

/// A device's connection state.
///
/// A device that uses it publishes `online: true` after each connect and sets its MQTT last
/// will to `online: false` with the same boot counter and a sequence number reserved at
/// connect time. Because a will is written before the messages it follows, receivers exempt
/// `status` from the replay window (they still rate-limit it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// `true` when connected, `false` when the connection was lost.
    pub online: bool,
}

/// A device's answer to a [`crate::DownlinkBody::Challenge`], signed like every uplink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootAnnouncement {
    /// The challenge's nonce, echoed.
    pub nonce: u64,
}
