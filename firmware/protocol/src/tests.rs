//! Codec and validation tests: table-driven rejection cases, round-trip and fuzz properties,
//! and the measured encoded sizes that `README.md` documents.

use proptest::prelude::*;

use crate::*;

const NOW_MS: u64 = 1_763_860_000_000;

fn dev(id: &str) -> DeviceId {
    DeviceId::new(id).unwrap()
}

fn text<const N: usize>(s: &str) -> heapless::String<N> {
    heapless::String::try_from(s).unwrap()
}

/// The village of every sample, and the key its device signs with (bytes 0..32).
fn village() -> VillageId {
    VillageId::new("dongcun").unwrap()
}

fn key() -> DeviceKey {
    DeviceKey::from_bytes(core::array::from_fn(|i| i as u8))
}

/// One realistic message of every uplink kind (and both ends of each state), from a device
/// with a 15-digit IMEI as its id: what the size table in README.md is measured on.
fn samples() -> Vec<(&'static str, Uplink)> {
    let up = |seq, body| {
        let mut msg = Uplink::new(dev("862177040123456"), 3, seq, NOW_MS, body);
        msg.sign(&village(), &key());
        msg
    };
    vec![
        (
            "heartbeat",
            up(
                1,
                UplinkBody::Heartbeat(Heartbeat {
                    battery_mv: Some(3012),
                    signal_dbm: -97,
                    chamber_baseline: Some(1480),
                    drift_pct: Some(12),
                    temperature_c: 23.5,
                    firmware: text("1.4.2"),
                    uptime_s: 86_400,
                }),
            ),
        ),
        (
            "state (alarm)",
            up(2, UplinkBody::State(StateChange { state: DetectorState::Alarm, obscuration_db_m: 0.21 })),
        ),
        ("fault", up(3, UplinkBody::Fault(Fault { fault: FaultKind::LowBattery, active: true }))),
        (
            "camera_event",
            up(
                4,
                UplinkBody::CameraEvent(CameraEvent {
                    channel: 12,
                    event: CameraEventKind::Smoke,
                    active: true,
                    confidence_pct: 87,
                    snapshot: Some(text("snap/cam-0042/12/20261123T031502Z.jpg")),
                }),
            ),
        ),
        (
            "camera_health",
            up(5, UplinkBody::CameraHealth(CameraHealth { channel: 12, status: ChannelStatus::VideoLoss })),
        ),
        ("water", up(6, UplinkBody::Water(WaterReading { pressure_mpa: Some(0.35), level_m: None }))),
        (
            "command_ack",
            up(7, UplinkBody::CommandAck(CommandAck { cmd_seq: 41, result: AckResult::Applied })),
        ),
        ("status", up(8, UplinkBody::Status(Status { online: false }))),
        ("boot", up(0, UplinkBody::Boot(BootAnnouncement { nonce: 0x5eed_1e55_0dd5_f00d }))),
        (
            "fw_status",
            up(
                9,
                UplinkBody::FwStatus(FirmwareStatus {
                    version: text("1.5.0"),
                    state: UpdateState::Receiving,
                    offset: 23_040,
                    error: Some(UpdateError::OutOfOrder),
                }),
            ),
        ),
    ]
}

fn downlink_samples() -> Vec<(&'static str, Downlink)> {
    let down = |body| {
        let mut cmd = Downlink::new(41, NOW_MS, body);
        cmd.sign(&village(), &dev("862177040123456"), 3, &key());
        cmd
    };
    vec![
        ("sounders", down(DownlinkBody::Sounders { on: true })),
        ("hush", down(DownlinkBody::Hush { duration_s: 600 })),
        ("self_test", down(DownlinkBody::SelfTest {})),
        ("set_heartbeat", down(DownlinkBody::SetHeartbeat { interval_s: 86_400 })),
        ("set_thresholds", down(DownlinkBody::SetThresholds { pre_alarm_db_m: 0.08, alarm_db_m: 0.15 })),
        ("ack", down(DownlinkBody::Ack { boot: 3, seq: 2 })),
        ("challenge", down(DownlinkBody::Challenge { nonce: 0x5eed_1e55_0dd5_f00d })),
        ("fw_offer", down(DownlinkBody::FwOffer(offer_sample()))),
        ("fw_chunk", down(DownlinkBody::FwChunk(full_chunk(23_040)))),
        ("fw_commit", down(DownlinkBody::FwCommit {})),
        ("fw_abort", down(DownlinkBody::FwAbort {})),
        ("fw_confirm", down(DownlinkBody::FwConfirm {})),
    ]
}

/// An offer for a 61,932-byte image (the size of the detector's Cortex-M3 image).
fn offer_sample() -> FirmwareOffer {
    FirmwareOffer {
        version: text("1.5.0"),
        size: 61_932,
        sha256: firmware::FixedBytes(core::array::from_fn(|i| 0xa0 ^ i as u8)),
        signature: firmware::FixedBytes(core::array::from_fn(|i| 0x50 ^ i as u8)),
        security_counter: 3,
        key_slot: 1,
    }
}

