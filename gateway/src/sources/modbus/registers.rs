//! From register words to engineering values: the read plan (which registers to ask for, in
//! as few requests as possible) and the decoding of each data type and word order. Pure.

use super::config::{DataType, MAX_READ_REGISTERS, PointConfig, RegisterKind, WordOrder};

/// One read request of a poll: a contiguous run of registers that covers one or more points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// Register table.
    pub kind: RegisterKind,
    /// First register address.
    pub start: u16,
    /// Number of registers (at most [`MAX_READ_REGISTERS`]).
    pub count: u16,
    /// The points this read covers, as indices into the device's point list.
    pub points: Vec<usize>,
}

/// Groups `points` into as few reads as possible: points of the same register table whose
/// registers touch or overlap share one read, up to [`MAX_READ_REGISTERS`].
///
/// Gaps are never bridged, even small ones: many devices answer "illegal data address" for
/// a register they do not implement, which would fail the whole read.
pub fn plan_reads(points: &[PointConfig]) -> Vec<Read> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by_key(|&i| (points[i].register, points[i].address, i));
    let mut reads: Vec<Read> = Vec::new();
    for i in order {
        let p = &points[i];
        let (start, end) = (u32::from(p.address), u32::from(p.address) + u32::from(p.data_type.registers()));
        if let Some(read) = reads.last_mut() {
            let read_end = u32::from(read.start) + u32::from(read.count);
            let new_end = end.max(read_end);
            if read.kind == p.register
                && start <= read_end
                && new_end - u32::from(read.start) <= u32::from(MAX_READ_REGISTERS)
            {
                read.count = (new_end - u32::from(read.start)) as u16;
                read.points.push(i);
                continue;
            }
        }
        reads.push(Read { kind: p.register, start: p.address, count: (end - start) as u16, points: vec![i] });
    }
    reads
}

/// The raw (unscaled) value in `words`, which hold exactly the point's registers.
///
/// # Panics
/// If `words` is shorter than [`DataType::registers`]; [`plan_reads`] and the client make
/// sure it never is.
pub fn decode(words: &[u16], data_type: DataType, order: WordOrder) -> f64 {
    let pair = || -> u32 {
        let (hi, lo) = match order {
            WordOrder::Big => (words[0], words[1]),
            WordOrder::Little => (words[1], words[0]),
        };
        (u32::from(hi) << 16) | u32::from(lo)
    };
    match data_type {
        DataType::U16 => f64::from(words[0]),
        DataType::I16 => f64::from(words[0] as i16),
        DataType::U32 => f64::from(pair()),
        DataType::I32 => f64::from(pair() as i32),
        DataType::F32 => f64::from(f32::from_bits(pair())),
    }
}

/// The registers a device holds for raw value `raw`: the inverse of [`decode`], used by
/// tests and simulators. Integers are truncated toward zero and saturate at the type's
/// bounds.
pub fn encode(raw: f64, data_type: DataType, order: WordOrder) -> Vec<u16> {
    let split = |bits: u32| -> Vec<u16> {
        let (hi, lo) = ((bits >> 16) as u16, bits as u16);
        match order {
            WordOrder::Big => vec![hi, lo],
            WordOrder::Little => vec![lo, hi],
        }
    };
    match data_type {
        DataType::U16 => vec![raw as u16],
        DataType::I16 => vec![raw as i16 as u16],
        DataType::U32 => split(raw as u32),
        DataType::I32 => split(raw as i32 as u32),
        DataType::F32 => split((raw as f32).to_bits()),
    }
}

/// A point's engineering value from the raw one.
pub fn scale(point: &PointConfig, raw: f64) -> f64 {
    raw * point.scale + point.offset
}

/// Engineering values of every point, in the device's point order, from the answers to
/// `reads` (same order, each exactly `count` words long).
///
/// # Errors
/// A short answer (some devices answer fewer registers than asked for), naming the read.
pub fn decode_reads(
    points: &[PointConfig],
    reads: &[Read],
    answers: &[Vec<u16>],
) -> Result<Vec<f64>, String> {
    let mut values = vec![f64::NAN; points.len()];
    for (read, words) in reads.iter().zip(answers) {
        if words.len() < usize::from(read.count) {
            return Err(format!(
                "{:?} registers {}+{}: device answered {} registers",
                read.kind,
                read.start,
                read.count,
                words.len()
            ));
        }
        for &i in &read.points {
            let p = &points[i];
            let at = usize::from(p.address - read.start);
            values[i] = scale(p, decode(&words[at..], p.data_type, p.word_order));
        }
    }
    Ok(values)
}
