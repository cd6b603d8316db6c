//! The DingTalk robot's signature, URL, body and reply. Delivery against a real server, which
//! checks the signature, is tested with the outbox.

use serde_json::{Value, json};

use super::request::{judge, request, sign, signed_url};
use crate::message::render_text;
use crate::tests::sample;
use crate::{Reply, Secret};

/// Known answer computed independently with Python's standard library:
/// `base64.b64encode(hmac.new(b"SEC0123456789abcdef", b"1700000000123\nSEC0123456789abcdef",
/// hashlib.sha256).digest())`, then `urllib.parse.quote_plus` of that for the URL.
const SECRET: &str = "SEC0123456789abcdef";
const TIMESTAMP_MS: u64 = 1_700_000_000_123;
const SIGN: &str = "V9VP5gL2WDsEZvZQHnbd9k4n+p56ibcLMh+WKMZRQas=";
const SIGN_URLENCODED: &str = "V9VP5gL2WDsEZvZQHnbd9k4n%2Bp56ibcLMh%2BWKMZRQas%3D";

#[test]
fn signature_matches_an_independent_computation() {
    assert_eq!(sign(SECRET, TIMESTAMP_MS), SIGN);
}

#[test]
fn signed_url_appends_timestamp_and_urlencoded_sign() {
    let url = reqwest::Url::parse("https://oapi.dingtalk.com/robot/send?access_token=abc").unwrap();
    assert_eq!(
        signed_url(&url, Some(&Secret::new(SECRET)), TIMESTAMP_MS),
        format!(
            "https://oapi.dingtalk.com/robot/send?access_token=abc&timestamp={TIMESTAMP_MS}&sign={SIGN_URLENCODED}"
        )
    );
    assert_eq!(signed_url(&url, None, TIMESTAMP_MS), "https://oapi.dingtalk.com/robot/send?access_token=abc");
}

#[test]
fn body_is_text_with_mentions_written_into_the_content() {
    let url = reqwest::Url::parse("http://127.0.0.1:1/robot/send?access_token=abc").unwrap();
    let mentions = ["13800000000".to_owned(), "13900000000".to_owned()];
    let req = request(&url, None, &mentions, false, &sample(), TIMESTAMP_MS);
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(
        body,
        json!({
            "msgtype": "text",
            "text": { "content": format!("{}\n@13800000000 @13900000000", render_text(&sample())) },
            "at": { "atMobiles": ["13800000000", "13900000000"], "isAtAll": false },
        })
    );
    let req = request(&url, None, &[], true, &sample(), TIMESTAMP_MS);
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["at"], json!({ "atMobiles": [], "isAtAll": true }));
    assert_eq!(body["text"]["content"], json!(render_text(&sample())));
}

#[test]
fn errcode_decides_and_only_rate_limits_are_retried() {
    fn check(body: &str, expected: Result<(), bool>) {
        let reply = Reply { status: 200, retry_after: None, body: body.as_bytes().to_vec() };
        assert_eq!(judge(&reply).map_err(|e| e.is_retryable()), expected, "{body}");
    }
    check(r#"{"errcode":0,"errmsg":"ok"}"#, Ok(()));
    check(r#"{"errcode":130101,"errmsg":"send too fast, exceed 20 times per minute"}"#, Err(true));
    check(r#"{"errcode":-1,"errmsg":"系统繁忙"}"#, Err(true));
    check(r#"{"errcode":310000,"errmsg":"sign not match"}"#, Err(false));
    check(r#"{"errcode":300001,"errmsg":"token is not exist"}"#, Err(false));
}
