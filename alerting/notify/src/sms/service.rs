//! The SMS or voice gateway channel.

use std::sync::Arc;

use super::config::SmsConfig;
use super::request::RequestTemplate;
use crate::outbox::{RateLimit, limit::checked};
use crate::secret::Env;
use crate::transport::{self, exchange};
use crate::{ConfigError, Message, Notifier, SendError};

/// A configured SMS or voice gateway.
#[derive(Debug, Clone)]
pub struct Sms {
    client: reqwest::Client,
    template: Arc<RequestTemplate>,
    rate_limit: Option<RateLimit>,
}

impl Sms {
    /// Checks `cfg` and builds the channel, reading secrets from `env`.
    pub fn new(cfg: &SmsConfig, env: &Env<'_>) -> Result<Sms, ConfigError> {
        Ok(Sms {
            client: transport::client(cfg.timeout)?,
            template: Arc::new(RequestTemplate::new(cfg, env)?),
            rate_limit: checked(cfg.rate_limit)?,
        })
    }
}

impl Sms {
    /// The configured rate limit.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit
    }
}

impl Notifier for Sms {
    /// Sends to every number at once. The delivery succeeds only when every request does; when
    /// some fail, a retryable error wins over a permanent one so the outbox tries again, which
    /// resends to the numbers that did get it: a second SMS about a fire is the lesser harm.
    async fn send(&self, msg: &Message) -> Result<(), SendError> {
        let requests = self.template.requests(msg)?;
        let total = requests.len();
        let mut sends = tokio::task::JoinSet::new();
        for request in requests {
            let client = self.client.clone();
            let template = self.template.clone();
            sends.spawn(async move { template.judge(&exchange(&client, request).await?) });
        }
        let mut failures = Vec::new();
        while let Some(joined) = sends.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(e),
                Err(e) => failures.push(SendError::Network(format!("send task failed: {e}"))),
            }
        }
        if failures.is_empty() {
            return Ok(());
        }
        if failures.len() < total {
            tracing::warn!(failed = failures.len(), total, "Some SMS requests of a notification failed.");
        }
        let first_retryable = failures.iter().position(SendError::is_retryable).unwrap_or(0);
        Err(failures.swap_remove(first_retryable))
    }
}
