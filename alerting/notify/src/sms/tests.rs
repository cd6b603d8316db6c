//! Templates, escaping, the requests for a message and the success check. Delivery against a
//! real server is tested with the outbox.

use std::collections::BTreeMap;

use super::request::RequestTemplate;
use super::template::{Escape, escaped, placeholders, render, values};
use super::*;
use crate::tests::{no_env, sample};
use crate::transport::Method;
use crate::{ChannelConfig, Reply};

fn config(toml_text: &str) -> SmsConfig {
    match toml::from_str::<ChannelConfig>(&format!("kind = \"sms\"\n{toml_text}")).unwrap() {
        ChannelConfig::Sms(cfg) => cfg,
        other => panic!("not sms: {other:?}"),
    }
}

fn template(toml_text: &str) -> RequestTemplate {
    RequestTemplate::new(&config(toml_text), &no_env).unwrap()
}

#[test]
fn values_are_escaped_for_where_they_stand() {
    let check = |value: &str, escape: Escape, expected: &str| {
        assert_eq!(escaped(value, escape), expected, "{value:?} {escape:?}");
    };
    check(r#"a "quoted" \ line"#, Escape::Json, r#"a \"quoted\" \\ line"#);
    check("two\nlines\ttab", Escape::Json, r"two\nlines\ttab");
    check("火警", Escape::Json, "火警");
    check("a b&c=d/e?f#g+h", Escape::Percent, "a%20b%26c%3Dd%2Fe%3Ff%23g%2Bh");
    check("火", Escape::Percent, "%E7%81%AB");
    check("safe-._~AZ09", Escape::Percent, "safe-._~AZ09");
    check("as <is> &", Escape::Raw, "as <is> &");
}

#[test]
fn only_lowercase_names_in_braces_are_placeholders() {
    let values = BTreeMap::from([("phone", "138".to_owned()), ("text", "a\"b".to_owned())]);
    let check = |template: &str, escape: Escape, expected: &str| {
        assert_eq!(render(template, &values, escape), expected, "{template}");
    };
    check(r#"{"to":"{phone}","msg":"{text}"}"#, Escape::Json, r#"{"to":"138","msg":"a\"b"}"#);
    check(r#"{"nested":{"to":"{phone}"}}"#, Escape::Json, r#"{"nested":{"to":"138"}}"#);
    check("{} {Phone} { phone} {phone", Escape::Raw, "{} {Phone} { phone} {phone");
    check("{{phone}}", Escape::Raw, "{138}");
    check("{unknown}", Escape::Raw, "{unknown}");
    assert_eq!(placeholders(r#"{"to":"{phone}","m":"{summary}"}"#).unwrap(), ["phone", "summary"]);
    let err = placeholders("to={phone}&m={titel}").unwrap_err();
    assert!(err.contains("{titel}") && err.contains("title"), "{err}");
}

#[test]
fn every_placeholder_has_a_value() {
    let values = values(&sample(), "13800000000", Some("key"));
    let names: Vec<_> = values.keys().copied().collect();
    let mut known = template::PLACEHOLDERS.to_vec();
    known.sort_unstable();
    assert_eq!(names, known);
    assert_eq!(values["summary"], "【火警 Fire】3号楼2单元 烟感火警 · grid:G1 · 案件 Case 42");
    assert_eq!(values["time"], "2023-11-14T22:13:20Z");
    assert_eq!(values["url"], "https://console.example/cases/42");
}

#[test]
fn json_body_one_request_per_number() {
    let shape = template(
        r#"url = "http://127.0.0.1:1/send"
           body = '{"to":"{phone}","text":"{title}: {text}","case":{case_id}}'
           phones = ["138", "139"]"#,
    );
    let requests = shape.requests(&sample()).unwrap();
    assert_eq!(requests.len(), 2);
    for (req, phone) in requests.iter().zip(["138", "139"]) {
        assert_eq!(req.method, Method::Post);
        assert_eq!(req.url, "http://127.0.0.1:1/send");
        assert_eq!(req.header("content-type"), Some("application/json; charset=utf-8"));
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "to": phone,
                "text": "3号楼2单元 烟感火警: 502室烟雾浓度 0.25 dB/m，请立即核查。",
                "case": 42,
            })
        );
    }
}

#[test]
fn form_body_and_joined_numbers() {
    let shape = template(
        r#"url = "http://127.0.0.1:1/send"
           body_format = "form"
           body = "mobiles={phone}&content={summary}"
           phones = ["138", "139"]
           batch = "joined"
           headers = { X-Api-Key = "k" }"#,
    );
    let requests = shape.requests(&sample()).unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].header("content-type"), Some("application/x-www-form-urlencoded; charset=utf-8"));
    assert_eq!(requests[0].header("x-api-key"), Some("k"));
    let body = String::from_utf8(requests[0].body.clone()).unwrap();
    let expected_summary =
        escaped("【火警 Fire】3号楼2单元 烟感火警 · grid:G1 · 案件 Case 42", Escape::Percent);
    assert_eq!(body, format!("mobiles=138%2C139&content={expected_summary}"));
}

