use proptest::prelude::*;

use super::*;
use crate::signal::{ExtraCodes, SignalKind, StreamParser};
use crate::vendor::testing::{check, crlf, feed, fixture, mutations, render};

fn parser() -> Box<dyn StreamParser> {
    Box::new(DahuaParser::new(ExtraCodes::new()))
}

fn fire_lane_parser() -> Box<dyn StreamParser> {
    Box::new(DahuaParser::new([("ParkingDetection".to_owned(), SignalKind::FireLaneBlocked)].into()))
}

fn expected(parking: &'static str) -> Vec<&'static str> {
    vec![
        "heartbeat",
        "unknown VideoMotion",
        // `index` counts from 0.
        "smoke ch1 on",
        "fire ch2 on",
        "tampered ch1 on",
        "video_loss ch2 on",
        "video_loss ch2 off",
        parking,
        // Two blocks in one part.
        "smoke ch1 off",
        "tampered ch1 off",
        "heartbeat",
        "error bad_line",
        "error bad_value",
        // A pulse starts and ends.
        "tampered ch1 on",
        "tampered ch1 off",
        "fire ch2 off",
    ]
}

#[test]
fn fixture_stream() {
    let stream = fixture("dahua_attach.txt");
    check(&parser, &stream, &expected("unknown ParkingDetection"));
    check(&parser, &crlf(&stream), &expected("unknown ParkingDetection"));
    check(&fire_lane_parser, &crlf(&stream), &expected("fire_lane_blocked ch1 on"));
}

fn check_body(body: &str, expected: &[&str]) {
    let mut out = Vec::new();
    parse_body(body, &ExtraCodes::new(), &mut out);
    let got: Vec<String> = out.iter().map(render).collect();
    assert_eq!(got, expected, "{body:?}");
}

#[test]
fn bodies() {
    check_body("Heartbeat", &["heartbeat"]);
    check_body("Code=VideoLoss;action=Start;index=3", &["video_loss ch4 on"]);
    // No index: channel 1.
    check_body("Code=FireWarning;action=Start", &["fire ch1 on"]);
    // `;` inside data does not split the header.
    check_body("Code=SmokeDetection;action=Stop;index=0;data={\"a\":\"x;index=9\"}", &["smoke ch1 off"]);
    check_body("Code=SmokeDetection;index=0", &["error missing_field"]);
    check_body("Code=;action=Start", &["error missing_field"]);
    check_body("Code=SmokeDetection;action=Start;index=-1", &["error bad_value"]);
    check_body("Code=SmokeDetection;action=Start;index=65535", &["error bad_value"]);
    check_body("", &[]);
}

#[test]
fn block_completion() {
    let check = |raw: &str, expected: bool| {
        assert_eq!(super::parse::block_complete(raw.as_bytes()), expected, "{raw:?}")
    };
    // A blank line after the text ends the part ...
    check("Content-Type: text/plain\r\n\r\nCode=VideoLoss;action=Start;index=0\r\n", false);
    check("Content-Type: text/plain\r\n\r\nCode=VideoLoss;action=Start;index=0\r\n\r\n", true);
    check(
        "Content-Type: text/plain\r\n\r\nCode=A;action=Start;index=0\r\nCode=B;action=Stop;index=0\r\n",
        false,
    );
    // ... and so does reaching Content-Length with whole lines.
    check("Content-Length: 9\r\n\r\nHeartbeat", false);
    check("Content-Length: 9\r\n\r\nHeartbeat\r\n", true);
    // Never inside an open data object.
    check("Content-Length: 10\r\n\r\nCode=A;action=Start;index=0;data={\n \"x\": \"}\"\n\n", false);
    check("Content-Length: 10\r\n\r\nCode=A;action=Start;index=0;data={\n \"x\": \"}\"\n}", true);
    // Headers still coming.
    check("Content-Type: text/plain\r\nContent-Len", false);
    check("Content-Type: text/plain\r\n\r\n", false);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000), chunk in 1usize..300) {
        feed(parser().as_mut(), &bytes, chunk);
    }

    #[test]
    fn mutated_fixture_never_panics(bytes in mutations(fixture("dahua_attach.txt")), chunk in 1usize..500) {
        feed(parser().as_mut(), &bytes, chunk);
    }
}
