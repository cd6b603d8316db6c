//! The datagrams here are written out byte by byte from RFC 7252 §3 (header: version 1,
//! type, token length; code class.detail; message ID; token; options as delta/length nibbles;
//! 0xFF before the payload), not built with the CoAP library the endpoint uses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use coap_lite::ResponseType;

use super::exchange::{EXCHANGE_LIFETIME_MS, Exchanges, Parsed, Seen, parse};
use super::routes::Routes;

/// The Uri-Path options of `segments`: the first with delta 11 (Uri-Path), the rest delta 0.
fn path(segments: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, s) in segments.iter().enumerate() {
        assert!(s.len() < 13, "short segments only: one nibble of length");
        let delta = if i == 0 { 11u8 } else { 0 };
        out.push(delta << 4 | s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    }
    out
}

const STATUS: &[&str] = &["fg", "v1", "fuhai-1", "sd-0", "up", "fw_status"];

/// A request: `first` (version, type, token length 1), `code`, message ID 0x1234, token
/// 0xAB, `options`, and `payload` behind 0xFF when there is one.
fn request(first: u8, code: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut d = vec![first, code, 0x12, 0x34, 0xAB];
    d.extend_from_slice(options);
    if !payload.is_empty() {
        d.push(0xFF);
        d.extend_from_slice(payload);
    }
    d
}

const CON: u8 = 0x41; // version 1, confirmable, token length 1
const NON: u8 = 0x51; // version 1, non-confirmable, token length 1
const POST: u8 = 0x02;
const GET: u8 = 0x01;

fn refusal(d: &[u8]) -> (Vec<u8>, Option<&'static str>) {
    match parse(d) {
        Parsed::Answer { reply, refused } => (reply, refused),
        other => panic!("expected an answer, got {other:?}"),
    }
}

#[test]
fn a_confirmable_post_of_a_status_is_an_uplink_answered_in_a_piggybacked_acknowledgement() {
    let d = request(CON, POST, &path(STATUS), b"\x01\x02\x03");
    let Parsed::Uplink { topic, device, payload, reply } = parse(&d) else { panic!("an uplink") };
    assert_eq!(topic, "fg/v1/fuhai-1/sd-0/up/fw_status");
    assert_eq!(device, "sd-0");
    assert_eq!(payload, b"\x01\x02\x03");
    assert!(reply.confirmable());
    // ACK (type 2), same token, 2.04 Changed (0x44), the request's message ID.
    assert_eq!(
        reply.build(ResponseType::Changed, b"cmd", 7),
        [0x61, 0x44, 0x12, 0x34, 0xAB, 0xFF, b'c', b'm', b'd']
    );
    assert_eq!(reply.build(ResponseType::Changed, b"", 7), [0x61, 0x44, 0x12, 0x34, 0xAB]);
}

#[test]
fn a_non_confirmable_request_is_answered_non_confirmable_with_its_own_message_id() {
    let d = request(NON, POST, &path(STATUS), b"x");
    let Parsed::Uplink { reply, .. } = parse(&d) else { panic!("an uplink") };
    assert!(!reply.confirmable());
    assert_eq!(reply.build(ResponseType::Changed, b"", 0xBEEF), [0x51, 0x44, 0xBE, 0xEF, 0xAB]);
}

#[test]
fn a_ping_is_answered_with_a_reset() {
    // An empty confirmable message (code 0.00, no token).
    assert_eq!(refusal(&[0x40, 0x00, 0x12, 0x34]), (vec![0x70, 0x00, 0x12, 0x34], None));
}

#[test]
fn requests_the_endpoint_does_not_serve_are_refused_with_their_code_and_counted_by_reason() {
    let check = |d: Vec<u8>, code: u8, reason: &str| {
        let (reply, refused) = refusal(&d);
        assert_eq!(reply, [0x61, code, 0x12, 0x34, 0xAB], "{reason}");
        assert_eq!(refused, Some(reason));
    };
    check(request(CON, GET, &path(STATUS), b""), 0x85, "coap_method"); // 4.05
    // An alarm needs its `down/ack`, which this endpoint does not carry yet: refused, not lost
    // silently (the device keeps it and tries its other path).
    check(
        request(CON, POST, &path(&["fg", "v1", "fuhai-1", "sd-0", "up", "state"]), b"x"),
        0x84,
        "coap_kind",
    );
    check(
        request(CON, POST, &path(&["fg", "v1", "fuhai-1", "sd-0", "down", "fw_chunk"]), b"x"),
        0x84,
        "coap_kind",
    );
    check(request(CON, POST, &path(&["fg", "v1", "fuhai-1", "sd-0"]), b"x"), 0x84, "coap_path"); // 4.04
    check(request(CON, POST, &path(&["..", "etc"]), b"x"), 0x84, "coap_path");
    // If-Match (1) before the path: critical and not understood, 4.02.
    let mut options = vec![0x10];
    options.push((11 - 1) << 4 | 2);
    options.extend_from_slice(b"fg");
    check(request(CON, POST, &options, b"x"), 0x82, "coap_option");
    // Block2 (23) after the path (delta 23 − 11 = 12): critical, 4.02.
    let mut options = path(STATUS);
    options.extend_from_slice(&[0xC1, 0x06]);
    check(request(CON, POST, &options, b"x"), 0x82, "coap_option");
    check(request(CON, POST, &path(STATUS), &[0u8; firegrid_protocol::MAX_PAYLOAD + 1]), 0x8D, "oversized"); // 4.13
}

