//! Reloading the directory when its file changes: [`DirectoryWatch`] holds the current
//! directory and reloads on demand; [`run`] asks it at an interval.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::{Directory, DirectoryError};

/// What the watch last saw at the path, to tell whether there is anything new to load.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// A file with this modification time and size.
    File { modified: SystemTime, len: u64 },
    /// No readable file, for this reason.
    Unreadable(io::ErrorKind),
}

/// The current officer directory and the file it comes from.
///
/// A file that changed is loaded; if it loads, it replaces the directory, otherwise the old
/// directory stays and the error is returned **once**: the file's new stamp is remembered
/// either way, so a broken file is not reported again until it changes again.
///
/// A change is seen by modification time and size. On file systems with coarse timestamps
/// (FAT: 2 s) an edit that keeps the size within the same tick goes unseen until the next
/// edit; editors and `mv` of a new file change both in practice.
#[derive(Debug)]
pub struct DirectoryWatch {
    path: PathBuf,
    current: RwLock<Arc<Directory>>,
    /// Also serialises reloads, so two callers never load the same change twice.
    seen: Mutex<Seen>,
}

impl DirectoryWatch {
    /// Loads the directory at `path`. A file that does not load is an error here: at start
    /// there is no previous directory to keep.
    pub fn open(path: impl Into<PathBuf>) -> Result<DirectoryWatch, DirectoryError> {
        let path = path.into();
        let (seen, loaded) = read(&path);
        let directory = loaded?;
        Ok(DirectoryWatch { path, current: RwLock::new(Arc::new(directory)), seen: Mutex::new(seen) })
    }

    /// The file watched.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory now. Cheap (a shared pointer); hold it for one request, not longer, so
    /// reloads reach every request after them.
    pub fn current(&self) -> Arc<Directory> {
        // Nothing panics while the lock is held, so a poisoned lock still holds a whole
        // directory.
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Reloads the file if its modification time or size changed since it was last read.
    /// `Ok(true)`: a new directory is in place; `Ok(false)`: nothing new (including a broken
    /// file already reported); `Err`: the file changed and could not be loaded, and the
    /// previous directory stays.
    pub fn reload_if_changed(&self) -> Result<bool, DirectoryError> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let now = match std::fs::metadata(&self.path) {
            Ok(m) => stamp(&m),
            Err(e) => Seen::Unreadable(e.kind()),
        };
        if now == *seen {
            return Ok(false);
        }
        // The stamp that counts is the one of the file actually read (it may have been
        // replaced since the check above).
        let (now, loaded) = read(&self.path);
        *seen = now;
        let directory = loaded?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(directory);
        Ok(true)
    }
}

fn stamp(m: &std::fs::Metadata) -> Seen {
    match m.modified() {
        Ok(modified) => Seen::File { modified, len: m.len() },
        Err(e) => Seen::Unreadable(e.kind()),
    }
}

/// Reads and parses the file, taking the stamp from the open handle so it belongs to the
/// bytes read.
fn read(path: &Path) -> (Seen, Result<Directory, DirectoryError>) {
    let io_error = |source: io::Error| DirectoryError::Io { path: path.to_owned(), source };
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return (Seen::Unreadable(e.kind()), Err(io_error(e))),
    };
    let seen = match file.metadata() {
        Ok(m) => stamp(&m),
        Err(e) => return (Seen::Unreadable(e.kind()), Err(io_error(e))),
    };
    let mut text = String::new();
    match file.read_to_string(&mut text) {
        Ok(_) => (seen, Directory::from_toml(&text)),
        Err(e) => (seen, Err(io_error(e))),
    }
}

/// Polls the directory file every `every` until `shutdown`, reloading it when it changes;
/// logs each reload, and each file that does not load once.
pub async fn run(watch: Arc<DirectoryWatch>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // A stat, and on change a read of a file of a few KiB, are shorter than handing the
        // work to the blocking pool would be.
        match watch.reload_if_changed() {
            Ok(true) => tracing::info!(
                path = %watch.path().display(),
                officers = watch.current().len(),
                "Officer directory reloaded."
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!(
                path = %watch.path().display(),
                error = %e,
                "Officer directory not reloaded; keeping the previous one."
            ),
        }
    }
}
