//! The MQTT side: one rumqttc session at a time, draining the outbox in order.
//!
//! Every connection attempt builds a fresh rumqttc client, because the last will carries its
//! own sequence number, reserved at connect time; rumqttc's own retransmission state is
//! therefore never carried over, and what to send again is decided here, from the outbox.
//!
//! **Order and window.** Messages are published oldest first, and at most [`WINDOW`] sequence
//! numbers beyond the oldest unacknowledged one, and never a newer boot's message while an
//! older boot's is unacknowledged. The gateway's anti-replay window is 128 sequence numbers
//! wide and rejects earlier boots once it has seen a later one (`gateway/src/admission.rs`);
//! staying at half its width means a resent message is always recognised as a duplicate (and
//! acknowledged again) rather than rejected as a replay, which would leave it in the outbox
//! forever.
//!
//! **Acknowledgement.** With [`Delivery::GatewayAck`] a message leaves the outbox when the
//! gateway's `down/ack` names its `(boot, seq)`; one without an ack after `ack_timeout` is
//! published again, and after a reconnect everything unacknowledged is. With
//! [`Delivery::Broker`] the PUBACK removes it (rumqttc reports each publish's packet id as it
//! goes out, in order, which is how a PUBACK is matched to its message).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use backon::BackoffBuilder;
use firegrid_protocol::{
    AckResult, BootAnnouncement, CommandAck, DeviceId, DeviceKey, Downlink, DownlinkBody, DownlinkGuard,
    Encoding, Limits, Status, Topic, TopicKind, Uplink, UplinkBody, UplinkKind, VillageId, downlink_filter,
};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Delivery, MqttConfig};
use crate::queue::UplinkQueue;
use crate::stats::AgentStats;

/// Sequence numbers in flight beyond the oldest unacknowledged message. See the module
/// documentation.
pub const WINDOW: u32 = 64;

/// Identity of an uplink: `(boot, seq)`.
type Id = (u16, u32);

/// Wall-clock time in Unix ms, 0 when the clock is before 1970 (the protocol's "no time").
pub(crate) fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Drains an [`UplinkQueue`] to the broker. See the module documentation.
pub(crate) struct Publisher {
    pub config: MqttConfig,
    pub village: VillageId,
    pub dev: DeviceId,
    pub queue: Arc<Mutex<UplinkQueue>>,
    pub wake: Arc<Notify>,
    pub stats: Arc<AgentStats>,
    /// The camera's key: with one, every downlink must pass `guard` first.
    pub key: Option<DeviceKey>,
    /// Commands accepted this boot (kept across connections, so a command replayed after a
    /// reconnect is still refused).
    pub guard: Mutex<DownlinkGuard>,
}

/// State of one connection.
#[derive(Default)]
struct Session {
    connected: bool,
    /// Published and not yet acknowledged, with the time of the last send.
    in_flight: BTreeMap<Id, Instant>,
    /// Publishes handed to rumqttc whose packet id is not known yet, in order (`None` for
    /// `status`, which is not in the outbox).
    awaiting_pkid: VecDeque<Option<Id>>,
    by_pkid: HashMap<u16, Id>,
}

