//! Generic JSON webhook: the [`Message`](super::Message) as JSON, POSTed to any endpoint,
//! signed with HMAC-SHA256 so the receiver can check it came from this gateway.
//!
//! - [`config`] holds [`WebhookConfig`].
//! - [`request`]: the request and its signature, as plain functions; [`request::verify`] for
//!   receivers written in Rust.
//! - [`service`]: [`Webhook`], the channel.

pub mod config;
pub mod request;
pub mod service;
#[cfg(test)]
mod tests;

pub use config::WebhookConfig;
pub use service::Webhook;
