//! Simulated detectors ([`crate::ota::Detector`]) on a real broker: each takes its commands
//! off a real MQTT subscription to its `down/+` topics and publishes its signed uplinks on its
//! `up/{kind}` topics, as a powered detector on the network does.
//!
//! The detectors are not `Send` (their flash sits behind a single-core mutex), so one thread
//! owns them all; the MQTT connections run on threads of their own and hand it what arrives.
//! With [`Login::PerDevice`] each detector has its own connection and account (the broker's
//! ACL lets it read only its own downlinks); with [`Login::Shared`] one anonymous connection
//! subscribes to the village's downlinks for every detector (the benchmark's thousands).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use firegrid_protocol::{DeviceKey, Encoding, Topic, Uplink, VillageId};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

use crate::ota::{Detector, LARGE, SMALL};

/// How the detectors log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// One connection per detector, user name its id, password derived from its key.
    PerDevice,
    /// One anonymous connection for all of them.
    Shared,
}

/// One detector of the fleet.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its id.
    pub device: String,
    /// Its key (as provisioned).
    pub key: DeviceKey,
    /// Its self-test fails on a new image.
    pub self_test_fails: bool,
    /// Loses power after this many firmware chunks (once).
    pub power_cut_after_chunks: Option<u32>,
    /// Its key floor at the start (0: factory-fresh): images of lower vendor key slots are
    /// refused.
    pub key_floor: u32,
}

impl Member {
    /// A detector that behaves.
    pub fn new(device: &str, key: DeviceKey) -> Self {
        Member {
            device: device.to_owned(),
            key,
            self_test_fails: false,
            power_cut_after_chunks: None,
            key_floor: 0,
        }
    }
}

/// Where one detector ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Its id.
    pub device: String,
    /// Its boot counter.
    pub boot: u16,
    /// The first bytes of its active slot (as long as the new image).
    pub active: Vec<u8>,
    /// Downlinks it received (firmware commands and `down/ack`s).
    pub commands: u32,
    /// Whether it lost power mid-transfer.
    pub power_cut: bool,
    /// Its key floor (the highest vendor key slot of an image it marked good).
    pub key_floor: u32,
}

/// The running fleet.
pub struct Fleet {
    thread: FleetThread,
    commands: Arc<Mutex<u64>>,
}

/// The thread that owns a fleet's detectors (MQTT or CoAP), told to stop by a flag.
pub(crate) struct FleetThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Outcome>>>,
}

impl FleetThread {
    /// Runs `run` with the stop flag on a thread of its own.
    pub(crate) fn spawn(run: impl FnOnce(Arc<AtomicBool>) -> Vec<Outcome> + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        FleetThread { stop, thread: Some(std::thread::spawn(move || run(flag))) }
    }

    /// Stops the fleet and says where each detector ended.
    pub(crate) fn stop(mut self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().expect("stopped once").join().expect("the fleet thread does not panic")
    }
}

impl Drop for FleetThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

enum Incoming {
    Subscribed,
    Publish(String, Vec<u8>),
}

fn uplink_topic(village: &VillageId, msg: &Uplink) -> String {
    Topic::uplink(village.clone(), msg.dev.clone(), msg.body.kind()).to_buf().to_string()
}

impl Fleet {
    /// Starts `members` of `village` on the broker at `port`; returns once every detector is
    /// subscribed and has announced itself (an idle `fw_status`, so the gateway knows its boot).
    /// The detectors' flash is the small one when an image of `image_len` fits it, the
    /// large one otherwise.
    pub fn start(village: &str, members: Vec<Member>, port: u16, login: Login, image_len: usize) -> Fleet {
        let commands = Arc::new(Mutex::new(0));
        let (ready_tx, ready_rx) = mpsc::channel();
        let village = VillageId::new(village).expect("a valid village");
        let thread = {
            let commands = commands.clone();
            FleetThread::spawn(move |stop| {
                if image_len <= Detector::<SMALL>::capacity() {
                    run::<SMALL>(village, members, port, login, image_len, stop, commands, ready_tx)
                } else {
                    assert!(
                        image_len <= Detector::<LARGE>::capacity(),
                        "an image of {image_len} B fits no detector"
                    );
                    run::<LARGE>(village, members, port, login, image_len, stop, commands, ready_tx)
                }
            })
        };
        ready_rx.recv_timeout(Duration::from_secs(120)).expect("the fleet subscribed and announced itself");
        Fleet { thread, commands }
    }

    /// Downlinks received so far by all detectors (firmware commands and `down/ack`s).
    pub fn commands(&self) -> u64 {
        *self.commands.lock().unwrap()
    }

    /// Stops the fleet and says where each detector ended.
    pub fn stop(self) -> Vec<Outcome> {
        self.thread.stop()
    }
}

fn connect(
    id: &str,
    port: u16,
    credentials: Option<(&str, String)>,
    filter: &str,
    tx: mpsc::Sender<Incoming>,
) -> Client {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(64 * 1024, 64 * 1024);
    if let Some((user, password)) = credentials {
        opts.set_credentials(user, password);
    }
    let (client, mut connection) = Client::new(opts, 4096);
    client.subscribe(filter, QoS::AtLeastOnce).expect("subscribe queued");
    std::thread::spawn(move || {
        for event in connection.iter() {
            let sent = match event {
                Ok(Event::Incoming(Packet::SubAck(_))) => tx.send(Incoming::Subscribed),
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    tx.send(Incoming::Publish(p.topic, p.payload.to_vec()))
                }
                Ok(_) => Ok(()),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(100));
                    Ok(())
                }
            };
            if sent.is_err() {
                return;
            }
        }
    });
    client
}

