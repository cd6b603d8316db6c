//! One CSV row: its columns, and the pure checks that turn its text into a
//! [`DeviceRecord`] or the reasons it is refused.

use std::time::Duration;

use firegrid_protocol::{DeviceId, IdError, VillageId};

/// The columns of a registry file, in the order [`super::Registry::write_csv`] writes them.
/// `REQUIRED` ones must be in the header; the others may be left out.
pub(super) const COLUMNS: [&str; 14] = [
    "device_id",
    "kind",
    "model",
    "building_id",
    "building_address",
    "lat",
    "lon",
    "grid",
    "community",
    "street",
    "village",
    "district",
    "heartbeat",
    "channels",
];

/// Columns a header must name.
pub(super) const REQUIRED: [&str; 11] = [
    "device_id",
    "kind",
    "model",
    "building_id",
    "building_address",
    "lat",
    "lon",
    "grid",
    "community",
    "street",
    "village",
];

/// Longest building address, in bytes (about 85 Chinese characters): longer is a pasted
/// paragraph, not an address.
const MAX_ADDRESS_LEN: usize = 256;
/// Longest name (building id, grid, community, street, district, model), in bytes.
const MAX_NAME_LEN: usize = 96;

/// Shortest and longest heartbeat interval. The upper bound is the protocol's
/// `set_heartbeat` maximum (7 days), so every interval the registry accepts can also be
/// commanded to a device.
const MIN_HEARTBEAT_MS: u64 = 1_000;
const MAX_HEARTBEAT_MS: u64 = 604_800_000;

/// What a device is; decides its default heartbeat interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// A networked (usually NB-IoT) smoke detector.
    SmokeDetector,
    /// A camera (NVR or IP camera), one or more channels.
    Camera,
    /// A water pressure or tank level sensor.
    WaterSensor,
    /// Anything else; its heartbeat interval must be given.
    Other,
}

impl DeviceKind {
    /// Every kind.
    pub const ALL: [DeviceKind; 4] =
        [DeviceKind::SmokeDetector, DeviceKind::Camera, DeviceKind::WaterSensor, DeviceKind::Other];

    /// The name used in the CSV `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::SmokeDetector => "smoke_detector",
            DeviceKind::Camera => "camera",
            DeviceKind::WaterSensor => "water_sensor",
            DeviceKind::Other => "other",
        }
    }

    /// Parses a `kind` column value.
    pub fn from_name(name: &str) -> Option<DeviceKind> {
        DeviceKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The heartbeat interval assumed when the `heartbeat` column is empty. NB-IoT
    /// detectors sleep in PSM and report once a day (vendor practice is 4–24 h; GB 20517
    /// requires a daily battery check, which the heartbeat carries); powered cameras are
    /// polled every minute; water sensors report every 5 minutes because a falling pressure
    /// must be seen within the 2 h patrol of GB 50440 with many readings to spare. `Other`
    /// has no sensible default: guessing short floods offline alarms, guessing long hides
    /// outages, so such rows must give one.
    pub fn default_heartbeat_ms(self) -> Option<u64> {
        match self {
            DeviceKind::SmokeDetector => Some(24 * 3_600_000),
            DeviceKind::Camera => Some(60_000),
            DeviceKind::WaterSensor => Some(5 * 60_000),
            DeviceKind::Other => None,
        }
    }
}

/// One device row, typed. What [`super::Registry::from_records`] takes (a simulator builds
/// these) and what a CSV row becomes once its text is checked.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRecord {
    /// The device id, as in its MQTT topics.
    pub id: DeviceId,
    /// Its kind.
    pub kind: DeviceKind,
    /// Vendor model; may be empty.
    pub model: String,
    /// The building it is installed in.
    pub building: String,
    /// The building's address (free text).
    pub address: String,
    /// The building's latitude, degrees (WGS 84).
    pub lat: f64,
    /// The building's longitude, degrees (WGS 84).
    pub lon: f64,
    /// 网格: the grid responsible for the building.
    pub grid: String,
    /// 社区: the community the grid belongs to.
    pub community: String,
    /// 街道: the street the community belongs to.
    pub street: String,
    /// The village (deployment scope) the grid lies in.
    pub village: VillageId,
    /// 区: the district; one per deployment, optional.
    pub district: Option<String>,
    /// Expected heartbeat interval in ms; `None` takes the kind's default.
    pub heartbeat_ms: Option<u64>,
    /// Number of channels, cameras only.
    pub channels: Option<u16>,
}

