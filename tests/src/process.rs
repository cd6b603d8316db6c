//! The process-supervision core shared by every server type.
//!
//! [`ServerProcess`] owns one server: its temporary directory (config, data and log file), the
//! loopback ports it listens on and the child process. A server type only describes itself
//! through [`ServerKind`]: which [`Binary`] to run, how many ports it needs, how to write its
//! configuration, and how to tell that it answers.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::{Error, Result};

/// How long [`ServerProcess::start`] and [`ServerProcess::restart`] wait for a server to answer.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// How long [`ServerProcess::stop`] waits after SIGTERM before it sends SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How many fresh port sets a first start tries when the server cannot bind its port(s).
const FRESH_PORT_ATTEMPTS: usize = 5;

/// How many times a restart retries its (fixed) port(s) when the server cannot bind them.
const SAME_PORT_ATTEMPTS: usize = 3;

/// How many log lines an error message quotes.
const LOG_TAIL_LINES: usize = 40;

/// Where a server's executable lives and which Debian package installs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binary {
    /// File name of the executable, looked up on `PATH` when `default_path` does not exist.
    pub name: &'static str,
    /// Where the Debian package installs it, e.g. `/usr/sbin/mosquitto`.
    pub default_path: &'static str,
    /// The Debian package that provides it, named in the error when it is missing.
    pub apt_package: &'static str,
}

impl Binary {
    /// Finds the executable: `default_path` first, then every directory on `PATH`.
    ///
    /// # Errors
    /// [`Error::BinaryNotFound`], whose message names the `apt-get install` command.
    pub fn locate(&self) -> Result<PathBuf> {
        let default = Path::new(self.default_path);
        if is_executable(default) {
            return Ok(default.to_path_buf());
        }
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                let candidate = dir.join(self.name);
                if is_executable(&candidate) {
                    return Ok(candidate);
                }
            }
        }
        Err(Error::BinaryNotFound {
            name: self.name.to_owned(),
            default_path: default.to_path_buf(),
            apt_package: self.apt_package.to_owned(),
        })
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// What a server type tells [`ServerProcess`] about itself.
///
/// Implement it to run another server (or the gateway binary itself) under the same
/// supervision: temp dir, free ports, log capture, readiness wait, stop/kill/restart, and
/// cleanup on drop.
pub trait ServerKind: Send + Sync + 'static {
    /// The executable to run.
    fn binary(&self) -> Binary;

    /// How many loopback TCP ports the server listens on (all of them are checked for
    /// readiness). Defaults to one.
    fn port_count(&self) -> usize {
        1
    }

    /// Writes whatever configuration the server needs into `dir` (the server's temp dir,
    /// which outlives restarts) and returns the command-line arguments. Called before every
    /// start with the ports to use (the same ports on a restart).
    ///
    /// # Errors
    /// Any I/O error while writing the configuration.
    fn args(&self, dir: &Path, ports: &[u16]) -> io::Result<Vec<OsString>>;

    /// Environment variables to set for the server, on top of the test's own (e.g.
    /// `LD_PRELOAD` of libfaketime). None by default.
    fn envs(&self) -> Vec<(OsString, OsString)> {
        Vec::new()
    }

    /// The user and group ids to run the server as, when it must not run as the test's own
    /// user (PostgreSQL refuses to run as root). The test's own by default.
    fn run_as(&self) -> Option<(u32, u32)> {
        None
    }

    /// The signal [`ServerProcess::stop`] sends first. SIGTERM by default; PostgreSQL's is
    /// SIGINT, its "fast" shutdown, since SIGTERM waits for every client to disconnect.
    fn stop_signal(&self) -> rustix::process::Signal {
        rustix::process::Signal::TERM
    }

    /// Protocol-level readiness probe, e.g. an HTTP health check. It is only called once the
    /// child process is alive and itself listens on every port, so an unrelated process that
    /// grabbed the port cannot pass for the server.
    fn is_ready(&self, ports: &[u16]) -> bool;
}

/// One supervised server process with its own temp dir, ports and log file.
///
/// The temp dir (config, data, log) lives as long as this value, so data persists across
/// [`restart`](Self::restart). Dropping it stops the process (its stop signal, then SIGKILL)
/// and then deletes the temp dir, also when a test panics. Don't keep one in a `static`: statics are
/// never dropped, so the process would outlive the test binary.
pub struct ServerProcess {
    kind: Box<dyn ServerKind>,
    name: &'static str,
    binary: PathBuf,
    dir: TempDir,
    log_path: PathBuf,
    ports: Vec<u16>,
    child: Option<Child>,
    /// Length of the log file when the current child was spawned.
    log_offset: u64,
}

