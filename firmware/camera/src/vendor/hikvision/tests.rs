use proptest::prelude::*;

use super::*;
use crate::signal::{ExtraCodes, SignalKind, StreamParser};
use crate::vendor::testing::{check, crlf, feed, fixture, mutations, render};

fn parser() -> Box<dyn StreamParser> {
    Box::new(HikvisionParser::new(ExtraCodes::new()))
}

const FIXTURE_EXPECTED: &[&str] = &[
    "video_loss ch1 off",
    "fire ch2 on",
    // (the JPEG part is skipped)
    "fire ch2 on",
    "unknown VMD",
    "tampered ch1 on",
    "smoke ch1 on",
    "video_loss ch2 on",
    "fire_lane_blocked ch1 on",
    "tampered ch1 off",
    "fire ch2 off",
    "error xml",
    "error missing_field",
    "heartbeat",
    "video_loss ch1 off",
];

#[test]
fn fixture_stream() {
    let stream = fixture("hikvision_alertstream.txt");
    check(&parser, &stream, FIXTURE_EXPECTED);
    check(&parser, &crlf(&stream), FIXTURE_EXPECTED);
}

/// The last alert is delivered as soon as its document closes, not when the next part
/// starts: an alarm must not wait for the following heartbeat.
#[test]
fn last_alert_does_not_wait_for_the_next_boundary() {
    let mut stream = crlf(&fixture("hikvision_alertstream.txt"));
    // Cut right after the last `</EventNotificationAlert>`.
    let end = String::from_utf8_lossy(&stream).rfind("</EventNotificationAlert>").unwrap();
    stream.truncate(end + "</EventNotificationAlert>".len());
    let got = feed(parser().as_mut(), &stream, 4096);
    assert_eq!(got.last().map(String::as_str), Some("video_loss ch1 off"));
    assert_eq!(got.len(), FIXTURE_EXPECTED.len());
}

fn check_alert(xml: &str, extra: &ExtraCodes, expected: &str) {
    assert_eq!(render(&parse_alert(xml, extra)), expected, "{xml}");
}

#[test]
fn alerts() {
    let none = ExtraCodes::new();
    let alert =
        |fields: &str| format!("<EventNotificationAlert version=\"2.0\">{fields}</EventNotificationAlert>");
    check_alert(
        &alert("<eventType>fireDetection</eventType><eventState>active</eventState>"),
        &none,
        "fire ch1 on",
    );
    // Case-insensitive, as firmware generations differ.
    check_alert(
        &alert("<eventType>VideoLoss</eventType><eventState>Active</eventState><channelID>4</channelID>"),
        &none,
        "video_loss ch4 on",
    );
    // dynChannelID wins over channelID (NVR numbering).
    check_alert(
        &alert(
            "<channelID>33</channelID><dynChannelID>1</dynChannelID><eventType>defocus</eventType><eventState>active</eventState>",
        ),
        &none,
        "tampered ch1 on",
    );
    check_alert(
        &alert("<eventType>fireDetection</eventType><eventState>maybe</eventState>"),
        &none,
        "error bad_value",
    );
    check_alert(&alert("<eventType>fireDetection</eventType>"), &none, "error missing_field");
    check_alert(
        &alert("<eventType>fireDetection</eventType><eventState>active</eventState><channelID>0</channelID>"),
        &none,
        "error bad_value",
    );
    check_alert(
        &alert("<eventType>fireDetection</eventType><eventState>active</eventState><channelID>x</channelID>"),
        &none,
        "error bad_value",
    );
    check_alert(
        "<ResponseStatus><statusCode>4</statusCode></ResponseStatus>",
        &none,
        "error unexpected_root",
    );
    check_alert("<EventNotificationAlert><eventType>VMD", &none, "error xml");
    check_alert("not xml at all", &none, "error xml");
    // Nested fields of the same name do not override the alert's own.
    check_alert(
        &alert(
            "<eventType>fireDetection</eventType><eventState>active</eventState><X><eventState>inactive</eventState></X>",
        ),
        &none,
        "fire ch1 on",
    );
    // A site's extra code.
    let extra: ExtraCodes = [("illegalParking".to_owned(), SignalKind::FireLaneBlocked)].into();
    check_alert(
        &alert("<eventType>illegalParking</eventType><eventState>active</eventState>"),
        &none,
        "unknown illegalParking",
    );
    check_alert(
        &alert("<eventType>illegalparking</eventType><eventState>active</eventState>"),
        &extra,
        "fire_lane_blocked ch1 on",
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000), chunk in 1usize..300) {
        feed(parser().as_mut(), &bytes, chunk);
    }

    #[test]
    fn mutated_fixture_never_panics(bytes in mutations(fixture("hikvision_alertstream.txt")), chunk in 1usize..500) {
        feed(parser().as_mut(), &bytes, chunk);
    }
}
