//! Line-protocol encoding: exact output for the escaping rules, and a property test that
//! parses whatever is written back to the same values (the real-server version of that
//! property lives in the integration tests).

use influxdb_line_protocol::{FieldValue, parse_lines};
use proptest::prelude::*;

use super::*;

fn check(point: &Point, expected: Result<&str, EncodeError>) {
    let mut out = b"previous\n".to_vec();
    let got = point.encode(&mut out);
    match expected {
        Ok(line) => {
            assert_eq!(got, Ok(()));
            assert_eq!(String::from_utf8(out).unwrap(), format!("previous\n{line}\n"));
        }
        Err(e) => {
            assert_eq!(got, Err(e));
            assert_eq!(out, b"previous\n", "output untouched on error");
        }
    }
}

#[test]
fn escaping_sorting_and_refusals() {
    let p = || Point::new("detector", 1_763_860_000_000_000_000);
    check(
        &p().tag("village", "fuhai-1").tag("device", "sd-1").field("battery_mv", Field::I64(3012)),
        Ok("detector,device=sd-1,village=fuhai-1 battery_mv=3012i 1763860000000000000"),
    );
    check(
        &p().tag("address", "Lane 3, No. 5=A").field("obscuration_db_m", Field::F64(0.25)),
        Ok(r"detector,address=Lane\ 3\,\ No.\ 5\=A obscuration_db_m=0.25 1763860000000000000"),
    );
    check(
        &Point::new("my meas,x", 5).field("note", Field::Str(r#"say "hi" \ bye"#.into())),
        Ok(r#"my\ meas\,x note="say \"hi\" \\ bye" 5"#),
    );
    check(
        &p().tag("grid", "").field("ok", Field::Bool(true)).field("n", Field::I64(-1)),
        Ok("detector ok=true,n=-1i 1763860000000000000"),
    );
    check(&p().tag("a", "b"), Err(EncodeError::NoFields { measurement: "detector".into() }));
    check(&p().field("x", Field::F64(f64::NAN)), Err(EncodeError::NotFinite { field: "x".into() }));
    check(&p().field("x", Field::F64(f64::INFINITY)), Err(EncodeError::NotFinite { field: "x".into() }));
    check(
        &p().tag("a", "line\nbreak").field("x", Field::I64(1)),
        Err(EncodeError::Unrepresentable { what: "tag value", value: "line\nbreak".into() }),
    );
    check(
        &p().field("x", Field::Str("a\r\nb".into())),
        Err(EncodeError::Unrepresentable { what: "field value", value: "a\r\nb".into() }),
    );
    check(
        &Point::new("#comment", 1).field("x", Field::I64(1)),
        Err(EncodeError::Unrepresentable { what: "measurement", value: "#comment".into() }),
    );
    check(
        &p().tag("path", r"C:\temp").field("x", Field::I64(1)),
        Err(EncodeError::Unrepresentable { what: "tag value", value: r"C:\temp".into() }),
    );
    check(
        &Point::new("", 1).field("x", Field::I64(1)),
        Err(EncodeError::Unrepresentable { what: "measurement", value: String::new() }),
    );
}

/// Any text, weighted towards the characters that need escaping or cannot be carried.
fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex(r#"([ ,="\\a-z中文\t\n\r\x00]|.){0,12}"#).unwrap()
}

/// What the encoder promises to carry in names and tag values.
fn representable(s: &str) -> bool {
    !s.is_empty() && !s.contains(['\n', '\r', '\t', '\0', '\\'])
}

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Field::F64),
        any::<i64>().prop_map(Field::I64),
        any::<bool>().prop_map(Field::Bool),
        text().prop_map(Field::Str),
    ]
}

