use firegrid_protocol::{AuthError, UplinkKind};

use super::*;
use crate::config::{DAY_MS, HOUR_MS, MINUTE_MS};

const CAL: Calibration = crate::scenario::CALIBRATION;

fn village() -> VillageId {
    VillageId::new("dongcun").unwrap()
}

fn keyless(boot: u16) -> Identity {
    Identity::new(village(), DeviceId::new("sd-1").unwrap(), boot)
}

fn device() -> Device {
    let mut d = Device::new(Config::default(), CAL, keyless(3), 0);
    d.on_battery(0, 3_400);
    d.tick(0);
    drain(&mut d);
    d
}

/// A chamber sample with `m` dB/m of smoke of blue/IR ratio `ratio`.
fn smoke(m: f32, ratio: f32) -> Result<ChamberSample, ()> {
    Ok(ChamberSample {
        ir: (f32::from(CAL.clean_ir) + m * CAL.ir_counts_per_db_m) as u16,
        blue: (f32::from(CAL.clean_blue) + m * ratio * CAL.blue_counts_per_db_m) as u16,
    })
}

/// Feeds `m` dB/m at every sample the device asks for, from `from` to `to` ms.
fn hold(d: &mut Device, from: u64, to: u64, m: f32, ratio: f32) -> u64 {
    let mut t = from;
    while t < to {
        if d.chamber_due(t) {
            d.on_chamber(t, smoke(m, ratio));
        }
        d.tick(t);
        t = d.next_wake_ms().clamp(t + 1, to);
    }
    to
}

/// The state and fault messages queued since the last drain, acknowledged.
fn drain(d: &mut Device) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(e) = d.outbox().entries().first() {
        let (boot, seq) = (e.msg.boot, e.msg.seq);
        match &e.msg.body {
            UplinkBody::State(s) => out.push(crate::scenario::state_name(s.state).to_string()),
            UplinkBody::Fault(f) => {
                out.push(format!("{}:{}", crate::scenario::fault_name(f.fault), f.active))
            }
            UplinkBody::CommandAck(a) => out.push(format!("ack:{}:{:?}", a.cmd_seq, a.result)),
            UplinkBody::Heartbeat(_) => out.push("heartbeat".into()),
            UplinkBody::Boot(b) => out.push(format!("boot:{}", b.nonce)),
            _ => unreachable!(),
        }
        d.outbox_mut().ack(boot, seq);
    }
    out
}

fn downlink(d: &mut Device, now: u64, seq: u32, body: DownlinkBody) {
    let mut buf = [0u8; 256];
    let cmd = Downlink::new(seq, 0, body);
    let bytes = cmd.encode(Encoding::Compact, &mut buf).unwrap();
    d.on_downlink(now, bytes);
}

#[test]
fn boot_sends_a_heartbeat_with_the_battery_reading() {
    let mut d = Device::new(Config::default(), CAL, keyless(3), 0);
    assert!(d.battery_due(0) && d.chamber_due(0));
    d.on_battery(0, 3_400);
    d.tick(0);
    let hb = &d.outbox().entries()[0].msg;
    assert_eq!((hb.boot, hb.seq), (3, 0));
    assert!(
        matches!(&hb.body, UplinkBody::Heartbeat(h) if h.battery_mv == Some(3_400) && h.drift_pct == Some(0))
    );
    assert!(hb.validate().is_ok());
}

#[test]
fn smoke_goes_standby_pre_alarm_alarm_cleared() {
    let mut d = device();
    let t = hold(&mut d, 0, MINUTE_MS, 0.0, 1.6);
    let t = hold(&mut d, t, t + 30_000, 0.1, 1.6);
    assert_eq!(d.mode(), Mode::PreAlarm);
    assert_eq!(drain(&mut d), ["pre_alarm"]);
    let t = hold(&mut d, t, t + 7_000, 0.2, 1.6);
    assert_eq!(d.mode(), Mode::Alarm);
    assert!(d.sound(t).is_alarm());
    hold(&mut d, t, t + 30_000, 0.0, 1.6);
    assert_eq!(d.mode(), Mode::Standby);
    assert_eq!(drain(&mut d), ["alarm", "cleared"]);
    assert_eq!(d.sound(t + 30_000), Sound::Off);
}

#[test]
fn sampling_speeds_up_in_smoke() {
    let mut d = device();
    d.on_chamber(0, smoke(0.0, 1.0));
    assert_eq!(d.next_wake_ms(), 10_000);
    d.on_chamber(10_000, smoke(0.1, 1.6));
    assert_eq!(d.next_wake_ms(), 10_000, "the pre-alarm message is due at once");
    drain(&mut d);
    assert_eq!(d.next_wake_ms(), 12_000);
}

