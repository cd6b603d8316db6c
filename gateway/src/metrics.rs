//! The gateway's metrics and the events that move them.
//!
//! Each event that matters (a message rejected, accepted, from an unknown device) is one call
//! here that bumps its Prometheus counter and logs, so the two never disagree. Logs of
//! repeated events are rate-limited per reason: the first occurrence is logged at once, later
//! ones at most every [`LOG_EVERY`] with the number suppressed in between, so a flooding
//! device cannot flood the log too.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Shortest interval between two log lines about the same kind of event.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Label set with one `kind` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// Message kind, rejection reason, destination, ...
    pub kind: String,
}

/// Label set with one `state` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// The state.
    pub state: String,
}

/// Label set with one `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why.
    pub reason: String,
}

/// Label set with one `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// What became of it.
    pub outcome: String,
}

/// Label set with one `destination` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabel {
    /// Destination name.
    pub destination: String,
}

/// Label set with one `device` label (only for the few dozen polled devices: per-device
/// metrics of thousands of MQTT devices belong in the time-series database, not here).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabel {
    /// Device id.
    pub device: String,
}

/// Label set with one `direction` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `ahead` or `behind`.
    pub direction: &'static str,
}

/// Label set with one `store` label (`spool`, `cases`, `outbox`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabel {
    /// The store.
    pub store: &'static str,
}

/// Label set with one `channel` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    /// Notification channel name.
    pub channel: String,
}

/// Label set with `channel` and `severity` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelSeverityLabel {
    /// Notification channel name.
    pub channel: String,
    /// Severity of the notification (`fire`, `pre_alarm`, `fault`, ...).
    pub severity: String,
}

/// Label set with one `session` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabel {
    /// MQTT session name (`alarm` or `telemetry`).
    pub session: String,
}

