//! Gateway → device messages.

use serde::{Deserialize, Serialize};

use crate::auth::DownlinkAuth;
use crate::firmware::{FirmwareChunk, FirmwareOffer};

/// One command from the gateway to a field device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Downlink {
    /// Schema version, [`crate::SCHEMA_VERSION`] when written by this crate.
    pub v: u8,
    /// Command id chosen by the gateway; the device echoes it in
    /// [`crate::CommandAck::cmd_seq`].
    pub seq: u32,
    /// Gateway clock when the command was issued, Unix milliseconds. Devices without a
    /// clock of their own may set theirs from it.
    pub ts_ms: u64,
    /// The command.
    pub body: DownlinkBody,
    /// The device boot it was issued for and its authentication tag ([`crate::auth`]), from
    /// schema version 2; `None` for a device without a key.
    #[serde(default)]
    pub auth: Option<DownlinkAuth>,
}

/// The kind-specific part of a [`Downlink`]. Encoded like [`crate::UplinkBody`].
///
/// A `fw_chunk` makes it about 400 bytes: without an allocator the chunk travels inline, and
/// a device holds one decoded command at a time.
#[allow(clippy::large_enum_variant, reason = "no_std without alloc: nothing to box into")]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DownlinkBody {
    /// Switch the building's interconnected sounders on or off (fire linkage, GB 20517-2025
    /// §5.12 interconnection).
    Sounders {
        /// `true` to sound, `false` to silence.
        on: bool,
    },
    /// Silence a sounding alarm for a bounded time. Heavy smoke overrides the hush.
    Hush {
        /// How long, in seconds (1 to 900).
        duration_s: u16,
    },
    /// Run the self-test: sounder, chamber and battery under load; results arrive as uplinks.
    SelfTest {},
    /// Change the heartbeat period.
    SetHeartbeat {
        /// New period in seconds (60 s to 7 days).
        interval_s: u32,
    },
    /// Change the detection thresholds.
    SetThresholds {
        /// Pre-alarm threshold in dB/m.
        pre_alarm_db_m: f32,
        /// Alarm threshold in dB/m; above the pre-alarm threshold.
        alarm_db_m: f32,
    },
    /// Application-level acknowledgement: the gateway has durably accepted the uplink
    /// `(boot, seq)`, so the device may drop it from its outbox. Sent for alarm- and
    /// event-class uplinks only ([`crate::Class::is_acknowledged`]).
    Ack {
        /// The uplink's boot counter.
        boot: u16,
        /// The uplink's sequence number.
        seq: u32,
    },
    /// Prove that the boot named in this command's authentication is the device's live one:
    /// the device answers with a signed [`crate::UplinkBody::Boot`] echoing `nonce`. The
    /// gateway sends it when an authenticated message carries a boot counter below the one
    /// it last saw (a reflashed device), and restarts the device's replay window on the answer.
    Challenge {
        /// A random number the answer must echo.
        nonce: u64,
    },
    /// Announce a firmware image ([`crate::firmware`]): the device prepares its update slot,
    /// or resumes the transfer of the same image where its flash says it stopped.
    FwOffer(FirmwareOffer),
    /// Image bytes at an offset; taken only at the offset the device expects next.
    FwChunk(FirmwareChunk),
    /// Check the received image against the offer's SHA-256 and request the swap: the device
    /// restarts into its bootloader, which verifies the image's Ed25519 signature first.
    FwCommit {},
    /// Drop the transfer in progress.
    FwAbort {},
    /// The gateway hears the device's new image on trial: once its self-test passed, the
    /// image marks itself good and the bootloader stops rolling it back.
    FwConfirm {},
}

/// The kinds of downlink, as they appear in topics and JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DownlinkKind {
    /// [`DownlinkBody::Sounders`]
    Sounders,
    /// [`DownlinkBody::Hush`]
    Hush,
    /// [`DownlinkBody::SelfTest`]
    SelfTest,
    /// [`DownlinkBody::SetHeartbeat`]
    SetHeartbeat,
    /// [`DownlinkBody::SetThresholds`]
    SetThresholds,
    /// [`DownlinkBody::Ack`]
    Ack,
    /// [`DownlinkBody::Challenge`]
    Challenge,
    /// [`DownlinkBody::FwOffer`]
    FwOffer,
    /// [`DownlinkBody::FwChunk`]
    FwChunk,
    /// [`DownlinkBody::FwCommit`]
    FwCommit,
    /// [`DownlinkBody::FwAbort`]
    FwAbort,
    /// [`DownlinkBody::FwConfirm`]
    FwConfirm,
}

impl DownlinkKind {
    /// Every kind, in wire-index order.
    pub const ALL: [DownlinkKind; 12] = [
        DownlinkKind::Sounders,
        DownlinkKind::Hush,
        DownlinkKind::SelfTest,
        DownlinkKind::SetHeartbeat,
        DownlinkKind::SetThresholds,
        DownlinkKind::Ack,
        DownlinkKind::Challenge,
        DownlinkKind::FwOffer,
        DownlinkKind::FwChunk,
        DownlinkKind::FwCommit,
        DownlinkKind::FwAbort,
        DownlinkKind::FwConfirm,
    ];

    /// The kind's name in topics and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            DownlinkKind::Sounders => "sounders",
            DownlinkKind::Hush => "hush",
            DownlinkKind::SelfTest => "self_test",
            DownlinkKind::SetHeartbeat => "set_heartbeat",
            DownlinkKind::SetThresholds => "set_thresholds",
            DownlinkKind::Ack => "ack",
            DownlinkKind::Challenge => "challenge",
            DownlinkKind::FwOffer => "fw_offer",
            DownlinkKind::FwChunk => "fw_chunk",
            DownlinkKind::FwCommit => "fw_commit",
            DownlinkKind::FwAbort => "fw_abort",
            DownlinkKind::FwConfirm => "fw_confirm",
        }
    }

    /// Parses a kind name; `None` for names this schema version does not define.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl DownlinkBody {
    /// The body's kind.
    pub const fn kind(&self) -> DownlinkKind {
        match self {
            DownlinkBody::Sounders { .. } => DownlinkKind::Sounders,
            DownlinkBody::Hush { .. } => DownlinkKind::Hush,
            DownlinkBody::SelfTest {} => DownlinkKind::SelfTest,
            DownlinkBody::SetHeartbeat { .. } => DownlinkKind::SetHeartbeat,
            DownlinkBody::SetThresholds { .. } => DownlinkKind::SetThresholds,
            DownlinkBody::Ack { .. } => DownlinkKind::Ack,
            DownlinkBody::Challenge { .. } => DownlinkKind::Challenge,
            DownlinkBody::FwOffer(_) => DownlinkKind::FwOffer,
            DownlinkBody::FwChunk(_) => DownlinkKind::FwChunk,
            DownlinkBody::FwCommit {} => DownlinkKind::FwCommit,
            DownlinkBody::FwAbort {} => DownlinkKind::FwAbort,
            DownlinkBody::FwConfirm {} => DownlinkKind::FwConfirm,
        }
    }
}

impl Downlink {
    /// An unsigned command of the current schema version ([`Downlink::sign`] signs it).
    pub fn new(seq: u32, ts_ms: u64, body: DownlinkBody) -> Self {
        Downlink { v: crate::SCHEMA_VERSION, seq, ts_ms, body, auth: None }
    }

    /// The command's kind.
    pub const fn kind(&self) -> DownlinkKind {
        self.body.kind()
    }
}