/// Any point with unique tag and field keys.
fn point() -> impl Strategy<Value = Point> {
    (
        text(),
        proptest::collection::btree_map(text(), text(), 0..5),
        proptest::collection::btree_map(text(), field(), 1..5),
        any::<i64>(),
    )
        .prop_map(|(measurement, tags, fields, ts_ns)| Point {
            measurement: measurement.into(),
            tags: tags.into_iter().rev().map(|(k, v)| (k.into(), v)).collect(),
            fields: fields.into_iter().map(|(k, v)| (k.into(), v)).collect(),
            ts_ns,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn parses_back_to_the_same_values_or_is_refused(point in point()) {
        let mut out = Vec::new();
        let carried = representable(&point.measurement)
            && !point.measurement.starts_with('#')
            && point.tags.iter().all(|(k, v)| v.is_empty() || representable(k) && representable(v))
            && point.fields.iter().all(|(k, v)| representable(k) && match v {
                Field::Str(s) => !s.contains(['\n', '\r']),
                _ => true,
            });
        let result = point.encode(&mut out);
        prop_assert_eq!(result.is_ok(), carried, "{:?}", result);
        if !carried {
            return Ok(());
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<_> = parse_lines(&text).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(lines.len(), 1);
        let line = &lines[0];
        prop_assert_eq!(line.series.measurement.as_str(), point.measurement.as_ref());
        let tags: Vec<(String, String)> = line
            .series
            .tag_set
            .iter()
            .flatten()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut expected_tags: Vec<_> =
            point.tags.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.to_string(), v.clone())).collect();
        expected_tags.sort();
        prop_assert_eq!(tags, expected_tags, "tags come back sorted by key");
        prop_assert_eq!(line.field_set.len(), point.fields.len());
        for (k, v) in &point.fields {
            let parsed = line.field_value(k).unwrap();
            match (v, parsed) {
                (Field::F64(a), FieldValue::F64(b)) => prop_assert_eq!(a, b),
                (Field::I64(a), FieldValue::I64(b)) => prop_assert_eq!(a, b),
                (Field::Bool(a), FieldValue::Boolean(b)) => prop_assert_eq!(a, b),
                (Field::Str(a), FieldValue::String(b)) => prop_assert_eq!(a.as_str(), b.as_str()),
                (a, b) => prop_assert!(false, "{:?} came back as {:?}", a, b),
            }
        }
        prop_assert_eq!(line.timestamp, Some(point.ts_ns));
    }

    /// The cached head changes nothing: each point encodes as `encode` writes it, whether its
    /// head is new, cached by an earlier point, or cached under the same tags in another order.
    #[test]
    fn the_cached_head_encodes_byte_for_byte_as_encode(points in proptest::collection::vec(point(), 1..8)) {
        let mut cache = HeadCache::default();
        for point in points.iter().chain(&points) {
            let (mut plain, mut cached) = (b"previous\n".to_vec(), b"previous\n".to_vec());
            let expected = point.encode(&mut plain);
            prop_assert_eq!(point.encode_cached(&mut cache, &mut cached), expected.clone());
            prop_assert_eq!(&cached, &plain);
            let mut reordered = point.clone();
            reordered.tags.reverse();
            let mut again = b"previous\n".to_vec();
            prop_assert_eq!(reordered.encode_cached(&mut cache, &mut again), expected);
            prop_assert_eq!(&again, &plain);
        }
        prop_assert!(!cache.is_empty() || points.iter().all(|p| p.encode(&mut Vec::new()).is_err()));
    }

    /// A placed head changes nothing either: each point with its source's placement tags
    /// encodes as `encode` writes the whole point, whether its head is new or cached for the
    /// source; a new generation forgets the heads, so a source placed anew gets its new tags.
    #[test]
    fn the_placed_head_encodes_byte_for_byte_as_encode(
        points in proptest::collection::vec((point(), 0..3usize), 1..8),
        places in proptest::collection::vec(proptest::collection::btree_map(text(), text(), 0..4), 6),
    ) {
        let mut cache = HeadCache::default();
        for (generation, places) in places.chunks(3).enumerate() {
            cache.keep_generation(generation as u64 + 1);
            for (point, source) in points.iter().chain(&points) {
                let tags: Vec<(Cow<'static, str>, String)> =
                    places[*source].iter().map(|(k, v)| (k.clone().into(), v.clone())).collect();
                let mut full = point.clone();
                full.tags.extend(tags.iter().cloned());
                let (mut plain, mut placed) = (b"previous\n".to_vec(), b"previous\n".to_vec());
                let expected = full.encode(&mut plain);
                let name = format!("source-{source}");
                prop_assert_eq!(point.encode_placed(&mut cache, &[&name], || tags.clone(), &mut placed), expected);
                prop_assert_eq!(&placed, &plain);
            }
        }
    }
}
