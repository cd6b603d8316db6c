//! The simulated fleet: every detector is the firmware's [`Device`] with the firmware's
//! ADPD188 driver over a simulated front end that answers from its room's physics. The
//! fleet steps each device at the simulated instants the firmware asks to be woken, moves
//! messages with the firmware's own [`pump`] (so sequence numbers, priorities, and
//! retransmission of alarms and events until acknowledged are the firmware's; telemetry is
//! done once handed over), and hands what the firmware sent to a transport. Pure: time comes
//! in as an argument; no I/O.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use firegrid_detector::drivers::Adpd188;
use firegrid_detector::link::{Uplink, pump};
use firegrid_detector::scenario::{CALIBRATION, Model, NoDelay, SimulatedAfe, Vector, battery_mv};
use firegrid_detector::{Config, Device, Identity};
use firegrid_protocol::{DeviceId, Encoding, UplinkKind, VillageId};

use crate::keys::Keys;
use crate::scenario::Scenario;
use crate::village::{Kind, Village};

/// One message the firmware handed to its transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Device index in the village.
    pub device: usize,
    /// The uplink kind (the topic's last part).
    pub kind: UplinkKind,
    /// The encoded payload.
    pub payload: Vec<u8>,
}

/// A detector: firmware, driver, simulated front end, and its room.
struct Detector {
    index: usize,
    device: Device,
    afe: Adpd188<SimulatedAfe, NoDelay>,
    model: Model,
    grid: usize,
    removed_at: Option<u64>,
    removed: bool,
    scheduled: u64,
}

/// The transport seam as the firmware sees it: ready unless the grid is in an outage;
/// sends are collected for the real transport.
struct Collect<'a> {
    device: usize,
    ready: bool,
    out: &'a mut Vec<Sent>,
}

impl Uplink for Collect<'_> {
    type Error = core::convert::Infallible;

    fn ready(&mut self) -> bool {
        self.ready
    }

    fn send(&mut self, kind: UplinkKind, payload: &[u8]) -> Result<(), Self::Error> {
        self.out.push(Sent { device: self.device, kind, payload: payload.to_vec() });
        Ok(())
    }

    fn poll(&mut self, _: &mut dyn FnMut(&[u8])) -> Result<(), Self::Error> {
        // Downlinks are handed to the device by [`Fleet::deliver`] as they arrive.
        Ok(())
    }
}

/// A grid outage, ms.
#[derive(Debug, Clone, Copy)]
struct Outage {
    grid: usize,
    from: u64,
    to: u64,
}

/// The simulated fleet.
pub struct Fleet {
    village: Village,
    detectors: Vec<Detector>,
    /// Device index → detector slot.
    slot: Vec<Option<usize>>,
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    outages: Vec<Outage>,
    encoding: Encoding,
    duration_ms: u64,
    fires: Vec<Option<(u64, crate::scenario::FireGrowth)>>,
    fire_ends: Vec<Option<u64>>,
    /// Messages handed to the transport, for reports.
    sent: u64,
    /// The devices' keys (detectors and cameras).
    keys: Keys,
}

impl Fleet {
    /// Boots every detector of `village` at simulated time 0, with its room from `scenario`,
    /// for a run of `duration`. Every device is keyless (see [`Fleet::new_keyed`]).
    pub fn new(
        village: Village,
        scenario: &Scenario,
        duration: std::time::Duration,
        seed: u64,
        encoding: Encoding,
    ) -> Result<Fleet, crate::scenario::ScenarioError> {
        Fleet::new_keyed(village, scenario, duration, seed, encoding, Keys::new())
    }