#[allow(clippy::too_many_arguments)]
fn run<const PAGES: usize>(
    village: VillageId,
    members: Vec<Member>,
    port: u16,
    login: Login,
    image_len: usize,
    stop: Arc<AtomicBool>,
    commands: Arc<Mutex<u64>>,
    ready: mpsc::Sender<()>,
) -> Vec<Outcome> {
    let (tx, rx) = mpsc::channel();
    let mut detectors: Vec<Detector<PAGES>> = Vec::with_capacity(members.len());
    let mut clients: Vec<Client> = Vec::new();
    let index: HashMap<String, usize> =
        members.iter().enumerate().map(|(i, m)| (m.device.clone(), i)).collect();
    for m in &members {
        let mut d = Detector::keyed(village.as_str(), &m.device, m.key.clone());
        d.self_test_fails = m.self_test_fails;
        if m.key_floor > 0 {
            d.provision_key_floor(m.key_floor);
        }
        detectors.push(d);
        if login == Login::PerDevice {
            let filter = format!("fg/v1/{village}/{}/down/+", m.device);
            let password = m.key.mqtt_password().to_string();
            clients.push(connect(&m.device, port, Some((&m.device, password)), &filter, tx.clone()));
        }
    }
    if login == Login::Shared {
        let filter = format!("fg/v1/{village}/+/down/+");
        clients.push(connect(&format!("fleet-{village}"), port, None, &filter, tx.clone()));
    }
    drop(tx);
    let client_of = |i: usize| if login == Login::PerDevice { i } else { 0 };
    let started = Instant::now();
    let now_ms = || started.elapsed().as_millis() as u64;
    let publish = |clients: &[Client], i: usize, msgs: Vec<Uplink>| {
        for msg in msgs {
            let mut buf = [0u8; firegrid_protocol::MAX_PAYLOAD];
            let payload = msg.encode(Encoding::Compact, &mut buf).expect("an uplink encodes").to_vec();
            clients[client_of(i)]
                .publish(uplink_topic(&village, &msg), QoS::AtLeastOnce, false, payload)
                .expect("publish queued");
        }
    };
    let mut subscribed = 0;
    while subscribed < clients.len() {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Incoming::Subscribed) => subscribed += 1,
            Ok(Incoming::Publish(..)) => {}
            Err(_) => panic!("{subscribed} of {} fleet connections subscribed", clients.len()),
        }
    }
    for (i, d) in detectors.iter_mut().enumerate() {
        let sent = d.announce(now_ms());
        publish(&clients, i, sent);
    }
    let _ = ready.send(());
    let mut tally = Tally::new(members.len());
    while !stop.load(Ordering::Relaxed) {
        let Ok(incoming) = rx.recv_timeout(Duration::from_millis(50)) else { continue };
        let Incoming::Publish(topic, payload) = incoming else { continue };
        let Ok(topic) = Topic::parse(&topic) else { continue };
        let Some(&i) = index.get(topic.device.as_str()) else { continue };
        *commands.lock().unwrap() += 1;
        let is_chunk = topic.kind.as_str() == "fw_chunk";
        let sent = tally.command(i, &members[i], &mut detectors[i], &payload, is_chunk, now_ms());
        publish(&clients, i, sent);
    }
    tally.outcomes(&mut detectors, &members, image_len)
}

/// What a fleet counts per detector, whatever carries its commands: commands received, chunks
/// among them, and whether its power cut happened.
pub(crate) struct Tally {
    received: Vec<u32>,
    chunks: Vec<u32>,
    cut: Vec<bool>,
}

impl Tally {
    /// For `n` detectors.
    pub(crate) fn new(n: usize) -> Self {
        Tally { received: vec![0; n], chunks: vec![0; n], cut: vec![false; n] }
    }

    /// Detector `i` (`member`) receives `payload` (`is_chunk`: an `fw_chunk`); returns what it
    /// sent, which after its power cut is what it sends on its restart.
    pub(crate) fn command<const PAGES: usize>(
        &mut self,
        i: usize,
        member: &Member,
        detector: &mut Detector<PAGES>,
        payload: &[u8],
        is_chunk: bool,
        now_ms: u64,
    ) -> Vec<Uplink> {
        self.received[i] += 1;
        let mut sent = detector.receive_payload(payload, now_ms);
        if is_chunk {
            self.chunks[i] += 1;
            if !self.cut[i] && member.power_cut_after_chunks.is_some_and(|n| self.chunks[i] >= n) {
                // The power goes before anything it just sent leaves the radio.
                self.cut[i] = true;
                sent = detector.power_cut();
            }
        }
        sent
    }

    /// Where each detector ended.
    pub(crate) fn outcomes<const PAGES: usize>(
        &self,
        detectors: &mut [Detector<PAGES>],
        members: &[Member],
        image_len: usize,
    ) -> Vec<Outcome> {
        detectors
            .iter_mut()
            .enumerate()
            .map(|(i, d)| Outcome {
                device: members[i].device.clone(),
                boot: d.boot(),
                active: d.active(image_len),
                commands: self.received[i],
                power_cut: self.cut[i],
                key_floor: d.key_floor(),
            })
            .collect()
    }
}
