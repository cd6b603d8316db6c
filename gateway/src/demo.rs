//! `firegrid demo`: the whole system on one machine with nothing else installed.
//!
//! One process runs the embedded broker (or uses an external one), the gateway with its
//! alarm loop and local spool archive (or an external InfluxDB), and a simulated village in
//! which every detector is the detector firmware core on a simulated front end
//! (`firegrid-sim`) and every camera channel goes through the camera agent. The village
//! plays a scripted day ([`scripted_day`]) in simulated time; the alarm loop's deadlines run
//! on the real clock, so an unanswered case escalates while one watches.
//!
//! Everything the demo generates is written to its data directory as ordinary files
//! (`registry.csv`, `scenario.toml`, `officers.toml`, `gateway.toml`), so the same gateway
//! can be started again with `firegrid run --config <dir>/gateway.toml`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use firegrid_cases::store::{CaseFilter, CaseState};
use firegrid_sim::scenario::{BatteryDecay, Chatter, Cooking, Fire, FireGrowth, Outage, Removal, WaterDrop};
use firegrid_sim::{Fleet, Mode, RunConfig, Scenario, Village, VillageParams, WaterSensors};

use crate::config::Config;
use crate::runtime::Gateway;

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The village parameters make no village.
    #[error("generating the village: {0}")]
    Village(#[from] firegrid_sim::village::VillageError),
    /// The village is too small for the script.
    #[error("the village is too small for the scripted day: {0}; give it more buildings")]
    TooSmall(&'static str),
    /// The scenario does not fit the village (a bug: the script picks from the village).
    #[error("the scripted day: {0}")]
    Scenario(#[from] firegrid_sim::scenario::ScenarioError),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The device keys could not be issued or loaded.
    #[error("device keys: {0}")]
    Keys(String),
    /// The generated configuration does not load (a bug).
    #[error("the generated gateway configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// The gateway did not start.
    #[error(
        "the gateway did not start: {error}\n(the demo needs the HTTP address {http} and, without --mqtt, the \
         broker address {broker}: free them or choose others with --http and --broker)"
    )]
    Start {
        /// Why.
        error: Box<crate::runtime::StartError>,
        /// The HTTP address asked for.
        http: SocketAddr,
        /// The broker address asked for.
        broker: SocketAddr,
    },
}

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The village's shape.
    pub village: VillageParams,
    /// Seed for the village and its devices (same seed, same village).
    pub seed: u64,
    /// Simulated seconds per real second.
    pub speed: f64,
    /// Simulated time to play.
    pub duration: Duration,
    /// Where to keep the generated files and the gateway's data; `None`: a temporary
    /// directory removed at exit.
    pub data_dir: Option<PathBuf>,
    /// HTTP address of the console, API and metrics.
    pub http_listen: SocketAddr,
    /// Address of the embedded broker.
    pub broker_listen: SocketAddr,
    /// An external broker (host, port) instead of the embedded one.
    pub mqtt: Option<(String, u16)>,
    /// An external InfluxDB 1.x-compatible `/write` endpoint (base URL) instead of the local
    /// archive only, with its database.
    pub influx: Option<(String, String)>,
    /// The district (top desk).
    pub district: String,
    /// How often to print progress.
    pub report_every: Duration,
    /// When the scripted fire starts, simulated time.
    pub fire_at: Duration,
    /// How long after it starts (in each building) the fire is put out.
    pub fire_out_after: Duration,
    /// A webhook every desk's pages also go to (HMAC-signed with the secret `demo`).
    pub webhook: Option<String>,
    /// An offline PMTiles archive drawn under the console's village map.
    pub basemap: Option<PathBuf>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            village: VillageParams::default(),
            seed: 1,
            speed: 10.0,
            duration: Duration::from_secs(24 * 3_600),
            data_dir: None,
            http_listen: ([127, 0, 0, 1], 8080).into(),
            broker_listen: ([127, 0, 0, 1], 1883).into(),
            mqtt: None,
            influx: None,
            district: "Xishan".into(),
            report_every: Duration::from_secs(5),
            fire_at: Duration::from_secs(5 * 60),
            fire_out_after: Duration::from_secs(20 * 60),
            webhook: None,
            basemap: None,
        }
    }
}

/// The buildings and devices the script uses, and the cases it opens.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    /// The scenario.
    pub scenario: Scenario,
    /// The building that catches fire.
    pub fire_building: String,
    /// Its grid.
    pub fire_grid: String,
    /// A grid with nothing of the fire in it (its officer sees none of it).
    pub other_grid: String,
    /// The cases the day opens, one per case (events that merge into one case, such as a
    /// tamper and a low battery in one building, are one entry), in the order they are due.
    pub expected: Vec<ExpectedCase>,
}