/// The signed message of manifest layout 3, byte for byte from its documented layout: the
/// bootloader and the gateway's signing tool both build it with this function.
#[test]
fn the_signed_message_is_domain_version_counter_key_slot_and_sha512() {
    let sha512: [u8; 64] = core::array::from_fn(|i| i as u8);
    let msg = firmware::signed_message(&firmware::version_field("1.5.0"), 0x0102_0304, 2, &sha512);
    let mut expected = Vec::new();
    expected.extend_from_slice(b"FGFWSIG3");
    expected.extend_from_slice(b"1.5.0\0\0\0\0\0\0\0\0\0\0\0");
    expected.extend_from_slice(&[0x04, 0x03, 0x02, 0x01]);
    expected.push(2);
    expected.extend_from_slice(&sha512);
    assert_eq!(msg.len(), 93);
    assert_eq!(msg.to_vec(), expected);
    assert_eq!(firmware::version_field("a-version-of-17-b"), *b"a-version-of-17-", "cut at 16 bytes");
}

/// A chunk of [`MAX_CHUNK`] bytes at `offset`: the largest a downlink carries.
fn full_chunk(offset: u32) -> FirmwareChunk {
    let data = heapless::Vec::from_slice(&[0xa5; MAX_CHUNK]).unwrap();
    FirmwareChunk { offset, data: firmware::ChunkData(data) }
}

fn encoded(msg: &Uplink, enc: Encoding) -> Vec<u8> {
    let mut buf = [0u8; MAX_PAYLOAD];
    msg.encode(enc, &mut buf).unwrap().to_vec()
}

fn json(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// The data-driven check: `payload` must be received (detected, decoded, validated) as
/// `expected`.
fn check(payload: &[u8], expected: Result<&Uplink, Error>) {
    let got = Uplink::receive(payload, &Limits::default());
    assert_eq!(got.as_ref().map_err(|e| *e), expected, "payload {:?}", String::from_utf8_lossy(payload));
    if let Err(e) = got {
        assert!(!e.reason().is_empty());
    }
}

#[test]
fn samples_round_trip_in_both_encodings() {
    for (name, msg) in samples() {
        for enc in [Encoding::Json, Encoding::Compact] {
            let bytes = encoded(&msg, enc);
            assert_eq!(Encoding::detect(&bytes), enc, "{name}");
            check(&bytes, Ok(&msg));
        }
    }
    for (name, cmd) in downlink_samples() {
        for enc in [Encoding::Json, Encoding::Compact] {
            let mut buf = [0u8; MAX_PAYLOAD];
            let bytes = cmd.encode(enc, &mut buf).unwrap();
            assert_eq!(Downlink::receive(bytes, &Limits::default()), Ok(cmd.clone()), "{name} {enc}");
        }
    }
}

#[test]
fn json_wire_format_is_stable() {
    // The documented example in README.md, byte for byte: vendors implement this.
    let (_, alarm) = &samples()[1];
    assert_eq!(
        String::from_utf8(encoded(alarm, Encoding::Json)).unwrap(),
        r#"{"v":2,"dev":"862177040123456","boot":3,"seq":2,"ts_ms":1763860000000,"body":{"state":{"state":"alarm","obscuration_db_m":0.21}},"mac":"48ad6e06a566e55fc3764328e88ac2a6"}"#
    );
}

/// README.md tells vendors how to compute a tag in words; this follows the words with the
/// `hmac` crate directly and must get the tag the library computes.
#[test]
fn tag_follows_the_documented_construction() {
    use hmac::{KeyInit, Mac};
    for (name, msg) in samples() {
        let mut unsigned = msg.clone();
        unsigned.mac = None;
        let compact = encoded(&unsigned, Encoding::Compact);
        // The compact message up to, not including, its `mac` field (the final None byte).
        let fields = &compact[..compact.len() - 1];
        let mut input = vec![auth::UPLINK_DOMAIN.len() as u8];
        input.extend_from_slice(auth::UPLINK_DOMAIN.as_bytes());
        input.push(village().len() as u8);
        input.extend_from_slice(village().as_bytes());
        input.extend_from_slice(fields);
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key().expose()).unwrap();
        mac.update(&input);
        let full = mac.finalize().into_bytes();
        assert_eq!(msg.mac.unwrap().0[..], full[..16], "{name}");
    }
}

