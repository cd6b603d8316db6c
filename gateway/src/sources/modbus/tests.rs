//! The pure parts of the Modbus source, table-driven: decoding, read planning, conditions and
//! configuration. The polling tasks are tested against real servers (an in-process
//! tokio-modbus server and pymodbus) in the workspace's integration tests.

use super::*;

/// A point with the given layout that measures `measures`; everything else default.
fn point(
    name: &str,
    register: RegisterKind,
    address: u16,
    data_type: DataType,
    measures: Measure,
) -> PointConfig {
    PointConfig {
        name: name.into(),
        register,
        address,
        data_type,
        word_order: WordOrder::Big,
        scale: 1.0,
        offset: 0.0,
        unit: String::new(),
        measures,
        low: None,
        deadband: 0.0,
        valid_range: None,
    }
}

mod decoding {
    use proptest::prelude::*;

    use super::*;

    fn check(words: &[u16], data_type: DataType, order: WordOrder, expected: f64) {
        let got = decode(words, data_type, order);
        assert_eq!(got, expected, "{words:04x?} as {data_type:?} {order:?}");
        assert_eq!(encode(expected, data_type, order), words, "encode {expected} as {data_type:?} {order:?}");
    }

    #[test]
    fn every_data_type_and_word_order() {
        use DataType::*;
        use WordOrder::*;
        check(&[0x0000], U16, Big, 0.0);
        check(&[0xffff], U16, Big, 65_535.0);
        check(&[0x0159], U16, Little, 345.0); // one register: word order does not apply
        check(&[0xffff], I16, Big, -1.0);
        check(&[0x8000], I16, Big, -32_768.0);
        check(&[0x7fff], I16, Big, 32_767.0);
        check(&[0x0001, 0x0002], U32, Big, 65_538.0);
        check(&[0x0002, 0x0001], U32, Little, 65_538.0);
        check(&[0xffff, 0xffff], U32, Big, 4_294_967_295.0);
        check(&[0xffff, 0xfffe], I32, Big, -2.0);
        check(&[0xfffe, 0xffff], I32, Little, -2.0);
        check(&[0x8000, 0x0000], I32, Big, -2_147_483_648.0);
        // 0.35 MPa as an IEEE 754 single: 0x3EB33333.
        check(&[0x3eb3, 0x3333], F32, Big, f64::from(0.35f32));
        check(&[0x3333, 0x3eb3], F32, Little, f64::from(0.35f32));
        check(&[0xc2f6, 0xe979], F32, Big, f64::from(-123.456f32));
        check(&[0x0000, 0x0000], F32, Little, 0.0);
    }

    #[test]
    fn non_numbers_decode_as_such() {
        assert!(decode(&[0x7fc0, 0x0000], DataType::F32, WordOrder::Big).is_nan());
        assert_eq!(decode(&[0x0000, 0x7f80], DataType::F32, WordOrder::Little), f64::INFINITY);
    }

    fn order() -> impl Strategy<Value = WordOrder> {
        prop_oneof![Just(WordOrder::Big), Just(WordOrder::Little)]
    }

    proptest! {
        #[test]
        fn u16_round_trips(v: u16, o in order()) {
            prop_assert_eq!(decode(&encode(f64::from(v), DataType::U16, o), DataType::U16, o), f64::from(v));
        }

        #[test]
        fn i16_round_trips(v: i16, o in order()) {
            prop_assert_eq!(decode(&encode(f64::from(v), DataType::I16, o), DataType::I16, o), f64::from(v));
        }

        #[test]
        fn u32_round_trips(v: u32, o in order()) {
            prop_assert_eq!(decode(&encode(f64::from(v), DataType::U32, o), DataType::U32, o), f64::from(v));
        }

        #[test]
        fn i32_round_trips(v: i32, o in order()) {
            prop_assert_eq!(decode(&encode(f64::from(v), DataType::I32, o), DataType::I32, o), f64::from(v));
        }

        #[test]
        fn f32_round_trips(v in any::<f32>().prop_filter("NaN has no equal", |v| !v.is_nan()), o in order()) {
            prop_assert_eq!(decode(&encode(f64::from(v), DataType::F32, o), DataType::F32, o), f64::from(v));
        }

        #[test]
        fn the_two_word_orders_are_each_others_swap(bits: u32, ty in prop_oneof![Just(DataType::U32), Just(DataType::I32), Just(DataType::F32)]) {
            let big = [(bits >> 16) as u16, bits as u16];
            let little = [bits as u16, (bits >> 16) as u16];
            let (a, b) = (decode(&big, ty, WordOrder::Big), decode(&little, ty, WordOrder::Little));
            prop_assert!(a == b || (a.is_nan() && b.is_nan()));
        }
    }
}

