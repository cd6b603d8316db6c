//! The minimq uplink against a real Mosquitto, started by the test on a free port in a
//! temporary directory. A second minimq client plays the gateway: it decodes uplinks with
//! the protocol crate, acknowledges alarms and events (not telemetry) as the gateway does,
//! withholds the first acknowledgement to force a retransmission, and sends commands. In the
//! last test a third client plays an attacker with nothing but access to the broker.

use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use firegrid_detector::config::Calibration;
use firegrid_detector::link::pump;
use firegrid_detector::mqtt::MqttUplink;
use firegrid_detector::outbox::ALARM_RETRY_MS;
use firegrid_detector::{Config, Device, Identity, Press};
use firegrid_protocol::{
    AckResult, DetectorState, DeviceId, DeviceKey, Downlink, DownlinkBody, DownlinkKind, Encoding, Limits,
    Topic, Uplink, UplinkBody, UplinkKind, VillageId, uplink_filter,
};
use minimq::broker::{Broker, IpBroker};
use minimq::types::TopicFilter;
use minimq::{ConfigBuilder, Minimq, Publication, QoS};
use std_embedded_nal::Stack;
use std_embedded_time::StandardClock;

/// A Mosquitto child process, killed on drop.
struct Mosquitto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self::start_on(port)
    }

    /// Starts a broker on `port` (again, after [`Mosquitto::stop`]: a broker restart).
    fn start_on(port: u16) -> Self {
        let binary = crate::require("mosquitto", "apt-get install -y mosquitto");
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "mosquitto did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Mosquitto { child, port, _dir: dir }
    }

    fn broker(&self) -> IpBroker {
        let mut broker = IpBroker::new(IpAddr::V4(Ipv4Addr::LOCALHOST));
        broker.set_port(self.port);
        broker
    }
}

impl Mosquitto {
    fn stop(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client<'a>(
    broker: IpBroker,
    id: &str,
    buffer: &'a mut [u8],
) -> Minimq<'a, Stack, StandardClock, IpBroker> {
    Minimq::new(
        Stack,
        StandardClock::default(),
        // A short keepalive makes a dead broker noticed within seconds.
        ConfigBuilder::new(broker, buffer).client_id(id).unwrap().keepalive_interval(2),
    )
}

#[test]
fn minimq_uplink_delivers_alarm_first_retransmits_until_acked_and_applies_commands() {
    let mosquitto = Mosquitto::start();
    let village = VillageId::new("fuhai-1").unwrap();
    let dev = DeviceId::new("sd-0001").unwrap();

    let mut device_buffer = [0u8; 1024];
    let mut uplink = MqttUplink::new(
        client(mosquitto.broker(), "sd-0001", &mut device_buffer),
        village.clone(),
        dev.clone(),
    );
    let mut gateway_buffer = [0u8; 1024];
    let mut gateway = client(mosquitto.broker(), "gateway", &mut gateway_buffer);

    // Virtual device time: the detector core never reads a clock, so the test can jump
    // past the retransmission period instead of waiting for it.
    let mut now = 0u64;
    let mut device =
        Device::new(Config::default(), Calibration::default(), Identity::new(village.clone(), dev, 7), now);
    device.on_battery(now, 3_300);
    device.tick(now); // the boot heartbeat (telemetry)
    device.on_button(now, Press::Long); // a drill: state `test` (alarm class)
    assert_eq!(device.outbox().len(), 2);

    let filter = uplink_filter(Some(&village), None);
    let mut subscribed = false;
    let mut received: Vec<Uplink> = Vec::new();
    let mut withheld_once = false;
    let mut command_sent = false;
    let mut advanced = false;
    let mut pending: Vec<Downlink> = Vec::new();
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "timed out; gateway received {received:?}, outbox {:?}",
            device.outbox().entries()
        );
        // The broker drops what nobody subscribes to: the device starts once the gateway
        // listens.
        if subscribed && !gateway.client().subscriptions_pending() {
            pump(&mut device, &mut uplink, now, Encoding::Compact).expect("uplink works");
        }

        if !subscribed && gateway.client().is_connected() {
            gateway.client().subscribe(&[TopicFilter::new(filter.as_str())], &[]).unwrap();
            subscribed = true;
        }
        let mut inbox = Vec::new();
        while let Some(payload) = gateway.poll(|_, _, payload, _| payload.to_vec()).unwrap() {
            inbox.push(payload);
        }
        for payload in inbox {
            let msg = Uplink::receive(&payload, &Limits::default()).expect("a valid uplink");
            received.push(msg.clone());
            if !msg.class().is_acknowledged() {
                continue;
            }
            // Withhold the first acknowledgement of the alarm-class message, so that the
            // device must send it again.
            if msg.kind() == UplinkKind::State && !withheld_once {
                withheld_once = true;
                continue;
            }
            pending.push(Downlink::new(
                1_000 + received.len() as u32,
                0,
                DownlinkBody::Ack { boot: msg.boot, seq: msg.seq },
            ));
        }
        if withheld_once && !command_sent {
            pending.push(Downlink::new(42, 0, DownlinkBody::SetHeartbeat { interval_s: 3_600 }));
            command_sent = true;
        }
        while !pending.is_empty() && gateway.client().can_publish(QoS::AtLeastOnce) {
            let cmd = pending.remove(0);
            publish(&mut gateway, &village, &DeviceId::new("sd-0001").unwrap(), &cmd);
        }

        let answered =
            received.iter().any(|m| matches!(m.body, UplinkBody::CommandAck(ref a) if a.cmd_seq == 42));
        let state_copies = received.iter().filter(|m| m.kind() == UplinkKind::State).count();
        let heartbeat = received.iter().any(|m| m.kind() == UplinkKind::Heartbeat);
        if answered && state_copies >= 2 && heartbeat && device.outbox().is_empty() {
            break;
        }
        if withheld_once && !advanced {
            now += ALARM_RETRY_MS; // the retransmission falls due
            advanced = true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }

    // Alarm class first: the state change overtook the heartbeat queued before it.
    assert_eq!(received[0].kind(), UplinkKind::State);
    assert!(matches!(received[0].body, UplinkBody::State(ref s) if s.state == DetectorState::Test));
    let first = &received[0];
    let copies: Vec<_> = received.iter().filter(|m| m.boot == 7 && m.seq == first.seq).collect();
    assert_eq!(copies.len(), 2, "sent once more after the withheld ack, then no more");
    let heartbeats = received.iter().filter(|m| m.kind() == UplinkKind::Heartbeat).count();
    assert_eq!(heartbeats, 1, "the heartbeat arrived once and left the outbox without an ack");
    let ack = received.iter().find_map(|m| match &m.body {
        UplinkBody::CommandAck(a) => Some(a.clone()),
        _ => None,
    });
    assert_eq!(ack.map(|a| (a.cmd_seq, a.result)), Some((42, AckResult::Applied)));
    assert_eq!(device.config().heartbeat_ms, 3_600_000, "the command was applied");
    assert!(uplink.is_connected());
}