impl Publisher {
    fn lock(&self) -> std::sync::MutexGuard<'_, UplinkQueue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn encoding(&self) -> Encoding {
        self.config.encoding.into()
    }

    /// Runs sessions until `shutdown`, reconnecting with backoff and jitter.
    pub async fn run(self, shutdown: CancellationToken) {
        let new_backoff = || {
            backon::ExponentialBuilder::default()
                .with_min_delay(self.config.reconnect_min)
                .with_max_delay(self.config.reconnect_max)
                .with_jitter()
                .without_max_times()
                .build()
        };
        let mut backoff = new_backoff();
        let mut reserved = None;
        loop {
            let was_connected = self.session(&shutdown, &mut reserved).await;
            if shutdown.is_cancelled() {
                return;
            }
            if was_connected {
                backoff = new_backoff();
            }
            let wait = backoff.next().unwrap_or(self.config.reconnect_max);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn topic(&self, kind: UplinkKind) -> String {
        Topic::uplink(self.village.clone(), self.dev.clone(), kind).to_buf().to_string()
    }

    fn payload(&self, msg: &Uplink) -> Option<Vec<u8>> {
        let mut buf = [0u8; firegrid_protocol::MAX_PAYLOAD];
        match msg.encode(self.encoding(), &mut buf) {
            Ok(bytes) => Some(bytes.to_vec()),
            Err(e) => {
                // Cannot happen for messages this agent builds; never block the queue on one.
                tracing::error!(seq = msg.seq, error = %e, "Could not encode an uplink.");
                None
            }
        }
    }

    /// One connection, from connect to loss (or shutdown). Returns whether it got connected.
    ///
    /// `reserved` holds the last will and the `status` `online` of the next connection,
    /// stamped together so that their sequence numbers are adjacent, and kept across failed
    /// attempts: a broker that is down for an hour costs two sequence numbers, not one per
    /// retry, and a receiver can tell the will's reserved number from a lost message (it is
    /// the one just before a `status` `online`).
    async fn session(&self, shutdown: &CancellationToken, reserved: &mut Option<(Uplink, Uplink)>) -> bool {
        let client_id = self.config.client_id.clone().unwrap_or_else(|| self.dev.to_string());
        let mut options = MqttOptions::new(client_id, self.config.host.clone(), self.config.port);
        options.set_keep_alive(self.config.keep_alive).set_clean_session(true);
        if let Some(user) = &self.config.username {
            options.set_credentials(user.clone(), self.config.password.clone().unwrap_or_default());
        }
        if self.config.status {
            let (will, _) = reserved.get_or_insert_with(|| {
                let mut queue = self.lock();
                let will = queue.stamp(UplinkBody::Status(Status { online: false }), 0);
                let online = queue.stamp(UplinkBody::Status(Status { online: true }), 0);
                (will, online)
            });
            // Composed now, published whenever the connection drops: no time is known.
            if let Some(payload) = self.payload(will) {
                options.set_last_will(LastWill::new(
                    self.topic(UplinkKind::Status),
                    payload,
                    QoS::AtLeastOnce,
                    false,
                ));
            }
        }
        let (client, mut eventloop) = AsyncClient::new(options, 2 * WINDOW as usize + 16);
        let mut session = Session::default();
        let mut resend =
            tokio::time::interval((self.config.ack_timeout / 4).max(std::time::Duration::from_millis(50)));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return session.connected,
                event = eventloop.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        session = Session { connected: true, ..Session::default() };
                        self.stats.broker_connected();
                        self.on_connect(&client, &mut session, reserved.take().map(|(_, online)| online));
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        self.on_downlink(&publish.topic, &publish.payload, &mut session);
                        self.fill_window(&client, &mut session);
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(id) = session.by_pkid.remove(&ack.pkid)
                            && self.config.delivery == Delivery::Broker
                        {
                            session.in_flight.remove(&id);
                            self.remove(id);
                            self.fill_window(&client, &mut session);
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Some(Some(id)) = session.awaiting_pkid.pop_front() {
                            session.by_pkid.insert(pkid, id);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.stats.broker_failed(&e);
                        return session.connected;
                    }
                },
                () = self.wake.notified(), if session.connected => self.fill_window(&client, &mut session),
                _ = resend.tick(), if session.connected => {
                    let now = Instant::now();
                    let before = session.in_flight.len();
                    session.in_flight.retain(|_, sent| now.duration_since(*sent) < self.config.ack_timeout);
                    if session.in_flight.len() != before {
                        self.fill_window(&client, &mut session);
                    }
                }
            }
        }
    }

    fn on_connect(&self, client: &AsyncClient, session: &mut Session, online: Option<Uplink>) {
        let filter = downlink_filter(&self.village, &self.dev);
        if let Err(e) = client.try_subscribe(filter.as_str(), QoS::AtLeastOnce) {
            tracing::error!(error = %e, "Could not subscribe to downlinks.");
        }
        // Before the backlog: the gateway learns at once that the camera is back.
        if let Some(mut status) = online {
            status.ts_ms = wall_ms();
            self.lock().sign(&mut status);
            if let Some(payload) = self.payload(&status)
                && client
                    .try_publish(self.topic(UplinkKind::Status), QoS::AtLeastOnce, false, payload)
                    .is_ok()
            {
                session.awaiting_pkid.push_back(None);
            }
        }
        self.fill_window(client, session);
    }

    /// Publishes what the window allows and is not in flight.
    fn fill_window(&self, client: &AsyncClient, session: &mut Session) {
        let to_send: Vec<Uplink> = {
            let queue = self.lock();
            let mut pending = queue.outbox().pending().peekable();
            let Some(&oldest) = pending.peek() else {
                return;
            };
            let (boot, first_seq) = (oldest.boot, oldest.seq);
            pending
                .take_while(|m| m.boot == boot && m.seq.wrapping_sub(first_seq) < WINDOW)
                .filter(|m| !session.in_flight.contains_key(&(m.boot, m.seq)))
                .cloned()
                .collect()
        };
        for msg in to_send {
            let Some(payload) = self.payload(&msg) else {
                continue;
            };
            match client.try_publish(self.topic(msg.kind()), QoS::AtLeastOnce, false, payload) {
                Ok(()) => {
                    session.in_flight.insert((msg.boot, msg.seq), Instant::now());
                    session.awaiting_pkid.push_back(Some((msg.boot, msg.seq)));
                    self.stats.published();
                }
                // rumqttc's request queue is full: the rest goes with the next PUBACK or ack.
                Err(_) => break,
            }
        }
    }

    fn remove(&self, (boot, seq): Id) {
        let mut queue = self.lock();
        match queue.outbox_mut().ack(boot, seq) {
            Ok(true) => self.stats.acknowledged(boot, seq, queue.outbox().len()),
            Ok(false) => {}
            Err(e) => tracing::error!(boot, seq, error = %e, "Could not record an acknowledgement."),
        }
    }

    fn on_downlink(&self, topic: &str, payload: &[u8], session: &mut Session) {
        let Ok(parsed) = Topic::parse(topic) else {
            return;
        };
        let TopicKind::Down(kind) = parsed.kind else {
            return;
        };
        if parsed.device != self.dev {
            return;
        }
        self.stats.downlink(kind.as_str());
        let limits = Limits::default();
        let cmd = match Downlink::decode(payload, Encoding::detect(payload), &limits) {
            Ok(cmd) => cmd,
            Err(e) => {
                tracing::warn!(kind = kind.as_str(), error = %e, "Ignored an undecodable downlink.");
                return;
            }
        };
        if let Some(key) = &self.key {
            let boot = self.lock().boot();
            let admitted = self.guard.lock().unwrap_or_else(|p| p.into_inner()).admit(
                &cmd,
                &self.village,
                &self.dev,
                boot,
                key,
            );
            if let Err(reason) = admitted {
                // Refused: changes nothing and is not answered.
                self.stats.downlink_refused(kind.as_str(), reason);
                return;
            }
        }
        let result = match (&cmd.body, cmd.validate()) {
            (DownlinkBody::Ack { boot, seq }, _) => {
                if self.config.delivery == Delivery::GatewayAck {
                    session.in_flight.remove(&(*boot, *seq));
                    self.remove((*boot, *seq));
                }
                return;
            }
            // Only a signed answer proves the boot; a camera without a key has none to give.
            (DownlinkBody::Challenge { nonce }, _) => {
                if self.key.is_some() {
                    let answer = UplinkBody::Boot(BootAnnouncement { nonce: *nonce });
                    let queued = self.lock().enqueue(answer, wall_ms());
                    match queued {
                        Ok(msg) => {
                            self.stats.queued(msg.kind().as_str(), msg.seq, self.lock().outbox().len())
                        }
                        Err(e) => self.stats.queue_failed(UplinkKind::Boot.as_str(), &e),
                    }
                }
                return;
            }
            (_, Err(_)) => AckResult::Rejected,
            // Sounders, hush, thresholds and heartbeat periods belong to detectors; a camera's
            // analytics are configured on the camera.
            (_, Ok(())) => AckResult::Unsupported,
        };
        let answer = UplinkBody::CommandAck(CommandAck { cmd_seq: cmd.seq, result });
        let queued = self.lock().enqueue(answer, wall_ms());
        match queued {
            Ok(msg) => self.stats.queued(msg.kind().as_str(), msg.seq, self.lock().outbox().len()),
            Err(e) => self.stats.queue_failed(UplinkKind::CommandAck.as_str(), &e),
        }
    }
}
