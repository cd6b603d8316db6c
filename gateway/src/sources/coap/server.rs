//! The I/O part: the UDP socket, ingest, and the wait for each answer.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use coap_lite::ResponseType;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::CoapConfig;
use super::exchange::{self, Exchanges, Parsed, Reply, Seen};
use super::routes::Routes;
use crate::ingest::{Accepted, Ingest, Outcome};
use crate::metrics::Metrics;

/// Requests judged or waiting for their answer at once, at most. A request holds its place
/// for up to `answer_wait`, so a village's 6,000 detectors all asking at once fit; a flood of
/// requests beyond it is dropped (counted `coap_busy`; a real device retransmits) instead of
/// queueing without bound for ingest's threads.
const IN_FLIGHT: usize = 8_192;

/// Exchanges remembered for retransmissions: a village's 6,000 detectors with a few
/// requests each remembered, at most some 450 bytes an answer (about 15 MB at most,
/// computed, not measured).
const EXCHANGES: usize = 32_768;

/// What the server needs.
pub struct Server {
    /// Its configuration.
    pub config: CoapConfig,
    /// Judges and stores each uplink, as for MQTT.
    pub ingest: Arc<Ingest>,
    /// Where accepted messages go (the firmware tap, liveness, the alarm loop).
    pub handoff: mpsc::UnboundedSender<Accepted>,
    /// The devices reached over CoAP and their waiting commands.
    pub routes: Arc<Routes>,
    /// Counts.
    pub metrics: Arc<Metrics>,
    /// Whether this gateway may answer (it holds the lease); a standby stays silent, and the
    /// device's retransmission reaches whichever gateway holds the address next.
    pub lease: Arc<crate::alarm::lease::Lease>,
}

/// The receive buffer asked for (SO_RCVBUF). Linux's default (`net.core.rmem_default`, about
/// 208 KiB) holds some 200 datagrams: measured, 6,000 detectors of a rollout overflowed it
/// (the kernel's `Udp: RcvbufErrors`) and each lost request cost its device a 2 s
/// retransmission timeout (BENCHMARKS.md, "NB-IoT detectors over CoAP"). The kernel caps it
/// at `net.core.rmem_max`.
pub const RECEIVE_BUFFER: usize = 4 << 20;

/// Binds the socket (an error names the address) so that `firegrid` fails at start, not later,
/// with a receive buffer of [`RECEIVE_BUFFER`] or as much of it as the kernel allows (a
/// warning says how much).
pub fn bind(config: &CoapConfig) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let named = |error: std::io::Error| {
        std::io::Error::new(error.kind(), format!("cannot listen for CoAP on udp {}: {error}", config.listen))
    };
    let socket =
        Socket::new(Domain::for_address(config.listen), Type::DGRAM, Some(Protocol::UDP)).map_err(named)?;
    let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER);
    // Linux reports twice what it grants (its bookkeeping), so half of it is the buffer.
    let granted = socket.recv_buffer_size().unwrap_or(0) / 2;
    if granted < RECEIVE_BUFFER {
        tracing::warn!(
            asked = RECEIVE_BUFFER,
            granted,
            "The CoAP socket's receive buffer is smaller than asked: many NB-IoT detectors waking at once lose requests to retransmission timeouts. Raise net.core.rmem_max (sysctl) to at least the size asked."
        );
    }
    socket.set_nonblocking(true).map_err(named)?;
    socket.bind(&config.listen.into()).map_err(named)?;
    UdpSocket::from_std(socket.into()).map_err(named)
}