impl std::fmt::Debug for ServerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerProcess")
            .field("name", &self.name)
            .field("binary", &self.binary)
            .field("dir", &self.dir.path())
            .field("ports", &self.ports)
            .field("pid", &self.pid())
            .finish()
    }
}

impl ServerProcess {
    /// Locates the binary, creates the temp dir, picks free loopback ports and starts the
    /// server, waiting up to [`STARTUP_TIMEOUT`] until it answers. If the server cannot bind a
    /// port (another process took it after we picked it), it retries on fresh ports.
    ///
    /// # Errors
    /// [`Error::BinaryNotFound`], [`Error::StartExited`] or [`Error::StartTimeout`] (both quote
    /// the tail of the server's log), or [`Error::Io`].
    pub fn start(kind: impl ServerKind) -> Result<Self> {
        let binary_spec = kind.binary();
        let binary = binary_spec.locate()?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("firegrid-{}-", binary_spec.name))
            .tempdir()
            .map_err(|e| Error::io("creating a temp dir", e))?;
        let log_path = dir.path().join(format!("{}.log", binary_spec.name));
        let mut process = ServerProcess {
            kind: Box::new(kind),
            name: binary_spec.name,
            binary,
            dir,
            log_path,
            ports: Vec::new(),
            child: None,
            log_offset: 0,
        };
        process.launch(true)?;
        Ok(process)
    }

    /// Stops the server if it runs, then starts it again on the same port(s) with the same
    /// temp dir, so whatever it persisted survives. Also starts a server that was stopped or
    /// killed.
    ///
    /// # Errors
    /// As for [`start`](Self::start); a port that another process took meanwhile fails.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.launch(false)
    }

    /// Stops the server gracefully: [`ServerKind::stop_signal`], then SIGKILL if it has not
    /// exited after [`STOP_TIMEOUT`]. Waits until the process is gone. Does nothing if it is not running.
    ///
    /// # Errors
    /// [`Error::Io`] if signalling or waiting fails.
    pub fn stop(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        if child.try_wait().map_err(|e| Error::io("checking the server process", e))?.is_none() {
            let pid = rustix::process::Pid::from_child(child);
            // ESRCH only means it exited between `try_wait` and here.
            let _ = rustix::process::kill_process(pid, self.kind.stop_signal());
            if wait_timeout(child, STOP_TIMEOUT)
                .map_err(|e| Error::io(format!("waiting for {} to exit", self.name), e))?
                .is_none()
            {
                let _ = child.kill();
                child.wait().map_err(|e| Error::io(format!("waiting for {} to exit", self.name), e))?;
            }
        }
        self.child = None;
        Ok(())
    }

    /// Kills the server with SIGKILL (a crash: nothing gets flushed) and waits until it is
    /// gone. Does nothing if it is not running.
    ///
    /// # Errors
    /// [`Error::Io`] if waiting fails.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            // Fails only when the process has already exited; `wait` reaps it either way.
            let _ = child.kill();
            child.wait().map_err(|e| Error::io(format!("waiting for {} to exit", self.name), e))?;
        }
        Ok(())
    }

    /// Freezes the server with SIGSTOP (a hung machine, a paused VM): it keeps its sockets,
    /// and its kernel goes on answering TCP keepalives, but it runs nothing until
    /// [`resume`](Self::resume).
    ///
    /// # Errors
    /// [`Error::Io`] if it is not running or cannot be signalled.
    pub fn pause(&mut self) -> Result<()> {
        self.signal(rustix::process::Signal::STOP, "pausing")
    }

    /// Lets a server frozen by [`pause`](Self::pause) run again (SIGCONT).
    ///
    /// # Errors
    /// [`Error::Io`] if it is not running or cannot be signalled.
    pub fn resume(&mut self) -> Result<()> {
        self.signal(rustix::process::Signal::CONT, "resuming")
    }

    fn signal(&mut self, signal: rustix::process::Signal, what: &str) -> Result<()> {
        let child = self
            .child
            .as_ref()
            .ok_or_else(|| Error::io(format!("{what} {}", self.name), io::Error::other("not running")))?;
        rustix::process::kill_process(rustix::process::Pid::from_child(child), signal)
            .map_err(|e| Error::io(format!("{what} {}", self.name), e.into()))
    }

    /// Waits up to `timeout` for the server to exit by itself; its status, or `None` if it
    /// still runs (or was never started).
    ///
    /// # Errors
    /// [`Error::Io`] if waiting fails.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        let status =
            wait_timeout(child, timeout).map_err(|e| Error::io(format!("waiting for {}", self.name), e))?;
        if status.is_some() {
            self.child = None;
        }
        Ok(status)
    }

    /// Whether the server process is alive (it may have crashed since it started).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The process id of the current server process, if one was started and not yet stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The loopback ports the server listens on, in the order [`ServerKind::args`] got them.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The server's temp dir (config, data, log); it lives as long as this value.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The file that receives the server's stdout and stderr (appended across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `lines` lines of the server's log file (empty if there is none yet).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The binary's short name, e.g. `mosquitto`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whatever the current (or last) child wrote to the log since it was spawned.
    fn log_since_spawn(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log_path)
            && file.seek(SeekFrom::Start(self.log_offset)).is_ok()
        {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    fn launch(&mut self, fresh_ports: bool) -> Result<()> {
        let attempts = if fresh_ports { FRESH_PORT_ATTEMPTS } else { SAME_PORT_ATTEMPTS };
        for attempt in 1..=attempts {
            if fresh_ports {
                self.ports = free_ports(self.kind.port_count())
                    .map_err(|e| Error::io("picking free loopback ports", e))?;
            }
            self.spawn(attempt)?;
            match self.wait_ready() {
                Ok(()) => return Ok(()),
                Err(err @ Error::StartExited { .. }) => {
                    let port_taken =
                        self.log_since_spawn().to_ascii_lowercase().contains("address already in use");
                    if !port_taken || attempt == attempts {
                        return Err(err);
                    }
                    if !fresh_ports {
                        thread::sleep(Duration::from_millis(250));
                    }
                }
                Err(err) => return Err(err),
            }
        }
        unreachable!("the last attempt always returns")
    }

    fn spawn(&mut self, attempt: usize) -> Result<()> {
        let args = self
            .kind
            .args(self.dir.path(), &self.ports)
            .map_err(|e| Error::io(format!("writing the {} configuration", self.name), e))?;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| Error::io(format!("opening {}", self.log_path.display()), e))?;
        let shown: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
        writeln!(
            log,
            "=== firegrid-tests: starting {} {} (attempt {attempt}) ===",
            self.binary.display(),
            shown.join(" ")
        )
        .map_err(|e| Error::io(format!("writing {}", self.log_path.display()), e))?;
        self.log_offset =
            log.metadata().map_err(|e| Error::io(format!("reading {}", self.log_path.display()), e))?.len();
        let stderr = log.try_clone().map_err(|e| Error::io("duplicating the log file handle", e))?;
        let mut command = Command::new(&self.binary);
        if let Some((uid, gid)) = self.kind.run_as() {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(gid);
        }
        let child = command
            .args(&args)
            .envs(self.kind.envs())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|e| Error::io(format!("spawning {}", self.binary.display()), e))?;
        self.child = Some(child);
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("spawn() set the child");
            let pid = child.id();
            if let Some(status) = child.try_wait().map_err(|e| Error::io("checking the server process", e))? {
                self.child = None;
                return Err(Error::StartExited {
                    server: self.name.to_owned(),
                    status,
                    log: self.log_path.clone(),
                    tail: self.log_tail(LOG_TAIL_LINES),
                });
            }
            if self.ports.iter().all(|&port| pid_listens_on(pid, port)) && self.kind.is_ready(&self.ports) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill()?;
                return Err(Error::StartTimeout {
                    server: self.name.to_owned(),
                    ports: self.ports.clone(),
                    timeout: STARTUP_TIMEOUT,
                    log: self.log_path.clone(),
                    tail: self.log_tail(LOG_TAIL_LINES),
                });
            }
            thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.stop().is_err() {
            let _ = self.kill();
        }
    }
}