/// One case the scripted day opens, and when, in simulated time from the start of the day.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExpectedCase {
    /// The alarm engine's case kind (`fire` covers pre-alarms and nuisance alarms).
    pub kind: firegrid_alerting::CaseKind,
    /// The building; for a communication loss, the scope that went dark (grid, community or
    /// village name).
    pub place: String,
    /// What in the script opens it.
    pub why: String,
    /// It cannot open before this.
    #[serde(with = "humantime_serde")]
    pub opens_after: Duration,
    /// It is open by this.
    #[serde(with = "humantime_serde")]
    pub open_by: Duration,
}

impl ExpectedCase {
    fn new(
        kind: firegrid_alerting::CaseKind,
        place: &str,
        why: String,
        from: Duration,
        by: Duration,
    ) -> Self {
        ExpectedCase { kind, place: place.to_owned(), why, opens_after: from, open_by: by }
    }
}

/// How often the gateway hears each kind of the demo's devices, in real time: the
/// `heartbeat` column of the registry the demo writes. The demo's gateway runs liveness on
/// the real clock while a simulated detector sends a heartbeat every `village.heartbeat` of
/// simulated time, so the gateway hears it every `heartbeat / speed` (rounded up to the
/// millisecond, at least the registry's 1 s); a registry listing the simulated interval would
/// never see an outage shorter than three of them in real time.
pub fn registry_heartbeats(village: &Village, speed: f64) -> firegrid_sim::village::RegistryHeartbeats {
    let real_ms = (village.heartbeat.as_secs_f64() * 1_000.0 / speed).ceil().max(1_000.0);
    firegrid_sim::village::RegistryHeartbeats {
        detector: Duration::from_millis(real_ms as u64),
        camera: Some(firegrid_sim::cameras::STATUS_EVERY),
        // Water sensors are polled over Modbus every few seconds; every reading counts, so
        // the registry's default for the kind (5 min) holds.
        water: crate::registry::DeviceKind::WaterSensor.default_heartbeat_ms().map(Duration::from_millis),
    }
}

