//! VictoriaMetrics: line protocol through the `influxdb2` client, read back, across a restart.

use firegrid_tests::{Error, VictoriaMetrics, VmSeries};

const ORG: &str = "firegrid";
const BUCKET: &str = "telemetry";

/// `write_line_protocol` sends `precision=ns`, so these timestamps are nanoseconds.
const FIRST_BATCH: &str = r#"detector,site=hq,zone=Hall\ A\,North temp=21.5,smoke=3i,alarm=true 1700000000000000000
detector,site=hq,zone=Hall\ A\,North temp=22.25,smoke=17i,alarm=false 1700000001000000000
detector,site=annex,zone=Lab temp=19,smoke=0i,alarm=false 1700000000500000000
"#;

fn influx_client(vm: &VictoriaMetrics) -> influxdb2::Client {
    // VictoriaMetrics ignores the token; the org and bucket only become query arguments.
    influxdb2::Client::new(vm.url(), ORG, "unused-token")
}

/// `(metric name, zone, samples)` of one series.
type Row = (String, String, Vec<(i64, f64)>);

fn flatten(series: &[VmSeries]) -> Vec<Row> {
    series
        .iter()
        .map(|s| (s.name().to_owned(), s.label("zone").unwrap_or_default().to_owned(), s.samples()))
        .collect()
}

fn expected_first_batch() -> Vec<Row> {
    let hall = "Hall A,North";
    let rows = [
        ("detector_alarm", "Lab", vec![(1_700_000_000_500, 0.0)]),
        ("detector_alarm", hall, vec![(1_700_000_000_000, 1.0), (1_700_000_001_000, 0.0)]),
        ("detector_smoke", "Lab", vec![(1_700_000_000_500, 0.0)]),
        ("detector_smoke", hall, vec![(1_700_000_000_000, 3.0), (1_700_000_001_000, 17.0)]),
        ("detector_temp", "Lab", vec![(1_700_000_000_500, 19.0)]),
        ("detector_temp", hall, vec![(1_700_000_000_000, 21.5), (1_700_000_001_000, 22.25)]),
    ];
    // In `export`'s order: by label set, i.e. __name__, then site ("annex" < "hq"), then zone.
    rows.into_iter().map(|(name, zone, samples)| (name.to_owned(), zone.to_owned(), samples)).collect()
}

#[tokio::test]
async fn influxdb2_writes_are_readable_and_survive_a_restart() {
    let mut vm = VictoriaMetrics::start().unwrap();
    let client = influx_client(&vm);
    client.write_line_protocol(ORG, BUCKET, FIRST_BATCH).await.unwrap();

    let selector = r#"{__name__=~"detector_.*"}"#;
    let series = vm.export(selector).unwrap();
    assert_eq!(flatten(&series), expected_first_batch());
    let hall_temp =
        series.iter().find(|s| s.name() == "detector_temp" && s.label("site") == Some("hq")).unwrap();
    assert_eq!(hall_temp.label("zone"), Some("Hall A,North"));

    // An instant query sees the latest sample at or before its time.
    let data = vm.query(r#"detector_smoke{zone="Hall A,North"}"#, 1_700_000_001_500).unwrap();
    assert_eq!(data["result"][0]["value"][1], "17");

    let port = vm.port();
    vm.restart().unwrap();
    assert_eq!(vm.port(), port);
    assert_eq!(flatten(&vm.export(selector).unwrap()), expected_first_batch());

    // More data after the restart, through a fresh client, adds up.
    influx_client(&vm)
        .write_line_protocol(
            ORG,
            BUCKET,
            "detector,site=hq,zone=Hall\\ A\\,North temp=23,smoke=40i,alarm=true 1700000002000000000",
        )
        .await
        .unwrap();
    let series = vm.export(r#"detector_temp{zone="Hall A,North"}"#).unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(
        series[0].samples(),
        [(1_700_000_000_000, 21.5), (1_700_000_001_000, 22.25), (1_700_000_002_000, 23.0)]
    );
    let total: usize = vm.export(selector).unwrap().iter().map(|s| s.values.len()).sum();
    assert_eq!(total, 9 + 3);
}

#[test]
fn harness_write_uses_milliseconds() {
    let vm = VictoriaMetrics::start().unwrap();
    vm.write("probe,zone=a value=1.5 1700000000123\nprobe,zone=a value=2.5 1700000000456").unwrap();
    let series = vm.export("probe_value").unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].samples(), [(1_700_000_000_123, 1.5), (1_700_000_000_456, 2.5)]);
    let err = vm.query("sum(", 1_700_000_000_500).unwrap_err();
    assert!(matches!(err, Error::Server { .. }), "{err}");
    assert!(err.to_string().contains("unexpected token"), "{err}");
}
