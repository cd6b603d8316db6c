//! Simulated water sensors: the sprinkler-main pressure transmitters and fire water tank
//! level sensors of a village, on an RS-485 bus bridged to the network by a Modbus TCP
//! gateway in the pump room. [`WaterSensors`] is that gateway: one Modbus TCP server on a
//! free loopback port that answers for every water sensor under its own unit id, and writes
//! the `[modbus]` section with which the firegrid gateway polls them
//! ([`WaterSensors::gateway_modbus_toml`]).
//!
//! Which sensor is which: the first, third, fifth ... water sensor of the village
//! (`ws-000`, `ws-002`, ... in a generated one) is a pressure transmitter, the others are
//! tank level sensors ([`Measure::of`]). Unit ids are 1, 2, 3 ... in village order; a
//! Modbus address has room for 247 devices, so sensor 248 starts a second server, like a
//! second bus.
//!
//! Register layout, holding registers (function code 3) only:
//!
//! | Sensor               | Registers | Type                   | Raw unit | Gateway point                           |
//! |----------------------|-----------|------------------------|----------|-----------------------------------------|
//! | pressure transmitter | 0–1       | `f32`, high word first | kPa      | `pressure`: × 0.001 → MPa, low 0.15 MPa |
//! | tank level sensor    | 0         | `u16`                  | cm       | `level`: × 0.01 → m, low 1.2 m          |
//!
//! Any other register answers "illegal data address", any other function "illegal
//! function", and a unit id without a sensor "gateway target device failed to respond"
//! (exception 0x0B), as a real TCP-to-RS-485 gateway does for a silent serial address.
//!
//! A sensor reads its normal value with a little noise ([`value_at`], pure and deterministic
//! for a simulated second), except during a scenario's `[[water]]` drops, when it reads the
//! drop's value exactly. Simulated time is counted as [`crate::runner::run`] counts it:
//! `speed` simulated seconds per real second from an epoch, which is the instant
//! [`WaterSensors::start`] was called until [`WaterSensors::set_epoch`] moves it. `run`
//! starts its clock once the fleet's MQTT connections are up (a fraction of a second for a
//! few platform connections), so water sensors started right before `run` lead the fleet
//! by that time unless the caller sets the epoch.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_util::sync::CancellationToken;

use crate::scenario::Scenario;
use crate::village::{Kind, Village};

/// What a water sensor measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Measure {
    /// Pipe pressure of a sprinkler or hydrant main, MPa.
    Pressure,
    /// Water level of a fire water tank, m.
    Level,
}

impl Measure {
    /// What the `ordinal`-th water sensor of a village (0-based) measures: pressure
    /// transmitters and tank level sensors alternate, since the registry does not say.
    pub fn of(ordinal: usize) -> Measure {
        if ordinal.is_multiple_of(2) { Measure::Pressure } else { Measure::Level }
    }

    /// The value a healthy system reads, in MPa or m.
    ///
    /// 0.35 MPa is a sprinkler or hydrant main fed by the municipal supply with a booster
    /// pump; 2.0 m a roof fire water tank kept near full.
    pub fn normal(self) -> f64 {
        match self {
            Measure::Pressure => 0.35,
            Measure::Level => 2.0,
        }
    }

    /// The gateway's low threshold, in MPa or m.
    ///
    /// 0.15 MPa leaves a main well above the 0.05–0.1 MPa a sprinkler head needs to
    /// discharge properly once the pipe losses of a multi-storey building are paid; 1.2 m is
    /// the level under which a roof tank no longer holds its reserve for the first minutes of
    /// firefighting.
    pub fn low(self) -> f64 {
        match self {
            Measure::Pressure => 0.15,
            Measure::Level => 1.2,
        }
    }

    /// How far over the threshold the value must come back before the condition clears:
    /// several times the noise, so a value hovering at the threshold does not chatter.
    pub fn deadband(self) -> f64 {
        match self {
            Measure::Pressure => 0.02,
            Measure::Level => 0.05,
        }
    }

    /// The largest deviation from normal in normal operation: pump pulsation and transmitter
    /// noise for pressure (5 kPa, inside the 8 kPa accuracy of a common 0.5 %, 1.6 MPa
    /// transmitter), ripples and the 1 cm resolution of the register for level.
    pub fn noise(self) -> f64 {
        match self {
            Measure::Pressure => 0.005,
            Measure::Level => 0.01,
        }
    }

