//! One MQTT session: the rumqttc event loop, and the task that processes what it receives.
//!
//! Two tasks, because rumqttc's `poll()` drives all I/O, acknowledgements included: awaiting
//! `ack` or `publish` inside the task that polls would deadlock once the request channel is
//! full. The poll task forwards each publish over an unbounded channel and never waits; the
//! channel is bounded in practice by the broker, which sends at most its in-flight window of
//! QoS 1 messages before it gets acknowledgements, and acknowledgements only come after the
//! messages are stored.
//!
//! Broker acknowledgements (PUBACK) go back to the poll task over a channel too, and the poll
//! task writes every one that is waiting into the connection and flushes once. rumqttc's
//! `AsyncClient::ack` would flush each acknowledgement as a write of its own (rumqtt issue
//! #810): one system call and one TCP segment per message for the gateway and for the broker,
//! which cost a third of the ingest rate (measured: a bare subscriber acknowledging through
//! `ack` from a second task drained 87-137k msg/s where it drained 141-230k msg/s acking
//! automatically, `firegrid-bench ingest`; BENCHMARKS.md). An acknowledgement is only written
//! on the connection its message arrived on: after a reconnect the broker redelivers what was
//! not acknowledged, as rumqttc itself does with queued `ack` requests.
//!
//! rumqttc reconnects at once in a tight loop when a connection fails, so the poll task
//! sleeps with exponential backoff and jitter between attempts, and re-subscribes whenever the
//! broker answers without the session (`session_present = false`: the broker restarted
//! without persistence, or the session expired).

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Packet, PubAck, Publish, QoS, SubscribeReasonCode};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::{MqttConfig, Session};
use crate::alarm::lease::Lease;
use crate::ingest::{Accepted, Ingest, Outcome};
use crate::metrics::{Metrics, SessionLabel};

use crate::clock::wall_ms as now_ms;

/// Batches of acknowledgements written per flush at most.
const ACK_BATCHES_PER_FLUSH: usize = 16;

/// A publish and the connection it arrived on (counted from 1 per session run).
struct Received {
    connection: u64,
    publish: Publish,
}

/// A broker acknowledgement the processing task asks the poll task to send.
struct BrokerAck {
    connection: u64,
    pkid: u16,
}

/// Writes the waiting acknowledgements of the current `connection` and flushes once. Those of
/// an earlier connection are dropped: the broker redelivers their messages on the resumed
/// session, and the duplicate check answers them without storing anything twice.
async fn send_acks(eventloop: &mut EventLoop, connection: u64, acks: &mut Vec<Vec<BrokerAck>>) {
    let Some(network) = eventloop.network.as_mut() else {
        acks.clear();
        return;
    };
    let mut written = 0;
    for ack in acks.drain(..).flatten() {
        if ack.connection == connection {
            if network.write(Packet::PubAck(PubAck::new(ack.pkid))).await.is_err() {
                // The connection is failing; the next poll reports it and reconnects.
                return;
            }
            written += 1;
        }
    }
    if written > 0 {
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, network.flush()).await;
    }
}

