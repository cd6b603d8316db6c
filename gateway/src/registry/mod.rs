//! The device registry: every device the gateway expects, where it is installed and who is
//! responsible for it.
//!
//! The hierarchy is device → building → grid (网格) → community (社区) → street (街道), with
//! the village (the deployment scope of one gateway) over the grids and one district (区)
//! per deployment. Street offices keep it in spreadsheets, so the source of truth is a CSV
//! file (its format is documented in `gateway/REGISTRY.md`); [`Registry::load`] reads it and
//! reports **every** bad row with its line number, [`Registry::write_csv`] writes it back.
//!
//! A [`Registry`] is immutable once built. Reloading without a restart means loading a new
//! one and swapping the shared pointer (`arc_swap::ArcSwap<Registry>` in the runtime): readers
//! see either the old or the new registry, never a mix, and a reload that fails leaves the old
//! one in place because nothing was swapped.
//!
//! Lookups by device id are O(1) ([`Registry::get`]); [`Registry::in_scope`] lists the devices
//! of a building, grid, community or village for the liveness engine. Hierarchy names are
//! interned (`Arc<str>`), so 50,000 devices in 10,000 buildings hold each name once.

mod record;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use firegrid_protocol::{DeviceId, VillageId};
use record::{COLUMNS, REQUIRED, RawRow};
pub use record::{DeviceKind, DeviceRecord, RowError, RowProblem, format_heartbeat, parse_heartbeat};

/// A building and its place in the hierarchy, shared by the devices installed in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Building {
    /// The building id (free text, unique in the registry).
    pub id: Arc<str>,
    /// Its address (free text).
    pub address: Arc<str>,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// 网格: the responsible grid.
    pub grid: Arc<str>,
    /// 社区: the grid's community.
    pub community: Arc<str>,
    /// 街道: the community's street.
    pub street: Arc<str>,
    /// The village the grid lies in (a valid [`VillageId`]).
    pub village: Arc<str>,
}

/// One registered device.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    /// Its id.
    pub id: DeviceId,
    /// Its kind.
    pub kind: DeviceKind,
    /// Camera channel count, if given.
    pub channels: Option<u16>,
    /// Expected heartbeat interval, ms (the kind's default if the row left it empty).
    pub heartbeat_ms: u64,
    /// Vendor model (may be empty).
    pub model: Arc<str>,
    /// Where it is installed.
    pub building: Arc<Building>,
}

impl Device {
    /// The four scopes the device belongs to, narrowest first.
    pub fn scopes(&self) -> [Scope; 4] {
        let b = &self.building;
        [
            Scope { level: ScopeLevel::Building, name: b.id.clone() },
            Scope { level: ScopeLevel::Grid, name: b.grid.clone() },
            Scope { level: ScopeLevel::Community, name: b.community.clone() },
            Scope { level: ScopeLevel::Village, name: b.village.clone() },
        ]
    }
}

/// A level at which devices are grouped for correlated outages, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeLevel {
    /// One building.
    Building,
    /// 网格: one grid.
    Grid,
    /// 社区: one community.
    Community,
    /// One village: everything one gateway serves there.
    Village,
}

impl ScopeLevel {
    /// Every level, narrowest first.
    pub const ALL: [ScopeLevel; 4] =
        [ScopeLevel::Building, ScopeLevel::Grid, ScopeLevel::Community, ScopeLevel::Village];
}

/// A group of devices: a building, grid, community or village, by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    /// Its level.
    pub level: ScopeLevel,
    /// Its name at that level (building id, grid, community or village id).
    pub name: Arc<str>,
}

/// Why a registry could not be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The file could not be opened, read or written.
    #[error("registry file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Writing CSV failed.
    #[error("writing the registry: {0}")]
    Write(#[from] csv::Error),
    /// Rows were refused; every bad row is listed, in file order.
    #[error("{} bad registry rows:\n{}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Rows(Vec<RowError>),
}

/// The registry: devices by id and by scope.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registry {
    /// In file order (which is the order written back).
    devices: Vec<Arc<Device>>,
    /// Looked up for every message: a fast hash. Its keys come from the registry file alone, so
    /// no sender can choose colliding ones.
    by_id: HashMap<DeviceId, u32, foldhash::fast::RandomState>,
    by_scope: HashMap<Scope, Vec<u32>>,
    district: Option<Arc<str>>,
}