    /// The holding registers from address 0 for `value` (MPa or m): `f32` kPa, high word
    /// first, or `u16` cm (rounded, saturating at the type's bounds).
    pub fn registers(self, value: f64) -> Vec<u16> {
        match self {
            Measure::Pressure => {
                let bits = ((value * 1_000.0) as f32).to_bits();
                vec![(bits >> 16) as u16, bits as u16]
            }
            Measure::Level => vec![(value * 100.0).round() as u16],
        }
    }
}

/// A reading that drops for a while, in simulated ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dip {
    /// From (inclusive).
    pub from_ms: u64,
    /// Until (exclusive).
    pub until_ms: u64,
    /// What the sensor reads meanwhile, MPa or m.
    pub value: f64,
}

/// What the sensor with index `index` among the village's water sensors reads at simulated
/// `now_ms`: the lowest of the `dips` under way, else its normal value with uniform noise
/// that changes once per simulated second (deterministic for `index` and that second).
pub fn value_at(measure: Measure, index: usize, dips: &[Dip], now_ms: u64) -> f64 {
    let dipped = dips
        .iter()
        .filter(|d| (d.from_ms..d.until_ms).contains(&now_ms))
        .map(|d| d.value)
        .min_by(f64::total_cmp);
    dipped.unwrap_or_else(|| {
        let mut rng = fastrand::Rng::with_seed(((index as u64) << 40) ^ (now_ms / 1_000));
        measure.normal() + (rng.f64() * 2.0 - 1.0) * measure.noise()
    })
}

/// Where one simulated water sensor is served, and what it measures.
#[derive(Debug, Clone, PartialEq)]
pub struct WaterSensor {
    /// Its registry id.
    pub id: String,
    /// What it measures.
    pub measure: Measure,
    /// The Modbus TCP server answering for it.
    pub address: SocketAddr,
    /// Its unit id on that server.
    pub unit: u8,
}

/// Most devices under one Modbus address space: unit ids 1 to 247 (0 is broadcast, 248 to
/// 255 are reserved by the Modbus serial-line specification).
pub const UNITS_PER_SERVER: usize = 247;

/// The poll interval the gateway uses by default, here counted in simulated time.
const SIMULATED_POLL: Duration = Duration::from_secs(5);

/// The shortest real poll interval written for the gateway. The server answers in
/// microseconds, but a few dozen sensors at 10 Hz already make hundreds of requests a second
/// on the machine that also runs the fleet and the gateway.
const MIN_POLL: Duration = Duration::from_millis(100);

/// Simulated time: `speed` simulated seconds per real second from an epoch that can move.
#[derive(Debug)]
struct Clock {
    epoch: Mutex<Instant>,
    speed: f64,
}

impl Clock {
    /// Simulated ms now; 0 while the epoch is in the future. The same arithmetic as the
    /// runner's, so equal epochs give equal simulated times.
    fn now_ms(&self) -> u64 {
        let epoch = *self.epoch.lock().unwrap();
        (Instant::now().saturating_duration_since(epoch).as_secs_f64() * self.speed * 1000.0) as u64
    }
}

/// One served sensor: what it measures, its index among the village's water sensors (its
/// noise), its dips.
#[derive(Debug)]
struct Served {
    measure: Measure,
    index: usize,
    dips: Vec<Dip>,
}

/// The pump room's Modbus TCP gateway: the sensors of one server, by unit id - 1.
#[derive(Debug)]
struct PumpRoom {
    sensors: Vec<Served>,
    clock: Arc<Clock>,
}

