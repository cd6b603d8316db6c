//! WeCom (企业微信) group robot: a `markdown` or `text` message POSTed to the robot's webhook
//! URL (`https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=...`). The key in the URL is the
//! only credential; WeCom robots have no signature.
//!
//! - [`config`] holds [`WecomConfig`].
//! - [`request`]: the body and the reading of WeCom's `errcode` reply, as plain functions.
//! - [`service`]: [`Wecom`], the channel.

pub mod config;
pub mod request;
pub mod service;
#[cfg(test)]
mod tests;

pub use config::{WecomConfig, WecomFormat};
pub use service::Wecom;
