//! Configuration of a Feishu/Lark custom bot.

use std::time::Duration;

use serde::Deserialize;

use crate::Secret;
use crate::config::default_timeout;
use crate::outbox::RateLimit;

/// A Feishu/Lark (飞书) custom bot.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeishuConfig {
    /// The bot's webhook address (`.../open-apis/bot/v2/hook/<id>`).
    pub url: String,
    /// The bot's signature secret ("签名校验"). Without `secret` or `secret_env`, requests go
    /// unsigned and the bot must be secured by keyword or IP allow-list.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Name of an environment variable holding the secret, read at start.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Time limit for one request, connection included.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Most messages per window. Default `{ messages = 5, per = "3s" }`: a custom bot takes
    /// "单租户单机器人 100 次/分钟，5 次/秒" (Feishu custom bot guide, 注意事项,
    /// <https://open.feishu.cn/document/client-docs/bot-v3/add-custom-bot>; code 11232 past
    /// it). One window must keep both: 5 in any 3 s is at most 5 in any second and at most
    /// 100 in any minute (twenty 3 s windows), where 100 per minute alone would allow 100 in
    /// one second.
    #[serde(default = "default_rate_limit")]
    pub rate_limit: Option<RateLimit>,
}

fn default_rate_limit() -> Option<RateLimit> {
    Some(RateLimit::new(5, Duration::from_secs(3)))
}
