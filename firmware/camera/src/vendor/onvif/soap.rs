//! The SOAP requests of the PullPoint pattern (ONVIF Core Specification §9.1,
//! `CreatePullPointSubscription` then `PullMessages` in a loop) and the one answer field the
//! client needs from the first one. Pure text in, text out.

use std::time::Duration;

use quick_xml::events::Event;
use quick_xml::reader::Reader;

use crate::signal::{ParseError, cut};

/// The SOAP 1.2 media type, with the WS-Addressing action some cameras route by.
pub fn content_type(action: &str) -> String {
    format!("application/soap+xml; charset=utf-8; action=\"{action}\"")
}

/// Action of `CreatePullPointSubscription`.
pub const CREATE_ACTION: &str =
    "http://www.onvif.org/ver10/events/wsdl/EventPortType/CreatePullPointSubscriptionRequest";
/// Action of `PullMessages`.
pub const PULL_ACTION: &str =
    "http://www.onvif.org/ver10/events/wsdl/PullPointSubscription/PullMessagesRequest";

fn envelope(to: &str, action: &str, body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" \
         xmlns:a=\"http://www.w3.org/2005/08/addressing\" \
         xmlns:tev=\"http://www.onvif.org/ver10/events/wsdl\">\
         <s:Header><a:Action s:mustUnderstand=\"1\">{action}</a:Action><a:To s:mustUnderstand=\"1\">{to}</a:To></s:Header>\
         <s:Body>{body}</s:Body></s:Envelope>",
        to = quick_xml::escape::escape(to),
    )
}

/// `CreatePullPointSubscription` with an initial termination time of `keep`.
pub fn create_subscription(to: &str, keep: Duration) -> String {
    envelope(
        to,
        CREATE_ACTION,
        &format!(
            "<tev:CreatePullPointSubscription><tev:InitialTerminationTime>PT{}S</tev:InitialTerminationTime>\
             </tev:CreatePullPointSubscription>",
            keep.as_secs().max(1)
        ),
    )
}

/// `PullMessages`: wait up to `timeout` for at most `limit` messages.
pub fn pull_messages(to: &str, timeout: Duration, limit: u32) -> String {
    envelope(
        to,
        PULL_ACTION,
        &format!(
            "<tev:PullMessages><tev:Timeout>PT{}S</tev:Timeout><tev:MessageLimit>{limit}</tev:MessageLimit>\
             </tev:PullMessages>",
            timeout.as_secs().max(1)
        ),
    )
}

/// The subscription's address from a `CreatePullPointSubscriptionResponse`
/// (`SubscriptionReference/Address`).
///
/// # Errors
/// [`ParseError::Xml`] for malformed XML, [`ParseError::SoapFault`] when the camera refused,
/// [`ParseError::MissingField`] when the address is absent.
pub fn subscription_address(xml: &str) -> Result<String, ParseError> {
    let mut reader = Reader::from_str(xml.trim());
    reader.config_mut().trim_text(true);
    let mut stack: Vec<String> = Vec::new();
    let mut address: Option<String> = None;
    let mut fault: Option<String> = None;
    loop {
        match reader.read_event().map_err(ParseError::xml)? {
            Event::Start(start) => {
                let name = start.local_name().as_ref().to_owned();
                if name == "Fault" {
                    fault = Some(String::new());
                }
                stack.push(name);
            }
            Event::End(_) => {
                stack.pop();
            }
            Event::Text(text) => {
                let value = quick_xml::escape::unescape(&text).map_err(ParseError::xml)?.trim().to_owned();
                let n = stack.len();
                if n >= 2 && stack[n - 1] == "Address" && stack[n - 2] == "SubscriptionReference" {
                    address.get_or_insert(value);
                } else if matches!(stack.last().map(String::as_str), Some("Text" | "faultstring"))
                    && let Some(f) = fault.as_mut()
                {
                    f.push_str(&value);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if let Some(reason) = fault {
        return Err(ParseError::SoapFault { reason: cut(&reason) });
    }
    address
        .filter(|a| !a.is_empty())
        .ok_or(ParseError::MissingField { field: "SubscriptionReference/Address" })
}
