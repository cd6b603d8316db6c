//! What the engine is told: device [`Signal`]s, officer [`Command`]s and notification
//! delivery results, each as one [`Input`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{CaseId, Location, Scope};

/// One thing that happened, handed to [`crate::Engine::handle`] with the time it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Input {
    /// A device or the gateway reports a condition raised or cleared.
    Signal(Signal),
    /// An officer acts.
    Officer {
        /// Who.
        officer: Officer,
        /// What.
        command: Command,
    },
    /// A device confirmed (with its `command_ack`) the sounder state of a case's
    /// [`crate::Action::Sounders`] generation `command`; a restart sends that state again
    /// only to the devices that have not.
    SounderConfirmed {
        /// The case.
        case: CaseId,
        /// The device.
        device: String,
        /// The generation it confirmed.
        command: u64,
    },
    /// What became of a notification.
    Delivery {
        /// The notification's id, from [`crate::Notification::id`].
        notification: u64,
        /// Whether any channel of its desk got it through.
        delivered: bool,
    },
}

impl Input {
    /// A stable name for logs, series and the store.
    pub fn kind(&self) -> &'static str {
        match self {
            Input::Signal(_) => "signal",
            Input::Officer { command, .. } => command.kind(),
            Input::Delivery { .. } => "delivery",
            Input::SounderConfirmed { .. } => "sounder_confirmed",
        }
    }
}

/// A condition of one device (or, for communication loss, of one scope).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// The device; for [`Condition::CommunicationLoss`] the scope's name.
    pub device: String,
    /// Where it is.
    pub location: Location,
    /// What.
    pub condition: Condition,
    /// Raised (`true`) or cleared.
    pub active: bool,
    /// The device is not in the registry: the village it reported from. Its
    /// [`Signal::location`] then names only the desk that answers for unplaced devices
    /// (the levels below it are empty), and the case it opens pages as unverified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unplaced: Option<String>,
}

/// What a signal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// A smoke detector in alarm (its sounder on).
    Smoke,
    /// A camera's analytics see smoke or flame.
    Camera,
    /// A device fault (low battery, contamination, tamper, sensor fault, end of life).
    Fault,
    /// A device stopped reporting.
    Offline,
    /// A whole scope stopped reporting; [`Signal::location`] names the scope, with the
    /// units below it left empty.
    CommunicationLoss,
    /// Water pressure or level below its threshold.
    WaterLow,
    /// The device is in test mode (self-test, drill, commissioning): out of service.
    Test,
    /// Someone silenced the device's sounder at the device (hush) while it was in alarm.
    /// Opens nothing; the open case holding the device's alarm records it, so officers know
    /// the residents have heard it and silenced it.
    Hushed,
}

/// An officer, as the directory knows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Officer {
    /// Directory id.
    pub id: String,
    /// What they may see and act on.
    pub scope: Scope,
}

/// What an officer asks of the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// 响应: I have it.
    Acknowledge {
        /// The case.
        case: CaseId,
    },
    /// Someone goes.
    Dispatch {
        /// The case.
        case: CaseId,
        /// Who goes (a name or a team).
        assignee: String,
    },
    /// The alarm was checked.
    Verify {
        /// The case.
        case: CaseId,
        /// How.
        method: VerifyMethod,
        /// What was found, free text.
        finding: String,
    },
    /// 应案: what it was.
    Dispose {
        /// The case.
        case: CaseId,
        /// The disposition.
        disposition: Disposition,
    },
    /// 反馈: closed with a report.
    Close {
        /// The case.
        case: CaseId,
        /// The report.
        feedback: Feedback,
    },
    /// A note; the only change a closed case accepts.
    Note {
        /// The case.
        case: CaseId,
        /// The text.
        text: String,
    },
    /// Silence a chattering device's alarms for a bounded time.
    Shelve {
        /// The case the device belongs to.
        case: CaseId,
        /// The device.
        device: String,
        /// For how long (at most [`crate::Config::max_shelve`]).
        #[serde(with = "humantime_serde")]
        duration: Duration,
        /// Why.
        reason: String,
    },
    /// End a shelve early.
    Unshelve {
        /// The case the device belongs to.
        case: CaseId,
        /// The device.
        device: String,
    },
    /// Reset a latched alarm whose device has returned to normal.
    ResetLatch {
        /// The case.
        case: CaseId,
        /// The device; `None` resets every latched alarm of the case that has cleared.
        device: Option<String>,
    },
    /// An unplaced device's case gets the building the device was found in (written into
    /// the registry by the caller before this command).
    Place {
        /// The case (one unplaced device's, not a flood).
        case: CaseId,
        /// Where the device is.
        location: Location,
    },
}