#[test]
fn hush_silences_for_nine_minutes_and_heavy_smoke_overrides_it() {
    let mut d = device();
    let t = hold(&mut d, 0, 20_000, 0.2, 1.6);
    assert_eq!(d.mode(), Mode::Alarm);
    d.on_button(t, Press::Short);
    assert_eq!(d.mode(), Mode::Hush { until_ms: t + 9 * MINUTE_MS });
    assert_eq!(d.sound(t), Sound::Off);
    // Smoke stays: the hush ends after 9 minutes and the alarm sounds again.
    let t2 = hold(&mut d, t, t + 9 * MINUTE_MS + 1, 0.2, 1.6);
    assert_eq!(d.mode(), Mode::Alarm);
    d.on_button(t2, Press::Short);
    // Heavy smoke ends the hush at once.
    hold(&mut d, t2, t2 + 4_000, 0.5, 1.6);
    assert_eq!(d.mode(), Mode::Alarm);
    assert_eq!(drain(&mut d), ["pre_alarm", "alarm", "hush", "alarm", "hush", "alarm"]);
    // And in heavy smoke the button cannot hush.
    d.on_button(t2 + 4_000, Press::Short);
    assert_eq!(d.mode(), Mode::Alarm);
}

#[test]
fn hushed_alarm_clears_when_the_smoke_goes() {
    let mut d = device();
    let t = hold(&mut d, 0, 20_000, 0.2, 1.6);
    d.on_button(t, Press::Short);
    hold(&mut d, t, t + 60_000, 0.0, 1.6);
    assert_eq!(d.mode(), Mode::Standby);
    assert_eq!(drain(&mut d), ["pre_alarm", "alarm", "hush", "cleared"]);
}

#[test]
fn self_test_reports_results() {
    let mut d = device();
    d.on_button(0, Press::Short);
    assert_eq!(d.mode(), Mode::SelfTest);
    assert!(d.sound(0).is_alarm(), "the horn is tested");
    assert!(d.take_self_test_request() && !d.take_self_test_request());
    d.on_self_test(5_000, SelfTestResult { horn_ok: true, chamber_ok: true, battery_mv: 3_350 });
    assert_eq!(d.mode(), Mode::Standby);
    assert_eq!(drain(&mut d), ["test", "heartbeat", "normal"]);
    d.on_button(10_000, Press::Short);
    d.on_self_test(15_000, SelfTestResult { horn_ok: true, chamber_ok: false, battery_mv: 3_000 });
    assert_eq!(drain(&mut d), ["test", "sensor_fault:true", "low_battery:true", "heartbeat", "normal"]);
}

#[test]
fn drill_sounds_then_ends_and_a_fire_during_it_alarms() {
    let mut d = device();
    d.on_button(0, Press::Long);
    assert_eq!(d.mode(), Mode::Drill { until_ms: MINUTE_MS });
    assert!(d.sound(0).is_alarm());
    hold(&mut d, 0, MINUTE_MS + 1, 0.0, 1.0);
    assert_eq!(d.mode(), Mode::Standby);
    d.on_button(MINUTE_MS + 1, Press::Long);
    hold(&mut d, MINUTE_MS + 1, MINUTE_MS + 30_000, 0.2, 1.6);
    assert_eq!(d.mode(), Mode::Alarm);
    assert_eq!(drain(&mut d), ["test", "normal", "test", "alarm"]);
}

#[test]
fn low_battery_chirps_can_be_hushed_for_seven_hours_and_fire_still_sounds() {
    let mut d = device();
    let cfg = *d.config();
    assert!(cfg.battery_check_ms <= DAY_MS, "GB 20517-2025 §5.11.1: at least every 24 h");
    assert!(!d.battery_due(HOUR_MS - 1) && d.battery_due(HOUR_MS));
    d.on_battery(HOUR_MS, 3_050);
    assert_eq!(drain(&mut d), ["low_battery:true"]);
    let t = HOUR_MS;
    assert_eq!(d.sound(t), Sound::Chirps { since_ms: 0, count: 1, period_ms: 45_000 });
    d.on_button(t, Press::Short);
    assert_eq!(d.mode(), Mode::Standby, "the press hushed the chirp instead of starting a self-test");
    assert_eq!(d.sound(t), Sound::Off);
    assert!(cfg.battery_hush_ms >= 6 * HOUR_MS && cfg.battery_hush_ms <= 8 * HOUR_MS);
    // A fire during the battery hush alarms.
    let t2 = hold(&mut d, t, t + 30_000, 0.2, 1.6);
    assert!(d.sound(t2).is_alarm());
    let t3 = hold(&mut d, t2, t2 + 60_000, 0.0, 1.6);
    assert_eq!(d.sound(t3), Sound::Off, "still battery-hushed");
    d.tick(t + cfg.battery_hush_ms);
    assert!(
        matches!(d.sound(t + cfg.battery_hush_ms), Sound::Chirps { count: 1, .. }),
        "chirps again after 7 h"
    );
    d.on_battery(t + cfg.battery_hush_ms, 3_300);
    assert!(!d.fault(FaultKind::LowBattery), "a new battery clears the fault");
}

