//! Simulated NB-IoT detectors ([`crate::ota::Detector`]) that reach the gateway over CoAP
//! (RFC 7252 over UDP), as an NB-IoT module's CoAP stack does: each posts its signed uplinks
//! as confirmable `POST`s to the Uri-Path of their MQTT topic, one request at a time
//! (NSTART = 1, §4.7), retransmits a request whose acknowledgement does not come (the
//! timeout doubling, MAX_RETRANSMIT = 4, §4.2), takes the firmware command the response
//! carries, and, idle, asks again every `poll` (a device's wake-up).
//!
//! [`LossyLink`] sits between them and the gateway and drops datagrams on a fixed pattern
//! in both directions, so lost requests and lost acknowledgements both happen, the same ones
//! on every run.

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use firegrid_protocol::{Encoding, Topic, Uplink, VillageId};

use crate::ota::{Detector, LARGE, SMALL};
use crate::ota_mqtt::{FleetThread, Member, Outcome, Tally};

/// The client's timing (RFC 7252 §4.8: ACK_TIMEOUT is 2 s by default; a test shortens it,
/// keeping it above the gateway's `answer_wait`).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The first retransmission timeout.
    pub ack_timeout: Duration,
    /// An idle device asks again after this.
    pub poll: Duration,
}

/// What the fleet counted.
#[derive(Debug, Default)]
pub struct Counts {
    /// Requests sent, retransmissions included.
    pub sent: AtomicU64,
    /// Retransmissions.
    pub retransmitted: AtomicU64,
    /// Responses with a firmware command.
    pub commands: AtomicU64,
    /// Responses with an error code (4.xx, 5.xx).
    pub refused: AtomicU64,
    /// Requests given up after MAX_RETRANSMIT.
    pub abandoned: AtomicU64,
}

/// The running fleet.
pub struct Fleet {
    thread: FleetThread,
    /// What it counted.
    pub counts: Arc<Counts>,
}

impl Fleet {
    /// Starts `members` of `village`, sending to `gateway`; returns once each has sent its
    /// first status (an idle `fw_status`) and had it answered.
    pub fn start(
        village: &str,
        members: Vec<Member>,
        gateway: SocketAddr,
        timing: Timing,
        image_len: usize,
    ) -> Fleet {
        let counts = Arc::new(Counts::default());
        let (ready_tx, ready_rx) = mpsc::channel();
        let village = VillageId::new(village).expect("a valid village");
        let thread = {
            let counts = counts.clone();
            FleetThread::spawn(move |stop| {
                if image_len <= Detector::<SMALL>::capacity() {
                    run::<SMALL>(village, members, gateway, timing, image_len, stop, counts, ready_tx)
                } else {
                    run::<LARGE>(village, members, gateway, timing, image_len, stop, counts, ready_tx)
                }
            })
        };
        ready_rx.recv_timeout(Duration::from_secs(60)).expect("every detector's first status was answered");
        Fleet { thread, counts }
    }

    /// Stops the fleet and says where each detector ended.
    pub fn stop(self) -> Vec<Outcome> {
        self.thread.stop()
    }
}

/// RFC 7252 §4.8: MAX_RETRANSMIT.
const MAX_RETRANSMIT: u32 = 4;

struct Exchange {
    id: u16,
    datagram: Vec<u8>,
    sent: Instant,
    timeout: Duration,
    attempts: u32,
}

struct Node {
    socket: UdpSocket,
    queue: VecDeque<Uplink>,
    pending: Option<Exchange>,
    last: Instant,
    answered: bool,
}

fn post(village: &VillageId, msg: &Uplink, id: u16) -> Vec<u8> {
    let topic = Topic::uplink(village.clone(), msg.dev.clone(), msg.body.kind()).to_buf().to_string();
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Post);
    p.header.message_id = id;
    p.set_token(id.to_be_bytes().to_vec());
    for segment in topic.split('/') {
        p.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    let mut buf = [0u8; firegrid_protocol::MAX_PAYLOAD];
    p.payload = msg.encode(Encoding::Compact, &mut buf).expect("an uplink encodes").to_vec();
    p.to_bytes().expect("a request encodes")
}

