//! The webhook request and its signature, as plain functions.
//!
//! The signed string is `"{timestamp}.{body}"`: binding the timestamp into the signature lets
//! a receiver reject replays older than a few minutes, the same scheme Stripe and Slack use.

use crate::sign::{hmac_sha256, verify_hmac_sha256};
use crate::transport::{Method, Reply, Request, check_status};
use crate::{Message, Secret, SendError};

/// Header carrying the Unix time in seconds the request was signed at.
pub const TIMESTAMP_HEADER: &str = "X-Firegrid-Timestamp";
/// Header carrying `sha256=<lowercase hex HMAC-SHA256 of "{timestamp}.{body}">`.
pub const SIGNATURE_HEADER: &str = "X-Firegrid-Signature";

/// Header carrying the delivery's idempotency key, `{case_id}-{notification_id}`: the same
/// for every attempt at one notification, from whichever gateway of the village sends it
/// (the engine numbers notifications deterministically, and a standby that takes over
/// replays the same numbers). Delivery is at least once: a page sent by an active gateway
/// that died or froze before it recorded the delivery is sent again by the standby, and a
/// receiver that keeps the keys it has seen for a day drops the second copy (the field's name
/// from the IETF draft "The Idempotency-Key HTTP Header Field").
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// The idempotency key of `msg`'s deliveries ([`IDEMPOTENCY_HEADER`]).
pub fn idempotency_key(msg: &Message) -> String {
    format!("{}-{}", msg.case_id, msg.notification_id)
}

/// The bytes that are signed.
fn signed_payload(timestamp_s: u64, body: &[u8]) -> Vec<u8> {
    let mut payload = format!("{timestamp_s}.").into_bytes();
    payload.extend_from_slice(body);
    payload
}

/// The `X-Firegrid-Signature` value of `body` signed at `timestamp_s`.
pub fn signature(secret: &[u8], timestamp_s: u64, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac_sha256(secret, &signed_payload(timestamp_s, body))))
}

/// Whether `signature` (the header's value) signs `body` at `timestamp` (the timestamp
/// header's value) under `secret`. Constant-time; a receiver should also reject timestamps
/// far from its own clock.
pub fn verify(secret: &[u8], timestamp: &str, body: &[u8], signature: &str) -> bool {
    let (Ok(timestamp_s), Some(tag)) =
        (timestamp.parse::<u64>(), signature.strip_prefix("sha256=").and_then(|h| hex::decode(h).ok()))
    else {
        return false;
    };
    verify_hmac_sha256(secret, &signed_payload(timestamp_s, body), &tag)
}

/// The request delivering `msg` at `now_s`: the message as JSON, the extra headers, the
/// timestamp, and the signature when there is a secret.
pub fn request(
    url: &str,
    headers: &[(String, String)],
    secret: Option<&Secret>,
    msg: &Message,
    now_s: u64,
) -> Request {
    let body = serde_json::to_vec(msg).expect("a Message always serialises");
    let mut all = vec![
        ("Content-Type".to_owned(), "application/json; charset=utf-8".to_owned()),
        (TIMESTAMP_HEADER.to_owned(), now_s.to_string()),
        (IDEMPOTENCY_HEADER.to_owned(), idempotency_key(msg)),
    ];
    if let Some(secret) = secret {
        all.push((SIGNATURE_HEADER.to_owned(), signature(secret.expose().as_bytes(), now_s, &body)));
    }
    all.extend(headers.iter().cloned());
    Request { method: Method::Post, url: url.to_owned(), headers: all, body }
}

/// Any 2xx is success; the body is not read.
pub fn judge(reply: &Reply) -> Result<(), SendError> {
    check_status(reply)
}