#[test]
fn removal_from_the_base_is_a_fault_with_three_chirps() {
    let mut d = device();
    d.on_tamper(0, true);
    d.on_tamper(1_000, false);
    assert_eq!(d.sound(1_000), Sound::Chirps { since_ms: 1_000, count: 3, period_ms: 45_000 });
    assert!(matches!(d.sound(50_000), Sound::Chirps { count: 2, .. }));
    d.on_tamper(60_000, true);
    assert_eq!(d.sound(60_000), Sound::Off);
    assert_eq!(drain(&mut d), ["tamper:true", "tamper:false"]);
}

#[test]
fn front_end_errors_raise_a_sensor_fault() {
    let mut d = device();
    d.on_chamber(0, Err(()));
    d.on_chamber(2_000, Err(()));
    assert!(!d.fault(FaultKind::SensorFault), "two glitches are tolerated");
    d.on_chamber(4_000, Err(()));
    assert!(d.fault(FaultKind::SensorFault));
    for t in [6_000, 16_000, 26_000] {
        d.on_chamber(t, smoke(0.0, 1.0));
    }
    assert_eq!(drain(&mut d), ["sensor_fault:true", "sensor_fault:false"]);
}

#[test]
fn end_of_life_ten_years_after_manufacture() {
    let cfg = Config { manufactured_unix_ms: 1_600_000_000_000, ..Config::default() };
    let mut d = Device::new(cfg, CAL, keyless(1), 0);
    d.tick(0);
    assert!(!d.fault(FaultKind::EndOfLife), "no clock, no verdict");
    // The gateway's commands carry its clock.
    let mut buf = [0u8; 256];
    let now = cfg.manufactured_unix_ms + cfg.service_life_ms - 1_000;
    let cmd = Downlink::new(1, now, DownlinkBody::Sounders { on: false });
    d.on_downlink(0, cmd.encode(Encoding::Json, &mut buf).unwrap());
    d.tick(0);
    assert!(!d.fault(FaultKind::EndOfLife));
    d.tick(1_000);
    assert!(d.fault(FaultKind::EndOfLife));
    assert_eq!(d.wall_clock_ms(1_000), Some(cfg.manufactured_unix_ms + cfg.service_life_ms));
}

#[test]
fn downlink_commands_are_validated_applied_and_answered() {
    let mut d = device();
    downlink(&mut d, 0, 1, DownlinkBody::Sounders { on: true });
    assert!(d.sound(0).is_alarm(), "building linkage sounds the sounder");
    downlink(&mut d, 0, 2, DownlinkBody::Sounders { on: false });
    downlink(&mut d, 0, 3, DownlinkBody::Hush { duration_s: 60 });
    downlink(&mut d, 0, 4, DownlinkBody::Hush { duration_s: 0 });
    downlink(&mut d, 0, 5, DownlinkBody::SetHeartbeat { interval_s: 3_600 });
    downlink(&mut d, 0, 6, DownlinkBody::SetHeartbeat { interval_s: 10 });
    downlink(&mut d, 0, 7, DownlinkBody::SetThresholds { pre_alarm_db_m: 0.05, alarm_db_m: 0.1 });
    downlink(&mut d, 0, 8, DownlinkBody::SetThresholds { pre_alarm_db_m: 0.2, alarm_db_m: 0.1 });
    d.on_downlink(0, b"{not json");
    assert_eq!(
        drain(&mut d),
        [
            "ack:1:Applied",
            "ack:2:Applied",
            "ack:3:Rejected",
            "ack:4:Rejected",
            "ack:5:Applied",
            "ack:6:Rejected",
            "ack:7:Applied",
            "ack:8:Rejected"
        ]
    );
    assert_eq!(d.config().heartbeat_ms, HOUR_MS);
    assert_eq!((d.config().pre_alarm_db_m, d.config().alarm_db_m), (0.05, 0.1));
    // A hush is accepted in alarm; a self-test only in standby.
    let t = hold(&mut d, 0, 20_000, 0.15, 1.6);
    assert_eq!(d.mode(), Mode::Alarm, "the lowered threshold is in force");
    downlink(&mut d, t, 9, DownlinkBody::SelfTest {});
    downlink(&mut d, t, 10, DownlinkBody::Hush { duration_s: 120 });
    assert_eq!(d.mode(), Mode::Hush { until_ms: t + 120_000 });
    assert_eq!(drain(&mut d), ["pre_alarm", "alarm", "ack:9:Rejected", "hush", "ack:10:Applied"]);
}