#[test]
fn tags_bind_the_message_to_its_device_village_and_key() {
    for (name, msg) in samples() {
        assert_eq!(msg.verify(&village(), &key()), Ok(()), "{name}");
        // The same message through both encodings still verifies.
        for enc in [Encoding::Json, Encoding::Compact] {
            let back = Uplink::receive(&encoded(&msg, enc), &Limits::default()).unwrap();
            assert_eq!(back.verify(&village(), &key()), Ok(()), "{name} {enc}");
        }
        let other_village = VillageId::new("xicun").unwrap();
        assert_eq!(
            msg.verify(&other_village, &key()),
            Err(AuthError::BadTag),
            "{name}: moved to another village"
        );
        let other_key = DeviceKey::from_bytes([7; 32]);
        assert_eq!(
            msg.verify(&village(), &other_key),
            Err(AuthError::BadTag),
            "{name}: another device's key"
        );
        let mut later = msg.clone();
        later.seq += 1;
        assert_eq!(later.verify(&village(), &key()), Err(AuthError::BadTag), "{name}: seq changed");
        let mut reboot = msg.clone();
        reboot.boot += 1;
        assert_eq!(reboot.verify(&village(), &key()), Err(AuthError::BadTag), "{name}: boot changed");
        let mut other_dev = msg.clone();
        other_dev.dev = dev("862177040123457");
        assert_eq!(other_dev.verify(&village(), &key()), Err(AuthError::BadTag), "{name}: device changed");
        let mut unsigned = msg.clone();
        unsigned.mac = None;
        assert_eq!(unsigned.verify(&village(), &key()), Err(AuthError::Unsigned));
    }
    // A downlink tag does not pass for another device or another boot of the same device.
    for (name, cmd) in downlink_samples() {
        let device = dev("862177040123456");
        assert_eq!(cmd.verify(&village(), &device, &key()), Ok(3), "{name}");
        assert_eq!(cmd.verify(&village(), &dev("862177040123457"), &key()), Err(AuthError::BadTag), "{name}");
        let mut moved = cmd.clone();
        moved.auth.as_mut().unwrap().boot = 4;
        assert_eq!(moved.verify(&village(), &device, &key()), Err(AuthError::BadTag), "{name}");
        let mut guard = DownlinkGuard::new();
        assert_eq!(guard.admit(&cmd, &village(), &device, 4, &key()), Err(AuthError::WrongBoot), "{name}");
        assert_eq!(guard.admit(&cmd, &village(), &device, 3, &key()), Ok(()), "{name}");
        assert_eq!(guard.admit(&cmd, &village(), &device, 3, &key()), Err(AuthError::Replayed), "{name}");
    }
}

/// Firmware of schema version 1 keeps working during a migration: its messages, which have
/// no tag, still decode, in both encodings.
#[test]
fn version_1_messages_decode_unsigned() {
    let v1_json = br#"{"v":1,"dev":"862177040123456","boot":3,"seq":2,"ts_ms":1763860000000,"body":{"state":{"state":"alarm","obscuration_db_m":0.21}}}"#;
    let msg = Uplink::receive(v1_json, &Limits::default()).unwrap();
    assert_eq!((msg.v, msg.mac, msg.seq), (1, None, 2));
    // A version-1 compact message is a version-2 one without the trailing `mac` byte(s).
    let mut unsigned = msg.clone();
    let compact = encoded(&unsigned, Encoding::Compact);
    let v1_compact = &compact[..compact.len() - 1];
    assert_eq!(Uplink::receive(v1_compact, &Limits::default()), Ok(msg.clone()));
    // A version-2 message cut short the same way is malformed, not silently unsigned.
    unsigned.v = 2;
    let compact = encoded(&unsigned, Encoding::Compact);
    assert_eq!(
        Uplink::receive(&compact[..compact.len() - 1], &Limits::default()),
        Err(Error::Malformed { encoding: Encoding::Compact })
    );
    let v1_cmd = br#"{"v":1,"seq":41,"ts_ms":1763860000000,"body":{"hush":{"duration_s":600}}}"#;
    let cmd = Downlink::receive(v1_cmd, &Limits::default()).unwrap();
    assert_eq!(cmd.auth, None);
    let mut buf = [0u8; 64];
    let compact = cmd.encode(Encoding::Compact, &mut buf).unwrap();
    assert_eq!(Downlink::receive(&compact[..compact.len() - 1], &Limits::default()), Ok(cmd.clone()));
}

#[test]
fn tolerates_unknown_fields_escapes_and_whitespace() {
    let mut expected = Uplink::new(
        dev("sd-1"),
        0,
        9,
        0,
        UplinkBody::State(StateChange { state: DetectorState::PreAlarm, obscuration_db_m: 0.1 }),
    );
    expected.v = 1;
    // Unknown fields at every level, a newer firmware's habit, are ignored.
    check(
        &json(
            r#" {"v":1,"vendor":{"x":[1,{"y":null}]},"dev":"sd-1","boot":0,"seq":9,"ts_ms":0,
                "body":{"state":{"state":"pre_alarm","obscuration_db_m":0.1,"ir":123}},"rssi":-80} "#,
        ),
        Ok(&expected),
    );
    // JSON escapes in strings are decoded, not passed through.
    check(
        &json(
            r#"{"v":1,"dev":"sd\u002d1","boot":0,"seq":9,"ts_ms":0,"body":{"state":{"state":"pre_alarm","obscuration_db_m":0.1}}}"#,
        ),
        Ok(&expected),
    );
    // Compact: bytes appended by a newer schema are ignored.
    let mut bytes = encoded(&expected, Encoding::Compact);
    bytes.extend_from_slice(&[7, 7, 7]);
    check(&bytes, Ok(&expected));
}

