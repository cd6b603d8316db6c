//! A chaos run: a village of detectors on the `firegrid` binary while the broker restarts,
//! InfluxDB goes away, the gateway is killed with SIGKILL, its disk fills and its wall clock
//! steps, at random times drawn from a seed, one fault at a time and each bounded in length.
//! Fires are raised throughout. At the end everything settles and [`run`] checks the
//! guarantees together (see [`Report::violations`]):
//!
//! - **(a) every alarm is stored exactly once.** An alarm-class message is *accepted* when its
//!   device got the `down/ack` for its `(device, boot, seq)` (the gateway sends it only once
//!   the record is durable). Every alarm raised must be accepted by the end (the detectors
//!   resend unacknowledged alarms every [`RESEND`], as the firmware's outbox does), and each
//!   must be in InfluxDB exactly once (`detector_state`, one point per `(device, boot, seq)`;
//!   the gateway stamps a point once, so a second copy would be a second point). Telemetry
//!   (heartbeats, QoS 1 without `down/ack`) may be shed on a full disk, so for it the check is
//!   *at most once* per `(device, boot, seq)`, and the shed share is reported.
//! - **(b) every fire opened a case that paged in time.** Each fire is in a building of its
//!   own; the officer API must list a case there, and the first page about it must arrive no
//!   later than [`ChaosConfig::page_grace`] of uninterrupted service after the fire was raised:
//!   starting at the raise, the bound moves past every gateway kill and broker outage that
//!   begins before it (to the outage's end plus the grace again). A full disk, an InfluxDB
//!   outage or a clock step does not move it: alarms page through those.
//! - **(c) no page went out twice.** Each `notification_id` arrives once, except where a
//!   `kill -9` came between two deliveries while the disk was full (ARCHITECTURE.md, the sick
//!   disk decision: the outbox replays what it could not store). Duplicates are counted by
//!   cause; only that cause is allowed.
//!
//! The schedule ([`plan`]) and the checks ([`judge`]) are plain functions; [`run`] does the
//! I/O between them. `firegrid-bench chaos` and the `chaos` integration test both call [`run`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use firegrid_protocol::{
    DetectorState, DeviceId, Downlink, DownlinkBody, Encoding, Limits, StateChange, Topic, Uplink,
    UplinkBody, VillageId,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

use crate::officers::{OfficerApi, write_street_desk};
use crate::{FakeClock, Firegrid, InfluxDb1, Mosquitto, SmallDisk, WebhookReceiver};

const VILLAGE: &str = "fuhai-1";
const STREET: &str = "Fuhai";
const DB: &str = "firegrid";
/// The acknowledgement deadline at every level, short so that cases escalate during a run.
pub const ACK_DEADLINE: Duration = Duration::from_secs(20);
/// How long after a page reached the receiver a `kill -9` may still beat the outbox's record
/// of it (one SQLite commit; generous for a loaded machine).
pub const IN_FLIGHT: Duration = Duration::from_secs(2);
/// How often a detector resends an alarm that has no `down/ack` yet.
pub const RESEND: Duration = Duration::from_secs(5);
/// How often each detector sends a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(30);
/// Detectors per building.
const DETECTORS: usize = 3;
/// Buildings per grid, and grids per community.
const PER_GRID: usize = 20;
const PER_COMMUNITY: usize = 3;
/// The gateway's data directory lives on an ext4 image this large.
const DISK_MB: u32 = 64;

/// What to run.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// How long faults and fires go on (the settling comes after).
    pub duration: Duration,
    /// Seeds the schedule of faults and fires.
    pub seed: u64,
    /// Buildings in the village (each fire takes one of its own, so at most this many fires).
    pub buildings: usize,
    /// The first page about a fire must arrive within this much uninterrupted service.
    pub page_grace: Duration,
    /// How long the settling may take before what is missing counts as lost.
    pub settle: Duration,
    /// Print each fault and fire as it happens (to stderr).
    pub verbose: bool,
}

impl ChaosConfig {
    /// `minutes` of chaos from `seed`, with the bounds the benchmark uses.
    pub fn minutes(minutes: u64, seed: u64) -> ChaosConfig {
        ChaosConfig {
            duration: Duration::from_secs(minutes * 60),
            seed,
            buildings: 120,
            page_grace: ACK_DEADLINE,
            settle: Duration::from_secs(180),
            verbose: true,
        }
    }
}

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// Mosquitto stopped (gracefully, so it keeps its sessions) and started again.
    BrokerRestart,
    /// InfluxDB stopped and started again.
    InfluxOutage,
    /// The gateway killed with SIGKILL and started again.
    GatewayKill,
    /// The gateway's disk filled to 100 %, then freed.
    DiskFull,
    /// The gateway's wall clock stepped by `step_h` hours, then back.
    ClockStep,
}

impl FaultKind {
    const ALL: [FaultKind; 5] = [
        FaultKind::BrokerRestart,
        FaultKind::InfluxOutage,
        FaultKind::GatewayKill,
        FaultKind::DiskFull,
        FaultKind::ClockStep,
    ];

