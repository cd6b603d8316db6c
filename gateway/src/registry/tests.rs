//! Registry tests: CSV rows in, devices or line-numbered errors out, all through `check`;
//! a write → load round-trip property; reload keeping the old registry on a bad file.

use proptest::prelude::*;

use super::*;

const HEADER: &str = "device_id,kind,model,building_id,building_address,lat,lon,grid,community,street,village,district,heartbeat,channels";

fn csv_of(rows: &[&str]) -> String {
    let mut s = format!("{HEADER}\n");
    for r in rows {
        s.push_str(r);
        s.push('\n');
    }
    s
}

/// Loads `text`; `expected` is either the number of devices or every error message.
fn check(text: &str, expected: Result<usize, &[&str]>) {
    let got = match Registry::from_reader(text.as_bytes()) {
        Ok(r) => Ok(r.len()),
        Err(RegistryError::Rows(errors)) => Err(errors.iter().map(ToString::to_string).collect::<Vec<_>>()),
        Err(e) => panic!("unexpected error {e}"),
    };
    let expected = expected.map_err(|errs| errs.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(got, expected, "for\n{text}");
}

const GOOD: &str = "sd-1,smoke_detector,JTY-GD-01,B1,福海街道 12号,24.98,102.65,G1,C1,Fuhai,v1,Xishan,,";

#[test]
fn good_rows_load() {
    check(&csv_of(&[GOOD]), Ok(1));
    // Quoted fields with commas, quotes and Chinese; optional columns left out entirely;
    // whitespace around fields trimmed.
    check(
        "device_id,kind,model,building_id,building_address,lat,lon,grid,community,street,village\n\
         cam-1 , camera,\"DS-2CD\",\"B 2\",\"昆明市西山区福海街道, 5栋 \"\"北\"\"\",24.9,102.6,网格一,社区甲,福海街道,v1\n",
        Ok(1),
    );
    check(&csv_of(&[]), Ok(0));
    // A spreadsheet's UTF-8 byte-order mark.
    check(&format!("\u{feff}{}", csv_of(&[GOOD])), Ok(1));
}

#[test]
fn the_example_in_registry_md_loads() {
    let doc = include_str!("../../REGISTRY.md");
    let example = doc.split("```csv\n").nth(1).unwrap().split("```").next().unwrap();
    let r = Registry::from_reader(example.as_bytes()).unwrap();
    assert_eq!(r.len(), 4);
    assert_eq!(r.get(&DeviceId::new("cam-0001").unwrap()).unwrap().channels, Some(8));
    // The error examples quoted there are the real messages.
    for (row, message) in [
        (
            "sd+1,smoke_detector,m,B1,x,1,1,G,C,S,v,,,",
            "line 2: device id \"sd+1\": id has a character outside A-Z a-z 0-9 . _ - at byte 2",
        ),
        (
            "sd-1,smoke_detector,m,B1,x,1,1,G,C,S,v,,1d2,",
            "line 2: heartbeat \"1d2\": time unit needed, for example 2sec or 2ms",
        ),
    ] {
        assert!(doc.contains(message.trim_start_matches("line 2: ")), "{message}");
        check(&csv_of(&[row]), Err(&[message]));
    }
}

#[test]
fn bad_rows_are_all_reported_with_their_lines() {
    check(
        &csv_of(&[
            GOOD,
            "sd+1,smoke_detector,m,B1,福海街道 12号,24.98,102.65,G1,C1,Fuhai,v1,,,",
            "sd-3,toaster,m,B1,福海街道 12号,91,102.65,G1,C1,Fuhai,v1,,,",
            "sd-4,smoke_detector,m,B1,a\\b,24.98,102.65,G1,C1,Fuhai,v1,,0s,2",
            "sd-5,other,m,B9,x,24.98,102.65,G1,C1,Fuhai,v/1,,,",
        ]),
        Err(&[
            "line 3: device id \"sd+1\": id has a character outside A-Z a-z 0-9 . _ - at byte 2",
            "line 4: kind \"toaster\" is not one of smoke_detector, camera, water_sensor, other",
            "line 4: lat \"91\": must be between -90 and 90",
            "line 5: building address \"a\\\\b\": must not contain a backslash (InfluxDB tags cannot carry it reliably)",
            "line 5: heartbeat \"0s\": must be between 1s and 7d",
            "line 5: channels is only for cameras, this device is a smoke_detector",
            "line 6: village \"v/1\": id has a character outside A-Z a-z 0-9 . _ - at byte 1",
            "line 6: kind other needs a heartbeat interval (there is no default for it)",
        ]),
    );
}

#[test]
fn line_breaks_in_quoted_fields_are_refused_and_lines_stay_right() {
    check(
        &csv_of(&[GOOD, "sd-2,smoke_detector,m,B2,\"two\nlines\",24.9,102.6,G1,C1,Fuhai,v1,,,", "sd-1,x"]),
        Err(&[
            "line 3: building address \"two\\nlines\": must not contain line breaks, tabs or other control characters",
            "line 5: row has 2 fields but the header has 14",
        ]),
    );
}

#[test]
fn duplicates_and_inconsistent_hierarchy_name_both_lines() {
    check(
        &csv_of(&[
            GOOD,
            "sd-2,smoke_detector,m,B2,x,24.9,102.6,G2,C1,Fuhai,v1,,,",
            "sd-1,smoke_detector,m,B3,x,24.9,102.6,G3,C2,Fuhai,v1,,,",
            "sd-4,smoke_detector,m,B1,福海街道 12号,24.98,102.65,G2,C1,Fuhai,v1,,,",
            "sd-5,smoke_detector,m,B5,x,24.9,102.6,G2,C9,Fuhai,v1,,,",
            "sd-6,smoke_detector,m,B6,x,24.9,102.6,G6,C1,Other-street,v1,Wuhua,,",
        ]),
        Err(&[
            "line 4: device id \"sd-1\" is already registered on line 2",
            "line 5: building \"B1\" has grid \"G2\" here but \"G1\" on line 2",
            "line 6: grid \"G2\" has community \"C9\" here but \"C1\" on line 3",
            "line 7: community \"C1\" has street \"Other-street\" here but \"Fuhai\" on line 2",
            "line 7: district \"Wuhua\" differs from \"Xishan\" on line 2; a deployment has one district",
        ]),
    );
}

#[test]
fn header_problems() {
    check("", Err(&["line 1: the file is empty; a header row is required"]));
    check(
        "device_id,kind,model,building_id,building_address,lat,lon,grid,community,village,hearbeat\n",
        Err(&[
            &format!(
                "line 1: header has unknown column \"hearbeat\"; known columns are {}",
                COLUMNS.join(", ")
            ),
            "line 1: header has no column \"street\"",
        ]),
    );
}

#[test]
fn defaults_and_lookups() {
    let r = Registry::from_reader(
        csv_of(&[
            GOOD,
            "cam-1,camera,m,B1,福海街道 12号,24.98,102.65,G1,C1,Fuhai,v1,,,4",
            "ws-1,water_sensor,m,B2,x,24.9,102.6,G1,C1,Fuhai,v1,,,",
            "o-1,other,m,B2,x,24.9,102.6,G1,C1,Fuhai,v1,,1h 30m,",
        ])
        .as_bytes(),
    )
    .unwrap();
    let hb = |id: &str| r.get(&DeviceId::new(id).unwrap()).unwrap().heartbeat_ms;
    assert_eq!([hb("sd-1"), hb("cam-1"), hb("ws-1"), hb("o-1")], [86_400_000, 60_000, 300_000, 5_400_000]);
    assert!(r.get(&DeviceId::new("nope").unwrap()).is_none());
    let ids = |level, name: &str| {
        r.in_scope(&Scope { level, name: name.into() }).map(|d| d.id.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(ids(ScopeLevel::Building, "B1"), ["sd-1", "cam-1"]);
    assert_eq!(ids(ScopeLevel::Grid, "G1"), ["sd-1", "cam-1", "ws-1", "o-1"]);
    assert_eq!(ids(ScopeLevel::Village, "v1").len(), 4);
    assert_eq!(r.district(), Some("Xishan"));
    // Interned: both devices of B1 share one building, so its strings exist once.
    let (a, b) = (&r.devices()[0].building, &r.devices()[1].building);
    assert!(Arc::ptr_eq(a, b));
    assert!(Arc::ptr_eq(&r.devices()[0].building.grid, &r.devices()[2].building.grid));
}

#[test]
fn a_failed_reload_returns_every_error_and_leaves_the_old_registry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devices.csv");
    let original = Registry::from_reader(csv_of(&[GOOD]).as_bytes()).unwrap();
    original.save(&path).unwrap();
    let current = Registry::load(&path).unwrap();
    assert_eq!(current, original);
    std::fs::write(&path, csv_of(&["bad id,camera,m,B,x,1,1,G,C,S,v,,,", GOOD, GOOD])).unwrap();
    // The runtime only swaps on Ok; the Err carries every bad line.
    let Err(RegistryError::Rows(errors)) = Registry::load(&path) else { panic!("bad file must not load") };
    assert_eq!(errors.iter().map(|e| e.line).collect::<Vec<_>>(), [2, 4]);
    assert_eq!(current.len(), 1);
    assert!(matches!(Registry::load(dir.path().join("missing.csv")), Err(RegistryError::Io { .. })));
}

#[test]
fn heartbeat_text_round_trips() {
    for ms in [1_000, 1_500, 30_000, 90_000, 300_000, 5_400_000, 86_400_000, 604_800_000] {
        assert_eq!(parse_heartbeat(&format_heartbeat(ms)), Ok(ms), "{ms}");
    }
}

/// A village of `n` devices: 6 per building, 10 buildings per grid, 5 grids per community.
pub(crate) fn village(n: usize) -> Vec<DeviceRecord> {
    (0..n)
        .map(|i| {
            let b = i / 6;
            let g = b / 10;
            DeviceRecord {
                id: DeviceId::new(&format!("8621770{i:08}")).unwrap(),
                kind: if i % 6 == 5 { DeviceKind::Camera } else { DeviceKind::SmokeDetector },
                model: if i % 6 == 5 { "DS-2CD3T46".into() } else { "JTY-GD-H388".into() },
                building: format!("B{b:05}"),
                address: format!("福海街道 {b}号"),
                lat: 24.9 + b as f64 * 1e-5,
                lon: 102.6,
                grid: format!("网格{g}"),
                community: format!("社区{}", g / 5),
                street: "福海街道".into(),
                village: VillageId::new("v1").unwrap(),
                district: Some("西山区".into()),
                heartbeat_ms: None,
                channels: None,
            }
        })
        .collect()
}

fn text() -> impl Strategy<Value = String> {
    // Printable text with spaces, commas, quotes and Chinese inside, trimmed and non-empty.
    "[a-zA-Z0-9福海街道网格社区栋号 ,\"'#;.-]{0,12}"
        .prop_map(|s| s.trim().to_owned())
        .prop_filter("non-empty", |s| !s.is_empty())
}

fn record() -> impl Strategy<Value = DeviceRecord> {
    (
        "[a-zA-Z0-9._-]{1,32}",
        prop_oneof![
            Just(DeviceKind::SmokeDetector),
            Just(DeviceKind::Camera),
            Just(DeviceKind::WaterSensor),
            Just(DeviceKind::Other)
        ],
        prop_oneof![Just(String::new()), text()],
        0usize..4,
        text(),
        (-90.0f64..=90.0, -180.0f64..=180.0),
        proptest::option::of(1_000u64..=604_800_000),
        1u16..64,
    )
        .prop_map(|(id, kind, model, building, address, (lat, lon), hb, channels)| DeviceRecord {
            id: DeviceId::new(&id).unwrap(),
            kind,
            model,
            // Buildings, grids and so on come from small pools so rows share them; their
            // attributes derive from the name so the hierarchy stays consistent.
            building: format!("B{building}"),
            address: format!("{address} {building}"),
            lat: if building == 0 { lat } else { building as f64 },
            lon: if building == 0 { lon } else { -(building as f64) },
            grid: format!("网格{}", building % 2),
            community: "社区".into(),
            street: "福海街道".into(),
            village: VillageId::new("v-1").unwrap(),
            district: None,
            heartbeat_ms: if kind == DeviceKind::Other { Some(hb.unwrap_or(60_000)) } else { hb },
            channels: (kind == DeviceKind::Camera).then_some(channels),
        })
}

proptest! {
    #[test]
    fn write_then_load_is_identity(records in proptest::collection::vec(record(), 0..30)) {
        // Keep the first row of each id and building, so the set is valid by construction.
        let mut seen_ids = std::collections::HashSet::new();
        let mut buildings = HashMap::new();
        let records: Vec<_> = records
            .into_iter()
            .filter(|r| seen_ids.insert(r.id.clone()))
            .map(|mut r| {
                let b: &DeviceRecord = buildings.entry(r.building.clone()).or_insert_with(|| r.clone());
                (r.address, r.lat, r.lon) = (b.address.clone(), b.lat, b.lon);
                r
            })
            .collect();
        let registry = Registry::from_records(records).unwrap();
        let mut out = Vec::new();
        registry.write_csv(&mut out).unwrap();
        let again = Registry::from_reader(out.as_slice()).unwrap();
        prop_assert_eq!(&again, &registry);
        let mut out2 = Vec::new();
        again.write_csv(&mut out2).unwrap();
        prop_assert_eq!(out, out2);
    }
}

/// The glossary (`firegrid_base::glossary`) names every device kind the registry knows.
#[test]
fn every_device_kind_has_a_glossary_term() {
    let glossary = crate::glossary::Glossary::get();
    for kind in DeviceKind::ALL {
        assert!(glossary.term("device_kind", kind.as_str()).is_some(), "{kind:?} has no term");
    }
}