mod batching {
    use super::*;

    /// `points` as (register, address, type); `expected` reads as (register, start, count,
    /// point indices).
    fn check(points: &[(RegisterKind, u16, DataType)], expected: &[(RegisterKind, u16, u16, &[usize])]) {
        let points: Vec<PointConfig> = points
            .iter()
            .enumerate()
            .map(|(i, &(kind, address, ty))| {
                point(&format!("p{i}"), kind, address, ty, Measure::Other(format!("v{i}")))
            })
            .collect();
        let expected: Vec<Read> = expected
            .iter()
            .map(|&(kind, start, count, points)| Read { kind, start, count, points: points.to_vec() })
            .collect();
        assert_eq!(plan_reads(&points), expected);
    }

    #[test]
    fn touching_points_share_a_read_and_gaps_split() {
        use DataType::*;
        use RegisterKind::*;
        check(&[(Holding, 0, F32)], &[(Holding, 0, 2, &[0])]);
        // Contiguous, given out of order.
        check(&[(Holding, 2, U16), (Holding, 0, F32), (Holding, 3, I32)], &[(Holding, 0, 5, &[1, 0, 2])]);
        // A one-register gap is not bridged.
        check(&[(Holding, 0, U16), (Holding, 2, U16)], &[(Holding, 0, 1, &[0]), (Holding, 2, 1, &[1])]);
        // Same addresses in the two tables are two reads.
        check(&[(Input, 0, U16), (Holding, 0, U16)], &[(Holding, 0, 1, &[1]), (Input, 0, 1, &[0])]);
        // Overlapping points (one register read as u16 and as part of a u32).
        check(&[(Input, 10, U32), (Input, 11, U16)], &[(Input, 10, 2, &[0, 1])]);
        // At the end of the address space.
        check(&[(Input, 65_534, F32)], &[(Input, 65_534, 2, &[0])]);
    }

    #[test]
    fn a_read_never_exceeds_125_registers() {
        let points: Vec<(RegisterKind, u16, DataType)> =
            (0..70).map(|i| (RegisterKind::Holding, i * 2, DataType::F32)).collect();
        let first: Vec<usize> = (0..62).collect();
        let second: Vec<usize> = (62..70).collect();
        check(&points, &[(RegisterKind::Holding, 0, 124, &first), (RegisterKind::Holding, 124, 16, &second)]);
    }

    #[test]
    fn decode_reads_scales_and_rejects_short_answers() {
        let mut pressure = point("p", RegisterKind::Holding, 0, DataType::U16, Measure::PressureMpa);
        pressure.scale = 0.001; // kPa register, MPa value
        let mut level = point("l", RegisterKind::Holding, 1, DataType::I16, Measure::LevelM);
        level.scale = 0.01;
        level.offset = 0.5;
        let points = vec![pressure, level];
        let reads = plan_reads(&points);
        let values = decode_reads(&points, &reads, &[vec![350, 420]]).unwrap();
        assert!((values[0] - 0.35).abs() < 1e-12 && (values[1] - 4.7).abs() < 1e-12, "{values:?}");
        let err = decode_reads(&points, &reads, &[vec![350]]).unwrap_err();
        assert!(err.contains("answered 1 registers"), "{err}");
    }
}

mod thresholds {
    use firegrid_protocol::WaterReading;

    use super::*;

    /// One input to the monitor: `Some(values)` for a poll that answered, `None` for a failed
    /// poll.
    type Step = Option<Vec<f64>>;

