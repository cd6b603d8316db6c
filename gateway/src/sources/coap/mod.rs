//! NB-IoT detectors over CoAP (RFC 7252 over UDP): today, their firmware transfers.
//!
//! An NB-IoT detector's radio sleeps between its own transmissions (power saving mode), so
//! the gateway cannot push a command to it as it publishes to a powered detector's MQTT
//! subscription: the device asks, and the answer carries the command. The device posts each
//! signed `fw_status` uplink, exactly as it would publish it, as a confirmable CoAP `POST` to
//! the Uri-Path of its MQTT topic (`fg/v1/{village}/{device}/up/fw_status`); the gateway
//! judges it as it judges every uplink ([`crate::ingest::Ingest::process`]: its tag, the
//! replay window, the admission budget), hands it to the firmware rollout, and answers in the
//! piggybacked response, 2.04 Changed, with the rollout's next command for that device (an
//! `fw_offer`, the `fw_chunk` at the offset the status named, `fw_commit`, `fw_confirm`),
//! signed for the device as every downlink is, or with an empty payload when it has none.
//!
//! **The transfer is block-wise and resumable at the application layer**, not with RFC
//! 7959's Block2 option: each block is a signed `fw_chunk` of at most 384 bytes that fits one
//! datagram, and the device's own status names the next offset it needs, so a device that
//! slept, lost its power or lost a datagram asks again from where its flash stands. Block2
//! would carry the bare image in blocks that nobody signed, so anyone on the path could write
//! into a slot (the SHA-256 check at the commit would catch it, after the flash wear and the
//! airtime); here, as over MQTT, nobody but the gateway can.
//!
//! - [`exchange`]: the pure part: parsing a datagram into a request or a refusal, building
//!   the answer, and the table that answers a retransmitted request again from memory (RFC
//!   7252 §4.5), so a lost acknowledgement costs one datagram, not a replay refusal.
//! - [`routes`]: the devices reached over CoAP and the command waiting for each; the
//!   firmware driver leaves its commands there instead of publishing them.
//! - [`server`]: the socket and the wait for each answer.
//!
//! Hostile datagrams are refused and counted in `rejected` by reason (`coap_malformed`,
//! `coap_method`, `coap_option`, `coap_path`, `coap_kind`, `oversized`, `coap_busy` past 8,192
//! requests in flight, and ingest's own reasons for a bad tag or a replay), logged
//! rate-limited. A refusal is never larger than the request (no payload, or a reset of four
//! bytes), so the endpoint cannot amplify a spoofed flood; only an authenticated, fresh
//! status earns a command.

pub mod exchange;
pub mod routes;
pub mod server;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// The CoAP endpoint for NB-IoT detectors (`[coap]`). Absent: no UDP port is opened.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CoapConfig {
    /// The UDP address it listens on; CoAP's port is 5683 (RFC 7252 §6.1).
    pub listen: SocketAddr,
    /// How long a request waits for the device's next command before it is answered
    /// without one. Under the device's first retransmission timeout (RFC 7252's ACK_TIMEOUT,
    /// 2 s by default), so a wait does not cost a retransmission; long enough for a chunk
    /// held back by the firmware pacing (`[admission] firmware_rate_per_s`).
    #[serde(default = "default_answer_wait", with = "humantime_serde")]
    pub answer_wait: Duration,
}

fn default_answer_wait() -> Duration {
    Duration::from_millis(1500)
}
