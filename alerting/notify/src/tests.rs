//! The parts every channel shares: rendering, failure classification, robot replies, secrets,
//! and the example configuration.

use std::collections::BTreeMap;
use std::time::Duration;

use super::transport::{CodedReply, check_coded_reply};
use super::*;

/// The message the channel tests send: Chinese text, a link, a fixed time.
pub(crate) fn sample() -> Message {
    Message {
        notification_id: 7,
        case_id: 42,
        severity: "fire".to_owned(),
        level: "grid".to_owned(),
        desk: "grid:G1".to_owned(),
        title: "3号楼2单元 烟感火警".to_owned(),
        text: "502室烟雾浓度 0.25 dB/m，请立即核查。".to_owned(),
        url: Some("https://console.example/cases/42".to_owned()),
        // 2023-11-14T22:13:20Z
        at_ms: 1_700_000_000_000,
        reason: "opened".to_owned(),
        local_at: None,
    }
}

/// No environment variables.
pub(crate) fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn text_rendering_is_short_and_bilingual() {
    assert_eq!(
        message::render_text(&sample()),
        "【火警 Fire】3号楼2单元 烟感火警\n值班台 Desk: grid:G1 (grid)\n案件 Case: 42 · 2023-11-14T22:13:20Z\n\
         502室烟雾浓度 0.25 dB/m，请立即核查。\nhttps://console.example/cases/42"
    );
    let bare = Message { text: String::new(), url: None, severity: "pre_alarm".to_owned(), ..sample() };
    assert_eq!(
        message::render_text(&bare),
        "【预警信号 Pre-alarm】3号楼2单元 烟感火警\n值班台 Desk: grid:G1 (grid)\n案件 Case: 42 · 2023-11-14T22:13:20Z"
    );
    // A message made on the officers' clock is shown on it.
    let local = Message { local_at: Some("11-15 06:13 (Asia/Shanghai)".to_owned()), ..bare };
    assert!(message::render_text(&local).ends_with("案件 Case: 42 · 11-15 06:13 (Asia/Shanghai)"));
}

#[test]
fn markdown_rendering_has_a_heading_and_a_link() {
    assert_eq!(
        message::render_markdown(&sample()),
        "### 【火警 Fire】3号楼2单元 烟感火警\n> 值班台 Desk: grid:G1 (grid)\n> 案件 Case: 42 · 2023-11-14T22:13:20Z\n\n\
         502室烟雾浓度 0.25 dB/m，请立即核查。\n\n[打开案件 Open case](https://console.example/cases/42)"
    );
}

#[test]
fn severities_have_labels_and_unknown_ones_pass_through() {
    let check = |severity: &str, expected: &str| assert_eq!(message::severity_label(severity), expected);
    check("fire", "火警 Fire");
    check("pre_alarm", "预警信号 Pre-alarm");
    check("test", "测试 Test");
    check("fault", "故障 Fault");
    check("gas_leak", "gas_leak");
}

#[test]
fn truncation_keeps_characters_whole() {
    let check = |text: &str, max: usize, expected: &str| {
        let cut = message::truncate_bytes(text, max);
        assert_eq!(cut, expected, "{text:?} to {max} bytes");
        assert!(cut.len() <= max.max(text.len().min(max)), "{cut:?} longer than {max}");
    };
    check("short", 10, "short");
    check("abcdefghij", 10, "abcdefghij");
    // "…" is 3 bytes: 8 - 3 = 5 bytes of text, which would split "火" (3 bytes) after "火", so 3.
    check("火警火警", 8, "火…");
    check("abcdefghijk", 10, "abcdefg…");
}

#[test]
fn failures_are_classified_once() {
    fn check(error: SendError, retryable: bool, reason: &str) {
        assert_eq!(error.is_retryable(), retryable, "{error}");
        assert_eq!(error.reason(), reason, "{error}");
    }
    let status = |status| SendError::from_status(status, None, b"");
    check(SendError::Network("connection refused".into()), true, "network");
    check(SendError::Timeout("10s".into()), true, "timeout");
    check(status(500), true, "server_error");
    check(status(502), true, "server_error");
    check(status(503), true, "server_error");
    check(status(408), true, "client_error");
    check(status(429), true, "rate_limited");
    check(status(400), false, "client_error");
    check(status(401), false, "client_error");
    check(status(404), false, "client_error");
    let refused = |retryable| SendError::Refused {
        platform: "wecom",
        code: "45009".into(),
        message: "api freq out of limit".into(),
        retryable,
    };
    check(refused(true), true, "rate_limited");
    check(refused(false), false, "refused");
    check(SendError::BadReply("<html>".into()), true, "bad_reply");
    check(SendError::Config("bad url".into()), false, "config");
    check(SendError::UnknownTarget("gone".into()), false, "unknown_target");
    check(SendError::Unreadable("eof".into()), false, "unreadable");
    assert_eq!(
        SendError::from_status(429, Some(Duration::from_secs(3)), b"slow down").retry_after(),
        Some(Duration::from_secs(3))
    );
}