/// The scripted day for `village` played at `speed`: a cooking false alarm a few minutes in,
/// a detector pulled off its base, a chattering detector, a flaming fire at `fire_at` (the
/// demo: minute 5) that spreads to the neighbouring buildings four minutes later and is put
/// out `fire_out_after` (the demo: 20 minutes) after it starts in each (so that its latched
/// alarms can be reset and the cases closed), a grid losing its NB-IoT cell from the first
/// hour (its detectors go silent: offline, or a communication loss of the grid), a sprinkler
/// main's pressure falling while the fire is fought, meal-time cooking waves and failing
/// batteries (faults). Nobody acknowledges anything unless the person at the console does,
/// so every case escalates on schedule.
///
/// Every event names its buildings or devices (picked from the village, the same for the
/// same village), so [`Script::expected`] lists the cases the day opens before it starts.
pub fn scripted_day(
    village: &Village,
    fire_at: Duration,
    fire_out_after: Duration,
    speed: f64,
) -> Result<Script, DemoError> {
    use firegrid_alerting::CaseKind;
    use firegrid_sim::village::Kind;

    let detectors = |b: usize| village.detectors_in(b).count();
    let fire = (0..village.buildings.len())
        .find(|&b| detectors(b) >= 2 && village.neighbours(b, 15.0).iter().any(|&n| detectors(n) >= 2))
        .ok_or(DemoError::TooSmall("no building with two detectors next to another such building"))?;
    let fire_building = &village.buildings[fire];
    let first_detector = |skip: &dyn Fn(&str) -> bool| {
        village.buildings.iter().enumerate().find_map(|(b, building)| {
            if skip(&building.grid) {
                return None;
            }
            village.detectors_in(b).next().map(|d| village.devices[d].id.clone())
        })
    };
    let in_fire_grid = |grid: &str| grid == fire_building.grid;
    let removed = first_detector(&in_fire_grid).ok_or(DemoError::TooSmall("a single grid"))?;
    let mut grids: Vec<&str> = village.buildings.iter().map(|b| b.grid.as_str()).collect();
    grids.sort();
    grids.dedup();
    let other_grid =
        grids.iter().find(|g| **g != fire_building.grid).ok_or(DemoError::TooSmall("a single grid"))?;
    let outage_grid = grids.iter().rev().find(|g| **g != fire_building.grid && *g != other_grid);
    let chatterer = village
        .buildings
        .iter()
        .enumerate()
        .rev()
        .find_map(|(b, building)| {
            (!in_fire_grid(&building.grid)).then(|| village.detectors_in(b).next()).flatten()
        })
        .map(|d| village.devices[d].id.clone());
    let minutes = |m: u64| Duration::from_secs(60 * m);
    let fire_spec = Fire {
        building: fire_building.id.clone(),
        at: fire_at,
        growth: FireGrowth::Flaming,
        spread_after: Some(minutes(4)),
        spread_radius_m: 15.0,
        out_after: Some(fire_out_after),
    };
    let burning: Vec<usize> = std::iter::once(fire).chain(village.neighbours(fire, 15.0)).collect();
    let device_building = |id: &str| village.devices.iter().find(|d| d.id == id).map(|d| d.building);
    let chatter_building = chatterer.as_deref().and_then(device_building);

    // Who cooks and whose cell is failing, picked once from the village with a fixed seed
    // (the same village, the same picks) instead of drawn as shares while the day plays.
    let mut pick = fastrand::Rng::with_seed(0xC00C);
    let mut cooks: Vec<usize> = (0..village.buildings.len())
        .filter(|b| !burning.contains(b) && Some(*b) != chatter_building)
        .collect();
    pick.shuffle(&mut cooks);
    let wave = |share: f64| ((village.buildings.len() as f64 * share).round() as usize).max(1);
    let mut waves = Vec::new();
    for (at, count) in
        [(minutes(2), 2), (minutes(11 * 60 + 30), wave(0.004)), (minutes(18 * 60), wave(0.004))]
    {
        let take = count.min(cooks.len());
        waves.push((at, cooks.drain(..take).collect::<Vec<usize>>()));
    }
    let mut all_detectors: Vec<usize> = village
        .devices
        .iter()
        .enumerate()
        .filter(|(_, d)| d.kind == Kind::Detector)
        .map(|(i, _)| i)
        .collect();
    pick.shuffle(&mut all_detectors);
    let failing: Vec<usize> = all_detectors.into_iter().take(wave(0.003)).collect();

    // The outage must outlast the liveness window of every detector behind it, counted in
    // simulated time: `missed_heartbeats` intervals after its last heartbeat plus the grace,
    // which runs on the gateway's real clock (so it is `speed` times longer here), plus a
    // margin for the once-a-second liveness tick and the transport.
    let liveness = crate::liveness::LivenessConfig::default();
    let n = liveness.missed_heartbeats.max(2);
    let heartbeat = village.heartbeat;
    let grace = Duration::from_millis(liveness.grace_ms).mul_f64(speed);
    let margin = minutes(10) + Duration::from_secs(5).mul_f64(speed);
    let outage_at = minutes(60);
    let silent_by = heartbeat * n + grace + margin;
    let outage_for = minutes(180).max(silent_by + heartbeat);

    let water_sensor = village.devices.iter().find(|d| d.kind == Kind::Water);
    let water_at = fire_at + minutes(2);
    let scenario = Scenario {
        fire: vec![fire_spec],
        cooking: waves
            .iter()
            .map(|(at, buildings)| Cooking {
                at: *at,
                share: 0.0,
                buildings: buildings.iter().map(|&b| village.buildings[b].id.clone()).collect(),
            })
            .collect(),
        outage: outage_grid
            .map(|g| Outage { grid: (*g).to_owned(), at: outage_at, duration: outage_for })
            .into_iter()
            .collect(),
        removal: vec![Removal { device: removed.clone(), at: minutes(3) }],
        chatter: chatterer
            .iter()
            .map(|device| Chatter {
                device: device.clone(),
                at: minutes(30),
                period: Duration::from_secs(15),
                cycles: 8,
            })
            .collect(),
        // No dust: the firmware compensates at most 5 % of its alarm threshold a day, so a
        // chamber fouls into a contamination fault over weeks, not in one day; a day's heavy
        // dust would only read as smoke and open fire cases the script does not mean.
        dust: None,
        battery: Some(BatteryDecay {
            share: 0.0,
            devices: failing.iter().map(|&d| village.devices[d].id.clone()).collect(),
            from: 0.93,
            to: 1.0,
        }),
        bad_firmware: None,
        // While the fire brigade draws on the hydrants, the nearest sprinkler main's pressure
        // falls below its threshold for ten minutes.
        water: water_sensor
            .map(|d| WaterDrop { device: d.id.clone(), at: water_at, value: 0.08, duration: minutes(10) })
            .into_iter()
            .collect(),
    };

    // The cases, with the windows in which they open. A flaming fire crosses the alarm
    // threshold within about half a minute of reaching a room, its other rooms 30 s apart
    // (`ROOM_DELAY`); a cooking plume starts within ten minutes of its wave and pre-alarms
    // within its 90 s rise; a battery is measured under load at boot; a tamper is sent at
    // once; the gateway polls the water sensors every few seconds of real time. Five
    // simulated minutes cover every one of them with room for the transport.
    let mut expected = Vec::new();
    let building = |b: usize| village.buildings[b].id.as_str();
    let spread = fire_at + minutes(4);
    for &b in &burning {
        if detectors(b) == 0 {
            continue;
        }
        let (why, at) = if b == fire { ("the fire", fire_at) } else { ("the fire spreading", spread) };
        expected.push(ExpectedCase::new(CaseKind::Fire, building(b), why.into(), at, at + minutes(5)));
    }
    for (at, buildings) in &waves {
        for &b in buildings {
            let why = format!("cooking at {}", humantime::format_duration(*at));
            expected.push(ExpectedCase::new(CaseKind::Fire, building(b), why, *at, *at + minutes(15)));
        }
    }
    if let Some(b) = device_building(&removed) {
        let why = format!("{removed} pulled off its base");
        expected.push(ExpectedCase::new(CaseKind::Fault, building(b), why, minutes(3), minutes(8)));
    }
    for &d in &failing {
        let why = format!("{}'s battery low", village.devices[d].id);
        let b = village.devices[d].building;
        expected.push(ExpectedCase::new(CaseKind::Fault, building(b), why, Duration::ZERO, minutes(30)));
    }
    if let Some(d) = water_sensor {
        let why = format!("{}'s pressure low", d.id);
        expected.push(ExpectedCase::new(
            CaseKind::Water,
            building(d.building),
            why,
            water_at,
            water_at + minutes(5),
        ));
    }
    // The chattering detector's puffs last a few seconds each: the firmware's confirmation
    // rejects them, and no case opens (the nuisance the gate exists for).
    if let Some(grid) = outage_grid {
        let why = format!("grid {grid} without its NB-IoT cell");
        let by = outage_at + silent_by;
        match lost_scope(village, grid, &liveness) {
            Some(scope) => {
                expected.push(ExpectedCase::new(CaseKind::CommunicationLoss, &scope, why, outage_at, by))
            }
            None => {
                for b in (0..village.buildings.len()).filter(|&b| village.buildings[b].grid == *grid) {
                    if detectors(b) > 0 {
                        expected.push(ExpectedCase::new(
                            CaseKind::Offline,
                            building(b),
                            why.clone(),
                            outage_at,
                            by,
                        ));
                    }
                }
            }
        }
    }
    Ok(Script {
        scenario,
        fire_building: fire_building.id.clone(),
        fire_grid: fire_building.grid.clone(),
        other_grid: (*other_grid).to_owned(),
        expected: merge_cases(expected),
    })
}

