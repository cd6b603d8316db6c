//! Secrets in channel configurations: given inline or read from an environment variable at
//! start, and never printed.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use super::error::ConfigError;

/// Looks up an environment variable (a function so tests need not touch the process
/// environment, which is `unsafe` to change under edition 2024).
pub type Env<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// A signing key, token or password. Its `Debug` shows no content, so configurations and
/// channels can be logged.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for signing.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret of a channel configured with `secret` and/or `secret_env`: at most one may
    /// be given; the variable must be set and non-empty.
    pub fn resolve(
        inline: Option<&Secret>,
        env_name: Option<&str>,
        env: &Env<'_>,
    ) -> Result<Option<Secret>, ConfigError> {
        match (inline, env_name) {
            (Some(_), Some(_)) => Err(ConfigError::msg("give either `secret` or `secret_env`, not both")),
            (Some(secret), None) if secret.0.is_empty() => Err(ConfigError::msg("`secret` is empty")),
            (Some(secret), None) => Ok(Some(secret.clone())),
            (None, Some(name)) => match env(name) {
                Some(value) if !value.is_empty() => Ok(Some(Secret(value))),
                _ => Err(ConfigError::msg(format!("environment variable {name} (secret_env) is not set"))),
            },
            (None, None) => Ok(None),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Headers from `headers` and `headers_env` (header name → variable name) together; a header
/// given in both is an error, so no one wonders which value is sent.
pub fn headers(
    plain: &BTreeMap<String, String>,
    from_env: &BTreeMap<String, String>,
    env: &Env<'_>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out: Vec<(String, String)> = plain.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for (header, var) in from_env {
        if plain.keys().any(|k| k.eq_ignore_ascii_case(header)) {
            return Err(ConfigError::msg(format!(
                "header {header:?} is in both `headers` and `headers_env`"
            )));
        }
        let value = env(var).ok_or_else(|| {
            ConfigError::msg(format!("environment variable {var} (headers_env.{header}) is not set"))
        })?;
        out.push((header.clone(), value));
    }
    for (name, value) in &out {
        reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ConfigError::msg(format!("{name:?} is not a valid header name")))?;
        reqwest::header::HeaderValue::from_str(value)
            .map_err(|_| ConfigError::msg(format!("the value of header {name:?} is not valid in HTTP")))?;
    }
    Ok(out)
}