#[test]
fn long_replies_are_cut_in_errors() {
    let body = "错".repeat(1000);
    let SendError::Status { body: kept, .. } = SendError::from_status(500, None, body.as_bytes()) else {
        panic!("not a status error");
    };
    assert_eq!(kept.chars().count(), 301, "300 characters and an ellipsis");
}

#[test]
fn robot_replies_need_a_zero_code_and_a_success_status() {
    const ROBOT: CodedReply = CodedReply {
        platform: "robot",
        code_fields: &["errcode", "StatusCode"],
        message_fields: &["errmsg", "StatusMessage"],
        retryable_codes: &[45009],
    };
    fn check(status: u16, body: &str, expected: Result<(), (&str, bool)>) {
        let reply = Reply { status, retry_after: None, body: body.as_bytes().to_vec() };
        let got = check_coded_reply(&reply, &ROBOT).map_err(|e| (e.reason(), e.is_retryable()));
        assert_eq!(got, expected, "HTTP {status} {body}");
    }
    check(200, r#"{"errcode":0,"errmsg":"ok"}"#, Ok(()));
    check(200, r#"{"StatusCode":0,"StatusMessage":"success"}"#, Ok(()));
    check(200, r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#, Err(("rate_limited", true)));
    check(200, r#"{"errcode":93000,"errmsg":"invalid webhook url"}"#, Err(("refused", false)));
    // A rate-limit code is recognised whatever the status; otherwise a 4xx or 5xx is judged
    // by its status.
    check(400, r#"{"errcode":45009,"errmsg":"frequency"}"#, Err(("rate_limited", true)));
    check(400, r#"{"errcode":19021,"errmsg":"sign match fail"}"#, Err(("client_error", false)));
    check(502, r#"{"errcode":1,"errmsg":"upstream"}"#, Err(("server_error", true)));
    check(503, r#"{"errcode":0,"errmsg":"ok"}"#, Err(("server_error", true)));
    check(502, "<html>Bad Gateway</html>", Err(("server_error", true)));
    check(404, "", Err(("client_error", false)));
    check(200, "<html>captive portal</html>", Err(("bad_reply", true)));
    check(200, r#"{"errmsg":"ok"}"#, Err(("bad_reply", true)));
}

#[test]
fn refusals_carry_the_platform_code_and_message() {
    let reply = Reply {
        status: 200,
        retry_after: None,
        body: br#"{"errcode":310000,"errmsg":"sign not match"}"#.to_vec(),
    };
    let error = dingtalk::request::judge(&reply).unwrap_err();
    assert_eq!(error.to_string(), "dingtalk refused the message: code 310000: sign not match");
}

#[test]
fn secrets_come_from_the_file_or_the_environment_and_never_print() {
    let env = |name: &str| (name == "FG_SECRET").then(|| "from-env".to_owned());
    let inline = Secret::new("inline");
    let resolve = |inline: Option<&Secret>, var: Option<&str>| {
        Secret::resolve(inline, var, &env).map(|s| s.map(|s| s.expose().to_owned())).map_err(|e| e.message)
    };
    assert_eq!(resolve(Some(&inline), None), Ok(Some("inline".to_owned())));
    assert_eq!(resolve(None, Some("FG_SECRET")), Ok(Some("from-env".to_owned())));
    assert_eq!(resolve(None, None), Ok(None));
    assert!(resolve(None, Some("FG_MISSING")).unwrap_err().contains("FG_MISSING"));
    assert!(resolve(Some(&inline), Some("FG_SECRET")).unwrap_err().contains("not both"));
    assert!(resolve(Some(&Secret::new("")), None).unwrap_err().contains("empty"));
    assert_eq!(format!("{inline:?}"), "Secret(***)");
}

#[test]
fn headers_from_the_environment_join_the_plain_ones() {
    let env = |name: &str| (name == "SMS_KEY").then(|| "Bearer k".to_owned());
    let plain = BTreeMap::from([("X-Tenant".to_owned(), "fuhai".to_owned())]);
    let from_env = BTreeMap::from([("Authorization".to_owned(), "SMS_KEY".to_owned())]);
    assert_eq!(
        secret::headers(&plain, &from_env, &env).unwrap(),
        vec![
            ("X-Tenant".to_owned(), "fuhai".to_owned()),
            ("Authorization".to_owned(), "Bearer k".to_owned())
        ]
    );
    let twice = BTreeMap::from([("x-tenant".to_owned(), "SMS_KEY".to_owned())]);
    assert!(secret::headers(&plain, &twice, &env).unwrap_err().message.contains("both"));
    let bad = BTreeMap::from([("Bad Header".to_owned(), "v".to_owned())]);
    assert!(secret::headers(&bad, &BTreeMap::new(), &env).unwrap_err().message.contains("header name"));
}

#[test]
fn the_example_configuration_loads_and_builds() {
    let cfg: NotifyConfig = toml::from_str(include_str!("example.toml")).unwrap();
    assert_eq!(cfg.delivery, DeliveryConfig::default(), "the example shows the defaults");
    let kinds: Vec<_> = cfg
        .channels
        .iter()
        .map(|(name, c)| {
            let kind = match c {
                ChannelConfig::Webhook(_) => "webhook",
                ChannelConfig::Wecom(_) => "wecom",
                ChannelConfig::Dingtalk(_) => "dingtalk",
                ChannelConfig::Feishu(_) => "feishu",
                ChannelConfig::Sms(_) => "sms",
            };
            (name.as_str(), kind)
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("console", "webhook"),
            ("district_feishu", "feishu"),
            ("duty_sms", "sms"),
            ("duty_voice", "sms"),
            ("grid_g1_wecom", "wecom"),
            ("street_dingtalk", "dingtalk"),
        ]
    );
    let channels = build_channels_with_env(&cfg.channels, &no_env).unwrap();
    assert_eq!(channels.len(), 6);
    assert_eq!(channels["grid_g1_wecom"].kind(), "wecom");
    let limit =
        |name: &str| channels[name].rate_limit().map(|l| (l.messages.get(), l.per.as_secs(), l.reserve()));
    assert_eq!(limit("console"), Some((30, 60, 2)));
    assert_eq!(limit("grid_g1_wecom"), Some((10, 60, 2)));
    // The platforms' documented limits by default; none for SMS.
    assert_eq!(limit("street_dingtalk"), Some((20, 60, 4)));
    assert_eq!(limit("district_feishu"), Some((5, 3, 1)));
    assert_eq!(limit("duty_sms"), None);
}

#[test]
fn rate_limits_default_per_platform_and_a_reserve_that_starves_routine_pages_is_refused() {
    let build = |text: &str| {
        let cfg: NotifyConfig = toml::from_str(text).unwrap();
        build_channels_with_env(&cfg.channels, &no_env).map(|c| c["x"].rate_limit())
    };
    let wecom = "[channels.x]\nkind = \"wecom\"\nurl = \"https://qyapi.example/send?key=k\"\n";
    assert_eq!(build(wecom).unwrap(), Some(outbox::RateLimit::new(20, Duration::from_secs(60))));
    let hook = "[channels.x]\nkind = \"webhook\"\nurl = \"https://hook.example/\"\n";
    assert_eq!(build(hook).unwrap(), None);
    let starved = format!("{hook}rate_limit = {{ messages = 2, per = \"1m\", reserve = 2 }}\n");
    let err = build(&starved).unwrap_err();
    assert!(err.to_string().contains("reserve"), "{err}");
    let unknown = format!("{hook}rate_limit = {{ messages = 2, per = \"1m\", burst = 2 }}\n");
    assert!(toml::from_str::<NotifyConfig>(&unknown).is_err());
}

#[test]
fn channel_configuration_mistakes_are_refused_with_the_channel_named() {
    fn check(toml_text: &str, expected: &str) {
        let error = match toml::from_str::<NotifyConfig>(toml_text) {
            Err(e) => e.to_string(),
            Ok(cfg) => build_channels_with_env(&cfg.channels, &no_env).unwrap_err().to_string(),
        };
        assert!(error.contains(expected), "{toml_text}\n=> {error}\n(expected {expected:?})");
    }
    check("[channels.a]\nkind = \"pager\"\nurl = \"http://h\"", "unknown variant `pager`");
    check("[channels.a]\nkind = \"webhook\"\nurl = \"http://h\"\nsecert = \"x\"", "unknown field `secert`");
    check("[channels.a]\nkind = \"webhook\"\nurl = \"http://h\"\ntimeout = \"soon\"", "expected a duration");
    check("[channels.\"a b\"]\nkind = \"webhook\"\nurl = \"http://h\"", "bad channel name");
    check("[channels.a]\nkind = \"webhook\"\nurl = \"ftp://h\"", "notification channel \"a\": url");
    check("[channels.a]\nkind = \"webhook\"\nurl = \"http://h\"\nsecret_env = \"FG_NONE\"", "FG_NONE");
    check(
        "[channels.a]\nkind = \"wecom\"\nurl = \"https://qyapi.weixin.qq.com/cgi-bin/webhook/send\"",
        "key=",
    );
    check(
        "[channels.a]\nkind = \"wecom\"\nurl = \"http://h/?key=k\"\nmentioned_mobiles = [\"138\"]",
        "markdown messages cannot mention",
    );
    check(
        "[channels.a]\nkind = \"dingtalk\"\nurl = \"http://h/?access_token=t&sign=x\"",
        "must not contain `timestamp` or `sign`",
    );
    check("[delivery]\nconcurrency = 0", "nonzero");
    check("[delivery]\nmax_age = \"1 hour\"\nretries = 3", "unknown field `retries`");
}
