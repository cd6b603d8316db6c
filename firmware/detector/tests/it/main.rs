//! Integration tests of the detector firmware against real programs: the Cortex-M3 image
//! under QEMU (decoded with `defmt-print`) and the MQTT uplink against Mosquitto. A missing
//! program fails its test with the command that installs it; nothing is skipped.

mod mqtt;
mod ota;
mod qemu;

use std::path::Path;
use std::process::Command;

/// Finds `program` on PATH or in `/usr/sbin` (which a non-root PATH may lack), or panics
/// with the command that installs it.
pub fn require(program: &str, install: &str) -> std::path::PathBuf {
    let sbin = Path::new("/usr/sbin").join(program);
    if sbin.is_file() {
        return sbin;
    }
    let found = Command::new("sh").arg("-c").arg(format!("command -v {program}")).output();
    match found {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().into(),
        _ => panic!("`{program}` is not installed; install it with: {install}"),
    }
}