/// Every metric the gateway exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Messages accepted and stored, by kind.
    pub accepted: Family<KindLabel, Counter>,
    /// Messages rejected, by reason.
    pub rejected: Family<ReasonLabel, Counter>,
    /// Duplicates (retransmissions, redeliveries): acknowledged again, not stored again.
    pub duplicates: Counter,
    /// Messages from devices missing from the registry (accepted, and listed).
    pub unknown_device_messages: Counter,
    /// Messages accepted without proof of origin (keyless devices, or keyed ones still
    /// allowed to send unsigned), by kind.
    pub unauthenticated: Family<KindLabel, Counter>,
    /// Distinct unknown devices seen.
    pub unknown_devices: Gauge,
    /// Alarms, faults and camera fire events of unknown devices handed to the alarm loop
    /// as unplaced-device cases.
    pub unplaced_signals: Counter,
    /// Messages accepted with a device clock far off the gateway's, by direction.
    pub skewed_timestamps: Family<DirectionLabel, Counter>,
    /// 1 while an MQTT session is connected.
    pub mqtt_connected: Family<SessionLabel, Gauge>,
    /// MQTT connection attempts that failed.
    pub mqtt_connect_failures: Family<SessionLabel, Counter>,
    /// Bytes in the spool.
    pub spool_bytes: Gauge,
    /// Records a destination has not acknowledged yet.
    pub spool_depth: Family<DestinationLabel, Gauge>,
    /// Age in seconds of the oldest record a destination has not written.
    pub spool_age_seconds: Family<DestinationLabel, Gauge<f64, AtomicU64>>,
    /// Telemetry records shed because the spool was full.
    pub spool_shed: Gauge,
    /// Lines written per destination.
    pub lines_written: Family<DestinationLabel, Gauge>,
    /// Failed write requests per destination.
    pub write_failures: Family<DestinationLabel, Gauge>,
    /// Lines moved to the dead-letter file per destination.
    pub dead_lettered: Family<DestinationLabel, Gauge>,
    /// Duration of the last successful write per destination, seconds.
    pub write_seconds: Family<DestinationLabel, Gauge<f64, AtomicU64>>,
    /// 1 while a destination refuses writes for credentials, permission or database reasons.
    pub destination_held: Family<DestinationLabel, Gauge>,
    /// Successful Modbus polls per device.
    pub modbus_polls_ok: Family<DeviceLabel, Gauge>,
    /// Failed Modbus polls per device.
    pub modbus_polls_failed: Family<DeviceLabel, Gauge>,
    /// 1 while a Modbus device is failing.
    pub modbus_failing: Family<DeviceLabel, Gauge>,
    /// Notification delivery attempts, by outcome (`delivered`, a failure reason, `gave_up`).
    pub notifications: Family<ReasonLabel, Counter>,
    /// Notification deliveries waiting in the outbox, by channel and severity.
    pub outbox_pending: Family<ChannelSeverityLabel, Gauge>,
    /// Notification deliveries held back by their channel's rate limit, by channel.
    pub notifications_held: Family<ChannelLabel, Counter>,
    /// Reminders superseded by a newer reminder before they were sent.
    pub reminders_superseded: Counter,
    /// Officer API requests refused, by reason (`unauthenticated`, `forbidden`, `out_of_scope`, ...).
    pub api_refused: Family<ReasonLabel, Counter>,
    /// Connections the embedded broker refused at login, by reason (`unknown_user`,
    /// `wrong_password`, `revoked`), and connections its TLS listener refused before any login
    /// (`tls_handshake`, `tls_handshake_timeout`, `too_many_connections`). Connections without
    /// any login are refused by rumqttd before the gateway sees them and are not counted here.
    pub broker_refused: Family<ReasonLabel, Counter>,
    /// Open alarm cases.
    pub open_cases: Gauge,
    /// Which stores cannot write and what they hold in memory meanwhile; the stores report
    /// here, [`Metrics::refresh_stores`] copies it into the two gauges below.
    pub stores: std::sync::Arc<crate::durability::StoreHealth>,
    /// 1 while a store cannot write (full, read-only or failing disk).
    pub store_unwritable: Family<StoreLabel, Gauge>,
    /// Records a store holds in memory because it cannot write them.
    pub store_held: Family<StoreLabel, Gauge>,
    /// Devices of the current firmware rollout, by state (`waiting`, `transferring`,
    /// `booted`, `failed_rolled_back`, ...). By state, not by device: a street's rollout is
    /// thousands of devices, each a series for as long as Prometheus keeps them; the
    /// per-device state is in `GET /api/v1/firmware/rollout` and the progress file, and each
    /// device's own `fw_status` in InfluxDB (`firmware_update`).
    pub firmware_devices: Family<StateLabel, Gauge>,
    /// 1 while the current firmware rollout is paused (by itself or by the operator).
    pub firmware_paused: Gauge,
    /// Firmware commands published, by kind (`fw_offer`, `fw_chunk`, ...).
    pub firmware_commands: Family<KindLabel, Counter>,
    /// Of those, the ones sent again because the device did not answer within the rollout's
    /// `resend_after`, by kind: each cost the device that wait (a lost command or status,
    /// or one refused by admission).
    pub firmware_resends: Family<KindLabel, Counter>,
    /// Firmware rollout requests the gateway refused, by reason (`signature`, `invalid`, ...).
    pub firmware_refused: Family<ReasonLabel, Counter>,
    /// CoAP requests answered by the NB-IoT endpoint (`[coap]`), by what the answer carried:
    /// `command` (the device's next firmware command) or `nothing`. Refused requests are
    /// counted in `rejected` by reason (`coap_malformed`, `coap_path`, ...).
    pub coap_answers: Family<OutcomeLabel, Counter>,
    /// Retransmitted CoAP requests answered from the exchange table (or dropped while their
    /// answer was still on its way) instead of being ingested again.
    pub coap_retransmissions: Counter,
    limiter: Mutex<HashMap<&'static str, (Instant, u64)>>,
    /// The same counts as `accepted` and `rejected`, readable for the gateway's own
    /// time series (prometheus-client families cannot be iterated).
    counts: Mutex<Counts>,
}

/// What [`Metrics::outbox`] published last.
#[derive(Debug, Default)]
pub struct OutboxShown {
    depth: std::collections::HashSet<ChannelSeverityLabel>,
    stats: firegrid_notify::outbox::Stats,
}

