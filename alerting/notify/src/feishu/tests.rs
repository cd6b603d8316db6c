//! The Feishu bot's signature, body and reply. Delivery against a real server, which checks
//! the signature, is tested with the outbox.

use serde_json::{Value, json};

use super::request::{judge, request, sign};
use crate::message::render_text;
use crate::tests::sample;
use crate::{Reply, Secret};

/// Known answer computed independently with Python's standard library:
/// `base64.b64encode(hmac.new(b"1700000000\nfeishu-test-secret", b"", hashlib.sha256).digest())`
/// (Feishu keys the HMAC with the timestamp and secret and signs an empty message).
#[test]
fn signature_matches_an_independent_computation() {
    assert_eq!(sign("feishu-test-secret", 1_700_000_000), "e3MJ8Q5llVxGJ8pVkGPBhexDAgjvYqpjPP1GkY9XceI=");
}

#[test]
fn body_carries_timestamp_and_sign_when_signed() {
    let url = "http://127.0.0.1:1/open-apis/bot/v2/hook/x";
    let req = request(url, Some(&Secret::new("feishu-test-secret")), &sample(), 1_700_000_000);
    assert_eq!(req.url, url);
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(
        body,
        json!({
            "timestamp": "1700000000",
            "sign": "e3MJ8Q5llVxGJ8pVkGPBhexDAgjvYqpjPP1GkY9XceI=",
            "msg_type": "text",
            "content": { "text": render_text(&sample()) },
        })
    );
    let unsigned: Value = serde_json::from_slice(&request(url, None, &sample(), 1).body).unwrap();
    assert_eq!(unsigned, json!({ "msg_type": "text", "content": { "text": render_text(&sample()) } }));
}

#[test]
fn code_decides_in_both_reply_formats() {
    fn check(status: u16, body: &str, expected: Result<(), bool>) {
        let reply = Reply { status, retry_after: None, body: body.as_bytes().to_vec() };
        assert_eq!(judge(&reply).map_err(|e| e.is_retryable()), expected, "HTTP {status} {body}");
    }
    check(200, r#"{"code":0,"msg":"success","data":{}}"#, Ok(()));
    check(200, r#"{"StatusCode":0,"StatusMessage":"success","code":0}"#, Ok(()));
    check(200, r#"{"StatusCode":0,"StatusMessage":"success"}"#, Ok(()));
    check(
        200,
        r#"{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time"}"#,
        Err(false),
    );
    check(400, r#"{"code":19024,"msg":"Key Words Not Found"}"#, Err(false));
    check(200, r#"{"code":11232,"msg":"frequency limited"}"#, Err(true));
    check(400, r#"{"code":9499,"msg":"Too Many Request"}"#, Err(true));
    check(429, "", Err(true));
}
