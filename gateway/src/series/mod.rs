//! Time-series points and their line-protocol encoding.
//!
//! [`Point`] is what the gateway writes: a measurement, tags (the grid hierarchy and device
//! identity), fields (the readings) and the timestamp assigned once, at acceptance, so that a
//! retried write overwrites itself in InfluxDB instead of duplicating. [`Point::encode`]
//! renders line protocol through InfluxData's own builder (`influxdb-line-protocol`), which
//! does the escaping; this module adds what the builder leaves to its caller: tags sorted by
//! key (InfluxDB's fastest path), empty tags dropped, and values line protocol cannot carry
//! (NaN, infinities, line breaks, tabs and backslashes in names and tags) refused with a typed error instead of a corrupt batch.

use influxdb_line_protocol::LineProtocolBuilder;

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
    /// Measurement name.
    pub measurement: String,
    /// Tags; order does not matter, they are sorted on encoding. Empty values are skipped.
    pub tags: Vec<(String, String)>,
    /// Fields; at least one.
    pub fields: Vec<(String, Field)>,
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
    pub fn new(measurement: impl Into<String>, ts_ns: i64) -> Self {
        Point { measurement: measurement.into(), tags: Vec::new(), fields: Vec::new(), ts_ns }
    }

    /// Adds a tag.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.push((key.into(), value.into()));
        self
    }

    /// Adds a field.
    pub fn field(mut self, key: impl Into<String>, value: Field) -> Self {
        self.fields.push((key.into(), value));
        self
    }

    /// Appends the point as one line of line protocol (with its `\n`) to `out`. On error
    /// `out` is left as it was.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        plain("measurement", &self.measurement)?;
        if self.measurement.starts_with('#') {
            // A line starting with `#` is a comment in line protocol.
            return Err(EncodeError::Unrepresentable {
                what: "measurement",
                value: self.measurement.clone(),
            });
        }
        let mut tags: Vec<&(String, String)> = self.tags.iter().filter(|(_, v)| !v.is_empty()).collect();
        tags.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (k, v) in &tags {
            plain("tag key", k)?;
            plain("tag value", v)?;
        }
        if self.fields.is_empty() {
            return Err(EncodeError::NoFields { measurement: self.measurement.clone() });
        }
        for (k, v) in &self.fields {
            plain("field key", k)?;
            match v {
                Field::F64(f) if !f.is_finite() => return Err(EncodeError::NotFinite { field: k.clone() }),
                Field::Str(s) if s.contains(['\n', '\r']) => {
                    return Err(EncodeError::Unrepresentable { what: "field value", value: s.clone() });
                }
                _ => {}
            }
        }

        let mut line = LineProtocolBuilder::new_with(std::mem::take(out)).measurement(&self.measurement);
        for (k, v) in tags {
            line = line.tag(k, v);
        }
        let mut fields = self.fields.iter();
        let (k, v) = fields.next().expect("checked above");
        let mut line = add_field(line, k, v);
        for (k, v) in fields {
            line = add_field(line, k, v);
        }
        *out = line.timestamp(self.ts_ns).close_line().build();
        Ok(())
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
