//! DingTalk (钉钉) custom robot: a `text` message POSTed to the robot's webhook URL
//! (`https://oapi.dingtalk.com/robot/send?access_token=...`), signed by the "加签" scheme when
//! the robot has a secret: `&timestamp=<ms>&sign=<urlencoded base64 HMAC-SHA256>` in the URL.
//!
//! - [`config`] holds [`DingtalkConfig`].
//! - [`request`]: signature, URL and body, and the reading of DingTalk's `errcode` reply.
//! - [`service`]: [`Dingtalk`], the channel.

pub mod config;
pub mod request;
pub mod service;
#[cfg(test)]
mod tests;

pub use config::DingtalkConfig;
pub use service::Dingtalk;
