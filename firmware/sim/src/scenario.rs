//! Scenarios as data: a small TOML format (or the same structs built in Rust) saying what
//! happens in the village and when, in simulated time from the start of the run.
//!
//! ```toml
//! [[fire]]                 # a fire in B0042 ten minutes in, spreading to the buildings
//! building = "B0042"       # within 15 m four minutes later
//! at = "10m"
//! growth = "flaming"       # or "smouldering"
//! spread_after = "4m"
//! spread_radius_m = 15.0
//! out_after = "25m"        # put out 25 minutes after it starts in each building (optional)
//!
//! [[cooking]]              # dinner: 2 % of buildings have a cooking plume in one room
//! at = "18h"
//! share = 0.02
//!
//! [[outage]]               # a grid loses its NB-IoT cell for 20 minutes
//! grid = "C0-G3"
//! at = "30m"
//! duration = "20m"
//!
//! [[removal]]              # a detector pulled off its base
//! device = "sd-00010"
//! at = "5m"
//!
//! [[chatter]]              # a detector with insects in it: smoke puffs every 15 s
//! device = "sd-00020"
//! at = "2m"
//! period = "15s"
//! cycles = 8
//!
//! [[water]]                # the sprinkler main at ws-000 loses pressure for 15 minutes
//! device = "ws-000"        # (its booster pump trips): 0.05 MPa, under the gateway's
//! at = "12m"               # 0.15 MPa threshold; then it reads normal again
//! value = 0.05             # MPa for pressure transmitters, m for tank level sensors
//! duration = "15m"         # (which sensor is which: the `water` module)
//!
//! [dust]                   # chambers slowly contaminated over the run
//! share = 0.01
//! ir_counts = 1500.0
//!
//! [battery]                # cells near their end
//! share = 0.01
//! from = 0.93
//! to = 1.0
//!
//! [bad_firmware]           # devices sending malformed messages
//! devices = 3
//! per_minute = 2.0
//! ```
//!
//! Each detector's room becomes a `firegrid_detector::scenario::Model` (the firmware's own
//! physics: obscuration curves, particle colour ratios, dust, battery discharge), which the
//! simulated ADPD188 front end answers from; the firmware decides the rest.

use std::time::Duration;

use firegrid_detector::scenario::{Discharge, Dust, Growth, Model, Source};
use serde::{Deserialize, Serialize};

use crate::village::{Kind, Village};

/// A whole scenario.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Fires.
    pub fire: Vec<Fire>,
    /// Cooking waves.
    pub cooking: Vec<Cooking>,
    /// Connectivity outages of grids.
    pub outage: Vec<Outage>,
    /// Detectors removed from their base.
    pub removal: Vec<Removal>,
    /// Chattering detectors.
    pub chatter: Vec<Chatter>,
    /// Water sensors whose reading drops for a while (served by [`crate::water`]).
    pub water: Vec<WaterDrop>,
    /// Dust build-up.
    pub dust: Option<DustLoad>,
    /// Batteries near their end.
    pub battery: Option<BatteryDecay>,
    /// Devices with bad firmware.
    pub bad_firmware: Option<BadFirmware>,
}

/// How a fire grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FireGrowth {
    /// A t-squared flaming fire: 1 dB/m at three minutes (NFPA 72 Annex B, "medium").
    Flaming,
    /// A smouldering fire: exponential growth over tens of minutes.
    Smouldering,
}

/// A fire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fire {
    /// Building id.
    pub building: String,
    /// When it starts.
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    /// How it grows.
    pub growth: FireGrowth,
    /// Neighbours catch fire this much later.
    #[serde(default, with = "humantime_serde::option")]
    pub spread_after: Option<Duration>,
    /// Buildings within this distance are neighbours.
    #[serde(default = "default_radius")]
    pub spread_radius_m: f64,
    /// The fire brigade puts it out this long after it starts in each building; its smoke
    /// then clears (and the detectors return to normal). Absent: it burns to the end of the
    /// run.
    #[serde(default, with = "humantime_serde::option", skip_serializing_if = "Option::is_none")]
    pub out_after: Option<Duration>,
}

fn default_radius() -> f64 {
    15.0
}