fn publish(
    gateway: &mut Minimq<'_, Stack, StandardClock, IpBroker>,
    village: &VillageId,
    dev: &DeviceId,
    cmd: &Downlink,
) {
    let kind: DownlinkKind = cmd.kind();
    let topic = Topic::downlink(village.clone(), dev.clone(), kind).to_buf();
    let mut buf = [0u8; 256];
    let payload = cmd.encode(Encoding::Json, &mut buf).unwrap();
    gateway.client().publish(Publication::new(topic.as_str(), payload).qos(QoS::AtLeastOnce)).unwrap();
}

/// The gateway side of the restart and attacker tests: subscribes (again after a session
/// reset), and (with `acknowledge`) acknowledges every alarm and event it receives from
/// `device`, unsigned; it publishes whatever is in `pending`.
struct Gateway<'a> {
    mqtt: Minimq<'a, Stack, StandardClock, IpBroker>,
    village: VillageId,
    device: DeviceId,
    acknowledge: bool,
    subscribed: bool,
    received: Vec<Uplink>,
    pending: Vec<Downlink>,
}

impl Gateway<'_> {
    fn listening(&mut self) -> bool {
        self.subscribed && !self.mqtt.client().subscriptions_pending()
    }

    fn poll(&mut self) {
        if !self.subscribed && self.mqtt.client().is_connected() {
            let filter = uplink_filter(Some(&self.village), None);
            if self.mqtt.client().subscribe(&[TopicFilter::new(filter.as_str())], &[]).is_ok() {
                self.subscribed = true;
            }
        }
        loop {
            match self.mqtt.poll(|_, _, payload, _| payload.to_vec()) {
                Ok(Some(payload)) => {
                    let msg = Uplink::receive(&payload, &Limits::default()).expect("a valid uplink");
                    let seq = 5_000 + self.received.len() as u32;
                    if self.acknowledge && msg.class().is_acknowledged() {
                        let ack = DownlinkBody::Ack { boot: msg.boot, seq: msg.seq };
                        self.pending.push(Downlink::new(seq, 0, ack));
                    }
                    self.received.push(msg);
                }
                Ok(None) => break,
                Err(minimq::Error::SessionReset) => {
                    self.subscribed = false;
                    break;
                }
                // The broker is down; keep trying.
                Err(_) => break,
            }
        }
        while !self.pending.is_empty() && self.mqtt.client().can_publish(QoS::AtLeastOnce) {
            let cmd = self.pending.remove(0);
            publish(&mut self.mqtt, &self.village, &self.device, &cmd);
        }
    }
}

