//! What the duty-officer console shows about a place: the current registry (buildings, their
//! devices and coordinates) and the latest event of every camera channel, so a case's detail
//! can name the devices involved and the nearest camera's latest event with its snapshot
//! reference.
//!
//! Pure state behind locks: the fleet task swaps the registry in on every (re)load and the
//! alarm loop's feeder records camera events as they are accepted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use firegrid_protocol::{DeviceId, Uplink, UplinkBody};
use serde::Serialize;

use crate::registry::{Building, Device, DeviceKind, Registry, Scope, ScopeLevel};

/// The latest event seen on one camera channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelEvent {
    /// The camera (or NVR) device.
    pub device: String,
    /// The channel (1-based).
    pub channel: u16,
    /// What was seen (`fire`, `smoke`, ...).
    pub event: String,
    /// Whether it was still going on at its last report.
    pub active: bool,
    /// The analytics' confidence, %.
    pub confidence_pct: u8,
    /// The channel's latest snapshot reference: this event's, or an earlier event's when this
    /// one took none (an event's end usually carries no picture).
    pub snapshot: Option<String>,
    /// When the gateway accepted it, Unix ms.
    pub at_ms: u64,
}

/// The nearest camera to a building, with its latest event if it reported one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NearestCamera {
    /// The camera device.
    pub device: String,
    /// The building it is installed in.
    pub building: String,
    /// Distance between the two buildings, metres (0 in the same building).
    pub distance_m: f64,
    /// The latest event of any of its channels.
    pub latest: Option<ChannelEvent>,
}

/// Channels remembered per camera.
const MAX_CHANNELS: usize = 256;

/// Registry and camera events for the console.
#[derive(Debug, Default)]
pub struct Site {
    registry: RwLock<Option<Arc<Registry>>>,
    cameras: Mutex<HashMap<DeviceId, BTreeMap<u16, ChannelEvent>>>,
    heard: Mutex<HashSet<DeviceId>>,
}

impl Site {
    /// An empty site: no registry yet.
    pub fn new() -> Site {
        Site::default()
    }

    /// Swaps in a (re)loaded registry.
    pub fn set_registry(&self, registry: Arc<Registry>) {
        *self.registry.write().unwrap() = Some(registry);
    }

    /// The current registry, if one is loaded.
    pub fn registry(&self) -> Option<Arc<Registry>> {
        self.registry.read().unwrap().clone()
    }

    /// Notes that `msg`'s device is reporting, and records `msg` if it is a camera event.
    pub fn record(&self, msg: &Uplink, at_ms: u64) {
        {
            let mut heard = self.heard.lock().unwrap();
            if !heard.contains(&msg.dev) {
                heard.insert(msg.dev.clone());
            }
        }
        let UplinkBody::CameraEvent(event) = &msg.body else { return };
        let seen = ChannelEvent {
            device: msg.dev.to_string(),
            channel: event.channel,
            event: serde_json::to_value(event.event)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            active: event.active,
            confidence_pct: event.confidence_pct,
            snapshot: event.snapshot.as_ref().map(|s| s.to_string()),
            at_ms,
        };
        let mut cameras = self.cameras.lock().unwrap();
        let channels = cameras.entry(msg.dev.clone()).or_default();
        // An NVR numbers at most a few dozen channels; a camera claiming more is broken or
        // hostile and gets no more memory.
        if channels.len() >= MAX_CHANNELS && !channels.contains_key(&event.channel) {
            return;
        }
        let earlier = channels.get(&event.channel).and_then(|e| e.snapshot.clone());
        let seen = ChannelEvent { snapshot: seen.snapshot.or(earlier), ..seen };
        channels.insert(event.channel, seen);
    }

    /// How many devices have sent at least one accepted message since the start.
    pub fn reporting(&self) -> usize {
        self.heard.lock().unwrap().len()
    }

    /// A registered building and its devices (the registry's O(1) scope index), or `None`
    /// without a registry or for an unknown building.
    pub fn building(&self, id: &str) -> Option<(Arc<Building>, Vec<Arc<Device>>)> {
        let registry = self.registry()?;
        let scope = Scope { level: ScopeLevel::Building, name: id.into() };
        let devices: Vec<Arc<Device>> = registry.in_scope(&scope).cloned().collect();
        Some((devices.first()?.building.clone(), devices))
    }

