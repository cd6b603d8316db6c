//! The webhook's request and signature. Delivery against a real server is tested with the
//! outbox (`outbox/tests.rs`).

use super::request::{IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, request, signature, verify};
use super::*;
use crate::tests::{no_env, sample};
use crate::{ChannelConfig, Secret};

/// Known answer computed independently with Python's standard library:
/// `hmac.new(b"firegrid-test-secret", b"1700000000." + body, hashlib.sha256).hexdigest()`
/// with `body = '{"notification_id":7,"case_id":42,"title":"烟感"}'.encode()`.
#[test]
fn signature_matches_an_independent_computation() {
    let body = r#"{"notification_id":7,"case_id":42,"title":"烟感"}"#.as_bytes();
    assert_eq!(
        signature(b"firegrid-test-secret", 1_700_000_000, body),
        "sha256=cc3a19a99904cfb9192eefe5e8780a740f5e01ee26f96a54a62f12e4861318f4"
    );
}

#[test]
fn verification_accepts_the_signature_and_nothing_else() {
    let body = br#"{"a":1}"#;
    let sig = signature(b"k", 1_700_000_000, body);
    let check = |secret: &[u8], ts: &str, body: &[u8], sig: &str, expected: bool| {
        assert_eq!(verify(secret, ts, body, sig), expected, "{secret:?} {ts} {body:?} {sig}");
    };
    check(b"k", "1700000000", body, &sig, true);
    check(b"other", "1700000000", body, &sig, false);
    check(b"k", "1700000001", body, &sig, false);
    check(b"k", "1700000000", br#"{"a":2}"#, &sig, false);
    check(b"k", "1700000000", body, sig.trim_start_matches("sha256="), false);
    check(b"k", "1700000000", body, "sha256=zz", false);
    check(b"k", "soon", body, &sig, false);
}

#[test]
fn request_posts_the_message_as_json_with_timestamp_signature_and_extra_headers() {
    let secret = Secret::new("s3cret");
    let extra = [("X-Tenant".to_owned(), "fuhai".to_owned())];
    let req = request("http://127.0.0.1:1/hook", &extra, Some(&secret), &sample(), 1_700_000_123);
    assert_eq!(req.url, "http://127.0.0.1:1/hook");
    assert_eq!(req.header("content-type"), Some("application/json; charset=utf-8"));
    assert_eq!(req.header(TIMESTAMP_HEADER), Some("1700000123"));
    assert_eq!(req.header("X-Tenant"), Some("fuhai"));
    assert_eq!(req.header(IDEMPOTENCY_HEADER), Some("42-7"), "case id and notification id");
    let retried = request("http://127.0.0.1:1/hook", &extra, Some(&secret), &sample(), 1_700_000_999);
    assert_eq!(retried.header(IDEMPOTENCY_HEADER), req.header(IDEMPOTENCY_HEADER), "stable across attempts");
    let sig = req.header(SIGNATURE_HEADER).unwrap();
    assert!(verify(b"s3cret", "1700000123", &req.body, sig), "{sig}");
    let sent: crate::Message = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(sent, sample());
    assert_eq!(
        String::from_utf8(req.body.clone()).unwrap(),
        r#"{"notification_id":7,"case_id":42,"severity":"fire","level":"grid","desk":"grid:G1","title":"3号楼2单元 烟感火警","text":"502室烟雾浓度 0.25 dB/m，请立即核查。","url":"https://console.example/cases/42","at_ms":1700000000000,"reason":"opened"}"#,
        "field names are the receiver's contract"
    );

    let unsigned = request("http://127.0.0.1:1/hook", &[], None, &sample(), 1_700_000_123);
    assert_eq!(unsigned.header(SIGNATURE_HEADER), None);
    assert_eq!(unsigned.header(TIMESTAMP_HEADER), Some("1700000123"));
}

#[test]
fn config_has_defaults_and_refuses_unknown_fields() {
    let cfg: ChannelConfig = toml::from_str("kind = \"webhook\"\nurl = \"http://h/x\"").unwrap();
    let ChannelConfig::Webhook(cfg) = cfg else { panic!("not a webhook: {cfg:?}") };
    assert_eq!(cfg.timeout, std::time::Duration::from_secs(10));
    assert!(cfg.secret.is_none() && cfg.headers.is_empty());
    assert!(Webhook::new(&cfg, &no_env).is_ok());
    let err =
        toml::from_str::<ChannelConfig>("kind = \"webhook\"\nurl = \"http://h\"\nheader = {}").unwrap_err();
    assert!(err.to_string().contains("unknown field `header`"), "{err}");
}
