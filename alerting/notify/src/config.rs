//! The `[notify]` section: delivery settings and the named channels.
//!
//! `alerting/notify/src/example.toml` shows every channel kind with its settings; a test loads
//! it, so it cannot rot.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::outbox::DeliveryConfig;
use super::{dingtalk, feishu, sms, webhook, wecom};

/// Notification settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Retry, give-up and retention settings of the outbox (`[notify.delivery]`).
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// The channels, by name (`[notify.channels.<name>]`). The name is what desks are mapped
    /// to and what the outbox stores per delivery; it is also a metrics label
    /// (`A-Z a-z 0-9 . _ -`).
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelConfig>,
}

/// One channel, chosen by `kind`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChannelConfig {
    /// `kind = "webhook"`: the message as signed JSON to any HTTP endpoint.
    Webhook(webhook::WebhookConfig),
    /// `kind = "wecom"`: a WeCom (企业微信) group robot.
    Wecom(wecom::WecomConfig),
    /// `kind = "dingtalk"`: a DingTalk (钉钉) custom robot.
    Dingtalk(dingtalk::DingtalkConfig),
    /// `kind = "feishu"`: a Feishu/Lark (飞书) custom bot.
    Feishu(feishu::FeishuConfig),
    /// `kind = "sms"`: an HTTP SMS or voice gateway, by template.
    Sms(sms::SmsConfig),
}

/// Default time limit of one request, connection included. Robots answer in well under a
/// second; a hung endpoint must give its delivery slot back soon, and the outbox retries.
pub(super) fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
