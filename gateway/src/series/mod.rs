//! Time-series points and their line-protocol encoding.
//!
//! [`Point`] is what the gateway writes: a measurement, tags (the grid hierarchy and device
//! identity), fields (the readings) and the timestamp assigned once, at acceptance, so that a
//! retried write overwrites itself in InfluxDB instead of duplicating. [`Point::encode`]
//! renders line protocol through InfluxData's own builder (`influxdb-line-protocol`), which
//! does the escaping; this module adds what the builder leaves to its caller: tags sorted by
//! key (InfluxDB's fastest path), empty tags dropped, and values line protocol cannot carry
//! (NaN, infinities, line breaks, tabs and backslashes in names and tags) refused with a typed error instead of a corrupt batch.
//! The ingest path's [`Point::encode_cached`] writes the same bytes faster: each device's
//! escaped head from a [`HeadCache`], the fields without the builder's character-at-a-time
//! formatting; a property test holds it to the builder's output.

use std::borrow::Cow;
use std::collections::HashMap;

use influxdb_line_protocol::LineProtocolBuilder;
use influxdb_line_protocol::builder::AfterMeasurement;

pub mod schema;

/// A field value.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// A float; must be finite.
    F64(f64),
    /// A signed integer (`i` suffix). Unsigned integers are avoided: InfluxDB 1.x before 1.8
    /// rejects them.
    I64(i64),
    /// A boolean.
    Bool(bool),
    /// A string; may not contain line breaks.
    Str(String),
}

/// One point.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Measurement name. Names are mostly the schema's constants, so they are borrowed when
    /// they can be: a point is built for every message.
    pub measurement: Cow<'static, str>,
    /// Tags; order does not matter, they are sorted on encoding. Empty values are skipped.
    pub tags: Vec<(Cow<'static, str>, String)>,
    /// Fields; at least one.
    pub fields: Vec<(Cow<'static, str>, Field)>,
    /// Timestamp, Unix nanoseconds.
    pub ts_ns: i64,
}

/// Why a point cannot be written as line protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A point needs at least one field.
    #[error("point in {measurement:?} has no fields")]
    NoFields {
        /// The measurement.
        measurement: String,
    },
    /// A float field is NaN or infinite.
    #[error("field {field:?} is not a finite number")]
    NotFinite {
        /// The field key.
        field: String,
    },
    /// A name or value is empty, holds a line break, tab or NUL, or (except string field
    /// values) ends with a backslash: line protocol cannot carry it.
    #[error(
        "{what} {value:?} cannot be written as line protocol (empty, line break, tab, NUL or trailing backslash)"
    )]
    Unrepresentable {
        /// Which part: measurement, tag key, tag value, field key, field value.
        what: &'static str,
        /// The offending text.
        value: String,
    },
}

/// Names and tag values: non-empty, no line breaks, tabs or NUL (separators or forbidden in
/// the grammar, and the builder does not escape them), and no backslash at all: InfluxDB 1.x
/// and 2.x (the Go parser) keep `\\` in a tag value as two characters while 3.x (the Rust
/// parser the builder follows) reads it as one, so no spelling means the same to both.
/// Registry data and ids never need one.
fn plain(what: &'static str, value: &str) -> Result<(), EncodeError> {
    if value.is_empty() || value.contains(['\n', '\r', '\t', '\0', '\\']) {
        Err(EncodeError::Unrepresentable { what, value: value.to_owned() })
    } else {
        Ok(())
    }
}

impl Point {
    /// A point with no tags or fields yet.
    pub fn new(measurement: impl Into<Cow<'static, str>>, ts_ns: i64) -> Self {
        // Room for the fields of the largest uplink point at once: one allocation, not three.
        Point { measurement: measurement.into(), tags: Vec::new(), fields: Vec::with_capacity(12), ts_ns }
    }

    /// Adds a tag.
    pub fn tag(mut self, key: impl Into<Cow<'static, str>>, value: impl Into<String>) -> Self {
        self.tags.push((key.into(), value.into()));
        self
    }

    /// Adds a field.
    pub fn field(mut self, key: impl Into<Cow<'static, str>>, value: Field) -> Self {
        self.fields.push((key.into(), value));
        self
    }