    /// The camera nearest to `building` (one in the building itself first), with the latest
    /// event of its channels. `None` without a registry or without cameras.
    pub fn nearest_camera(&self, building: &str) -> Option<NearestCamera> {
        let registry = self.registry()?;
        let (here, _) = self.building(building)?;
        let camera = registry
            .devices()
            .iter()
            .filter(|d| d.kind == DeviceKind::Camera)
            .map(|d| (distance_m(&here, &d.building), d))
            .min_by(|a, b| a.0.total_cmp(&b.0))?;
        let latest = self
            .cameras
            .lock()
            .unwrap()
            .get(&camera.1.id)
            .and_then(|channels| channels.values().max_by_key(|e| e.at_ms).cloned());
        Some(NearestCamera {
            device: camera.1.id.to_string(),
            building: camera.1.building.id.to_string(),
            distance_m: camera.0,
            latest,
        })
    }
}

/// Distance between two buildings, metres (equirectangular: exact enough within a village).
pub fn distance_m(a: &Building, b: &Building) -> f64 {
    const EARTH_M: f64 = 6_371_000.0;
    let lat = ((a.lat + b.lat) / 2.0).to_radians();
    let x = (b.lon - a.lon).to_radians() * lat.cos();
    let y = (b.lat - a.lat).to_radians();
    (x * x + y * y).sqrt() * EARTH_M
}

#[cfg(test)]
mod tests {
    use super::*;
    use firegrid_protocol::{CameraEvent, CameraEventKind};

    fn registry() -> Arc<Registry> {
        let csv = "device_id,kind,model,building_id,building_address,lat,lon,grid,community,street,village,channels\n\
                   sd-1,smoke_detector,m,B1,1 Lane,25.0000,102.0000,G1,C1,S1,v1,\n\
                   cam-near,camera,m,B2,2 Lane,25.0001,102.0000,G1,C1,S1,v1,4\n\
                   cam-far,camera,m,B3,3 Lane,25.0100,102.0000,G1,C1,S1,v1,4\n";
        Arc::new(Registry::from_reader(csv.as_bytes()).expect("the test registry parses"))
    }

    fn camera_event(dev: &str, channel: u16, snapshot: &str) -> Uplink {
        Uplink::new(
            DeviceId::new(dev).unwrap(),
            1,
            7,
            0,
            UplinkBody::CameraEvent(CameraEvent {
                channel,
                event: CameraEventKind::Fire,
                active: true,
                confidence_pct: 93,
                snapshot: Some(snapshot.try_into().unwrap()),
            }),
        )
    }

    #[test]
    fn nearest_camera_is_the_closest_building_s_with_its_latest_channel_event() {
        let site = Site::new();
        assert_eq!(site.nearest_camera("B1"), None, "no registry, no camera");
        site.set_registry(registry());
        let nearest = site.nearest_camera("B1").expect("a camera");
        assert_eq!(nearest.device, "cam-near");
        assert!((10.0..12.5).contains(&nearest.distance_m), "0.0001° of latitude is ~11 m: {nearest:?}");
        assert_eq!(nearest.latest, None, "no event seen yet");

        site.record(&camera_event("cam-near", 2, "snap/2.jpg"), 1_000);
        site.record(&camera_event("cam-near", 3, "snap/3.jpg"), 2_000);
        site.record(&camera_event("cam-far", 1, "snap/far.jpg"), 3_000);
        let latest = site.nearest_camera("B1").unwrap().latest.expect("an event");
        assert_eq!(
            (latest.channel, latest.snapshot.as_deref(), latest.event.as_str()),
            (3, Some("snap/3.jpg"), "fire")
        );
        // The event's end carries no picture: the channel's last one stays referenced.
        let mut ended = camera_event("cam-near", 3, "unused");
        if let UplinkBody::CameraEvent(e) = &mut ended.body {
            e.active = false;
            e.snapshot = None;
        }
        site.record(&ended, 4_000);
        let latest = site.nearest_camera("B1").unwrap().latest.unwrap();
        assert_eq!(
            (latest.active, latest.snapshot.as_deref(), latest.at_ms),
            (false, Some("snap/3.jpg"), 4_000)
        );
        assert_eq!(site.nearest_camera("B3").unwrap().device, "cam-far", "a building's own camera first");
        assert_eq!(site.nearest_camera("nowhere"), None);
    }
}