/// Picks `count` distinct free TCP ports on 127.0.0.1 by binding port 0 and reading what the
/// kernel assigned. The listeners are closed again before returning, so another process may
/// take a port before the server binds it; [`ServerProcess`] retries on fresh ports then.
///
/// # Errors
/// Any error from binding a loopback socket.
pub fn free_ports(count: usize) -> io::Result<Vec<u16>> {
    // Hold every listener until all are bound, so the ports are distinct.
    let listeners =
        (0..count).map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0))).collect::<io::Result<Vec<_>>>()?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect()
}

/// Picks one free TCP port on 127.0.0.1; see [`free_ports`].
///
/// # Errors
/// Any error from binding a loopback socket.
pub fn free_port() -> io::Result<u16> {
    Ok(free_ports(1)?[0])
}

/// Waits up to `timeout` for `child` to exit.
fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Whether process `pid` itself holds a socket listening on TCP `port` (Linux `/proc`). Where
/// `/proc/net/tcp` cannot be read, this answers `true` and readiness rests on the probe alone.
fn pid_listens_on(pid: u32, port: u16) -> bool {
    let mut listening = HashSet::new();
    let mut readable = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        readable = true;
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 10 || fields[3] != "0A" {
                continue; // not LISTEN
            }
            let local_port = fields[1].rsplit(':').next().and_then(|hex| u16::from_str_radix(hex, 16).ok());
            if local_port == Some(port)
                && let Ok(inode) = fields[9].parse::<u64>()
            {
                listening.insert(inode);
            }
        }
    }
    if !readable {
        return true;
    }
    if listening.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .ok()
            .and_then(|target| {
                target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse::<u64>().ok()
            })
            .is_some_and(|inode| listening.contains(&inode))
    })
}