/// The scope liveness reports lost when every detector of `grid` goes silent: the widest of
/// village, community, grid and building in which the silent detectors are at least
/// `scope_lost_percent` of the registered devices and at least `scope_min_devices` (the
/// cameras and water sensors in it keep reporting). `None`: each detector goes offline on
/// its own.
fn lost_scope(village: &Village, grid: &str, liveness: &crate::liveness::LivenessConfig) -> Option<String> {
    use firegrid_sim::village::Kind;
    let silent = |d: &firegrid_sim::village::DeviceSpec| {
        d.kind == Kind::Detector && village.buildings[d.building].grid == grid
    };
    let qualifies = |inside: &dyn Fn(&firegrid_sim::village::Building) -> bool| {
        let devices: Vec<_> =
            village.devices.iter().filter(|d| inside(&village.buildings[d.building])).collect();
        let late = devices.iter().filter(|d| silent(d)).count() as u64;
        late >= u64::from(liveness.scope_min_devices)
            && late * 100 >= u64::from(liveness.scope_lost_percent) * devices.len() as u64
    };
    let in_grid: Vec<&firegrid_sim::village::Building> =
        village.buildings.iter().filter(|b| b.grid == grid).collect();
    let community = in_grid.first()?.community.clone();
    if qualifies(&|_| true) {
        return Some(village.village.clone());
    }
    if qualifies(&|b| b.community == community) {
        return Some(community);
    }
    if qualifies(&|b| b.grid == grid) {
        return Some(grid.to_owned());
    }
    None
}