/// Serves until `stop`. Each request is handled on its own task: one device's wait for its
/// answer never holds up another's request.
pub async fn run(server: Server, socket: UdpSocket, stop: CancellationToken) {
    let server = Arc::new(server);
    let socket = Arc::new(socket);
    let exchanges = Arc::new(Mutex::new(Exchanges::new(EXCHANGES)));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut own_id: u16 = fastrand::u16(..);
    // A message, a token, the Uri-Path and a header: under 1,500 bytes.
    let mut buf = vec![0u8; firegrid_protocol::MAX_PAYLOAD + 476];
    tracing::info!(listen = %server.config.listen, "Serving NB-IoT firmware transfers over CoAP.");
    loop {
        let (n, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            got = socket.recv_from(&mut buf) => match got {
                Ok(got) => got,
                Err(error) => {
                    // ICMP port unreachable from an earlier send shows up here on some systems.
                    if let Some(suppressed) = server.metrics.may_log("coap_socket") {
                        tracing::warn!(%error, suppressed, "CoAP socket error.");
                    }
                    continue;
                }
            },
        };
        let datagram = &buf[..n];
        if !server.lease.may_act() {
            continue;
        }
        own_id = own_id.wrapping_add(1);
        let now = crate::clock::wall_ms();
        // A datagram that fills the buffer may have been cut short: larger than any message a
        // device may send, so it is counted and dropped, not read.
        let parsed =
            if n == buf.len() { Parsed::Ignore { reason: "oversized" } } else { exchange::parse(datagram) };
        match parsed {
            Parsed::Ignore { reason } => refused(&server.metrics, reason, peer),
            Parsed::Answer { reply, refused: why } => {
                if let Some(reason) = why {
                    refused(&server.metrics, reason, peer);
                }
                let _ = socket.send_to(&reply, peer).await;
            }
            Parsed::Uplink { topic, device, payload, reply } => {
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    refused(&server.metrics, "coap_busy", peer);
                    continue;
                };
                let id = exchange::message_id(datagram).expect("parsed, so it has a header");
                match exchanges.lock().unwrap().check(peer, id, now) {
                    Seen::New => {}
                    Seen::InProgress => {
                        server.metrics.coap_retransmissions.inc();
                        continue;
                    }
                    Seen::Answered(answer) => {
                        server.metrics.coap_retransmissions.inc();
                        let socket = socket.clone();
                        tokio::spawn(async move { socket.send_to(&answer, peer).await });
                        continue;
                    }
                }
                let (server, socket, exchanges) = (server.clone(), socket.clone(), exchanges.clone());
                tokio::spawn(async move {
                    let answer = handle(&server, topic, &device, payload, &reply, own_id).await;
                    drop(permit);
                    exchanges.lock().unwrap().answered(peer, id, &answer);
                    let _ = socket.send_to(&answer, peer).await;
                });
            }
        }
    }
}

fn refused(metrics: &Metrics, reason: &'static str, peer: SocketAddr) {
    let error = format!("from udp {peer}");
    metrics.rejected(reason, "coap", &error);
}

/// Ingests one uplink and waits for the device's next command.
async fn handle(
    server: &Server,
    topic: String,
    device: &str,
    payload: Vec<u8>,
    reply: &Reply,
    own_id: u16,
) -> Vec<u8> {
    let ingest = server.ingest.clone();
    let processed = tokio::task::spawn_blocking(move || {
        ingest.process(&[(topic.as_str(), &payload[..])], crate::clock::wall_ms())
    })
    .await
    .expect("ingest does not panic");
    let mut processed = match processed {
        Ok(p) => p,
        Err(error) => {
            if let Some(suppressed) = server.metrics.may_log("coap_spool") {
                tracing::error!(%error, suppressed, "Cannot store a CoAP uplink; the device will send it again.");
            }
            return reply.build(ResponseType::ServiceUnavailable, &[], own_id);
        }
    };
    match processed.outcomes.pop() {
        Some(Outcome::Stored | Outcome::Accepted { .. } | Outcome::Held) => {}
        // The device must answer the challenge before anything it says counts: the challenge
        // goes back in the refusal, the only moment its radio listens.
        Some(Outcome::Challenged { payload, .. }) => {
            return reply.build(ResponseType::Unauthorized, &payload, own_id);
        }
        // Refused and counted by reason in ingest; the answer says no more than that.
        Some(Outcome::Dropped) | None => return reply.build(ResponseType::BadRequest, &[], own_id),
    }
    let ticket = server.routes.open(device);
    for accepted in processed.accepted {
        let _ = server.handoff.send(accepted);
    }
    let command = server.routes.answer(ticket, server.config.answer_wait).await;
    server
        .metrics
        .coap_answers
        .get_or_create(&crate::metrics::OutcomeLabel {
            outcome: if command.is_some() { "command" } else { "nothing" }.into(),
        })
        .inc();
    match command {
        Some(command) => reply.build(ResponseType::Changed, &command, own_id),
        None => reply.build(ResponseType::Changed, &[], own_id),
    }
}
