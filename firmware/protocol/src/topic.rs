//! MQTT topics: `fg/v1/{village}/{device}/{up|down}/{kind}`.
//!
//! The kind is in the topic as well as in the payload so that a broker ACL can allow a
//! device only its own topics, and so that the gateway can subscribe to alarm-class kinds
//! separately from telemetry and never queue an alarm behind a backlog of heartbeats.

use core::fmt::Write;

use crate::downlink::DownlinkKind;
use crate::error::TopicError;
use crate::id::{DeviceId, VillageId, check_id};
use crate::uplink::UplinkKind;

/// Longest topic this crate writes or parses, in bytes.
pub const MAX_TOPIC_LEN: usize = 128;

/// A topic or topic filter in a fixed-size buffer.
pub type TopicBuf = heapless::String<MAX_TOPIC_LEN>;

const ROOT: &str = "fg";
const VERSION: &str = "v1";

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Device → gateway.
    Up,
    /// Gateway → device.
    Down,
}

impl Direction {
    /// The direction's topic level.
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// The last topic level: a message kind of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    /// An uplink kind.
    Up(UplinkKind),
    /// A downlink kind.
    Down(DownlinkKind),
}

impl TopicKind {
    /// The direction of the kind.
    pub const fn direction(self) -> Direction {
        match self {
            TopicKind::Up(_) => Direction::Up,
            TopicKind::Down(_) => Direction::Down,
        }
    }

    /// The kind's topic level.
    pub const fn as_str(self) -> &'static str {
        match self {
            TopicKind::Up(k) => k.as_str(),
            TopicKind::Down(k) => k.as_str(),
        }
    }
}

/// A parsed, valid topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic {
    /// The village level.
    pub village: VillageId,
    /// The device level.
    pub device: DeviceId,
    /// Direction and kind.
    pub kind: TopicKind,
}

impl Topic {
    /// The topic a device publishes `kind` uplinks on.
    pub fn uplink(village: VillageId, device: DeviceId, kind: UplinkKind) -> Self {
        Topic { village, device, kind: TopicKind::Up(kind) }
    }

    /// The topic the gateway publishes `kind` commands to a device on.
    pub fn downlink(village: VillageId, device: DeviceId, kind: DownlinkKind) -> Self {
        Topic { village, device, kind: TopicKind::Down(kind) }
    }

    /// Parses and checks a topic.
    pub fn parse(topic: &str) -> Result<Self, TopicError> {
        if topic.len() > MAX_TOPIC_LEN {
            return Err(TopicError::TooLong);
        }
        let mut levels = topic.split('/');
        let mut next = || levels.next().ok_or(TopicError::Shape);
        if next()? != ROOT {
            return Err(TopicError::Shape);
        }
        if next()? != VERSION {
            return Err(TopicError::Version);
        }
        let village = next()?;
        let device = next()?;
        let direction = next()?;
        let kind = next()?;
        if levels.next().is_some() {
            return Err(TopicError::Shape);
        }
        check_id(village).map_err(TopicError::Village)?;
        check_id(device).map_err(TopicError::Device)?;
        let kind = match direction {
            "up" => TopicKind::Up(UplinkKind::from_name(kind).ok_or(TopicError::UnknownKind)?),
            "down" => TopicKind::Down(DownlinkKind::from_name(kind).ok_or(TopicError::UnknownKind)?),
            _ => return Err(TopicError::Direction),
        };
        Ok(Topic {
            village: VillageId::new(village).map_err(TopicError::Village)?,
            device: DeviceId::new(device).map_err(TopicError::Device)?,
            kind,
        })
    }

    /// The topic as text.
    pub fn to_buf(&self) -> TopicBuf {
        let mut out = TopicBuf::new();
        // Cannot overflow: ids are at most 32 bytes, so a topic is at most 91.
        let _ = write!(
            out,
            "{ROOT}/{VERSION}/{}/{}/{}/{}",
            self.village,
            self.device,
            self.kind.direction().as_str(),
            self.kind.as_str()
        );
        out
    }
}

