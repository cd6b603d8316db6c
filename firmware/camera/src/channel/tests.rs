use firegrid_protocol::{ChannelStatus, UplinkBody};
use proptest::prelude::*;

use super::*;
use crate::signal::{CameraSignal, SignalKind};

/// One input to the tracker at a time in ms.
#[derive(Debug, Clone)]
enum Input {
    Signal(Option<u16>, SignalKind, bool, Option<u8>),
    Probe(u16, bool),
    Tick,
}

use Input::{Probe, Tick};

fn on(channel: u16, kind: SignalKind) -> Input {
    Input::Signal(Some(channel), kind, true, None)
}
fn off(channel: u16, kind: SignalKind) -> Input {
    Input::Signal(Some(channel), kind, false, None)
}
fn heartbeat() -> Input {
    Input::Signal(None, SignalKind::Heartbeat, true, None)
}

/// `event fire ch2 start 100% /snap/2`, `health ch1 offline`.
fn render(body: &UplinkBody) -> String {
    match body {
        UplinkBody::CameraEvent(e) => format!(
            "event {} ch{} {} {}%{}",
            serde_json::to_value(e.event).unwrap().as_str().unwrap(),
            e.channel,
            if e.active { "start" } else { "end" },
            e.confidence_pct,
            e.snapshot.as_ref().map(|s| format!(" {s}")).unwrap_or_default(),
        ),
        UplinkBody::CameraHealth(h) => {
            format!("health ch{} {}", h.channel, serde_json::to_value(h.status).unwrap().as_str().unwrap())
        }
        other => format!("{other:?}"),
    }
}

fn apply(tracker: &mut ChannelTracker, t: u64, input: &Input) -> Vec<UplinkBody> {
    match input {
        Input::Signal(channel, kind, active, confidence) => {
            let mut s = CameraSignal::new(*channel, *kind, *active);
            s.confidence_pct = *confidence;
            tracker.on_signal(&s, t)
        }
        Input::Probe(channel, ok) => tracker.on_probe(*channel, *ok, t),
        Input::Tick => tracker.tick(t),
    }
}

/// Runs `steps` (time in ms, input, the uplinks expected from it) from time 0.
fn check(config: TrackerConfig, steps: &[(u64, Input, &[&str])]) {
    let mut tracker = ChannelTracker::new(config, 0);
    for (t, input, expected) in steps {
        let got: Vec<String> = apply(&mut tracker, *t, input).iter().map(render).collect();
        assert_eq!(got, *expected, "at {t} ms after {input:?}");
    }
}

fn two_channels() -> TrackerConfig {
    TrackerConfig { channels: vec![1, 2], ..TrackerConfig::default() }
}

#[test]
fn health_starts_with_the_first_heartbeat() {
    check(
        two_channels(),
        &[
            (0, Tick, &[]),
            (5_000, heartbeat(), &["health ch1 online", "health ch2 online"]),
            // Changes only.
            (6_000, heartbeat(), &[]),
            (7_000, Tick, &[]),
        ],
    );
}

#[test]
fn offline_after_three_missed_heartbeats_back_after_one() {
    check(
        two_channels(),
        &[
            (0, heartbeat(), &["health ch1 online", "health ch2 online"]),
            (29_999, Tick, &[]),
            (30_000, Tick, &["health ch1 offline", "health ch2 offline"]),
            (40_000, Tick, &[]),
            (41_000, heartbeat(), &["health ch1 online", "health ch2 online"]),
        ],
    );
}

#[test]
fn silence_from_the_start_is_offline() {
    check(
        two_channels(),
        &[(29_999, Tick, &[]), (30_000, Tick, &["health ch1 offline", "health ch2 offline"])],
    );
}

#[test]
fn any_message_counts_as_a_heartbeat() {
    check(
        two_channels(),
        &[
            (0, heartbeat(), &["health ch1 online", "health ch2 online"]),
            (25_000, off(1, SignalKind::VideoLoss), &[]),
            (50_000, Tick, &[]),
            (55_000, Tick, &["health ch1 offline", "health ch2 offline"]),
        ],
    );
}

#[test]
fn probes_take_one_channel_offline_after_three_failures() {
    check(
        two_channels(),
        &[
            (0, heartbeat(), &["health ch1 online", "health ch2 online"]),
            (1_000, Probe(2, false), &[]),
            (2_000, Probe(2, false), &[]),
            (3_000, Probe(2, true), &[]),
            (4_000, Probe(2, false), &[]),
            (5_000, Probe(2, false), &[]),
            (6_000, Probe(2, false), &["health ch2 offline"]),
            (7_000, Probe(2, false), &[]),
            (8_000, Probe(2, true), &["health ch2 online"]),
        ],
    );
}