#[test]
fn rejects_invalid_messages_with_typed_errors() {
    let body = r#""body":{"state":{"state":"alarm","obscuration_db_m":0.2}}"#;
    let with = |header: &str, body: &str| json(&format!("{{{header},{body}}}"));
    let hdr = r#""v":1,"dev":"sd-1","boot":0,"seq":1,"ts_ms":0"#;

    check(&vec![b' '; MAX_PAYLOAD + 1], Err(Error::TooLarge { len: MAX_PAYLOAD + 1, max: MAX_PAYLOAD }));
    check(b"", Err(Error::Malformed { encoding: Encoding::Compact }));
    check(b"{", Err(Error::Malformed { encoding: Encoding::Json }));
    check(b"{}", Err(Error::Malformed { encoding: Encoding::Json }));
    check(&with(hdr, body)[..20], Err(Error::Malformed { encoding: Encoding::Json }));
    check(&json(&format!("{{{hdr},{body}}} trailing")), Err(Error::Malformed { encoding: Encoding::Json }));
    check(
        &with(hdr, r#""body":{"state":{"state":"smouldering","obscuration_db_m":0.2}}"#),
        Err(Error::Malformed { encoding: Encoding::Json }),
    );
    check(
        &with(hdr, r#""body":{"state":{"state":"alarm"}}"#),
        Err(Error::Malformed { encoding: Encoding::Json }),
    );
    check(
        &with(hdr, r#""body":{"state":{"state":"alarm","obscuration_db_m":"0.2"}}"#),
        Err(Error::Malformed { encoding: Encoding::Json }),
    );
    // serde-json-core reads `null` as NaN for an f32; validation then names the field.
    check(
        &with(hdr, r#""body":{"state":{"state":"alarm","obscuration_db_m":null}}"#),
        Err(Error::OutOfRange { field: "obscuration_db_m" }),
    );

    // Unknown kinds, in JSON and compact.
    check(&with(hdr, r#""body":{"earthquake":{"magnitude":5}}"#), Err(Error::UnknownKind));
    check(
        &with(hdr, r#""body":{"earthquake_with_a_very_long_kind_name_beyond_32_bytes":{}}"#),
        Err(Error::UnknownKind),
    );
    let mut fault = samples()[2].1.clone();
    fault.mac = None;
    let mut compact = encoded(&fault, Encoding::Compact);
    let tag_at = compact.len() - 4; // fault body: tag, fault kind, active; then `mac` None
    compact[tag_at] = 99;
    check(&compact, Err(Error::UnknownKind));

    // Versions.
    check(
        &with(r#""v":3,"dev":"sd-1","boot":0,"seq":1,"ts_ms":0"#, body),
        Err(Error::UnsupportedVersion { version: 3 }),
    );
    check(
        &with(r#""v":0,"dev":"sd-1","boot":0,"seq":1,"ts_ms":0"#, body),
        Err(Error::UnsupportedVersion { version: 0 }),
    );
    let mut compact = encoded(&samples()[1].1, Encoding::Compact);
    compact[0] = 9;
    check(&compact, Err(Error::UnsupportedVersion { version: 9 }));

    // Ids.
    for (id, err) in [
        ("", IdError::Empty),
        ("sd+1", IdError::BadChar { at: 2 }),
        ("sd#", IdError::BadChar { at: 2 }),
        ("a/b", IdError::BadChar { at: 1 }),
        ("sd\\n1", IdError::BadChar { at: 2 }),
        ("abcdefghijklmnopqrstuvwxyz0123456789", IdError::TooLong { len: 36 }),
    ] {
        let header = format!(r#""v":1,"dev":"{id}","boot":0,"seq":1,"ts_ms":0"#);
        check(&with(&header, body), Err(Error::BadDeviceId(err)));
    }

    // Physical ranges.
    let out = |field| Err(Error::OutOfRange { field });
    check(
        &with(hdr, r#""body":{"state":{"state":"alarm","obscuration_db_m":-0.1}}"#),
        out("obscuration_db_m"),
    );
    check(
        &with(hdr, r#""body":{"state":{"state":"alarm","obscuration_db_m":1e9}}"#),
        out("obscuration_db_m"),
    );
    let hb = |battery: &str, signal: &str, temp: &str, fw: &str| {
        format!(
            r#""body":{{"heartbeat":{{"battery_mv":{battery},"signal_dbm":{signal},"chamber_baseline":null,"drift_pct":null,"temperature_c":{temp},"firmware":"{fw}","uptime_s":1}}}}"#
        )
    };
    check(
        &with(hdr, &hb("3000", "-90", "20", "1.0")),
        Ok(&Uplink::receive(&with(hdr, &hb("3000", "-90", "20", "1.0")), &Limits::default()).unwrap()),
    );
    check(&with(hdr, &hb("0", "-90", "20", "1.0")), out("battery_mv"));
    check(&with(hdr, &hb("65000", "-90", "20", "1.0")), out("battery_mv"));
    check(&with(hdr, &hb("3000", "12", "20", "1.0")), out("signal_dbm"));
    check(&with(hdr, &hb("3000", "-90", "300", "1.0")), out("temperature_c"));
    check(&with(hdr, &hb("3000", "-90", "20", "1.0 beta")), Err(Error::BadText { field: "firmware" }));
    check(&with(hdr, &hb("3000", "-90", "20", "")), Err(Error::BadText { field: "firmware" }));
    check(&with(hdr, r#""body":{"water":{"pressure_mpa":-0.2,"level_m":null}}"#), out("pressure_mpa"));
    check(&with(hdr, r#""body":{"water":{"pressure_mpa":null,"level_m":null}}"#), out("pressure_mpa"));
    check(
        &with(
            hdr,
            r#""body":{"camera_event":{"channel":1,"event":"fire","active":true,"confidence_pct":101,"snapshot":null}}"#,
        ),
        out("confidence_pct"),
    );
    check(
        &with(
            hdr,
            r#""body":{"camera_event":{"channel":0,"event":"fire","active":true,"confidence_pct":90,"snapshot":null}}"#,
        ),
        out("channel"),
    );
    check(
        &with(
            hdr,
            r#""body":{"camera_event":{"channel":1,"event":"fire","active":true,"confidence_pct":90,"snapshot":"a\"b"}}"#,
        ),
        Err(Error::BadText { field: "snapshot" }),
    );

    // NaN written by a buggy encoder cannot slip through the compact path either.
    let mut nan = samples()[1].1.clone();
    nan.body = UplinkBody::State(StateChange { state: DetectorState::Alarm, obscuration_db_m: f32::NAN });
    check(&encoded(&nan, Encoding::Compact), out("obscuration_db_m"));
}

/// A wrong device clock does not make a message invalid: it is received, and
/// `clock_skew` reports it only beyond the limits, in the right direction.
#[test]
fn clock_skew_is_flagged_not_rejected() {
    let limits = Limits::default();
    let at = |ts_ms: u64| {
        let payload = format!(
            r#"{{"v":1,"dev":"sd-1","boot":0,"seq":1,"ts_ms":{ts_ms},"body":{{"fault":{{"fault":"tamper","active":true}}}}}}"#
        );
        let msg = Uplink::receive(payload.as_bytes(), &limits).expect("a wrong clock is no reason to refuse");
        msg.clock_skew(NOW_MS, &limits)
    };
    assert_eq!(at(NOW_MS), None);
    assert_eq!(at(0), None, "no clock");
    assert_eq!(at(NOW_MS + limits.clock_ahead_ms), None, "the bound itself is fine");
    assert_eq!(at(NOW_MS + limits.clock_ahead_ms + 1), Some(ClockSkew::Ahead(limits.clock_ahead_ms + 1)));
    assert_eq!(at(NOW_MS + 3_600_000), Some(ClockSkew::Ahead(3_600_000)));
    assert_eq!(at(NOW_MS - limits.clock_behind_ms), None);
    assert_eq!(at(NOW_MS - limits.clock_behind_ms - 1), Some(ClockSkew::Behind(limits.clock_behind_ms + 1)));
    assert_eq!(at(1), Some(ClockSkew::Behind(NOW_MS - 1)));
    assert_eq!(ClockSkew::Ahead(5).direction(), "ahead");
    assert_eq!(ClockSkew::Behind(7).ms(), 7);
    // A receiver whose own clock is unset (near 0) flags every clocked device as ahead.
    let msg = Uplink::receive(br#"{"v":1,"dev":"sd-1","boot":0,"seq":1,"ts_ms":10000000,"body":{"fault":{"fault":"tamper","active":true}}}"#, &limits).unwrap();
    assert_eq!(msg.clock_skew(0, &limits), Some(ClockSkew::Ahead(10_000_000)));
}

#[test]
fn rejects_invalid_commands() {
    let limits = Limits::default();
    let check_cmd = |body: DownlinkBody, field: &'static str| {
        let mut buf = [0u8; 256];
        for enc in [Encoding::Json, Encoding::Compact] {
            let bytes = Downlink::new(1, NOW_MS, body.clone()).encode(enc, &mut buf).unwrap();
            assert_eq!(Downlink::receive(bytes, &limits), Err(Error::OutOfRange { field }), "{body:?} {enc}");
        }
    };
    check_cmd(DownlinkBody::Hush { duration_s: 0 }, "duration_s");
    check_cmd(DownlinkBody::Hush { duration_s: 3600 }, "duration_s");
    check_cmd(DownlinkBody::SetHeartbeat { interval_s: 5 }, "interval_s");
    check_cmd(DownlinkBody::SetThresholds { pre_alarm_db_m: 0.2, alarm_db_m: 0.1 }, "pre_alarm_db_m");
    check_cmd(DownlinkBody::SetThresholds { pre_alarm_db_m: 0.1, alarm_db_m: 9.0 }, "alarm_db_m");
    check_cmd(DownlinkBody::SetThresholds { pre_alarm_db_m: f32::NAN, alarm_db_m: 0.2 }, "pre_alarm_db_m");
    assert_eq!(
        Downlink::receive(br#"{"v":1,"seq":1,"ts_ms":0,"body":{"reboot":{}}}"#, &limits),
        Err(Error::UnknownKind)
    );
}

#[test]
fn kinds_and_classes() {
    for (name, msg) in samples() {
        assert_eq!(UplinkKind::from_name(msg.kind().as_str()), Some(msg.kind()), "{name}");
    }
    assert_eq!(UplinkKind::State.class(), Class::Alarm);
    assert_eq!(UplinkKind::CameraEvent.class(), Class::Alarm);
    assert_eq!(UplinkKind::Fault.class(), Class::Event);
    assert_eq!(UplinkKind::Heartbeat.class(), Class::Telemetry);
    assert!(Class::Alarm < Class::Event && Class::Event < Class::Telemetry, "sort order is send order");
    let acknowledged: Vec<_> = UplinkKind::ALL.into_iter().filter(|k| k.class().is_acknowledged()).collect();
    assert!(
        !acknowledged.contains(&UplinkKind::Heartbeat) && !acknowledged.contains(&UplinkKind::Water),
        "telemetry gets no down/ack"
    );
    assert!(!acknowledged.contains(&UplinkKind::FwStatus), "update progress is superseded, not acknowledged");
    assert_eq!(acknowledged.len(), UplinkKind::ALL.len() - 3, "every alarm and event kind does");
    for (name, cmd) in downlink_samples() {
        assert_eq!(cmd.kind().as_str(), name);
    }
}

/// Renders the size table README.md carries; `encoded_sizes_match_readme` keeps it true.
fn size_table() -> String {
    let mut out = String::from("| message | compact bytes | JSON bytes |\n|---|---:|---:|\n");
    for (name, msg) in samples() {
        let (c, j) = (encoded(&msg, Encoding::Compact).len(), encoded(&msg, Encoding::Json).len());
        out += &format!("| uplink `{name}` | {c} | {j} |\n");
    }
    for (name, cmd) in downlink_samples() {
        let mut buf = [0u8; MAX_PAYLOAD];
        let c = cmd.encode(Encoding::Compact, &mut buf).unwrap().len();
        let j = cmd.encode(Encoding::Json, &mut buf).unwrap().len();
        out += &format!("| downlink `{name}` | {c} | {j} |\n");
    }
    out
}

#[test]
fn encoded_sizes_match_readme() {
    let (_, alarm) = &samples()[1];
    let compact = encoded(alarm, Encoding::Compact).len();
    assert!(compact <= 64, "an alarm must fit in 64 bytes compact, it takes {compact}");
    let table = size_table();
    let readme = include_str!("../README.md");
    assert!(
        readme.contains(&table),
        "README.md's size table is out of date; the measured table is:\n{table}"
    );
}

// ---- Property tests ----

fn id_strategy() -> impl Strategy<Value = DeviceId> {
    "[A-Za-z0-9._-]{1,32}".prop_map(|s| DeviceId::new(&s).unwrap())
}

fn in_range(lo: f32, hi: f32) -> impl Strategy<Value = f32> {
    prop_oneof![Just(lo), Just(hi), lo..=hi]
}

fn text_strategy<const N: usize>(max: usize) -> impl Strategy<Value = heapless::String<N>> {
    proptest::string::string_regex(&format!("[!#-&(-\\[\\]-~]{{1,{max}}}"))
        .unwrap()
        .prop_map(|s| heapless::String::try_from(s.as_str()).unwrap())
}

fn body_strategy() -> impl Strategy<Value = UplinkBody> {
    let state = prop_oneof![
        Just(DetectorState::Normal),
        Just(DetectorState::PreAlarm),
        Just(DetectorState::Alarm),
        Just(DetectorState::Hush),
        Just(DetectorState::Cleared),
        Just(DetectorState::Test),
    ];
    let fault = prop_oneof![
        Just(FaultKind::LowBattery),
        Just(FaultKind::Contamination),
        Just(FaultKind::Tamper),
        Just(FaultKind::SensorFault),
        Just(FaultKind::EndOfLife),
    ];
    let cam = prop_oneof![
        Just(CameraEventKind::Smoke),
        Just(CameraEventKind::Fire),
        Just(CameraEventKind::FireLaneBlocked)
    ];
    let status = prop_oneof![
        Just(ChannelStatus::Online),
        Just(ChannelStatus::VideoLoss),
        Just(ChannelStatus::Tampered),
        Just(ChannelStatus::Offline)
    ];
    let ack = prop_oneof![Just(AckResult::Applied), Just(AckResult::Rejected), Just(AckResult::Unsupported)];
    prop_oneof![
        (
            proptest::option::of(1_000u16..=12_000),
            -150i16..=0,
            proptest::option::of(any::<u16>()),
            proptest::option::of(0u8..=100),
            in_range(-40.0, 125.0),
            text_strategy::<16>(16),
            any::<u32>()
        )
            .prop_map(
                |(battery_mv, signal_dbm, chamber_baseline, drift_pct, temperature_c, firmware, uptime_s)| {
                    UplinkBody::Heartbeat(Heartbeat {
                        battery_mv,
                        signal_dbm,
                        chamber_baseline,
                        drift_pct,
                        temperature_c,
                        firmware,
                        uptime_s,
                    })
                }
            ),
        (state, in_range(0.0, 20.0))
            .prop_map(|(state, obscuration_db_m)| UplinkBody::State(StateChange { state, obscuration_db_m })),
        (fault, any::<bool>()).prop_map(|(fault, active)| UplinkBody::Fault(Fault { fault, active })),
        (1u16.., cam, any::<bool>(), 0u8..=100, proptest::option::of(text_strategy::<96>(96))).prop_map(
            |(channel, event, active, confidence_pct, snapshot)| {
                UplinkBody::CameraEvent(CameraEvent { channel, event, active, confidence_pct, snapshot })
            }
        ),
        (any::<u16>(), status)
            .prop_map(|(channel, status)| UplinkBody::CameraHealth(CameraHealth { channel, status })),
        (proptest::option::of(in_range(0.0, 10.0)), in_range(0.0, 100.0))
            .prop_map(|(p, l)| { UplinkBody::Water(WaterReading { pressure_mpa: p, level_m: Some(l) }) }),
        (any::<u32>(), ack)
            .prop_map(|(cmd_seq, result)| UplinkBody::CommandAck(CommandAck { cmd_seq, result })),
        any::<bool>().prop_map(|online| UplinkBody::Status(Status { online })),
    ]
}

fn uplink_strategy() -> impl Strategy<Value = Uplink> {
    (id_strategy(), any::<u16>(), any::<u32>(), 0..=NOW_MS, body_strategy())
        .prop_map(|(dev, boot, seq, ts_ms, body)| Uplink::new(dev, boot, seq, ts_ms, body))
}

fn downlink_strategy() -> impl Strategy<Value = Downlink> {
    let body = prop_oneof![
        any::<bool>().prop_map(|on| DownlinkBody::Sounders { on }),
        (1u16..=900).prop_map(|duration_s| DownlinkBody::Hush { duration_s }),
        Just(DownlinkBody::SelfTest {}),
        (60u32..=604_800).prop_map(|interval_s| DownlinkBody::SetHeartbeat { interval_s }),
        (0.05f32..0.3, 0.3f32..=0.58).prop_map(|(pre_alarm_db_m, alarm_db_m)| DownlinkBody::SetThresholds {
            pre_alarm_db_m,
            alarm_db_m
        }),
        (any::<u16>(), any::<u32>()).prop_map(|(boot, seq)| DownlinkBody::Ack { boot, seq }),
    ];
    (any::<u32>(), any::<u64>(), body).prop_map(|(seq, ts_ms, body)| Downlink::new(seq, ts_ms, body))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn uplinks_round_trip(msg in uplink_strategy()) {
        for enc in [Encoding::Json, Encoding::Compact] {
            let bytes = encoded(&msg, enc);
            prop_assert!(bytes.len() <= MAX_PAYLOAD);
            prop_assert_eq!(Uplink::receive(&bytes, &Limits::default()), Ok(msg.clone()));
        }
    }

    /// A message changed in transit, anywhere, either fails to decode or fails to verify.
    #[test]
    fn tampered_messages_never_verify(
        msg in uplink_strategy(),
        json in any::<bool>(),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut msg = msg;
        msg.sign(&village(), &key());
        let mut bytes = encoded(&msg, if json { Encoding::Json } else { Encoding::Compact });
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        if let Ok(back) = Uplink::receive(&bytes, &Limits::default())
            && back != msg
        {
            prop_assert!(back.verify(&village(), &key()).is_err(), "tampered message verified: {:?}", back);
        }
    }

    #[test]
    fn downlinks_round_trip(cmd in downlink_strategy()) {
        for enc in [Encoding::Json, Encoding::Compact] {
            let mut buf = [0u8; 256];
            let bytes = cmd.encode(enc, &mut buf).unwrap();
            prop_assert_eq!(Downlink::receive(bytes, &Limits::default()), Ok(cmd.clone()));
        }
    }
}

/// What a fuzz case asserts: decoding never panics, and anything accepted is a valid
/// message that survives a round trip through both encodings.
fn never_panics_and_accepts_only_valid(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(msg) = Uplink::receive(bytes, &Limits::default()) {
        for enc in [Encoding::Json, Encoding::Compact] {
            prop_assert_eq!(Uplink::receive(&encoded(&msg, enc), &Limits::default()), Ok(msg.clone()));
        }
    }
    if let Ok(cmd) = Downlink::receive(bytes, &Limits::default()) {
        prop_assert!(cmd.validate().is_ok());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        never_panics_and_accepts_only_valid(&bytes)?;
        // The same bytes behind a `{`, so the JSON decoder sees them too.
        let mut as_json = b"{".to_vec();
        as_json.extend_from_slice(&bytes);
        never_panics_and_accepts_only_valid(&as_json)?;
    }

    #[test]
    fn mutated_messages_never_panic(
        msg in uplink_strategy(),
        json in any::<bool>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let mut bytes = encoded(&msg, if json { Encoding::Json } else { Encoding::Compact });
        for (at, byte, op) in edits {
            let i = at.index(bytes.len().max(1));
            match op {
                0 if !bytes.is_empty() => bytes[i] = byte,
                1 => bytes.insert(i.min(bytes.len()), byte),
                _ => bytes.truncate(i),
            }
        }
        never_panics_and_accepts_only_valid(&bytes)?;
    }
}

// ---- Firmware updates ----

#[test]
fn firmware_byte_strings_are_hex_in_json_and_raw_in_compact() {
    let mut cmd = Downlink::new(
        7,
        0,
        DownlinkBody::FwChunk(FirmwareChunk {
            offset: 4,
            data: firmware::ChunkData(heapless::Vec::from_slice(&[0x00, 0x7f, 0xff]).unwrap()),
        }),
    );
    let mut buf = [0u8; MAX_PAYLOAD];
    let json = cmd.encode(Encoding::Json, &mut buf).unwrap();
    assert_eq!(
        core::str::from_utf8(json).unwrap(),
        r#"{"v":2,"seq":7,"ts_ms":0,"body":{"fw_chunk":{"offset":4,"data":"007fff"}},"auth":null}"#
    );
    // Compact: kind index 8, offset 4, then the byte string as its length and the bytes.
    let compact = cmd.encode(Encoding::Compact, &mut buf).unwrap();
    assert_eq!(compact, [2, 7, 0, 8, 4, 3, 0x00, 0x7f, 0xff, 0]);
    cmd.sign(&village(), &dev("862177040123456"), 3, &key());
    assert_eq!(cmd.verify(&village(), &dev("862177040123456"), &key()), Ok(3));
}

#[test]
fn a_full_chunk_fits_the_payload_limit_in_both_encodings_and_a_larger_one_is_refused() {
    for enc in [Encoding::Json, Encoding::Compact] {
        let mut cmd = Downlink::new(u32::MAX, u64::MAX, DownlinkBody::FwChunk(full_chunk(u32::MAX)));
        cmd.sign(&village(), &dev(&"d".repeat(32)), u16::MAX, &key());
        let mut buf = [0u8; MAX_PAYLOAD];
        let bytes = cmd.encode(enc, &mut buf).unwrap();
        assert_eq!(Downlink::receive(bytes, &Limits::default()), Ok(cmd.clone()), "{enc}");
    }
    let long = format!(
        r#"{{"v":2,"seq":1,"ts_ms":0,"body":{{"fw_chunk":{{"offset":0,"data":"{}"}}}}}}"#,
        "ab".repeat(MAX_CHUNK + 1)
    );
    let limits = Limits { max_payload: 4 * MAX_PAYLOAD, ..Limits::default() };
    assert_eq!(
        Downlink::receive(long.as_bytes(), &limits),
        Err(Error::Malformed { encoding: Encoding::Json })
    );
    let odd = r#"{"v":2,"seq":1,"ts_ms":0,"body":{"fw_chunk":{"offset":0,"data":"abc"}}}"#;
    assert_eq!(
        Downlink::receive(odd.as_bytes(), &limits),
        Err(Error::Malformed { encoding: Encoding::Json })
    );
    let short_digest = r#"{"v":2,"seq":1,"ts_ms":0,"body":{"fw_offer":{"version":"1","size":1,"sha256":"00","signature":"00"}}}"#;
    assert_eq!(
        Downlink::receive(short_digest.as_bytes(), &limits),
        Err(Error::Malformed { encoding: Encoding::Json })
    );
}

#[test]
fn firmware_commands_are_validated() {
    let mut empty = offer_sample();
    empty.size = 0;
    assert_eq!(
        Downlink::new(1, 0, DownlinkBody::FwOffer(empty)).validate(),
        Err(Error::OutOfRange { field: "size" })
    );
    let mut spaced = offer_sample();
    spaced.version = text("1 5");
    assert!(Downlink::new(1, 0, DownlinkBody::FwOffer(spaced)).validate().is_err());
    let nothing = FirmwareChunk { offset: 0, data: firmware::ChunkData::default() };
    assert_eq!(
        Downlink::new(1, 0, DownlinkBody::FwChunk(nothing)).validate(),
        Err(Error::OutOfRange { field: "data" })
    );
    assert_eq!(Downlink::new(1, 0, DownlinkBody::FwOffer(offer_sample())).validate(), Ok(()));
}