/// One entry per case: events of one kind in one place open one case, as soon as the first
/// of them does.
fn merge_cases(cases: Vec<ExpectedCase>) -> Vec<ExpectedCase> {
    let mut merged: Vec<ExpectedCase> = Vec::new();
    for case in cases {
        match merged.iter_mut().find(|m| m.kind == case.kind && m.place == case.place) {
            Some(m) => {
                m.why = format!("{}; {}", m.why, case.why);
                m.opens_after = m.opens_after.min(case.opens_after);
                m.open_by = m.open_by.min(case.open_by);
            }
            None => merged.push(case),
        }
    }
    merged.sort_by(|a, b| a.open_by.cmp(&b.open_by).then_with(|| a.place.cmp(&b.place)));
    merged
}

/// An officer the demo creates, with the token it prints.
#[derive(Debug, Clone)]
pub struct DemoOfficer {
    /// Officer id.
    pub id: String,
    /// Role.
    pub role: &'static str,
    /// Scope, `grid:<name>` etc.
    pub scope: String,
    /// The bearer token (shown once, like `firegrid officer-token`).
    pub token: String,
}

fn officers_toml(officers: &[DemoOfficer]) -> String {
    let mut text = String::from(
        "# Demo officers, made by `firegrid demo` with fresh tokens (only their hashes are here).\n",
    );
    for o in officers {
        let hash = firegrid_officers::token_sha256_hex(&o.token);
        let _ = write!(
            text,
            "\n[[officer]]\nid = \"{}\"\nname = \"{}\"\nrole = \"{}\"\nscope = \"{}\"\non_duty = true\ntoken_sha256 = \"{hash}\"\n",
            o.id, o.id, o.role, o.scope
        );
    }
    text
}

/// InfluxQL's quoting of an identifier: in double quotes, with `\` and `"` escaped.
fn influx_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Creates the demo's database on an InfluxDB 1.x-compatible server (`CREATE DATABASE` is a
/// no-op when it exists). InfluxDB 2 and 3 take the 1.x write API only into an existing
/// bucket or database mapping, which this cannot make; the error says so.
async fn prepare_influx(url: &str, database: &str) -> Result<(), String> {
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(|e| e.to_string())?;
    let statement = format!("CREATE DATABASE {}", influx_identifier(database));
    let reply = client
        .post(format!("{}/query", url.trim_end_matches('/')))
        .form(&[("q", statement.as_str())])
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    let status = reply.status();
    let body = reply.text().await.unwrap_or_default();
    // 1.x answers 200 with `{"results":[{"statement_id":0}]}`, or 200 with an `error` field.
    if status.is_success() && !body.contains("\"error\"") {
        Ok(())
    } else {
        Err(format!("HTTP {status}: {}", body.chars().take(200).collect::<String>()))
    }
}

/// The simulated village's account on the embedded broker (a platform account: its 16
/// connections publish for every device).
const SIM_ACCOUNT: &str = "demo-village";

fn gateway_toml(opts: &DemoOptions, dir: &Path, modbus: Option<&str>, sim_password: &str) -> String {
    let mut text = format!(
        "# Written by `firegrid demo`; `firegrid run --config {dir}/gateway.toml` runs this gateway again.\n\
         data_dir = \"{data}\"\nhttp_listen = \"{http}\"\n\n[registry]\ncsv = \"{dir}/registry.csv\"\nkeys = \"{dir}/keys.toml\"\n\n\
         [alerting]\ndistrict = \"{district}\"\nofficers = \"{dir}/officers.toml\"\nconsole_url = \"http://{http}/console\"\n",
        dir = dir.display(),
        data = dir.join("gateway").display(),
        http = opts.http_listen,
        district = opts.district,
    );
    // A simulated detector's clock, once the gateway has set it, runs at the simulated speed,
    // so its timestamps run ahead of the gateway's clock by up to the simulated day. That is
    // never a reason to refuse a message, but it would be flagged as a wrong clock, every
    // device and all day: the demo flags only clocks further ahead than the simulated day (a
    // real deployment keeps the 5 min default).
    let _ = write!(text, "\n[limits]\nclock_ahead = \"{}s\"\n", opts.duration.as_secs() + 3_600);
    match &opts.mqtt {
        Some((host, port)) => {
            let _ =
                write!(text, "\n[mqtt]\nhost = \"{host}\"\nport = {port}\nclient_id = \"firegrid-demo\"\n");
        }
        None => {
            let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(sim_password.as_bytes()));
            let _ = write!(
                text,
                "\n[embedded_broker]\nlisten = \"{}\"\n\n[[embedded_broker.platforms]]\nusername = \"{SIM_ACCOUNT}\"\n\
                 password_sha256 = \"{hash}\"\n",
                opts.broker_listen
            );
        }
    }
    if let Some((url, database)) = &opts.influx {
        let _ = write!(
            text,
            "\n[[influx]]\nname = \"demo\"\nurl = \"{url}\"\napi = \"v1\"\ndatabase = \"{database}\"\n"
        );
    }
    if let Some(url) = &opts.webhook {
        let _ = write!(
            text,
            "\n[alerting.routes]\n\"*\" = [\"webhook\"]\n\n[notify.channels.webhook]\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"demo\"\n"
        );
    }
    if let Some(archive) = &opts.basemap {
        let path = toml::Value::String(archive.display().to_string());
        let _ = write!(text, "\n[console.basemap]\npmtiles = {path}\n");
    }
    if let Some(modbus) = modbus {
        text.push('\n');
        text.push_str(modbus);
    }
    text
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Io { path: path.to_owned(), source }
}