#[test]
fn an_alarm_raised_while_the_broker_is_down_arrives_after_its_restart() {
    let mosquitto = Mosquitto::start();
    let village = VillageId::new("fuhai-1").unwrap();
    let dev = DeviceId::new("sd-0002").unwrap();
    let mut device_buffer = [0u8; 1024];
    let mut uplink = MqttUplink::new(
        client(mosquitto.broker(), "sd-0002", &mut device_buffer),
        village.clone(),
        dev.clone(),
    );
    let mut gateway_buffer = [0u8; 1024];
    let mut gateway = Gateway {
        mqtt: client(mosquitto.broker(), "gateway-2", &mut gateway_buffer),
        village,
        device: dev.clone(),
        acknowledge: true,
        subscribed: false,
        received: Vec::new(),
        pending: Vec::new(),
    };
    let mut now = 0u64;
    let mut device = Device::new(
        Config::default(),
        Calibration::default(),
        Identity::new(gateway.village.clone(), dev, 9),
        now,
    );
    device.on_battery(now, 3_300);
    device.tick(now);

    // Connected and subscribed on both sides, boot heartbeat handed to the broker (telemetry
    // needs no acknowledgement).
    let started = Instant::now();
    while !(gateway.subscribed && device.outbox().is_empty()) {
        assert!(started.elapsed() < Duration::from_secs(20), "no initial exchange");
        if gateway.listening() {
            let _ = pump(&mut device, &mut uplink, now, Encoding::Compact);
        }
        gateway.poll();
        now += 200;
        std::thread::sleep(Duration::from_millis(5));
    }

    // The broker dies; smoke arrives.
    let port = mosquitto.stop();
    let cal = Calibration::default();
    let smoky =
        firegrid_detector::detect::ChamberSample { ir: cal.clean_ir + 1_000, blue: cal.clean_blue + 900 };
    while device.mode() != firegrid_detector::Mode::Alarm {
        now += 2_000;
        device.on_chamber(now, Ok(smoky));
    }
    let alarm = device
        .outbox()
        .entries()
        .iter()
        .find(|e| matches!(&e.msg.body, UplinkBody::State(s) if s.state == DetectorState::Alarm))
        .map(|e| (e.msg.boot, e.msg.seq))
        .expect("the alarm is queued");
    for _ in 0..50 {
        let _ = pump(&mut device, &mut uplink, now, Encoding::Compact);
        gateway.poll();
        now += 200;
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(gateway.received.iter().all(|m| (m.boot, m.seq) != alarm), "nothing gets through a dead broker");

    // The broker comes back with no memory of either client.
    let _mosquitto = Mosquitto::start_on(port);
    let started = Instant::now();
    while device.outbox().entries().iter().any(|e| (e.msg.boot, e.msg.seq) == alarm) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the alarm was not delivered after the restart; gateway got {:?}",
            gateway.received
        );
        let _ = pump(&mut device, &mut uplink, now, Encoding::Compact);
        gateway.poll();
        now += 200;
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(gateway.received.iter().any(|m| (m.boot, m.seq) == alarm));
}

