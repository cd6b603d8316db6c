//! Configuration of a DingTalk custom robot.

use std::time::Duration;

use serde::Deserialize;

use crate::Secret;
use crate::config::default_timeout;
use crate::outbox::RateLimit;

/// A DingTalk (钉钉) custom robot.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DingtalkConfig {
    /// The robot's webhook address, with its `access_token=`.
    pub url: String,
    /// The robot's "加签" secret (starts with `SEC`). Without `secret` or `secret_env`,
    /// requests go unsigned and the robot must be secured by keyword or IP allow-list.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Name of an environment variable holding the secret, read at start.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Mobile numbers of group members to @-mention (their phones ring).
    #[serde(default)]
    pub at_mobiles: Vec<String>,
    /// @-mention everyone in the group.
    #[serde(default)]
    pub at_all: bool,
    /// Time limit for one request, connection included.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Most messages per window. Default `{ messages = 20, per = "1m" }`: "每个机器人每分钟最多发送
    /// 20条消息到群里，如果超过20条，会限流10分钟" (DingTalk custom robot, 调用频率限制,
    /// <https://open.dingtalk.com/document/robots/custom-robot-access>); past it the robot
    /// answers errcode 130101 and stays blocked for ten minutes, so this limit matters most
    /// here. Lower it when other systems post through the same robot.
    #[serde(default = "default_rate_limit")]
    pub rate_limit: Option<RateLimit>,
}

fn default_rate_limit() -> Option<RateLimit> {
    Some(RateLimit::new(20, Duration::from_secs(60)))
}
