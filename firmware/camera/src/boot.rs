//! The boot counter: read, incremented and written back durably at every start, so that
//! `(boot, seq)` never repeats across restarts and the gateway never takes a new message for
//! a replay.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct BootFile {
    boot: u16,
}

/// Why the boot counter could not be advanced.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// Reading or writing the file failed.
    #[error("boot counter {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file exists but does not hold a counter. Starting over at 0 could reuse
    /// `(boot, seq)` pairs the gateway has seen, so the agent refuses to start.
    #[error("boot counter {path} is corrupt; fix or delete it")]
    Corrupt {
        /// The file.
        path: std::path::PathBuf,
    },
}

/// Increments the counter in `path` (0 when the file does not exist yet, so the first boot
/// is 1) and returns the new value, written and synced before it is used.
///
/// # Errors
/// See [`BootError`].
pub fn next_boot(path: &Path) -> Result<u16, BootError> {
    let io_err = |source| BootError::Io { path: path.to_owned(), source };
    let previous = match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice::<BootFile>(&bytes)
                .map_err(|_| BootError::Corrupt { path: path.to_owned() })?
                .boot
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io_err(e)),
    };
    // The protocol's counter wraps at 65,535.
    let boot = previous.wrapping_add(1);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut file = File::create(&tmp).map_err(io_err)?;
    file.write_all(&serde_json::to_vec(&BootFile { boot }).unwrap_or_default()).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    std::fs::rename(&tmp, path).map_err(io_err)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
    }
    Ok(boot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_across_starts_and_wraps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/boot.json");
        assert_eq!(next_boot(&path).unwrap(), 1);
        assert_eq!(next_boot(&path).unwrap(), 2);
        std::fs::write(&path, br#"{"boot":65535}"#).unwrap();
        assert_eq!(next_boot(&path).unwrap(), 0);
        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(next_boot(&path), Err(BootError::Corrupt { .. })));
    }
}