/// How long one flush of acknowledgements may take before the connection is left to fail.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs one session until `shutdown` is cancelled, then stops taking messages, finishes and
/// acknowledges what it has, and disconnects. Messages the broker sent but the gateway did
/// not take stay unacknowledged and are redelivered to the persistent session on the next
/// start. Neither the session nor its downlink connection reconnects once `lease` has run out
/// (a gateway that woke from a freeze after a standby took its sessions over); the session then
/// ends at once, with an error.
pub async fn run_session(
    session: Session,
    cfg: MqttConfig,
    ingest: Arc<Ingest>,
    handoff: mpsc::UnboundedSender<Accepted>,
    metrics: Arc<Metrics>,
    lease: Arc<Lease>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let filters = cfg.filters(session)?;
    let label = SessionLabel { session: session.name().to_owned() };
    let mut opts = cfg.options(cfg.client_id(session)).map_err(|e| format!("MQTT TLS: {e}"))?;
    opts.set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(cfg.max_packet_bytes, cfg.max_packet_bytes);
    // Broker acknowledgements queue here until the poll task sends them.
    let (client, mut eventloop) = AsyncClient::new(opts, 4 * cfg.max_batch.max(256));
    eventloop.network_options.set_connection_timeout(5);
    // Acknowledgements leave in small writes after each batch; with Nagle's algorithm they
    // would wait for the peer's delayed ACK (40 ms on Linux), capping ingest at a few
    // thousand messages per second and adding that much to every alarm.
    eventloop.network_options.set_tcp_nodelay(true);

    // Downlink acknowledgements to devices leave through a connection of their own: its
    // event loop runs beside the session's on the other core, so the session's loop carries
    // only the broker acknowledgements (measured: gateway ingest +15 %, 107-116k instead of
    // 89-104k msg/s, `firegrid-bench ingest`). Its session is clean: a `down/ack` lost in a
    // disconnect costs one retransmission by the device, answered by the duplicate check.
    let mut down_opts =
        cfg.options(format!("{}-down", cfg.client_id(session))).map_err(|e| format!("MQTT TLS: {e}"))?;
    down_opts.set_clean_session(true);
    let (downlinks, mut down_loop) = AsyncClient::new(down_opts, 4 * cfg.max_batch.max(256));
    down_loop.network_options.set_tcp_nodelay(true);
    let down_stop = CancellationToken::new();
    let down_task = {
        let stop = down_stop.clone();
        let max = cfg.max_backoff;
        let lease = lease.clone();
        tokio::spawn(async move {
            let mut waits = crate::retry::backoff(Duration::from_millis(100), max);
            loop {
                tokio::select! {
                    polled = down_loop.poll() => match polled {
                        Ok(_) => {}
                        Err(_) => {
                            let wait = waits.next().unwrap_or(max);
                            tokio::select! {
                                _ = tokio::time::sleep(wait) => {}
                                _ = stop.cancelled() => return,
                            }
                            if !lease.holds() {
                                return;
                            }
                        }
                    },
                    _ = stop.cancelled() => return,
                }
            }
        })
    };

    let (tx, rx) = mpsc::unbounded_channel();
    let (broker_acks, mut acks_rx) = mpsc::unbounded_channel();
    let reset = CancellationToken::new();
    let mut pipeline = tokio::spawn(process_loop(
        session,
        Acks { broker: broker_acks, qos2: client.clone(), devices: downlinks },
        rx,
        ingest,
        handoff,
        cfg.max_batch,
        reset.clone(),
    ));

    let new_backoff = || crate::retry::backoff(Duration::from_millis(100), cfg.max_backoff);
    let mut backoff = new_backoff();
    let name = session.name();
    let mut connection = 0u64;
    let mut acks = Vec::with_capacity(ACK_BATCHES_PER_FLUSH);
    // Registered once: a `cancelled()` future made anew in every turn of the loop would lock
    // the token's waiter list twice per message.
    let stopping = shutdown.cancelled();
    let resetting = reset.cancelled();
    tokio::pin!(stopping, resetting);
    loop {
        // Cancelling `poll` for the acknowledgements loses nothing: with manual
        // acknowledgements it awaits reads (buffered by its framing), flushes (the bytes stay
        // buffered and go with the next flush) and the write of one of its own few requests
        // (subscribe, disconnect), which completes at once unless the write buffer is over its
        // limit: only when the broker has stopped reading, and then the connection is failing.
        let event = tokio::select! {
            event = eventloop.poll() => event,
            n = acks_rx.recv_many(&mut acks, ACK_BATCHES_PER_FLUSH) => {
                if n == 0 {
                    // The processing task stopped, which it does only after cancelling `reset`.
                    break;
                }
                send_acks(&mut eventloop, connection, &mut acks).await;
                continue;
            }
            _ = &mut stopping => break,
            _ = &mut resetting => break,
        };
        match event {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                // rumqttc reads up to ten packets at a time and hands them out one per `poll`;
                // the publishes among those it holds go on together, so the processing task
                // wakes once per read, not once per message. Other packets it holds wait for
                // the next `poll`, in their order.
                let mut arrived = vec![Received { connection, publish }];
                while let Some(Event::Incoming(Packet::Publish(_))) = eventloop.state.events.front() {
                    if let Some(Event::Incoming(Packet::Publish(publish))) =
                        eventloop.state.events.pop_front()
                    {
                        arrived.push(Received { connection, publish });
                    }
                }
                // Cannot fail while the processing task runs; if it stopped, the messages
                // stay unacknowledged and come back after the reconnect below.
                let _ = tx.send(arrived);
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                connection += 1;
                backoff = new_backoff();
                tracing::info!(
                    session = name,
                    session_present = ack.session_present,
                    "MQTT session connected."
                );
                // Connected means receiving: with a session the broker kept, at once; with a
                // new one, once the broker has granted the subscription (until then it drops
                // what devices publish, so readiness must not be claimed earlier).
                if ack.session_present {
                    metrics.mqtt_connected.get_or_create(&label).set(1);
                } else {
                    let subs =
                        filters.iter().map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                    if let Err(error) = client.try_subscribe_many(subs) {
                        tracing::error!(session = name, %error, "Cannot queue the subscription.");
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack.return_codes.iter().any(|c| matches!(c, SubscribeReasonCode::Failure)) {
                    tracing::error!(session = name, ?filters, "The broker refused a subscription.");
                } else {
                    metrics.mqtt_connected.get_or_create(&label).set(1);
                }
            }
            Ok(_) => {}
            Err(error) => {
                metrics.mqtt_connected.get_or_create(&label).set(0);
                metrics.mqtt_connect_failures.get_or_create(&label).inc();
                let wait = backoff.next().unwrap_or(cfg.max_backoff);
                if let Some(suppressed) =
                    metrics.may_log(if session == Session::Alarm { "mqtt_alarm" } else { "mqtt_telemetry" })
                {
                    tracing::warn!(
                        session = name,
                        %error,
                        retry_in_ms = wait.as_millis() as u64,
                        suppressed,
                        "MQTT connection lost or refused; reconnecting."
                    );
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => break,
                }
                if !lease.holds() {
                    // No draining: that would poll, and polling reconnects.
                    down_stop.cancel();
                    pipeline.abort();
                    return Err("this gateway's lease on the case store ran out; not reconnecting".into());
                }
            }
        }
    }

    // Stop taking messages; let the processing task finish and acknowledge what it holds,
    // polling meanwhile so that the acknowledgements reach the broker.
    drop(tx);
    let drained =
        drive_until(&mut eventloop, &mut pipeline, &mut acks_rx, connection, Duration::from_secs(10)).await;
    if !drained {
        tracing::warn!(session = name, "Processing did not finish in time; the broker will redeliver.");
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(event) = eventloop.poll().await {
            if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
    down_stop.cancel();
    let _ = down_task.await;
    metrics.mqtt_connected.get_or_create(&label).set(0);
    if reset.is_cancelled() && !shutdown.is_cancelled() {
        return Err("message processing stopped (the spool could not store messages); session stopped".into());
    }
    Ok(())
}

/// Polls the event loop and sends the acknowledgements `task` queues until it finishes.
async fn drive_until(
    eventloop: &mut EventLoop,
    task: &mut tokio::task::JoinHandle<()>,
    acks_rx: &mut mpsc::UnboundedReceiver<Vec<BrokerAck>>,
    connection: u64,
    limit: Duration,
) -> bool {
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    let mut acks = Vec::with_capacity(ACK_BATCHES_PER_FLUSH);
    loop {
        tokio::select! {
            _ = &mut *task => {
                // Send what the task queued last, and let rumqttc flush its own requests.
                while acks_rx.recv_many(&mut acks, ACK_BATCHES_PER_FLUSH).await > 0 {
                    send_acks(eventloop, connection, &mut acks).await;
                }
                let _ = tokio::time::timeout(Duration::from_millis(200), async {
                    while eventloop.poll().await.is_ok() {}
                })
                .await;
                return true;
            }
            n = acks_rx.recv_many(&mut acks, ACK_BATCHES_PER_FLUSH) => {
                if n > 0 {
                    send_acks(eventloop, connection, &mut acks).await;
                }
            }
            event = eventloop.poll() => {
                if event.is_err() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            _ = &mut deadline => return false,
        }
    }
}

/// Takes publishes in arrival order, in batches, through [`Ingest::process`], then
/// acknowledges them in the same order and hands the fresh ones on.
/// Where acknowledgements go: to the broker through the poll task, to the devices
/// (`down/ack`) on a connection of their own.
struct Acks {
    /// One batch's acknowledgements at a time, so the poll task wakes and flushes once per
    /// batch, not once per message.
    broker: mpsc::UnboundedSender<Vec<BrokerAck>>,
    /// rumqttc itself, for the QoS 2 handshake it tracks (the subscriptions are QoS 1, so a
    /// broker never sends QoS 2; kept correct all the same).
    qos2: AsyncClient,
    devices: AsyncClient,
}

impl Acks {
    /// Acknowledges a stored batch to the broker, in its order; `false` once the session is
    /// going down.
    async fn to_broker(&self, batch: &[Received]) -> bool {
        let mut at_least_once = Vec::with_capacity(batch.len());
        for received in batch {
            match received.publish.qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => at_least_once
                    .push(BrokerAck { connection: received.connection, pkid: received.publish.pkid }),
                QoS::ExactlyOnce => {
                    if self.qos2.ack(&received.publish).await.is_err() {
                        return false;
                    }
                }
            }
        }
        at_least_once.is_empty() || self.broker.send(at_least_once).is_ok()
    }
}

async fn process_loop(
    session: Session,
    acks: Acks,
    mut rx: mpsc::UnboundedReceiver<Vec<Received>>,
    ingest: Arc<Ingest>,
    handoff: mpsc::UnboundedSender<Accepted>,
    max_batch: usize,
    reset: CancellationToken,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = rx.recv().await {
        // What has arrived meanwhile joins the batch, up to `max_batch` (exceeded by at most
        // one read's worth of messages).
        batch.extend(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        if batch.len() >= max_batch {
            ingest.backlog().note_full_batch();
        }
        // `process` blocks: it fsyncs an alarm's batch (1 to 20 ms on flash) while holding the
        // spool's lock. On the blocking pool, that wait holds no runtime worker, so the other
        // session, the webhook deliveries and the HTTP API go on meanwhile.
        let owned = std::mem::take(&mut batch);
        let worker = ingest.clone();
        let (owned, processed) = tokio::task::spawn_blocking(move || {
            let pairs: Vec<(&str, &[u8])> =
                owned.iter().map(|r: &Received| (r.publish.topic.as_str(), &r.publish.payload[..])).collect();
            let processed = worker.process(&pairs, now_ms());
            (owned, processed)
        })
        .await
        .expect("ingest does not panic");
        batch = owned;
        let processed = match processed {
            Ok(processed) => processed,
            Err(error) => {
                // Nothing of this batch is acknowledged: the broker keeps it for the
                // persistent session and redelivers it after the reconnect.
                tracing::error!(session = session.name(), %error, "Cannot store messages; reconnecting so the broker redelivers them.");
                reset.cancel();
                return;
            }
        };
        if !acks.to_broker(&batch).await {
            reset.cancel();
            return;
        }
        for outcome in processed.outcomes {
            // Only alarm- and event-class messages are answered with a `down/ack`; telemetry
            // (`Outcome::Stored`) ends with the broker acknowledgement above.
            if let Outcome::Accepted { ack_topic, ack_payload }
            | Outcome::Challenged { topic: ack_topic, payload: ack_payload } = outcome
            {
                // QoS 0. At QoS 1 rumqttc stops taking requests, broker acknowledgements
                // included, while 100 of its own publishes await the broker's answer, so every
                // batch would wait a round trip for its downlinks (measured: 6x slower ingest).
                // A lost acknowledgement costs one retransmission by the device, which the
                // duplicate check answers again without storing anything twice.
                if acks.devices.publish(ack_topic, QoS::AtMostOnce, false, ack_payload).await.is_err() {
                    reset.cancel();
                    return;
                }
            }
        }
        // Acknowledgements of messages held while the spool could not write, durable now.
        for (ack_topic, ack_payload) in processed.released {
            if acks.devices.publish(ack_topic, QoS::AtMostOnce, false, ack_payload).await.is_err() {
                reset.cancel();
                return;
            }
        }
        for accepted in processed.accepted {
            let _ = handoff.send(accepted);
        }
        batch.clear();
    }
}