impl Command {
    /// The case it is about.
    pub fn case(&self) -> CaseId {
        match self {
            Command::Acknowledge { case }
            | Command::Dispatch { case, .. }
            | Command::Verify { case, .. }
            | Command::Dispose { case, .. }
            | Command::Close { case, .. }
            | Command::Note { case, .. }
            | Command::Shelve { case, .. }
            | Command::Unshelve { case, .. }
            | Command::ResetLatch { case, .. }
            | Command::Place { case, .. } => *case,
        }
    }

    /// A stable name.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Acknowledge { .. } => "acknowledge",
            Command::Dispatch { .. } => "dispatch",
            Command::Verify { .. } => "verify",
            Command::Dispose { .. } => "dispose",
            Command::Close { .. } => "close",
            Command::Note { .. } => "note",
            Command::Shelve { .. } => "shelve",
            Command::Unshelve { .. } => "unshelve",
            Command::ResetLatch { .. } => "reset_latch",
            Command::Place { .. } => "place",
        }
    }
}

/// How an alarm was verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMethod {
    /// Through the nearest camera channel.
    Camera,
    /// Someone went there.
    OnSite,
    /// By telephone with the resident.
    Phone,
}

/// What an alarm turned out to be (应案).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Disposition {
    /// A real fire.
    RealFire,
    /// No fire.
    FalseAlarm {
        /// Its cause.
        cause: FalseAlarmCause,
    },
    /// A drill or a test.
    Drill,
    /// Nobody could get in to check.
    NoAccess,
    /// A work order (fault, offline, water) done.
    Resolved,
}

impl Disposition {
    /// A stable name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Disposition::RealFire => "real_fire",
            Disposition::FalseAlarm { .. } => "false_alarm",
            Disposition::Drill => "drill",
            Disposition::NoAccess => "no_access",
            Disposition::Resolved => "resolved",
        }
    }
}

/// Why a detector alarmed without a fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FalseAlarmCause {
    /// Cooking fumes.
    Cooking,
    /// Steam from a shower or kettle.
    Steam,
    /// Dust (renovation, cleaning).
    Dust,
    /// Cigarette smoke.
    Smoking,
    /// Insects in the chamber.
    Insects,
    /// The device is faulty.
    DeviceFault,
    /// Set off on purpose.
    Malicious,
    /// Anything else.
    Other,
}

impl FalseAlarmCause {
    /// A stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            FalseAlarmCause::Cooking => "cooking",
            FalseAlarmCause::Steam => "steam",
            FalseAlarmCause::Dust => "dust",
            FalseAlarmCause::Smoking => "smoking",
            FalseAlarmCause::Insects => "insects",
            FalseAlarmCause::DeviceFault => "device_fault",
            FalseAlarmCause::Malicious => "malicious",
            FalseAlarmCause::Other => "other",
        }
    }
}

/// The closure report (反馈).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feedback {
    /// What happened and what was done.
    pub report: String,
    /// Follow-up work.
    #[serde(default)]
    pub work_orders: Vec<WorkOrder>,
    /// Whether the resident or owner was told.
    pub resident_informed: bool,
}

/// A follow-up job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkOrder {
    /// What kind: `replace_detector`, `repair_pipe`, `clean_chamber`, ...
    pub kind: String,
    /// Details.
    pub detail: String,
}
