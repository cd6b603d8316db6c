//! What the alarm loop's crates and the gateway stand on, and nothing that knows devices:
//! the two clocks ([`clock::wall_ms`], [`clock::DeadlineClock`]), exponential backoff with
//! jitter ([`retry::backoff`]), the stores' write health ([`durability::StoreHealth`]), the
//! TLS settings of the links that dial out ([`tls::ClientTls`]) and the field's words in
//! Chinese and English ([`glossary::Glossary`]).

pub mod clock;
pub mod durability;
pub mod glossary;
pub mod retry;
pub mod tls;
