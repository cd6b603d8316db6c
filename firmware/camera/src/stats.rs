//! [`AgentStats`]: the agent's counters. Each event that matters is one method here that logs
//! it and counts it, so a log line and its counter can never disagree; the fleet simulator
//! reads them through [`AgentStats::snapshot`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::outbox::OutboxError;
use crate::signal::ParseError;
use crate::source::TransportError;

/// Counters and gauges of one agent.
#[derive(Debug, Default)]
pub struct AgentStats {
    stream_connects: AtomicU64,
    stream_failures: AtomicU64,
    stream_connected: AtomicBool,
    signals: AtomicU64,
    unknown_events: AtomicU64,
    parse_errors: AtomicU64,
    probe_failures: AtomicU64,
    queued: AtomicU64,
    queue_failures: AtomicU64,
    outbox_depth: AtomicU64,
    broker_connects: AtomicU64,
    broker_failures: AtomicU64,
    broker_connected: AtomicBool,
    published: AtomicU64,
    acknowledged: AtomicU64,
    downlinks: AtomicU64,
    /// By [`firegrid_protocol::AuthError`] reason: unsigned, bad signature, wrong boot,
    /// replayed.
    refused: [AtomicU64; 4],
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// Event streams opened.
    pub stream_connects: u64,
    /// Event stream connects that failed and streams that broke.
    pub stream_failures: u64,
    /// Whether an event stream is open now.
    pub stream_connected: bool,
    /// Signals parsed (heartbeats included).
    pub signals: u64,
    /// Well-formed vendor events this agent does not map.
    pub unknown_events: u64,
    /// Parts of the stream that could not be parsed.
    pub parse_errors: u64,
    /// RTSP probes that failed.
    pub probe_failures: u64,
    /// Uplinks put in the outbox.
    pub queued: u64,
    /// Uplinks that could not be put in the outbox.
    pub queue_failures: u64,
    /// Uplinks waiting in the outbox.
    pub outbox_depth: u64,
    /// Broker connections made.
    pub broker_connects: u64,
    /// Broker connects that failed and connections lost.
    pub broker_failures: u64,
    /// Whether the broker connection is up now.
    pub broker_connected: bool,
    /// Uplink publishes sent (retransmissions included).
    pub published: u64,
    /// Uplinks removed from the outbox by an acknowledgement.
    pub acknowledged: u64,
    /// Downlink commands received.
    pub downlinks: u64,
    /// Downlinks refused by authentication (camera with a key): unsigned, forged, for
    /// another boot, or replayed.
    pub downlinks_refused: u64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl AgentStats {
    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            stream_connects: get(&self.stream_connects),
            stream_failures: get(&self.stream_failures),
            stream_connected: self.stream_connected.load(Ordering::Relaxed),
            signals: get(&self.signals),
            unknown_events: get(&self.unknown_events),
            parse_errors: get(&self.parse_errors),
            probe_failures: get(&self.probe_failures),
            queued: get(&self.queued),
            queue_failures: get(&self.queue_failures),
            outbox_depth: get(&self.outbox_depth),
            broker_connects: get(&self.broker_connects),
            broker_failures: get(&self.broker_failures),
            broker_connected: self.broker_connected.load(Ordering::Relaxed),
            published: get(&self.published),
            acknowledged: get(&self.acknowledged),
            downlinks: get(&self.downlinks),
            downlinks_refused: self.refused.iter().map(get).sum(),
        }
    }

    pub(crate) fn stream_connected(&self) {
        bump(&self.stream_connects);
        self.stream_connected.store(true, Ordering::Relaxed);
        tracing::info!("Camera event stream connected.");
    }

    pub(crate) fn stream_failed(&self, error: &TransportError) {
        bump(&self.stream_failures);
        self.stream_connected.store(false, Ordering::Relaxed);
        tracing::warn!(error = %error, "Camera event stream failed.");
    }

    pub(crate) fn stream_ended(&self, reason: &str) {
        bump(&self.stream_failures);
        self.stream_connected.store(false, Ordering::Relaxed);
        tracing::warn!(reason, "Camera event stream ended.");
    }

    pub(crate) fn signal(&self) {
        bump(&self.signals);
    }

    pub(crate) fn unknown_event(&self, code: &str) {
        bump(&self.unknown_events);
        tracing::debug!(code, "Ignored a camera event of an unmapped type.");
    }

    pub(crate) fn parse_failed(&self, error: &ParseError) {
        bump(&self.parse_errors);
        tracing::warn!(error = %error, reason = error.reason(), "Skipped an unreadable part of the camera stream.");
    }

    pub(crate) fn probe_failed(&self, channel: u16, error: &crate::rtsp::ProbeError) {
        bump(&self.probe_failures);
        tracing::debug!(channel, error = %error, "RTSP probe failed.");
    }

    pub(crate) fn queued(&self, kind: &str, seq: u32, depth: usize) {
        bump(&self.queued);
        self.set_depth(depth);
        tracing::info!(kind, seq, depth, "Queued an uplink.");
    }

    pub(crate) fn queue_failed(&self, kind: &str, error: &OutboxError) {
        bump(&self.queue_failures);
        tracing::error!(kind, error = %error, "Could not queue an uplink.");
    }

    pub(crate) fn set_depth(&self, depth: usize) {
        self.outbox_depth.store(depth as u64, Ordering::Relaxed);
    }

    pub(crate) fn broker_connected(&self) {
        bump(&self.broker_connects);
        self.broker_connected.store(true, Ordering::Relaxed);
        tracing::info!("Connected to the MQTT broker.");
    }

    pub(crate) fn broker_failed(&self, error: &rumqttc::ConnectionError) {
        bump(&self.broker_failures);
        self.broker_connected.store(false, Ordering::Relaxed);
        tracing::warn!(error = %error, "MQTT connection failed.");
    }

    pub(crate) fn published(&self) {
        bump(&self.published);
    }

    pub(crate) fn acknowledged(&self, boot: u16, seq: u32, depth: usize) {
        bump(&self.acknowledged);
        self.set_depth(depth);
        tracing::debug!(boot, seq, depth, "Uplink acknowledged.");
    }

    /// A downlink failed authentication. Logged at the 1st, 2nd, 4th, 8th ... refusal of each
    /// reason, so a flood of forgeries costs a few log lines.
    pub(crate) fn downlink_refused(&self, kind: &str, reason: firegrid_protocol::AuthError) {
        use firegrid_protocol::AuthError;
        let slot = match reason {
            AuthError::Unsigned => 0,
            AuthError::BadTag => 1,
            AuthError::WrongBoot => 2,
            AuthError::Replayed => 3,
        };
        let n = self.refused[slot].fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(kind, reason = reason.reason(), refusals = n, "Refused a downlink.");
        }
    }

    pub(crate) fn downlink(&self, kind: &str) {
        bump(&self.downlinks);
        tracing::debug!(kind, "Downlink received.");
    }
}
