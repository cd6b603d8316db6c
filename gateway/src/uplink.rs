//! Acceptance of one uplink: topic and payload checked against each other.
//!
//! Pure: no I/O, the receive time is an argument.

use firegrid_protocol::{Error, Limits, Topic, TopicKind, Uplink};

/// Checks an MQTT message from a device: the topic is valid and an uplink topic, the
/// payload decodes and validates, and the payload's device id and kind match the topic's.
/// The last two checks stop a device (or anyone holding its credentials) from speaking for
/// another device or smuggling an alarm through a telemetry topic.
pub fn accept(topic: &str, payload: &[u8], limits: &Limits) -> Result<Accepted, Error> {
    let topic = Topic::parse(topic)?;
    let TopicKind::Up(kind) = topic.kind else {
        return Err(Error::KindMismatch);
    };
    let msg = Uplink::receive(payload, limits)?;
    if msg.dev != topic.device {
        return Err(Error::DeviceMismatch);
    }
    if msg.kind() != kind {
        return Err(Error::KindMismatch);
    }
    Ok(Accepted { topic, msg })
}

/// A message that passed [`accept`].
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// Its topic.
    pub topic: Topic,
    /// Its payload.
    pub msg: Uplink,
}

#[cfg(test)]
mod tests {
    use firegrid_protocol::{DetectorState, DeviceId, Encoding, StateChange, UplinkBody};

    use super::*;

    const NOW: u64 = 1_763_860_000_000;

    fn alarm(dev: &str) -> Vec<u8> {
        let msg = Uplink::new(
            DeviceId::new(dev).unwrap(),
            1,
            7,
            NOW,
            UplinkBody::State(StateChange { state: DetectorState::Alarm, obscuration_db_m: 0.3 }),
        );
        let mut buf = [0u8; 256];
        msg.encode(Encoding::Compact, &mut buf).unwrap().to_vec()
    }

    fn check(topic: &str, payload: &[u8], expected: Result<(), Error>) {
        let got = accept(topic, payload, &Limits::default()).map(|_| ());
        assert_eq!(got, expected, "topic {topic}");
    }

    #[test]
    fn topic_and_payload_must_agree() {
        check("fg/v1/v1/sd-1/up/state", &alarm("sd-1"), Ok(()));
        check("fg/v1/v1/sd-2/up/state", &alarm("sd-1"), Err(Error::DeviceMismatch));
        check("fg/v1/v1/sd-1/up/heartbeat", &alarm("sd-1"), Err(Error::KindMismatch));
        check("fg/v1/v1/sd-1/down/ack", &alarm("sd-1"), Err(Error::KindMismatch));
        check(
            "fg/v1/v1/sd-1/up/nonsense",
            &alarm("sd-1"),
            Err(Error::Topic(firegrid_protocol::TopicError::UnknownKind)),
        );
        check("fg/v1/v1/sd-1/up/state", b"{not json", Err(Error::Malformed { encoding: Encoding::Json }));
    }
}