/// Why one row is refused. Shown after `line N: `.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RowProblem {
    /// The CSV itself is broken here (wrong number of fields, not UTF-8).
    #[error("{0}")]
    Csv(String),
    /// The header lacks a required column.
    #[error("header has no column {0:?}")]
    MissingColumn(&'static str),
    /// The header names a column this format does not know (likely a typo, which would
    /// otherwise silently drop a value such as a heartbeat interval).
    #[error("header has unknown column {0:?}; known columns are {known}", known = COLUMNS.join(", "))]
    UnknownColumn(String),
    /// The header names a column twice.
    #[error("header names column {0:?} twice")]
    RepeatedColumn(String),
    /// The device or village id breaks the id rule.
    #[error("{column} {value:?}: {source}")]
    BadId {
        /// `device id` or `village`.
        column: &'static str,
        /// The text.
        value: String,
        /// What is wrong with it.
        source: IdError,
    },
    /// The `kind` column names no kind.
    #[error("kind {0:?} is not one of smoke_detector, camera, water_sensor, other")]
    BadKind(String),
    /// A free-text column cannot be stored as an InfluxDB tag or is unreasonably long.
    #[error("{column} {value:?}: {why}")]
    BadText {
        /// The column.
        column: &'static str,
        /// The text.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A number does not parse or is outside its range.
    #[error("{column} {value:?}: {why}")]
    BadNumber {
        /// The column.
        column: &'static str,
        /// The text.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The heartbeat interval does not parse or is outside 1 s to 7 days.
    #[error("heartbeat {value:?}: {why}")]
    BadHeartbeat {
        /// The text.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// A device of kind `other` without a heartbeat interval.
    #[error("kind other needs a heartbeat interval (there is no default for it)")]
    HeartbeatRequired,
    /// A channel count on a device that is not a camera.
    #[error("channels is only for cameras, this device is a {0}")]
    ChannelsNotCamera(&'static str),
    /// The device id was already registered.
    #[error("device id {id:?} is already registered on line {first_line}")]
    Duplicate {
        /// The id.
        id: String,
        /// Where it was first registered.
        first_line: u64,
    },
    /// The row disagrees with an earlier row about the hierarchy or a building's details.
    #[error("{what} {name:?} has {field} {here:?} here but {there:?} on line {first_line}")]
    Inconsistent {
        /// `building`, `grid`, `community`.
        what: &'static str,
        /// Its name.
        name: String,
        /// The disagreeing attribute.
        field: &'static str,
        /// Value on this row.
        here: String,
        /// Value on the earlier row.
        there: String,
        /// The earlier row.
        first_line: u64,
    },
    /// The district differs from the one on earlier rows.
    #[error("district {here:?} differs from {there:?} on line {first_line}; a deployment has one district")]
    SecondDistrict {
        /// Value on this row.
        here: String,
        /// The first district seen.
        there: String,
        /// Where it was seen.
        first_line: u64,
    },
}

/// A bad row: its line (of the row's first line, 1 = the header) and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct RowError {
    /// 1-based line number in the file.
    pub line: u64,
    /// The problem.
    pub problem: RowProblem,
}

/// A row as text, one field per column (missing optional columns are empty).
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct RawRow(pub(super) [String; COLUMNS.len()]);

/// Checks free text that ends up in an InfluxDB tag and an alarm message: non-empty,
/// trimmed, no control characters (a line break would end a line-protocol line, a tab would
/// corrupt the CSV round trip) and no backslash (line protocol's escape character; a
/// trailing one cannot be escaped at all).
fn check_text(
    column: &'static str,
    value: &str,
    max: usize,
    may_be_empty: bool,
) -> Result<String, RowProblem> {
    let bad = |why| Err(RowProblem::BadText { column, value: value.to_owned(), why });
    if value.is_empty() {
        return if may_be_empty { Ok(String::new()) } else { bad("must not be empty") };
    }
    if value.len() > max {
        return bad("is too long");
    }
    if value.contains('\\') {
        return bad("must not contain a backslash (InfluxDB tags cannot carry it reliably)");
    }
    if value.chars().any(char::is_control) {
        return bad("must not contain line breaks, tabs or other control characters");
    }
    if value.trim() != value {
        return bad("must not start or end with whitespace");
    }
    Ok(value.to_owned())
}

/// The value, or `None` with its problem recorded.
fn keep<T>(problems: &mut Vec<RowProblem>, r: Result<T, RowProblem>) -> Option<T> {
    r.map_err(|p| problems.push(p)).ok()
}

fn parse_coordinate(column: &'static str, value: &str, limit: f64) -> Result<f64, RowProblem> {
    let bad = |why| RowProblem::BadNumber { column, value: value.to_owned(), why };
    let v: f64 = value.parse().map_err(|_| bad("is not a number"))?;
    if !v.is_finite() || v.abs() > limit {
        return Err(bad(if limit == 90.0 {
            "must be between -90 and 90"
        } else {
            "must be between -180 and 180"
        }));
    }
    Ok(v)
}

/// Parses a human duration (`24h`, `30s`, `5min`, `1h 30m`) into whole milliseconds within
/// the accepted range.
pub fn parse_heartbeat(value: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    let ms = u64::try_from(d.as_millis()).map_err(|_| "is too long".to_owned())?;
    if Duration::from_millis(ms) != d {
        return Err("must be whole milliseconds".to_owned());
    }
    if !(MIN_HEARTBEAT_MS..=MAX_HEARTBEAT_MS).contains(&ms) {
        return Err("must be between 1s and 7d".to_owned());
    }
    Ok(ms)
}

/// Formats an interval in its largest exact unit (`24h`, `5m`, `90s`, `1500ms`), which
/// [`parse_heartbeat`] reads back to the same value.
pub fn format_heartbeat(ms: u64) -> String {
    match ms {
        0 => "0s".to_owned(),
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1_000) => format!("{}s", ms / 1_000),
        _ => format!("{ms}ms"),
    }
}

impl RawRow {
    fn get(&self, column: &str) -> &str {
        let at = COLUMNS.iter().position(|c| *c == column).expect("known column");
        &self.0[at]
    }

    /// Checks every field, collecting every problem of the row rather than the first.
    pub(super) fn parse(&self) -> Result<DeviceRecord, Vec<RowProblem>> {
        let mut problems = Vec::new();

        let id_text = self.get("device_id");
        let id = keep(
            &mut problems,
            DeviceId::new(id_text).map_err(|source| RowProblem::BadId {
                column: "device id",
                value: id_text.to_owned(),
                source,
            }),
        );
        let kind_text = self.get("kind");
        let kind = keep(
            &mut problems,
            DeviceKind::from_name(kind_text).ok_or_else(|| RowProblem::BadKind(kind_text.to_owned())),
        );
        let model = keep(&mut problems, check_text("model", self.get("model"), MAX_NAME_LEN, true));
        let building =
            keep(&mut problems, check_text("building id", self.get("building_id"), MAX_NAME_LEN, false));
        let address = keep(
            &mut problems,
            check_text("building address", self.get("building_address"), MAX_ADDRESS_LEN, false),
        );
        let lat = keep(&mut problems, parse_coordinate("lat", self.get("lat"), 90.0));
        let lon = keep(&mut problems, parse_coordinate("lon", self.get("lon"), 180.0));
        let grid = keep(&mut problems, check_text("grid", self.get("grid"), MAX_NAME_LEN, false));
        let community =
            keep(&mut problems, check_text("community", self.get("community"), MAX_NAME_LEN, false));
        let street = keep(&mut problems, check_text("street", self.get("street"), MAX_NAME_LEN, false));
        let village_text = self.get("village");
        let village = keep(
            &mut problems,
            VillageId::new(village_text).map_err(|source| RowProblem::BadId {
                column: "village",
                value: village_text.to_owned(),
                source,
            }),
        );
        let district = keep(&mut problems, check_text("district", self.get("district"), MAX_NAME_LEN, true))
            .map(|d| (!d.is_empty()).then_some(d));
        let hb_text = self.get("heartbeat");
        let heartbeat_ms = if hb_text.is_empty() {
            Some(None)
        } else {
            keep(
                &mut problems,
                parse_heartbeat(hb_text)
                    .map(Some)
                    .map_err(|why| RowProblem::BadHeartbeat { value: hb_text.to_owned(), why }),
            )
        };
        let ch_text = self.get("channels");
        let channels = if ch_text.is_empty() {
            Some(None)
        } else {
            keep(
                &mut problems,
                match ch_text.parse::<u16>() {
                    Ok(n) if n >= 1 => Ok(Some(n)),
                    _ => Err(RowProblem::BadNumber {
                        column: "channels",
                        value: ch_text.to_owned(),
                        why: "must be a whole number from 1 to 65535",
                    }),
                },
            )
        };
        if let (Some(kind), Some(Some(_))) = (kind, channels)
            && kind != DeviceKind::Camera
        {
            problems.push(RowProblem::ChannelsNotCamera(kind.as_str()));
        }
        if let (Some(DeviceKind::Other), Some(None)) = (kind, heartbeat_ms) {
            problems.push(RowProblem::HeartbeatRequired);
        }
        match (
            id,
            kind,
            model,
            building,
            address,
            lat,
            lon,
            grid,
            community,
            street,
            village,
            district,
            heartbeat_ms,
            channels,
        ) {
            (
                Some(id),
                Some(kind),
                Some(model),
                Some(building),
                Some(address),
                Some(lat),
                Some(lon),
                Some(grid),
                Some(community),
                Some(street),
                Some(village),
                Some(district),
                Some(heartbeat_ms),
                Some(channels),
            ) if problems.is_empty() => Ok(DeviceRecord {
                id,
                kind,
                model,
                building,
                address,
                lat,
                lon,
                grid,
                community,
                street,
                village,
                district,
                heartbeat_ms,
                channels,
            }),
            _ => Err(problems),
        }
    }
}