    /// [`Fleet::new`] with device keys: a detector listed in `keys` boots with its key, so its
    /// firmware signs every uplink and admits only authenticated downlinks; the others stay
    /// keyless. The runner gives the cameras theirs ([`crate::cameras::Cameras::start`]).
    pub fn new_keyed(
        village: Village,
        scenario: &Scenario,
        duration: std::time::Duration,
        seed: u64,
        encoding: Encoding,
        keys: Keys,
    ) -> Result<Fleet, crate::scenario::ScenarioError> {
        let village_id =
            VillageId::new(&village.village).map_err(|_| crate::scenario::ScenarioError::Unknown {
                what: "village id (not a valid protocol id)",
                name: village.village.clone(),
            })?;
        let rooms = scenario.rooms(&village, duration, seed)?;
        let fires = scenario.fire_starts(&village)?;
        let fire_ends = scenario.fire_ends(&village)?;
        let grids: Vec<&str> = {
            let mut g: Vec<&str> = village.buildings.iter().map(|b| b.grid.as_str()).collect();
            g.sort();
            g.dedup();
            g
        };
        let grid_of = |name: &str| grids.binary_search(&name).unwrap_or(0);
        let cfg = Config { heartbeat_ms: village.heartbeat.as_millis() as u64, ..Config::default() };
        let duration_ms = (duration.as_millis() as u64).max(1);
        let mut detectors = Vec::new();
        let mut slot = vec![None; village.devices.len()];
        for (index, (spec, room)) in village.devices.iter().zip(&rooms).enumerate() {
            let (Kind::Detector, Some(model)) = (spec.kind, room) else { continue };
            let dev = DeviceId::new(&spec.id).map_err(|_| crate::scenario::ScenarioError::Unknown {
                what: "device id (not a valid protocol id)",
                name: spec.id.clone(),
            })?;
            let vector = Vector {
                name: "sim",
                what: "village room",
                model: *model,
                duration_ms,
                expect: firegrid_detector::scenario::Expect::NoAlarm,
                seed: (seed as u32) ^ (index as u32).wrapping_mul(0x9E37_79B9),
            };
            let mut afe = Adpd188::new(SimulatedAfe::new(vector), NoDelay);
            // The simulated chip always answers as an ADPD188BI.
            let _ = afe.init();
            let removed_at =
                scenario.removal.iter().find(|r| r.device == spec.id).map(|r| r.at.as_millis() as u64);
            // Boots are spread over the first heartbeat interval so a village does not
            // report in one burst.
            let boot_at = (index as u64 * 7_919) % cfg.heartbeat_ms.clamp(1, 60_000);
            let mut identity = Identity::new(village_id.clone(), dev, 1);
            if let Some(key) = keys.get(&village.village, &spec.id) {
                identity = identity.with_key(key.clone());
            }
            let device = Device::new(cfg, CALIBRATION, identity, boot_at);
            slot[index] = Some(detectors.len());
            detectors.push(Detector {
                index,
                device,
                afe,
                model: *model,
                grid: grid_of(&village.buildings[spec.building].grid),
                removed_at,
                removed: false,
                scheduled: boot_at,
            });
        }
        let outages = scenario
            .outage
            .iter()
            .map(|o| Outage {
                grid: grid_of(&o.grid),
                from: o.at.as_millis() as u64,
                to: (o.at + o.duration).as_millis() as u64,
            })
            .collect();
        let heap = detectors.iter().enumerate().map(|(i, d)| Reverse((d.scheduled, i))).collect();
        Ok(Fleet {
            village,
            detectors,
            slot,
            heap,
            outages,
            encoding,
            duration_ms,
            fires,
            fire_ends,
            sent: 0,
            keys,
        })
    }

    /// The devices' keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The village.
    pub fn village(&self) -> &Village {
        &self.village
    }

    /// When each building's fire starts (simulated ms), if it burns.
    pub fn fires(&self) -> &[Option<(u64, crate::scenario::FireGrowth)>] {
        &self.fires
    }

    /// When each building's fire is put out, simulated ms (`None`: never).
    pub fn fire_ends(&self) -> &[Option<u64>] {
        &self.fire_ends
    }

    /// Simulated detectors.
    pub fn detectors(&self) -> usize {
        self.detectors.len()
    }

