//! Configuration of a WeCom group robot.

use std::time::Duration;

use serde::Deserialize;

use crate::config::default_timeout;
use crate::outbox::RateLimit;

/// A WeCom (企业微信) group robot.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WecomConfig {
    /// The robot's webhook address, with its `key=` (from the group's robot settings).
    pub url: String,
    /// `markdown` (default: headed, with a clickable link) or `text` (plain, but the only
    /// format whose `mentioned_mobiles` make members' phones ring).
    #[serde(default)]
    pub format: WecomFormat,
    /// Mobile numbers of group members to @-mention, or `@all`; `text` format only.
    #[serde(default)]
    pub mentioned_mobiles: Vec<String>,
    /// Time limit for one request, connection included.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Most messages per window. Default `{ messages = 20, per = "1m" }`: "每个机器人发送的消息不能
    /// 超过20条/分钟" (WeCom group robot, 消息发送频率限制,
    /// <https://developer.work.weixin.qq.com/document/path/91770>); past it the robot answers
    /// errcode 45009. Lower it when other systems post through the same robot.
    #[serde(default = "default_rate_limit")]
    pub rate_limit: Option<RateLimit>,
}

fn default_rate_limit() -> Option<RateLimit> {
    Some(RateLimit::new(20, Duration::from_secs(60)))
}

/// The WeCom message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WecomFormat {
    /// `msgtype = "markdown"`.
    #[default]
    Markdown,
    /// `msgtype = "text"`.
    Text,
}
