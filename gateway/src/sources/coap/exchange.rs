//! The pure part: what one datagram asks for, and the datagram that answers it (RFC 7252),
//! plus the table of exchanges already answered, so that a retransmitted request is answered
//! again with the same bytes instead of being ingested twice (RFC 7252 §4.5). No socket, no
//! clock: the caller passes the time.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use firegrid_protocol::{Topic, TopicKind, UplinkKind};

/// The uplink kinds a device may post over CoAP. Only the firmware transfer's status today:
/// its answer is the device's next firmware command, which the response carries. An alarm
/// needs its `down/ack`, a sounder command its own downlink; they wait for the NB-IoT device
/// path to carry every downlink (README, "NB-IoT detectors").
pub const SERVED: &[UplinkKind] = &[UplinkKind::FwStatus];

/// What became of a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not answered at all: not a CoAP 1 message, or an acknowledgement or reset from a
    /// client (the gateway never sends a confirmable message, so there is nothing to match
    /// them to). `reason` is counted.
    Ignore {
        /// Why, for the metrics.
        reason: &'static str,
    },
    /// Answered at once: a refusal, or the reset that answers a ping.
    Answer {
        /// The datagram to send back.
        reply: Vec<u8>,
        /// Why it was refused, for the metrics; `None` for a ping.
        refused: Option<&'static str>,
    },
    /// An uplink to ingest: `topic` and `payload` as an MQTT message would carry them, and
    /// how to answer once it is judged.
    Uplink {
        /// The topic its Uri-Path names (`fg/v1/{village}/{device}/up/{kind}`).
        topic: String,
        /// The device that topic names.
        device: String,
        /// The message.
        payload: Vec<u8>,
        /// Builds the answer.
        reply: Reply,
    },
}

/// How to answer one request: a piggybacked response in the acknowledgement of a
/// confirmable request, a non-confirmable response to a non-confirmable one (RFC 7252 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    confirmable: bool,
    message_id: u16,
    token: Vec<u8>,
}

impl Reply {
    /// The response datagram: `code` and `payload`. `own_id` is the message ID a
    /// non-confirmable response needs (its own, not the request's); an acknowledgement
    /// carries the request's.
    pub fn build(&self, code: ResponseType, payload: &[u8], own_id: u16) -> Vec<u8> {
        let mut p = Packet::new();
        if self.confirmable {
            p.header.set_type(MessageType::Acknowledgement);
            p.header.message_id = self.message_id;
        } else {
            p.header.set_type(MessageType::NonConfirmable);
            p.header.message_id = own_id;
        }
        p.header.code = MessageClass::Response(code);
        p.set_token(self.token.clone());
        p.payload = payload.to_vec();
        // A token of at most 8 bytes, no options and a payload under `MAX_PAYLOAD` always fit.
        p.to_bytes().expect("a response always encodes")
    }

    /// Whether the request was confirmable (its retransmissions must be answered again).
    pub fn confirmable(&self) -> bool {
        self.confirmable
    }
}

/// Options the gateway understands. A request carrying any other critical option (an odd
/// number: If-Match, OSCORE, Block1/2, Proxy-Uri, ...) is refused 4.02 Bad Option, as RFC 7252
/// §5.4.1 requires; elective ones are ignored.
fn understood(number: u16) -> bool {
    let known = [CoapOption::UriHost, CoapOption::UriPort, CoapOption::UriPath, CoapOption::Accept];
    number.is_multiple_of(2) || known.iter().any(|o| u16::from(*o) == number)
}

