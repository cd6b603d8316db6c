//! Writes ONVIF `PullMessagesResponse` documents for signals (tests, the fleet simulator, and
//! the test camera's event service), and the `CreatePullPointSubscriptionResponse`.

use crate::signal::{CameraSignal, ExtraCodes, SignalKind};
use crate::vendor::{GenerateError, code_for, iso8601};

/// The topic written for `kind`: the standard video-source topics, and for the analytics the
/// `RuleEngine` topics that the parser recognises by name.
fn topic_for(kind: SignalKind) -> Option<&'static str> {
    match kind {
        SignalKind::VideoLoss => Some("tns1:VideoSource/SignalLoss"),
        SignalKind::Tampered => Some("tns1:VideoSource/GlobalSceneChange/ImagingService"),
        SignalKind::Fire => Some("tns1:RuleEngine/FireDetector/Fire"),
        SignalKind::Smoke => Some("tns1:RuleEngine/SmokeDetector/Smoke"),
        SignalKind::FireLaneBlocked | SignalKind::Heartbeat => None,
    }
}

const NAMESPACES: &str = "xmlns:env=\"http://www.w3.org/2003/05/soap-envelope\" \
     xmlns:wsnt=\"http://docs.oasis-open.org/wsn/b-2\" \
     xmlns:wsa5=\"http://www.w3.org/2005/08/addressing\" \
     xmlns:tev=\"http://www.onvif.org/ver10/events/wsdl\" \
     xmlns:tt=\"http://www.onvif.org/ver10/schema\" \
     xmlns:tns1=\"http://www.onvif.org/ver10/topics\"";

/// One `PullMessagesResponse` envelope holding a `NotificationMessage` per signal (heartbeats
/// add none: any answer is one).
///
/// # Errors
/// [`GenerateError::NoCode`] when a signal's kind has no standard topic and `extra` maps none.
pub fn encode(signals: &[CameraSignal], extra: &ExtraCodes, ts_ms: u64) -> Result<Vec<u8>, GenerateError> {
    let time = iso8601(ts_ms);
    let mut messages = String::new();
    for signal in signals.iter().filter(|s| s.kind != SignalKind::Heartbeat) {
        let topic = code_for(signal.kind, topic_for(signal.kind), extra)?;
        let state = if signal.active { "true" } else { "false" };
        let confidence = signal
            .confidence_pct
            .map(|c| format!("<tt:SimpleItem Name=\"Confidence\" Value=\"{}\"/>", f32::from(c) / 100.0))
            .unwrap_or_default();
        messages.push_str(&format!(
            "<wsnt:NotificationMessage>\
             <wsnt:Topic Dialect=\"http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet\">{topic}</wsnt:Topic>\
             <wsnt:Message><tt:Message UtcTime=\"{time}\" PropertyOperation=\"Changed\">\
             <tt:Source><tt:SimpleItem Name=\"VideoSourceConfigurationToken\" Value=\"VideoSource_{channel}\"/></tt:Source>\
             <tt:Data><tt:SimpleItem Name=\"State\" Value=\"{state}\"/>{confidence}</tt:Data>\
             </tt:Message></wsnt:Message></wsnt:NotificationMessage>",
            topic = quick_xml::escape::escape(topic.as_str()),
            channel = signal.channel.unwrap_or(1),
        ));
    }
    Ok(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<env:Envelope {NAMESPACES}><env:Body>\
         <tev:PullMessagesResponse><tev:CurrentTime>{time}</tev:CurrentTime>\
         <tev:TerminationTime>{time}</tev:TerminationTime>{messages}</tev:PullMessagesResponse>\
         </env:Body></env:Envelope>\r\n"
    )
    .into_bytes())
}

/// A `CreatePullPointSubscriptionResponse` naming `address` as the subscription.
pub fn subscription_response(address: &str, ts_ms: u64) -> String {
    let time = iso8601(ts_ms);
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<env:Envelope {NAMESPACES}><env:Body>\
         <tev:CreatePullPointSubscriptionResponse><tev:SubscriptionReference>\
         <wsa5:Address>{address}</wsa5:Address></tev:SubscriptionReference>\
         <wsnt:CurrentTime>{time}</wsnt:CurrentTime><wsnt:TerminationTime>{time}</wsnt:TerminationTime>\
         </tev:CreatePullPointSubscriptionResponse></env:Body></env:Envelope>\r\n",
        address = quick_xml::escape::escape(address),
    )
}
