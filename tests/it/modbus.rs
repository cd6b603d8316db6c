//! The Modbus source against real servers: an in-process tokio-modbus TCP server (whose
//! registers the test changes at will) and the pymodbus simulator, an independent
//! implementation started as a child process. Last, the simulator's water sensors
//! (`firegrid_sim::WaterSensors`) polled with the `[modbus]` section they write.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firegrid_gateway::sources::modbus::{
    Condition, DataType, DeviceConfig, DeviceStats, Measure, ModbusConfig, ModbusEvent, ModbusStats, Parity,
    PointConfig, RegisterKind, Transport, WordOrder, encode, run, run_device,
};
use firegrid_protocol::DeviceId;
use firegrid_tests::{Pymodbus, SimRegisters, SimValue};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_util::sync::CancellationToken;

// ---- An in-process tokio-modbus server. ------------------------------------------------

/// Register contents shared between the test and its server.
#[derive(Clone, Default)]
struct Registers(Arc<Mutex<HashMap<(RegisterKind, u16), u16>>>);

impl Registers {
    fn set(&self, kind: RegisterKind, address: u16, data_type: DataType, order: WordOrder, value: f64) {
        let mut map = self.0.lock().unwrap();
        for (i, word) in encode(value, data_type, order).into_iter().enumerate() {
            map.insert((kind, address + i as u16), word);
        }
    }

    fn read(&self, kind: RegisterKind, address: u16, count: u16) -> Result<Vec<u16>, ExceptionCode> {
        let map = self.0.lock().unwrap();
        (address..address + count)
            .map(|a| map.get(&(kind, a)).copied().ok_or(ExceptionCode::IllegalDataAddress))
            .collect()
    }
}

struct Device(Registers);

impl tokio_modbus::server::Service for Device {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: SlaveRequest<'static>) -> Self::Future {
        std::future::ready(match req.request {
            Request::ReadHoldingRegisters(a, n) => {
                self.0.read(RegisterKind::Holding, a, n).map(Response::ReadHoldingRegisters)
            }
            Request::ReadInputRegisters(a, n) => {
                self.0.read(RegisterKind::Input, a, n).map(Response::ReadInputRegisters)
            }
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

/// A tokio-modbus TCP server on a free loopback port, serving `registers` until dropped.
struct InProcessServer {
    address: SocketAddr,
    stop: CancellationToken,
}

impl InProcessServer {
    async fn start(registers: Registers) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let cancelled = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            let on_connected = move |stream, peer| {
                let registers = registers.clone();
                async move { accept_tcp_connection(stream, peer, |_| Ok(Some(Device(registers.clone())))) }
            };
            Server::new(listener).serve_until(&on_connected, |_| {}, cancelled).await.unwrap();
        });
        InProcessServer { address, stop }
    }
}

impl Drop for InProcessServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

// ---- Helpers. ---------------------------------------------------------------------------

fn point(
    name: &str,
    register: RegisterKind,
    address: u16,
    data_type: DataType,
    order: WordOrder,
) -> PointConfig {
    PointConfig {
        name: name.into(),
        register,
        address,
        data_type,
        word_order: order,
        scale: 1.0,
        offset: 0.0,
        unit: String::new(),
        measures: Measure::Other(name.into()),
        low: None,
        deadband: 0.0,
        valid_range: None,
    }
}

fn device(id: &str, address: String, points: Vec<PointConfig>) -> DeviceConfig {
    DeviceConfig {
        id: DeviceId::new(id).unwrap(),
        transport: Transport::Tcp { address, unit: 1 },
        poll_interval: Duration::from_millis(100),
        timeout: Duration::from_millis(300),
        max_backoff: Duration::from_millis(400),
        fault_after_failures: 3,
        points,
    }
}

/// A pressure point (f32, holding 0) raising low pressure below 0.15 MPa with a 0.02 MPa
/// deadband.
fn pressure_point() -> PointConfig {
    let mut p = point("pressure", RegisterKind::Holding, 0, DataType::F32, WordOrder::Big);
    p.measures = Measure::PressureMpa;
    p.low = Some(0.15);
    p.deadband = 0.02;
    p
}

