//! The DingTalk robot channel.

use super::config::DingtalkConfig;
use super::request;
use crate::outbox::{RateLimit, limit::checked};
use crate::secret::Env;
use crate::transport::{self, exchange};
use crate::{ConfigError, Message, Notifier, Secret, SendError, unix_ms};

/// A configured DingTalk custom robot.
#[derive(Debug, Clone)]
pub struct Dingtalk {
    client: reqwest::Client,
    url: reqwest::Url,
    secret: Option<Secret>,
    at_mobiles: Vec<String>,
    at_all: bool,
    rate_limit: Option<RateLimit>,
}

impl Dingtalk {
    /// Checks `cfg` and builds the channel, reading the secret from `env` if so configured.
    pub fn new(cfg: &DingtalkConfig, env: &Env<'_>) -> Result<Dingtalk, ConfigError> {
        let url = transport::parse_url(&cfg.url)?;
        if url.query_pairs().any(|(k, _)| k == "timestamp" || k == "sign") {
            return Err(ConfigError::msg(
                "url must not contain `timestamp` or `sign`: they are computed per request from the secret",
            ));
        }
        Ok(Dingtalk {
            client: transport::client(cfg.timeout)?,
            url,
            secret: Secret::resolve(cfg.secret.as_ref(), cfg.secret_env.as_deref(), env)?,
            at_mobiles: cfg.at_mobiles.clone(),
            at_all: cfg.at_all,
            rate_limit: checked(cfg.rate_limit)?,
        })
    }
}

impl Dingtalk {
    /// The configured rate limit.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit
    }
}

impl Notifier for Dingtalk {
    async fn send(&self, msg: &Message) -> Result<(), SendError> {
        let request =
            request::request(&self.url, self.secret.as_ref(), &self.at_mobiles, self.at_all, msg, unix_ms());
        request::judge(&exchange(&self.client, request).await?)
    }
}