/// The transport seam as a test double: up or down, recording what it was handed.
#[derive(Default)]
struct Link {
    up: bool,
    sent: Vec<UplinkKind>,
    payloads: Vec<Vec<u8>>,
}

impl crate::link::Uplink for Link {
    type Error = core::convert::Infallible;

    fn ready(&mut self) -> bool {
        self.up
    }

    fn send(&mut self, kind: UplinkKind, payload: &[u8]) -> Result<(), Self::Error> {
        self.sent.push(kind);
        self.payloads.push(payload.to_vec());
        Ok(())
    }

    fn poll(&mut self, _: &mut dyn FnMut(&[u8])) -> Result<(), Self::Error> {
        Ok(())
    }
}

fn pump(d: &mut Device, link: &mut Link, now: u64) -> usize {
    crate::link::pump(d, link, now, Encoding::Compact).unwrap()
}

fn queued(d: &Device) -> Vec<UplinkKind> {
    d.outbox().entries().iter().map(|e| e.msg.kind()).collect()
}

#[test]
fn heartbeats_follow_the_configured_period_and_an_ack_empties_the_outbox() {
    let mut d = device();
    hold(&mut d, 0, DAY_MS + 1, 0.0, 1.0);
    assert_eq!(queued(&d), [UplinkKind::Heartbeat], "one heartbeat a day");
    d.on_tamper(DAY_MS, false);
    pump(&mut d, &mut Link { up: true, ..Link::default() }, DAY_MS);
    assert_eq!(queued(&d), [UplinkKind::Fault], "the heartbeat left on publish, the fault waits");
    let (boot, seq) = (d.outbox().entries()[0].msg.boot, d.outbox().entries()[0].msg.seq);
    downlink(&mut d, DAY_MS, 1, DownlinkBody::Ack { boot, seq });
    assert!(d.outbox().is_empty(), "the ack is not answered and removes the message");
}

#[test]
fn a_heartbeat_leaves_on_publish_without_an_ack_and_an_alarm_stays_until_acknowledged() {
    let mut d = Device::new(Config::default(), CAL, keyless(3), 0);
    d.on_battery(0, 3_400);
    d.tick(0);
    let t = hold(&mut d, 0, 20_000, 0.2, 1.6);
    assert_eq!(d.mode(), Mode::Alarm);
    assert_eq!(queued(&d), [UplinkKind::Heartbeat, UplinkKind::State, UplinkKind::State]);
    // The link is down: everything stays queued, the heartbeat included.
    let mut link = Link::default();
    assert_eq!(pump(&mut d, &mut link, t), 0);
    assert_eq!(d.outbox().len(), 3);
    // The link is up: all three go out, alarm class first; only the alarm-class ones stay.
    link.up = true;
    assert_eq!(pump(&mut d, &mut link, t), 3);
    assert_eq!(link.sent, [UplinkKind::State, UplinkKind::State, UplinkKind::Heartbeat]);
    assert_eq!(queued(&d), [UplinkKind::State, UplinkKind::State], "no ack needed for the heartbeat");
    // No ack: the state changes are resent at the alarm pace, the heartbeat never.
    link.sent.clear();
    let later = t + crate::outbox::ALARM_RETRY_MS;
    assert_eq!(pump(&mut d, &mut link, later), 2);
    assert_eq!(link.sent, [UplinkKind::State, UplinkKind::State]);
    // The gateway's acks empty the outbox.
    let ids: Vec<(u16, u32)> = d.outbox().entries().iter().map(|e| (e.msg.boot, e.msg.seq)).collect();
    for (k, (boot, seq)) in ids.into_iter().enumerate() {
        downlink(&mut d, later, k as u32, DownlinkBody::Ack { boot, seq });
    }
    assert!(d.outbox().is_empty());
}

/// One random step of the property test.
#[derive(Debug, Clone)]
enum Op {
    Sample { m: f32, ratio: f32 },
    Button(Press),
    Tamper(bool),
    Battery(u16),
    Hush(u16),
    Sounders(bool),
    SelfTest,
    SelfTestDone(bool),
    Wait(u64),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        6 => (0.0f32..0.8, 0.5f32..2.0).prop_map(|(m, ratio)| Op::Sample { m, ratio }),
        1 => prop_oneof![Just(Press::Short), Just(Press::Long)].prop_map(Op::Button),
        1 => any::<bool>().prop_map(Op::Tamper),
        1 => (2_800u16..3_500).prop_map(Op::Battery),
        1 => (0u16..1_000).prop_map(Op::Hush),
        1 => any::<bool>().prop_map(Op::Sounders),
        1 => Just(Op::SelfTest),
        1 => any::<bool>().prop_map(Op::SelfTestDone),
        2 => (0u64..20 * MINUTE_MS).prop_map(Op::Wait),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

