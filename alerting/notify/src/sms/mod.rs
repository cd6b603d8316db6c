//! SMS or voice gateway over HTTP, by template: whatever a provider's HTTP API looks like
//! (JSON, form or plain body; numbers in the query or the body; one number or a list), it is
//! described in the configuration rather than coded here.
//!
//! - [`config`] holds [`SmsConfig`].
//! - [`template`]: placeholders (`{phone}`, `{title}`, ...) and their escaping, as plain
//!   functions.
//! - [`request`]: the requests for a message and the success check of a reply.
//! - [`service`]: [`Sms`], the channel.

pub mod config;
pub mod request;
pub mod service;
pub mod template;
#[cfg(test)]
mod tests;

pub use config::{BodyFormat, PhoneBatch, SmsConfig};
pub use service::Sms;