/// Polls `device` in a task; returns the event receiver, its counters and the stop token.
fn poll(device: DeviceConfig) -> (mpsc::Receiver<ModbusEvent>, Arc<DeviceStats>, CancellationToken) {
    let (tx, rx) = mpsc::channel(1024);
    let stats = Arc::new(DeviceStats::default());
    let stop = CancellationToken::new();
    tokio::spawn(run_device(device, tx, stats.clone(), stop.clone()));
    (rx, stats, stop)
}

/// Receives events into `seen` until `done(seen)` holds; panics with what was seen after
/// `within`.
async fn until(
    rx: &mut mpsc::Receiver<ModbusEvent>,
    seen: &mut Vec<ModbusEvent>,
    within: Duration,
    what: &str,
    done: impl Fn(&[ModbusEvent]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + within;
    while !done(seen) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(event)) => seen.push(event),
            Ok(None) => panic!("{what}: the source stopped; saw {seen:#?}"),
            Err(_) => panic!("{what}: not within {within:?}; saw {seen:#?}"),
        }
    }
}

fn conditions(events: &[ModbusEvent]) -> Vec<(Condition, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            ModbusEvent::Condition(c) => Some((c.condition, c.active)),
            _ => None,
        })
        .collect()
}

fn readings(events: &[ModbusEvent]) -> usize {
    events.iter().filter(|e| matches!(e, ModbusEvent::Reading(_))).count()
}

/// Runs blocking harness calls (server start/stop) off the runtime's worker threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

fn with_timeout<F: Future>(f: F) -> tokio::time::Timeout<F> {
    tokio::time::timeout(Duration::from_secs(60), f)
}

/// Every data type and word order at once, as `(name, register, address, type, order,
/// value)`: each is a point and a value a server holds.
const LAYOUT: &[(&str, RegisterKind, u16, DataType, WordOrder, f64)] = &[
    ("h_u16", RegisterKind::Holding, 0, DataType::U16, WordOrder::Big, 54_321.0),
    ("h_i16", RegisterKind::Holding, 1, DataType::I16, WordOrder::Big, -1_234.0),
    ("h_u32_abcd", RegisterKind::Holding, 2, DataType::U32, WordOrder::Big, 3_000_000_001.0),
    ("h_u32_cdab", RegisterKind::Holding, 4, DataType::U32, WordOrder::Little, 3_000_000_001.0),
    ("h_i32_abcd", RegisterKind::Holding, 6, DataType::I32, WordOrder::Big, -2_000_000_003.0),
    ("h_i32_cdab", RegisterKind::Holding, 8, DataType::I32, WordOrder::Little, -2_000_000_003.0),
    ("h_f32_abcd", RegisterKind::Holding, 10, DataType::F32, WordOrder::Big, -123.456),
    ("h_f32_cdab", RegisterKind::Holding, 12, DataType::F32, WordOrder::Little, -123.456),
    // A gap: a second read.
    ("h_far_f32", RegisterKind::Holding, 40, DataType::F32, WordOrder::Little, 0.35),
    ("i_u16", RegisterKind::Input, 0, DataType::U16, WordOrder::Big, 7.0),
    ("i_i16", RegisterKind::Input, 1, DataType::I16, WordOrder::Big, -32_768.0),
    ("i_u32_cdab", RegisterKind::Input, 2, DataType::U32, WordOrder::Little, 65_538.0),
    ("i_i32_abcd", RegisterKind::Input, 4, DataType::I32, WordOrder::Big, -1.0),
    ("i_f32_cdab", RegisterKind::Input, 6, DataType::F32, WordOrder::Little, 1.0e6),
    ("i_f32_abcd", RegisterKind::Input, 8, DataType::F32, WordOrder::Big, 2.5e-3),
];

fn layout_points() -> Vec<PointConfig> {
    LAYOUT.iter().map(|&(name, kind, address, ty, order, _)| point(name, kind, address, ty, order)).collect()
}