/// A cooking wave at a meal time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cooking {
    /// When.
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    /// Share of buildings where one detector sees a strong cooking plume.
    #[serde(default)]
    pub share: f64,
    /// Buildings that cook for certain (their first detector sees the plume), besides the
    /// random `share`: a script that must say in advance which cases it opens names them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buildings: Vec<String>,
}

/// A grid without connectivity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outage {
    /// The grid.
    pub grid: String,
    /// From.
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    /// For how long.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
}

/// A detector taken off its base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Removal {
    /// The device.
    pub device: String,
    /// When.
    #[serde(with = "humantime_serde")]
    pub at: Duration,
}

/// A detector seeing smoke puffs, alarming and clearing again and again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chatter {
    /// The device.
    pub device: String,
    /// From.
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    /// Time between puffs.
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    /// Puffs.
    pub cycles: u8,
}

/// A water sensor's reading dropping for a while: a tripped booster pump or a closed valve
/// on a sprinkler main, a tank drained by a leak or a failed float valve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaterDrop {
    /// The water sensor (a `water_sensor` of the registry, e.g. `ws-000`).
    pub device: String,
    /// From.
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    /// What it reads meanwhile, in its engineering unit: MPa for a pressure transmitter, m
    /// for a tank level sensor. Below the gateway's low threshold (0.15 MPa, 1.2 m) it raises
    /// low pressure or low level.
    pub value: f64,
    /// For how long; then it reads normal again.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
}

/// Dust accumulating in some chambers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DustLoad {
    /// Share of detectors.
    #[serde(default)]
    pub share: f64,
    /// Detectors that get the dust for certain, besides the random `share`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Extra IR counts at the end of the run. The firmware moves its baseline by at most
    /// 5 % of the alarm threshold a day and raises contamination at 80 % of its headroom
    /// (0.7 × the threshold), so contamination takes days of build-up (the detector crate's
    /// 30-day vector); over a shorter run, counts beyond the daily compensation read as
    /// smoke (600 counts are the 0.15 dB/m alarm threshold).
    pub ir_counts: f32,
}

/// Batteries discharging over the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatteryDecay {
    /// Share of detectors.
    #[serde(default)]
    pub share: f64,
    /// Detectors that get the failing cell for certain, besides the random `share`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Consumed fraction at the start.
    pub from: f32,
    /// Consumed fraction at the end.
    pub to: f32,
}

/// Devices with bad firmware, publishing malformed messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BadFirmware {
    /// How many devices.
    pub devices: usize,
    /// Malformed messages per device per simulated minute.
    pub per_minute: f64,
}

