//! The browser side of the console tests: `firegrid demo` as a supervised child process, and
//! Debian's ChromeDriver driving Debian's headless Chromium through WebDriver
//! ([`fantoccini`]).

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::firegrid::firegrid_binary;
use crate::http::Http;
use crate::process::{Binary, ServerKind, ServerProcess, forward_lifecycle};

/// Debian's Chromium.
pub const CHROMIUM: Binary =
    Binary { name: "chromium", default_path: "/usr/bin/chromium", apt_package: "chromium" };

/// Debian's ChromeDriver (WebDriver for Chromium).
pub const CHROMEDRIVER: Binary =
    Binary { name: "chromedriver", default_path: "/usr/bin/chromedriver", apt_package: "chromium-driver" };

/// The shape of a demo village and its script.
#[derive(Debug, Clone)]
pub struct DemoArgs {
    /// Detectors.
    pub detectors: usize,
    /// Buildings.
    pub buildings: usize,
    /// Camera channels.
    pub camera_channels: usize,
    /// Simulated seconds per real second.
    pub speed: f64,
    /// When the fire starts, simulated.
    pub fire_at: &'static str,
    /// When it is put out after it starts, simulated.
    pub fire_out_after: &'static str,
    /// A webhook every page also goes to (`--webhook`).
    pub webhook: Option<String>,
    /// An InfluxDB 1.x server the demo also writes to (`--influx`).
    pub influx: Option<String>,
    /// Water sensors (`--water-sensors`; `None`: the demo's default).
    pub water_sensors: Option<usize>,
    /// Detector heartbeat, simulated (`--heartbeat`; `None`: the demo's default).
    pub heartbeat: Option<&'static str>,
    /// An offline PMTiles archive under the console's map (`--basemap`).
    pub basemap: Option<PathBuf>,
}

struct DemoKind {
    exe: &'static str,
    args: DemoArgs,
}

impl ServerKind for DemoKind {
    fn binary(&self) -> Binary {
        Binary {
            name: "firegrid",
            default_path: self.exe,
            apt_package: "(none: cargo build -p firegrid-gateway)",
        }
    }

    /// The console/API and the embedded broker.
    fn port_count(&self) -> usize {
        2
    }

    fn args(&self, dir: &Path, ports: &[u16]) -> io::Result<Vec<OsString>> {
        let a = &self.args;
        let args = [
            "demo".to_owned(),
            format!("--detectors={}", a.detectors),
            format!("--buildings={}", a.buildings),
            format!("--camera-channels={}", a.camera_channels),
            format!("--speed={}", a.speed),
            format!("--fire-at={}", a.fire_at),
            format!("--fire-out-after={}", a.fire_out_after),
            format!("--http=127.0.0.1:{}", ports[0]),
            format!("--broker=127.0.0.1:{}", ports[1]),
            format!("--data-dir={}", dir.join("demo").display()),
            "--report-every=2".to_owned(),
        ];
        let webhook = a.webhook.iter().map(|url| format!("--webhook={url}"));
        let influx = a.influx.iter().map(|url| format!("--influx={url}"));
        let water = a.water_sensors.iter().map(|n| format!("--water-sensors={n}"));
        let heartbeat = a.heartbeat.iter().map(|h| format!("--heartbeat={h}"));
        let basemap = a.basemap.iter().map(|p| format!("--basemap={}", p.display()));
        Ok(args
            .into_iter()
            .chain(webhook)
            .chain(influx)
            .chain(water)
            .chain(heartbeat)
            .chain(basemap)
            .map(OsString::from)
            .collect())
    }

    fn is_ready(&self, ports: &[u16]) -> bool {
        let http = Http::new(format!("http://127.0.0.1:{}", ports[0]), Duration::from_secs(1));
        http.get("/healthz", &[]).is_ok_and(|r| r.status == 200)
    }
}

/// A demo officer as the demo prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoOfficer {
    /// Officer id (`street-commander`, `fire-grid-leader`, `other-grid-leader`).
    pub id: String,
    /// Scope, e.g. `grid:C0-G0`.
    pub scope: String,
    /// Bearer token.
    pub token: String,
}