    /// Whatever happens, in whatever order: an alarm always sounds temporal-3, a hush is
    /// bounded by 15 minutes, and two consecutive heavy-smoke samples always end in alarm.
    #[test]
    fn invariants_hold_for_any_input_sequence(ops in proptest::collection::vec(op(), 1..60)) {
        let mut d = device();
        let mut now = 0u64;
        let mut heavy_run = 0;
        for op in ops {
            now += 2_000;
            match op {
                Op::Sample { m, ratio } => {
                    d.on_chamber(now, smoke(m, ratio));
                    heavy_run = if m >= d.config().heavy_db_m() + 0.01 { heavy_run + 1 } else { 0 };
                }
                Op::Button(press) => d.on_button(now, press),
                Op::Tamper(in_base) => d.on_tamper(now, in_base),
                Op::Battery(mv) => d.on_battery(now, mv),
                Op::Hush(s) => downlink(&mut d, now, 1, DownlinkBody::Hush { duration_s: s }),
                Op::Sounders(on) => downlink(&mut d, now, 2, DownlinkBody::Sounders { on }),
                Op::SelfTest => downlink(&mut d, now, 3, DownlinkBody::SelfTest {}),
                Op::SelfTestDone(ok) => {
                    if d.take_self_test_request() {
                        d.on_self_test(now, SelfTestResult { horn_ok: ok, chamber_ok: ok, battery_mv: 3_300 });
                    }
                }
                Op::Wait(ms) => {
                    now += ms;
                    heavy_run = 0;
                }
            }
            d.tick(now);
            drain(&mut d);
            if d.mode() == Mode::Alarm {
                proptest::prop_assert!(d.sound(now).is_alarm());
            }
            if let Mode::Hush { until_ms } = d.mode() {
                proptest::prop_assert!(until_ms <= now + 900_000);
            }
            if heavy_run >= 2 {
                proptest::prop_assert_eq!(d.mode(), Mode::Alarm);
            }
        }
    }
}

/// Every edge of the state diagram in the module documentation, one step each: the mode
/// before, what happens, the mode after and the states reported.
#[test]
fn every_transition() {
    type Setup = fn(&mut Device) -> u64;
    type Step = fn(&mut Device, u64);
    fn standby(_: &mut Device) -> u64 {
        0
    }
    fn pre_alarm(d: &mut Device) -> u64 {
        let t = hold(d, 0, 12_000, 0.1, 1.6);
        drain(d);
        t
    }
    fn alarm(d: &mut Device) -> u64 {
        let t = hold(d, 0, 20_000, 0.2, 1.6);
        drain(d);
        t
    }
    fn hush(d: &mut Device) -> u64 {
        let t = alarm(d);
        d.on_button(t, Press::Short);
        drain(d);
        t
    }
    fn self_test(d: &mut Device) -> u64 {
        d.on_button(0, Press::Short);
        drain(d);
        0
    }
    fn drill(d: &mut Device) -> u64 {
        d.on_button(0, Press::Long);
        drain(d);
        0
    }
    let steps: &[(&str, Setup, Step, Mode, &[&str])] = &[
        (
            "standby → pre-alarm",
            standby,
            |d, t| {
                hold(d, t, t + 12_000, 0.1, 1.6);
            },
            Mode::PreAlarm,
            &["pre_alarm"],
        ),
        (
            "pre-alarm → standby",
            pre_alarm,
            |d, t| {
                hold(d, t, t + 20_000, 0.0, 1.6);
            },
            Mode::Standby,
            &["normal"],
        ),
        (
            "pre-alarm → alarm",
            pre_alarm,
            |d, t| {
                hold(d, t, t + 8_000, 0.2, 1.6);
            },
            Mode::Alarm,
            &["alarm"],
        ),
        (
            "standby → alarm (heavy)",
            standby,
            |d, t| {
                hold(d, t, t + 14_000, 0.5, 1.6);
            },
            Mode::Alarm,
            &["pre_alarm", "alarm"],
        ),
        (
            "pre-alarm → hush",
            pre_alarm,
            |d, t| d.on_button(t, Press::Short),
            Mode::Hush { until_ms: 12_000 + 540_000 },
            &["hush"],
        ),
        (
            "alarm → standby",
            alarm,
            |d, t| {
                hold(d, t, t + 8_000, 0.0, 1.6);
            },
            Mode::Standby,
            &["cleared"],
        ),
        (
            "alarm → hush",
            alarm,
            |d, t| d.on_button(t, Press::Short),
            Mode::Hush { until_ms: 20_000 + 540_000 },
            &["hush"],
        ),
        (
            "hush → alarm (heavy)",
            hush,
            |d, t| {
                hold(d, t, t + 2_001, 0.5, 1.6);
            },
            Mode::Alarm,
            &["alarm"],
        ),
        (
            "hush → alarm (timeout)",
            hush,
            |d, t| {
                hold(d, t, t + 540_001, 0.2, 1.6);
            },
            Mode::Alarm,
            &["alarm"],
        ),
        (
            "hush → standby",
            hush,
            |d, t| {
                hold(d, t, t + 8_000, 0.0, 1.6);
            },
            Mode::Standby,
            &["cleared"],
        ),
        ("standby → self-test", standby, |d, t| d.on_button(t, Press::Short), Mode::SelfTest, &["test"]),
        (
            "self-test → standby",
            self_test,
            |d, t| d.on_self_test(t, SelfTestResult { horn_ok: true, chamber_ok: true, battery_mv: 3_300 }),
            Mode::Standby,
            &["heartbeat", "normal"],
        ),
        (
            "self-test → alarm",
            self_test,
            |d, t| {
                hold(d, t, t + 8_000, 0.2, 1.6);
            },
            Mode::Alarm,
            &["alarm"],
        ),
        (
            "standby → drill",
            standby,
            |d, t| d.on_button(t, Press::Long),
            Mode::Drill { until_ms: MINUTE_MS },
            &["test"],
        ),
        ("drill → standby (press)", drill, |d, t| d.on_button(t, Press::Short), Mode::Standby, &["normal"]),
        (
            "drill → alarm",
            drill,
            |d, t| {
                hold(d, t, t + 8_000, 0.2, 1.6);
            },
            Mode::Alarm,
            &["alarm"],
        ),
    ];
    for (name, setup, step, mode, reported) in steps {
        let mut d = device();
        let t = setup(&mut d);
        step(&mut d, t);
        assert_eq!(d.mode(), *mode, "{name}");
        assert_eq!(drain(&mut d), *reported, "{name}");
    }
}

