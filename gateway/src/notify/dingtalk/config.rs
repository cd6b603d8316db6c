//! Configuration of a DingTalk custom robot.

use std::time::Duration;

use serde::Deserialize;

use crate::notify::Secret;
use crate::notify::config::default_timeout;

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
}