/// Polls a server holding [`LAYOUT`] once and checks every value, as f32 where the type is.
async fn check_layout(address: String) {
    let (mut rx, stats, stop) = poll(device("layout", address, layout_points()));
    let mut seen = Vec::new();
    until(&mut rx, &mut seen, Duration::from_secs(10), "a reading", |s| readings(s) > 0).await;
    stop.cancel();
    let Some(ModbusEvent::Reading(reading)) = seen.iter().find(|e| matches!(e, ModbusEvent::Reading(_)))
    else {
        unreachable!()
    };
    assert_eq!(reading.device.as_str(), "layout");
    assert_eq!(reading.water, None);
    let got: HashMap<&str, f64> = reading.other.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    assert_eq!(got.len(), LAYOUT.len(), "{got:?}");
    for &(name, _, _, ty, _, value) in LAYOUT {
        let expected = if ty == DataType::F32 { f64::from(value as f32) } else { value };
        assert_eq!(got[name], expected, "{name}");
    }
    assert_eq!(stats.polls_ok.load(Ordering::Relaxed), 1);
    assert_eq!(stats.polls_failed.load(Ordering::Relaxed), 0);
}

// ---- Tests. -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_modbus_server_every_data_type_and_word_order() {
    let registers = Registers::default();
    for &(_, kind, address, ty, order, value) in LAYOUT {
        registers.set(kind, address, ty, order, value);
    }
    let server = InProcessServer::start(registers).await;
    with_timeout(check_layout(server.address.to_string())).await.unwrap();
}