/// Generates the lifecycle methods every server wrapper forwards to its `process` field.
macro_rules! forward_lifecycle {
    ($ty:ident) => {
        impl $ty {
            /// Stops the server if it runs, then starts it again on the same port(s) with the
            /// same data directory, so whatever it persisted survives. Also starts a server
            /// that was stopped or killed.
            ///
            /// # Errors
            /// As for `start()`.
            pub fn restart(&mut self) -> $crate::Result<()> {
                self.process.restart()
            }

            /// Stops the server gracefully (SIGTERM, then SIGKILL after a timeout) and waits
            /// until it is gone.
            ///
            /// # Errors
            /// [`Error::Io`](crate::Error::Io) if signalling or waiting fails.
            pub fn stop(&mut self) -> $crate::Result<()> {
                self.process.stop()
            }

            /// Kills the server with SIGKILL, like a crash, and waits until it is gone.
            ///
            /// # Errors
            /// [`Error::Io`](crate::Error::Io) if waiting fails.
            pub fn kill(&mut self) -> $crate::Result<()> {
                self.process.kill()
            }

            /// Whether the server process is alive.
            pub fn is_running(&mut self) -> bool {
                self.process.is_running()
            }

            /// Freezes the server (SIGSTOP) until [`resume`](Self::resume).
            ///
            /// # Errors
            /// [`Error::Io`](crate::Error::Io) if it does not run.
            pub fn pause(&mut self) -> $crate::Result<()> {
                self.process.pause()
            }

            /// Lets a paused server run again (SIGCONT).
            ///
            /// # Errors
            /// [`Error::Io`](crate::Error::Io) if it does not run.
            pub fn resume(&mut self) -> $crate::Result<()> {
                self.process.resume()
            }

            /// Waits up to `timeout` for the server to exit by itself; its status, or `None`.
            ///
            /// # Errors
            /// [`Error::Io`](crate::Error::Io) if waiting fails.
            pub fn wait_exit(
                &mut self,
                timeout: std::time::Duration,
            ) -> $crate::Result<Option<std::process::ExitStatus>> {
                self.process.wait_exit(timeout)
            }

            /// The current server process id, if it runs.
            pub fn pid(&self) -> Option<u32> {
                self.process.pid()
            }

            /// Always `127.0.0.1`: the server listens on loopback only.
            pub fn host(&self) -> &'static str {
                "127.0.0.1"
            }

            /// The server's temp dir (config, data, log), kept for the value's lifetime.
            pub fn dir(&self) -> &std::path::Path {
                self.process.dir()
            }

            /// The server's log file (its stdout and stderr, appended across restarts).
            pub fn log_path(&self) -> &std::path::Path {
                self.process.log_path()
            }

            /// The last `lines` lines of the server's log file.
            pub fn log_tail(&self, lines: usize) -> String {
                self.process.log_tail(lines)
            }

            /// The underlying supervised process.
            pub fn process(&self) -> &$crate::ServerProcess {
                &self.process
            }
        }
    };
}

pub(crate) use forward_lifecycle;