#[test]
fn video_loss_and_tampering() {
    check(
        two_channels(),
        &[
            (0, heartbeat(), &["health ch1 online", "health ch2 online"]),
            (1, on(2, SignalKind::VideoLoss), &["health ch2 video_loss"]),
            // Video loss hides tampering: without a picture it cannot be judged.
            (2, on(2, SignalKind::Tampered), &[]),
            (3, off(2, SignalKind::VideoLoss), &["health ch2 tampered"]),
            (4, on(2, SignalKind::Tampered), &[]),
            (5, off(2, SignalKind::Tampered), &["health ch2 online"]),
            // Offline overrides the camera's word, and the camera's word returns with it.
            (6, on(1, SignalKind::Tampered), &["health ch1 tampered"]),
            (30_006, Tick, &["health ch1 offline", "health ch2 offline"]),
            (30_007, heartbeat(), &["health ch1 tampered", "health ch2 online"]),
        ],
    );
}

#[test]
fn events_start_and_end_once() {
    let config = TrackerConfig {
        snapshot: Some("/ISAPI/Streaming/channels/{channel}01/picture".into()),
        ..two_channels()
    };
    check(
        config,
        &[
            (0, heartbeat(), &["health ch1 online", "health ch2 online"]),
            (
                1,
                Input::Signal(Some(2), SignalKind::Fire, true, Some(87)),
                &["event fire ch2 start 87% /ISAPI/Streaming/channels/201/picture"],
            ),
            (2, on(2, SignalKind::Fire), &[]),
            // The end repeats what the start said.
            (3, off(2, SignalKind::Fire), &["event fire ch2 end 87% /ISAPI/Streaming/channels/201/picture"]),
            (4, off(2, SignalKind::Fire), &[]),
            (
                5,
                on(1, SignalKind::Smoke),
                &["event smoke ch1 start 100% /ISAPI/Streaming/channels/101/picture"],
            ),
            // A new channel joins the health report.
            (
                6,
                on(7, SignalKind::FireLaneBlocked),
                &[
                    "event fire_lane_blocked ch7 start 100% /ISAPI/Streaming/channels/701/picture",
                    "health ch7 online",
                ],
            ),
            // Channel 0 is no channel.
            (7, on(0, SignalKind::Fire), &[]),
        ],
    );
}

#[test]
fn held_events_end_when_not_repeated() {
    let config =
        TrackerConfig { event_hold_ms: Some(5_000), heartbeat_interval_ms: 60_000, ..two_channels() };
    check(
        config,
        &[
            (
                0,
                on(1, SignalKind::Fire),
                &["event fire ch1 start 100%", "health ch1 online", "health ch2 online"],
            ),
            (3_000, on(1, SignalKind::Fire), &[]),
            (7_999, Tick, &[]),
            (8_000, Tick, &["event fire ch1 end 100%"]),
            (8_001, Tick, &[]),
            // Repeated again later: a new event.
            (9_000, on(1, SignalKind::Fire), &["event fire ch1 start 100%"]),
        ],
    );
}

#[test]
fn bad_snapshot_templates_are_dropped() {
    let config = TrackerConfig { snapshot: Some("with space {channel}".into()), ..two_channels() };
    check(
        config,
        &[(
            0,
            on(1, SignalKind::Smoke),
            &["event smoke ch1 start 100%", "health ch1 online", "health ch2 online"],
        )],
    );
}

fn input() -> impl Strategy<Value = Input> {
    let kind = prop::sample::select(SignalKind::ALL.to_vec());
    prop_oneof![
        (prop::option::of(1u16..4), kind, any::<bool>()).prop_map(|(c, k, a)| Input::Signal(c, k, a, None)),
        (1u16..4, any::<bool>()).prop_map(|(c, ok)| Input::Probe(c, ok)),
        Just(Input::Tick),
    ]
}

proptest! {
    /// Whatever happens, per channel and kind the events alternate start, end, start ...
    /// beginning with a start, and health never repeats the status it last reported.
    #[test]
    fn reports_alternate(steps in prop::collection::vec((0u64..20_000, input()), 0..200)) {
        let config = TrackerConfig { event_hold_ms: Some(4_000), ..two_channels() };
        let mut tracker = ChannelTracker::new(config, 0);
        let mut t = 0;
        let mut active = std::collections::HashMap::new();
        let mut health = std::collections::BTreeMap::new();
        for (dt, input) in steps {
            t += dt;
            for body in apply(&mut tracker, t, &input) {
                match body {
                    UplinkBody::CameraEvent(e) => {
                        let was = active.insert((e.channel, e.event), e.active).unwrap_or(false);
                        prop_assert_ne!(was, e.active, "{:?}", e);
                        prop_assert!(e.channel >= 1);
                    }
                    UplinkBody::CameraHealth(h) => {
                        let was: Option<ChannelStatus> = health.insert(h.channel, h.status);
                        prop_assert_ne!(was, Some(h.status));
                        prop_assert_eq!(tracker.reported(h.channel), Some(h.status));
                    }
                    other => prop_assert!(false, "unexpected {:?}", other),
                }
            }
        }
    }
}
