//! The I/O: one tokio task per device that connects, polls, times out, reconnects with
//! backoff and sends what the pure parts make of the answers down a channel.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use firegrid_protocol::DeviceId;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_modbus::Slave;
use tokio_modbus::client::{Context, Reader};
use tokio_util::sync::CancellationToken;

use super::conditions::{ConditionEvent, DeviceMonitor, Reading};
use super::config::{DeviceConfig, ModbusConfig, Parity, RegisterKind, Transport};
use super::registers::{Read, decode_reads, plan_reads};

/// What the Modbus source reports.
#[derive(Debug, Clone, PartialEq)]
pub enum ModbusEvent {
    /// A successful poll's values.
    Reading(Reading),
    /// A condition raised or cleared.
    Condition(ConditionEvent),
    /// A poll failed: no connection, timeout, exception response or short answer. Sent for
    /// every failed poll (it feeds metrics and liveness); the log says it only when a device
    /// starts failing.
    PollFailed {
        /// The device.
        device: DeviceId,
        /// When (Unix ms).
        ts_ms: u64,
        /// What went wrong.
        error: String,
    },
}

/// Counters of one device, for `/metrics`.
#[derive(Debug, Default)]
pub struct DeviceStats {
    /// Polls that returned every value.
    pub polls_ok: AtomicU64,
    /// Polls that failed (any reason).
    pub polls_failed: AtomicU64,
    /// Connections established (the first one and every reconnect).
    pub connects: AtomicU64,
    /// 1 while the device is failing (since its last failed poll), else 0.
    pub failing: AtomicU64,
}

/// Counters of every configured device, keyed by device id.
#[derive(Debug, Default)]
pub struct ModbusStats {
    /// One entry per configured device.
    pub devices: BTreeMap<DeviceId, Arc<DeviceStats>>,
}

impl ModbusStats {
    /// Zeroed counters for every device of `config`.
    pub fn new(config: &ModbusConfig) -> Self {
        ModbusStats { devices: config.devices.iter().map(|d| (d.id.clone(), Arc::default())).collect() }
    }

    /// The counters of `device`, if it is configured.
    pub fn device(&self, device: &str) -> Option<&Arc<DeviceStats>> {
        self.devices.iter().find(|(id, _)| id.as_str() == device).map(|(_, stats)| stats)
    }
}

/// Shortest wait before reconnecting after a failure, whatever the poll interval: a device
/// that refuses connections is not retried in a tight loop.
const MIN_BACKOFF: Duration = Duration::from_millis(50);

/// Polls every device of `config` until `shutdown` is cancelled or the receiver of `events`
/// is dropped, one task per device, so a device that hangs never delays another.
pub async fn run(
    config: ModbusConfig,
    events: mpsc::Sender<ModbusEvent>,
    stats: Arc<ModbusStats>,
    shutdown: CancellationToken,
) {
    let mut tasks = JoinSet::new();
    for device in config.devices {
        let device_stats = stats.device(&device.id).cloned().unwrap_or_default();
        tasks.spawn(run_device(device, events.clone(), device_stats, shutdown.clone()));
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(error) = done {
            tracing::error!(%error, "A Modbus device task ended abnormally.");
        }
    }
}