fn write(path: &Path, text: &str) -> Result<(), DemoError> {
    std::fs::write(path, text).map_err(io_error(path))
}

/// Runs the demo until `stop` resolves (Ctrl-C in the command), printing what goes on.
pub async fn run(opts: DemoOptions, stop: impl std::future::Future<Output = ()>) -> Result<(), DemoError> {
    let temp;
    let dir = match &opts.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
            dir.canonicalize().map_err(io_error(dir))?
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("firegrid-demo-")
                .tempdir()
                .map_err(io_error(&std::env::temp_dir()))?;
            temp.path().to_path_buf()
        }
    };
    let village = Village::generate(&opts.village, opts.seed)?;
    let script = scripted_day(&village, opts.fire_at, opts.fire_out_after, opts.speed)?;
    write(&dir.join("registry.csv"), &village.registry_csv_with(&registry_heartbeats(&village, opts.speed)))?;
    // Every simulated device gets its own key, as a factory would flash it: the gateway's key
    // store and the provisioning file the simulated devices load.
    let provisioning = dir.join("provisioning.csv");
    crate::keys::admin::provision_registry(
        &dir.join("registry.csv"),
        &dir.join("keys.toml"),
        &provisioning,
        false,
        crate::clock::wall_ms(),
        0,
    )
    .map_err(|e| DemoError::Keys(e.to_string()))?;
    let keys = firegrid_sim::keys::load(&provisioning).map_err(|e| DemoError::Keys(e.to_string()))?;
    let scenario_text = toml::to_string(&script.scenario).expect("a scenario serialises");
    write(&dir.join("scenario.toml"), &scenario_text)?;
    let expected = serde_json::to_string_pretty(&script.expected).expect("the expected cases serialise");
    write(&dir.join("expected-cases.json"), &expected)?;
    let street = village.street.clone();
    let officers = vec![
        DemoOfficer {
            id: "street-commander".into(),
            role: "commander",
            scope: format!("street:{street}"),
            token: firegrid_officers::new_token().0,
        },
        DemoOfficer {
            id: "fire-grid-leader".into(),
            role: "grid_leader",
            scope: format!("grid:{}", script.fire_grid),
            token: firegrid_officers::new_token().0,
        },
        DemoOfficer {
            id: "other-grid-leader".into(),
            role: "grid_leader",
            scope: format!("grid:{}", script.other_grid),
            token: firegrid_officers::new_token().0,
        },
    ];
    write(&dir.join("officers.toml"), &officers_toml(&officers))?;
    // The village's water sensors behind a simulated Modbus TCP gateway in the pump room.
    let water = if village.devices.iter().any(|d| d.kind == firegrid_sim::village::Kind::Water) {
        let sensors = WaterSensors::start(&village, &script.scenario, opts.speed)
            .map_err(io_error(Path::new("the simulated Modbus water sensors")))?;
        Some(sensors)
    } else {
        None
    };
    let modbus = water.as_ref().map(WaterSensors::gateway_modbus_toml);
    // The simulated village logs in to the embedded broker like a carrier platform would.
    let sim_password = {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the operating system's random generator failed");
        hex::encode(bytes)
    };
    write(&dir.join("gateway.toml"), &gateway_toml(&opts, &dir, modbus.as_deref(), &sim_password))?;
    // So that whoever runs the demo can publish messages of their own into it.
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join("broker.password");
        let _ = std::fs::remove_file(&path);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{sim_password}\n").as_bytes()))
            .map_err(io_error(&path))?;
    }

    if let Some((url, database)) = &opts.influx {
        match prepare_influx(url, database).await {
            Ok(()) => println!("InfluxDB: database {database:?} ready at {url}."),
            Err(error) => println!(
                "warning: could not create InfluxDB database {database:?} at {url} ({error}). The gateway keeps \
                 the data in its spool until it exists; create it with:\n  curl -XPOST '{url}/query' \
                 --data-urlencode 'q=CREATE DATABASE {}'",
                influx_identifier(database)
            ),
        }
    }
    let cfg = Config::load(Some(&dir.join("gateway.toml")), std::iter::empty())?;
    let gateway = Gateway::start(cfg, None).await.map_err(|error| DemoError::Start {
        error: Box::new(error),
        http: opts.http_listen,
        broker: opts.broker_listen,
    })?;
    let detectors =
        village.devices.iter().filter(|d| d.kind == firegrid_sim::village::Kind::Detector).count();
    // Water sensors are polled over Modbus, not heard over MQTT.
    let reporting = village.devices.iter().filter(|d| d.kind != firegrid_sim::village::Kind::Water).count();
    println!(
        "firegrid demo: village {} of street {street}: {detectors} detectors in {} buildings, {} camera channels, \
         {} water sensors on Modbus; day played at ×{} (a simulated day in {}).",
        village.village,
        village.buildings.len(),
        opts.village.camera_channels,
        water.as_ref().map_or(0, |w| w.sensors().len()),
        opts.speed,
        humantime::format_duration(Duration::from_secs((opts.duration.as_secs_f64() / opts.speed) as u64)),
    );
    println!(
        "script: a cooking false alarm from minute 2, a detector pulled off its base at minute 3, fire in {} \
         (grid {}) at {} spreading to its neighbours 4 minutes later, put out {} after it starts; \
         nobody answers unless you do.",
        script.fire_building,
        script.fire_grid,
        humantime::format_duration(opts.fire_at),
        humantime::format_duration(opts.fire_out_after),
    );
    println!(
        "the script opens {} cases, listed with when each opens in {}/expected-cases.json.",
        script.expected.len(),
        dir.display()
    );
    println!("files: {}", dir.display());
    if opts.mqtt.is_none() {
        println!(
            "broker: mqtt://{} (user {SIM_ACCOUNT}, password in {}/broker.password; devices log in with their own \
             accounts, anonymous logins are refused)",
            opts.broker_listen,
            dir.display()
        );
    }
    println!("metrics: http://{}/metrics", gateway.http_addr);
    for o in &officers {
        println!(
            "console for {} ({}, {}): http://{}/console#token={}",
            o.id, o.scope, o.role, gateway.http_addr, o.token
        );
    }

    let mut fleet = Fleet::new_keyed(
        village,
        &script.scenario,
        opts.duration,
        opts.seed,
        firegrid_protocol::Encoding::Compact,
        keys,
    )?;
    let run_cfg = RunConfig {
        host: gateway.mqtt.host.clone(),
        port: gateway.mqtt.port,
        mode: Mode::Platform { connections: 16 },
        speed: opts.speed,
        duration: opts.duration,
        report_every: None,
        camera_state: Some(dir.join("cameras")),
        credentials: opts.mqtt.is_none().then(|| (SIM_ACCOUNT.to_owned(), sim_password.clone())),
    };
    let started = Instant::now();
    if let Some(water) = &water {
        water.set_epoch(started);
    }
    let mut sim =
        tokio::spawn(
            async move { firegrid_sim::run(&mut fleet, &run_cfg, None, Duration::from_secs(30)).await },
        );
    let mut ticker = tokio::time::interval(opts.report_every);
    ticker.tick().await;
    let mut last = (Instant::now(), 0u64);
    let mut sim_done = false;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            done = &mut sim, if !sim_done => {
                sim_done = true;
                match done {
                    Ok(report) => println!(
                        "the scripted day is over ({} messages from the firmware, {} left unacknowledged); \
                         the gateway and console keep running until Ctrl-C.",
                        report.sent, report.outbox_total
                    ),
                    Err(error) => tracing::error!(%error, "The simulated village stopped."),
                }
            }
            _ = ticker.tick() => {
                last = progress(&gateway, reporting, opts.speed, started, last).await;
            }
        }
    }
    println!("stopping: the village first, then the gateway (finishing in-flight messages).");
    sim.abort();
    let _ = sim.await;
    gateway.stop().await;
    if let Some(water) = water {
        water.stop().await;
    }
    println!("stopped.");
    Ok(())
}