// ---- A device with a key ---------------------------------------------------------------

fn key() -> DeviceKey {
    DeviceKey::from_bytes(core::array::from_fn(|i| 0x40 + i as u8))
}

/// A device with [`key`], booted (boot counter 3), its boot messages drained.
fn keyed() -> Device {
    let mut d = Device::new(Config::default(), CAL, keyless(3).with_key(key()), 0);
    d.on_battery(0, 3_400);
    d.tick(0);
    drain(&mut d);
    d
}

/// A command as the gateway sends it to `sd-1` of `dongcun` in boot `boot`, signed with
/// `key` (`None`: unsigned), in the compact encoding.
fn command(seq: u32, body: DownlinkBody, boot: u16, key: Option<&DeviceKey>) -> Vec<u8> {
    let mut cmd = Downlink::new(seq, 0, body);
    if let Some(key) = key {
        cmd.sign(&village(), &DeviceId::new("sd-1").unwrap(), boot, key);
    }
    let mut buf = [0u8; 256];
    cmd.encode(Encoding::Compact, &mut buf).unwrap().to_vec()
}

/// The genuine command: the device's key, its current boot.
fn genuine(seq: u32, body: DownlinkBody) -> Vec<u8> {
    command(seq, body, 3, Some(&key()))
}

fn forged_key() -> DeviceKey {
    DeviceKey::from_bytes([0x13; 32])
}

fn refusals(unsigned: u32, bad_signature: u32, wrong_boot: u32, replayed: u32) -> Refusals {
    Refusals { unsigned, bad_signature, wrong_boot, replayed }
}

/// Puts `d` in alarm and returns the time and the pending alarm's `(boot, seq)`.
fn alarm(d: &mut Device) -> (u64, (u16, u32)) {
    let t = hold(d, 0, 20_000, 0.2, 1.6);
    assert_eq!(d.mode(), Mode::Alarm);
    let pending = d
        .outbox()
        .entries()
        .iter()
        .find(|e| matches!(&e.msg.body, UplinkBody::State(s) if s.state == DetectorState::Alarm))
        .map(|e| (e.msg.boot, e.msg.seq))
        .unwrap();
    (t, pending)
}

fn pending(d: &Device, id: (u16, u32)) -> bool {
    d.outbox().entries().iter().any(|e| (e.msg.boot, e.msg.seq) == id)
}

#[test]
fn a_keyed_device_signs_each_uplink_when_queued_and_resends_it_with_the_same_tag() {
    let mut d = keyed();
    let (t, id) = alarm(&mut d);
    for e in d.outbox().entries() {
        assert!(e.msg.is_signed(), "{:?}", e.msg);
        assert_eq!(e.msg.verify(&village(), &key()), Ok(()));
        assert_eq!(e.msg.verify(&VillageId::new("xicun").unwrap(), &key()), Err(AuthError::BadTag));
        assert_eq!(e.msg.verify(&village(), &forged_key()), Err(AuthError::BadTag));
    }
    let mut link = Link { up: true, ..Link::default() };
    pump(&mut d, &mut link, t);
    let first = link.payloads.clone();
    assert!(pending(&d, id), "no ack yet");
    // The resend falls due: the same bytes, tag included.
    link.payloads.clear();
    pump(&mut d, &mut link, t + crate::outbox::ALARM_RETRY_MS);
    assert!(!link.payloads.is_empty());
    for payload in &link.payloads {
        assert!(first.contains(payload), "a resend is byte-identical to the first send");
        let msg = Uplink::receive(payload, &Limits::default()).unwrap();
        assert_eq!(msg.verify(&village(), &key()), Ok(()));
    }
}

