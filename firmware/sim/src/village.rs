//! The village: streets, communities, grids, buildings with coordinates, and the devices in
//! them, generated from a few parameters with a seed (or read back from the registry CSV the
//! gateway imports), and written as that CSV so gateway and simulator always agree.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VillageParams {
    /// The village id (the MQTT topic's `{village}`).
    pub village: String,
    /// The street (街道) the village belongs to.
    pub street: String,
    /// Communities (社区) in the village.
    pub communities: usize,
    /// Grids (网格) per community.
    pub grids_per_community: usize,
    /// Buildings.
    pub buildings: usize,
    /// Smoke detectors, spread over the buildings (at least one per building).
    pub detectors: usize,
    /// Camera channels, in cameras of up to 8 channels, one camera per building at most.
    pub camera_channels: usize,
    /// Water pressure and tank level sensors.
    pub water_sensors: usize,
    /// How often each detector sends its heartbeat (written to the registry too).
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
}

/// The command-line flags that shape a generated village (`firegrid-sim` and `firegrid demo`),
/// with the defaults of [`VillageParams::default`].
#[derive(Debug, Clone, clap::Args)]
pub struct VillageShape {
    /// Detectors (generated villages).
    #[arg(long, default_value_t = 6_000)]
    pub detectors: usize,
    /// Buildings (generated villages).
    #[arg(long, default_value_t = 1_150)]
    pub buildings: usize,
    /// Camera channels (generated villages), each run through the camera agent.
    #[arg(long, default_value_t = 1_200)]
    pub camera_channels: usize,
    /// Water pressure and tank level sensors (generated villages), polled over Modbus.
    #[arg(long, default_value_t = 36)]
    pub water_sensors: usize,
    /// Detector heartbeat interval.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub heartbeat: Duration,
    /// Village id.
    #[arg(long, default_value = "fuhai-1")]
    pub village: String,
    /// Random seed (the same seed gives the same village and device behaviour).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl VillageShape {
    /// The village parameters these flags describe.
    pub fn params(&self) -> VillageParams {
        VillageParams {
            village: self.village.clone(),
            detectors: self.detectors,
            buildings: self.buildings,
            camera_channels: self.camera_channels,
            water_sensors: self.water_sensors,
            heartbeat: self.heartbeat,
            ..VillageParams::default()
        }
    }
}

impl Default for VillageParams {
    /// One of Fuhai street's three villages: about 6,000 detectors in 1,150 buildings and
    /// 1,200 camera channels.
    fn default() -> Self {
        VillageParams {
            village: "fuhai-1".into(),
            street: "Fuhai".into(),
            communities: 4,
            grids_per_community: 10,
            buildings: 1_150,
            detectors: 6_000,
            camera_channels: 1_200,
            water_sensors: 36,
            heartbeat: Duration::from_secs(3_600),
        }
    }
}

/// The `heartbeat` column of each device kind in a registry CSV: how often the gateway
/// hears each kind; `None` leaves the column empty (the gateway's default for the kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryHeartbeats {
    /// Smoke detectors.
    pub detector: Duration,
    /// Cameras.
    pub camera: Option<Duration>,
    /// Water sensors.
    pub water: Option<Duration>,
}

/// What a simulated device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A smoke detector running the firmware core.
    Detector,
    /// A camera with this many channels.
    Camera(u16),
    /// A water sensor (registered so the gateway knows it; polled over Modbus or silent).
    Water,
}

/// One building.
#[derive(Debug, Clone, PartialEq)]
pub struct Building {
    /// Its id.
    pub id: String,
    /// Its grid.
    pub grid: String,
    /// Its community.
    pub community: String,
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
}

/// One device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSpec {
    /// Its id.
    pub id: String,
    /// What it is.
    pub kind: Kind,
    /// Index into [`Village::buildings`].
    pub building: usize,
}

/// A generated (or loaded) village.
#[derive(Debug, Clone, PartialEq)]
pub struct Village {
    /// The village id.
    pub village: String,
    /// Its street.
    pub street: String,
    /// Its buildings, in rows along lanes.
    pub buildings: Vec<Building>,
    /// Its devices.
    pub devices: Vec<DeviceSpec>,
    /// Detector heartbeat interval.
    pub heartbeat: Duration,
}

