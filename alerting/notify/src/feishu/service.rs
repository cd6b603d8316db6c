//! The Feishu bot channel.

use super::config::FeishuConfig;
use super::request;
use crate::outbox::{RateLimit, limit::checked};
use crate::secret::Env;
use crate::transport::{self, exchange};
use crate::{ConfigError, Message, Notifier, Secret, SendError, unix_ms};

/// A configured Feishu/Lark custom bot.
#[derive(Debug, Clone)]
pub struct Feishu {
    client: reqwest::Client,
    url: String,
    secret: Option<Secret>,
    rate_limit: Option<RateLimit>,
}

impl Feishu {
    /// Checks `cfg` and builds the channel, reading the secret from `env` if so configured.
    pub fn new(cfg: &FeishuConfig, env: &Env<'_>) -> Result<Feishu, ConfigError> {
        transport::parse_url(&cfg.url)?;
        Ok(Feishu {
            client: transport::client(cfg.timeout)?,
            url: cfg.url.clone(),
            secret: Secret::resolve(cfg.secret.as_ref(), cfg.secret_env.as_deref(), env)?,
            rate_limit: checked(cfg.rate_limit)?,
        })
    }
}

impl Feishu {
    /// The configured rate limit.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit
    }
}

impl Notifier for Feishu {
    async fn send(&self, msg: &Message) -> Result<(), SendError> {
        let request = request::request(&self.url, self.secret.as_ref(), msg, unix_ms() / 1000);
        request::judge(&exchange(&self.client, request).await?)
    }
}
