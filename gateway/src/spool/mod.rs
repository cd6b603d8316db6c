//! The durable spool: store-and-forward between what the gateway accepts and the databases
//! it writes to.
//!
//! Modelled on Vector's disk buffer (v2): records are appended to segment files, each record
//! carries a CRC32C, a small ledger file per destination holds the last record id that
//! destination acknowledged, and a segment is deleted whole once every destination has
//! acknowledged all of it. Each destination reads at its own pace, so one slow database never
//! holds back another.
//!
//! Durability is the caller's choice per batch ([`Durability`]): every accepted record is
//! written to the OS before the MQTT acknowledgement (so `kill -9` of the gateway loses
//! nothing), and alarm-class records are also fsynced first (so a power cut does not either).
//! Everything else is fsynced on a short timer by the owner of the spool.
//!
//! When the spool reaches its size limit, [`WhenFull`] decides what gives way. Alarm- and
//! event-class records are never dropped: if only they remain, the limit is exceeded and the
//! overrun is counted, because losing a fire alarm is worse than using more disk.

pub mod held;
mod record;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use firegrid_protocol::Class;
use record::{Decoded, HEADER_LEN};
pub use record::{MAX_RECORD_PAYLOAD, Record};

/// What gives way when the spool is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Rewrite the oldest segments without their telemetry records (heartbeats and periodic
    /// readings, which newer ones supersede), oldest first. The default: the database gets
    /// the most recent picture of the village when it comes back.
    #[default]
    ShedOldestTelemetry,
    /// Keep what is stored and drop new telemetry records while full, keeping the history
    /// of the outage's start.
    DropNewTelemetry,
}

/// How the spool is sized and where it lives.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Directory holding segments and ledgers; created if missing.
    pub dir: PathBuf,
    /// A segment is closed and a new one started once it reaches this size.
    pub segment_bytes: u64,
    /// Size limit for all segments together (see [`WhenFull`]).
    pub max_bytes: u64,
    /// The policy at the limit.
    pub when_full: WhenFull,
    /// With no destination (the spool is the local archive), segments whose newest record is
    /// older than this, relative to the newest record appended, are deleted.
    pub archive_max_age_ms: Option<u64>,
}

impl SpoolConfig {
    /// Defaults for `dir`: 16 MiB segments, 1 GiB in all, shed oldest telemetry, keep the
    /// archive for 30 days.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SpoolConfig {
            dir: dir.into(),
            segment_bytes: 16 * 1024 * 1024,
            max_bytes: 1024 * 1024 * 1024,
            when_full: WhenFull::default(),
            archive_max_age_ms: Some(30 * 24 * 3600 * 1000),
        }
    }
}

/// How far a [`Spool::commit`] pushes the appended records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Durability {
    /// Written to the operating system: survives a crash or `kill -9` of the gateway.
    Os,
    /// Also fsynced: survives a power cut.
    Disk,
}

/// Errors of the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file operation failed (a full disk, a permission problem).
    #[error("spool I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The record is larger than [`MAX_RECORD_PAYLOAD`].
    #[error("record of {0} bytes is larger than the spool's 16 MiB record limit")]
    RecordTooLarge(usize),
    /// The destination was not configured when the spool was opened.
    #[error("unknown spool destination {0:?}")]
    UnknownDestination(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.to_owned(), source }
}

/// What [`Spool::append`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored under this id.
    Stored(u64),
    /// Telemetry dropped because the spool is full and the policy is
    /// [`WhenFull::DropNewTelemetry`] (or nothing else could be shed).
    Dropped,
}

/// Counters since the spool was opened, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Records appended.
    pub appended: u64,
    /// Telemetry records removed by compaction or refused at the limit.
    pub shed: u64,
    /// Times alarm- or event-class records were stored above the size limit.
    pub over_limit: u64,
    /// Corrupt or torn regions found on open (each counted once).
    pub corrupt_regions: u64,
    /// Bytes cut from segment tails or skipped on open because they were corrupt.
    pub corrupt_bytes: u64,
    /// Segments deleted (fully acknowledged, or rotated out of the archive).
    pub segments_deleted: u64,
    /// Commits that were fsynced ([`Durability::Disk`]).
    pub syncs: u64,
}

#[derive(Debug, Clone)]
struct Segment {
    /// Id of its first record; also its file name.
    first_id: u64,
    /// Highest id ever written to it (0 if none yet). Compaction keeps this logical bound.
    last_id: u64,
    /// Timestamp of its newest record.
    last_ts_ms: u64,
    /// Size on disk (including bytes still in the write buffer, for the active one).
    bytes: u64,
    /// Telemetry records in it, the ones compaction can remove.
    telemetry: u64,
}