impl Registry {
    /// Loads a registry file. On error nothing is returned but the list of every bad row,
    /// so a caller that reloads keeps the registry it has.
    pub fn load(path: impl AsRef<Path>) -> Result<Registry, RegistryError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(io_err(path))?;
        Registry::from_reader(io::BufReader::new(file))
    }

    /// Parses registry CSV (UTF-8, header row first; see `gateway/REGISTRY.md`).
    pub fn from_reader(reader: impl io::Read) -> Result<Registry, RegistryError> {
        let mut csv = csv::ReaderBuilder::new().trim(csv::Trim::All).has_headers(false).from_reader(reader);
        let mut records = csv.records();
        let mut errors = Vec::new();
        let header = match records.next() {
            Some(Ok(h)) => h,
            Some(Err(e)) => return Err(RegistryError::Rows(vec![csv_error(e, 1)])),
            None => {
                return Err(RegistryError::Rows(vec![RowError {
                    line: 1,
                    problem: RowProblem::Csv("the file is empty; a header row is required".to_owned()),
                }]));
            }
        };
        // Where each known column sits in this file's rows.
        let mut positions: [Option<usize>; COLUMNS.len()] = [None; COLUMNS.len()];
        for (at, name) in header.iter().enumerate() {
            let problem = match COLUMNS.iter().position(|c| *c == name) {
                Some(col) if positions[col].is_some() => RowProblem::RepeatedColumn(name.to_owned()),
                Some(col) => {
                    positions[col] = Some(at);
                    continue;
                }
                None => RowProblem::UnknownColumn(name.to_owned()),
            };
            errors.push(RowError { line: 1, problem });
        }
        for col in REQUIRED {
            if positions[COLUMNS.iter().position(|c| *c == col).unwrap()].is_none() {
                errors.push(RowError { line: 1, problem: RowProblem::MissingColumn(col) });
            }
        }
        if !errors.is_empty() {
            return Err(RegistryError::Rows(errors));
        }

        let mut rows = Vec::new();
        let mut last_line = 1;
        for result in records {
            let record = match result {
                Ok(r) => r,
                Err(e) => {
                    let io = matches!(e.kind(), csv::ErrorKind::Io(_));
                    errors.push(csv_error(e, last_line + 1));
                    // An I/O error repeats forever; a malformed row is skipped and reading goes on.
                    if io {
                        break;
                    }
                    continue;
                }
            };
            let line = record.position().map_or(last_line + 1, |p| p.line());
            last_line = line;
            let mut raw = RawRow::default();
            for (col, at) in positions.iter().enumerate() {
                if let Some(at) = at {
                    raw.0[col] = record.get(*at).unwrap_or_default().to_owned();
                }
            }
            match raw.parse() {
                Ok(rec) => rows.push((line, rec)),
                Err(problems) => {
                    errors.extend(problems.into_iter().map(|problem| RowError { line, problem }))
                }
            }
        }
        Registry::assemble(rows, errors)
    }

    /// Builds a registry from typed records (a simulator generating a village), checked
    /// exactly as CSV rows are; record `i` is reported as line `i + 2`, where it would be in
    /// the file [`Registry::write_csv`] writes.
    pub fn from_records(records: impl IntoIterator<Item = DeviceRecord>) -> Result<Registry, RegistryError> {
        let mut rows = Vec::new();
        let mut errors = Vec::new();
        for (i, rec) in records.into_iter().enumerate() {
            let line = i as u64 + 2;
            match to_raw(&rec).parse() {
                Ok(rec) => rows.push((line, rec)),
                Err(problems) => {
                    errors.extend(problems.into_iter().map(|problem| RowError { line, problem }))
                }
            }
        }
        Registry::assemble(rows, errors)
    }

    /// Checks ids for duplicates and the hierarchy for consistency, interns names and
    /// builds the indexes.
    fn assemble(
        rows: Vec<(u64, DeviceRecord)>,
        mut errors: Vec<RowError>,
    ) -> Result<Registry, RegistryError> {
        let mut names: std::collections::HashSet<Arc<str>> = std::collections::HashSet::new();
        let mut intern = |s: &str| -> Arc<str> {
            if let Some(a) = names.get(s) {
                return a.clone();
            }
            let a: Arc<str> = Arc::from(s);
            names.insert(a.clone());
            a
        };
        let mut first_line: HashMap<DeviceId, u64> = HashMap::with_capacity(rows.len());
        let mut buildings: HashMap<Arc<str>, (u64, Arc<Building>)> = HashMap::new();
        // Grid → (line, community, village); community → (line, street).
        let mut grids: HashMap<Arc<str>, (u64, Arc<str>, Arc<str>)> = HashMap::new();
        let mut communities: HashMap<Arc<str>, (u64, Arc<str>)> = HashMap::new();
        let mut district: Option<(u64, Arc<str>)> = None;
        let mut devices = Vec::with_capacity(rows.len());

        for (line, rec) in rows {
            let mut problems = Vec::new();
            match first_line.entry(rec.id.clone()) {
                Entry::Occupied(e) => problems
                    .push(RowProblem::Duplicate { id: rec.id.as_str().to_owned(), first_line: *e.get() }),
                Entry::Vacant(e) => {
                    e.insert(line);
                }
            }
            let mut mismatch = |what, name: &str, field, here: &str, there: &str, first_line| {
                if here != there {
                    problems.push(RowProblem::Inconsistent {
                        what,
                        name: name.to_owned(),
                        field,
                        here: here.to_owned(),
                        there: there.to_owned(),
                        first_line,
                    });
                }
            };
            let building = match buildings.get(rec.building.as_str()) {
                Some((l, b)) => {
                    mismatch("building", &b.id, "grid", &rec.grid, &b.grid, *l);
                    mismatch("building", &b.id, "address", &rec.address, &b.address, *l);
                    let (here, there) = (format!("{},{}", rec.lat, rec.lon), format!("{},{}", b.lat, b.lon));
                    mismatch("building", &b.id, "coordinates", &here, &there, *l);
                    b.clone()
                }
                None => {
                    let b = Arc::new(Building {
                        id: intern(&rec.building),
                        address: intern(&rec.address),
                        lat: rec.lat,
                        lon: rec.lon,
                        grid: intern(&rec.grid),
                        community: intern(&rec.community),
                        street: intern(&rec.street),
                        village: intern(rec.village.as_str()),
                    });
                    buildings.insert(b.id.clone(), (line, b.clone()));
                    b
                }
            };
            match grids.get(rec.grid.as_str()) {
                Some((l, community, village)) => {
                    mismatch("grid", &rec.grid, "community", &rec.community, community, *l);
                    mismatch("grid", &rec.grid, "village", rec.village.as_str(), village, *l);
                }
                None => {
                    grids.insert(
                        building.grid.clone(),
                        (line, intern(&rec.community), intern(rec.village.as_str())),
                    );
                }
            }
            match communities.get(rec.community.as_str()) {
                Some((l, street)) => mismatch("community", &rec.community, "street", &rec.street, street, *l),
                None => {
                    communities.insert(intern(&rec.community), (line, intern(&rec.street)));
                }
            }
            match (&district, &rec.district) {
                (Some((l, there)), Some(here)) if **there != **here => {
                    problems.push(RowProblem::SecondDistrict {
                        here: here.clone(),
                        there: there.to_string(),
                        first_line: *l,
                    })
                }
                (None, Some(here)) => district = Some((line, intern(here))),
                _ => {}
            }
            if !problems.is_empty() {
                errors.extend(problems.into_iter().map(|problem| RowError { line, problem }));
                continue;
            }
            let heartbeat_ms = rec
                .heartbeat_ms
                .or(rec.kind.default_heartbeat_ms())
                .expect("parse refuses kind other without an interval");
            devices.push((
                line,
                Arc::new(Device {
                    id: rec.id,
                    kind: rec.kind,
                    channels: rec.channels,
                    heartbeat_ms,
                    model: intern(&rec.model),
                    building,
                }),
            ));
        }
        if !errors.is_empty() {
            errors.sort_by_key(|e| e.line);
            return Err(RegistryError::Rows(errors));
        }
        let devices: Vec<Arc<Device>> = devices.into_iter().map(|(_, d)| d).collect();
        let mut by_id = HashMap::with_capacity_and_hasher(devices.len(), Default::default());
        let mut by_scope: HashMap<Scope, Vec<u32>> = HashMap::new();
        for (i, d) in devices.iter().enumerate() {
            by_id.insert(d.id.clone(), i as u32);
            for scope in d.scopes() {
                by_scope.entry(scope).or_default().push(i as u32);
            }
        }
        for members in by_scope.values_mut() {
            members.shrink_to_fit();
        }
        Ok(Registry { devices, by_id, by_scope, district: district.map(|(_, d)| d) })
    }

    /// Writes the registry as CSV, every column, one row per device in registry order.
    /// [`Registry::from_reader`] reads it back to an equal registry.
    pub fn write_csv(&self, writer: impl io::Write) -> Result<(), RegistryError> {
        let mut csv = csv::Writer::from_writer(writer);
        csv.write_record(COLUMNS)?;
        for d in &self.devices {
            csv.write_record(&to_raw(&self.record(d)).0)?;
        }
        csv.flush().map_err(|e| RegistryError::Write(e.into()))?;
        Ok(())
    }

    /// Writes the registry to a file, through a temporary file beside it and a rename, so
    /// that a gateway reloading the file never reads half of it.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), RegistryError> {
        let path = path.as_ref();
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        let mut out = io::BufWriter::new(file);
        self.write_csv(&mut out)?;
        let file = out.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?;
        file.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))
    }

    /// The device with this id: O(1).
    pub fn get(&self, id: &DeviceId) -> Option<&Arc<Device>> {
        self.by_id.get(id).map(|i| &self.devices[*i as usize])
    }

    /// The position of a device in [`Registry::devices`]: O(1). Stable for the life of
    /// this registry, so other state can be kept in a parallel array.
    pub fn index_of(&self, id: &DeviceId) -> Option<usize> {
        self.by_id.get(id).map(|i| *i as usize)
    }

    /// Every device, in file order.
    pub fn devices(&self) -> &[Arc<Device>] {
        &self.devices
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether there are no devices.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Positions (in [`Registry::devices`]) of the devices in a scope; empty for an unknown
    /// scope.
    pub fn scope_members(&self, scope: &Scope) -> &[u32] {
        self.by_scope.get(scope).map_or(&[], Vec::as_slice)
    }

    /// The devices of a building, grid, community or village.
    pub fn in_scope(&self, scope: &Scope) -> impl Iterator<Item = &Arc<Device>> {
        self.scope_members(scope).iter().map(|i| &self.devices[*i as usize])
    }

    /// Every scope with at least one device.
    pub fn scopes(&self) -> impl Iterator<Item = &Scope> {
        self.by_scope.keys()
    }

    /// The deployment's district, if the file names one.
    pub fn district(&self) -> Option<&str> {
        self.district.as_deref()
    }

    /// The typed record a device was built from (with its interval made explicit).
    pub fn record(&self, d: &Device) -> DeviceRecord {
        let b = &d.building;
        DeviceRecord {
            id: d.id.clone(),
            kind: d.kind,
            model: d.model.to_string(),
            building: b.id.to_string(),
            address: b.address.to_string(),
            lat: b.lat,
            lon: b.lon,
            grid: b.grid.to_string(),
            community: b.community.to_string(),
            street: b.street.to_string(),
            village: VillageId::new(&b.village).expect("checked on load"),
            district: self.district.as_deref().map(str::to_owned),
            heartbeat_ms: Some(d.heartbeat_ms),
            channels: d.channels,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io { path: path.to_owned(), source }
}

fn csv_error(e: csv::Error, fallback_line: u64) -> RowError {
    let line = e.position().map_or(fallback_line, |p| p.line());
    let message = match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("row has {len} fields but the header has {expected_len}")
        }
        csv::ErrorKind::Utf8 { .. } => "row is not UTF-8 (save the spreadsheet as \"CSV UTF-8\")".to_owned(),
        _ => e.to_string(),
    };
    RowError { line, problem: RowProblem::Csv(message) }
}

fn to_raw(rec: &DeviceRecord) -> RawRow {
    let fields = [
        rec.id.as_str().to_owned(),
        rec.kind.as_str().to_owned(),
        rec.model.clone(),
        rec.building.clone(),
        rec.address.clone(),
        rec.lat.to_string(),
        rec.lon.to_string(),
        rec.grid.clone(),
        rec.community.clone(),
        rec.street.clone(),
        rec.village.as_str().to_owned(),
        rec.district.clone().unwrap_or_default(),
        rec.heartbeat_ms.map(format_heartbeat).unwrap_or_default(),
        rec.channels.map(|c| c.to_string()).unwrap_or_default(),
    ];
    RawRow(fields)
}
