//! The harness's error type.

use std::fmt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Result alias used throughout the harness.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while running a server for a test.
///
/// `Debug` prints the same text as `Display`, so `.unwrap()`/`.expect()` in a test shows the
/// full, readable message (including the tail of the server's log where there is one).
#[derive(thiserror::Error)]
pub enum Error {
    /// The server's binary is neither at its usual path nor on `PATH`.
    #[error(
        "{name} not found at {default_path} or on PATH: install it with \"sudo apt-get install -y {apt_package}\""
    )]
    BinaryNotFound {
        /// File name of the binary, e.g. `mosquitto`.
        name: String,
        /// Where the Debian package installs it.
        default_path: PathBuf,
        /// Debian package that provides it.
        apt_package: String,
    },
    /// The server process exited before it answered.
    #[error("{server} exited during startup ({status}); last lines of {log}:\n{tail}")]
    StartExited {
        /// Which server.
        server: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its log file.
        log: PathBuf,
        /// The last lines of that log file.
        tail: String,
    },
    /// The server process kept running but did not answer in time.
    #[error(
        "{server} did not answer on 127.0.0.1 port(s) {ports:?} within {timeout:?}; last lines of {log}:\n{tail}"
    )]
    StartTimeout {
        /// Which server.
        server: String,
        /// The ports it was told to listen on.
        ports: Vec<u16>,
        /// How long we waited.
        timeout: Duration,
        /// Its log file.
        log: PathBuf,
        /// The last lines of that log file.
        tail: String,
    },
    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An HTTP request to a server failed, or its answer was not what the harness expected.
    #[error("{request}: {detail}")]
    Http {
        /// Method and URL, e.g. `POST http://127.0.0.1:8086/write`.
        request: String,
        /// Transport error, or status and body of the unexpected answer.
        detail: String,
    },
    /// The server understood the request and reported an error (e.g. an InfluxQL error).
    #[error("{server} reported an error: {message}")]
    Server {
        /// Which server.
        server: String,
        /// Its error message.
        message: String,
    },
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}