/// Where a destination's next read starts. Offsets are hints: after a compaction or a
/// rewind the reader scans from the segment start and skips ids below `next_id`.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    next_id: u64,
    segment: u64,
    offset: u64,
}

#[derive(Debug)]
struct Destination {
    acked: u64,
    cursor: Cursor,
}

/// The spool. One owner (a task or thread) drives it; see the module docs.
#[derive(Debug)]
pub struct Spool {
    cfg: SpoolConfig,
    segments: Vec<Segment>,
    writer: BufWriter<File>,
    next_id: u64,
    dests: BTreeMap<String, Destination>,
    stats: SpoolStats,
    scratch: Vec<u8>,
    /// A [`Spool::reopen`] failed: the in-memory state may not match the files, so nothing
    /// is written (a flush would write records the caller gave up) until one succeeds.
    poisoned: bool,
}

fn segment_path(dir: &Path, first_id: u64) -> PathBuf {
    dir.join(format!("{first_id:020}.seg"))
}

fn ledger_path(dir: &Path, dest: &str) -> PathBuf {
    dir.join(format!("{dest}.ack"))
}

/// Reads one framed record from `reader`; `Ok(None)` at a clean end of data.
fn read_record(reader: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<Option<Decoded>> {
    buf.clear();
    buf.resize(HEADER_LEN, 0);
    let mut filled = 0;
    while filled < HEADER_LEN {
        match reader.read(&mut buf[filled..])? {
            0 if filled == 0 => return Ok(None),
            0 => return Ok(Some(Decoded::Incomplete)),
            n => filled += n,
        }
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
    if len > MAX_RECORD_PAYLOAD {
        return Ok(Some(Decoded::Corrupt));
    }
    buf.resize(HEADER_LEN + len, 0);
    match reader.read_exact(&mut buf[HEADER_LEN..]) {
        Ok(()) => Ok(Some(record::decode(buf))),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Some(Decoded::Incomplete)),
        Err(e) => Err(e),
    }
}

/// Scans a segment file on open: its records' ids and sizes, and where valid data ends.
struct Scan {
    last_id: u64,
    last_ts_ms: u64,
    telemetry: u64,
    valid_len: u64,
    file_len: u64,
}

fn scan_segment(path: &Path) -> Result<Scan, SpoolError> {
    let file = File::open(path).map_err(io_err(path))?;
    let file_len = file.metadata().map_err(io_err(path))?.len();
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut scan = Scan { last_id: 0, last_ts_ms: 0, telemetry: 0, valid_len: 0, file_len };
    let mut buf = Vec::new();
    while let Some(Decoded::Record(rec, len)) = read_record(&mut reader, &mut buf).map_err(io_err(path))? {
        scan.last_id = rec.id;
        scan.last_ts_ms = rec.ts_ms;
        scan.telemetry += u64::from(rec.class == Class::Telemetry);
        scan.valid_len += len as u64;
    }
    Ok(scan)
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

impl Spool {
    /// Opens (or creates) the spool in `cfg.dir` for the named destinations, recovering from
    /// a crash: torn or corrupt data at the end of a segment is cut off and counted in
    /// [`SpoolStats::corrupt_regions`]; everything before it is kept.
    pub fn open(cfg: SpoolConfig, destinations: &[&str]) -> Result<Spool, SpoolError> {
        fs::create_dir_all(&cfg.dir).map_err(io_err(&cfg.dir))?;
        let mut stats = SpoolStats::default();
        let mut firsts = Vec::new();
        for entry in fs::read_dir(&cfg.dir).map_err(io_err(&cfg.dir))? {
            let path = entry.map_err(io_err(&cfg.dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if let Some(first) = name.strip_suffix(".seg").and_then(|n| n.parse::<u64>().ok()) {
                firsts.push(first);
            } else if name.ends_with(".tmp") {
                // A compaction that crashed before its rename: the original is intact.
                fs::remove_file(&path).map_err(io_err(&path))?;
            }
        }
        firsts.sort_unstable();

        let mut segments = Vec::with_capacity(firsts.len());
        for first_id in firsts {
            let path = segment_path(&cfg.dir, first_id);
            let scan = scan_segment(&path)?;
            if scan.valid_len < scan.file_len {
                // Torn tail from a crash mid-write, or corruption. Records after the bad spot
                // cannot be found reliably (their length fields are not trustworthy), so the
                // segment is cut there. Later segments are unaffected.
                tracing::error!(
                    segment = %path.display(),
                    valid_bytes = scan.valid_len,
                    lost_bytes = scan.file_len - scan.valid_len,
                    "Spool segment has a corrupt or torn tail; keeping the records before it."
                );
                stats.corrupt_regions += 1;
                stats.corrupt_bytes += scan.file_len - scan.valid_len;
                let file = OpenOptions::new().write(true).open(&path).map_err(io_err(&path))?;
                file.set_len(scan.valid_len).map_err(io_err(&path))?;
                file.sync_all().map_err(io_err(&path))?;
            }
            segments.push(Segment {
                first_id,
                last_id: scan.last_id,
                last_ts_ms: scan.last_ts_ms,
                bytes: scan.valid_len,
                telemetry: scan.telemetry,
            });
        }

        let mut dests = BTreeMap::new();
        for name in destinations {
            let acked = read_ledger(&ledger_path(&cfg.dir, name))?;
            dests.insert(
                (*name).to_owned(),
                Destination { acked, cursor: Cursor { next_id: acked + 1, segment: 0, offset: 0 } },
            );
        }

        // Ids must keep growing across restarts even when every segment was deleted, or new
        // records would hide below a destination's acknowledged position.
        let last_written = segments.iter().map(|s| s.last_id.max(s.first_id.saturating_sub(1))).max();
        let last_acked = dests.values().map(|d| d.acked).max().unwrap_or(0);
        let next_id = last_written.unwrap_or(0).max(last_acked) + 1;

        if segments.last().is_none_or(|s| s.bytes >= cfg.segment_bytes) {
            segments.push(Segment { first_id: next_id, last_id: 0, last_ts_ms: 0, bytes: 0, telemetry: 0 });
        }
        let active = segments.last().unwrap();
        let writer = open_append(&segment_path(&cfg.dir, active.first_id))?;
        sync_dir(&cfg.dir)?;
        Ok(Spool { cfg, segments, writer, next_id, dests, stats, scratch: Vec::new(), poisoned: false })
    }

    /// Throws away what was appended but not committed and reads the spool again from its
    /// files, after a write failed (a full, read-only or failing disk): the in-memory state
    /// then matches the files again, whatever the failed write left behind (a torn record is
    /// cut as on a restart). Counters are kept; destinations resume after the position they
    /// acknowledged last (a ledger the full disk refused costs a rewrite of points that
    /// overwrite themselves, see `write_ledger`). The caller keeps whatever it did not get
    /// committed. Fails, leaving the spool unusable until a later call succeeds, while the
    /// files cannot be opened for writing (a read-only disk).
    pub fn reopen(&mut self) -> Result<(), SpoolError> {
        let names: Vec<String> = self.dests.keys().cloned().collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut fresh = match Spool::open(self.cfg.clone(), &refs) {
            Ok(fresh) => fresh,
            Err(error) => {
                self.poisoned = true;
                return Err(error);
            }
        };
        for (name, dest) in &mut fresh.dests {
            let acked = self.dests[name].acked.max(dest.acked);
            *dest = Destination { acked, cursor: Cursor { next_id: acked + 1, segment: 0, offset: 0 } };
        }
        fresh.next_id = fresh.next_id.max(fresh.dests.values().map(|d| d.acked + 1).max().unwrap_or(1));
        let old = std::mem::replace(self, fresh);
        let corrupt = (self.stats.corrupt_regions, self.stats.corrupt_bytes);
        self.stats = SpoolStats {
            corrupt_regions: old.stats.corrupt_regions + corrupt.0,
            corrupt_bytes: old.stats.corrupt_bytes + corrupt.1,
            ..old.stats.clone()
        };
        // Not dropped as it is: a `BufWriter` flushes on drop, which would write the records
        // just given up behind the fresh state's back.
        let (_file, _unwritten) = old.writer.into_parts();
        Ok(())
    }

    /// Appends one record. It is in the OS (or on disk) only after the next
    /// [`Spool::commit`]; acknowledge nothing upstream before that.
    pub fn append(&mut self, class: Class, ts_ms: u64, payload: &[u8]) -> Result<Appended, SpoolError> {
        self.check_usable()?;
        if payload.len() > MAX_RECORD_PAYLOAD {
            return Err(SpoolError::RecordTooLarge(payload.len()));
        }
        let len = (HEADER_LEN + payload.len()) as u64;
        if self.total_bytes() + len > self.cfg.max_bytes && !self.make_room(class, len)? {
            self.stats.shed += 1;
            return Ok(Appended::Dropped);
        }
        if self.segments.last().unwrap().bytes >= self.cfg.segment_bytes {
            self.roll()?;
        }
        let id = self.next_id;
        self.scratch.clear();
        record::encode(id, ts_ms, class, payload, &mut self.scratch);
        let active = self.segments.last_mut().unwrap();
        // The path only on failure: made for every record, it was a twentieth of the ingest
        // path's time (a profile of `firegrid-bench ingest-only`).
        if let Err(source) = self.writer.write_all(&self.scratch) {
            return Err(SpoolError::Io { path: segment_path(&self.cfg.dir, active.first_id), source });
        }
        active.last_id = id;
        active.last_ts_ms = active.last_ts_ms.max(ts_ms);
        active.bytes += len;
        active.telemetry += u64::from(class == Class::Telemetry);
        self.next_id += 1;
        self.stats.appended += 1;
        Ok(Appended::Stored(id))
    }

    /// Pushes everything appended so far to the OS, and with [`Durability::Disk`] to disk.
    pub fn commit(&mut self, durability: Durability) -> Result<(), SpoolError> {
        self.check_usable()?;
        let path = || segment_path(&self.cfg.dir, self.segments.last().unwrap().first_id);
        self.writer.flush().map_err(|source| SpoolError::Io { path: path(), source })?;
        if durability == Durability::Disk {
            self.writer.get_ref().sync_data().map_err(|source| SpoolError::Io { path: path(), source })?;
            self.stats.syncs += 1;
        }
        Ok(())
    }

    /// Reads up to `max_records` records (and about `max_bytes` of payload, at least one
    /// record) that `dest` has not read since its last acknowledgement or rewind, in id order.
    pub fn read(
        &mut self,
        dest: &str,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, SpoolError> {
        self.commit(Durability::Os)?;
        let mut cursor = self.dest(dest)?.cursor;
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut buf = std::mem::take(&mut self.scratch);
        'segments: while out.len() < max_records && bytes < max_bytes {
            // The segment holding `next_id`: the last one starting at or before it.
            let Some(index) = self.segments.iter().rposition(|s| s.first_id <= cursor.next_id).or(
                // Everything up to the first segment was deleted: start there.
                (!self.segments.is_empty()).then_some(0),
            ) else {
                break;
            };
            let segment = &self.segments[index];
            if segment.first_id != cursor.segment {
                cursor.segment = segment.first_id;
                cursor.offset = 0;
            }
            if cursor.offset >= segment.bytes {
                match self.segments.get(index + 1) {
                    Some(next) => {
                        cursor.next_id = cursor.next_id.max(next.first_id);
                        continue;
                    }
                    None => break,
                }
            }
            let path = segment_path(&self.cfg.dir, segment.first_id);
            let mut file = File::open(&path).map_err(io_err(&path))?;
            file.seek(SeekFrom::Start(cursor.offset)).map_err(io_err(&path))?;
            let mut reader = BufReader::with_capacity(256 * 1024, file.take(segment.bytes - cursor.offset));
            loop {
                match read_record(&mut reader, &mut buf).map_err(io_err(&path))? {
                    Some(Decoded::Record(rec, len)) => {
                        cursor.offset += len as u64;
                        if rec.id < cursor.next_id {
                            continue;
                        }
                        cursor.next_id = rec.id + 1;
                        bytes += rec.payload.len();
                        out.push(rec);
                        if out.len() >= max_records || bytes >= max_bytes {
                            break 'segments;
                        }
                    }
                    // The end of what this segment holds (its size is known, so a torn record
                    // cannot appear here: open() cut those off).
                    _ => {
                        cursor.offset = segment.bytes;
                        continue 'segments;
                    }
                }
            }
        }
        self.scratch = buf;
        self.dest_mut(dest)?.cursor = cursor;
        Ok(out)
    }

    /// The newest `n` records (fewer if the spool holds fewer), oldest first, whatever the
    /// destinations have read. Used on start to remember what was stored just before a stop.
    pub fn tail(&mut self, n: usize) -> Result<Vec<Record>, SpoolError> {
        self.commit(Durability::Os)?;
        let mut newest_first: Vec<Vec<Record>> = Vec::new();
        let mut count = 0;
        let mut buf = std::mem::take(&mut self.scratch);
        for segment in self.segments.iter().rev() {
            if count >= n {
                break;
            }
            let path = segment_path(&self.cfg.dir, segment.first_id);
            let file = File::open(&path).map_err(io_err(&path))?;
            let mut reader = BufReader::with_capacity(256 * 1024, file.take(segment.bytes));
            let mut records = Vec::new();
            while let Some(Decoded::Record(rec, _)) =
                read_record(&mut reader, &mut buf).map_err(io_err(&path))?
            {
                records.push(rec);
            }
            count += records.len();
            newest_first.push(records);
        }
        self.scratch = buf;
        let mut out: Vec<Record> = newest_first.into_iter().rev().flatten().collect();
        out.drain(..out.len().saturating_sub(n));
        Ok(out)
    }

    /// Records that `dest` has read everything up to and including `upto`. Persists its
    /// position and deletes segments every destination is done with.
    pub fn ack(&mut self, dest: &str, upto: u64) -> Result<(), SpoolError> {
        let path = ledger_path(&self.cfg.dir, dest);
        let d = self.dest_mut(dest)?;
        if upto <= d.acked {
            return Ok(());
        }
        d.acked = upto;
        write_ledger(&path, upto)?;
        self.collect_garbage()
    }

    /// Makes `dest` read again from just after its last acknowledgement, after a failed
    /// delivery.
    pub fn rewind(&mut self, dest: &str) -> Result<(), SpoolError> {
        let d = self.dest_mut(dest)?;
        d.cursor = Cursor { next_id: d.acked + 1, segment: 0, offset: 0 };
        Ok(())
    }

    /// Records appended but not yet acknowledged by `dest` (including shed ones' ids, so an
    /// upper bound).
    pub fn depth(&self, dest: &str) -> Result<u64, SpoolError> {
        let acked = self.dest(dest)?.acked;
        let first = self.segments.first().map_or(self.next_id, |s| s.first_id);
        Ok(self.next_id - acked.max(first - 1) - 1)
    }

    /// Bytes in all segments.
    pub fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Counters since open.
    pub fn stats(&self) -> &SpoolStats {
        &self.stats
    }

    /// The configuration in force.
    pub fn config(&self) -> &SpoolConfig {
        &self.cfg
    }

    fn dest(&self, dest: &str) -> Result<&Destination, SpoolError> {
        self.dests.get(dest).ok_or_else(|| SpoolError::UnknownDestination(dest.to_owned()))
    }

    fn check_usable(&self) -> Result<(), SpoolError> {
        if self.poisoned {
            return Err(SpoolError::Io {
                path: self.cfg.dir.clone(),
                source: io::Error::other("the spool could not be reopened after a failed write"),
            });
        }
        Ok(())
    }

    fn dest_mut(&mut self, dest: &str) -> Result<&mut Destination, SpoolError> {
        self.dests.get_mut(dest).ok_or_else(|| SpoolError::UnknownDestination(dest.to_owned()))
    }

    /// Closes the active segment and starts a new one.
    fn roll(&mut self) -> Result<(), SpoolError> {
        self.commit(Durability::Disk)?;
        let first_id = self.next_id;
        self.writer = open_append(&segment_path(&self.cfg.dir, first_id))?;
        sync_dir(&self.cfg.dir)?;
        self.segments.push(Segment { first_id, last_id: 0, last_ts_ms: 0, bytes: 0, telemetry: 0 });
        self.collect_garbage()
    }

    /// Deletes closed segments that every destination has acknowledged, or, with no
    /// destinations, that fall outside the archive's size and age limits.
    fn collect_garbage(&mut self) -> Result<(), SpoolError> {
        let newest_ts = self.segments.iter().map(|s| s.last_ts_ms).max().unwrap_or(0);
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let done = if self.dests.is_empty() {
                let too_old =
                    self.cfg.archive_max_age_ms.is_some_and(|age| oldest.last_ts_ms + age < newest_ts);
                too_old || self.total_bytes() > self.cfg.max_bytes
            } else {
                let next_first = self.segments[1].first_id;
                self.dests.values().all(|d| d.acked + 1 >= next_first)
            };
            if !done {
                break;
            }
            let path = segment_path(&self.cfg.dir, oldest.first_id);
            fs::remove_file(&path).map_err(io_err(&path))?;
            self.segments.remove(0);
            self.stats.segments_deleted += 1;
        }
        Ok(())
    }

    /// Tries to get under the size limit before storing a record of `class` and `len` bytes.
    /// Returns whether the record may be stored.
    fn make_room(&mut self, class: Class, len: u64) -> Result<bool, SpoolError> {
        if self.dests.is_empty() {
            // The archive rotates instead: start a new segment and drop the oldest.
            self.roll()?;
            return Ok(true);
        }
        if self.cfg.when_full == WhenFull::ShedOldestTelemetry {
            while self.total_bytes() + len > self.cfg.max_bytes {
                // Searched afresh each time: rolling may delete acknowledged segments.
                let closed = self.segments.len() - 1;
                match self.segments[..closed].iter().position(|s| s.telemetry > 0) {
                    Some(index) => self.compact(index)?,
                    // Only the active segment has telemetry left: close it so that it can be
                    // rewritten like the others.
                    None if self.segments[closed].telemetry > 0 => self.roll()?,
                    None => break,
                }
            }
        }
        let fits = self.total_bytes() + len <= self.cfg.max_bytes;
        if !fits && class != Class::Telemetry {
            self.stats.over_limit += 1;
            // Logged on the 1st, 2nd, 4th, 8th ... occurrence: visible at once, never a flood.
            if self.stats.over_limit.is_power_of_two() {
                tracing::warn!(
                    occurrences = self.stats.over_limit,
                    limit_bytes = self.cfg.max_bytes,
                    used_bytes = self.total_bytes(),
                    "Spool is over its size limit with alarm and event records only; storing anyway."
                );
            }
        }
        Ok(fits || class != Class::Telemetry)
    }

    /// Rewrites closed segment `index` without its telemetry records.
    fn compact(&mut self, index: usize) -> Result<(), SpoolError> {
        let first_id = self.segments[index].first_id;
        let path = segment_path(&self.cfg.dir, first_id);
        let tmp = path.with_extension("seg.tmp");
        let mut reader = BufReader::new(File::open(&path).map_err(io_err(&path))?);
        let mut writer = BufWriter::new(File::create(&tmp).map_err(io_err(&tmp))?);
        let (mut kept_bytes, mut shed) = (0, 0);
        let mut buf = Vec::new();
        let mut framed = Vec::new();
        while let Some(Decoded::Record(rec, len)) =
            read_record(&mut reader, &mut buf).map_err(io_err(&path))?
        {
            if rec.class == Class::Telemetry {
                shed += 1;
                continue;
            }
            framed.clear();
            record::encode(rec.id, rec.ts_ms, rec.class, &rec.payload, &mut framed);
            writer.write_all(&framed).map_err(io_err(&tmp))?;
            kept_bytes += len as u64;
        }
        let file = writer.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?;
        file.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        sync_dir(&self.cfg.dir)?;
        let segment = &mut self.segments[index];
        tracing::warn!(
            segment = %path.display(),
            shed_records = shed,
            freed_bytes = segment.bytes - kept_bytes,
            "Spool full: shed the oldest telemetry."
        );
        segment.bytes = kept_bytes;
        segment.telemetry = 0;
        self.stats.shed += shed;
        for d in self.dests.values_mut() {
            if d.cursor.segment == first_id {
                d.cursor.offset = 0;
            }
        }
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<BufWriter<File>, SpoolError> {
    let file = OpenOptions::new().create(true).append(true).open(path).map_err(io_err(path))?;
    Ok(BufWriter::with_capacity(256 * 1024, file))
}

/// A ledger file: the acknowledged id (u64 LE) and its CRC32C. Written to a temporary file
/// and renamed, so it is always either the old or the new value. It is not fsynced: losing
/// the newest position in a power cut only means a batch is written twice, and a rewrite of
/// the same points with the same timestamps overwrites itself in InfluxDB.
fn write_ledger(path: &Path, acked: u64) -> Result<(), SpoolError> {
    let tmp = path.with_extension("ack.tmp");
    let mut bytes = acked.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32c::crc32c(&acked.to_le_bytes()).to_le_bytes());
    fs::write(&tmp, &bytes).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

fn read_ledger(path: &Path) -> Result<u64, SpoolError> {
    match fs::read(path) {
        Ok(bytes) if bytes.len() == 12 => {
            let acked = u64::from_le_bytes(bytes[..8].try_into().unwrap());
            if crc32c::crc32c(&bytes[..8]).to_le_bytes() == bytes[8..12] {
                Ok(acked)
            } else {
                tracing::error!(ledger = %path.display(), "Spool ledger is corrupt; redelivering from the start.");
                Ok(0)
            }
        }
        Ok(_) => {
            tracing::error!(ledger = %path.display(), "Spool ledger is corrupt; redelivering from the start.");
            Ok(0)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_err(path)(e)),
    }
}
