//! [`Firegrid`]: the `firegrid` gateway binary as a supervised child process, so tests can
//! stop it, kill it with SIGKILL mid-stream and start it again on the same data directory.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::http::Http;
use crate::process::{Binary, ServerKind, ServerProcess, forward_lifecycle};

/// Writes the gateway's configuration for a start: given the process's temp dir and its HTTP
/// port, returns the TOML text.
pub type ConfigFn = dyn Fn(&Path, u16) -> String + Send + Sync;

/// As [`ConfigFn`], for a gateway with a separate operations listener: given the temp dir, the
/// main listener's port and the operations listener's.
pub type OpsConfigFn = dyn Fn(&Path, u16, u16) -> String + Send + Sync;

enum Layout {
    /// One listener, which serves `/healthz` and `/metrics`.
    One(Box<ConfigFn>),
    /// The main listener (e.g. HTTPS) and a plain loopback operations listener.
    WithOps(Box<OpsConfigFn>),
}

/// The gateway (`target/<profile>/firegrid`, built by `cargo build -p firegrid-gateway`).
/// Ready when `/healthz` answers 200, i.e. both MQTT sessions are connected.
pub struct Firegrid {
    process: ServerProcess,
    http: Http,
}

impl std::fmt::Debug for Firegrid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Firegrid").field("process", &self.process).finish_non_exhaustive()
    }
}

forward_lifecycle!(Firegrid);

/// The built gateway binary next to the running test binary (`target/<profile>/deps/..`).
pub fn firegrid_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()
        .map_err(|source| Error::Io { context: "locating the test binary".into(), source })?;
    let candidates = exe.ancestors().skip(1).take(3).map(|dir| dir.join("firegrid"));
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(Error::Io {
        context: format!("the firegrid binary is not built next to {}", exe.display()),
        source: io::Error::new(
            io::ErrorKind::NotFound,
            "build it with: cargo build -p firegrid-gateway --bin firegrid",
        ),
    })
}

struct FiregridKind {
    exe: &'static str,
    config: Layout,
    envs: Vec<(OsString, OsString)>,
}

impl ServerKind for FiregridKind {
    fn binary(&self) -> Binary {
        Binary {
            name: "firegrid",
            default_path: self.exe,
            apt_package: "(none: cargo build -p firegrid-gateway)",
        }
    }

    fn port_count(&self) -> usize {
        match self.config {
            Layout::One(_) => 1,
            Layout::WithOps(_) => 2,
        }
    }

    fn args(&self, dir: &Path, ports: &[u16]) -> io::Result<Vec<OsString>> {
        let path = dir.join("firegrid.toml");
        let text = match &self.config {
            Layout::One(config) => config(dir, ports[0]),
            Layout::WithOps(config) => config(dir, ports[0], ports[1]),
        };
        std::fs::write(&path, text)?;
        Ok(vec!["run".into(), "--config".into(), path.into_os_string()])
    }

    fn envs(&self) -> Vec<(OsString, OsString)> {
        self.envs.clone()
    }

    fn is_ready(&self, ports: &[u16]) -> bool {
        let http = Http::new(format!("http://127.0.0.1:{}", ports[ports.len() - 1]), Duration::from_secs(1));
        http.get("/healthz", &[]).is_ok_and(|r| r.status == 200)
    }
}

impl Firegrid {
    /// Starts the gateway with the configuration `config` writes and waits until both MQTT
    /// sessions are connected.
    pub fn start(config: impl Fn(&Path, u16) -> String + Send + Sync + 'static) -> Result<Self> {
        Self::start_with_env(config, Vec::new())
    }

    /// As [`start`](Self::start), with extra environment variables for the gateway process
    /// (kept for every restart), e.g. [`crate::FakeClock::envs`].
    pub fn start_with_env(
        config: impl Fn(&Path, u16) -> String + Send + Sync + 'static,
        envs: Vec<(OsString, OsString)>,
    ) -> Result<Self> {
        Self::launch(Layout::One(Box::new(config)), envs)
    }

    /// Starts a gateway whose main listener is not plain HTTP on loopback (HTTPS, or a public
    /// address): `config` gets the main port and an operations port, and must put
    /// `ops_listen` on `127.0.0.1:<ops port>`, where readiness and metrics are read.
    pub fn start_with_ops(
        config: impl Fn(&Path, u16, u16) -> String + Send + Sync + 'static,
    ) -> Result<Self> {
        Self::launch(Layout::WithOps(Box::new(config)), Vec::new())
    }

    fn launch(config: Layout, envs: Vec<(OsString, OsString)>) -> Result<Self> {
        let exe: &'static str = Box::leak(firegrid_binary()?.to_string_lossy().into_owned().into_boxed_str());
        let process = ServerProcess::start(FiregridKind { exe, config, envs })?;
        let ops = process.ports()[process.ports().len() - 1];
        let http = Http::new(format!("http://127.0.0.1:{ops}"), Duration::from_secs(5));
        Ok(Firegrid { process, http })
    }

    /// The main HTTP (or HTTPS) port.
    pub fn http_port(&self) -> u16 {
        self.process.ports()[0]
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> Result<String> {
        Ok(self.http.get("/metrics", &[])?.body)
    }

    /// The value of one sample in `/metrics`, e.g.
    /// `firegrid_messages_rejected_total{reason="malformed"}`; `None` when absent.
    pub fn metric(&self, sample: &str) -> Result<Option<f64>> {
        let text = self.metrics()?;
        Ok(text.lines().find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse().ok()))
    }

    /// The body of a GET on `path`.
    pub fn get(&self, path: &str) -> Result<String> {
        Ok(self.http.get(path, &[])?.body)
    }
}

/// The part of a gateway config most alarm-loop tests share: the registry with its key store,
/// the alarm loop with an officer directory (district `Xishan`), and every desk routed to one
/// webhook channel at `http://127.0.0.1:{hook}/hook` signing with the secret `test-secret`.
pub fn alarm_loop_section(registry: &Path, keys: &Path, officers: &Path, hook: u16) -> String {
    format!(
        r#"[registry]
csv = "{registry}"
keys = "{keys}"
[alerting]
district = "Xishan"
officers = "{officers}"
routes = {{ "*" = ["hook"] }}
[notify.channels.hook]
kind = "webhook"
url = "http://127.0.0.1:{hook}/hook"
secret = "test-secret"
"#,
        registry = registry.display(),
        keys = keys.display(),
        officers = officers.display(),
    )
}
