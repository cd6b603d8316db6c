//! The WeCom robot request and reply, as plain functions.

use serde_json::json;

use super::config::WecomFormat;
use crate::message::{render_markdown, render_text, truncate_bytes};
use crate::transport::{CodedReply, Reply, Request, check_coded_reply};
use crate::{Message, SendError};

/// WeCom's limit on `markdown.content`, in UTF-8 bytes; longer content is refused whole.
pub const MARKDOWN_MAX_BYTES: usize = 4096;
/// WeCom's limit on `text.content`, in UTF-8 bytes.
pub const TEXT_MAX_BYTES: usize = 2048;

/// `errcode` for "api freq out of limit": a robot takes 20 messages a minute.
pub const RATE_LIMITED: i64 = 45009;
/// `errcode` for "system busy".
pub const BUSY: i64 = -1;

/// The request sending `msg` to the robot at `url`.
pub fn request(url: &str, format: WecomFormat, mentioned_mobiles: &[String], msg: &Message) -> Request {
    let body = match format {
        WecomFormat::Markdown => json!({
            "msgtype": "markdown",
            "markdown": { "content": truncate_bytes(&render_markdown(msg), MARKDOWN_MAX_BYTES) },
        }),
        WecomFormat::Text => {
            let mut text = json!({ "content": truncate_bytes(&render_text(msg), TEXT_MAX_BYTES) });
            if !mentioned_mobiles.is_empty() {
                text["mentioned_mobile_list"] = json!(mentioned_mobiles);
            }
            json!({ "msgtype": "text", "text": text })
        }
    };
    Request::post_json(url, &body)
}

/// WeCom answers HTTP 200 with `{"errcode":0,"errmsg":"ok"}`; any other `errcode` is a
/// refusal, retried only for the rate limit and "busy".
pub fn judge(reply: &Reply) -> Result<(), SendError> {
    check_coded_reply(
        reply,
        &CodedReply {
            platform: "wecom",
            code_fields: &["errcode"],
            message_fields: &["errmsg"],
            retryable_codes: &[RATE_LIMITED, BUSY],
        },
    )
}