    /// Runs `steps` (at 1000 ms apart) and compares every condition change, as
    /// `(step index, condition, active, value)`.
    fn check(points: Vec<PointConfig>, steps: &[Step], expected: &[(usize, Condition, bool, Option<f64>)]) {
        let device = DeviceConfig {
            id: firegrid_protocol::DeviceId::new("wp-1").unwrap(),
            transport: Transport::Tcp { address: "127.0.0.1:502".into(), unit: 1 },
            poll_interval: std::time::Duration::from_secs(1),
            timeout: std::time::Duration::from_secs(1),
            max_backoff: std::time::Duration::from_secs(1),
            fault_after_failures: 3,
            points,
        };
        let mut monitor = DeviceMonitor::new(&device);
        let mut got = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let now = 1000 * i as u64;
            let events = match step {
                Some(values) => monitor.poll_ok(values, now).conditions,
                None => monitor.poll_failed(now),
            };
            for e in events {
                assert_eq!((e.device.as_str(), e.ts_ms), ("wp-1", now));
                got.push((i, e.condition, e.active, shown(e.value)));
            }
        }
        let expected: Vec<_> = expected.iter().map(|&(i, c, a, v)| (i, c, a, shown(v))).collect();
        assert_eq!(got, expected, "steps {steps:?}");
    }

    /// Values compared as text, so that a NaN equals a NaN.
    fn shown(value: Option<f64>) -> Option<String> {
        value.map(|v| v.to_string())
    }

    fn pressure(low: f64, deadband: f64) -> PointConfig {
        let mut p = point("pressure", RegisterKind::Holding, 0, DataType::F32, Measure::PressureMpa);
        p.low = Some(low);
        p.deadband = deadband;
        p
    }

    fn level(low: f64) -> PointConfig {
        let mut p = point("level", RegisterKind::Input, 0, DataType::U16, Measure::LevelM);
        p.low = Some(low);
        p
    }

    #[test]
    fn low_pressure_raises_once_and_clears_above_the_deadband() {
        use Condition::LowPressure;
        let v = |x: f64| Some(vec![x]);
        check(
            vec![pressure(0.15, 0.02)],
            &[v(0.30), v(0.149), v(0.10), v(0.16), v(0.169), v(0.17), v(0.16), v(0.14)],
            &[
                (1, LowPressure, true, Some(0.149)),
                (5, LowPressure, false, Some(0.17)),
                (7, LowPressure, true, Some(0.14)),
            ],
        );
        // Exactly at the threshold is not low; without a deadband it clears at the threshold.
        check(
            vec![pressure(0.15, 0.0)],
            &[v(0.15), v(0.1), v(0.15)],
            &[(1, LowPressure, true, Some(0.1)), (2, LowPressure, false, Some(0.15))],
        );
        // Hovering at the threshold: one raise, no flapping.
        check(
            vec![pressure(0.15, 0.05)],
            &[v(0.149), v(0.151), v(0.149), v(0.151), v(0.149)],
            &[(0, LowPressure, true, Some(0.149))],
        );
    }

    #[test]
    fn low_level_is_its_own_condition() {
        let v = |p: f64, l: f64| Some(vec![p, l]);
        check(
            vec![pressure(0.15, 0.0), level(2.0)],
            &[v(0.3, 5.0), v(0.3, 1.5), v(0.1, 1.5), v(0.3, 2.5)],
            &[
                (1, Condition::LowLevel, true, Some(1.5)),
                (2, Condition::LowPressure, true, Some(0.1)),
                (3, Condition::LowPressure, false, Some(0.3)),
                (3, Condition::LowLevel, false, Some(2.5)),
            ],
        );
    }

    #[test]
    fn sensor_fault_after_n_failed_polls_and_recovery() {
        use Condition::*;
        let ok = |x: f64| Some(vec![x]);
        check(
            vec![pressure(0.15, 0.0)],
            &[ok(0.3), None, None, None, None, ok(0.3), None, None, ok(0.3)],
            &[(3, SensorFault, true, None), (5, SensorFault, false, None)],
        );
        // A low condition survives an outage: nothing new is known about the pipe.
        check(
            vec![pressure(0.15, 0.0)],
            &[ok(0.1), None, None, None, ok(0.1), ok(0.2)],
            &[
                (0, LowPressure, true, Some(0.1)),
                (3, SensorFault, true, None),
                (4, SensorFault, false, None),
                (5, LowPressure, false, Some(0.2)),
            ],
        );
    }

    #[test]
    fn impossible_values_are_sensor_faults_and_judge_nothing() {
        use Condition::*;
        let ok = |x: f64| Some(vec![x]);
        check(
            vec![pressure(0.15, 0.0)],
            &[ok(0.3), ok(-0.5), ok(-0.7), ok(0.1), ok(f64::NAN), ok(12.0), ok(0.3)],
            &[
                (1, SensorFault, true, Some(-0.5)),
                (3, SensorFault, false, None),
                (3, LowPressure, true, Some(0.1)),
                (4, SensorFault, true, Some(f64::NAN)),
                (6, SensorFault, false, None),
                (6, LowPressure, false, Some(0.3)),
            ],
        );
    }

    #[test]
    fn the_reading_holds_only_possible_values() {
        let mut flow =
            point("flow", RegisterKind::Input, 4, DataType::F32, Measure::Other("flow_m3h".into()));
        flow.valid_range = Some([0.0, 500.0]);
        let device = DeviceConfig {
            id: firegrid_protocol::DeviceId::new("tank-3").unwrap(),
            transport: Transport::Tcp { address: "127.0.0.1:502".into(), unit: 1 },
            poll_interval: std::time::Duration::from_secs(1),
            timeout: std::time::Duration::from_secs(1),
            max_backoff: std::time::Duration::from_secs(1),
            fault_after_failures: 1,
            points: vec![
                level(1.0),
                flow,
                point("pump", RegisterKind::Input, 6, DataType::U16, Measure::Other("pump".into())),
            ],
        };
        let mut monitor = DeviceMonitor::new(&device);
        let outcome = monitor.poll_ok(&[3.5, 12.0, 1.0], 7);
        assert_eq!(outcome.reading.ts_ms, 7);
        assert_eq!(outcome.reading.water, Some(WaterReading { pressure_mpa: None, level_m: Some(3.5) }));
        assert_eq!(outcome.reading.other, vec![("flow_m3h".to_owned(), 12.0), ("pump".to_owned(), 1.0)]);
        let outcome = monitor.poll_ok(&[101.0, 600.0, 1.0], 8);
        assert_eq!(outcome.reading.water, None);
        assert_eq!(outcome.reading.other, vec![("pump".to_owned(), 1.0)]);
        assert_eq!(outcome.conditions.len(), 1);
        assert_eq!(
            (outcome.conditions[0].condition, outcome.conditions[0].value),
            (Condition::SensorFault, Some(101.0))
        );
        let nan = monitor.poll_ok(&[f64::NAN, 1.0, 1.0], 9);
        assert!(nan.conditions.is_empty(), "still in fault: {:?}", nan.conditions);
        assert!(monitor.is_active(Condition::SensorFault));
    }
}