    /// When the next device wants to run.
    pub fn next_wake(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// Messages the firmware has handed to the transport so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Messages waiting in the detectors' outboxes (alarms and events not yet acknowledged,
    /// anything not yet sent), and the fullest.
    pub fn outbox_depth(&self) -> (usize, usize) {
        self.detectors
            .iter()
            .map(|d| d.device.outbox().len())
            .fold((0, 0), |(sum, max), n| (sum + n, max.max(n)))
    }

    /// The firmware state of a device (by village index), for checks.
    pub fn device(&self, index: usize) -> Option<&Device> {
        self.slot.get(index).copied().flatten().map(|s| &self.detectors[s].device)
    }

    fn online(&self, grid: usize, t: u64) -> bool {
        !self.outages.iter().any(|o| o.grid == grid && t >= o.from && t < o.to)
    }

    /// Runs every device due at or before `until`, each at its own instant, appending what
    /// the firmware sends to `out`.
    pub fn run_until(&mut self, until: u64, out: &mut Vec<Sent>) {
        while let Some(&Reverse((t, i))) = self.heap.peek() {
            if t > until {
                break;
            }
            self.heap.pop();
            if self.detectors[i].scheduled != t {
                continue; // superseded by a later reschedule
            }
            self.step(i, t, out);
        }
    }

    fn step(&mut self, i: usize, t: u64, out: &mut Vec<Sent>) {
        let online = self.online(self.detectors[i].grid, t);
        let duration_ms = self.duration_ms;
        let d = &mut self.detectors[i];
        if let Some(at) = d.removed_at
            && t >= at
            && !d.removed
        {
            d.removed = true;
            d.device.on_tamper(t, false);
        }
        if d.device.chamber_due(t) {
            d.afe.bus_mut().set_time(t);
            let sample = firegrid_detector::drivers::ChamberSensor::sample(&mut d.afe).map_err(|_| ());
            d.device.on_chamber(t, sample);
        }
        if d.device.battery_due(t) {
            let consumed = d.model.consumed_at(t, duration_ms);
            d.device.on_battery(t, battery_mv(consumed));
        }
        d.device.tick(t);
        self.pump(i, t, online, out);
    }

    fn pump(&mut self, i: usize, t: u64, online: bool, out: &mut Vec<Sent>) {
        let encoding = self.encoding;
        let d = &mut self.detectors[i];
        let before = out.len();
        let mut link = Collect { device: d.index, ready: online, out };
        let _ = pump(&mut d.device, &mut link, t, encoding);
        self.sent += (out.len() - before) as u64;
        // Offline, the firmware retries when its outbox says; wake then (or at the next
        // sample), never in a busy loop.
        let next = d.device.next_wake_ms().max(t + 1);
        d.scheduled = next;
        self.heap.push(Reverse((next, i)));
    }

    /// Hands a downlink (an acknowledgement, a command) to device `index` at `t`, and sends
    /// whatever it answers.
    pub fn deliver(&mut self, index: usize, payload: &[u8], t: u64, out: &mut Vec<Sent>) {
        let Some(Some(i)) = self.slot.get(index).copied() else { return };
        self.detectors[i].device.on_downlink(t, payload);
        let online = self.online(self.detectors[i].grid, t);
        self.pump(i, t, online, out);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use firegrid_protocol::{DetectorState, DeviceKey, Downlink, DownlinkBody, Uplink, UplinkBody};

    use super::*;
    use crate::scenario::Scenario;
    use crate::village::VillageParams;

    /// Runs the fleet in simulated time over a perfect link that acknowledges at once what
    /// the gateway acknowledges (alarm and event classes), returning every first transmission
    /// as (time, device index, message). With `keys`, the acknowledgements are signed as the
    /// gateway signs them (for boot 1) for the devices that have one.
    fn run_signing(fleet: &mut Fleet, until: u64, keys: Option<&Keys>) -> Vec<(u64, usize, Uplink)> {
        let mut log = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut cmd_seq = 0;
        while let Some(t) = fleet.next_wake().filter(|t| *t <= until) {
            let mut out = Vec::new();
            fleet.run_until(t, &mut out);
            while !out.is_empty() {
                let mut answers = Vec::new();
                for s in out.drain(..) {
                    let msg =
                        Uplink::decode(&s.payload, Encoding::Compact, &firegrid_protocol::Limits::default())
                            .unwrap();
                    cmd_seq += 1;
                    let mut ack =
                        Downlink::new(cmd_seq, 0, DownlinkBody::Ack { boot: msg.boot, seq: msg.seq });
                    let village = fleet.village().village.clone();
                    let id = fleet.village().devices[s.device].id.clone();
                    if let Some(key) = keys.and_then(|k| k.get(&village, &id)) {
                        let (village, id) = (VillageId::new(&village).unwrap(), DeviceId::new(&id).unwrap());
                        ack.sign(&village, &id, 1, key);
                    }
                    let mut buf = [0u8; 64];
                    let ack = ack.encode(Encoding::Compact, &mut buf).unwrap().to_vec();
                    let first = seen.insert((s.device, msg.boot, msg.seq));
                    let acknowledged = msg.class().is_acknowledged();
                    assert!(first || acknowledged, "telemetry is sent once: {msg:?}");
                    if acknowledged {
                        fleet.deliver(s.device, &ack, t, &mut answers);
                    }
                    if first {
                        log.push((t, s.device, msg));
                    }
                }
                out = answers;
            }
        }
        log
    }

    fn run(fleet: &mut Fleet, until: u64) -> Vec<(u64, usize, Uplink)> {
        run_signing(fleet, until, None)
    }

    fn alarms(log: &[(u64, usize, Uplink)]) -> Vec<(u64, usize)> {
        log.iter()
            .filter(|(_, _, m)| matches!(&m.body, UplinkBody::State(s) if s.state == DetectorState::Alarm))
            .map(|(t, d, _)| (*t, *d))
            .collect()
    }

    #[test]
    fn a_scripted_fire_alarms_the_right_detectors_in_order_and_spreads_to_the_neighbours() {
        let village = Village::generate(
            &VillageParams {
                buildings: 100,
                detectors: 300,
                camera_channels: 0,
                water_sensors: 0,
                ..VillageParams::default()
            },
            3,
        )
        .unwrap();
        let scenario = Scenario::from_toml(
            "[[fire]]\nbuilding = \"B0055\"\nat = \"2m\"\ngrowth = \"flaming\"\nspread_after = \"5m\"\nspread_radius_m = 15.0\n",
        )
        .unwrap();
        let seat: Vec<usize> = village.detectors_in(55).collect();
        let neighbours: Vec<usize> = village
            .neighbours(55, 15.0)
            .into_iter()
            .flat_map(|b| village.detectors_in(b).collect::<Vec<_>>())
            .collect();
        let mut fleet =
            Fleet::new(village, &scenario, Duration::from_secs(20 * 60), 3, Encoding::Compact).unwrap();
        let log = run(&mut fleet, 20 * 60_000);
        let alarms = alarms(&log);
        let alarmed: std::collections::BTreeSet<usize> = alarms.iter().map(|(_, d)| *d).collect();
        let expected: std::collections::BTreeSet<usize> = seat.iter().chain(&neighbours).copied().collect();
        assert_eq!(alarmed, expected, "exactly the seat's and the neighbours' detectors alarm");
        // In the seat, room k sees smoke 30 s after room k-1: alarms come in room order,
        // each within the firmware's flaming-fire budget (60 s of growth plus confirmation).
        let seat_times: Vec<u64> =
            seat.iter().map(|d| alarms.iter().find(|(_, x)| x == d).unwrap().0).collect();
        assert!(seat_times.windows(2).all(|w| w[0] < w[1]), "room order: {seat_times:?}");
        for (k, t) in seat_times.iter().enumerate() {
            let smoke = 120_000 + k as u64 * 30_000;
            assert!(*t > smoke && *t <= smoke + 120_000, "room {k}: alarm at {t} ms, smoke from {smoke} ms");
        }
        let first_neighbour =
            alarms.iter().filter(|(_, d)| neighbours.contains(d)).map(|(t, _)| *t).min().unwrap();
        assert!(first_neighbour > 7 * 60_000, "neighbours burn 5 min after the seat: {first_neighbour} ms");
        // Nothing else alarmed, and every device kept sending heartbeats.
        assert!(log.iter().any(|(_, _, m)| matches!(m.body, UplinkBody::Heartbeat(_))));
    }

    #[test]
    fn an_outage_queues_alarms_in_the_firmware_and_they_leave_when_it_ends() {
        let village = Village::generate(
            &VillageParams {
                buildings: 40,
                detectors: 80,
                camera_channels: 0,
                water_sensors: 0,
                communities: 1,
                grids_per_community: 4,
                ..VillageParams::default()
            },
            5,
        )
        .unwrap();
        let grid = village.buildings[0].grid.clone();
        let scenario = Scenario::from_toml(&format!(
            "[[fire]]\nbuilding = \"B0000\"\nat = \"1m\"\ngrowth = \"flaming\"\n[[outage]]\ngrid = \"{grid}\"\nat = \"30s\"\nduration = \"5m\"\n"
        ))
        .unwrap();
        let seat: Vec<usize> = village.detectors_in(0).collect();
        let mut fleet =
            Fleet::new(village, &scenario, Duration::from_secs(10 * 60), 5, Encoding::Compact).unwrap();
        let log = run(&mut fleet, 10 * 60_000);
        let alarms = alarms(&log);
        for d in &seat {
            let (t, _) = alarms
                .iter()
                .find(|(_, x)| x == d)
                .unwrap_or_else(|| panic!("detector {d} alarm never sent"));
            assert!(*t >= 330_000, "sent only after the outage ended at 5m30s: {t}");
        }
        assert_eq!(fleet.outbox_depth().0, 0, "everything sent, every alarm and event acknowledged");
    }

    #[test]
    fn provisioned_detectors_sign_every_uplink_and_only_signed_acks_empty_their_outboxes() {
        let village = Village::generate(
            &VillageParams {
                buildings: 10,
                detectors: 30,
                camera_channels: 0,
                water_sensors: 0,
                ..VillageParams::default()
            },
            7,
        )
        .unwrap();
        let scenario =
            Scenario::from_toml("[[fire]]\nbuilding = \"B0000\"\nat = \"1m\"\ngrowth = \"flaming\"\n")
                .unwrap();
        let seat: Vec<usize> = village.detectors_in(0).collect();
        // The seat's detectors are provisioned, and so is every other one of the rest.
        let keyed: Vec<usize> = seat.iter().copied().chain(village.detectors_in(1).step_by(2)).collect();
        let mut keys = Keys::new();
        for &d in &keyed {
            keys.insert(&village.village, &village.devices[d].id, DeviceKey::from_bytes([d as u8; 32]));
        }
        let key_of = |d: usize| keys.get(&village.village, &village.devices[d].id);
        let name = VillageId::new(&village.village).unwrap();
        let fleet_with = |keys: &Keys| {
            Fleet::new_keyed(
                village.clone(),
                &scenario,
                Duration::from_secs(8 * 60),
                7,
                Encoding::Compact,
                keys.clone(),
            )
            .unwrap()
        };

        // A gateway that does not sign its acknowledgements.
        let mut fleet = fleet_with(&keys);
        let log = run_signing(&mut fleet, 8 * 60_000, None);
        let mut signed = 0;
        for (_, d, msg) in &log {
            match key_of(*d) {
                Some(key) => {
                    assert_eq!(msg.verify(&name, key), Ok(()), "device {d}: {msg:?}");
                    signed += 1;
                }
                None => assert!(!msg.is_signed(), "a keyless device signs nothing"),
            }
        }
        assert!(signed > 0 && signed < log.len());
        assert_eq!(alarms(&log).len(), seat.len(), "every seat detector alarms");
        for &d in &seat {
            let device = fleet.device(d).unwrap();
            assert!(
                device
                    .outbox()
                    .entries()
                    .iter()
                    .any(|e| matches!(&e.msg.body, UplinkBody::State(s) if s.state == DetectorState::Alarm)),
                "detector {d}: an unsigned ack dropped its alarm"
            );
            assert!(device.refusals().unsigned > 0);
        }
        for d in village.detectors_in(1).filter(|d| !keyed.contains(d)) {
            assert!(fleet.device(d).unwrap().outbox().is_empty(), "keyless detector {d} obeys unsigned acks");
        }

        // The gateway signs: every outbox empties, nothing is refused.
        let mut fleet = fleet_with(&keys);
        run_signing(&mut fleet, 8 * 60_000, Some(&keys));
        assert_eq!(fleet.outbox_depth().0, 0);
        assert!(keyed.iter().all(|&d| fleet.device(d).unwrap().refusals().total() == 0));
    }
}