fn sim_values(kind: RegisterKind) -> Vec<SimValue> {
    LAYOUT
        .iter()
        .filter(|l| l.1 == kind)
        .map(|&(_, _, address, ty, order, value)| SimValue {
            address,
            data_type: match ty {
                DataType::U16 => "u16",
                DataType::I16 => "i16",
                DataType::U32 => "u32",
                DataType::I32 => "i32",
                DataType::F32 => "f32",
            },
            word_order: if order == WordOrder::Big { "big" } else { "little" },
            value,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymodbus_every_data_type_and_word_order() {
    let sim = blocking(|| {
        Pymodbus::start(SimRegisters {
            unit: 1,
            holding: sim_values(RegisterKind::Holding),
            input: sim_values(RegisterKind::Input),
        })
    })
    .await
    .unwrap();
    with_timeout(check_layout(sim.address())).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pressure_drop_raises_low_pressure_once_and_recovery_clears_it() {
    let registers = Registers::default();
    let set = |mpa: f64| registers.set(RegisterKind::Holding, 0, DataType::F32, WordOrder::Big, mpa);
    set(0.40);
    let server = InProcessServer::start(registers.clone()).await;
    let (mut rx, _stats, stop) = poll(device("riser-1", server.address.to_string(), vec![pressure_point()]));
    let mut seen = Vec::new();
    let test = async {
        until(&mut rx, &mut seen, Duration::from_secs(5), "normal readings", |s| readings(s) >= 2).await;
        set(0.10);
        until(&mut rx, &mut seen, Duration::from_secs(5), "low pressure", |s| !conditions(s).is_empty())
            .await;
        // Several more polls below the threshold, then inside the deadband: no new event.
        let before = readings(&seen);
        until(&mut rx, &mut seen, Duration::from_secs(5), "polls while low", |s| readings(s) >= before + 3)
            .await;
        set(0.16);
        let before = readings(&seen);
        until(&mut rx, &mut seen, Duration::from_secs(5), "polls in the deadband", |s| {
            readings(s) >= before + 3
        })
        .await;
        assert_eq!(conditions(&seen), [(Condition::LowPressure, true)]);
        set(0.40);
        until(&mut rx, &mut seen, Duration::from_secs(5), "recovery", |s| conditions(s).len() >= 2).await;
        let before = readings(&seen);
        until(&mut rx, &mut seen, Duration::from_secs(5), "polls after recovery", |s| {
            readings(s) >= before + 2
        })
        .await;
    };
    with_timeout(test).await.unwrap();
    stop.cancel();
    assert_eq!(conditions(&seen), [(Condition::LowPressure, true), (Condition::LowPressure, false)]);
    let raised = seen.iter().find_map(|e| match e {
        ModbusEvent::Condition(c) if c.active => Some(c.clone()),
        _ => None,
    });
    let raised = raised.unwrap();
    assert_eq!((raised.device.as_str(), raised.value), ("riser-1", Some(f64::from(0.10f32))));
    let pressures: Vec<f32> = seen
        .iter()
        .filter_map(|e| match e {
            ModbusEvent::Reading(r) => r.water.as_ref()?.pressure_mpa,
            _ => None,
        })
        .collect();
    assert!(
        pressures.contains(&0.10) && pressures.contains(&0.16) && pressures.last() == Some(&0.40),
        "{pressures:?}"
    );
    assert!(!seen.iter().any(|e| matches!(e, ModbusEvent::PollFailed { .. })), "{seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymodbus_stopped_mid_test_faults_after_n_failures_and_recovers_after_restart() {
    let holding = vec![SimValue { address: 0, data_type: "f32", word_order: "big", value: 0.35 }];
    let sim =
        blocking(|| Pymodbus::start(SimRegisters { unit: 1, holding, input: Vec::new() })).await.unwrap();
    let sim = Arc::new(Mutex::new(sim));
    let address = sim.lock().unwrap().address();
    let (mut rx, stats, stop) = poll(device("riser-2", address, vec![pressure_point()]));
    let mut seen = Vec::new();
    let test = async {
        until(&mut rx, &mut seen, Duration::from_secs(10), "a reading", |s| readings(s) >= 2).await;
        let s = sim.clone();
        blocking(move || s.lock().unwrap().stop()).await.unwrap();
        let stopped_at = seen.len();
        until(&mut rx, &mut seen, Duration::from_secs(10), "sensor fault", |s| {
            conditions(&s[stopped_at..]).contains(&(Condition::SensorFault, true))
        })
        .await;
        // Exactly `fault_after_failures` failed polls before the fault, and no reading.
        let failed: Vec<&ModbusEvent> =
            seen[stopped_at..].iter().filter(|e| matches!(e, ModbusEvent::PollFailed { .. })).collect();
        assert_eq!(failed.len(), 3, "{:#?}", &seen[stopped_at..]);
        assert_eq!(readings(&seen[stopped_at..]), 0);
        // A few more failed attempts (with growing waits) before the server comes back.
        until(&mut rx, &mut seen, Duration::from_secs(10), "more failures", |s| {
            s[stopped_at..].iter().filter(|e| matches!(e, ModbusEvent::PollFailed { .. })).count() >= 5
        })
        .await;
        let s = sim.clone();
        blocking(move || s.lock().unwrap().restart()).await.unwrap();
        let restarted_at = seen.len();
        until(&mut rx, &mut seen, Duration::from_secs(10), "recovery", |s| {
            conditions(&s[restarted_at..]).contains(&(Condition::SensorFault, false))
        })
        .await;
    };
    with_timeout(test).await.unwrap();
    stop.cancel();
    assert_eq!(conditions(&seen), [(Condition::SensorFault, true), (Condition::SensorFault, false)]);
    assert!(stats.connects.load(Ordering::Relaxed) >= 2, "{stats:?}");
    assert!(stats.polls_failed.load(Ordering::Relaxed) >= 5, "{stats:?}");
    assert_eq!(stats.failing.load(Ordering::Relaxed), 0);
    let last_reading = seen.iter().rev().find_map(|e| match e {
        ModbusEvent::Reading(r) => r.water.clone(),
        _ => None,
    });
    assert_eq!(last_reading.and_then(|w| w.pressure_mpa), Some(0.35));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymodbus_holding_register_written_while_running_raises_low_pressure() {
    let holding = vec![SimValue { address: 0, data_type: "f32", word_order: "big", value: 0.35 }];
    let sim =
        blocking(|| Pymodbus::start(SimRegisters { unit: 1, holding, input: Vec::new() })).await.unwrap();
    let (mut rx, _stats, stop) = poll(device("riser-3", sim.address(), vec![pressure_point()]));
    let mut seen = Vec::new();
    let write = |mpa: f32| {
        let address: SocketAddr = sim.address().parse().unwrap();
        async move {
            use tokio_modbus::client::Writer;
            let mut ctx =
                tokio_modbus::client::tcp::connect_slave(address, tokio_modbus::Slave(1)).await.unwrap();
            let words = encode(f64::from(mpa), DataType::F32, WordOrder::Big);
            ctx.write_multiple_registers(0, &words).await.unwrap().unwrap();
        }
    };
    let test = async {
        until(&mut rx, &mut seen, Duration::from_secs(10), "a reading", |s| readings(s) >= 1).await;
        write(0.05).await;
        until(&mut rx, &mut seen, Duration::from_secs(5), "low pressure", |s| !conditions(s).is_empty())
            .await;
        write(0.30).await;
        until(&mut rx, &mut seen, Duration::from_secs(5), "recovery", |s| conditions(s).len() >= 2).await;
    };
    with_timeout(test).await.unwrap();
    stop.cancel();
    assert_eq!(conditions(&seen), [(Condition::LowPressure, true), (Condition::LowPressure, false)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_never_answers_times_out_without_stalling_the_others() {
    // Accepts connections and never says a word: the hung gateway or half-dead PLC that
    // tokio-modbus alone would wait on forever.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_address = silent.local_addr().unwrap().to_string();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = silent.accept().await {
            keep.lock().unwrap().push(socket);
        }
    });
    let registers = Registers::default();
    registers.set(RegisterKind::Holding, 0, DataType::F32, WordOrder::Big, 0.35);
    let server = InProcessServer::start(registers).await;

    let mut hung = device("hung", silent_address, vec![pressure_point()]);
    hung.timeout = Duration::from_millis(500);
    let healthy = device("healthy", server.address.to_string(), vec![pressure_point()]);
    let config = ModbusConfig { devices: vec![hung, healthy] };
    let stats = Arc::new(ModbusStats::new(&config));
    let (tx, mut rx) = mpsc::channel(1024);
    let stop = CancellationToken::new();
    let source = tokio::spawn(run(config, tx, stats.clone(), stop.clone()));

    let mut seen = Vec::new();
    let of = |device: &'static str| {
        move |e: &ModbusEvent| match e {
            ModbusEvent::Reading(r) => r.device.as_str() == device,
            ModbusEvent::Condition(c) => c.device.as_str() == device,
            ModbusEvent::PollFailed { device: d, .. } => d.as_str() == device,
        }
    };
    let test = until(&mut rx, &mut seen, Duration::from_secs(20), "the hung device in sensor fault", |s| {
        s.iter().filter(|e| of("hung")(e)).any(
            |e| matches!(e, ModbusEvent::Condition(c) if c.condition == Condition::SensorFault && c.active),
        )
    });
    with_timeout(test).await.unwrap();
    stop.cancel();
    with_timeout(source).await.unwrap().unwrap();

    let hung_failures: Vec<&String> = seen
        .iter()
        .filter_map(|e| match e {
            ModbusEvent::PollFailed { device, error, .. } if device.as_str() == "hung" => Some(error),
            _ => None,
        })
        .collect();
    assert_eq!(hung_failures.len(), 3, "{seen:#?}");
    assert!(hung_failures.iter().all(|e| e.contains("timed out after 500ms")), "{hung_failures:?}");
    // Meanwhile the healthy device kept being polled, untouched by the hung one: between any
    // two of the hung device's 500 ms timeouts (and backoff waits) its 100 ms poller read
    // again. Had it waited behind the hung device, no reading would fall between two of the
    // hung device's failures. Asserted as an order of events, not as a rate over wall-clock
    // time, which a loaded machine would blur.
    let failures_at: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, e)| of("hung")(e) && matches!(e, ModbusEvent::PollFailed { .. }))
        .map(|(i, _)| i)
        .collect();
    for pair in failures_at.windows(2) {
        let between = seen[pair[0]..pair[1]]
            .iter()
            .filter(|e| of("healthy")(e) && matches!(e, ModbusEvent::Reading(_)))
            .count();
        assert!(between >= 1, "no healthy reading between two failures of the hung device: {seen:#?}");
    }
    let healthy_readings =
        seen.iter().filter(|e| of("healthy")(e) && matches!(e, ModbusEvent::Reading(_))).count();
    assert!(!seen.iter().any(|e| of("healthy")(e) && !matches!(e, ModbusEvent::Reading(_))), "{seen:#?}");
    let hung_stats = stats.device("hung").unwrap();
    assert_eq!(hung_stats.polls_ok.load(Ordering::Relaxed), 0);
    assert_eq!(hung_stats.polls_failed.load(Ordering::Relaxed), 3);
    assert_eq!(hung_stats.failing.load(Ordering::Relaxed), 1);
    assert!(stats.device("healthy").unwrap().polls_ok.load(Ordering::Relaxed) >= healthy_readings as u64);
    assert!(!held.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_over_a_pseudo_terminal() {
    use tokio_serial::SerialPort;
    // A pseudo-terminal pair is the serial line: the tokio-modbus RTU server owns the master
    // side, the source opens the slave side by its path as it would `/dev/ttyUSB0`. The
    // test keeps its own handle on the slave open, because the master reads EIO (and the
    // server stops) whenever no slave handle is open.
    let (master, slave) = tokio_serial::SerialStream::pair().unwrap();
    let path = slave.name().unwrap();
    let registers = Registers::default();
    for &(_, kind, address, ty, order, value) in LAYOUT {
        registers.set(kind, address, ty, order, value);
    }
    let stop_server = CancellationToken::new();
    let server = tokio_modbus::server::rtu::Server::new(master);
    tokio::spawn(server.serve_until(Device(registers), stop_server.clone().cancelled_owned()));

    let mut rtu = device("tank-rtu", String::new(), layout_points());
    rtu.transport = Transport::Rtu { path, baud: 19_200, parity: Parity::Even, stop_bits: 1, unit: 7 };
    let (mut rx, stats, stop) = poll(rtu);
    let mut seen = Vec::new();
    with_timeout(until(&mut rx, &mut seen, Duration::from_secs(10), "an RTU reading", |s| readings(s) > 0))
        .await
        .unwrap();
    stop.cancel();
    stop_server.cancel();
    drop(slave);
    let Some(ModbusEvent::Reading(reading)) = seen.iter().find(|e| matches!(e, ModbusEvent::Reading(_)))
    else {
        unreachable!()
    };
    let got: HashMap<&str, f64> = reading.other.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    for &(name, _, _, ty, _, value) in LAYOUT {
        let expected = if ty == DataType::F32 { f64::from(value as f32) } else { value };
        assert_eq!(got[name], expected, "{name}");
    }
    assert_eq!(stats.connects.load(Ordering::Relaxed), 1);
}

// ---- The simulator's water sensors, polled as the section it writes says. ---------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_water_sensors_raise_low_pressure_and_low_level_only_during_their_drops() {
    use firegrid_gateway::config::Config;
    use firegrid_sim::{Scenario, Village, VillageParams, WaterSensors};

    let params = VillageParams {
        buildings: 20,
        detectors: 20,
        camera_channels: 0,
        water_sensors: 4,
        ..VillageParams::default()
    };
    let village = Village::generate(&params, 3).unwrap();
    // ws-000 and ws-002 are pressure transmitters, ws-001 and ws-003 tank level sensors.
    let scenario = Scenario::from_toml(
        r#"
[[water]]
device = "ws-000"
at = "30s"
value = 0.05
duration = "1m"

[[water]]
device = "ws-001"
at = "45s"
value = 0.4
duration = "1m"
"#,
    )
    .unwrap();
    // A simulated minute per real second: the gateway polls every 100 ms, 6 simulated s.
    let sensors = WaterSensors::start(&village, &scenario, 60.0).unwrap();

    // The section appended to a gateway configuration, as the demo writes it, loaded as the
    // gateway loads its file.
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry.csv");
    std::fs::write(&registry, village.registry_csv()).unwrap();
    let path = dir.path().join("firegrid.toml");
    let text = format!(
        "http_listen = \"127.0.0.1:0\"\n\n[registry]\ncsv = {:?}\n\n{}",
        registry.display().to_string(),
        sensors.gateway_modbus_toml()
    );
    std::fs::write(&path, text).unwrap();
    let config = Config::load(Some(&path), std::iter::empty()).unwrap();
    assert_eq!(config.registry.csv.as_deref(), Some(registry.as_path()));
    let modbus = config.modbus.expect("a [modbus] section");
    let ids: Vec<String> = modbus.devices.iter().map(|d| d.id.as_str().to_owned()).collect();
    assert_eq!(ids, ["ws-000", "ws-001", "ws-002", "ws-003"]);
    let registered: Vec<&str> = village
        .devices
        .iter()
        .filter(|d| d.kind == firegrid_sim::village::Kind::Water)
        .map(|d| d.id.as_str())
        .collect();
    assert_eq!(ids, registered);
    assert!(modbus.devices.iter().all(|d| d.poll_interval == Duration::from_millis(100)));

    let stats = Arc::new(ModbusStats::new(&modbus));
    let (tx, mut rx) = mpsc::channel(1024);
    let stop = CancellationToken::new();
    let source = tokio::spawn(run(modbus, tx, stats.clone(), stop.clone()));

    // Every event with the simulated time at which it arrived, until both drops are over
    // and a few more polls have passed.
    let mut seen: Vec<(u64, ModbusEvent)> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while sensors.simulated_ms() < 135_000 {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(event)) => seen.push((sensors.simulated_ms(), event)),
            Ok(None) => panic!("the source stopped; saw {seen:#?}"),
            Err(_) => panic!("135 simulated s not within 30 s; saw {seen:#?}"),
        }
    }
    let changes = |device: &str| -> Vec<(u64, Condition, bool)> {
        seen.iter()
            .filter_map(|(t, e)| match e {
                ModbusEvent::Condition(c) if c.device.as_str() == device => Some((*t, c.condition, c.active)),
                _ => None,
            })
            .collect()
    };
    let values = |device: &str, of: fn(&firegrid_protocol::WaterReading) -> Option<f32>| -> Vec<f32> {
        seen.iter()
            .filter_map(|(_, e)| match e {
                ModbusEvent::Reading(r) if r.device.as_str() == device => r.water.as_ref().and_then(of),
                _ => None,
            })
            .collect()
    };
    assert!(!seen.iter().any(|(_, e)| matches!(e, ModbusEvent::PollFailed { .. })), "{seen:#?}");

    // Raised once the drop has begun (never before: the sensor read normal until then), and
    // within four polls; cleared once it is over.
    let pressure = changes("ws-000");
    let kinds = |c: &[(u64, Condition, bool)]| c.iter().map(|&(_, k, a)| (k, a)).collect::<Vec<_>>();
    assert_eq!(
        kinds(&pressure),
        [(Condition::LowPressure, true), (Condition::LowPressure, false)],
        "{seen:#?}"
    );
    assert!((30_000..54_000).contains(&pressure[0].0), "{pressure:?}");
    assert!((90_000..114_000).contains(&pressure[1].0), "{pressure:?}");
    let level = changes("ws-001");
    assert_eq!(kinds(&level), [(Condition::LowLevel, true), (Condition::LowLevel, false)], "{seen:#?}");
    assert!((45_000..69_000).contains(&level[0].0), "{level:?}");
    assert!((105_000..129_000).contains(&level[1].0), "{level:?}");
    // The dropped values themselves reached the gateway, scaled to MPa and m.
    assert!(values("ws-000", |w| w.pressure_mpa).iter().any(|v| (v - 0.05).abs() < 1e-6), "{seen:#?}");
    assert!(values("ws-001", |w| w.level_m).contains(&0.4), "{seen:#?}");

    // The other two read normal values with noise the whole time, and raise nothing.
    assert!(changes("ws-002").is_empty() && changes("ws-003").is_empty(), "{seen:#?}");
    let normal_pressure = values("ws-002", |w| w.pressure_mpa);
    let normal_level = values("ws-003", |w| w.level_m);
    assert!(normal_pressure.len() >= 10 && normal_level.len() >= 10, "{seen:#?}");
    assert!(normal_pressure.iter().all(|v| (0.345..=0.355).contains(v)), "{normal_pressure:?}");
    assert!(normal_level.iter().all(|v| (1.99..=2.01).contains(v)), "{normal_level:?}");
    let distinct = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<std::collections::HashSet<_>>().len();
    assert!(distinct(&normal_pressure) > 1 && distinct(&normal_level) > 1, "no noise");
    assert!(values("ws-000", |w| w.level_m).is_empty() && values("ws-001", |w| w.pressure_mpa).is_empty());

    // Stopped, the servers close their connections and refuse new ones: every sensor goes
    // into sensor fault.
    sensors.stop().await;
    let stopped_at = seen.len();
    let faulted = |seen: &[(u64, ModbusEvent)]| {
        ids.iter()
            .filter(|id| {
                seen[stopped_at..].iter().any(|(_, e)| {
                    matches!(e, ModbusEvent::Condition(c)
                        if c.device.as_str() == id.as_str() && c.condition == Condition::SensorFault && c.active)
                })
            })
            .count()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while faulted(&seen) < ids.len() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(event)) => seen.push((0, event)),
            Ok(None) => panic!("the source stopped; saw {seen:#?}"),
            Err(_) => panic!("not every sensor in fault within 15 s; saw {:#?}", &seen[stopped_at..]),
        }
    }
    stop.cancel();
    with_timeout(source).await.unwrap().unwrap();
    for id in &ids {
        assert!(stats.device(id).unwrap().polls_failed.load(Ordering::Relaxed) >= 3, "{id}");
    }
}
