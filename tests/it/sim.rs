//! The fleet simulator against a real Mosquitto: 2,000 detectors, each with its own MQTT
//! connection and session, running the detector firmware core; a subscriber in the role of
//! the gateway acknowledges every alarm and event (`down/ack`; telemetry gets none, as from the
//! gateway) and checks every sequence number.
//! One grid loses connectivity for five minutes while a fire starts in it; its alarms must
//! arrive once it is back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firegrid_protocol::{DetectorState, Encoding, Limits, Uplink, UplinkBody};
use firegrid_sim::village::Kind;
use firegrid_sim::{Fleet, Mode, RunConfig, Scenario, Village, VillageParams};
use firegrid_tests::Mosquitto;

/// One device's messages: (boot, seq) → payload and first arrival.
type Messages = BTreeMap<(u16, u32), (Vec<u8>, Instant)>;

/// What the gateway-side subscriber saw: per device, every (boot, seq) with its payload and
/// the wall time it first arrived.
#[derive(Default)]
struct Seen {
    messages: HashMap<String, Messages>,
    received: u64,
    conflicts: Vec<String>,
}

fn gateway_side(port: u16) -> Arc<Mutex<Seen>> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = seen.clone();
    firegrid_tests::ack_uplinks(port, move |topic, msg, payload| {
        let mut seen = record.lock().unwrap();
        seen.received += 1;
        let entry = seen.messages.entry(topic.device.to_string()).or_default();
        match entry.get(&(msg.boot, msg.seq)) {
            Some((first, _)) if first.as_slice() != payload => {
                let conflict =
                    format!("{} {}/{} carried two different messages", topic.device, msg.boot, msg.seq);
                seen.conflicts.push(conflict);
            }
            Some(_) => {}
            None => {
                entry.insert((msg.boot, msg.seq), (payload.to_vec(), Instant::now()));
            }
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_detectors_deliver_every_sequence_number_and_an_outage_delivers_its_alarms_after() {
    let broker = Mosquitto::start().unwrap();
    let seen = gateway_side(broker.port());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let params = VillageParams {
        buildings: 400,
        detectors: 2_000,
        camera_channels: 400,
        water_sensors: 0,
        heartbeat: Duration::from_secs(60),
        ..VillageParams::default()
    };
    let village = Village::generate(&params, 11).unwrap();
    // The fire burns in the building of the first camera, so a camera sees it too.
    let seat = village.devices.iter().find(|d| matches!(d.kind, Kind::Camera(_))).unwrap().building;
    let seat_camera = village.devices.iter().find(|d| matches!(d.kind, Kind::Camera(_))).unwrap().id.clone();
    let cameras: BTreeSet<String> =
        village.devices.iter().filter(|d| matches!(d.kind, Kind::Camera(_))).map(|d| d.id.clone()).collect();
    let grid = village.buildings[seat].grid.clone();
    let seat_detectors: Vec<String> =
        village.detectors_in(seat).map(|d| village.devices[d].id.clone()).collect();
    let in_grid: BTreeSet<String> = village
        .devices
        .iter()
        .filter(|d| village.buildings[d.building].grid == grid && d.kind == Kind::Detector)
        .map(|d| d.id.clone())
        .collect();
    let scenario = Scenario::from_toml(&format!(
        "[[fire]]\nbuilding = \"{}\"\nat = \"2m\"\ngrowth = \"flaming\"\n[[outage]]\ngrid = \"{grid}\"\nat = \"1m\"\nduration = \"5m\"\n",
        village.buildings[seat].id
    ))
    .unwrap();
    let devices = village.devices.len();
    let duration = Duration::from_secs(10 * 60);
    let speed = 30.0;
    let mut fleet = Fleet::new(village, &scenario, duration, 11, Encoding::Compact).unwrap();
    let state = tempfile::tempdir().unwrap();
    let cfg = RunConfig {
        host: "127.0.0.1".into(),
        port: broker.port(),
        mode: Mode::Direct,
        speed,
        duration,
        report_every: None,
        camera_state: Some(state.path().to_owned()),
        credentials: None,
    };
    let started = Instant::now();
    let report = firegrid_sim::run(&mut fleet, &cfg, None, Duration::from_secs(30)).await;
    assert_eq!(report.connections, devices - cameras.len(), "one connection per detector");
    assert_eq!(report.camera_channels, 400);
    assert_eq!(report.outbox_total, 0, "everything sent, every alarm and event acknowledged: {report:?}");
    // A heartbeat is handed to MQTT once and never resent, so none may have been refused.
    assert_eq!(report.refused, 0, "{report:?}");

    let seen = seen.lock().unwrap();
    assert!(seen.conflicts.is_empty(), "{:?}", &seen.conflicts[..seen.conflicts.len().min(5)]);
    assert_eq!(seen.messages.len(), devices, "every device was heard");
    // Nothing missing: each detector's sequence numbers are 0..n without a gap. (The
    // firmware sheds telemetry only when its outbox is full, which a 5-minute outage does not
    // reach; heartbeats queued during it leave once it ends, unacknowledged.) A camera agent reserves one number per connection for its MQTT last will, so
    // its only gaps are right before a `status` online message.
    for (device, messages) in &seen.messages {
        let seqs: Vec<u32> = messages.keys().map(|(_, s)| *s).collect();
        if cameras.contains(device) {
            for ((_, seq), (payload, _)) in messages {
                let msg = Uplink::decode(payload, Encoding::Compact, &Limits::default()).unwrap();
                let follows_gap = *seq > 0 && !messages.keys().any(|(_, s)| *s == seq - 1);
                assert!(
                    !follows_gap || matches!(msg.body, UplinkBody::Status(_)),
                    "{device}: gap before seq {seq}"
                );
            }
        } else {
            let expected: Vec<u32> = (0..seqs.len() as u32).collect();
            assert_eq!(seqs, expected, "{device}: sequence numbers with gaps");
        }
    }
    // The camera in the burning building reported smoke through the agent.
    let smoke = seen.messages[&seat_camera].values().any(|(payload, _)| {
        Uplink::decode(payload, Encoding::Compact, &Limits::default())
            .is_ok_and(|m| matches!(m.body, UplinkBody::CameraEvent(e) if e.active))
    });
    assert!(smoke, "{seat_camera} saw the fire");
    let distinct: usize = seen.messages.values().map(BTreeMap::len).sum();
    assert!(distinct >= devices * 9, "about one heartbeat per simulated minute each: {distinct}");
    // The outage: the seat's alarms were queued in the firmware and arrived after the grid
    // came back (6 simulated minutes = 12 s of real time at ×30).
    let zero = started + report.connecting;
    let back = zero + Duration::from_secs_f64(6.0 * 60.0 / speed);
    for device in &seat_detectors {
        let alarm = seen.messages[device].values().find(|(payload, _)| {
            Uplink::decode(payload, Encoding::Compact, &Limits::default())
                .is_ok_and(|m| matches!(m.body, UplinkBody::State(s) if s.state == DetectorState::Alarm))
        });
        let (_, at) = alarm.unwrap_or_else(|| panic!("{device}: its alarm never arrived"));
        assert!(*at >= back - Duration::from_millis(500), "{device}: alarm arrived during the outage");
    }
    // Hardly anything from the grid arrived during the outage: only what the firmware had
    // sent just before it and the loop handed over late (the simulator runs each device at
    // its own simulated instant, but under load a step may leave a little after it), against
    // a steady flow in a window of the same length after it.
    let count = |from: f64, to: f64| -> usize {
        let (a, b) =
            (zero + Duration::from_secs_f64(from / speed), zero + Duration::from_secs_f64(to / speed));
        in_grid.iter().flat_map(|d| seen.messages[d].values()).filter(|(_, at)| *at > a && *at < b).count()
    };
    let (during, after) = (count(75.0, 355.0), count(400.0, 580.0) * 280 / 180);
    assert!(
        during * 20 < after,
        "grid messages during the outage {during}, in as long a window after it {after}"
    );
    eprintln!("{report:?}; received {} (distinct {distinct})", seen.received);
}
