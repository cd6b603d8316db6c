//! On-disk record framing: pure encode and decode, no file handling.
//!
//! ```text
//! | len u32 LE | crc32c u32 LE | id u64 LE | ts_ms u64 LE | class u8 | payload (len bytes) |
//! ```
//!
//! The checksum (CRC32C, as in Vector's disk buffer) covers id, timestamp, class and payload, so a torn
//! write, a flipped bit or a length field pointing into garbage is detected on recovery.

use firegrid_protocol::Class;

/// Bytes before the payload.
pub const HEADER_LEN: usize = 4 + 4 + 8 + 8 + 1;

/// Largest payload a record may hold. A length above it can only be corruption, so the
/// reader stops there instead of trusting it.
pub const MAX_RECORD_PAYLOAD: usize = 16 * 1024 * 1024;

/// One record read back from a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Spool-wide id, strictly increasing in append order.
    pub id: u64,
    /// When the gateway accepted the data, Unix ms.
    pub ts_ms: u64,
    /// Delivery class: decides fsync-before-ack and whether it may be shed.
    pub class: Class,
    /// The stored bytes (line protocol for the time-series spool).
    pub payload: Vec<u8>,
}

impl Record {
    /// Bytes this record takes on disk.
    pub fn disk_len(&self) -> u64 {
        (HEADER_LEN + self.payload.len()) as u64
    }
}

fn class_byte(class: Class) -> u8 {
    match class {
        Class::Alarm => 0,
        Class::Event => 1,
        Class::Telemetry => 2,
    }
}

fn class_from(byte: u8) -> Option<Class> {
    match byte {
        0 => Some(Class::Alarm),
        1 => Some(Class::Event),
        2 => Some(Class::Telemetry),
        _ => None,
    }
}

fn checksum(id: u64, ts_ms: u64, class: u8, payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&id.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &ts_ms.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &[class]);
    crc32c::crc32c_append(crc, payload)
}

/// Appends the framed record to `out`.
pub fn encode(id: u64, ts_ms: u64, class: Class, payload: &[u8], out: &mut Vec<u8>) {
    let class = class_byte(class);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(id, ts_ms, class, payload).to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&ts_ms.to_le_bytes());
    out.push(class);
    out.extend_from_slice(payload);
}

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A good record and its framed length.
    Record(Record, usize),
    /// The buffer ends inside a record: a torn write, or more bytes are needed.
    Incomplete,
    /// The bytes are not a valid record (bad checksum, class or length).
    Corrupt,
}

/// Decodes the record at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded {
    if buf.len() < HEADER_LEN {
        return Decoded::Incomplete;
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
    if len > MAX_RECORD_PAYLOAD {
        return Decoded::Corrupt;
    }
    if buf.len() < HEADER_LEN + len {
        return Decoded::Incomplete;
    }
    let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap());
    let id = u64::from_le_bytes(buf[8..16].try_into().unwrap());
    let ts_ms = u64::from_le_bytes(buf[16..24].try_into().unwrap());
    let class_raw = buf[24];
    let payload = &buf[HEADER_LEN..HEADER_LEN + len];
    match class_from(class_raw) {
        Some(class) if checksum(id, ts_ms, class_raw, payload) == crc => {
            Decoded::Record(Record { id, ts_ms, class, payload: payload.to_vec() }, HEADER_LEN + len)
        }
        _ => Decoded::Corrupt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(id: u64, class: Class, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(id, 1_000 + id, class, payload, &mut out);
        out
    }

    fn check(buf: &[u8], expected: Decoded) {
        assert_eq!(decode(buf), expected);
    }

    #[test]
    fn framing() {
        let good = framed(7, Class::Alarm, b"fire");
        let record = Record { id: 7, ts_ms: 1_007, class: Class::Alarm, payload: b"fire".to_vec() };
        check(&good, Decoded::Record(record.clone(), good.len()));
        assert_eq!(record.disk_len(), good.len() as u64);
        // Trailing bytes belong to the next record.
        let mut two = good.clone();
        two.extend_from_slice(&framed(8, Class::Telemetry, b""));
        check(&two, Decoded::Record(record, good.len()));
        // Torn anywhere: incomplete.
        for cut in 0..good.len() {
            check(&good[..cut], Decoded::Incomplete);
        }
        // Any flipped bit after the length field: corrupt.
        for at in 4..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            check(&bad, Decoded::Corrupt);
        }
        // A garbage length.
        let mut bad = good.clone();
        bad[3] = 0xff;
        check(&bad, Decoded::Corrupt);
    }
}
