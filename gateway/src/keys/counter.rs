//! The downlink command counter: a `seq` that never repeats, across restarts too.
//!
//! A device admits each command `seq` once per boot ([`firegrid_protocol::DownlinkGuard`]),
//! so a gateway that restarted and counted from 1 again would have its commands refused as
//! replays until it passed the old numbers. The counter reserves numbers in blocks: before
//! the first number of a block is handed out, the block's end is written and fsynced to a
//! small file, and a restart continues from there. A crash wastes at most one block.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Numbers reserved per fsync: 4,096 commands (a day of acknowledgements for a busy village
/// is a few thousand) for one small write, and 2³² numbers last a million restarts.
const BLOCK: u32 = 4096;

/// A durable, strictly increasing command counter.
#[derive(Debug)]
pub struct CommandCounter {
    path: Option<PathBuf>,
    state: Mutex<(u32, u32)>,
}

impl CommandCounter {
    /// The counter kept in `path` (created if missing).
    pub fn open(path: &Path) -> io::Result<Self> {
        let start = match fs::read_to_string(path) {
            Ok(text) => text.trim().parse::<u32>().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} does not hold a number", path.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 1,
            Err(e) => return Err(e),
        };
        let counter = CommandCounter { path: Some(path.to_owned()), state: Mutex::new((start, start)) };
        Ok(counter)
    }

    /// A counter that lives in memory only (tests, tools).
    pub fn in_memory() -> Self {
        CommandCounter { path: None, state: Mutex::new((1, u32::MAX)) }
    }

    /// The next number. Fails only when a new block cannot be reserved on disk; the caller
    /// then sends nothing rather than a number that may repeat.
    pub fn next(&self) -> io::Result<u32> {
        let mut state = self.state.lock().unwrap();
        let (next, reserved) = *state;
        if next >= reserved {
            let end = next.checked_add(BLOCK).ok_or_else(|| io::Error::other("command counter exhausted"))?;
            if let Some(path) = &self.path {
                write_durably(path, end)?;
            }
            state.1 = end;
        }
        state.0 = next + 1;
        Ok(next)
    }
}

fn write_durably(path: &Path, value: u32) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    writeln!(file, "{value}")?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_never_repeat_across_restarts_or_crashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("downlink-seq");
        let a = CommandCounter::open(&path).unwrap();
        let first: Vec<u32> = (0..10).map(|_| a.next().unwrap()).collect();
        assert_eq!(first, (1..=10).collect::<Vec<_>>());
        // A crash: the process is gone without any shutdown.
        drop(a);
        let b = CommandCounter::open(&path).unwrap();
        let after = b.next().unwrap();
        assert!(after > 10, "restart continued at {after}");
        // Running past a block boundary reserves the next block before using it.
        let mut last = after;
        for _ in 0..(2 * BLOCK) {
            let n = b.next().unwrap();
            assert!(n > last);
            last = n;
        }
        drop(b);
        let c = CommandCounter::open(&path).unwrap();
        assert!(c.next().unwrap() > last);
    }

    #[test]
    fn a_damaged_counter_file_is_an_error_not_a_restart_from_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("downlink-seq");
        fs::write(&path, "garbage").unwrap();
        let error = CommandCounter::open(&path).unwrap_err();
        assert!(error.to_string().contains("does not hold a number"), "{error}");
    }
}
