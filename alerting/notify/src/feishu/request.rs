//! The Feishu bot request and reply, as plain functions.

use serde_json::json;

use crate::message::{render_text, truncate_bytes};
use crate::sign::{base64, hmac_sha256};
use crate::transport::{CodedReply, Reply, Request, check_coded_reply};
use crate::{Message, Secret, SendError};

/// Most bytes of rendered text sent; Feishu's own limit is far larger (see the DingTalk
/// channel for the reasoning).
pub const TEXT_MAX_BYTES: usize = 4096;

/// `code` for the message service's frequency limit (a bot takes 100 a minute, 5 a second).
pub const RATE_LIMITED: i64 = 11232;
/// `code` for "too many requests" from the bot gateway.
pub const TOO_MANY_REQUESTS: i64 = 9499;

/// The signature: base64 of HMAC-SHA256 **keyed with** `"{timestamp_s}\n{secret}"` over an
/// empty message. (Feishu's scheme puts the secret in the key, unlike DingTalk's.)
pub fn sign(secret: &str, timestamp_s: u64) -> String {
    base64(&hmac_sha256(format!("{timestamp_s}\n{secret}").as_bytes(), b""))
}

/// The request sending `msg` at `timestamp_s`; Feishu refuses timestamps more than an hour
/// from its clock.
pub fn request(url: &str, secret: Option<&Secret>, msg: &Message, timestamp_s: u64) -> Request {
    let mut body = json!({
        "msg_type": "text",
        "content": { "text": truncate_bytes(&render_text(msg), TEXT_MAX_BYTES) },
    });
    if let Some(secret) = secret {
        body["timestamp"] = json!(timestamp_s.to_string());
        body["sign"] = json!(sign(secret.expose(), timestamp_s));
    }
    Request::post_json(url, &body)
}

/// Feishu answers `{"code":0,"msg":"success"}` (older bots: `{"StatusCode":0,...}`); any other
/// code is a refusal (19021: signature check failed), retried only for the rate limits.
/// Some refusals come with HTTP 400 and the code in the body: a rate-limit code is retried
/// whatever the status.
pub fn judge(reply: &Reply) -> Result<(), SendError> {
    check_coded_reply(
        reply,
        &CodedReply {
            platform: "feishu",
            code_fields: &["code", "StatusCode"],
            message_fields: &["msg", "StatusMessage"],
            retryable_codes: &[RATE_LIMITED, TOO_MANY_REQUESTS],
        },
    )
}