    /// Whether the gateway cannot hear alarms while it lasts.
    fn interrupts_service(self) -> bool {
        matches!(self, FaultKind::BrokerRestart | FaultKind::GatewayKill)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaultKind::BrokerRestart => "broker restart",
            FaultKind::InfluxOutage => "InfluxDB outage",
            FaultKind::GatewayKill => "gateway kill -9",
            FaultKind::DiskFull => "disk full",
            FaultKind::ClockStep => "clock step",
        })
    }
}

/// One planned fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// What.
    pub kind: FaultKind,
    /// When, from the start of the run.
    pub at: Duration,
    /// How long it is held before it is cleared.
    pub hold: Duration,
    /// For a clock step, the hours (`+1` or `-1`).
    pub step_h: i8,
}

/// One planned fire.
#[derive(Debug, Clone, PartialEq)]
pub struct Fire {
    /// When, from the start of the run.
    pub at: Duration,
    /// The building (index).
    pub building: usize,
    /// How many of its detectors go into alarm: one (a pre-alarm case) or two (a confirmed fire).
    pub detectors: usize,
}

/// The schedule of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Faults, in time order, never overlapping as planned.
    pub faults: Vec<Fault>,
    /// Fires, in time order.
    pub fires: Vec<Fire>,
}

/// The schedule `seed` gives a run of `duration` in a village of `buildings`: every kind of
/// fault once in each round of five (in a shuffled order), about one fault a minute (at least
/// five), each in a slot of its own and held 5–20 s (a killed gateway stays down 1–5 s, the
/// broker 2–10 s); a fire every 10–40 s from the fifth second until 10 s before the end, and
/// one more within every fault.
pub fn plan(seed: u64, duration: Duration, buildings: usize) -> Plan {
    let mut rng = fastrand::Rng::with_seed(seed);
    let secs = duration.as_secs_f64();
    let count = ((secs / 60.0).round() as usize).max(FaultKind::ALL.len());
    let slot = secs / count as f64;
    let mut faults = Vec::with_capacity(count);
    let mut kinds = Vec::new();
    for i in 0..count {
        if kinds.is_empty() {
            kinds = FaultKind::ALL.to_vec();
            rng.shuffle(&mut kinds);
        }
        let kind = kinds.pop().unwrap();
        let (low, high) = match kind {
            FaultKind::GatewayKill => (1.0, 5.0),
            FaultKind::BrokerRestart => (2.0, 10.0),
            _ => (5.0, 20.0),
        };
        // Never longer than half a slot, so that a slot also has time without faults.
        let hold = (low + rng.f64() * (high - low)).min(slot / 2.0);
        let start = i as f64 * slot + rng.f64() * (slot - hold) / 2.0;
        faults.push(Fault {
            kind,
            at: Duration::from_secs_f64(start),
            hold: Duration::from_secs_f64(hold),
            step_h: if rng.bool() { 1 } else { -1 },
        });
    }
    // Fires at random, and one inside every fault, so that each fault meets an alarm.
    let mut times = Vec::new();
    let mut at = 5.0;
    while at < secs - 10.0 {
        times.push(at);
        at += 10.0 + rng.f64() * 30.0;
    }
    for fault in &faults {
        times.push(fault.at.as_secs_f64() + fault.hold.as_secs_f64() * (0.2 + 0.6 * rng.f64()));
    }
    times.sort_by(f64::total_cmp);
    times.truncate(buildings);
    let fires = times
        .into_iter()
        .enumerate()
        .map(|(building, at)| Fire {
            at: Duration::from_secs_f64(at),
            building,
            detectors: if rng.bool() { 2 } else { 1 },
        })
        .collect();
    Plan { faults, fires }
}

/// A fault as it happened: from when it was injected until it was cleared (for a gateway
/// kill or broker outage, until the server answered again).
#[derive(Debug, Clone)]
pub struct FaultDone {
    /// What was planned.
    pub fault: Fault,
    /// When it began, from the start of the run.
    pub began: Duration,
    /// When it was cleared.
    pub ended: Duration,
}

/// One alarm message a detector raised.
#[derive(Debug, Clone)]
pub struct AlarmSent {
    /// Device id.
    pub device: String,
    /// Its boot and sequence number.
    pub boot: u32,
    /// Sequence number.
    pub seq: u32,
    /// The fire (index into [`Plan::fires`]) it belongs to.
    pub fire: usize,
    /// When it was first sent, from the start of the run.
    pub raised: Duration,
    /// When its `down/ack` first arrived.
    pub acked: Option<Duration>,
    /// How many times it was sent.
    pub sends: u32,
}

/// A page as it arrived.
#[derive(Debug, Clone)]
pub struct PageSeen {
    /// When, from the start of the run.
    pub at: Duration,
    /// `notification_id`.
    pub id: u64,
    /// `case_id`.
    pub case: u64,
    /// `desk`.
    pub desk: String,
}

