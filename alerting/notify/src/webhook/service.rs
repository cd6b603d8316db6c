//! The webhook channel.

use super::config::WebhookConfig;
use super::request;
use crate::outbox::{RateLimit, limit::checked};
use crate::secret::{self, Env};
use crate::transport::{self, exchange};
use crate::{ConfigError, Message, Notifier, Secret, SendError, unix_ms};

/// A configured webhook.
#[derive(Debug, Clone)]
pub struct Webhook {
    client: reqwest::Client,
    url: String,
    headers: Vec<(String, String)>,
    secret: Option<Secret>,
    rate_limit: Option<RateLimit>,
}

impl Webhook {
    /// Checks `cfg` and builds the channel, reading secrets from `env`.
    pub fn new(cfg: &WebhookConfig, env: &Env<'_>) -> Result<Webhook, ConfigError> {
        transport::parse_url(&cfg.url)?;
        Ok(Webhook {
            client: transport::client(cfg.timeout)?,
            url: cfg.url.clone(),
            headers: secret::headers(&cfg.headers, &cfg.headers_env, env)?,
            secret: Secret::resolve(cfg.secret.as_ref(), cfg.secret_env.as_deref(), env)?,
            rate_limit: checked(cfg.rate_limit)?,
        })
    }
}

impl Webhook {
    /// The configured rate limit.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit
    }
}

impl Notifier for Webhook {
    async fn send(&self, msg: &Message) -> Result<(), SendError> {
        let request = request::request(&self.url, &self.headers, self.secret.as_ref(), msg, unix_ms() / 1000);
        request::judge(&exchange(&self.client, request).await?)
    }
}
