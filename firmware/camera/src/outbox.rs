//! [`Outbox`]: the durable, ordered queue of uplinks waiting for their acknowledgement.
//!
//! One append-only file of JSON lines: `{"push":<uplink>}` when a message is queued (written
//! and fsynced before [`Outbox::push`] returns, so an event survives a power cut the moment
//! it is queued) and `{"ack":{"boot":B,"seq":S}}` when one is acknowledged. Opening replays
//! the file; a line torn by a crash at the end is cut off. Once acknowledged lines outweigh
//! the pending ones, the file is rewritten with the pending messages only (write a temporary
//! file, fsync, rename), so it stays the size of the backlog.
//!
//! Acknowledgements are not fsynced: losing one to a crash only means the message is sent
//! again, and the gateway drops the duplicate. Acks may arrive in any order (they travel at
//! QoS 0), hence a record per ack rather than a single acknowledged offset.
//!
//! Nothing here knows MQTT: [`crate::mqtt`] decides what counts as an acknowledgement.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use firegrid_protocol::{Uplink, UplinkKind};
use serde::{Deserialize, Serialize};

/// Acknowledged records in the file before a rewrite is considered.
const COMPACT_AFTER: usize = 1024;

/// Why the outbox failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// Reading, writing or syncing the file failed.
    #[error("outbox {path}: {source}")]
    Io {
        /// The outbox file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The outbox holds `max_pending` messages and none of them may be shed.
    #[error("outbox is full ({pending} messages waiting) and holds nothing that may be shed")]
    Full {
        /// Messages waiting.
        pending: usize,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Record {
    Push(Box<Uplink>),
    Ack { boot: u16, seq: u32 },
}

/// See the module documentation.
#[derive(Debug)]
pub struct Outbox {
    path: PathBuf,
    file: File,
    pending: VecDeque<Uplink>,
    /// Records in the file that no longer stand for a pending message.
    dead_records: usize,
    max_pending: usize,
    corrupt_records: usize,
    shed: u64,
}

impl Outbox {
    /// Opens (or creates) the outbox at `path`, replaying what it holds. At most
    /// `max_pending` messages are kept (see [`Outbox::push`]).
    ///
    /// # Errors
    /// [`OutboxError::Io`] when the file cannot be read, repaired or opened.
    pub fn open(path: &Path, max_pending: usize) -> Result<Self, OutboxError> {
        let io_err = |source| OutboxError::Io { path: path.to_owned(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io_err)?;
        let mut pending: VecDeque<Uplink> = VecDeque::new();
        let (mut records, mut corrupt_records, mut good_len) = (0usize, 0usize, 0u64);
        let mut reader = BufReader::new(&mut file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(io_err)?;
            if n == 0 {
                break;
            }
            if line.last() != Some(&b'\n') {
                // Torn by a crash in the middle of an append: never acknowledged to anyone.
                break;
            }
            good_len += n as u64;
            records += 1;
            match serde_json::from_slice::<Record>(&line) {
                Ok(Record::Push(msg)) => pending.push_back(*msg),
                Ok(Record::Ack { boot, seq }) => {
                    if let Some(i) = pending.iter().position(|m| m.boot == boot && m.seq == seq) {
                        pending.remove(i);
                    }
                }
                Err(_) => corrupt_records += 1,
            }
        }
        drop(reader);
        if file.metadata().map_err(io_err)?.len() != good_len {
            file.set_len(good_len).map_err(io_err)?;
            file.sync_data().map_err(io_err)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io_err)?;
        Ok(Outbox {
            path: path.to_owned(),
            file,
            dead_records: records - pending.len(),
            pending,
            max_pending: max_pending.max(1),
            corrupt_records,
            shed: 0,
        })
    }

    /// Queues `msg` durably, after every message already queued.
    ///
    /// When `max_pending` messages wait, the oldest `camera_health` message is shed to make
    /// room (the next health report supersedes it); a camera event is never shed.
    ///
    /// # Errors
    /// [`OutboxError::Full`] when nothing may be shed; [`OutboxError::Io`] when the append or
    /// the fsync failed (the message may then be in the file but is not queued).
    pub fn push(&mut self, msg: Uplink) -> Result<(), OutboxError> {
        if self.pending.len() >= self.max_pending {
            let victim = self.pending.iter().position(|m| m.kind() == UplinkKind::CameraHealth);
            let Some(i) = victim else {
                return Err(OutboxError::Full { pending: self.pending.len() });
            };
            let (boot, seq) = (self.pending[i].boot, self.pending[i].seq);
            self.ack(boot, seq)?;
            self.shed += 1;
        }
        let mut line =
            serde_json::to_vec(&Record::Push(Box::new(msg.clone()))).map_err(|e| self.io(e.into()))?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(|e| self.io(e))?;
        self.file.sync_data().map_err(|e| self.io(e))?;
        self.pending.push_back(msg);
        Ok(())
    }

    /// Removes the message `(boot, seq)`. Returns whether it was pending.
    ///
    /// # Errors
    /// [`OutboxError::Io`] when the record cannot be written or the file rewritten.
    pub fn ack(&mut self, boot: u16, seq: u32) -> Result<bool, OutboxError> {
        let Some(i) = self.pending.iter().position(|m| m.boot == boot && m.seq == seq) else {
            return Ok(false);
        };
        self.pending.remove(i);
        let mut line = serde_json::to_vec(&Record::Ack { boot, seq }).map_err(|e| self.io(e.into()))?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(|e| self.io(e))?;
        // The push record and this ack are both dead now.
        self.dead_records += 2;
        if self.dead_records >= COMPACT_AFTER && self.dead_records > self.pending.len() {
            self.compact()?;
        }
        Ok(true)
    }

    /// The waiting messages, oldest first.
    pub fn pending(&self) -> impl ExactSizeIterator<Item = &Uplink> {
        self.pending.iter()
    }

    /// How many messages wait.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Lines found unreadable (not torn at the end) when the file was opened.
    pub fn corrupt_records(&self) -> usize {
        self.corrupt_records
    }

    /// Health messages shed because the outbox was full.
    pub fn shed(&self) -> u64 {
        self.shed
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: io::Error) -> OutboxError {
        OutboxError::Io { path: self.path.clone(), source }
    }

    /// Rewrites the file with the pending messages only.
    fn compact(&mut self) -> Result<(), OutboxError> {
        let tmp = self.path.with_extension("jsonl.tmp");
        let mut out = File::create(&tmp).map_err(|e| self.io(e))?;
        let mut text = Vec::new();
        for msg in &self.pending {
            serde_json::to_writer(&mut text, &Record::Push(Box::new(msg.clone())))
                .map_err(|e| self.io(e.into()))?;
            text.push(b'\n');
        }
        out.write_all(&text).map_err(|e| self.io(e))?;
        out.sync_all().map_err(|e| self.io(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))?;
        // The rename itself is durable only once the directory is synced.
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir).and_then(|d| d.sync_all()).map_err(|e| self.io(e))?;
        }
        self.file = OpenOptions::new().append(true).open(&self.path).map_err(|e| self.io(e))?;
        self.dead_records = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