/// Reads one datagram.
pub fn parse(datagram: &[u8]) -> Parsed {
    // The fixed header first (RFC 7252 §3): version 1, and the type, to know whether a
    // malformed message may be answered with a reset.
    let Some(&first) = datagram.first() else { return Parsed::Ignore { reason: "coap_malformed" } };
    if first >> 6 != 1 || datagram.len() < 4 {
        return Parsed::Ignore { reason: "coap_malformed" };
    }
    let message_id = u16::from_be_bytes([datagram[2], datagram[3]]);
    let kind = (first >> 4) & 0b11;
    let packet = match Packet::from_bytes(datagram) {
        Ok(p) => p,
        // A confirmable or non-confirmable message that cannot be read is rejected with a
        // reset (§4.2, §4.3): four bytes, no more than the request, so no amplification.
        Err(_) if kind <= 1 => {
            return Parsed::Answer { reply: reset(message_id), refused: Some("coap_malformed") };
        }
        Err(_) => return Parsed::Ignore { reason: "coap_malformed" },
    };
    let confirmable = match packet.header.get_type() {
        MessageType::Confirmable => true,
        MessageType::NonConfirmable => false,
        MessageType::Acknowledgement | MessageType::Reset => {
            return Parsed::Ignore { reason: "coap_unsolicited" };
        }
    };
    let reply = Reply { confirmable, message_id, token: packet.get_token().to_vec() };
    let refuse =
        |code, reason| Parsed::Answer { reply: reply.build(code, &[], message_id), refused: Some(reason) };
    match packet.header.code {
        // A ping: an empty confirmable message, answered with a reset (§4.3).
        MessageClass::Empty if confirmable => {
            return Parsed::Answer { reply: reset(message_id), refused: None };
        }
        MessageClass::Request(RequestType::Post) => {}
        MessageClass::Request(_) => return refuse(ResponseType::MethodNotAllowed, "coap_method"),
        _ => return Parsed::Answer { reply: reset(message_id), refused: Some("coap_malformed") },
    }
    if let Some((_, _)) = packet.options().find(|(n, _)| !understood(**n)) {
        return refuse(ResponseType::BadOption, "coap_option");
    }
    let path: Vec<String> = packet
        .get_option(CoapOption::UriPath)
        .map(|segments| segments.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect())
        .unwrap_or_default();
    let topic = path.join("/");
    let device = match Topic::parse(&topic) {
        Ok(Topic { kind: TopicKind::Up(kind), device, .. }) if SERVED.contains(&kind) => device,
        Ok(_) => return refuse(ResponseType::NotFound, "coap_kind"),
        Err(_) => return refuse(ResponseType::NotFound, "coap_path"),
    };
    if packet.payload.len() > firegrid_protocol::MAX_PAYLOAD {
        return refuse(ResponseType::RequestEntityTooLarge, "oversized");
    }
    Parsed::Uplink { topic, device: device.as_str().to_owned(), payload: packet.payload, reply }
}

/// An empty reset for message `id`.
fn reset(id: u16) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Reset);
    p.header.message_id = id;
    p.header.code = MessageClass::Empty;
    p.to_bytes().expect("an empty message encodes")
}

/// How long an exchange is remembered: RFC 7252's EXCHANGE_LIFETIME with its default
/// transmission parameters (§4.8.2: 247 s), the longest a client may still retransmit.
pub const EXCHANGE_LIFETIME_MS: u64 = 247_000;

/// Where a request stands in the table of exchanges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// First time: judge it.
    New,
    /// A retransmission of one still being answered: drop it, the answer is on its way.
    InProgress,
    /// A retransmission of one answered: send the same answer again.
    Answered(Vec<u8>),
}

/// The confirmable requests of the last [`EXCHANGE_LIFETIME_MS`], by peer and message ID,
/// with their answers; at most `capacity` of them (the oldest go first: a flood of fresh
/// message IDs evicts exchanges, it does not grow the table).
#[derive(Debug)]
pub struct Exchanges {
    answers: HashMap<(SocketAddr, u16), Option<Vec<u8>>>,
    order: VecDeque<((SocketAddr, u16), u64)>,
    capacity: usize,
}

impl Exchanges {
    /// A table of at most `capacity` exchanges.
    pub fn new(capacity: usize) -> Self {
        Exchanges { answers: HashMap::new(), order: VecDeque::new(), capacity: capacity.max(1) }
    }

    /// Looks request `message_id` of `peer` up at `now_ms`, and notes it if it is new.
    pub fn check(&mut self, peer: SocketAddr, message_id: u16, now_ms: u64) -> Seen {
        while let Some(&(key, at)) = self.order.front() {
            if now_ms.saturating_sub(at) < EXCHANGE_LIFETIME_MS && self.order.len() < self.capacity {
                break;
            }
            self.order.pop_front();
            self.answers.remove(&key);
        }
        let key = (peer, message_id);
        match self.answers.get(&key) {
            Some(Some(answer)) => Seen::Answered(answer.clone()),
            Some(None) => Seen::InProgress,
            None => {
                self.answers.insert(key, None);
                self.order.push_back((key, now_ms));
                Seen::New
            }
        }
    }

    /// Records the answer to request `message_id` of `peer`.
    pub fn answered(&mut self, peer: SocketAddr, message_id: u16, answer: &[u8]) {
        if let Some(slot) = self.answers.get_mut(&(peer, message_id)) {
            *slot = Some(answer.to_vec());
        }
    }

    /// Exchanges remembered.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }
}

/// The message ID of a datagram that [`parse`] read (bytes 2 and 3 of its header).
pub fn message_id(datagram: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*datagram.get(2)?, *datagram.get(3)?]))
}