#[test]
fn get_with_everything_in_the_query() {
    let shape = template(
        r#"method = "GET"
           url = "http://127.0.0.1:1/call?to={phone}&msg={title}&k={secret}"
           secret = "a&b"
           phones = ["+86 138"]"#,
    );
    let requests = shape.requests(&sample()).unwrap();
    assert_eq!(requests[0].method, Method::Get);
    assert!(requests[0].body.is_empty() && requests[0].header("content-type").is_none());
    assert_eq!(
        requests[0].url,
        "http://127.0.0.1:1/call?to=%2B86%20138&msg=3%E5%8F%B7%E6%A5%BC2%E5%8D%95%E5%85%83%20%E7%83%9F%E6%84%9F%E7%81%AB%E8%AD%A6&k=a%26b"
    );
}

#[test]
fn raw_body_with_its_own_content_type() {
    let shape = template(
        r#"url = "http://127.0.0.1:1/send"
           body_format = "raw"
           body = "TO:{phone}\nFIRE {case_id} \"{desk}\""
           content_type = "text/x-gateway"
           phones = ["138"]"#,
    );
    let req = &shape.requests(&sample()).unwrap()[0];
    assert_eq!(req.header("content-type"), Some("text/x-gateway"));
    assert_eq!(String::from_utf8(req.body.clone()).unwrap(), "TO:138\nFIRE 42 \"grid:G1\"");
}

#[test]
fn success_field_must_hold_the_success_value() {
    let shape = template(
        r#"url = "http://127.0.0.1:1/send"
           phones = ["138"]
           success_field = "/result/code"
           success_value = "0""#,
    );
    let check = |status: u16, body: &str, expected: Result<(), &str>| {
        let reply = Reply { status, retry_after: None, body: body.as_bytes().to_vec() };
        assert_eq!(shape.judge(&reply).map_err(|e| e.reason()), expected, "HTTP {status} {body}");
    };
    check(200, r#"{"result":{"code":0}}"#, Ok(()));
    check(200, r#"{"result":{"code":"0"}}"#, Ok(()));
    check(200, r#"{"result":{"code":"E_BALANCE"}}"#, Err("rate_limited"));
    check(200, r#"{"result":{}}"#, Err("bad_reply"));
    check(200, "OK", Err("bad_reply"));
    check(500, r#"{"result":{"code":0}}"#, Err("server_error"));
    check(400, "bad number", Err("client_error"));
    let any_2xx = template("url = \"http://127.0.0.1:1/send\"\nphones = [\"138\"]");
    assert_eq!(any_2xx.judge(&Reply { status: 204, retry_after: None, body: Vec::new() }), Ok(()));
}

#[test]
fn mistakes_are_refused_at_start() {
    let check = |toml_text: &str, expected: &str| {
        let error = RequestTemplate::new(&config(toml_text), &no_env).unwrap_err().to_string();
        assert!(error.contains(expected), "{toml_text}\n=> {error}");
    };
    check("url = \"http://h/\"\nphones = []", "at least one number");
    check("url = \"http://h/\"\nphones = [\" \"]", "at least one number");
    check(
        "method = \"GET\"\nurl = \"http://h/\"\nbody = \"x\"\nphones = [\"1\"]",
        "GET request cannot carry",
    );
    check("url = \"http://h/?m={titel}\"\nphones = [\"1\"]", "url: unknown placeholder {titel}");
    check("url = \"http://h/\"\nbody = \"{txt}\"\nphones = [\"1\"]", "body: unknown placeholder {txt}");
    check("url = \"http://h/?k={secret}\"\nphones = [\"1\"]", "uses {secret}");
    check("url = \"http://h/\"\nphones = [\"1\"]\nsuccess_field = \"code\"", "both `success_field`");
    check("url = \"ftp://h/{phone}\"\nphones = [\"1\"]", "scheme");
    check("url = \"not a url {phone}\"\nphones = [\"1\"]", "bad url");
    let err = toml::from_str::<ChannelConfig>(
        "kind = \"sms\"\nurl = \"http://h\"\nphones = [\"1\"]\nmethod = \"PUT\"",
    )
    .unwrap_err();
    assert!(err.to_string().contains("PUT"), "{err}");
}