/// Why a scenario does not fit a village.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// TOML.
    #[error("scenario file: {0}")]
    Toml(#[from] toml::de::Error),
    /// A name that is not in the village.
    #[error("scenario names {what} {name:?}, which is not in the village")]
    Unknown {
        /// Building, device or grid.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A value no device can take.
    #[error("scenario {what}: value {value} is not possible")]
    Value {
        /// Which entry.
        what: String,
        /// The value.
        value: f64,
    },
}

/// Seconds between the detectors of one building seeing a fire's smoke: the rooms further
/// from the seat of the fire fill later.
pub const ROOM_DELAY: Duration = Duration::from_secs(30);

impl Scenario {
    /// Parses the TOML format.
    pub fn from_toml(text: &str) -> Result<Scenario, ScenarioError> {
        Ok(toml::from_str(text)?)
    }

    /// When each building's fire starts, ms (the seat, then its neighbours).
    pub fn fire_starts(&self, village: &Village) -> Result<Vec<Option<(u64, FireGrowth)>>, ScenarioError> {
        let mut starts: Vec<Option<(u64, FireGrowth)>> = vec![None; village.buildings.len()];
        for fire in &self.fire {
            let b =
                village.buildings.iter().position(|x| x.id == fire.building).ok_or_else(|| {
                    ScenarioError::Unknown { what: "building", name: fire.building.clone() }
                })?;
            let at = fire.at.as_millis() as u64;
            let mut set = |b: usize, t: u64| {
                if starts[b].is_none_or(|(s, _)| t < s) {
                    starts[b] = Some((t, fire.growth));
                }
            };
            set(b, at);
            if let Some(after) = fire.spread_after {
                for n in village.neighbours(b, fire.spread_radius_m) {
                    set(n, at + after.as_millis() as u64);
                }
            }
        }
        Ok(starts)
    }

    /// When each building's fire is put out, ms (`None`: not on fire, or never put out).
    pub fn fire_ends(&self, village: &Village) -> Result<Vec<Option<u64>>, ScenarioError> {
        let starts = self.fire_starts(village)?;
        let mut ends = vec![None; starts.len()];
        for fire in &self.fire {
            let Some(out) = fire.out_after else { continue };
            let b = find_building(village, &fire.building)?;
            let mut buildings = vec![b];
            if fire.spread_after.is_some() {
                buildings.extend(village.neighbours(b, fire.spread_radius_m));
            }
            for b in buildings {
                if let Some((start, _)) = starts[b] {
                    ends[b] = Some(start + out.as_millis() as u64);
                }
            }
        }
        Ok(ends)
    }

    /// The room of every detector, by device index (`None` for other kinds), for a run of
    /// `duration`.
    pub fn rooms(
        &self,
        village: &Village,
        _duration: Duration,
        seed: u64,
    ) -> Result<Vec<Option<Model>>, ScenarioError> {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5EED);
        let fires = self.fire_starts(village)?;
        let mut rooms: Vec<Option<Model>> = village
            .devices
            .iter()
            .map(|d| {
                (d.kind == Kind::Detector).then_some(Model {
                    sources: [None, None],
                    dust: None,
                    led_failure_ms: None,
                    discharge: None,
                })
            })
            .collect();
        let add = |room: &mut Model, source: Source| {
            if let Some(slot) = room.sources.iter_mut().find(|s| s.is_none()) {
                *slot = Some(source);
            }
        };
        let ends = self.fire_ends(village)?;
        for (b, fire) in fires.iter().enumerate() {
            let Some((start, growth)) = fire else { continue };
            for (k, d) in village.detectors_in(b).enumerate() {
                let start_ms = start + k as u64 * ROOM_DELAY.as_millis() as u64;
                let curve = match ends[b] {
                    // A fire that is put out: smoke rising towards a few dB/m (the alarm
                    // threshold within about half a minute, as the t-squared fire), cleared by
                    // ventilation from when it is out.
                    Some(end) => Growth::Plume {
                        peak: 3.0,
                        rise_s: 600.0,
                        end_s: end.saturating_sub(start_ms) as f32 / 1000.0,
                        decay_s: 45.0,
                    },
                    None => growth.curve(),
                };
                let source = Source { start_ms, growth: curve, ratio: growth.ratio() };
                add(rooms[d].as_mut().unwrap(), source);
            }
        }
        for chatter in &self.chatter {
            let d = find_device(village, &chatter.device)?;
            let growth = Growth::Puffs {
                peak: 0.6,
                period_s: chatter.period.as_secs_f32(),
                decay_s: 3.0,
                count: chatter.cycles,
            };
            if let Some(room) = rooms[d].as_mut() {
                add(room, Source { start_ms: chatter.at.as_millis() as u64, growth, ratio: 1.6 });
            }
        }
        for cooking in &self.cooking {
            let named = cooking
                .buildings
                .iter()
                .map(|id| find_building(village, id))
                .collect::<Result<Vec<usize>, _>>()?;
            for b in 0..village.buildings.len() {
                if (named.contains(&b) || rng.f64() < cooking.share)
                    && let Some(d) = village.detectors_in(b).next()
                {
                    // A wok on a high flame under the detector: strong enough to alarm
                    // (a cooking false alarm), with cooking oil's colour ratio.
                    let growth = Growth::Plume { peak: 0.45, rise_s: 90.0, end_s: 420.0, decay_s: 120.0 };
                    let start = cooking.at.as_millis() as u64 + rng.u64(0..600_000);
                    add(rooms[d].as_mut().unwrap(), Source { start_ms: start, growth, ratio: 0.85 });
                }
            }
        }
        let named = |devices: &[String]| {
            devices.iter().map(|id| find_device(village, id)).collect::<Result<Vec<usize>, _>>()
        };
        let dusty = named(self.dust.as_ref().map_or(&[], |d| &d.devices))?;
        let failing = named(self.battery.as_ref().map_or(&[], |b| &b.devices))?;
        for (d, room) in rooms.iter_mut().enumerate() {
            let Some(room) = room else { continue };
            // A random draw for every detector whether named or not, so naming devices does
            // not change which others the shares pick.
            if let Some(dust) = &self.dust
                && (rng.f64() < dust.share) | dusty.contains(&d)
            {
                room.dust = Some(Dust { ir_counts: dust.ir_counts, ratio: 0.8 });
            }
            if let Some(battery) = &self.battery
                && (rng.f64() < battery.share) | failing.contains(&d)
            {
                room.discharge = Some(Discharge { from: battery.from, to: battery.to });
            }
        }
        for removal in &self.removal {
            find_device(village, &removal.device)?;
        }
        self.water_sensors(village)?;
        for outage in &self.outage {
            if !village.buildings.iter().any(|b| b.grid == outage.grid) {
                return Err(ScenarioError::Unknown { what: "grid", name: outage.grid.clone() });
            }
        }
        Ok(rooms)
    }
}