/// The filter the gateway subscribes to: uplinks of one village (or `+`, all) and one kind
/// (or `+`, all kinds).
pub fn uplink_filter(village: Option<&VillageId>, kind: Option<UplinkKind>) -> TopicBuf {
    let mut out = TopicBuf::new();
    let _ = write!(
        out,
        "{ROOT}/{VERSION}/{}/+/up/{}",
        village.map_or("+", |v| v.as_str()),
        kind.map_or("+", UplinkKind::as_str)
    );
    out
}

/// The filter a device subscribes to for its own commands.
pub fn downlink_filter(village: &VillageId, device: &DeviceId) -> TopicBuf {
    let mut out = TopicBuf::new();
    let _ = write!(out, "{ROOT}/{VERSION}/{village}/{device}/down/+");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::IdError;

    fn check(topic: &str, expected: Result<(&str, &str, TopicKind), TopicError>) {
        let got = Topic::parse(topic);
        match (&got, expected) {
            (Ok(t), Ok((v, d, k))) => {
                assert_eq!((t.village.as_str(), t.device.as_str(), t.kind), (v, d, k));
                assert_eq!(t.to_buf().as_str(), topic, "round trip");
            }
            (Err(e), Err(want)) => assert_eq!(*e, want, "topic {topic:?}"),
            _ => panic!("topic {topic:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn topics() {
        use TopicKind::{Down, Up};
        check("fg/v1/fuhai-1/sd-0001/up/state", Ok(("fuhai-1", "sd-0001", Up(UplinkKind::State))));
        check("fg/v1/v/cam-7/up/camera_event", Ok(("v", "cam-7", Up(UplinkKind::CameraEvent))));
        check("fg/v1/v/d/down/ack", Ok(("v", "d", Down(DownlinkKind::Ack))));
        check("fg/v1/v/d/down/set_thresholds", Ok(("v", "d", Down(DownlinkKind::SetThresholds))));
        check("fg/v2/v/d/up/state", Err(TopicError::Version));
        check("xx/v1/v/d/up/state", Err(TopicError::Shape));
        check("fg/v1/v/d/up", Err(TopicError::Shape));
        check("fg/v1/v/d/up/state/extra", Err(TopicError::Shape));
        check("fg/v1/v/d/sideways/state", Err(TopicError::Direction));
        check("fg/v1/v/d/up/ack", Err(TopicError::UnknownKind));
        check("fg/v1/v/d/down/state", Err(TopicError::UnknownKind));
        check("fg/v1/v/d/up/smoke", Err(TopicError::UnknownKind));
        check("fg/v1/v/+/up/state", Err(TopicError::Device(IdError::BadChar { at: 0 })));
        check("fg/v1/#/d/up/state", Err(TopicError::Village(IdError::BadChar { at: 0 })));
        check("fg/v1//d/up/state", Err(TopicError::Village(IdError::Empty)));
    }

    #[test]
    fn too_long_topic() {
        let mut t = TopicBuf::new();
        while t.push('a').is_ok() {}
        let mut s = [0u8; MAX_TOPIC_LEN + 1];
        s.fill(b'a');
        assert_eq!(Topic::parse(core::str::from_utf8(&s).unwrap()), Err(TopicError::TooLong));
        assert_eq!(Topic::parse(&t), Err(TopicError::Shape));
    }

    #[test]
    fn filters() {
        let v = VillageId::new("fuhai-1").unwrap();
        assert_eq!(uplink_filter(None, None).as_str(), "fg/v1/+/+/up/+");
        assert_eq!(uplink_filter(Some(&v), Some(UplinkKind::State)).as_str(), "fg/v1/fuhai-1/+/up/state");
        assert_eq!(
            downlink_filter(&v, &DeviceId::new("sd-1").unwrap()).as_str(),
            "fg/v1/fuhai-1/sd-1/down/+"
        );
    }
}