    /// Appends the point as one line of line protocol (with its `\n`) to `out`. On error
    /// `out` is left as it was.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let tags = self.checked_head()?;
        self.check_fields()?;
        let line = LineProtocolBuilder::new_with(std::mem::take(out)).measurement(&self.measurement);
        *out = self.add_fields(add_tags(line, &tags));
        Ok(())
    }

    /// As [`encode`](Self::encode), taking the escaped `measurement,tags` head from `cache`
    /// when a point with the same measurement and tags was encoded before: escaping, which
    /// the builder does a character at a time through `core::fmt`, was two fifths of the
    /// ingest path's time (a profile of `firegrid-bench ingest-only`), and a device's head
    /// hardly ever changes. The output is byte for byte `encode`'s.
    pub fn encode_cached(&self, cache: &mut HeadCache, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        // Each part with its length before it, so no two points share a key.
        cache.key.clear();
        let tags = self.tags.iter().flat_map(|(k, v)| [k.as_ref(), v.as_str()]);
        for part in std::iter::once(self.measurement.as_ref()).chain(tags) {
            push_part(&mut cache.key, part);
        }
        match cache.heads.get(&cache.key) {
            Some(head) => {
                self.check_fields()?;
                out.extend_from_slice(head);
            }
            None => {
                let head = self.head()?;
                self.check_fields()?;
                out.extend_from_slice(&head);
                HeadCache::insert(&mut cache.heads, cache.key.clone(), head);
            }
        }
        self.write_fields(out);
        Ok(())
    }

    /// As [`encode_cached`](Self::encode_cached) for a point that still lacks the tags of
    /// where its source sits: `place` gives them, and is called only when no head is cached
    /// for `source` with this point's measurement and tags. Writes exactly what `encode`
    /// writes for the point with `place`'s tags added.
    ///
    /// The caller promises that one `source` gets the same tags from `place` for as long as
    /// the cache's generation lasts ([`HeadCache::keep_generation`]): the ingest path names
    /// the topic's village and the device, and starts a generation with every registry. So a
    /// message costs one lookup of its device's head instead of seven tag strings built,
    /// keyed and dropped (a profile of `firegrid-bench ingest-only`).
    pub fn encode_placed(
        &self,
        cache: &mut HeadCache,
        source: &[&str],
        place: impl FnOnce() -> Vec<(Cow<'static, str>, String)>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        cache.key.clear();
        cache.key.extend_from_slice(&(source.len() as u32).to_le_bytes());
        let tags = self.tags.iter().flat_map(|(k, v)| [k.as_ref(), v.as_str()]);
        for part in source.iter().copied().chain(std::iter::once(self.measurement.as_ref())).chain(tags) {
            push_part(&mut cache.key, part);
        }
        match cache.placed.get(&cache.key) {
            Some(head) => {
                self.check_fields()?;
                out.extend_from_slice(head);
            }
            None => {
                let mut full = Point {
                    measurement: self.measurement.clone(),
                    tags: self.tags.clone(),
                    fields: Vec::new(),
                    ts_ns: self.ts_ns,
                };
                full.tags.extend(place());
                let head = full.head()?;
                self.check_fields()?;
                out.extend_from_slice(&head);
                HeadCache::insert(&mut cache.placed, cache.key.clone(), head);
            }
        }
        self.write_fields(out);
        Ok(())
    }

    /// The escaped `measurement,tags` head as the builder writes it, checked.
    fn head(&self) -> Result<Vec<u8>, EncodeError> {
        let tags = self.checked_head()?;
        // The builder hands its buffer back only at a line's end: the head is the line of
        // one probe field without it.
        const PROBE: &[u8] = b" _=true\n";
        let line = LineProtocolBuilder::new().measurement(&self.measurement);
        let mut head = add_tags(line, &tags).field("_", true).close_line().build();
        debug_assert!(head.ends_with(PROBE));
        head.truncate(head.len() - PROBE.len());
        Ok(head)
    }

    /// The fields, timestamp and line end as the builder writes them (the property test holds
    /// the two to the same bytes), without its `core::fmt` call per character: that was the
    /// larger part of what remained of the ingest path's encoding once heads were cached.
    /// Names are checked plain (no backslash), so only the syntax's own separators need a
    /// backslash in a key; a string value escapes its quotes and backslashes.
    fn write_fields(&self, out: &mut Vec<u8>) {
        let mut separator = b' ';
        for (k, v) in &self.fields {
            out.push(separator);
            separator = b',';
            escaped(out, k, b",= ");
            out.push(b'=');
            match v {
                Field::I64(i) => {
                    out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes());
                    out.push(b'i');
                }
                Field::F64(f) => {
                    use std::io::Write;
                    write!(out, "{f}").expect("a Vec takes every write");
                }
                Field::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
                Field::Str(text) => {
                    out.push(b'"');
                    escaped(out, text, b"\"");
                    out.push(b'"');
                }
            }
        }
        out.push(b' ');
        out.extend_from_slice(itoa::Buffer::new().format(self.ts_ns).as_bytes());
        out.push(b'\n');
    }

    /// The measurement and the tags to write, sorted by key, checked.
    fn checked_head(&self) -> Result<Vec<&(Cow<'static, str>, String)>, EncodeError> {
        plain("measurement", &self.measurement)?;
        if self.measurement.starts_with('#') {
            // A line starting with `#` is a comment in line protocol.
            return Err(EncodeError::Unrepresentable {
                what: "measurement",
                value: self.measurement.to_string(),
            });
        }
        let mut tags: Vec<&(Cow<'static, str>, String)> =
            self.tags.iter().filter(|(_, v)| !v.is_empty()).collect();
        tags.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (k, v) in &tags {
            plain("tag key", k)?;
            plain("tag value", v)?;
        }
        Ok(tags)
    }

    fn check_fields(&self) -> Result<(), EncodeError> {
        if self.fields.is_empty() {
            return Err(EncodeError::NoFields { measurement: self.measurement.to_string() });
        }
        for (k, v) in &self.fields {
            plain("field key", k)?;
            match v {
                Field::F64(f) if !f.is_finite() => {
                    return Err(EncodeError::NotFinite { field: k.to_string() });
                }
                Field::Str(s) if s.contains(['\n', '\r']) => {
                    return Err(EncodeError::Unrepresentable { what: "field value", value: s.clone() });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The fields (checked, at least one), the timestamp and the line's end.
    fn add_fields(&self, line: LineProtocolBuilder<Vec<u8>, AfterMeasurement>) -> Vec<u8> {
        let mut fields = self.fields.iter();
        let (k, v) = fields.next().expect("checked: at least one field");
        let mut line = add_field(line, k, v);
        for (k, v) in fields {
            line = add_field(line, k, v);
        }
        line.timestamp(self.ts_ns).close_line().build()
    }
}

/// Appends `text` with a backslash before each byte of `special` (ASCII, so never part of a
/// multi-byte character) and before each backslash.
fn escaped(out: &mut Vec<u8>, text: &str, special: &[u8]) {
    let mut rest = text.as_bytes();
    while let Some(i) = rest.iter().position(|b| *b == b'\\' || special.contains(b)) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(&[b'\\', rest[i]]);
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
}

fn add_tags(
    mut line: LineProtocolBuilder<Vec<u8>, AfterMeasurement>,
    tags: &[&(Cow<'static, str>, String)],
) -> LineProtocolBuilder<Vec<u8>, AfterMeasurement> {
    for (k, v) in tags {
        line = line.tag(k, v);
    }
    line
}

/// A part of a head's key, with its length before it, so no two points share a key.
fn push_part(key: &mut Vec<u8>, part: &str) {
    key.extend_from_slice(&(part.len() as u32).to_le_bytes());
    key.extend_from_slice(part.as_bytes());
}

/// Escaped `measurement,tags` heads of points encoded before, keyed by their measurement and
/// tags as given (for [`Point::encode_cached`]), or by their source, measurement and own tags
/// (for [`Point::encode_placed`]). Bounded: each map is emptied when full, since a street's
/// devices have a few heads each and an empty cache only costs the escaping again.
#[derive(Debug, Default)]
pub struct HeadCache {
    heads: HashMap<Vec<u8>, Vec<u8>, foldhash::fast::RandomState>,
    placed: HashMap<Vec<u8>, Vec<u8>, foldhash::fast::RandomState>,
    /// What the placed heads were made for ([`HeadCache::keep_generation`]).
    generation: u64,
    key: Vec<u8>,
}

impl HeadCache {
    /// Heads kept at most in each map: a few per device of a street of 20,000, about 200
    /// bytes each.
    pub const MAX_HEADS: usize = 100_000;

    /// Heads held now.
    pub fn len(&self) -> usize {
        self.heads.len() + self.placed.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the placed heads only if they were made for `generation` (of whatever gives
    /// `encode_placed` its tags: the registry, on the ingest path); otherwise forgets them
    /// and starts `generation`.
    pub fn keep_generation(&mut self, generation: u64) {
        if self.generation != generation {
            self.placed.clear();
            self.generation = generation;
        }
    }

    fn insert(map: &mut HashMap<Vec<u8>, Vec<u8>, foldhash::fast::RandomState>, key: Vec<u8>, head: Vec<u8>) {
        if map.len() >= Self::MAX_HEADS {
            map.clear();
        }
        map.insert(key, head);
    }
}

/// Both builder states that accept a field, so the first and the following fields share one
/// match.
trait AcceptsField: Sized {
    type Next;
    fn f64(self, k: &str, v: f64) -> Self::Next;
    fn i64(self, k: &str, v: i64) -> Self::Next;
    fn bool(self, k: &str, v: bool) -> Self::Next;
    fn str(self, k: &str, v: &str) -> Self::Next;
}

macro_rules! accepts_field {
    ($state:ty) => {
        impl AcceptsField for LineProtocolBuilder<Vec<u8>, $state> {
            type Next = LineProtocolBuilder<Vec<u8>, influxdb_line_protocol::builder::AfterField>;
            fn f64(self, k: &str, v: f64) -> Self::Next {
                self.field(k, v)
            }
            fn i64(self, k: &str, v: i64) -> Self::Next {
                self.field(k, v)
            }
            fn bool(self, k: &str, v: bool) -> Self::Next {
                self.field(k, v)
            }
            fn str(self, k: &str, v: &str) -> Self::Next {
                self.field(k, v)
            }
        }
    };
}
accepts_field!(influxdb_line_protocol::builder::AfterMeasurement);
accepts_field!(influxdb_line_protocol::builder::AfterField);

fn add_field<B: AcceptsField>(b: B, k: &str, v: &Field) -> B::Next {
    match v {
        Field::F64(f) => b.f64(k, *f),
        Field::I64(i) => b.i64(k, *i),
        Field::Bool(x) => b.bool(k, *x),
        Field::Str(s) => b.str(k, s),
    }
}

#[cfg(test)]
mod tests;
