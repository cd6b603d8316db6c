//! The message sent to people, and its short human renderings.

use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One notification about a case, for one desk. The same message goes to every channel the
/// desk is reached through.
///
/// Unknown fields are accepted on reading (not `deny_unknown_fields`): messages are stored in
/// the outbox as JSON, and a gateway rolled back to an older version must still deliver the
/// rows a newer one queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Unique id assigned by the alarm engine. Deterministic: replaying the engine's log emits
    /// the same ids, which is what makes enqueueing idempotent.
    pub notification_id: u64,
    /// The case this is about.
    pub case_id: u64,
    /// `fire` (火警), `pre_alarm` (预警信号), `fault` (故障), ...
    pub severity: String,
    /// `grid`, `community`, `street` or `district`.
    pub level: String,
    /// The desk told, e.g. `grid:G1`.
    pub desk: String,
    /// One-line title, e.g. `3号楼2单元 烟感火警`.
    pub title: String,
    /// Human text, may be Chinese.
    pub text: String,
    /// Link to the case in the console.
    pub url: Option<String>,
    /// When the engine decided to notify, Unix ms.
    pub at_ms: u64,
    /// Why the desk is paged now: `opened`, `confirmed`, `spread`, `escalated`, `reminder`,
    /// `handling_overdue` or `delivery_failed`. Empty in messages queued by versions before
    /// it existed. The outbox collapses `reminder`s (see [`Message::is_reminder`]).
    #[serde(default)]
    pub reason: String,
    /// `at_ms` on the officers' clock, e.g. `12-02 08:57 (Asia/Shanghai)`; pages show it
    /// instead of UTC. Absent in messages queued by versions before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_at: Option<String>,
}

impl Message {
    /// A reminder to a desk already told ("still unacknowledged"): a newer one for the same
    /// case, desk and channel makes an older undelivered one pointless.
    pub fn is_reminder(&self) -> bool {
        self.reason == "reminder"
    }
}

/// The title-line label of a severity, Chinese first for the duty officers, English for
/// everyone else, from the glossary the console uses too (`console/glossary.json`); unknown
/// severities are shown as they are.
pub fn severity_label(severity: &str) -> &str {
    firegrid_base::glossary::severity(severity).unwrap_or(severity)
}

/// `at_ms` as RFC 3339 in UTC, to the second. UTC, not local time: the gateway does not know
/// the reader's zone, and an explicit `Z` cannot be misread.
pub fn timestamp(at_ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(at_ms)).to_string()
}

/// When the engine decided, as pages show it: on the officers' clock when the message says
/// it, else in UTC.
pub fn when(msg: &Message) -> String {
    msg.local_at.clone().unwrap_or_else(|| timestamp(msg.at_ms))
}

/// The title line: `【火警 Fire】<title>`.
pub fn title_line(msg: &Message) -> String {
    format!("【{}】{}", severity_label(&msg.severity), msg.title)
}

/// Plain text for robots and SMS: title line, desk and case, the text, the link.
pub fn render_text(msg: &Message) -> String {
    let mut out = format!(
        "{}\n值班台 Desk: {} ({})\n案件 Case: {} · {}",
        title_line(msg),
        msg.desk,
        msg.level,
        msg.case_id,
        when(msg)
    );
    if !msg.text.is_empty() {
        out.push('\n');
        out.push_str(&msg.text);
    }
    if let Some(url) = &msg.url {
        out.push('\n');
        out.push_str(url);
    }
    out
}

/// Markdown for robots that render it (WeCom): the same content as [`render_text`], with the
/// title as a heading and the link clickable.
pub fn render_markdown(msg: &Message) -> String {
    let mut out = format!(
        "### {}\n> 值班台 Desk: {} ({})\n> 案件 Case: {} · {}",
        title_line(msg),
        msg.desk,
        msg.level,
        msg.case_id,
        when(msg)
    );
    if !msg.text.is_empty() {
        out.push_str("\n\n");
        out.push_str(&msg.text);
    }
    if let Some(url) = &msg.url {
        out.push_str(&format!("\n\n[打开案件 Open case]({url})"));
    }
    out
}

/// `text` cut to at most `max_bytes` of UTF-8 on a character boundary, with `…` at the end
/// when cut. Robots refuse over-long content outright; a shortened alarm still arrives.
pub fn truncate_bytes(text: &str, max_bytes: usize) -> String {
    const ELLIPSIS: &str = "…";
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let mut end = max_bytes.saturating_sub(ELLIPSIS.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ELLIPSIS}", &text[..end])
}