/// Everything a run observed, which [`judge`] checks.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    /// The faults.
    pub faults: Vec<FaultDone>,
    /// The alarm messages.
    pub alarms: Vec<AlarmSent>,
    /// When each fire was raised (from the start), by fire index, and its building id.
    pub fires: Vec<(Duration, String)>,
    /// Points in `detector_state`, per `(device, boot, seq)`.
    pub alarm_points: BTreeMap<(String, u32, u32), usize>,
    /// Heartbeats sent.
    pub heartbeats_sent: u64,
    /// Points in `device_heartbeat`, per `(device, boot, seq)`.
    pub heartbeat_points: BTreeMap<(String, u32, u32), usize>,
    /// Every page received.
    pub pages: Vec<PageSeen>,
    /// The case ids the officer API lists per building id.
    pub cases: BTreeMap<String, BTreeSet<u64>>,
    /// The grace of (b).
    pub page_grace: Duration,
    /// How long the settling took.
    pub settled_in: Duration,
}

/// Why a page arrived twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DuplicateCause {
    /// A `kill -9` between the copies, the first while the disk was full: the outbox could
    /// not store its delivery (allowed, ARCHITECTURE.md's sick-disk decision).
    KillDuringFullDisk,
    /// A `kill -9` within [`IN_FLIGHT`] after the first copy arrived: the channel took the
    /// page, and the gateway was killed before it recorded the delivery (allowed: delivery is
    /// at least once across a crash, ARCHITECTURE.md; the page's `notification_id` lets a
    /// receiver drop the copy).
    KillInFlight,
    /// A `kill -9` between the copies on a healthy disk, long after the first copy: its
    /// delivery should have been recorded.
    KillOnHealthyDisk,
    /// Nothing explains it.
    Unexplained,
}

/// What [`judge`] found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The observations judged.
    pub seen: Observations,
    /// The worst first-page delay after a fire's raise, and the fire.
    pub worst_page: Option<(Duration, usize)>,
    /// The smallest margin between a first page and its bound.
    pub least_margin: Option<Duration>,
    /// Pages received more than once, by cause: `(notification_id, copies)`.
    pub duplicates: BTreeMap<DuplicateCause, Vec<(u64, usize)>>,
    /// Every broken guarantee, in words; empty when the run passed.
    pub violations: Vec<String>,
}

/// The bound of check (b) for a fire raised at `raised`: `grace` of service after it, moved
/// past every interrupting fault that begins before the bound.
fn page_bound(raised: Duration, grace: Duration, faults: &[FaultDone]) -> Duration {
    let mut bound = raised + grace;
    loop {
        let moved = faults
            .iter()
            .filter(|f| f.fault.kind.interrupts_service() && f.began <= bound && f.ended + grace > bound)
            .map(|f| f.ended + grace)
            .max();
        match moved {
            Some(later) => bound = later,
            None => return bound,
        }
    }
}