#[allow(clippy::too_many_arguments)]
fn run<const PAGES: usize>(
    village: VillageId,
    members: Vec<Member>,
    gateway: SocketAddr,
    timing: Timing,
    image_len: usize,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    ready: mpsc::Sender<()>,
) -> Vec<Outcome> {
    let started = Instant::now();
    let now_ms = || started.elapsed().as_millis() as u64;
    let mut detectors: Vec<Detector<PAGES>> = Vec::new();
    let mut nodes: Vec<Node> = Vec::new();
    for m in &members {
        let mut d = Detector::keyed(village.as_str(), &m.device, m.key.clone());
        d.self_test_fails = m.self_test_fails;
        let socket = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
        socket.set_nonblocking(true).unwrap();
        let queue = d.announce(now_ms()).into();
        detectors.push(d);
        nodes.push(Node { socket, queue, pending: None, last: Instant::now(), answered: false });
    }
    let mut next_id: u16 = 1;
    let mut tally = Tally::new(members.len());
    let mut ready = Some(ready);
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let mut idle = true;
        for (i, node) in nodes.iter_mut().enumerate() {
            // An answer?
            while let Ok((n, _)) = node.socket.recv_from(&mut buf) {
                let Ok(p) = Packet::from_bytes(&buf[..n]) else { continue };
                let Some(ex) = node.pending.as_ref() else { continue };
                if p.header.get_type() != MessageType::Acknowledgement || p.header.message_id != ex.id {
                    continue;
                }
                node.pending = None;
                node.last = Instant::now();
                node.answered = true;
                idle = false;
                let MessageClass::Response(code) = p.header.code else { continue };
                if code.is_error() && code != ResponseType::Unauthorized {
                    counts.refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if code == ResponseType::Unauthorized {
                    counts.refused.fetch_add(1, Ordering::Relaxed);
                }
                if p.payload.is_empty() {
                    continue;
                }
                counts.commands.fetch_add(1, Ordering::Relaxed);
                let is_chunk =
                    firegrid_protocol::Downlink::decode(&p.payload, Encoding::Compact, &Default::default())
                        .is_ok_and(|d| d.body.kind().as_str() == "fw_chunk");
                let sent = tally.command(i, &members[i], &mut detectors[i], &p.payload, is_chunk, now_ms());
                node.queue.extend(sent);
            }
            // A retransmission due?
            if let Some(ex) = node.pending.as_mut()
                && ex.sent.elapsed() >= ex.timeout
            {
                idle = false;
                if ex.attempts > MAX_RETRANSMIT {
                    counts.abandoned.fetch_add(1, Ordering::Relaxed);
                    node.pending = None;
                    node.last = Instant::now();
                } else {
                    let _ = node.socket.send_to(&ex.datagram, gateway);
                    counts.sent.fetch_add(1, Ordering::Relaxed);
                    counts.retransmitted.fetch_add(1, Ordering::Relaxed);
                    ex.attempts += 1;
                    ex.sent = Instant::now();
                    ex.timeout *= 2;
                }
            }
            if node.pending.is_some() {
                continue;
            }
            // Nothing to send: ask again after `poll`.
            if node.queue.is_empty() && node.last.elapsed() >= timing.poll {
                node.queue.extend(detectors[i].announce(now_ms()));
            }
            if let Some(msg) = node.queue.pop_front() {
                idle = false;
                next_id = next_id.wrapping_add(1);
                let datagram = post(&village, &msg, next_id);
                let _ = node.socket.send_to(&datagram, gateway);
                counts.sent.fetch_add(1, Ordering::Relaxed);
                node.pending = Some(Exchange {
                    id: next_id,
                    datagram,
                    sent: Instant::now(),
                    timeout: timing.ack_timeout,
                    attempts: 1,
                });
            }
        }
        if ready.is_some() && nodes.iter().all(|n| n.answered) {
            let _ = ready.take().expect("once").send(());
        }
        if idle {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    tally.outcomes(&mut detectors, &members, image_len)
}

/// A UDP relay on loopback that drops datagrams on a fixed pattern: every `every`-th
/// datagram of each client in each direction (client to gateway, gateway to client) is lost. Each client
/// gets its own upstream socket, so the gateway sees one peer per client, as through a
/// carrier's NAT.
pub struct LossyLink {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Datagrams dropped, both directions.
    pub dropped: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl LossyLink {
    /// Relays to `upstream`, dropping every `every`-th datagram each way (0: none).
    pub fn start(upstream: SocketAddr, every: u64) -> LossyLink {
        let front = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
        front.set_nonblocking(true).unwrap();
        let addr = front.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, dropped) = (stop.clone(), dropped.clone());
            std::thread::spawn(move || relay(front, upstream, every, &stop, &dropped))
        };
        LossyLink { addr, stop, dropped, thread: Some(thread) }
    }

    /// Where clients send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for LossyLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn relay(front: UdpSocket, upstream: SocketAddr, every: u64, stop: &AtomicBool, dropped: &AtomicU64) {
    // Each client's socket and its datagram counts, up and down: counted per client, so that
    // other clients' traffic never lines one client's datagrams up with the losses (a
    // retransmission always follows a loss).
    let mut backs: HashMap<SocketAddr, (UdpSocket, u64, u64)> = HashMap::new();
    let lose = |n: &mut u64| {
        *n += 1;
        every > 0 && (*n).is_multiple_of(every)
    };
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let mut idle = true;
        while let Ok((n, client)) = front.recv_from(&mut buf) {
            idle = false;
            let (back, up, _) = backs.entry(client).or_insert_with(|| {
                let s = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
                s.set_nonblocking(true).unwrap();
                (s, 0, 0)
            });
            if lose(up) {
                dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let _ = back.send_to(&buf[..n], upstream);
        }
        for (client, (back, _, down)) in &mut backs {
            while let Ok((n, _)) = back.recv_from(&mut buf) {
                idle = false;
                if lose(down) {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let _ = front.send_to(&buf[..n], client);
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// A free UDP port on 127.0.0.1 (bound and released; the gateway binds it next).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