/// Random poll sequences against a reference model of the conditions: the events the monitor
/// emits must be exactly the model's state changes, so a condition never raises twice
/// without a clear in between (no flapping duplicates) and never lingers.
mod model {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Step {
        Ok(f64),
        Failed,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            // Mostly around the 0.15 MPa threshold and its deadband, some impossible values.
            6 => (0.0..0.4f64).prop_map(Step::Ok),
            1 => prop_oneof![Just(-1.0), Just(11.0), Just(f64::NAN)].prop_map(Step::Ok),
            2 => Just(Step::Failed),
        ]
    }

    proptest! {
        #[test]
        fn events_are_the_models_state_changes(steps in prop::collection::vec(step(), 1..60)) {
            let (low, deadband, n) = (0.15, 0.02, 3);
            let mut p = point("pressure", RegisterKind::Holding, 0, DataType::F32, Measure::PressureMpa);
            p.low = Some(low);
            p.deadband = deadband;
            let device = DeviceConfig {
                id: firegrid_protocol::DeviceId::new("wp-1").unwrap(),
                transport: Transport::Tcp { address: "127.0.0.1:502".into(), unit: 1 },
                poll_interval: std::time::Duration::from_secs(1),
                timeout: std::time::Duration::from_secs(1),
                max_backoff: std::time::Duration::from_secs(1),
                fault_after_failures: n,
                points: vec![p],
            };
            let mut monitor = DeviceMonitor::new(&device);
            let (mut low_active, mut fault, mut failures) = (false, false, 0);
            for (i, step) in steps.iter().enumerate() {
                let (was_low, was_fault) = (low_active, fault);
                let events = match *step {
                    Step::Ok(v) => {
                        failures = 0;
                        let possible = (0.0..=10.0).contains(&v);
                        fault = !possible;
                        if possible {
                            low_active = v < if low_active { low + deadband } else { low };
                        }
                        monitor.poll_ok(&[v], i as u64).conditions
                    }
                    Step::Failed => {
                        failures += 1;
                        fault |= failures >= n;
                        monitor.poll_failed(i as u64)
                    }
                };
                let mut expected = Vec::new();
                if fault != was_fault {
                    expected.push((Condition::SensorFault, fault));
                }
                if low_active != was_low {
                    expected.push((Condition::LowPressure, low_active));
                }
                let got: Vec<_> = events.iter().map(|e| (e.condition, e.active)).collect();
                prop_assert_eq!(got, expected, "step {} {:?}", i, step);
                prop_assert_eq!(monitor.is_active(Condition::LowPressure), low_active);
                prop_assert_eq!(monitor.is_active(Condition::SensorFault), fault);
            }
        }
    }
}