/// Checks the observations against (a), (b) and (c).
pub fn judge(seen: Observations) -> Report {
    let mut violations = Vec::new();
    // (a) Every alarm accepted, and stored exactly once.
    for alarm in &seen.alarms {
        let key = (alarm.device.clone(), alarm.boot, alarm.seq);
        if alarm.acked.is_none() {
            violations.push(format!(
                "(a) alarm {} boot {} seq {} (fire {}) never got its down/ack ({} sends)",
                alarm.device, alarm.boot, alarm.seq, alarm.fire, alarm.sends
            ));
        }
        match seen.alarm_points.get(&key).copied().unwrap_or(0) {
            1 => {}
            n => violations.push(format!(
                "(a) alarm {} boot {} seq {} is in InfluxDB {n} times",
                alarm.device, alarm.boot, alarm.seq
            )),
        }
    }
    let raised: BTreeSet<(String, u32, u32)> =
        seen.alarms.iter().map(|a| (a.device.clone(), a.boot, a.seq)).collect();
    for (key, n) in &seen.alarm_points {
        if !raised.contains(key) {
            violations.push(format!("(a) detector_state has {n} point(s) nobody sent: {key:?}"));
        }
    }
    for (key, n) in &seen.heartbeat_points {
        if *n > 1 {
            violations.push(format!("(a) heartbeat {key:?} is in InfluxDB {n} times"));
        }
    }
    // (b) Every fire has a case, paged within its bound.
    let mut worst_page: Option<(Duration, usize)> = None;
    let mut least_margin: Option<Duration> = None;
    for (i, (raised, building)) in seen.fires.iter().enumerate() {
        let Some(cases) = seen.cases.get(building).filter(|c| !c.is_empty()) else {
            violations.push(format!("(b) fire {i} in {building}: the officer API lists no case there"));
            continue;
        };
        let Some(first) = seen.pages.iter().filter(|p| cases.contains(&p.case)).map(|p| p.at).min() else {
            violations.push(format!("(b) fire {i} in {building}: case(s) {cases:?} never paged"));
            continue;
        };
        let delay = first.saturating_sub(*raised);
        if worst_page.is_none_or(|(d, _)| delay > d) {
            worst_page = Some((delay, i));
        }
        let bound = page_bound(*raised, seen.page_grace, &seen.faults);
        if first > bound {
            violations.push(format!(
                "(b) fire {i} in {building}: raised at {:.1} s, first page at {:.1} s, after its bound {:.1} s",
                raised.as_secs_f64(),
                first.as_secs_f64(),
                bound.as_secs_f64()
            ));
        } else {
            let margin = bound - first;
            least_margin = Some(least_margin.map_or(margin, |m| m.min(margin)));
        }
    }
    // (c) No page twice, but for the one allowed cause.
    let mut copies: BTreeMap<u64, Vec<Duration>> = BTreeMap::new();
    for page in &seen.pages {
        copies.entry(page.id).or_default().push(page.at);
    }
    let mut duplicates: BTreeMap<DuplicateCause, Vec<(u64, usize)>> = BTreeMap::new();
    for (id, times) in copies.iter().filter(|(_, t)| t.len() > 1) {
        let (first, last) = (times[0], times[times.len() - 1]);
        let kills_between: Vec<Duration> = seen
            .faults
            .iter()
            .filter(|f| f.fault.kind == FaultKind::GatewayKill && f.began >= first && f.began <= last)
            .map(|f| f.began)
            .collect();
        let kill_between = !kills_between.is_empty();
        let in_flight = kills_between.iter().any(|k| *k <= first + IN_FLIGHT);
        let disk_full_at_first = seen
            .faults
            .iter()
            .any(|f| f.fault.kind == FaultKind::DiskFull && f.began <= first && f.ended >= first);
        let cause = match (kill_between, disk_full_at_first, in_flight) {
            (true, true, _) => DuplicateCause::KillDuringFullDisk,
            (true, false, true) => DuplicateCause::KillInFlight,
            (true, false, false) => DuplicateCause::KillOnHealthyDisk,
            (false, ..) => DuplicateCause::Unexplained,
        };
        if !matches!(cause, DuplicateCause::KillDuringFullDisk | DuplicateCause::KillInFlight) {
            violations.push(format!("(c) notification {id} arrived {} times ({cause:?})", times.len()));
        }
        duplicates.entry(cause).or_default().push((*id, times.len()));
    }
    Report { seen, worst_page, least_margin, duplicates, violations }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.seen;
        writeln!(f, "faults injected ({}):", s.faults.len())?;
        for done in &s.faults {
            let step = if done.fault.kind == FaultKind::ClockStep {
                format!(" ({:+} h)", done.fault.step_h)
            } else {
                String::new()
            };
            writeln!(
                f,
                "  {:>7.1} s → {:>7.1} s  {}{step}",
                done.began.as_secs_f64(),
                done.ended.as_secs_f64(),
                done.fault.kind
            )?;
        }
        let mut by_kind: BTreeMap<FaultKind, usize> = BTreeMap::new();
        for done in &s.faults {
            *by_kind.entry(done.fault.kind).or_default() += 1;
        }
        let kinds: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
        writeln!(f, "fault kinds: {}", kinds.join(", "))?;
        let acked = s.alarms.iter().filter(|a| a.acked.is_some()).count();
        let resends: u32 = s.alarms.iter().map(|a| a.sends.saturating_sub(1)).sum();
        let stored_once = s
            .alarms
            .iter()
            .filter(|a| s.alarm_points.get(&(a.device.clone(), a.boot, a.seq)) == Some(&1))
            .count();
        writeln!(
            f,
            "fires: {} ({} alarm messages; {acked} acknowledged by down/ack, {resends} resends; {stored_once} in InfluxDB exactly once)",
            s.fires.len(),
            s.alarms.len()
        )?;
        let hb_stored = s.heartbeat_points.len();
        let hb_twice = s.heartbeat_points.values().filter(|n| **n > 1).count();
        writeln!(
            f,
            "heartbeats: {} sent, {hb_stored} stored ({:.1} % not stored: shed on a full disk or lost in flight), {hb_twice} stored twice",
            s.heartbeats_sent,
            100.0 * (s.heartbeats_sent as f64 - hb_stored as f64) / s.heartbeats_sent.max(1) as f64
        )?;
        let cases: BTreeSet<u64> = s.cases.values().flatten().copied().collect();
        let ids: BTreeSet<u64> = s.pages.iter().map(|p| p.id).collect();
        writeln!(
            f,
            "cases: {} in {} buildings; pages: {} received, {} distinct",
            cases.len(),
            s.cases.len(),
            s.pages.len(),
            ids.len()
        )?;
        if let Some((delay, fire)) = self.worst_page {
            writeln!(
                f,
                "worst first-page delay: {:.2} s (fire {fire}, raised at {:.1} s); least margin to its bound: {}",
                delay.as_secs_f64(),
                s.fires[fire].0.as_secs_f64(),
                self.least_margin.map_or("-".into(), |m| format!("{:.1} s", m.as_secs_f64()))
            )?;
        }
        let mut delays: Vec<f64> = s
            .fires
            .iter()
            .filter_map(|(raised, b)| {
                let cases = s.cases.get(b)?;
                let first = s.pages.iter().filter(|p| cases.contains(&p.case)).map(|p| p.at).min()?;
                Some(first.saturating_sub(*raised).as_secs_f64())
            })
            .collect();
        delays.sort_by(f64::total_cmp);
        if !delays.is_empty() {
            writeln!(
                f,
                "first-page delays: median {:.2} s, max {:.2} s over {} fires",
                delays[delays.len() / 2],
                delays[delays.len() - 1],
                delays.len()
            )?;
        }
        let dup: Vec<String> = self.duplicates.iter().map(|(c, v)| format!("{c:?}: {}", v.len())).collect();
        writeln!(f, "duplicate pages: {}", if dup.is_empty() { "none".into() } else { dup.join(", ") })?;
        writeln!(f, "settled in {:.1} s", s.settled_in.as_secs_f64())?;
        if self.violations.is_empty() {
            writeln!(f, "result: PASS (a) (b) (c)")
        } else {
            writeln!(f, "result: FAIL, {} violation(s):", self.violations.len())?;
            for v in &self.violations {
                writeln!(f, "  {v}")?;
            }
            Ok(())
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn device_name(building: usize, k: usize) -> String {
    format!("sd-b{building:03}-{k}")
}

fn building_name(building: usize) -> String {
    format!("B{building:03}")
}

fn registry(path: &Path, buildings: usize) {
    let mut csv = String::from(
        "device_id,kind,model,building_id,building_address,lat,lon,grid,community,street,village,district,heartbeat,channels\n",
    );
    for b in 0..buildings {
        let grid = b / PER_GRID;
        for k in 0..DETECTORS {
            // Heartbeats are expected hourly, so liveness calls nobody offline during a run
            // (the detectors send every 30 s anyway).
            csv.push_str(&format!(
                "{},smoke_detector,JTY-GD,{},No. {b} Lane,{:.5},102.66,G{grid},C{},{STREET},{VILLAGE},Xishan,1h,\n",
                device_name(b, k),
                building_name(b),
                25.03 + b as f64 * 1e-4,
                grid / PER_COMMUNITY
            ));
        }
    }
    std::fs::write(path, csv).unwrap();
}

fn gateway_config(
    data: PathBuf,
    broker: u16,
    db: u16,
    hook: u16,
    registry: PathBuf,
    officers: PathBuf,
) -> impl Fn(&Path, u16) -> String + Send + Sync + 'static {
    move |_dir: &Path, http_port: u16| {
        let ack = format!("{{ after = \"{}s\" }}", ACK_DEADLINE.as_secs());
        let policy = format!(
            "entry = [\"grid\"]\nack = [{ack}, {ack}, {ack}, {ack}]\nrenotify = \"2h\"\nhandle = {{ after = \"2h\" }}\nlatched = true\n"
        );
        format!(
            r#"
data_dir = "{data}"
http_listen = "127.0.0.1:{http_port}"
# Resends and heartbeats of a few hundred detectors, never a reason to refuse here.
[admission]
rate_per_s = 1000.0
burst = 1000.0
alarm_rate_per_s = 1000.0
alarm_burst = 1000.0
[mqtt]
host = "127.0.0.1"
port = {broker}
client_id = "gw-chaos"
max_backoff = "500ms"
[registry]
csv = "{registry}"
[[influx]]
name = "street"
url = "http://127.0.0.1:{db}"
api = "v1"
database = "{DB}"
flush_interval = "100ms"
max_backoff = "1s"
[alerting]
district = "Xishan"
officers = "{officers}"
routes = {{ "*" = ["hook"] }}
# Every fire is a case of its own: no flood or spread folding them together.
[alerting.engine]
flood_threshold = 100000
spread_buildings = 100000
[alerting.engine.fire]
{policy}
[alerting.engine.pre_alarm]
{policy}
[notify.channels.hook]
kind = "webhook"
url = "http://127.0.0.1:{hook}/hook"
secret = "chaos-secret"
"#,
            data = data.display(),
            registry = registry.display(),
            officers = officers.display(),
        )
    }
}

/// One alarm a detector keeps until its `down/ack` arrives.
struct Outgoing {
    topic: String,
    payload: Vec<u8>,
    last_sent: Instant,
}

/// The detectors' side: sequence numbers, the alarms not yet acknowledged, what was sent.
struct Detectors {
    start: Instant,
    seqs: BTreeMap<String, u32>,
    outbox: BTreeMap<(String, u32, u32), Outgoing>,
    alarms: Vec<AlarmSent>,
    heartbeats: u64,
}

impl Detectors {
    fn next(&mut self, device: &str, body: UplinkBody) -> (u32, String, Vec<u8>) {
        let seq = self.seqs.entry(device.to_owned()).or_insert(0);
        *seq += 1;
        let dev = DeviceId::new(device).unwrap();
        let msg = Uplink::new(dev.clone(), 1, *seq, now_ms(), body);
        let topic = Topic::uplink(VillageId::new(VILLAGE).unwrap(), dev, msg.kind()).to_buf().to_string();
        (*seq, topic, msg.encode(Encoding::Compact, &mut [0u8; 256]).unwrap().to_vec())
    }
}

type Shared = Arc<Mutex<Detectors>>;

/// Starts the detectors' MQTT client: one persistent session publishing for every
/// detector and taking their `down/ack`s.
fn detectors_client(port: u16, shared: Shared) -> AsyncClient {
    let mut opts = MqttOptions::new("chaos-detectors", "127.0.0.1", port);
    opts.set_clean_session(false).set_inflight(200).set_keep_alive(Duration::from_secs(10));
    let (client, mut eventloop) = AsyncClient::new(opts, 50_000);
    let subscriber = client.clone();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = subscriber.try_subscribe(format!("fg/v1/{VILLAGE}/+/down/ack"), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let device = p.topic.split('/').nth(3).unwrap_or_default().to_owned();
                    if let Ok(Downlink { body: DownlinkBody::Ack { boot, seq }, .. }) =
                        Downlink::receive(&p.payload, &Limits::default())
                    {
                        let boot = u32::from(boot);
                        let mut d = shared.lock().unwrap();
                        let at = d.start.elapsed();
                        d.outbox.remove(&(device.clone(), boot, seq));
                        if let Some(a) = d.alarms.iter_mut().find(|a| {
                            a.device == device && a.boot == boot && a.seq == seq && a.acked.is_none()
                        }) {
                            a.acked = Some(at);
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    client
}

/// Heartbeats from every detector every [`HEARTBEAT`], spread evenly, and the resends of
/// unacknowledged alarms every [`RESEND`].
fn detectors_traffic(
    client: AsyncClient,
    shared: Shared,
    devices: Vec<String>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let tick = Duration::from_millis(500);
        let per_tick = (devices.len() as f64 * tick.as_secs_f64() / HEARTBEAT.as_secs_f64()).ceil() as usize;
        let mut next = 0;
        let mut interval = tokio::time::interval(tick);
        loop {
            interval.tick().await;
            let mut out = Vec::new();
            {
                let mut d = shared.lock().unwrap();
                for _ in 0..per_tick {
                    let device = &devices[next % devices.len()];
                    next += 1;
                    let (_, topic, payload) = d.next(device, crate::uplinks::heartbeat_body());
                    d.heartbeats += 1;
                    out.push((topic, payload));
                }
                let now = Instant::now();
                let mut resent = Vec::new();
                for (key, o) in d.outbox.iter_mut() {
                    if now.duration_since(o.last_sent) >= RESEND {
                        o.last_sent = now;
                        out.push((o.topic.clone(), o.payload.clone()));
                        resent.push(key.clone());
                    }
                }
                for key in resent {
                    if let Some(a) = d.alarms.iter_mut().find(|a| (a.device.clone(), a.boot, a.seq) == key) {
                        a.sends += 1;
                    }
                }
            }
            for (topic, payload) in out {
                // A full queue (the broker away for long) drops the message, as a detector's
                // radio would; alarms come again from the outbox.
                let _ = client.try_publish(topic, QoS::AtLeastOnce, false, payload);
            }
        }
    })
}

fn raise(client: &AsyncClient, shared: &Shared, fire: usize, device: &str) {
    let body = UplinkBody::State(StateChange { state: DetectorState::Alarm, obscuration_db_m: 0.4 });
    let (topic, payload) = {
        let mut d = shared.lock().unwrap();
        let (seq, topic, payload) = d.next(device, body);
        let raised = d.start.elapsed();
        d.alarms.push(AlarmSent {
            device: device.to_owned(),
            boot: 1,
            seq,
            fire,
            raised,
            acked: None,
            sends: 1,
        });
        d.outbox.insert(
            (device.to_owned(), 1, seq),
            Outgoing { topic: topic.clone(), payload: payload.clone(), last_sent: Instant::now() },
        );
        (topic, payload)
    };
    let _ = client.try_publish(topic, QoS::AtLeastOnce, false, payload);
}

/// Points per `(device, boot, seq)` in `measurement`.
fn points(db: &InfluxDb1, measurement: &str) -> BTreeMap<(String, u32, u32), usize> {
    let q = format!("SELECT boot, seq FROM {measurement} GROUP BY device");
    let mut out = BTreeMap::new();
    for series in db.query_series(DB, &q).unwrap() {
        let device = series.tags.get("device").cloned().unwrap_or_default();
        let (Some(boots), Some(seqs)) = (series.column("boot"), series.column("seq")) else { continue };
        for (boot, seq) in boots.into_iter().zip(seqs) {
            let key = (device.clone(), boot.as_u64().unwrap_or(0) as u32, seq.as_u64().unwrap_or(0) as u32);
            *out.entry(key).or_default() += 1;
        }
    }
    out
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Runs the chaos described by `config` and judges it. Needs root (the small disk) and a
/// multi-threaded tokio runtime (faults block a worker while servers stop and start).
///
/// # Panics
/// When a server cannot be started at all; broken guarantees are returned in
/// [`Report::violations`] instead.
pub async fn run(config: &ChaosConfig) -> Report {
    let plan = plan(config.seed, config.duration, config.buildings);
    let say = |line: String| {
        if config.verbose {
            eprintln!("{line}");
        }
    };
    let disk = SmallDisk::mount(DISK_MB).unwrap();
    let mut broker = Mosquitto::start().unwrap();
    let mut db = InfluxDb1::start().unwrap();
    db.create_database(DB).unwrap();
    let hook = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new(dir.path()).unwrap();
    let registry_path = dir.path().join("registry.csv");
    registry(&registry_path, config.buildings);
    let officers = dir.path().join("officers.toml");
    let token = write_street_desk(&officers, STREET);
    let mut gateway = Firegrid::start_with_env(
        gateway_config(
            disk.path().join("data"),
            broker.port(),
            db.port(),
            hook.port(),
            registry_path,
            officers,
        ),
        clock.envs(),
    )
    .unwrap();
    let api = OfficerApi::new(gateway.http_port());

    let start = Instant::now();
    let shared: Shared = Arc::new(Mutex::new(Detectors {
        start,
        seqs: BTreeMap::new(),
        outbox: BTreeMap::new(),
        alarms: Vec::new(),
        heartbeats: 0,
    }));
    let client = detectors_client(broker.port(), shared.clone());
    let devices: Vec<String> =
        (0..config.buildings).flat_map(|b| (0..DETECTORS).map(move |k| device_name(b, k))).collect();
    let traffic = detectors_traffic(client.clone(), shared.clone(), devices);
    say(format!(
        "chaos: seed {}, {} s, {} detectors in {} buildings, {} faults and {} fires planned",
        config.seed,
        config.duration.as_secs(),
        config.buildings * DETECTORS,
        config.buildings,
        plan.faults.len(),
        plan.fires.len()
    ));

    // The schedule: fires as their time comes, faults one at a time.
    let mut done = Vec::new();
    let mut next_fire = 0;
    let mut faults = plan.faults.iter().peekable();
    let mut fires_seen = Vec::new();
    let fire_due = |next_fire: &mut usize, fires_seen: &mut Vec<(Duration, String)>| {
        while let Some(fire) = plan.fires.get(*next_fire).filter(|f| start.elapsed() >= f.at) {
            *next_fire += 1;
            let index = fires_seen.len();
            fires_seen.push((start.elapsed(), building_name(fire.building)));
            for k in 0..fire.detectors {
                raise(&client, &shared, index, &device_name(fire.building, k));
            }
            say(format!(
                "  {:>7.1} s  fire {index} in {} ({} detector(s))",
                start.elapsed().as_secs_f64(),
                building_name(fire.building),
                fire.detectors
            ));
        }
    };
    while next_fire < plan.fires.len() || faults.peek().is_some() || start.elapsed() < config.duration {
        fire_due(&mut next_fire, &mut fires_seen);
        let Some(fault) = faults.next_if(|f| start.elapsed() >= f.at) else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let began = start.elapsed();
        say(format!(
            "  {:>7.1} s  {} for {:.1} s",
            began.as_secs_f64(),
            fault.kind,
            fault.hold.as_secs_f64()
        ));
        match fault.kind {
            FaultKind::BrokerRestart => blocking(|| broker.stop()).unwrap(),
            FaultKind::InfluxOutage => blocking(|| db.stop()).unwrap(),
            FaultKind::GatewayKill => blocking(|| gateway.kill()).unwrap(),
            FaultKind::DiskFull => {
                blocking(|| disk.fill());
            }
            FaultKind::ClockStep => clock.set(&format!("{:+}h", fault.step_h)).unwrap(),
        }
        let until = Instant::now() + fault.hold;
        while Instant::now() < until {
            fire_due(&mut next_fire, &mut fires_seen);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        match fault.kind {
            FaultKind::BrokerRestart => blocking(|| broker.restart()).unwrap(),
            FaultKind::InfluxOutage => blocking(|| db.restart()).unwrap(),
            FaultKind::GatewayKill => {
                // A restart waits until /healthz answers; the gateway must come back.
                let mut tries = 0;
                while let Err(e) = blocking(|| gateway.restart()) {
                    tries += 1;
                    assert!(tries < 3, "the gateway did not come back after kill -9: {e}");
                }
            }
            FaultKind::DiskFull => disk.free(),
            FaultKind::ClockStep => clock.set("+0").unwrap(),
        }
        done.push(FaultDone { fault: fault.clone(), began, ended: start.elapsed() });
    }

    // Settle: every fault is cleared; the detectors resend until every alarm is
    // acknowledged, and the spool drains into InfluxDB.
    say(format!("  {:>7.1} s  settling", start.elapsed().as_secs_f64()));
    let settling = Instant::now();
    loop {
        let (pending, keys) = {
            let d = shared.lock().unwrap();
            let keys: BTreeSet<(String, u32, u32)> =
                d.alarms.iter().map(|a| (a.device.clone(), a.boot, a.seq)).collect();
            (d.outbox.len(), keys)
        };
        let stored = blocking(|| points(&db, "detector_state"));
        let missing = keys.iter().filter(|k| !stored.contains_key(*k)).count();
        let cases: BTreeSet<u64> =
            hook.received().iter().filter_map(|(_, v)| v["case_id"].as_u64()).collect();
        if pending == 0 && missing == 0 && cases.len() >= fires_seen.len() {
            break;
        }
        if settling.elapsed() > config.settle {
            say(format!("  settling gave up: {pending} alarms unacknowledged, {missing} not in InfluxDB"));
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Time for a late duplicate (a replay, a delayed delivery) to show, and for the last
    // heartbeats to drain.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let settled_in = settling.elapsed();
    traffic.abort();

    let listed = api.get(&token, "/api/v1/cases?state=any&limit=100000").await;
    let mut cases: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for case in listed["cases"].as_array().into_iter().flatten() {
        if let (Some(b), Some(id)) = (case["location"]["building"].as_str(), case["id"].as_u64()) {
            cases.entry(b.to_owned()).or_default().insert(id);
        }
    }
    let pages = hook
        .received()
        .into_iter()
        .map(|(at, v): (Instant, Value)| PageSeen {
            at: at.duration_since(start),
            id: v["notification_id"].as_u64().unwrap_or(0),
            case: v["case_id"].as_u64().unwrap_or(0),
            desk: v["desk"].as_str().unwrap_or_default().to_owned(),
        })
        .collect();
    let (alarm_points, heartbeat_points) =
        blocking(|| (points(&db, "detector_state"), points(&db, "device_heartbeat")));
    let d = shared.lock().unwrap();
    let seen = Observations {
        faults: done,
        alarms: d.alarms.clone(),
        fires: fires_seen,
        alarm_points,
        heartbeats_sent: d.heartbeats,
        heartbeat_points,
        pages,
        cases,
        page_grace: config.page_grace,
        settled_in,
    };
    drop(d);
    let report = judge(seen);
    if !report.violations.is_empty() && config.verbose {
        eprintln!("gateway log tail:\n{}", gateway.log_tail(40));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_is_the_seeds_and_holds_every_kind_of_fault_without_overlaps() {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        assert_eq!(plan(7, minutes(3), 120), plan(7, minutes(3), 120));
        assert_ne!(plan(7, minutes(3), 120), plan(8, minutes(3), 120));
        for (m, count) in [(3, 5), (30, 30)] {
            let p = plan(11, minutes(m), 120);
            assert_eq!(p.faults.len(), count);
            let kinds: BTreeSet<FaultKind> = p.faults.iter().map(|f| f.kind).collect();
            assert_eq!(kinds.len(), 5, "{p:?}");
            for pair in p.faults.windows(2) {
                assert!(pair[0].at + pair[0].hold <= pair[1].at, "{pair:?}");
            }
            assert!(
                p.faults
                    .iter()
                    .all(|f| f.hold >= Duration::from_secs(1) && f.hold <= Duration::from_secs(20))
            );
            assert!(p.fires.len() >= 4 && p.fires.last().unwrap().at < minutes(m));
            for f in &p.faults {
                assert!(
                    p.fires.iter().any(|fire| fire.at > f.at && fire.at < f.at + f.hold),
                    "a fire in {f:?}"
                );
            }
        }
    }

    fn outage(kind: FaultKind, began: u64, ended: u64) -> FaultDone {
        FaultDone {
            fault: Fault { kind, at: Duration::ZERO, hold: Duration::ZERO, step_h: 1 },
            began: Duration::from_secs(began),
            ended: Duration::from_secs(ended),
        }
    }

    #[test]
    fn the_page_bound_moves_past_interrupting_faults_only() {
        let s = Duration::from_secs;
        let check =
            |faults: &[FaultDone], expected: u64| assert_eq!(page_bound(s(100), s(20), faults), s(expected));
        check(&[], 120);
        check(&[outage(FaultKind::GatewayKill, 110, 115)], 135);
        check(&[outage(FaultKind::GatewayKill, 90, 105)], 125);
        check(&[outage(FaultKind::GatewayKill, 130, 135)], 120);
        check(&[outage(FaultKind::DiskFull, 100, 118)], 120);
        // A chain: the broker goes away within the moved bound.
        check(&[outage(FaultKind::GatewayKill, 110, 115), outage(FaultKind::BrokerRestart, 130, 140)], 160);
    }

    #[test]
    fn a_page_twice_is_allowed_only_across_a_kill_during_a_full_disk() {
        let page = |at, id| PageSeen { at: Duration::from_secs(at), id, case: 1, desk: "grid:G0".into() };
        let seen = |faults| Observations {
            faults,
            pages: vec![page(10, 1), page(30, 1), page(31, 2)],
            ..Observations::default()
        };
        let causes = |r: Report| (r.duplicates.keys().copied().collect::<Vec<_>>(), r.violations.len());
        assert_eq!(causes(judge(seen(vec![]))), (vec![DuplicateCause::Unexplained], 1));
        assert_eq!(
            causes(judge(seen(vec![outage(FaultKind::GatewayKill, 20, 22)]))),
            (vec![DuplicateCause::KillOnHealthyDisk], 1)
        );
        // Killed a second after the page arrived: its delivery was not recorded yet.
        assert_eq!(
            causes(judge(seen(vec![outage(FaultKind::GatewayKill, 11, 13)]))),
            (vec![DuplicateCause::KillInFlight], 0)
        );
        assert_eq!(
            causes(judge(seen(vec![
                outage(FaultKind::DiskFull, 5, 25),
                outage(FaultKind::GatewayKill, 20, 22)
            ]))),
            (vec![DuplicateCause::KillDuringFullDisk], 0)
        );
    }

    #[test]
    fn an_alarm_missing_or_stored_twice_is_a_violation() {
        let alarm = |seq| AlarmSent {
            device: "sd".into(),
            boot: 1,
            seq,
            fire: 0,
            raised: Duration::ZERO,
            acked: Some(Duration::ZERO),
            sends: 1,
        };
        let mut seen = Observations { alarms: vec![alarm(1), alarm(2)], ..Observations::default() };
        seen.alarm_points.insert(("sd".into(), 1, 1), 1);
        seen.alarm_points.insert(("sd".into(), 1, 2), 2);
        let report = judge(seen);
        assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
        assert!(report.violations[0].contains("2 times"));
    }
}
