//! Feishu/Lark (飞书) custom bot: a `text` message POSTed to the bot's webhook URL
//! (`https://open.feishu.cn/open-apis/bot/v2/hook/...`), signed in the body when the bot has a
//! secret: `timestamp` (seconds) and `sign` = base64 of HMAC-SHA256 keyed with
//! `"{timestamp}\n{secret}"` over an empty message.
//!
//! - [`config`] holds [`FeishuConfig`].
//! - [`request`]: signature and body, and the reading of Feishu's `code` reply.
//! - [`service`]: [`Feishu`], the channel.

pub mod config;
pub mod request;
pub mod service;
#[cfg(test)]
mod tests;

pub use config::FeishuConfig;
pub use service::Feishu;