impl Scenario {
    /// The device index of each `[[water]]` drop's sensor, in order.
    ///
    /// # Errors
    /// A drop naming a device that is not in the village or is not a water sensor, or
    /// reading a negative or non-finite value (no transmitter reads that while it works).
    pub fn water_sensors(&self, village: &Village) -> Result<Vec<usize>, ScenarioError> {
        self.water
            .iter()
            .map(|drop| {
                let unknown = || ScenarioError::Unknown { what: "water sensor", name: drop.device.clone() };
                let d = find_device(village, &drop.device).map_err(|_| unknown())?;
                if village.devices[d].kind != Kind::Water {
                    return Err(unknown());
                }
                if !(drop.value.is_finite() && drop.value >= 0.0) {
                    return Err(ScenarioError::Value {
                        what: format!("[[water]] {}", drop.device),
                        value: drop.value,
                    });
                }
                Ok(d)
            })
            .collect()
    }
}

fn find_building(village: &Village, id: &str) -> Result<usize, ScenarioError> {
    village
        .buildings
        .iter()
        .position(|b| b.id == id)
        .ok_or_else(|| ScenarioError::Unknown { what: "building", name: id.to_owned() })
}

fn find_device(village: &Village, id: &str) -> Result<usize, ScenarioError> {
    village
        .devices
        .iter()
        .position(|d| d.id == id)
        .ok_or_else(|| ScenarioError::Unknown { what: "device", name: id.to_owned() })
}

impl FireGrowth {
    fn curve(self) -> Growth {
        match self {
            FireGrowth::Flaming => Growth::TSquared { m_ref: 1.0, t_ref_s: 180.0 },
            FireGrowth::Smouldering => Growth::Exponential { scale: 0.02, tau_s: 300.0, max: 4.0 },
        }
    }