/// `firegrid demo` running as a child process.
pub struct Demo {
    process: ServerProcess,
}

forward_lifecycle!(Demo);

impl Demo {
    /// Starts the demo and waits until its gateway is healthy.
    pub fn start(args: DemoArgs) -> Result<Demo> {
        let exe: &'static str = Box::leak(firegrid_binary()?.display().to_string().into_boxed_str());
        Ok(Demo { process: ServerProcess::start(DemoKind { exe, args })? })
    }

    /// The port of the console, the officer API and /metrics.
    pub fn http_port(&self) -> u16 {
        self.process.ports()[0]
    }

    /// The port of the demo's embedded MQTT broker.
    pub fn broker_port(&self) -> u16 {
        self.process.ports()[1]
    }

    /// The console's base URL.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port())
    }

    /// Everything the demo printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.process.log_path()).unwrap_or_default()
    }

    /// The officers the demo printed (`console for <id> (<scope>, <role>): <url>#token=<t>`).
    pub fn officers(&self) -> Vec<DemoOfficer> {
        self.output()
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("console for ")?;
                let (id, rest) = rest.split_once(" (")?;
                let (scope, rest) = rest.split_once(", ")?;
                let token = rest.rsplit_once("#token=")?.1;
                Some(DemoOfficer {
                    id: id.to_owned(),
                    scope: scope.to_owned(),
                    token: token.trim().to_owned(),
                })
            })
            .collect()
    }

    /// The officer with `id`, with the demo's output in the error if it is missing.
    pub fn officer(&self, id: &str) -> Result<DemoOfficer> {
        self.officers().into_iter().find(|o| o.id == id).ok_or_else(|| Error::Io {
            context: format!("the demo printed no console link for {id}; its output:\n{}", self.output()),
            source: io::Error::new(io::ErrorKind::NotFound, "officer not printed"),
        })
    }
}

struct DriverKind {
    exe: PathBuf,
}

impl ServerKind for DriverKind {
    fn binary(&self) -> Binary {
        Binary { default_path: Box::leak(self.exe.display().to_string().into_boxed_str()), ..CHROMEDRIVER }
    }

    fn args(&self, _dir: &Path, ports: &[u16]) -> io::Result<Vec<OsString>> {
        Ok(vec![format!("--port={}", ports[0]).into(), "--allowed-ips=127.0.0.1".into()])
    }

    fn is_ready(&self, ports: &[u16]) -> bool {
        let http = Http::new(format!("http://127.0.0.1:{}", ports[0]), Duration::from_secs(1));
        http.get("/status", &[]).is_ok_and(|r| r.status == 200)
    }
}

/// ChromeDriver as a child process; [`ChromeDriver::session`] opens headless Chromium.
pub struct ChromeDriver {
    process: ServerProcess,
}

forward_lifecycle!(ChromeDriver);

impl ChromeDriver {
    /// Starts ChromeDriver. Fails, naming the Debian packages, when Chromium or ChromeDriver
    /// is not installed.
    pub fn start() -> Result<ChromeDriver> {
        CHROMIUM.locate()?;
        let exe = CHROMEDRIVER.locate()?;
        Ok(ChromeDriver { process: ServerProcess::start(DriverKind { exe })? })
    }

    /// A new headless Chromium session with a fresh profile in the driver's temp dir, and no
    /// traffic of Chromium's own (this machine's network is closed).
    pub async fn session(&self, name: &str) -> Result<fantoccini::Client> {
        let profile = self.process.dir().join(format!("profile-{name}"));
        let chromium = CHROMIUM.locate()?;
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--autoplay-policy=no-user-gesture-required".to_owned(),
            "--window-size=1280,900".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": chromium.display().to_string(), "args": args }),
        );
        let url = format!("http://127.0.0.1:{}", self.process.ports()[0]);
        fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .map_err(|e| Error::Io {
                context: format!("opening a Chromium session through ChromeDriver at {url}"),
                source: io::Error::other(e.to_string()),
            })
    }
}
