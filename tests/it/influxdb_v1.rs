//! InfluxDB 1.x: line protocol in, InfluxQL out, across a restart and a crash.

use firegrid_tests::{Error, InfluxDb1, InfluxSeries};
use serde_json::{Value, json};

const DB: &str = "firegrid";

/// Three points; the zone tag value "Hall A,North" holds an escaped space and comma.
const FIRST_BATCH: &str = r#"detector,site=hq,zone=Hall\ A\,North temp=21.5,smoke=3i,alarm=false,note="ok" 1700000000000
detector,site=hq,zone=Hall\ A\,North temp=22.25,smoke=17i,alarm=true,note="smoke, \"dense\"" 1700000001000
detector,site=annex,zone=Lab temp=19,smoke=0i,alarm=false,note="idle" 1700000000500
"#;

fn single(series: Vec<InfluxSeries>) -> InfluxSeries {
    assert_eq!(series.len(), 1, "{series:?}");
    series.into_iter().next().unwrap()
}

fn count(db: &InfluxDb1, influxql: &str) -> i64 {
    let series = single(db.query_series(DB, influxql).unwrap());
    series.values[0][1].as_i64().unwrap()
}

fn assert_first_batch(db: &InfluxDb1) {
    assert_eq!(count(db, "SELECT count(temp) FROM detector"), 3);

    let hall = single(
        db.query_series(
            DB,
            "SELECT temp, smoke, alarm, note, site FROM detector WHERE zone = 'Hall A,North'",
        )
        .unwrap(),
    );
    assert_eq!(hall.name, "detector");
    assert_eq!(hall.columns, ["time", "temp", "smoke", "alarm", "note", "site"]);
    assert_eq!(
        hall.values,
        [
            vec![json!(1_700_000_000_000i64), json!(21.5), json!(3), json!(false), json!("ok"), json!("hq"),],
            vec![
                json!(1_700_000_001_000i64),
                json!(22.25),
                json!(17),
                json!(true),
                json!("smoke, \"dense\""),
                json!("hq"),
            ],
        ]
    );

    let zones = single(db.query_series(DB, r#"SHOW TAG VALUES FROM detector WITH KEY = "zone""#).unwrap());
    assert_eq!(zones.column("value").unwrap(), [&json!("Hall A,North"), &json!("Lab")]);

    let by_site = db.query_series(DB, "SELECT sum(smoke) FROM detector GROUP BY site").unwrap();
    let sums: Vec<(String, Value)> =
        by_site.iter().map(|s| (s.tags["site"].clone(), s.values[0][1].clone())).collect();
    assert_eq!(sums, [("annex".to_owned(), json!(0)), ("hq".to_owned(), json!(20))]);
}

#[test]
fn line_protocol_round_trip_survives_a_restart() {
    let mut db = InfluxDb1::start().unwrap();
    assert_eq!(db.url(), format!("http://127.0.0.1:{}", db.port()));
    assert_ne!(db.port(), db.rpc_port());
    db.create_database(DB).unwrap();
    db.write(DB, FIRST_BATCH).unwrap();
    assert_first_batch(&db);

    let port = db.port();
    db.restart().unwrap();
    assert_eq!(db.port(), port);
    assert_first_batch(&db);

    db.write(
        DB,
        "detector,site=hq,zone=Hall\\ A\\,North temp=23,smoke=40i,alarm=true,note=\"after\" 1700000002000\n\
         detector,site=annex,zone=Lab temp=19.5,smoke=1i,alarm=false,note=\"after\" 1700000002000",
    )
    .unwrap();
    assert_eq!(count(&db, "SELECT count(temp) FROM detector"), 5);
    assert_eq!(count(&db, "SELECT count(smoke) FROM detector WHERE zone = 'Hall A,North'"), 3);
    let max = single(db.query_series(DB, "SELECT max(temp) FROM detector").unwrap());
    assert_eq!(max.values.len(), 1);
    assert_eq!(max.values[0][0], json!(1_700_000_002_000i64));
    // Go's JSON encoder writes the float 23.0 as `23`: compare numerically.
    assert_eq!(max.values[0][1].as_f64(), Some(23.0));
}

#[test]
fn acknowledged_writes_survive_a_crash() {
    let mut db = InfluxDb1::start().unwrap();
    db.create_database(DB).unwrap();
    db.write(DB, FIRST_BATCH).unwrap();
    let pid = db.pid().unwrap();
    db.kill().unwrap();
    assert!(!db.is_running());
    db.restart().unwrap();
    assert_ne!(db.pid(), Some(pid));
    assert_first_batch(&db);
}

#[test]
fn errors_carry_the_server_message() {
    let db = InfluxDb1::start().unwrap();
    db.create_database(DB).unwrap();

    let err = db.write(DB, "detector temp=").unwrap_err();
    assert!(matches!(err, Error::Http { .. }), "{err}");
    assert!(err.to_string().contains("unable to parse"), "{err}");

    // A field type conflict is rejected, not silently coerced.
    db.write(DB, "detector temp=1 1700000000000").unwrap();
    let err = db.write(DB, "detector temp=\"hot\" 1700000001000").unwrap_err();
    assert!(err.to_string().contains("field type conflict"), "{err}");

    let err = db.query(DB, "SELEKT * FROM detector").unwrap_err();
    assert!(matches!(err, Error::Server { .. }), "{err}");
    assert!(err.to_string().contains("error parsing query"), "{err}");

    let err = db.query("no_such_db", "SELECT * FROM detector").unwrap_err();
    assert!(err.to_string().contains("database not found"), "{err}");
}
