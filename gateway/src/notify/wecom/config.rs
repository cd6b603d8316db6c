//! Configuration of a WeCom group robot.

use std::time::Duration;

use serde::Deserialize;

use crate::notify::config::default_timeout;

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