mod config {
    use std::time::Duration;

    use super::*;

    /// Parses `toml` (one `[[devices]]` table or more); `Err` expects a message containing it.
    fn check(toml: &str, expected: Result<(), &str>) -> Option<ModbusConfig> {
        let parsed = ::toml::from_str::<ModbusConfig>(toml);
        match (parsed, expected) {
            (Ok(config), Ok(())) => Some(config),
            (Err(e), Err(part)) => {
                assert!(e.to_string().contains(part), "expected {part:?} in: {e}");
                None
            }
            (got, want) => panic!("expected {want:?}, got {got:?} for:\n{toml}"),
        }
    }

    const POINT: &str = r#"
        [[devices.points]]
        name = "pressure"
        register = "holding"
        address = 0
        type = "f32"
        measures = "pressure_mpa"
    "#;

    fn device(fields: &str) -> String {
        format!("[[devices]]\n{fields}\n{POINT}")
    }

    #[test]
    fn a_full_tcp_device_and_its_defaults() {
        let config = check(
            r#"
            [[devices]]
            id = "b12-riser"
            transport = "tcp"
            address = "192.0.2.10:502"
            poll_interval = "2s"
            timeout = "300ms"

            [[devices.points]]
            name = "pressure"
            register = "holding"
            address = 0
            type = "f32"
            word_order = "cdab"
            unit = "MPa"
            measures = "pressure_mpa"
            low = 0.15
            deadband = 0.02

            [[devices.points]]
            name = "pump"
            register = "input"
            address = 7
            type = "i16"
            scale = 0.1
            offset = -1.0
            measures = "pump_current_a"
            valid_range = [0.0, 50.0]
            "#,
            Ok(()),
        )
        .unwrap();
        let d = &config.devices[0];
        assert_eq!(d.id.as_str(), "b12-riser");
        assert_eq!(d.transport, Transport::Tcp { address: "192.0.2.10:502".into(), unit: 1 });
        assert_eq!((d.poll_interval, d.timeout), (Duration::from_secs(2), Duration::from_millis(300)));
        assert_eq!((d.max_backoff, d.fault_after_failures), (Duration::from_secs(60), 3));
        let p = &d.points[0];
        assert_eq!(
            (p.word_order, p.low, p.deadband, p.range()),
            (WordOrder::Little, Some(0.15), 0.02, Some((0.0, 10.0)))
        );
        let q = &d.points[1];
        assert_eq!(
            (q.data_type, q.scale, q.offset, q.word_order),
            (DataType::I16, 0.1, -1.0, WordOrder::Big)
        );
        assert_eq!(
            (q.measures.clone(), q.range()),
            (Measure::Other("pump_current_a".into()), Some((0.0, 50.0)))
        );
    }

