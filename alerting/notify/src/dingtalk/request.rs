//! The DingTalk robot request and reply, as plain functions.

use serde_json::json;

use crate::message::{render_text, truncate_bytes};
use crate::sign::{base64, hmac_sha256};
use crate::transport::{CodedReply, Reply, Request, check_coded_reply};
use crate::{Message, Secret, SendError};

/// Most bytes of rendered text sent. DingTalk's own limit is far larger; a notification
/// needs a fraction of this, and a bound keeps a runaway text from being refused whole.
pub const TEXT_MAX_BYTES: usize = 4096;

/// `errcode` for "send too fast": a robot takes 20 messages a minute.
pub const RATE_LIMITED: i64 = 130101;
/// `errcode` for "system busy".
pub const BUSY: i64 = -1;

/// The "加签" signature: base64 of HMAC-SHA256 keyed with the secret over
/// `"{timestamp_ms}\n{secret}"`, not yet URL-encoded.
pub fn sign(secret: &str, timestamp_ms: u64) -> String {
    base64(&hmac_sha256(secret.as_bytes(), format!("{timestamp_ms}\n{secret}").as_bytes()))
}

/// The webhook URL with `timestamp` and `sign` appended when there is a secret. The query is
/// form-encoded (`+` → `%2B`, `/` → `%2F`, `=` → `%3D`), as DingTalk's reference code does
/// with `urllib.parse.quote_plus`. DingTalk refuses timestamps more than an hour from its
/// clock, so the gateway's clock must be synchronised.
pub fn signed_url(url: &reqwest::Url, secret: Option<&Secret>, timestamp_ms: u64) -> String {
    let Some(secret) = secret else {
        return url.to_string();
    };
    let mut url = url.clone();
    url.query_pairs_mut()
        .append_pair("timestamp", &timestamp_ms.to_string())
        .append_pair("sign", &sign(secret.expose(), timestamp_ms));
    url.to_string()
}

/// The request sending `msg` at `timestamp_ms`. Each mentioned number is also written into the
/// text as `@number`: DingTalk only highlights (and rings) mentions that appear in the content.
pub fn request(
    url: &reqwest::Url,
    secret: Option<&Secret>,
    at_mobiles: &[String],
    at_all: bool,
    msg: &Message,
    timestamp_ms: u64,
) -> Request {
    let mut content = truncate_bytes(&render_text(msg), TEXT_MAX_BYTES);
    if !at_mobiles.is_empty() {
        content.push('\n');
        content.push_str(&at_mobiles.iter().map(|m| format!("@{m}")).collect::<Vec<_>>().join(" "));
    }
    let body = json!({
        "msgtype": "text",
        "text": { "content": content },
        "at": { "atMobiles": at_mobiles, "isAtAll": at_all },
    });
    Request::post_json(signed_url(url, secret, timestamp_ms), &body)
}

/// DingTalk answers HTTP 200 with `{"errcode":0,"errmsg":"ok"}`; any other `errcode` is a
/// refusal (310000: signature, keyword or IP check failed), retried only for the rate limit
/// and "busy".
pub fn judge(reply: &Reply) -> Result<(), SendError> {
    check_coded_reply(
        reply,
        &CodedReply {
            platform: "dingtalk",
            code_fields: &["errcode"],
            message_fields: &["errmsg"],
            retryable_codes: &[RATE_LIMITED, BUSY],
        },
    )
}