    /// Blue/IR ratio of the smoke (flaming soot 1.3–1.4, smouldering 1.5–1.8).
    fn ratio(self) -> f32 {
        match self {
            FireGrowth::Flaming => 1.35,
            FireGrowth::Smouldering => 1.6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::village::VillageParams;

    #[test]
    fn the_documented_example_parses_and_fits_a_default_village() {
        let doc = include_str!("scenario.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start().to_owned() + "\n")
            .collect();
        let scenario = Scenario::from_toml(&example).unwrap();
        assert_eq!(scenario.fire.len(), 1);
        assert_eq!(scenario.water.len(), 1);
        let village = Village::generate(&VillageParams::default(), 1).unwrap();
        let rooms = scenario.rooms(&village, Duration::from_secs(3_600), 1).unwrap();
        let burning = rooms
            .iter()
            .flatten()
            .filter(|r| {
                r.sources
                    .iter()
                    .flatten()
                    .any(|s| s.start_ms >= 600_000 && s.ratio == FireGrowth::Flaming.ratio())
            })
            .count();
        assert!(burning > village.detectors_in(42).count(), "the seat and its neighbours burn: {burning}");
    }

    #[test]
    fn a_fire_that_is_put_out_clears_in_every_building_it_reached() {
        let village = Village::generate(&VillageParams::default(), 1).unwrap();
        let seat = (0..village.buildings.len())
            .find(|&b| village.detectors_in(b).count() >= 2 && !village.neighbours(b, 15.0).is_empty())
            .unwrap();
        let fire = |out_after| Fire {
            building: village.buildings[seat].id.clone(),
            at: Duration::from_secs(600),
            growth: FireGrowth::Flaming,
            spread_after: Some(Duration::from_secs(240)),
            spread_radius_m: 15.0,
            out_after,
        };
        let burning = Scenario { fire: vec![fire(None)], ..Scenario::default() };
        let put_out = Scenario { fire: vec![fire(Some(Duration::from_secs(1_200)))], ..Scenario::default() };
        assert!(burning.fire_ends(&village).unwrap().iter().all(Option::is_none), "never put out");
        let ends = put_out.fire_ends(&village).unwrap();
        assert_eq!(ends[seat], Some(1_800_000), "the seat: 10 min + 20 min");
        for n in village.neighbours(seat, 15.0) {
            assert_eq!(ends[n], Some(2_040_000), "a neighbour: 14 min + 20 min");
        }
        assert_eq!(ends.iter().flatten().count(), 1 + village.neighbours(seat, 15.0).len());
        // Its detectors' smoke stops at the end (then decays); an unextinguished fire keeps
        // growing.
        let rooms = put_out.rooms(&village, Duration::from_secs(3_600), 1).unwrap();
        for d in village.detectors_in(seat) {
            let source = rooms[d].as_ref().unwrap().sources[0].expect("a fire source");
            let Growth::Plume { end_s, .. } = source.growth else { panic!("not a plume: {source:?}") };
            assert_eq!(source.start_ms + (end_s * 1000.0) as u64, 1_800_000, "device {d}");
        }
        let rooms = burning.rooms(&village, Duration::from_secs(3_600), 1).unwrap();
        let d = village.detectors_in(seat).next().unwrap();
        assert!(matches!(rooms[d].as_ref().unwrap().sources[0].unwrap().growth, Growth::TSquared { .. }));
    }

    #[test]
    fn names_not_in_the_village_are_refused() {
        let village =
            Village::generate(&VillageParams { buildings: 10, detectors: 10, ..VillageParams::default() }, 1)
                .unwrap();
        let bad = Scenario::from_toml("[[fire]]\nbuilding = \"B9999\"\nat = \"1m\"\ngrowth = \"flaming\"\n")
            .unwrap();
        assert!(matches!(
            bad.rooms(&village, Duration::from_secs(60), 1),
            Err(ScenarioError::Unknown { what: "building", .. })
        ));
        assert!(
            Scenario::from_toml("[[fire]]\nbuilding = \"B1\"\nat = \"1m\"\ngrowth = \"flaming\"\nsize = 3\n")
                .is_err()
        );
    }

    #[test]
    fn water_drops_must_name_a_water_sensor_and_a_possible_value() {
        let village = Village::generate(
            &VillageParams { buildings: 10, detectors: 10, water_sensors: 2, ..VillageParams::default() },
            1,
        )
        .unwrap();
        let check = |device: &str, value: f64, expected: Result<(), &str>| {
            let value = toml::Value::Float(value);
            let text = format!(
                "[[water]]\ndevice = \"{device}\"\nat = \"1m\"\nvalue = {value}\nduration = \"1m\"\n"
            );
            let scenario = Scenario::from_toml(&text).unwrap();
            let got =
                scenario.rooms(&village, Duration::from_secs(60), 1).map(|_| ()).map_err(|e| e.to_string());
            match expected {
                Ok(()) => assert_eq!(got, Ok(()), "{device} {value}"),
                Err(part) => {
                    assert!(got.as_ref().is_err_and(|e| e.contains(part)), "{device} {value}: {got:?}")
                }
            }
        };
        check("ws-001", 0.4, Ok(()));
        check("ws-001", 0.0, Ok(()));
        check("ws-002", 0.4, Err("water sensor \"ws-002\""));
        check("sd-00001", 0.4, Err("water sensor \"sd-00001\""));
        check("ws-000", -0.1, Err("not possible"));
        check("ws-000", f64::NAN, Err("not possible"));
    }
}
