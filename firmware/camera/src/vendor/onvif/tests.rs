use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::signal::{ExtraCodes, SignalKind, StreamParser};
use crate::vendor::testing::{check, feed, fixture, mutations};

fn parser() -> Box<dyn StreamParser> {
    Box::new(OnvifParser::new(ExtraCodes::new(), BTreeMap::new()))
}

#[test]
fn fixture_stream() {
    check(
        &parser,
        &fixture("onvif_pullmessages.xml"),
        &[
            // Every answer proves the event service alive.
            "heartbeat",
            // `Initialized` reports the state at subscription time.
            "video_loss ch1 off",
            "tampered ch1 on",
            "fire ch2 on 87%",
            "unknown tns1:RuleEngine/CellMotionDetector/Motion",
            "video_loss ch2 on",
            // `Deleted`: the rule's property is gone, the condition with it.
            "fire ch2 off",
            // The empty answer of a pull that timed out.
            "heartbeat",
            "error soap_fault",
        ],
    );
}

#[test]
fn source_tokens_map_to_channels() {
    let sources: BTreeMap<String, u16> = [("vsconf-east".to_owned(), 5)].into();
    let doc = |token: &str| {
        let signal = crate::CameraSignal::new(Some(1), SignalKind::VideoLoss, true);
        String::from_utf8(encode(&[signal], &ExtraCodes::new(), 0).unwrap())
            .unwrap()
            .replace("VideoSource_1", token)
    };
    let got = |token: &str| {
        let mut p = OnvifParser::new(ExtraCodes::new(), sources.clone());
        feed(&mut p, doc(token).as_bytes(), 100).pop().unwrap()
    };
    assert_eq!(got("vsconf-east"), "video_loss ch5 on");
    assert_eq!(got("VideoSource_12"), "video_loss ch12 on");
    assert_eq!(got("000"), "video_loss ch1 on");
    assert_eq!(got("VideoSourceToken"), "video_loss ch1 on");
}

#[test]
fn topics() {
    let none = ExtraCodes::new();
    let check = |topic: &str, extra: &ExtraCodes, expected: Option<SignalKind>| {
        assert_eq!(topic_kind(topic, extra), expected, "{topic}");
    };
    check("tns1:VideoSource/SignalLoss", &none, Some(SignalKind::VideoLoss));
    check("tns1:VideoSource/GlobalSceneChange/AnalyticsService", &none, Some(SignalKind::Tampered));
    check("tns1:VideoSource/ImageTooBlurry/ImagingService", &none, Some(SignalKind::Tampered));
    check("tns1:RuleEngine/FireDetector/Fire", &none, Some(SignalKind::Fire));
    check("tns1:RuleEngine/MyRuleDetector/SmokeDetect", &none, Some(SignalKind::Smoke));
    check("tnsvendor:VideoAnalytics/FireLaneOccupied", &none, Some(SignalKind::FireLaneBlocked));
    check("tns1:RuleEngine/CellMotionDetector/Motion", &none, None);
    check("tns1:VideoSource/ImageTooDark/ImagingService", &none, None);
    let extra: ExtraCodes =
        [("RuleEngine/LoiteringDetector/Loitering".to_owned(), SignalKind::FireLaneBlocked)].into();
    check("tns1:RuleEngine/LoiteringDetector/Loitering", &extra, Some(SignalKind::FireLaneBlocked));
}

#[test]
fn documents_that_are_not_pull_answers() {
    let mut p = parser();
    let got = feed(p.as_mut(), b"<s:Envelope xmlns:s=\"x\"><s:Body><Other/></s:Body></s:Envelope>", 10);
    assert_eq!(got, ["error missing_field"]);
    let got = feed(p.as_mut(), b"<html><body>Envelope></body></html><a:Envelope></a:Envelope>", 10);
    // The first closing `Envelope` tag ends the document, whose root is not one.
    assert_eq!(got, ["error unexpected_root"]);
}

#[test]
fn oversized_document_is_skipped() {
    let mut p = parser();
    let mut doc = b"<s:Envelope><s:Body>".to_vec();
    doc.extend(std::iter::repeat_n(b' ', MAX_DOCUMENT + 10));
    doc.extend(b"</s:Body></s:Envelope>");
    doc.extend(encode(&[], &ExtraCodes::new(), 0).unwrap());
    assert_eq!(feed(p.as_mut(), &doc, 64 * 1024), ["error too_large", "heartbeat"]);
}

#[test]
fn subscription_answers() {
    let answer = subscription_response("http://192.0.2.7/onvif/Subscription?Idx=3", 0);
    assert_eq!(soap::subscription_address(&answer).unwrap(), "http://192.0.2.7/onvif/Subscription?Idx=3");
    let fault = String::from_utf8(fixture("onvif_pullmessages.xml")).unwrap();
    let fault = &fault[fault.rfind("<?xml").unwrap()..];
    assert_eq!(
        soap::subscription_address(fault).unwrap_err(),
        crate::ParseError::SoapFault { reason: "The subscription has expired".into() }
    );
    assert!(matches!(
        soap::subscription_address("<e:Envelope xmlns:e=\"x\"><e:Body/></e:Envelope>"),
        Err(crate::ParseError::MissingField { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000), chunk in 1usize..300) {
        feed(parser().as_mut(), &bytes, chunk);
    }

    #[test]
    fn mutated_fixture_never_panics(bytes in mutations(fixture("onvif_pullmessages.xml")), chunk in 1usize..500) {
        feed(parser().as_mut(), &bytes, chunk);
    }
}
