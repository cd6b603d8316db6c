//! The WeCom robot's body and reply. Delivery against a real server is tested with the outbox.

use serde_json::{Value, json};

use super::request::{MARKDOWN_MAX_BYTES, TEXT_MAX_BYTES, judge, request};
use super::*;
use crate::Reply;
use crate::message::{render_markdown, render_text};
use crate::tests::sample;

fn body(format: WecomFormat, mentions: &[&str], msg: &crate::Message) -> Value {
    let mentions: Vec<String> = mentions.iter().map(|m| m.to_string()).collect();
    let req = request("http://127.0.0.1:1/cgi-bin/webhook/send?key=k", format, &mentions, msg);
    assert_eq!(req.url, "http://127.0.0.1:1/cgi-bin/webhook/send?key=k");
    assert_eq!(req.header("content-type"), Some("application/json; charset=utf-8"));
    serde_json::from_slice(&req.body).unwrap()
}

#[test]
fn markdown_and_text_bodies() {
    assert_eq!(
        body(WecomFormat::Markdown, &[], &sample()),
        json!({ "msgtype": "markdown", "markdown": { "content": render_markdown(&sample()) } })
    );
    assert_eq!(
        body(WecomFormat::Text, &[], &sample()),
        json!({ "msgtype": "text", "text": { "content": render_text(&sample()) } })
    );
    assert_eq!(
        body(WecomFormat::Text, &["13800000000", "@all"], &sample()),
        json!({ "msgtype": "text", "text": {
            "content": render_text(&sample()),
            "mentioned_mobile_list": ["13800000000", "@all"],
        } })
    );
}

#[test]
fn content_stays_within_wecom_limits() {
    let long = crate::Message { text: "火".repeat(5000), ..sample() };
    let markdown = body(WecomFormat::Markdown, &[], &long);
    let content = markdown["markdown"]["content"].as_str().unwrap();
    assert!(
        content.len() <= MARKDOWN_MAX_BYTES && content.len() > MARKDOWN_MAX_BYTES - 4,
        "{}",
        content.len()
    );
    assert!(content.ends_with('…'));
    let text = body(WecomFormat::Text, &[], &long);
    assert!(text["text"]["content"].as_str().unwrap().len() <= TEXT_MAX_BYTES);
}

#[test]
fn errcode_decides_and_only_rate_limits_are_retried() {
    fn check(status: u16, body: &str, expected: Result<(), bool>) {
        let reply = Reply { status, retry_after: None, body: body.as_bytes().to_vec() };
        assert_eq!(judge(&reply).map_err(|e| e.is_retryable()), expected, "HTTP {status} {body}");
    }
    check(200, r#"{"errcode":0,"errmsg":"ok"}"#, Ok(()));
    check(200, r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#, Err(true));
    check(200, r#"{"errcode":-1,"errmsg":"system busy"}"#, Err(true));
    check(200, r#"{"errcode":93000,"errmsg":"invalid webhook url"}"#, Err(false));
    check(200, r#"{"errcode":40008,"errmsg":"invalid message type"}"#, Err(false));
    check(503, "", Err(true));
}