impl tokio_modbus::server::Service for PumpRoom {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: SlaveRequest<'static>) -> Self::Future {
        let sensor = usize::from(req.slave).checked_sub(1).and_then(|i| self.sensors.get(i));
        let Some(sensor) = sensor else {
            return std::future::ready(Err(ExceptionCode::GatewayTargetDevice));
        };
        std::future::ready(match req.request {
            Request::ReadHoldingRegisters(address, count) => {
                let value = value_at(sensor.measure, sensor.index, &sensor.dips, self.clock.now_ms());
                let words = sensor.measure.registers(value);
                let (start, end) = (usize::from(address), usize::from(address) + usize::from(count));
                if count == 0 || end > words.len() {
                    Err(ExceptionCode::IllegalDataAddress)
                } else {
                    Ok(Response::ReadHoldingRegisters(words[start..end].to_vec()))
                }
            }
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

/// The running Modbus TCP servers of a village's water sensors. Dropping it stops them.
#[derive(Debug)]
pub struct WaterSensors {
    sensors: Vec<WaterSensor>,
    clock: Arc<Clock>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl WaterSensors {
    /// Serves every water sensor of `village` with the `[[water]]` drops of `scenario`, in
    /// simulated time running at `speed` (simulated seconds per real second) from now.
    ///
    /// # Errors
    /// `InvalidInput` for a drop that does not name a water sensor of the village or reads
    /// an impossible value, or for a `speed` that is not positive; a failed bind.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn start(village: &Village, scenario: &Scenario, speed: f64) -> io::Result<WaterSensors> {
        if !(speed.is_finite() && speed > 0.0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("speed {speed}: must be positive"),
            ));
        }
        let targets =
            scenario.water_sensors(village).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let clock = Arc::new(Clock { epoch: Mutex::new(Instant::now()), speed });
        let water: Vec<usize> = village
            .devices
            .iter()
            .enumerate()
            .filter(|(_, d)| d.kind == Kind::Water)
            .map(|(i, _)| i)
            .collect();
        let mut started = WaterSensors {
            sensors: Vec::with_capacity(water.len()),
            clock: clock.clone(),
            stop: CancellationToken::new(),
            tasks: Vec::new(),
        };
        for (chunk, devices) in water.chunks(UNITS_PER_SERVER).enumerate() {
            let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
            listener.set_nonblocking(true)?;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let address = listener.local_addr()?;
            let mut served = Vec::with_capacity(devices.len());
            for (k, &device) in devices.iter().enumerate() {
                let index = chunk * UNITS_PER_SERVER + k;
                let measure = Measure::of(index);
                let dips = scenario
                    .water
                    .iter()
                    .zip(&targets)
                    .filter(|(_, target)| **target == device)
                    .map(|(drop, _)| Dip {
                        from_ms: drop.at.as_millis() as u64,
                        until_ms: (drop.at + drop.duration).as_millis() as u64,
                        value: drop.value,
                    })
                    .collect();
                served.push(Served { measure, index, dips });
                started.sensors.push(WaterSensor {
                    id: village.devices[device].id.clone(),
                    measure,
                    address,
                    unit: (k + 1) as u8,
                });
            }
            let room = Arc::new(PumpRoom { sensors: served, clock: clock.clone() });
            let stopped = started.stop.clone().cancelled_owned();
            started.tasks.push(tokio::spawn(async move {
                let on_connected = move |stream, peer| {
                    let room = room.clone();
                    async move { accept_tcp_connection(stream, peer, |_| Ok(Some(room.clone()))) }
                };
                let on_error = |error: io::Error| tracing::debug!(%error, "Water sensor connection ended.");
                if let Err(error) = Server::new(listener).serve_until(&on_connected, on_error, stopped).await
                {
                    tracing::error!(%error, %address, "Water sensor Modbus server stopped.");
                }
            }));
            tracing::info!(%address, sensors = devices.len(), "Water sensors serving Modbus TCP.");
        }
        Ok(started)
    }

    /// The served sensors, in village order.
    pub fn sensors(&self) -> &[WaterSensor] {
        &self.sensors
    }

    /// Moves simulated time 0 to `epoch` (e.g. the instant a fleet's run started).
    pub fn set_epoch(&self, epoch: Instant) {
        *self.clock.epoch.lock().unwrap() = epoch;
    }

    /// The simulated time now, ms.
    pub fn simulated_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The real time between two polls written for the gateway: 5 s of simulated time, the
    /// gateway's default, so a short drop is seen at any speed; but at least 100 ms.
    pub fn poll_interval(&self) -> Duration {
        let real = Duration::from_secs_f64(SIMULATED_POLL.as_secs_f64() / self.clock.speed);
        Duration::from_millis(real.clamp(MIN_POLL, SIMULATED_POLL).as_millis() as u64)
    }

    /// The gateway's `[modbus]` section polling every sensor, with device ids as in the
    /// registry CSV, to append to a gateway configuration.
    pub fn gateway_modbus_toml(&self) -> String {
        use std::fmt::Write as _;
        let string = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let float = |x: f64| toml::Value::Float(x).to_string();
        let poll = self.poll_interval();
        let mut out = format!(
            "# Simulated water sensors (firegrid-sim), polled every {}ms of real time: {:.1} s of\n\
             # simulated time at speed x{}.\n[modbus]\n",
            poll.as_millis(),
            poll.as_secs_f64() * self.clock.speed,
            self.clock.speed,
        );
        for sensor in &self.sensors {
            let (name, data_type, scale, unit, measures) = match sensor.measure {
                Measure::Pressure => ("pressure", "f32", 0.001, "MPa", "pressure_mpa"),
                Measure::Level => ("level", "u16", 0.01, "m", "level_m"),
            };
            let _ = write!(
                out,
                "\n[[modbus.devices]]\nid = {}\ntransport = \"tcp\"\naddress = {}\nunit = {}\n\
                 poll_interval = \"{}ms\"\ntimeout = \"1s\"\n\n\
                 [[modbus.devices.points]]\nname = \"{name}\"\nregister = \"holding\"\naddress = 0\n\
                 type = \"{data_type}\"\nword_order = \"big\"\nscale = {}\nunit = \"{unit}\"\n\
                 measures = \"{measures}\"\nlow = {}\ndeadband = {}\n",
                string(&sensor.id),
                string(&sensor.address.to_string()),
                sensor.unit,
                poll.as_millis(),
                float(scale),
                float(sensor.measure.low()),
                float(sensor.measure.deadband()),
            );
        }
        out
    }

    /// Stops the servers and waits for them: their ports are closed when this returns, and
    /// open connections close right after.
    pub async fn stop(mut self) {
        self.stop.cancel();
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for WaterSensors {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use tokio_modbus::Slave;
    use tokio_modbus::client::Reader;
    use tokio_modbus::prelude::SlaveContext;

    use super::*;
    use crate::village::VillageParams;

    fn village(water_sensors: usize) -> Village {
        let params = VillageParams {
            buildings: 10,
            detectors: 10,
            camera_channels: 0,
            water_sensors,
            ..VillageParams::default()
        };
        Village::generate(&params, 1).unwrap()
    }

    #[test]
    fn a_sensor_reads_normal_with_noise_except_during_its_drops() {
        let dips = [
            Dip { from_ms: 60_000, until_ms: 120_000, value: 0.05 },
            Dip { from_ms: 90_000, until_ms: 100_000, value: 0.02 },
        ];
        let check = |now_ms: u64, expected: Option<f64>| {
            let got = value_at(Measure::Pressure, 3, &dips, now_ms);
            match expected {
                Some(value) => assert_eq!(got, value, "at {now_ms} ms"),
                None => assert!((got - 0.35).abs() <= 0.005, "at {now_ms} ms: {got}"),
            }
        };
        check(0, None);
        check(59_999, None);
        check(60_000, Some(0.05));
        check(90_000, Some(0.02));
        check(100_000, Some(0.05));
        check(119_999, Some(0.05));
        check(120_000, None);

        for measure in [Measure::Pressure, Measure::Level] {
            // The same value for a whole simulated second, different from second to second
            // and from sensor to sensor.
            assert_eq!(value_at(measure, 2, &[], 5_000), value_at(measure, 2, &[], 5_999));
            let per_second: HashSet<u64> =
                (0..100).map(|s| value_at(measure, 2, &[], s * 1_000).to_bits()).collect();
            assert!(per_second.len() > 90, "{measure:?}: {}", per_second.len());
            assert_ne!(value_at(measure, 2, &[], 7_000), value_at(measure, 4, &[], 7_000));
            // Normal readings stay clear of the threshold and its deadband: the gateway never
            // sees a low condition without a drop.
            for s in 0..2_000 {
                let value = value_at(measure, s as usize % 9, &[], s * 1_000);
                assert!((value - measure.normal()).abs() <= measure.noise(), "{measure:?} {value}");
                assert!(value > measure.low() + measure.deadband(), "{measure:?} {value}");
            }
        }
    }

    #[test]
    fn pressure_is_f32_kpa_high_word_first_and_level_u16_cm() {
        let check = |measure: Measure, value: f64, expected: &[u16]| {
            assert_eq!(measure.registers(value), expected, "{measure:?} {value}");
        };
        // 350.0 = 0x43AF_0000 in IEEE 754 single precision.
        check(Measure::Pressure, 0.35, &[0x43AF, 0x0000]);
        check(Measure::Pressure, 0.0, &[0, 0]);
        check(Measure::Level, 2.0, &[200]);
        check(Measure::Level, 0.4, &[40]);
        check(Measure::Level, 1.996, &[200]);
        check(Measure::Level, 1_000.0, &[u16::MAX]);
        let words = Measure::Pressure.registers(0.05);
        let kpa = f32::from_bits((u32::from(words[0]) << 16) | u32::from(words[1]));
        assert_eq!(kpa, 50.0);
    }

    #[tokio::test]
    async fn the_gateway_section_polls_every_water_sensor_of_the_registry() {
        let village = village(5);
        let sensors = WaterSensors::start(&village, &Scenario::default(), 60.0).unwrap();
        let registered: Vec<String> = village
            .registry_csv()
            .lines()
            .filter(|l| l.split(',').nth(1) == Some("water_sensor"))
            .map(|l| l.split(',').next().unwrap().to_owned())
            .collect();
        assert_eq!(registered.len(), 5);

        // Appended to a gateway configuration that has tables of its own.
        let text = format!("[registry]\ncsv = \"registry.csv\"\n\n{}", sensors.gateway_modbus_toml());
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(parsed["registry"]["csv"].as_str(), Some("registry.csv"));
        let devices = parsed["modbus"]["devices"].as_array().unwrap();
        assert_eq!(devices.len(), 5);
        for (k, device) in devices.iter().enumerate() {
            let sensor = &sensors.sensors()[k];
            assert_eq!(device["id"].as_str(), Some(registered[k].as_str()));
            assert_eq!(device["id"].as_str(), Some(sensor.id.as_str()));
            assert_eq!(device["transport"].as_str(), Some("tcp"));
            assert_eq!(device["address"].as_str(), Some(sensor.address.to_string().as_str()));
            assert_eq!(device["unit"].as_integer(), Some(k as i64 + 1));
            assert_eq!(device["poll_interval"].as_str(), Some("100ms"));
            let points = device["points"].as_array().unwrap();
            assert_eq!(points.len(), 1);
            let point = &points[0];
            let (name, data_type, scale, measures) = if k.is_multiple_of(2) {
                ("pressure", "f32", 0.001, "pressure_mpa")
            } else {
                ("level", "u16", 0.01, "level_m")
            };
            assert_eq!(sensor.measure, if k.is_multiple_of(2) { Measure::Pressure } else { Measure::Level });
            assert_eq!(point["name"].as_str(), Some(name));
            assert_eq!(point["register"].as_str(), Some("holding"));
            assert_eq!(point["address"].as_integer(), Some(0));
            assert_eq!(point["type"].as_str(), Some(data_type));
            assert_eq!(point["scale"].as_float(), Some(scale));
            assert_eq!(point["measures"].as_str(), Some(measures));
            assert_eq!(point["low"].as_float(), Some(sensor.measure.low()));
            assert_eq!(point["deadband"].as_float(), Some(sensor.measure.deadband()));
        }
        sensors.stop().await;
    }

    #[tokio::test]
    async fn the_poll_interval_is_five_simulated_seconds_within_bounds() {
        let village = village(1);
        let check = |speed: f64, expected: Duration| {
            let sensors = WaterSensors::start(&village, &Scenario::default(), speed).unwrap();
            assert_eq!(sensors.poll_interval(), expected, "speed {speed}");
            assert!(
                sensors
                    .gateway_modbus_toml()
                    .contains(&format!("poll_interval = \"{}ms\"", expected.as_millis()))
            );
        };
        check(1.0, Duration::from_secs(5));
        check(0.5, Duration::from_secs(5));
        check(2.5, Duration::from_secs(2));
        check(30.0, Duration::from_millis(166));
        check(3_600.0, Duration::from_millis(100));
    }

    #[tokio::test]
    async fn more_than_247_sensors_take_a_second_server() {
        let village = Village::generate(
            &VillageParams {
                buildings: 300,
                detectors: 300,
                camera_channels: 0,
                water_sensors: 250,
                ..VillageParams::default()
            },
            1,
        )
        .unwrap();
        let sensors = WaterSensors::start(&village, &Scenario::default(), 1.0).unwrap();
        let units: Vec<(SocketAddr, u8)> = sensors.sensors().iter().map(|s| (s.address, s.unit)).collect();
        assert_eq!(units.len(), 250);
        assert_eq!(units[0].1, 1);
        assert_eq!(units[246], (units[0].0, 247));
        assert_ne!(units[247].0, units[0].0);
        assert_eq!(units[247..].iter().map(|u| u.1).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(units[247..].iter().all(|u| u.0 == units[247].0));
        sensors.stop().await;
    }

    #[tokio::test]
    async fn drops_must_name_a_water_sensor_and_speed_must_be_positive() {
        let village = village(2);
        let drop = |device: &str| {
            Scenario::from_toml(&format!(
                "[[water]]\ndevice = \"{device}\"\nat = \"1m\"\nvalue = 0.1\nduration = \"1m\"\n"
            ))
            .unwrap()
        };
        let kind = |scenario: &Scenario, speed: f64| {
            WaterSensors::start(&village, scenario, speed).err().map(|e| e.kind())
        };
        assert_eq!(kind(&drop("ws-001"), 1.0), None);
        assert_eq!(kind(&drop("ws-002"), 1.0), Some(io::ErrorKind::InvalidInput));
        assert_eq!(kind(&drop("sd-00000"), 1.0), Some(io::ErrorKind::InvalidInput));
        assert_eq!(kind(&Scenario::default(), 0.0), Some(io::ErrorKind::InvalidInput));
        assert_eq!(kind(&Scenario::default(), f64::NAN), Some(io::ErrorKind::InvalidInput));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_modbus_client_reads_each_sensor_by_its_unit_id_until_the_servers_stop() {
        let village = village(3);
        let scenario = Scenario::from_toml(
            "[[water]]\ndevice = \"ws-001\"\nat = \"30s\"\nvalue = 0.4\nduration = \"30s\"\n",
        )
        .unwrap();
        let sensors = WaterSensors::start(&village, &scenario, 1.0).unwrap();
        let address = sensors.sensors()[0].address;
        assert!(sensors.sensors().iter().all(|s| s.address == address));
        let mut client = tokio_modbus::client::tcp::connect_slave(address, Slave(1)).await.unwrap();

        let words = client.read_holding_registers(0, 2).await.unwrap().unwrap();
        let kpa = f32::from_bits((u32::from(words[0]) << 16) | u32::from(words[1]));
        assert!((345.0..=355.0).contains(&kpa), "{kpa} kPa");
        client.set_slave(Slave(2));
        let cm = client.read_holding_registers(0, 1).await.unwrap().unwrap();
        assert!((199..=201).contains(&cm[0]), "{cm:?}");

        // Simulated time moved into the drop of ws-001, then past it.
        let ago = |s: u64| Instant::now().checked_sub(Duration::from_secs(s)).unwrap();
        sensors.set_epoch(ago(40));
        assert!((40_000..41_000).contains(&sensors.simulated_ms()));
        assert_eq!(client.read_holding_registers(0, 1).await.unwrap().unwrap(), [40]);
        sensors.set_epoch(ago(70));
        let cm = client.read_holding_registers(0, 1).await.unwrap().unwrap();
        assert!((199..=201).contains(&cm[0]), "{cm:?}");

        let exception = |r: tokio_modbus::Result<Vec<u16>>| r.unwrap().unwrap_err();
        assert_eq!(exception(client.read_holding_registers(1, 1).await), ExceptionCode::IllegalDataAddress);
        assert_eq!(exception(client.read_holding_registers(0, 0).await), ExceptionCode::IllegalDataAddress);
        assert_eq!(exception(client.read_input_registers(0, 1).await), ExceptionCode::IllegalFunction);
        client.set_slave(Slave(1));
        assert_eq!(exception(client.read_holding_registers(0, 3).await), ExceptionCode::IllegalDataAddress);
        assert_eq!(client.read_holding_registers(1, 1).await.unwrap().unwrap().len(), 1);
        client.set_slave(Slave(4));
        assert_eq!(exception(client.read_holding_registers(0, 1).await), ExceptionCode::GatewayTargetDevice);
        client.set_slave(Slave(0));
        assert_eq!(exception(client.read_holding_registers(0, 1).await), ExceptionCode::GatewayTargetDevice);

        sensors.stop().await;
        assert!(tokio_modbus::client::tcp::connect_slave(address, Slave(1)).await.is_err());
        // Open connections close right after `stop` (its documentation): a read may still
        // be answered on the way, but the connection is cut within seconds.
        client.set_slave(Slave(1));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let after = tokio::time::timeout_at(deadline, client.read_holding_registers(0, 2)).await;
            match after {
                Ok(Err(_)) => break,
                Ok(Ok(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                other => panic!("the stopped server's connection still answers: {other:?}"),
            }
        }
    }
}