    #[test]
    fn rtu_devices_get_the_serial_line_defaults() {
        let config =
            check(&device("id = \"tank-1\"\ntransport = \"rtu\"\npath = \"/dev/ttyUSB0\"\nunit = 7"), Ok(()))
                .unwrap();
        assert_eq!(
            config.devices[0].transport,
            Transport::Rtu {
                path: "/dev/ttyUSB0".into(),
                baud: 9600,
                parity: Parity::Even,
                stop_bits: 1,
                unit: 7
            }
        );
        let config = check(
            &device("id = \"tank-1\"\ntransport = \"rtu\"\npath = \"/dev/ttyS1\"\nunit = 7\nparity = \"none\"\nbaud = 19200"),
            Ok(()),
        )
        .unwrap();
        assert!(matches!(config.devices[0].transport, Transport::Rtu { stop_bits: 2, baud: 19_200, .. }));
    }

    #[test]
    fn mistakes_are_named() {
        let tcp = "id = \"d1\"\ntransport = \"tcp\"\naddress = \"h:502\"";
        check(&device(&format!("{tcp}\npoll_intervall = \"1s\"")), Err("poll_intervall"));
        check(&device("id = \"a b\"\ntransport = \"tcp\"\naddress = \"h:502\""), Err("device id \"a b\""));
        check(&device("id = \"d1\"\ntransport = \"tcp\""), Err("needs `address`"));
        check(&device("id = \"d1\"\ntransport = \"tcp\"\naddress = \"h\""), Err("not `host:port`"));
        check(&device(&format!("{tcp}\nbaud = 9600")), Err("`baud` does not apply"));
        check(&device("id = \"d1\"\ntransport = \"rtu\"\npath = \"/dev/x\""), Err("needs `unit`"));
        check(&device("id = \"d1\"\ntransport = \"rtu\"\npath = \"/dev/x\"\nunit = 0"), Err("slave address"));
        check(&device(&format!("{tcp}\ntimeout = \"0s\"")), Err("must be positive"));
        check(&device(&format!("{tcp}\nfault_after_failures = 0")), Err("at least 1"));
        check(&format!("{}\n{}", device(tcp), device(tcp)), Err("configured twice"));
        let rtu =
            |id: &str| device(&format!("id = \"{id}\"\ntransport = \"rtu\"\npath = \"/dev/x\"\nunit = 1"));
        check(&format!("{}\n{}", rtu("a"), rtu("b")), Err("already used"));
        check(&format!("[[devices]]\n{tcp}\npoints = []"), Err("no points"));
        check(&format!("{}\n{POINT}", device(tcp)), Err("name used twice"));
        let with_point = |extra: &str| {
            format!(
                "[[devices]]\n{tcp}\n[[devices.points]]\nname = \"x\"\nregister = \"input\"\naddress = 0\ntype = \"u16\"\n{extra}"
            )
        };
        check(&with_point("measures = \"level_m\"\nword_ordr = \"big\""), Err("word_ordr"));
        check(&with_point("measures = \"flow\"\nlow = 1.0"), Err("`low` applies only"));
        check(&with_point("measures = \"flow rate\""), Err("measures \"flow rate\""));
        check(&with_point("measures = \"level_m\"\nscale = 0.0"), Err("scale must be"));
        check(&with_point("measures = \"level_m\"\ndeadband = -1.0"), Err("deadband"));
        check(&with_point("measures = \"level_m\"\nvalid_range = [5.0, 1.0]"), Err("min < max"));
        check(
            &format!(
                "[[devices]]\n{tcp}\n[[devices.points]]\nname = \"x\"\nregister = \"input\"\naddress = 65535\ntype = \"u32\"\nmeasures = \"level_m\""
            ),
            Err("past address 65535"),
        );
        check(
            &format!("{}\n{}", device(tcp), POINT.replace("\"pressure\"", "\"p2\"")),
            Err("at most one pressure_mpa"),
        );
        check(
            &format!(
                "[[devices]]\n{tcp}\n[[devices.points]]\nname = \"x\"\nregister = \"input\"\naddress = 0\ntype = \"f64\"\nmeasures = \"level_m\""
            ),
            Err("unknown variant `f64`"),
        );
    }
}
