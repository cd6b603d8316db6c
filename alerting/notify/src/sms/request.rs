//! The requests for a message and the success check of a reply, as plain functions over a
//! checked [`RequestTemplate`].

use super::config::{BodyFormat, PhoneBatch, SmsConfig};
use super::template::{self, Escape};
use crate::error::excerpt;
use crate::secret::Env;
use crate::transport::{Method, Reply, Request, check_status};
use crate::{ConfigError, Message, Secret, SendError};

/// A gateway's request shape, checked at start.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<(String, Escape)>,
    phones: Vec<String>,
    batch: PhoneBatch,
    separator: String,
    secret: Option<Secret>,
    /// JSON pointer and expected value.
    success: Option<(String, String)>,
}

impl RequestTemplate {
    /// Checks `cfg`: known placeholders only, `{secret}` only with a secret, no body on `GET`,
    /// at least one number, and a URL that stays valid once filled in.
    pub fn new(cfg: &SmsConfig, env: &Env<'_>) -> Result<RequestTemplate, ConfigError> {
        if cfg.phones.is_empty() || cfg.phones.iter().any(|p| p.trim().is_empty()) {
            return Err(ConfigError::msg("`phones` must list at least one number, none empty"));
        }
        if cfg.method == Method::Get && cfg.body.is_some() {
            return Err(ConfigError::msg("a GET request cannot carry `body`; put the placeholders in `url`"));
        }
        let secret = Secret::resolve(cfg.secret.as_ref(), cfg.secret_env.as_deref(), env)?;
        let mut used = template::placeholders(&cfg.url).map_err(|e| ConfigError::msg(format!("url: {e}")))?;
        if let Some(body) = &cfg.body {
            used.extend(template::placeholders(body).map_err(|e| ConfigError::msg(format!("body: {e}")))?);
        }
        if used.contains(&"secret") && secret.is_none() {
            return Err(ConfigError::msg(
                "a template uses {secret} but neither `secret` nor `secret_env` is set",
            ));
        }
        let success = match (&cfg.success_field, &cfg.success_value) {
            (Some(field), Some(value)) => {
                let pointer = if field.starts_with('/') { field.clone() } else { format!("/{field}") };
                Some((pointer, value.clone()))
            }
            (None, None) => None,
            _ => return Err(ConfigError::msg("give both `success_field` and `success_value`, or neither")),
        };
        let escape = match cfg.body_format {
            BodyFormat::Json => Escape::Json,
            BodyFormat::Form => Escape::Percent,
            BodyFormat::Raw => Escape::Raw,
        };
        let content_type = cfg.content_type.clone().unwrap_or_else(|| {
            match cfg.body_format {
                BodyFormat::Json => "application/json; charset=utf-8",
                BodyFormat::Form => "application/x-www-form-urlencoded; charset=utf-8",
                BodyFormat::Raw => "text/plain; charset=utf-8",
            }
            .to_owned()
        });
        let mut headers = crate::secret::headers(&cfg.headers, &cfg.headers_env, env)?;
        if cfg.body.is_some() && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            headers.insert(0, ("Content-Type".to_owned(), content_type));
        }
        let shape = RequestTemplate {
            method: cfg.method,
            url: cfg.url.clone(),
            headers,
            body: cfg.body.clone().map(|b| (b, escape)),
            phones: cfg.phones.clone(),
            batch: cfg.batch,
            separator: cfg.phone_separator.clone(),
            secret,
            success,
        };
        // Fill the URL once with a realistic message now, so a template that cannot yield a
        // valid URL fails the start rather than the first alarm.
        let sample = Message {
            notification_id: 1,
            case_id: 1,
            severity: "fire".to_owned(),
            level: "grid".to_owned(),
            desk: "grid:G1".to_owned(),
            title: "测试 test".to_owned(),
            text: "测试 test".to_owned(),
            url: Some("https://console.example/cases/1".to_owned()),
            at_ms: 0,
            reason: "opened".to_owned(),
            local_at: None,
        };
        shape.requests(&sample).map_err(|e| ConfigError::msg(e.to_string()))?;
        Ok(shape)
    }

    /// The requests delivering `msg`: one per number, or one for all (`batch = "joined"`).
    pub fn requests(&self, msg: &Message) -> Result<Vec<Request>, SendError> {
        let phones = match self.batch {
            PhoneBatch::Each => self.phones.clone(),
            PhoneBatch::Joined => vec![self.phones.join(&self.separator)],
        };
        phones.iter().map(|phone| self.request(msg, phone)).collect()
    }

    fn request(&self, msg: &Message, phone: &str) -> Result<Request, SendError> {
        let values = template::values(msg, phone, self.secret.as_ref().map(Secret::expose));
        let url = template::render(&self.url, &values, Escape::Percent);
        crate::transport::parse_url(&url)
            .map_err(|e| SendError::Config(format!("url template gives {e}")))?;
        let body = match &self.body {
            Some((body, escape)) => template::render(body, &values, *escape).into_bytes(),
            None => Vec::new(),
        };
        Ok(Request { method: self.method, url, headers: self.headers.clone(), body })
    }

    /// Success: a 2xx and, when configured, the success field holding the success value. A
    /// refusal is retried: a gateway's codes are unknown here, and for a fire alarm another
    /// attempt costs little while a wrongly dropped SMS costs a lot.
    pub fn judge(&self, reply: &Reply) -> Result<(), SendError> {
        check_status(reply)?;
        let Some((pointer, expected)) = &self.success else {
            return Ok(());
        };
        let json: serde_json::Value = serde_json::from_slice(&reply.body)
            .map_err(|e| SendError::BadReply(format!("reply is not JSON ({e}): {}", excerpt(&reply.body))))?;
        let actual = match json.pointer(pointer) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => {
                return Err(SendError::BadReply(format!("reply has no {pointer}: {}", excerpt(&reply.body))));
            }
        };
        if actual == *expected {
            Ok(())
        } else {
            Err(SendError::Refused {
                platform: "sms",
                code: actual,
                message: excerpt(&reply.body),
                retryable: true,
            })
        }
    }
}
