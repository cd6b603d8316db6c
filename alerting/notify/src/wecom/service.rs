//! The WeCom robot channel.

use super::config::{WecomConfig, WecomFormat};
use super::request;
use crate::outbox::{RateLimit, limit::checked};
use crate::transport::{self, exchange};
use crate::{ConfigError, Message, Notifier, SendError};

/// A configured WeCom group robot.
#[derive(Debug, Clone)]
pub struct Wecom {
    client: reqwest::Client,
    url: String,
    format: WecomFormat,
    mentioned_mobiles: Vec<String>,
    rate_limit: Option<RateLimit>,
}

impl Wecom {
    /// Checks `cfg` and builds the channel.
    pub fn new(cfg: &WecomConfig) -> Result<Wecom, ConfigError> {
        let url = transport::parse_url(&cfg.url)?;
        if !url.query_pairs().any(|(k, v)| k == "key" && !v.is_empty()) {
            return Err(ConfigError::msg(format!(
                "url {:?} has no `key=`: copy the whole webhook address from the robot's settings",
                cfg.url
            )));
        }
        if !cfg.mentioned_mobiles.is_empty() && cfg.format == WecomFormat::Markdown {
            return Err(ConfigError::msg(
                "WeCom markdown messages cannot mention members; \
                 use format = \"text\" with mentioned_mobiles",
            ));
        }
        Ok(Wecom {
            client: transport::client(cfg.timeout)?,
            url: cfg.url.clone(),
            format: cfg.format,
            mentioned_mobiles: cfg.mentioned_mobiles.clone(),
            rate_limit: checked(cfg.rate_limit)?,
        })
    }
}

impl Wecom {
    /// The configured rate limit.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit
    }
}

impl Notifier for Wecom {
    async fn send(&self, msg: &Message) -> Result<(), SendError> {
        let request = request::request(&self.url, self.format, &self.mentioned_mobiles, msg);
        request::judge(&exchange(&self.client, request).await?)
    }
}