#[test]
fn a_keyless_device_signs_nothing_and_obeys_unsigned_commands() {
    let mut d = device();
    let (t, id) = alarm(&mut d);
    assert!(d.outbox().entries().iter().all(|e| !e.msg.is_signed()));
    d.on_downlink(t, &command(1, DownlinkBody::Ack { boot: id.0, seq: id.1 }, 3, None));
    assert!(!pending(&d, id), "the v1 migration path: an unsigned ack is honoured");
    // Nor does it answer a challenge: it has no key to prove its boot with.
    d.on_downlink(t, &command(2, DownlinkBody::Challenge { nonce: 7 }, 3, None));
    assert!(!drain(&mut d).iter().any(|m| m.starts_with("boot")));
    assert_eq!(*d.refusals(), Refusals::default());
}

#[test]
fn an_ack_that_is_not_genuine_never_drops_a_pending_alarm() {
    let mut d = keyed();
    let (t, id) = alarm(&mut d);
    let ack = DownlinkBody::Ack { boot: id.0, seq: id.1 };
    let other_device = {
        let mut cmd = Downlink::new(11, 0, ack.clone());
        cmd.sign(&village(), &DeviceId::new("sd-2").unwrap(), 3, &key());
        let mut buf = [0u8; 256];
        cmd.encode(Encoding::Json, &mut buf).unwrap().to_vec()
    };
    let attempts: [(&str, Vec<u8>, Refusals); 5] = [
        ("unsigned", command(10, ack.clone(), 3, None), refusals(1, 0, 0, 0)),
        ("forged", command(10, ack.clone(), 3, Some(&forged_key())), refusals(1, 1, 0, 0)),
        ("for another device", other_device, refusals(1, 2, 0, 0)),
        ("for the previous boot", command(10, ack.clone(), 2, Some(&key())), refusals(1, 2, 1, 0)),
        ("tampered", tamper(genuine(10, ack.clone())), refusals(1, 3, 1, 0)),
    ];
    for (what, bytes, expected) in attempts {
        d.on_downlink(t, &bytes);
        assert!(pending(&d, id), "a {what} ack dropped the alarm");
        assert_eq!(*d.refusals(), expected, "{what}");
    }
    // Still resent when due.
    let mut link = Link { up: true, ..Link::default() };
    pump(&mut d, &mut link, t + crate::outbox::ALARM_RETRY_MS);
    assert!(link.sent.contains(&UplinkKind::State));
    // The genuine ack drops it, and nothing answers an ack.
    d.on_downlink(t, &genuine(10, ack));
    assert!(!pending(&d, id));
    assert_eq!(d.refusals().total(), 5);
    assert!(!drain(&mut d).iter().any(|m| m.starts_with("ack:")));
}

/// Flips one bit of the tag's last byte (the compact encoding ends with the tag).
fn tamper(mut bytes: Vec<u8>) -> Vec<u8> {
    *bytes.last_mut().unwrap() ^= 1;
    bytes
}

#[test]
fn a_forged_hush_sounders_or_thresholds_is_not_applied_nor_answered() {
    let mut d = keyed();
    let before = *d.config();
    let forged = Some(forged_key());
    d.on_downlink(0, &command(1, DownlinkBody::Sounders { on: true }, 3, forged.as_ref()));
    assert_eq!(d.sound(0), Sound::Off, "a forged linkage does not sound");
    let lax = DownlinkBody::SetThresholds { pre_alarm_db_m: 0.5, alarm_db_m: 0.58 };
    d.on_downlink(0, &command(2, lax.clone(), 3, forged.as_ref()));
    d.on_downlink(0, &command(3, lax, 3, None));
    assert_eq!(*d.config(), before, "thresholds unchanged");
    let (t, _) = alarm(&mut d);
    d.on_downlink(t, &command(4, DownlinkBody::Hush { duration_s: 900 }, 3, forged.as_ref()));
    d.on_downlink(t, &command(5, DownlinkBody::Hush { duration_s: 900 }, 3, None));
    d.on_downlink(t, &command(6, DownlinkBody::Hush { duration_s: 900 }, 2, Some(&key())));
    assert_eq!(d.mode(), Mode::Alarm);
    assert!(d.sound(t).is_alarm(), "the sounder still sounds");
    assert_eq!(*d.refusals(), refusals(2, 3, 1, 0));
    assert_eq!(drain(&mut d), ["pre_alarm", "alarm"], "refused commands are not answered");
    // The genuine hush is obeyed and answered.
    d.on_downlink(t, &genuine(7, DownlinkBody::Hush { duration_s: 60 }));
    assert_eq!(d.mode(), Mode::Hush { until_ms: t + 60_000 });
    assert_eq!(drain(&mut d), ["hush", "ack:7:Applied"]);
}