#[test]
fn an_elective_option_it_does_not_know_is_ignored() {
    // Size1 (60, even: elective) after the path: delta 60 − 11 = 49 = 13 + 36 (extended).
    let mut options = path(STATUS);
    options.extend_from_slice(&[0xD1, 36, 0x10]);
    assert!(matches!(parse(&request(CON, POST, &options, b"x")), Parsed::Uplink { .. }));
}

#[test]
fn what_is_not_a_request_is_not_answered_or_answered_with_a_reset() {
    let ignored = |d: &[u8]| match parse(d) {
        Parsed::Ignore { reason } => reason,
        other => panic!("expected it ignored, got {other:?}"),
    };
    assert_eq!(ignored(&[]), "coap_malformed");
    assert_eq!(ignored(&[0x81, 0x02, 0x12, 0x34, 0xAB]), "coap_malformed"); // version 2
    assert_eq!(ignored(&[0x40, 0x02]), "coap_malformed"); // shorter than a header
    assert_eq!(ignored(&[0x60, 0x44, 0x12, 0x34]), "coap_unsolicited"); // an ACK
    assert_eq!(ignored(&[0x70, 0x00, 0x12, 0x34]), "coap_unsolicited"); // a reset
    // A confirmable message whose option runs past its end: a reset, four bytes.
    assert_eq!(
        refusal(&request(CON, POST, &[0xB9, b'f'], b"")),
        (vec![0x70, 0x00, 0x12, 0x34], Some("coap_malformed"))
    );
    // A confirmable response from a "client": reset.
    assert_eq!(refusal(&[0x40, 0x44, 0x12, 0x34]).1, Some("coap_malformed"));
}

#[test]
fn no_refusal_is_larger_than_its_request() {
    let requests = [
        request(CON, GET, &path(STATUS), b""),
        request(CON, POST, &path(&["x"]), b""),
        request(CON, POST, &[0xB9, b'f'], b""),
        vec![0x40, 0x00, 0x12, 0x34],
    ];
    for d in requests {
        let (reply, _) = refusal(&d);
        assert!(reply.len() <= d.len(), "{} B answered with {} B", d.len(), reply.len());
    }
}

fn peer(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

#[test]
fn a_retransmission_is_answered_again_from_the_table_and_forgotten_after_the_exchange_lifetime() {
    let mut t = Exchanges::new(100);
    assert_eq!(t.check(peer(1), 7, 0), Seen::New);
    assert_eq!(t.check(peer(1), 7, 1_000), Seen::InProgress);
    // Another peer's message 7 is another exchange.
    assert_eq!(t.check(peer(2), 7, 1_000), Seen::New);
    t.answered(peer(1), 7, b"answer");
    assert_eq!(t.check(peer(1), 7, 2_000), Seen::Answered(b"answer".to_vec()));
    assert_eq!(t.check(peer(1), 7, EXCHANGE_LIFETIME_MS - 1), Seen::Answered(b"answer".to_vec()));
    assert_eq!(t.check(peer(1), 7, EXCHANGE_LIFETIME_MS), Seen::New, "forgotten after the lifetime");
}

#[test]
fn a_flood_of_fresh_message_ids_evicts_the_oldest_exchanges_instead_of_growing_the_table() {
    let mut t = Exchanges::new(3);
    for id in 0..10 {
        assert_eq!(t.check(peer(1), id, 0), Seen::New);
    }
    assert!(t.len() <= 3, "{}", t.len());
    assert_eq!(t.check(peer(1), 9, 0), Seen::InProgress, "the newest is kept");
}

#[tokio::test(start_paused = true)]
async fn a_command_for_a_device_never_heard_over_coap_goes_back_to_mqtt() {
    let routes = Routes::default();
    assert_eq!(routes.post("sd-0", b"chunk".to_vec()), Err(b"chunk".to_vec()));
    assert!(routes.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_answer_is_the_command_posted_after_the_request_and_the_newest_wins() {
    let routes = Arc::new(Routes::default());
    let ticket = routes.open("sd-0");
    let r = routes.clone();
    let posted = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        r.post("sd-0", b"chunk-0".to_vec()).unwrap();
    });
    assert_eq!(routes.answer(ticket, Duration::from_secs(1)).await, Some(b"chunk-0".to_vec()));
    posted.await.unwrap();
    // Taken: the next request does not get it again, and waits its whole wait for nothing.
    let ticket = routes.open("sd-0");
    let start = tokio::time::Instant::now();
    assert_eq!(routes.answer(ticket, Duration::from_secs(1)).await, None);
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    // Two commands before the next request: the newer replaces the older.
    routes.post("sd-0", b"offer".to_vec()).unwrap();
    routes.post("sd-0", b"chunk-384".to_vec()).unwrap();
    let ticket = routes.open("sd-0");
    assert_eq!(routes.answer(ticket, Duration::from_secs(1)).await, Some(b"chunk-384".to_vec()));
}

#[tokio::test(start_paused = true)]
async fn a_command_waiting_from_before_the_request_is_given_unless_a_newer_one_comes_within_the_wait() {
    let routes = Arc::new(Routes::default());
    let _ = routes.open("sd-0");
    routes.post("sd-0", b"resend".to_vec()).unwrap();
    // No answer to this request comes: the waiting command leaves at the end of the wait.
    let ticket = routes.open("sd-0");
    assert_eq!(routes.answer(ticket, Duration::from_secs(1)).await, Some(b"resend".to_vec()));
    // An answer comes within the wait: it replaces the waiting one.
    routes.post("sd-0", b"stale".to_vec()).unwrap();
    let ticket = routes.open("sd-0");
    let r = routes.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        r.post("sd-0", b"fresh".to_vec()).unwrap();
    });
    assert_eq!(routes.answer(ticket, Duration::from_secs(1)).await, Some(b"fresh".to_vec()));
}