/// Prints one progress line; returns the message count for the next rate.
async fn progress(
    gateway: &Gateway,
    devices: usize,
    speed: f64,
    started: Instant,
    (at, before): (Instant, u64),
) -> (Instant, u64) {
    let total: u64 = gateway.shared.metrics.counts().accepted.values().sum();
    let rate = (total - before) as f64 / at.elapsed().as_secs_f64().max(0.001);
    let mut line = format!(
        "[{} real, {} simulated] devices reporting {}/{} · {:.0} msg/s",
        clock(started.elapsed()),
        clock(started.elapsed().mul_f64(speed)),
        gateway.shared.site.reporting(),
        devices,
        rate
    );
    if let Some(api) = &gateway.shared.api {
        let open = api
            .api
            .cases
            .list(CaseFilter { state: CaseState::Open, limit: Some(1000), ..CaseFilter::default() })
            .await;
        let mut by_severity = std::collections::BTreeMap::<String, usize>::new();
        for doc in open.unwrap_or_default() {
            let severity = serde_json::from_str::<serde_json::Value>(&doc)
                .ok()
                .and_then(|c| c.get("severity").and_then(|s| s.as_str()).map(str::to_owned))
                .unwrap_or_default();
            *by_severity.entry(severity).or_default() += 1;
        }
        let detail: Vec<String> = by_severity.iter().rev().map(|(s, n)| format!("{s} {n}")).collect();
        let _ = write!(line, " · open cases {} ({})", by_severity.values().sum::<usize>(), detail.join(", "));
    }
    println!("{line}");
    (Instant::now(), total)
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn influx_identifiers_are_quoted_the_way_influxql_reads_them() {
        // InfluxQL: identifiers in double quotes, `\` and `"` escaped with a backslash.
        assert_eq!(influx_identifier("firegrid"), "\"firegrid\"");
        assert_eq!(influx_identifier("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }

    #[test]
    fn the_script_sets_a_fire_next_to_a_neighbour_and_keeps_the_other_grid_clear() {
        let params = VillageParams {
            detectors: 400,
            buildings: 80,
            camera_channels: 40,
            water_sensors: 0,
            ..VillageParams::default()
        };
        let village = Village::generate(&params, 7).unwrap();
        let script =
            scripted_day(&village, Duration::from_secs(300), Duration::from_secs(1200), 10.0).unwrap();
        let b = village.buildings.iter().position(|b| b.id == script.fire_building).unwrap();
        assert!(village.detectors_in(b).count() >= 2);
        assert!(!village.neighbours(b, 15.0).is_empty(), "the fire has somewhere to spread");
        assert_ne!(script.fire_grid, script.other_grid);
        assert_eq!(script.scenario.fire.len(), 1);
        // The scenario the demo writes is one the simulator reads back.
        let text = toml::to_string(&script.scenario).unwrap();
        assert_eq!(Scenario::from_toml(&text).unwrap(), script.scenario);
        // Every device the script names exists.
        for name in script
            .scenario
            .removal
            .iter()
            .map(|r| &r.device)
            .chain(script.scenario.chatter.iter().map(|c| &c.device))
        {
            assert!(village.devices.iter().any(|d| &d.id == name), "{name} is not in the village");
        }
    }

    #[test]
    fn the_generated_configuration_loads() {
        let dir = tempfile::tempdir().unwrap();
        let opts = DemoOptions {
            influx: Some(("http://127.0.0.1:8086".into(), "firegrid".into())),
            ..DemoOptions::default()
        };
        let modbus = "[modbus]\n\n[[modbus.devices]]\nid = \"ws-000\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:5020\"\n\
                      unit = 1\n\n[[modbus.devices.points]]\nname = \"pressure\"\nregister = \"holding\"\naddress = 0\n\
                      type = \"f32\"\nword_order = \"big\"\nscale = 0.001\nunit = \"MPa\"\nmeasures = \"pressure_mpa\"\nlow = 0.15\n";
        std::fs::write(dir.path().join("gateway.toml"), gateway_toml(&opts, dir.path(), Some(modbus), "pw"))
            .unwrap();
        let cfg = Config::load(Some(&dir.path().join("gateway.toml")), std::iter::empty()).unwrap();
        assert_eq!(cfg.http_listen, opts.http_listen);
        assert!(
            cfg.limits.clock_ahead > opts.duration,
            "simulated clocks run ahead by up to the simulated day"
        );
        assert_eq!(cfg.influx.len(), 1);
        assert_eq!(cfg.modbus.as_ref().map(|m| m.devices.len()), Some(1));
        assert!(cfg.alerting.enabled && cfg.alerting.officers.is_some());
        let officers = [DemoOfficer {
            id: "a".into(),
            role: "commander",
            scope: "street:S".into(),
            token: firegrid_officers::new_token().0,
        }];
        let path = dir.path().join("officers.toml");
        std::fs::write(&path, officers_toml(&officers)).unwrap();
        let directory = firegrid_officers::DirectoryWatch::open(path).unwrap().current();
        assert_eq!(directory.authenticate(&officers[0].token).unwrap().officer().id, "a");
    }
}
