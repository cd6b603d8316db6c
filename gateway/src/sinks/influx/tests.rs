//! The retry policy, table-driven. The sink itself is tested against real servers in the
//! workspace's integration tests.

use std::time::Duration;

use super::classify::{MAX_RETRY_AFTER, parse_retry_after};
use super::*;

fn check(status: Option<u16>, retry_after: Option<u64>, expected: Next) {
    let failure =
        WriteFailure { status, retry_after: retry_after.map(Duration::from_secs), message: String::new() };
    assert_eq!(classify(&failure), expected, "status {status:?} retry-after {retry_after:?}");
}

#[test]
fn every_response_class_has_one_next_step() {
    check(Some(400), None, Next::DeadLetter);
    check(Some(422), None, Next::DeadLetter);
    check(Some(413), None, Next::Split);
    check(Some(401), None, Next::Hold);
    check(Some(403), None, Next::Hold);
    check(Some(404), None, Next::Hold);
    check(Some(429), Some(7), Next::RetryAfter(Duration::from_secs(7)));
    check(Some(503), Some(2), Next::RetryAfter(Duration::from_secs(2)));
    check(Some(503), Some(86_400), Next::RetryAfter(MAX_RETRY_AFTER));
    check(Some(429), None, Next::Backoff);
    check(Some(500), None, Next::Backoff);
    check(Some(502), None, Next::Backoff);
    check(Some(504), None, Next::Backoff);
    check(Some(405), None, Next::DeadLetter);
    check(None, None, Next::Backoff);
}

#[test]
fn retry_after_in_seconds_only() {
    assert_eq!(parse_retry_after(" 30 "), Some(Duration::from_secs(30)));
    assert_eq!(parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT"), None);
    assert_eq!(parse_retry_after("-1"), None);
}

#[test]
fn destination_config_reads_both_apis_and_rejects_unknown_fields() {
    let v1: DestinationConfig = toml::from_str(
        r#"
        name = "street"
        url = "http://127.0.0.1:8086"
        api = "v1"
        database = "firegrid"
        flush_interval = "500ms"
        "#,
    )
    .unwrap();
    assert_eq!(v1.flush_interval, Duration::from_millis(500));
    assert_eq!(v1.batch_lines, 5_000);
    assert!(matches!(v1.kind, DestinationKind::V1 { ref database, .. } if database == "firegrid"));
    let v2: DestinationConfig = toml::from_str(
        r#"
        name = "city"
        url = "http://127.0.0.1:8428"
        api = "v2"
        org = "fuhai"
        bucket = "firegrid"
        "#,
    )
    .unwrap();
    assert!(matches!(v2.kind, DestinationKind::V2 { ref token, .. } if token.is_empty()));
    let err = toml::from_str::<DestinationConfig>(
        r#"
        name = "x"
        url = "http://h"
        api = "v1"
        database = "d"
        databse = "typo"
        "#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("databse"), "{err}");
    let err =
        toml::from_str::<DestinationConfig>("name = \"x\"\nurl = \"http://h\"\napi = \"v2\"\norg = \"o\"")
            .unwrap_err();
    assert!(err.to_string().contains("needs `bucket`"), "{err}");
    let err = toml::from_str::<DestinationConfig>(
        "name = \"x\"\nurl = \"http://h\"\napi = \"v1\"\ndatabase = \"d\"\ntoken = \"t\"",
    )
    .unwrap_err();
    assert!(err.to_string().contains("`token` does not apply"), "{err}");
    let err = toml::from_str::<DestinationConfig>(
        "name = \"a b\"\nurl = \"http://h\"\napi = \"v1\"\ndatabase = \"d\"",
    )
    .unwrap_err();
    assert!(err.to_string().contains("destination name"), "{err}");
}
