//! [`FakeClock`]: steps the wall clock of a child process while it runs, through libfaketime
//! (Debian package `faketime`), leaving its monotonic clock alone — as an NTP step, a clock
//! set by hand or a bad RTC would.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where Debian installs the thread-safe libfaketime (`libfaketimeMT`): the gateway is
/// multi-threaded.
const LIBRARY: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
];

/// A wall-clock offset that a process started with [`envs`](Self::envs) reads on every clock
/// call (`FAKETIME_NO_CACHE`), so [`set`](Self::set) steps it at once. `CLOCK_MONOTONIC` is
/// not faked (`DONT_FAKE_MONOTONIC`).
#[derive(Debug)]
pub struct FakeClock {
    library: PathBuf,
    file: PathBuf,
}

impl FakeClock {
    /// A clock with no offset, its control file in `dir`.
    ///
    /// # Errors
    /// [`Error::BinaryNotFound`] when libfaketime is not installed (with the `apt-get`
    /// command that installs it), or [`Error::Io`] writing the control file.
    pub fn new(dir: &Path) -> Result<Self> {
        let library =
            LIBRARY.iter().map(PathBuf::from).find(|p| p.is_file()).ok_or_else(|| Error::BinaryNotFound {
                name: "libfaketimeMT.so.1".into(),
                default_path: LIBRARY[0].into(),
                apt_package: "faketime".into(),
            })?;
        let clock = FakeClock { library, file: dir.join("faketime.rc") };
        clock.set("+0")?;
        Ok(clock)
    }

    /// Sets the offset from the real wall clock, in libfaketime's relative syntax: `+0`,
    /// `+3h`, `-90m`, `+1d`.
    ///
    /// # Errors
    /// [`Error::Io`] writing the control file.
    pub fn set(&self, offset: &str) -> Result<()> {
        // Written whole and renamed, so the process never reads half an offset.
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, format!("{offset}\n"))
            .and_then(|()| std::fs::rename(&tmp, &self.file))
            .map_err(|e| Error::io(format!("writing {}", self.file.display()), e))
    }

    /// The environment that puts a child process on this clock.
    pub fn envs(&self) -> Vec<(OsString, OsString)> {
        vec![
            ("LD_PRELOAD".into(), self.library.clone().into()),
            ("FAKETIME_TIMESTAMP_FILE".into(), self.file.clone().into()),
            ("FAKETIME_NO_CACHE".into(), "1".into()),
            ("DONT_FAKE_MONOTONIC".into(), "1".into()),
        ]
    }
}