#[test]
fn a_genuine_command_is_obeyed_exactly_once() {
    let mut d = keyed();
    let first = genuine(20, DownlinkBody::SetThresholds { pre_alarm_db_m: 0.06, alarm_db_m: 0.12 });
    let second = genuine(21, DownlinkBody::SetThresholds { pre_alarm_db_m: 0.1, alarm_db_m: 0.2 });
    d.on_downlink(0, &first);
    d.on_downlink(0, &second);
    assert_eq!((d.config().pre_alarm_db_m, d.config().alarm_db_m), (0.1, 0.2));
    // The first command's exact bytes, played back, do not undo the second.
    d.on_downlink(0, &first);
    assert_eq!((d.config().pre_alarm_db_m, d.config().alarm_db_m), (0.1, 0.2));
    assert_eq!(*d.refusals(), refusals(0, 0, 0, 1));
    assert_eq!(drain(&mut d), ["ack:20:Applied", "ack:21:Applied"]);

    // A hush, recorded and played back once the alarm is back, silences nothing.
    let (t, _) = alarm(&mut d);
    let hush = genuine(22, DownlinkBody::Hush { duration_s: 60 });
    d.on_downlink(t, &hush);
    assert_eq!(d.mode(), Mode::Hush { until_ms: t + 60_000 });
    let t = hold(&mut d, t, t + 61_000, 0.25, 1.6);
    assert_eq!(d.mode(), Mode::Alarm, "the hush ran out in smoke");
    d.on_downlink(t, &hush);
    assert_eq!(d.mode(), Mode::Alarm);
    assert_eq!(*d.refusals(), refusals(0, 0, 0, 2));
    // The same command after a restart (new boot counter) is refused as for another boot.
    let mut rebooted = Device::new(Config::default(), CAL, keyless(4).with_key(key()), 0);
    rebooted.on_downlink(0, &second);
    assert_eq!(rebooted.config().alarm_db_m, Config::default().alarm_db_m);
    assert_eq!(*rebooted.refusals(), refusals(0, 0, 1, 0));
}

#[test]
fn an_authentic_out_of_range_command_is_answered_rejected_a_forged_one_is_not_answered() {
    let mut d = keyed();
    let wild = DownlinkBody::SetThresholds { pre_alarm_db_m: 1.0, alarm_db_m: 2.0 };
    d.on_downlink(0, &command(30, wild.clone(), 3, Some(&forged_key())));
    assert!(drain(&mut d).is_empty());
    d.on_downlink(0, &genuine(31, wild));
    assert_eq!(drain(&mut d), ["ack:31:Rejected"]);
    assert_eq!(d.config().alarm_db_m, Config::default().alarm_db_m);
}

#[test]
fn a_challenge_is_answered_with_a_signed_boot_announcement_through_the_outbox() {
    let mut d = keyed();
    d.on_downlink(0, &command(40, DownlinkBody::Challenge { nonce: 99 }, 3, Some(&forged_key())));
    assert!(d.outbox().is_empty(), "a forged challenge is not answered");
    d.on_downlink(0, &genuine(41, DownlinkBody::Challenge { nonce: 0xDEAD_BEEF_0042 }));
    let answer = &d.outbox().entries()[0].msg;
    assert!(matches!(&answer.body, UplinkBody::Boot(b) if b.nonce == 0xDEAD_BEEF_0042));
    assert_eq!((answer.boot, answer.kind().class()), (3, firegrid_protocol::Class::Event));
    assert_eq!(answer.verify(&village(), &key()), Ok(()));
    // An event: sent, kept until the gateway acknowledges it.
    let mut link = Link { up: true, ..Link::default() };
    pump(&mut d, &mut link, 0);
    assert_eq!(link.sent, [UplinkKind::Boot]);
    assert_eq!(d.outbox().len(), 1);
    assert_eq!(drain(&mut d), [format!("boot:{}", 0xDEAD_BEEF_0042u64)], "no command_ack for a challenge");
}

#[test]
fn refusals_are_counted_by_reason() {
    let mut r = Refusals::new();
    for reason in [AuthError::Unsigned, AuthError::BadTag, AuthError::BadTag, AuthError::Replayed] {
        r.count(reason);
    }
    assert_eq!(r, refusals(1, 2, 0, 1));
    assert_eq!((r.of(AuthError::BadTag), r.of(AuthError::WrongBoot), r.total()), (2, 0, 4));
}
