//! Configuration of a Feishu/Lark custom bot.

use std::time::Duration;

use serde::Deserialize;

use crate::notify::Secret;
use crate::notify::config::default_timeout;

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
}
