//! [`Pymodbus`]: a Modbus TCP server from the `pymodbus` Python package, serving holding and
//! input registers with known values: an implementation independent of tokio-modbus.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::process::{Binary, ServerKind, ServerProcess, forward_lifecycle};

/// The server script, written into each server's temp dir.
const SCRIPT: &str = include_str!("../fixtures/pymodbus_server.py");

/// The install command a missing pymodbus names (the version `scripts/test` installs).
pub const INSTALL: &str = "python3 -m pip install 'pymodbus==3.16.*'";

/// A pymodbus Modbus TCP server (`tests/fixtures/pymodbus_server.py`) for one test.
///
/// It serves one unit id on a free loopback port. Each register table is one block from
/// address 0 to two past the highest register given, zero where no value was given; the
/// values are encoded by pymodbus itself (`convert_to_registers`). Holding registers are
/// writable (function codes 6 and 16), so a test changes a value while the server runs.
/// The values given at start are served again after [`restart`](Self::restart).
///
/// The Python interpreter is the first `python3` on `PATH` (then `/usr/bin/python3`) that
/// can import `pymodbus`; if none can, starting fails with the install command.
#[derive(Debug)]
pub struct Pymodbus {
    process: ServerProcess,
}

forward_lifecycle!(Pymodbus);

/// One value a [`Pymodbus`] server holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimValue {
    /// Protocol address of its first register (starting at 0).
    pub address: u16,
    /// `u16`, `i16`, `u32`, `i32` or `f32`.
    pub data_type: &'static str,
    /// `big` (ABCD, high word first) or `little` (CDAB).
    pub word_order: &'static str,
    /// The value (truncated for integer types).
    pub value: f64,
}

/// What a [`Pymodbus`] server serves.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimRegisters {
    /// Unit identifier it answers to.
    pub unit: u8,
    /// Holding register values.
    pub holding: Vec<SimValue>,
    /// Input register values.
    pub input: Vec<SimValue>,
}

impl Pymodbus {
    /// Starts the server on a free loopback port and waits until it answers a Modbus
    /// request.
    ///
    /// # Errors
    /// [`Error::Io`] naming the install command when no `python3` can import pymodbus;
    /// otherwise as for [`ServerProcess::start`].
    pub fn start(registers: SimRegisters) -> Result<Self> {
        let python = python_with_pymodbus()?;
        Ok(Pymodbus { process: ServerProcess::start(PymodbusKind { python, registers })? })
    }

    /// The Modbus TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.process.ports()[0]
    }

    /// `127.0.0.1:<port>`, as the gateway's `address` setting takes it.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host(), self.port())
    }
}

/// The first `python3` (on `PATH`, then `/usr/bin/python3`) that imports pymodbus, looked up
/// once per test binary.
fn python_with_pymodbus() -> Result<&'static str> {
    static FOUND: OnceLock<Result<String, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|dir| dir.join("python3")).collect())
            .unwrap_or_default();
        candidates.push("/usr/bin/python3".into());
        first_importing_pymodbus(&candidates)
    });
    found.as_deref().map_err(|context| missing(context.to_owned()))
}

/// The first of `candidates` that runs and imports the pymodbus modules the server uses, or
/// the error message (naming the install command) when none does.
fn first_importing_pymodbus(candidates: &[PathBuf]) -> std::result::Result<String, String> {
    candidates
        .iter()
        .find(|python| {
            Command::new(python)
                .args(["-c", "from pymodbus.simulator import SimDevice; import pymodbus.server"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|python| python.to_string_lossy().into_owned())
        .ok_or_else(|| {
            let tried: Vec<_> = candidates.iter().map(|c| c.display().to_string()).collect();
            format!(
                "no python3 can import pymodbus 3.16 (tried {}): install it with \"{INSTALL}\"",
                tried.join(", ")
            )
        })
}

fn missing(context: String) -> Error {
    Error::io(context, io::Error::new(io::ErrorKind::NotFound, "No module named 'pymodbus'"))
}

struct PymodbusKind {
    python: &'static str,
    registers: SimRegisters,
}

impl ServerKind for PymodbusKind {
    fn binary(&self) -> Binary {
        Binary { name: "python3", default_path: self.python, apt_package: "python3" }
    }

    fn args(&self, dir: &Path, ports: &[u16]) -> io::Result<Vec<OsString>> {
        let script = dir.join("pymodbus_server.py");
        std::fs::write(&script, SCRIPT)?;
        let table = |values: &[SimValue]| -> serde_json::Value {
            values
                .iter()
                .map(|v| serde_json::json!([v.address, v.data_type, v.word_order, v.value]))
                .collect()
        };
        let spec = serde_json::json!({
            "unit": self.registers.unit,
            "holding": table(&self.registers.holding),
            "input": table(&self.registers.input),
        });
        let spec_path = dir.join("registers.json");
        std::fs::write(&spec_path, spec.to_string())?;
        // -u: unbuffered, so the log shows what the server said before it died.
        Ok(vec!["-u".into(), script.into(), ports[0].to_string().into(), spec_path.into()])
    }

    fn is_ready(&self, ports: &[u16]) -> bool {
        modbus_answers(ports[0], self.registers.unit).unwrap_or(false)
    }
}

/// Sends "read holding register 0" over Modbus TCP and checks that an answer (a response or
/// an exception) for the same transaction comes back.
fn modbus_answers(port: u16, unit: u8) -> io::Result<bool> {
    let timeout = Duration::from_secs(1);
    let mut stream = TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // MBAP: transaction 0x4647, protocol 0, length 6, unit; PDU: function 3, address 0, count 1.
    stream.write_all(&[0x46, 0x47, 0, 0, 0, 6, unit, 3, 0, 0, 0, 1])?;
    let mut header = [0u8; 8];
    stream.read_exact(&mut header)?;
    Ok(header[..4] == [0x46, 0x47, 0, 0] && header[6] == unit && header[7] & 0x7f == 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_pymodbus_fails_with_the_install_command() {
        let context =
            first_importing_pymodbus(&["/nonexistent/python3".into(), "/bin/false".into()]).unwrap_err();
        let message = missing(context).to_string();
        assert!(message.contains(INSTALL), "{message}");
        assert!(message.contains("/nonexistent/python3, /bin/false"), "{message}");
    }
}