/// Pumps the device and polls both clients until `done`, or panics after 20 s.
fn exchange(
    what: &str,
    device: &mut Device,
    uplink: &mut impl firegrid_detector::link::Uplink,
    gateway: &mut Gateway<'_>,
    attacker: &mut Minimq<'_, Stack, StandardClock, IpBroker>,
    now: u64,
    mut done: impl FnMut(&Device, &Gateway<'_>) -> bool,
) {
    let started = Instant::now();
    while !done(device, gateway) {
        assert!(started.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        if gateway.listening() {
            let _ = pump(device, uplink, now, Encoding::Compact);
        }
        gateway.poll();
        let _ = attacker.poll(|_, _, _, _| ());
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn forged_ack_and_hush_from_another_client_neither_drop_the_alarm_nor_silence_the_sounder() {
    let mosquitto = Mosquitto::start();
    let village = VillageId::new("fuhai-1").unwrap();
    let dev = DeviceId::new("sd-0003").unwrap();
    let key = DeviceKey::from_bytes(core::array::from_fn(|i| 0x70 ^ i as u8));
    let mut device_buffer = [0u8; 1024];
    let mut uplink = MqttUplink::new(
        client(mosquitto.broker(), "sd-0003", &mut device_buffer),
        village.clone(),
        dev.clone(),
    );
    let mut gateway_buffer = [0u8; 1024];
    let mut gateway = Gateway {
        mqtt: client(mosquitto.broker(), "gateway-3", &mut gateway_buffer),
        village: village.clone(),
        device: dev.clone(),
        acknowledge: false,
        subscribed: false,
        received: Vec::new(),
        pending: Vec::new(),
    };
    let mut attacker_buffer = [0u8; 1024];
    let mut attacker = client(mosquitto.broker(), "attacker", &mut attacker_buffer);
    let mut now = 0u64;
    let identity = Identity::new(village.clone(), dev.clone(), 5).with_key(key.clone());
    let mut device = Device::new(Config::default(), Calibration::default(), identity, now);
    device.on_battery(now, 3_300);
    let cal = Calibration::default();
    let smoky =
        firegrid_detector::detect::ChamberSample { ir: cal.clean_ir + 1_000, blue: cal.clean_blue + 900 };
    while device.mode() != firegrid_detector::Mode::Alarm {
        now += 2_000;
        device.on_chamber(now, Ok(smoky));
    }
    device.tick(now);
    let alarm = device
        .outbox()
        .entries()
        .iter()
        .find(|e| matches!(&e.msg.body, UplinkBody::State(s) if s.state == DetectorState::Alarm))
        .map(|e| (e.msg.boot, e.msg.seq))
        .expect("the alarm is queued");

    // This gateway acknowledges nothing on its own: the test decides what the device hears.
    let is_alarm = |m: &Uplink| (m.boot, m.seq) == alarm;
    exchange("the alarm", &mut device, &mut uplink, &mut gateway, &mut attacker, now, |_, g| {
        g.received.iter().any(is_alarm)
    });
    let first = gateway.received.iter().find(|m| is_alarm(m)).unwrap().clone();
    assert_eq!(first.verify(&village, &key), Ok(()), "the alarm arrives signed");

    // The attacker, subscribed to nothing, publishes to the detector's command topics: an
    // unsigned and a forged ack of the pending alarm, an unsigned and a forged hush.
    let forger = DeviceKey::from_bytes([0x66; 32]);
    let ack = DownlinkBody::Ack { boot: alarm.0, seq: alarm.1 };
    let hush = DownlinkBody::Hush { duration_s: 900 };
    let mut forged = Vec::new();
    for (seq, body, sign) in
        [(1, ack.clone(), false), (2, ack.clone(), true), (3, hush.clone(), false), (4, hush, true)]
    {
        let mut cmd = Downlink::new(seq, 0, body);
        if sign {
            cmd.sign(&village, &dev, 5, &forger);
        }
        forged.push(cmd);
    }
    let started = Instant::now();
    while !forged.is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10), "the attacker could not publish");
        let _ = attacker.poll(|_, _, _, _| ());
        if attacker.client().is_connected() && attacker.client().can_publish(QoS::AtLeastOnce) {
            let cmd = forged.remove(0);
            publish(&mut attacker, &village, &dev, &cmd);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    exchange(
        "the forgeries to arrive",
        &mut device,
        &mut uplink,
        &mut gateway,
        &mut attacker,
        now,
        |d, _| d.refusals().total() >= 4,
    );
    let refusals = *device.refusals();
    assert_eq!((refusals.unsigned, refusals.bad_signature), (2, 2), "{refusals:?}");
    assert_eq!(device.mode(), firegrid_detector::Mode::Alarm, "the forged hush silenced nothing");
    assert!(device.sound(now).is_alarm(), "the sounder still sounds");
    assert!(
        device.outbox().entries().iter().any(|e| (e.msg.boot, e.msg.seq) == alarm),
        "the alarm is still pending"
    );
    assert!(
        !gateway.received.iter().any(|m| matches!(m.body, UplinkBody::CommandAck(_))),
        "forgeries are not answered"
    );

    // The resend falls due: the alarm arrives again, with the same tag.
    now += ALARM_RETRY_MS;
    let copies = |g: &Gateway<'_>| g.received.iter().filter(|m| is_alarm(m)).count();
    exchange("the resent alarm", &mut device, &mut uplink, &mut gateway, &mut attacker, now, |_, g| {
        copies(g) >= 2
    });
    let resent = gateway.received.iter().filter(|m| is_alarm(m)).nth(1).unwrap();
    assert_eq!(resent.mac, first.mac);

    // The gateway's genuine ack ends it.
    let mut genuine = Downlink::new(10, 0, ack);
    genuine.sign(&village, &dev, 5, &key);
    gateway.pending.push(genuine);
    exchange("the genuine ack", &mut device, &mut uplink, &mut gateway, &mut attacker, now, |d, _| {
        !d.outbox().entries().iter().any(|e| (e.msg.boot, e.msg.seq) == alarm)
    });
    assert_eq!(device.refusals().total(), 4);
}