/// Why a village cannot be generated or loaded.
#[derive(Debug, thiserror::Error)]
pub enum VillageError {
    /// Nonsense parameters.
    #[error("{0}")]
    Params(String),
    /// The registry file.
    #[error("registry {path}: {message}")]
    Registry {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl Village {
    /// Generates a village. Deterministic for a seed: buildings are laid out on a grid of
    /// lanes about 12 m apart (dense 城中村 blocks) around Fuhai's coordinates, and detectors
    /// are spread over buildings with a few more in the bigger ones.
    pub fn generate(p: &VillageParams, seed: u64) -> Result<Village, VillageError> {
        let grids = p.communities * p.grids_per_community;
        if p.buildings == 0 || grids == 0 || p.detectors < p.buildings {
            return Err(VillageError::Params(format!(
                "need at least one building and one grid, and at least one detector per building \
                 ({} detectors for {} buildings)",
                p.detectors, p.buildings
            )));
        }
        let mut rng = fastrand::Rng::with_seed(seed);
        let row = (p.buildings as f64).sqrt().ceil() as usize;
        let buildings: Vec<Building> = (0..p.buildings)
            .map(|b| {
                // Consecutive buildings share a grid, so a grid is a block of neighbours.
                let g = b * grids / p.buildings;
                let community = g / p.grids_per_community;
                Building {
                    id: format!("B{b:04}"),
                    grid: format!("C{community}-G{}", g % p.grids_per_community),
                    community: format!("C{community}"),
                    lat: 25.030 + (b / row) as f64 * 0.000_11,
                    lon: 102.660 + (b % row) as f64 * 0.000_13,
                }
            })
            .collect();
        let mut devices = Vec::with_capacity(p.detectors + p.camera_channels / 4 + p.water_sensors);
        let mut per_building = vec![1usize; p.buildings];
        for _ in p.buildings..p.detectors {
            per_building[rng.usize(..p.buildings)] += 1;
        }
        let mut n = 0;
        for (b, count) in per_building.iter().enumerate() {
            for _ in 0..*count {
                devices.push(DeviceSpec { id: format!("sd-{n:05}"), kind: Kind::Detector, building: b });
                n += 1;
            }
        }
        let mut channels = p.camera_channels;
        let mut c = 0;
        while channels > 0 {
            let here = channels.min(8);
            let building = (c * 7919) % p.buildings;
            devices.push(DeviceSpec { id: format!("cam-{c:04}"), kind: Kind::Camera(here as u16), building });
            channels -= here;
            c += 1;
        }
        for w in 0..p.water_sensors {
            let building = (w * 104_729) % p.buildings;
            devices.push(DeviceSpec { id: format!("ws-{w:03}"), kind: Kind::Water, building });
        }
        Ok(Village {
            village: p.village.clone(),
            street: p.street.clone(),
            buildings,
            devices,
            heartbeat: p.heartbeat,
        })
    }

    /// The registry CSV the gateway imports (`gateway/REGISTRY.md`), with the detectors'
    /// heartbeat interval and the gateway's defaults for the other kinds.
    pub fn registry_csv(&self) -> String {
        self.registry_csv_with(&RegistryHeartbeats { detector: self.heartbeat, camera: None, water: None })
    }

    /// The registry CSV with the `heartbeat` column of each kind given.
    pub fn registry_csv_with(&self, heartbeats: &RegistryHeartbeats) -> String {
        let mut out = String::from(
            "device_id,kind,model,building_id,building_address,lat,lon,grid,community,street,village,heartbeat,channels\n",
        );
        let text = |d: Option<Duration>| {
            d.map(|d| humantime::format_duration(d).to_string().replace(' ', "")).unwrap_or_default()
        };
        let (detector, camera, water) =
            (text(Some(heartbeats.detector)), text(heartbeats.camera), text(heartbeats.water));
        for d in &self.devices {
            let b = &self.buildings[d.building];
            let (kind, model, heartbeat, channels) = match d.kind {
                Kind::Detector => ("smoke_detector", "firegrid-sd", detector.as_str(), String::new()),
                Kind::Camera(ch) => ("camera", "ipc", camera.as_str(), ch.to_string()),
                Kind::Water => ("water_sensor", "pt-100", water.as_str(), String::new()),
            };
            let _ = writeln!(
                out,
                "{},{kind},{model},{},No. {} Lane {},{:.6},{:.6},{},{},{},{},{heartbeat},{channels}",
                d.id,
                b.id,
                d.building % 40 + 1,
                d.building / 40 + 1,
                b.lat,
                b.lon,
                b.grid,
                b.community,
                self.street,
                self.village,
            );
        }
        out
    }

    /// Reads a village back from a registry CSV (detectors and cameras; other kinds are
    /// kept as water sensors). Heartbeats of detectors default to one hour when empty.
    pub fn from_registry(path: &Path) -> Result<Village, VillageError> {
        let err = |message: String| VillageError::Registry { path: path.display().to_string(), message };
        let mut reader = csv::Reader::from_path(path).map_err(|e| err(e.to_string()))?;
        let headers = reader.headers().map_err(|e| err(e.to_string()))?.clone();
        let col = |name: &str| {
            headers.iter().position(|h| h == name).ok_or_else(|| err(format!("no `{name}` column")))
        };
        let (id, kind, building, lat, lon, grid, community, street, village) = (
            col("device_id")?,
            col("kind")?,
            col("building_id")?,
            col("lat")?,
            col("lon")?,
            col("grid")?,
            col("community")?,
            col("street")?,
            col("village")?,
        );
        let channels = headers.iter().position(|h| h == "channels");
        let heartbeat_col = headers.iter().position(|h| h == "heartbeat");
        let mut v = Village {
            village: String::new(),
            street: String::new(),
            buildings: Vec::new(),
            devices: Vec::new(),
            heartbeat: Duration::from_secs(3_600),
        };
        let mut index = std::collections::HashMap::new();
        for (line, row) in reader.records().enumerate() {
            let row = row.map_err(|e| err(format!("line {}: {e}", line + 2)))?;
            let get = |i: usize| row.get(i).unwrap_or("").trim().to_owned();
            v.village = get(village);
            v.street = get(street);
            if let Some(h) = heartbeat_col.map(get).filter(|h| !h.is_empty())
                && get(kind) == "smoke_detector"
            {
                v.heartbeat =
                    humantime::parse_duration(&h).map_err(|e| err(format!("line {}: {e}", line + 2)))?;
            }
            let b = *index.entry(get(building)).or_insert_with(|| {
                v.buildings.push(Building {
                    id: get(building),
                    grid: get(grid),
                    community: get(community),
                    lat: get(lat).parse().unwrap_or(0.0),
                    lon: get(lon).parse().unwrap_or(0.0),
                });
                v.buildings.len() - 1
            });
            let kind = match get(kind).as_str() {
                "smoke_detector" => Kind::Detector,
                "camera" => Kind::Camera(channels.map(get).and_then(|c| c.parse().ok()).unwrap_or(1)),
                _ => Kind::Water,
            };
            v.devices.push(DeviceSpec { id: get(id), kind, building: b });
        }
        Ok(v)
    }

    /// Indexes of the buildings within `metres` of building `b` (for fire spread).
    pub fn neighbours(&self, b: usize, metres: f64) -> Vec<usize> {
        let (lat, lon) = (self.buildings[b].lat, self.buildings[b].lon);
        self.buildings
            .iter()
            .enumerate()
            .filter(|(i, o)| {
                let dy = (o.lat - lat) * 111_000.0;
                let dx = (o.lon - lon) * 101_000.0;
                *i != b && (dx * dx + dy * dy).sqrt() <= metres
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Detectors in building `b`.
    pub fn detectors_in(&self, b: usize) -> impl Iterator<Item = usize> + '_ {
        self.devices
            .iter()
            .enumerate()
            .filter(move |(_, d)| d.building == b && d.kind == Kind::Detector)
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_village_is_sized_like_fuhai_and_round_trips_through_the_registry() {
        let v = Village::generate(&VillageParams::default(), 7).unwrap();
        let detectors = v.devices.iter().filter(|d| d.kind == Kind::Detector).count();
        let channels: u16 =
            v.devices.iter().filter_map(|d| if let Kind::Camera(c) = d.kind { Some(c) } else { None }).sum();
        assert_eq!((v.buildings.len(), detectors, channels), (1_150, 6_000, 1_200));
        assert!(
            v.buildings
                .iter()
                .all(|b| v.detectors_in(v.buildings.iter().position(|x| x == b).unwrap()).count() >= 1)
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.csv");
        std::fs::write(&path, v.registry_csv()).unwrap();
        let back = Village::from_registry(&path).unwrap();
        assert_eq!(back.devices.len(), v.devices.len());
        assert_eq!(back.buildings.len(), v.buildings.len());
        assert_eq!(back.heartbeat, v.heartbeat);
        assert_eq!(Village::generate(&VillageParams::default(), 7).unwrap(), v, "deterministic for a seed");
    }

    #[test]
    fn neighbours_are_the_buildings_next_door() {
        let v = Village::generate(
            &VillageParams { buildings: 100, detectors: 100, ..VillageParams::default() },
            1,
        )
        .unwrap();
        let n = v.neighbours(55, 20.0);
        assert!(!n.is_empty() && n.len() <= 8, "{n:?}");
        assert!(!n.contains(&55));
    }
}
