//! Notifications: telling people (duty officers, desks) about fire cases, through robots and
//! gateways they already read, with a durable outbox so that no notification is lost to a
//! network failure, a restart or `kill -9`.
//!
//! The alarm engine decides *that* a desk must be told; the gateway maps the desk to channel
//! names and calls [`Outbox::enqueue`]; [`outbox::run`] delivers each (notification, channel)
//! pair at least once and reports every attempt back as a [`DeliveryReport`].
//!
//! - [`Message`]: what is sent, and its short rendering ([`message`]).
//! - [`Notifier`]: the one trait every channel implements; [`Channel`] holds any of them, so
//!   the outbox can keep a heterogeneous set by name. [`SendError`] says whether a failure is
//!   worth retrying.
//! - One folder per channel, each with `config.rs`, a pure `request.rs` (request building and
//!   signing as plain functions), an I/O `service.rs` and `tests.rs`: [`webhook`] (signed JSON),
//!   [`wecom`] (企业微信 group robot), [`dingtalk`] (钉钉 custom robot), [`feishu`] (飞书/Lark
//!   custom bot), [`sms`] (any HTTP SMS or voice gateway, by template).
//! - [`transport`]: the one place a pure [`Request`] becomes an HTTP exchange.
//! - [`outbox`]: the SQLite outbox, its pure retry [`outbox::policy`], and the delivery worker.
//!
//! Architecture invariant: channels never retry by themselves. A channel makes one attempt and
//! classifies its failure; when to try again is the outbox's decision alone, so every retry is
//! durable, visible in [`Outbox::history`] and reported to the engine.

pub mod config;
pub mod dingtalk;
pub mod error;
pub mod feishu;
pub mod message;
pub mod outbox;
pub mod secret;
pub mod sign;
pub mod sms;
#[cfg(test)]
mod tests;
pub mod transport;
pub mod webhook;
pub mod wecom;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

pub use config::{ChannelConfig, NotifyConfig};
pub use error::{ConfigError, SendError};
pub use message::Message;
pub use outbox::{
    DeliveryConfig, DeliveryReport, Depth, HistoryEntry, Outbox, OutboxError, Outcome, RateLimit, Status,
};
pub use secret::Secret;
pub use transport::{Reply, Request};

/// A way of reaching people. One call is one attempt: no retries inside (see the module's
/// invariant), `Ok` only when the far end accepted the message.
pub trait Notifier {
    /// Sends `msg` once.
    fn send(&self, msg: &Message) -> impl Future<Output = Result<(), SendError>> + Send;
}

/// Any configured channel. An enum rather than `Box<dyn Notifier>`: the set of kinds is closed
/// and known here, and the enum keeps [`Notifier::send`] a plain `async fn` without boxing.
#[derive(Debug, Clone)]
pub enum Channel {
    /// A generic signed JSON webhook.
    Webhook(webhook::Webhook),
    /// A WeCom (企业微信) group robot.
    Wecom(wecom::Wecom),
    /// A DingTalk (钉钉) custom robot.
    Dingtalk(dingtalk::Dingtalk),
    /// A Feishu/Lark (飞书) custom bot.
    Feishu(feishu::Feishu),
    /// An HTTP SMS or voice gateway.
    Sms(sms::Sms),
}

impl Channel {
    /// Builds the channel `cfg` describes. Secrets named by `secret_env` and headers named by
    /// `headers_env` are read from the process environment now, so a missing variable fails
    /// the start rather than the first fire alarm.
    pub fn build(cfg: &ChannelConfig) -> Result<Channel, ConfigError> {
        Self::build_with_env(cfg, &|name| std::env::var(name).ok())
    }

    /// [`Channel::build`] with environment variables looked up through `env` (tests).
    pub fn build_with_env(cfg: &ChannelConfig, env: &secret::Env<'_>) -> Result<Channel, ConfigError> {
        Ok(match cfg {
            ChannelConfig::Webhook(c) => Channel::Webhook(webhook::Webhook::new(c, env)?),
            ChannelConfig::Wecom(c) => Channel::Wecom(wecom::Wecom::new(c)?),
            ChannelConfig::Dingtalk(c) => Channel::Dingtalk(dingtalk::Dingtalk::new(c, env)?),
            ChannelConfig::Feishu(c) => Channel::Feishu(feishu::Feishu::new(c, env)?),
            ChannelConfig::Sms(c) => Channel::Sms(sms::Sms::new(c, env)?),
        })
    }

    /// The channel's rate limit, if it has one (see [`outbox::RateLimit`]).
    pub fn rate_limit(&self) -> Option<outbox::RateLimit> {
        match self {
            Channel::Webhook(c) => c.rate_limit(),
            Channel::Wecom(c) => c.rate_limit(),
            Channel::Dingtalk(c) => c.rate_limit(),
            Channel::Feishu(c) => c.rate_limit(),
            Channel::Sms(c) => c.rate_limit(),
        }
    }

    /// The configuration's `kind`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Webhook(_) => "webhook",
            Channel::Wecom(_) => "wecom",
            Channel::Dingtalk(_) => "dingtalk",
            Channel::Feishu(_) => "feishu",
            Channel::Sms(_) => "sms",
        }
    }
}

impl Notifier for Channel {
    async fn send(&self, msg: &Message) -> Result<(), SendError> {
        match self {
            Channel::Webhook(c) => c.send(msg).await,
            Channel::Wecom(c) => c.send(msg).await,
            Channel::Dingtalk(c) => c.send(msg).await,
            Channel::Feishu(c) => c.send(msg).await,
            Channel::Sms(c) => c.send(msg).await,
        }
    }
}

/// Builds every configured channel, keyed by its name (the target names the outbox delivers
/// to). Names must be usable as metric labels: `A-Z a-z 0-9 . _ -`.
pub fn build_channels(
    configs: &BTreeMap<String, ChannelConfig>,
) -> Result<HashMap<String, Channel>, ConfigError> {
    build_channels_with_env(configs, &|name| std::env::var(name).ok())
}

/// [`build_channels`] with environment variables looked up through `env` (tests).
pub fn build_channels_with_env(
    configs: &BTreeMap<String, ChannelConfig>,
    env: &secret::Env<'_>,
) -> Result<HashMap<String, Channel>, ConfigError> {
    configs
        .iter()
        .map(|(name, cfg)| {
            firegrid_protocol::check_id(name)
                .map_err(|e| ConfigError::new(name, format!("bad channel name: {e}")))?;
            let channel = Channel::build_with_env(cfg, env).map_err(|e| e.for_channel(name))?;
            Ok((name.clone(), channel))
        })
        .collect()
}

/// The wall clock as Unix ms: outbox times and signatures are wall-clock times, because they
/// outlive the process and are checked by other machines.
pub(crate) use firegrid_base::clock::wall_ms as unix_ms;
