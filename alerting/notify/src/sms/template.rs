//! Placeholder templates: `{name}` replaced by a value escaped for where it stands.
//!
//! A placeholder is `{` + lowercase letters and `_` + `}`; every other brace is literal, so a
//! JSON body template such as `{"to":"{phone}"}` needs no escaping of its own braces.

use std::collections::BTreeMap;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::Message;
use crate::message::{severity_label, when};

/// Every placeholder a template may use.
pub const PLACEHOLDERS: &[&str] = &[
    // The number (or the joined numbers) of this request.
    "phone",
    "title",
    "text",
    // One line: `【火警 Fire】title · desk · 案件 Case 42`, what most SMS need.
    "summary",
    "case_id",
    "notification_id",
    "severity",
    "level",
    "desk",
    // The console link, empty when the message has none.
    "url",
    // The message's time, RFC 3339 UTC.
    "time",
    // The configured secret.
    "secret",
];

/// How values are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// As the content of a JSON string (the template has the quotes).
    Json,
    /// Percent-encoded, every byte but RFC 3986's unreserved characters: safe in a path, a
    /// query and a form body alike (form decoders read `%20` as a space too).
    Percent,
    /// Unchanged.
    Raw,
}

/// RFC 3986 §2.3 unreserved characters stay; everything else is encoded.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A template split into literal text and placeholders.
fn parts(template: &str) -> Vec<Part<'_>> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let name_len = after.bytes().take_while(|b| b.is_ascii_lowercase() || *b == b'_').count();
        if name_len > 0 && after[name_len..].starts_with('}') {
            out.push(Part::Literal(&rest[..open]));
            out.push(Part::Placeholder(&after[..name_len]));
            rest = &after[name_len + 1..];
        } else {
            out.push(Part::Literal(&rest[..=open]));
            rest = after;
        }
    }
    out.push(Part::Literal(rest));
    out
}

enum Part<'a> {
    Literal(&'a str),
    Placeholder(&'a str),
}

/// The placeholders `template` uses, or the first unknown one as an error.
pub fn placeholders(template: &str) -> Result<Vec<&str>, String> {
    let mut used = Vec::new();
    for part in parts(template) {
        if let Part::Placeholder(name) = part {
            if !PLACEHOLDERS.contains(&name) {
                return Err(format!("unknown placeholder {{{name}}}; known: {}", PLACEHOLDERS.join(", ")));
            }
            used.push(name);
        }
    }
    Ok(used)
}

/// `template` with every known placeholder replaced by its escaped value; unknown ones (which
/// [`placeholders`] refuses at start) are left as they are.
pub fn render(template: &str, values: &BTreeMap<&'static str, String>, escape: Escape) -> String {
    let mut out = String::with_capacity(template.len());
    for part in parts(template) {
        match part {
            Part::Literal(text) => out.push_str(text),
            Part::Placeholder(name) => match values.get(name) {
                Some(value) => out.push_str(&escaped(value, escape)),
                None => {
                    out.push('{');
                    out.push_str(name);
                    out.push('}');
                }
            },
        }
    }
    out
}

/// `value` escaped for `escape`.
pub fn escaped(value: &str, escape: Escape) -> String {
    match escape {
        Escape::Json => {
            let quoted = serde_json::Value::String(value.to_owned()).to_string();
            quoted[1..quoted.len() - 1].to_owned()
        }
        Escape::Percent => utf8_percent_encode(value, NOT_UNRESERVED).to_string(),
        Escape::Raw => value.to_owned(),
    }
}

/// The placeholder values for `msg` sent to `phone`.
pub fn values(msg: &Message, phone: &str, secret: Option<&str>) -> BTreeMap<&'static str, String> {
    let summary = format!(
        "【{}】{} · {} · 案件 Case {}",
        severity_label(&msg.severity),
        msg.title,
        msg.desk,
        msg.case_id
    );
    BTreeMap::from([
        ("phone", phone.to_owned()),
        ("title", msg.title.clone()),
        ("text", msg.text.clone()),
        ("summary", summary),
        ("case_id", msg.case_id.to_string()),
        ("notification_id", msg.notification_id.to_string()),
        ("severity", msg.severity.clone()),
        ("level", msg.level.clone()),
        ("desk", msg.desk.clone()),
        ("url", msg.url.clone().unwrap_or_default()),
        ("time", when(msg)),
        ("secret", secret.unwrap_or_default().to_owned()),
    ])
}