/// Message counts since start, by kind and by rejection reason.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// Accepted, by kind.
    pub accepted: BTreeMap<&'static str, u64>,
    /// Rejected, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `firegrid_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("firegrid");
        let m = Metrics {
            accepted: Family::default(),
            rejected: Family::default(),
            duplicates: Counter::default(),
            unknown_device_messages: Counter::default(),
            unauthenticated: Family::default(),
            unknown_devices: Gauge::default(),
            unplaced_signals: Counter::default(),
            skewed_timestamps: Family::default(),
            mqtt_connected: Family::default(),
            mqtt_connect_failures: Family::default(),
            spool_bytes: Gauge::default(),
            spool_depth: Family::default(),
            spool_age_seconds: Family::default(),
            spool_shed: Gauge::default(),
            lines_written: Family::default(),
            write_failures: Family::default(),
            dead_lettered: Family::default(),
            write_seconds: Family::default(),
            destination_held: Family::default(),
            modbus_polls_ok: Family::default(),
            modbus_polls_failed: Family::default(),
            modbus_failing: Family::default(),
            notifications: Family::default(),
            outbox_pending: Family::default(),
            notifications_held: Family::default(),
            reminders_superseded: Counter::default(),
            api_refused: Family::default(),
            broker_refused: Family::default(),
            open_cases: Gauge::default(),
            stores: Default::default(),
            store_unwritable: Family::default(),
            store_held: Family::default(),
            firmware_devices: Family::default(),
            firmware_paused: Gauge::default(),
            firmware_commands: Family::default(),
            firmware_resends: Family::default(),
            firmware_refused: Family::default(),
            coap_answers: Family::default(),
            coap_retransmissions: Counter::default(),
            limiter: Mutex::new(HashMap::new()),
            counts: Mutex::new(Counts::default()),
            registry: Registry::default(),
        };
        registry.register(
            "notification_attempts",
            "Notification delivery attempts, by outcome",
            m.notifications.clone(),
        );
        registry.register(
            "notification_outbox_pending",
            "Notification deliveries waiting in the outbox, by channel and severity",
            m.outbox_pending.clone(),
        );
        registry.register(
            "notification_deliveries_held",
            "Notification deliveries held back by their channel's rate limit (once per wait), by channel",
            m.notifications_held.clone(),
        );
        registry.register(
            "notification_reminders_superseded",
            "Reminders superseded by a newer reminder for the same case, desk and channel; never sent",
            m.reminders_superseded.clone(),
        );
        registry.register("api_refused", "Officer API requests refused, by reason", m.api_refused.clone());
        registry.register(
            "broker_logins_refused",
            "Logins and TLS connections the embedded MQTT broker refused, by reason",
            m.broker_refused.clone(),
        );
        registry.register("open_cases", "Open alarm cases", m.open_cases.clone());
        registry.register(
            "firmware_devices",
            "Devices of the current firmware rollout, by state",
            m.firmware_devices.clone(),
        );
        registry.register(
            "firmware_rollout_paused",
            "1 while the current firmware rollout is paused",
            m.firmware_paused.clone(),
        );
        registry.register(
            "firmware_commands",
            "Firmware commands published to devices, by kind",
            m.firmware_commands.clone(),
        );
        registry.register(
            "firmware_resends",
            "Firmware commands sent again for want of an answer within resend_after, by kind",
            m.firmware_resends.clone(),
        );
        registry.register(
            "firmware_requests_refused",
            "Firmware rollout requests refused, by reason",
            m.firmware_refused.clone(),
        );
        registry.register(
            "coap_answers",
            "CoAP requests of NB-IoT devices answered, by what the answer carried",
            m.coap_answers.clone(),
        );
        registry.register(
            "coap_retransmissions",
            "Retransmitted CoAP requests answered again without being ingested twice",
            m.coap_retransmissions.clone(),
        );
        registry.register(
            "store_unwritable",
            "1 while a store (spool, cases, outbox) cannot write to its disk",
            m.store_unwritable.clone(),
        );
        registry.register(
            "store_held_in_memory_records",
            "Records a store holds in memory because its disk does not take writes",
            m.store_held.clone(),
        );
        registry.register("messages_accepted", "Messages accepted and stored, by kind", m.accepted.clone());
        registry.register("messages_rejected", "Messages rejected, by reason", m.rejected.clone());
        registry.register(
            "messages_duplicate",
            "Duplicates acknowledged again, not stored again",
            m.duplicates.clone(),
        );
        registry.register(
            "unknown_device_messages",
            "Messages from devices missing from the registry",
            m.unknown_device_messages.clone(),
        );
        registry.register("unknown_devices", "Distinct unknown devices seen", m.unknown_devices.clone());
        registry.register(
            "unplaced_signals",
            "Alarms, faults and camera events of unknown devices raised as unplaced-device cases",
            m.unplaced_signals.clone(),
        );
        registry.register(
            "unauthenticated_accepted",
            "Messages accepted without a verified signature (keyless or migrating devices), by kind",
            m.unauthenticated.clone(),
        );
        registry.register(
            "skewed_timestamps",
            "Messages accepted with a device clock far ahead of or behind the gateway's, by direction",
            m.skewed_timestamps.clone(),
        );
        registry.register(
            "mqtt_connected",
            "1 while the MQTT session is connected and its subscriptions granted",
            m.mqtt_connected.clone(),
        );
        registry.register(
            "mqtt_connect_failures",
            "Failed MQTT connection attempts",
            m.mqtt_connect_failures.clone(),
        );
        registry.register("spool_bytes", "Bytes in the spool", m.spool_bytes.clone());
        registry.register(
            "spool_depth_records",
            "Records not yet written to a destination",
            m.spool_depth.clone(),
        );
        registry.register(
            "spool_age_seconds",
            "Age of the oldest record not yet written to a destination",
            m.spool_age_seconds.clone(),
        );
        registry.register(
            "spool_shed_records",
            "Telemetry records shed because the spool was full",
            m.spool_shed.clone(),
        );
        registry.register(
            "destination_lines_written",
            "Lines written to a destination",
            m.lines_written.clone(),
        );
        registry.register("destination_write_failures", "Failed write requests", m.write_failures.clone());
        registry.register(
            "destination_dead_lettered_lines",
            "Lines moved to the dead-letter file",
            m.dead_lettered.clone(),
        );
        registry.register(
            "destination_write_seconds",
            "Duration of the last successful write",
            m.write_seconds.clone(),
        );
        registry.register(
            "destination_held",
            "1 while a destination refuses writes (credentials, permissions, database)",
            m.destination_held.clone(),
        );
        registry.register("modbus_polls_ok", "Successful Modbus polls", m.modbus_polls_ok.clone());
        registry.register("modbus_polls_failed", "Failed Modbus polls", m.modbus_polls_failed.clone());
        registry.register("modbus_failing", "1 while a Modbus device is failing", m.modbus_failing.clone());
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        self.refresh_stores();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Copies the stores' write health into their gauges.
    pub fn refresh_stores(&self) {
        for store in crate::durability::Store::ALL {
            let label = StoreLabel { store: store.name() };
            self.store_unwritable.get_or_create(&label).set(i64::from(self.stores.is_unwritable(store)));
            self.store_held.get_or_create(&label).set(self.stores.held(store) as i64);
        }
    }

    /// Whether an event of this `key` may be logged now, and how many were suppressed since
    /// the last line.
    pub fn may_log(&self, key: &'static str) -> Option<u64> {
        let mut limiter = self.limiter.lock().unwrap();
        let now = Instant::now();
        match limiter.get_mut(key) {
            None => {
                limiter.insert(key, (now, 0));
                Some(0)
            }
            Some((last, suppressed)) if now.duration_since(*last) >= LOG_EVERY => {
                let n = *suppressed;
                *last = now;
                *suppressed = 0;
                Some(n)
            }
            Some((_, suppressed)) => {
                *suppressed += 1;
                None
            }
        }
    }

    /// Counts since start.
    pub fn counts(&self) -> Counts {
        self.counts.lock().unwrap().clone()
    }

    /// The outbox's queue depth now and its counts since it opened. `shown` holds what was
    /// published before (counts, and the depth labels), so counters move by the difference and
    /// a channel and severity that drained reads 0 rather than its last depth.
    pub fn outbox(
        &self,
        depth: &[firegrid_notify::Depth],
        stats: &firegrid_notify::outbox::Stats,
        shown: &mut OutboxShown,
    ) {
        let mut labels = std::collections::HashSet::new();
        for d in depth {
            let label = ChannelSeverityLabel { channel: d.target.clone(), severity: d.severity.clone() };
            self.outbox_pending.get_or_create(&label).set(d.pending as i64);
            labels.insert(label);
        }
        for gone in shown.depth.difference(&labels) {
            self.outbox_pending.get_or_create(gone).set(0);
        }
        shown.depth = labels;
        for (channel, &n) in &stats.held {
            let before = shown.stats.held.get(channel).copied().unwrap_or(0);
            self.notifications_held
                .get_or_create(&ChannelLabel { channel: channel.clone() })
                .inc_by(n - before);
        }
        self.reminders_superseded.inc_by(stats.superseded - shown.stats.superseded);
        shown.stats = stats.clone();
    }

    /// A message was rejected.
    pub fn rejected(&self, reason: &'static str, topic: &str, error: &dyn std::fmt::Display) {
        self.rejected.get_or_create(&ReasonLabel { reason: reason.to_owned() }).inc();
        *self.counts.lock().unwrap().rejected.entry(reason).or_default() += 1;
        if let Some(suppressed) = self.may_log(reason) {
            tracing::warn!(reason, topic, %error, suppressed, "Message rejected.");
        }
    }

    /// A message was accepted and stored.
    pub fn accepted(&self, kind: &'static str) {
        self.accepted_n(kind, 1);
    }

    /// `n` messages of `kind` accepted (a batch's, counted at once: the label lookup and the
    /// lock are per batch, not per message).
    pub fn accepted_n(&self, kind: &'static str, n: u64) {
        self.accepted.get_or_create(&KindLabel { kind: kind.to_owned() }).inc_by(n);
        *self.counts.lock().unwrap().accepted.entry(kind).or_default() += n;
    }

    /// A message accepted although its device clock is off by `skew`: counted by direction,
    /// logged rate-limited.
    pub fn clock_skew(&self, device: &str, skew: firegrid_protocol::ClockSkew) {
        self.skewed_timestamps.get_or_create(&DirectionLabel { direction: skew.direction() }).inc();
        if let Some(suppressed) = self.may_log("clock_skew") {
            tracing::warn!(
                device,
                direction = skew.direction(),
                off_by_ms = skew.ms(),
                suppressed,
                "Device clock far off the gateway's; message accepted and stamped with the gateway's time."
            );
        }
    }

    /// An unknown device raised or cleared a condition: it goes to the unplaced desk.
    pub fn unplaced_signal(&self, device: &str, desk: &str) {
        self.unplaced_signals.inc();
        if let Some(suppressed) = self.may_log("unplaced_signal") {
            tracing::warn!(
                device,
                desk,
                suppressed,
                "Alarm from a device missing from the registry: an unverified case at the unplaced desk."
            );
        }
    }

    /// A message accepted without a verified signature: counted by kind, logged rate-limited.
    pub fn unauthenticated(&self, kind: &'static str, device: &str) {
        self.unauthenticated.get_or_create(&KindLabel { kind: kind.to_owned() }).inc();
        if let Some(suppressed) = self.may_log("unauthenticated") {
            tracing::warn!(
                device,
                kind,
                suppressed,
                "Message accepted without a signature: the device has no key, or its unsigned messages are still allowed."
            );
        }
    }

    /// A message from a device missing from the registry.
    pub fn unknown_device(&self, device: &str, distinct: usize) {
        self.unknown_device_messages.inc();
        self.unknown_devices.set(distinct as i64);
        if let Some(suppressed) = self.may_log("unknown_device") {
            tracing::warn!(
                device,
                distinct_unknown_devices = distinct,
                suppressed,
                "Message from a device missing from the registry; accepted and listed."
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_count_and_encode() {
        let m = Metrics::new();
        m.rejected("malformed", "fg/v1/v/d/up/state", &"bad");
        m.rejected("malformed", "fg/v1/v/d/up/state", &"bad");
        m.accepted("state");
        let text = m.encode();
        assert!(text.contains(r#"firegrid_messages_rejected_total{reason="malformed"} 2"#), "{text}");
        assert!(text.contains(r#"firegrid_messages_accepted_total{kind="state"} 1"#), "{text}");
    }

    #[test]
    fn outbox_depth_and_counts_are_published_and_a_drained_queue_reads_zero() {
        use firegrid_notify::Depth;
        let m = Metrics::new();
        let mut shown = OutboxShown::default();
        let depth = |target: &str, severity: &str, pending| Depth {
            target: target.into(),
            severity: severity.into(),
            pending,
        };
        let mut stats = firegrid_notify::outbox::Stats::default();
        stats.held.insert("wecom".into(), 3);
        stats.superseded = 2;
        m.outbox(&[depth("wecom", "fault", 500), depth("wecom", "fire", 1)], &stats, &mut shown);
        stats.held.insert("wecom".into(), 5);
        m.outbox(&[depth("wecom", "fault", 490)], &stats, &mut shown);
        let text = m.encode();
        for line in [
            r#"firegrid_notification_outbox_pending{channel="wecom",severity="fault"} 490"#,
            r#"firegrid_notification_outbox_pending{channel="wecom",severity="fire"} 0"#,
            r#"firegrid_notification_deliveries_held_total{channel="wecom"} 5"#,
            "firegrid_notification_reminders_superseded_total 2",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn logs_are_rate_limited_per_key() {
        let m = Metrics::new();
        assert_eq!(m.may_log("a"), Some(0));
        assert_eq!(m.may_log("a"), None);
        assert_eq!(m.may_log("a"), None);
        assert_eq!(m.may_log("b"), Some(0));
        m.limiter.lock().unwrap().get_mut("a").unwrap().0 -= LOG_EVERY;
        assert_eq!(m.may_log("a"), Some(2), "reports what it suppressed");
    }
}