/// Polls one device until `shutdown` is cancelled or the receiver of `events` is dropped.
///
/// While it answers, polls start every `poll_interval`. After a failure the connection is
/// dropped (after a timeout, a late answer would otherwise be taken for the next request's)
/// and the next attempt waits `poll_interval`, then twice that, up to `max_backoff`, with
/// jitter so that devices behind one failed switch do not all reconnect at the same instant.
pub async fn run_device(
    device: DeviceConfig,
    events: mpsc::Sender<ModbusEvent>,
    stats: Arc<DeviceStats>,
    shutdown: CancellationToken,
) {
    let new_backoff = || crate::retry::backoff(device.poll_interval.max(MIN_BACKOFF), device.max_backoff);
    let mut backoff = new_backoff();
    let reads = plan_reads(&device.points);
    let mut monitor = DeviceMonitor::new(&device);
    let mut connection: Option<Context> = None;
    let id = device.id.as_str();
    let mut failing = false;
    let mut next_poll = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_poll) => {}
            _ = shutdown.cancelled() => break,
        }
        let started = Instant::now();
        let polled = tokio::select! {
            polled = poll(&device, &reads, &mut connection, &stats) => polled,
            _ = shutdown.cancelled() => break,
        };
        let now = now_ms();
        let mut out = Vec::new();
        match polled {
            Ok(values) => {
                stats.polls_ok.fetch_add(1, Ordering::Relaxed);
                if failing {
                    failing = false;
                    stats.failing.store(0, Ordering::Relaxed);
                    tracing::info!(
                        device = id,
                        failed_polls = monitor.failures(),
                        "Modbus device answers again."
                    );
                }
                let outcome = monitor.poll_ok(&values, now);
                out.push(ModbusEvent::Reading(outcome.reading));
                out.extend(outcome.conditions.into_iter().map(ModbusEvent::Condition));
                backoff = new_backoff();
                next_poll = started + device.poll_interval;
            }
            Err(error) => {
                stats.polls_failed.fetch_add(1, Ordering::Relaxed);
                if !failing {
                    // Logged once per outage, not per poll: a dead sensor polled every 5 s
                    // would otherwise drown the log.
                    failing = true;
                    stats.failing.store(1, Ordering::Relaxed);
                    tracing::warn!(device = id, %error, "Modbus device stopped answering; retrying with backoff.");
                }
                let conditions = monitor.poll_failed(now);
                out.push(ModbusEvent::PollFailed { device: device.id.clone(), ts_ms: now, error });
                out.extend(conditions.into_iter().map(ModbusEvent::Condition));
                next_poll = Instant::now() + backoff.next().unwrap_or(device.max_backoff);
            }
        }
        for event in out {
            if let ModbusEvent::Condition(c) = &event {
                tracing::info!(
                    device = id,
                    condition = ?c.condition,
                    active = c.active,
                    value = c.value,
                    "Modbus condition changed."
                );
            }
            let sent = tokio::select! {
                sent = events.send(event) => sent,
                _ = shutdown.cancelled() => return,
            };
            if sent.is_err() {
                return;
            }
        }
    }
    if let Some(mut connection) = connection {
        // Best effort: the peer may be gone already.
        let _ =
            tokio::time::timeout(device.timeout, tokio_modbus::client::Client::disconnect(&mut connection))
                .await;
    }
}

/// One poll: connects if needed, then sends every read. Any failure drops the connection
/// except an exception response, after which the device is known to be listening.
async fn poll(
    device: &DeviceConfig,
    reads: &[Read],
    connection: &mut Option<Context>,
    stats: &DeviceStats,
) -> Result<Vec<f64>, String> {
    let context = match connection {
        Some(context) => context,
        None => {
            let context = tokio::time::timeout(device.timeout, connect(&device.transport))
                .await
                .map_err(|_| format!("connecting timed out after {:?}", device.timeout))?
                .map_err(|e| format!("connecting failed: {e}"))?;
            stats.connects.fetch_add(1, Ordering::Relaxed);
            connection.insert(context)
        }
    };
    let mut answers = Vec::with_capacity(reads.len());
    for read in reads {
        let request = async {
            match read.kind {
                RegisterKind::Holding => context.read_holding_registers(read.start, read.count).await,
                RegisterKind::Input => context.read_input_registers(read.start, read.count).await,
            }
        };
        let what = || format!("reading {:?} registers {}+{}", read.kind, read.start, read.count);
        match tokio::time::timeout(device.timeout, request).await {
            Ok(Ok(Ok(words))) => answers.push(words),
            Ok(Ok(Err(exception))) => return Err(format!("{}: exception {exception}", what())),
            Ok(Err(error)) => {
                *connection = None;
                return Err(format!("{}: {error}", what()));
            }
            Err(_) => {
                *connection = None;
                return Err(format!("{}: timed out after {:?}", what(), device.timeout));
            }
        }
    }
    decode_reads(&device.points, reads, &answers)
}

async fn connect(transport: &Transport) -> std::io::Result<Context> {
    match transport {
        Transport::Tcp { address, unit } => {
            // Resolved on every connect, so a device behind a DNS name that changed address
            // is found again after a reconnect.
            let mut last = None;
            for addr in tokio::net::lookup_host(address.as_str()).await? {
                match tokio_modbus::client::tcp::connect_slave(addr, Slave(*unit)).await {
                    Ok(context) => return Ok(context),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| std::io::Error::other(format!("{address} resolves to no address"))))
        }
        Transport::Rtu { path, baud, parity, stop_bits, unit } => {
            let builder = tokio_serial::new(path, *baud)
                .data_bits(tokio_serial::DataBits::Eight)
                .parity(match parity {
                    Parity::None => tokio_serial::Parity::None,
                    Parity::Even => tokio_serial::Parity::Even,
                    Parity::Odd => tokio_serial::Parity::Odd,
                })
                .stop_bits(if *stop_bits == 2 {
                    tokio_serial::StopBits::Two
                } else {
                    tokio_serial::StopBits::One
                });
            let port = tokio_serial::SerialStream::open(&builder).map_err(std::io::Error::other)?;
            Ok(tokio_modbus::client::rtu::attach_slave(port, Slave(*unit)))
        }
    }
}

use crate::clock::wall_ms as now_ms;
