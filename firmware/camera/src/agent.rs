//! [`Agent`]: the I/O shell around the pure parts. Three tasks and a loop:
//!
//! - the **stream task** opens the event stream through the [`EventTransport`], forwards its
//!   bytes, and reconnects with exponential backoff and jitter when it fails, ends, or stays
//!   silent for `missed_heartbeats` heartbeat periods (a camera that hangs keeps the TCP
//!   connection open but stops sending);
//! - the **probe task** sends an RTSP `OPTIONS` to every channel with an `rtsp` URL;
//! - the **publisher** ([`crate::mqtt`]) drains the outbox to the broker;
//! - the **loop** owns the parser and the [`ChannelTracker`]: bytes in, signals, tracker,
//!   uplinks into the outbox. It is the only writer of camera events and health, so their
//!   sequence numbers follow the order things happened.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use bytes::Bytes;
use firegrid_protocol::UplinkBody;
use tokio::io::AsyncReadExt;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::boot::{BootError, next_boot};
use crate::channel::ChannelTracker;
use crate::config::{Config, ConfigError, duration_ms};
use crate::mqtt::{Publisher, wall_ms};
use crate::outbox::{Outbox, OutboxError};
use crate::queue::UplinkQueue;
use crate::signal::Parsed;
use crate::source::EventTransport;
use crate::stats::AgentStats;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// The boot counter could not be advanced.
    #[error("{0}")]
    Boot(#[from] BootError),
    /// The outbox could not be opened.
    #[error("{0}")]
    Outbox(#[from] OutboxError),
}

/// What the stream task tells the loop.
enum StreamEvent {
    /// A new stream: the parser starts over.
    Connected,
    /// Bytes of the current stream.
    Data(Bytes),
}

/// A camera agent. See the module documentation.
pub struct Agent<T> {
    config: Config,
    transport: T,
    stats: Arc<AgentStats>,
}

impl<T: EventTransport> Agent<T> {
    /// An agent for `config` reading events through `transport`: a
    /// [`crate::source::CameraTransport`] for a real camera, or any closure returning an
    /// `AsyncRead` of the vendor's format (the fleet simulator).
    ///
    /// # Errors
    /// [`AgentError::Config`] when the configuration is invalid.
    pub fn new(config: Config, transport: T) -> Result<Self, AgentError> {
        config.validate()?;
        Ok(Agent { config, transport, stats: Arc::new(AgentStats::default()) })
    }

    /// The agent's counters, readable while it runs.
    pub fn stats(&self) -> Arc<AgentStats> {
        Arc::clone(&self.stats)
    }

    /// Runs until `shutdown` is cancelled. Increments the boot counter and opens the outbox
    /// first; messages an earlier run left in it are sent before new ones.
    ///
    /// # Errors
    /// [`AgentError`] when the state directory cannot be used; once running, every failure
    /// is retried and logged instead.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AgentError> {
        let Agent { config, transport, stats } = self;
        let village = config.village_id()?;
        let dev = config.device_id()?;
        let boot = next_boot(&config.state_dir.join("boot.json"))?;
        let outbox = Outbox::open(&config.state_dir.join("outbox.jsonl"), config.outbox.max_pending)?;
        if outbox.corrupt_records() > 0 {
            tracing::warn!(records = outbox.corrupt_records(), "Skipped unreadable outbox records.");
        }
        tracing::info!(%dev, boot, backlog = outbox.len(), "Camera agent starting.");
        stats.set_depth(outbox.len());
        let key = config.device_key()?;
        let mut queue = UplinkQueue::new(dev.clone(), boot, outbox);
        if let Some(key) = &key {
            queue = queue.signing(village.clone(), key.clone());
        }
        tracing::info!(signed = key.is_some(), "Uplinks are signed when the camera has a key.");
        let queue = Arc::new(Mutex::new(queue));
        let wake = Arc::new(Notify::new());
        // Cancelled when this function returns, whatever the reason, so no task outlives it.
        let tasks = shutdown.child_token();
        let _stop_tasks = tasks.clone().drop_guard();

        let publisher = Publisher {
            config: config.mqtt.clone(),
            village,
            dev,
            queue: Arc::clone(&queue),
            wake: Arc::clone(&wake),
            stats: Arc::clone(&stats),
            key,
            guard: Mutex::new(firegrid_protocol::DownlinkGuard::new()),
        };
        let publisher = tokio::spawn(publisher.run(tasks.clone()));

        let (stream_tx, mut stream_rx) = mpsc::channel(64);
        let stream = tokio::spawn(stream_task(
            transport,
            config.clone(),
            stream_tx,
            Arc::clone(&stats),
            tasks.clone(),
        ));

        let (probe_tx, mut probe_rx) = mpsc::channel(64);
        let rtsp: Vec<(u16, String)> =
            config.channels.iter().filter_map(|c| Some((c.channel, c.rtsp.clone()?))).collect();
        let probes =
            tokio::spawn(probe_task(rtsp, config.clone(), probe_tx, Arc::clone(&stats), tasks.clone()));

        let started = Instant::now();
        let now_ms = || duration_ms(started.elapsed());
        let mut tracker = ChannelTracker::new(config.tracker(), now_ms());
        let new_parser =
            || config.camera.vendor.parser(&config.camera.extra_codes, &config.camera.onvif_sources);
        let mut parser = new_parser();
        let mut parsed = Vec::new();
        // A quarter of the heartbeat period resolves "3 missed heartbeats" to within 8 %.
        let tick_every =
            (config.camera.heartbeat_interval / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The camera's heartbeat to the gateway; the first one follows the connect's own
        // `status` `online` by a full period.
        let status_every = config.mqtt.status_every;
        let mut alive = tokio::time::interval_at(
            tokio::time::Instant::now() + status_every.max(Duration::from_millis(100)),
            status_every.max(Duration::from_millis(100)),
        );
        alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let enqueue = |bodies: Vec<UplinkBody>| {
            if bodies.is_empty() {
                return;
            }
            let mut queue = queue.lock().unwrap_or_else(|p| p.into_inner());
            for body in bodies {
                let kind = body.kind().as_str();
                match queue.enqueue(body, wall_ms()) {
                    Ok(msg) => stats.queued(kind, msg.seq, queue.outbox().len()),
                    Err(e) => stats.queue_failed(kind, &e),
                }
            }
            drop(queue);
            wake.notify_one();
        };

        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                event = stream_rx.recv() => match event {
                    Some(StreamEvent::Connected) => parser = new_parser(),
                    Some(StreamEvent::Data(bytes)) => {
                        parser.feed(&bytes, &mut parsed);
                        for item in parsed.drain(..) {
                            match item {
                                Ok(Parsed::Signal(signal)) => {
                                    stats.signal();
                                    enqueue(tracker.on_signal(&signal, now_ms()));
                                }
                                Ok(Parsed::Unknown { code }) => stats.unknown_event(&code),
                                Err(e) => stats.parse_failed(&e),
                            }
                        }
                    }
                    None => break,
                },
                Some((channel, ok)) = probe_rx.recv() => enqueue(tracker.on_probe(channel, ok, now_ms())),
                _ = tick.tick() => enqueue(tracker.tick(now_ms())),
                _ = alive.tick(), if !status_every.is_zero() => {
                    enqueue(vec![UplinkBody::Status(firegrid_protocol::Status { online: true })]);
                }
            }
        }
        tasks.cancel();
        let _ = tokio::join!(publisher, stream, probes);
        tracing::info!("Camera agent stopped.");
        Ok(())
    }
}

/// Opens the event stream, forwards its bytes, reconnects. See the module documentation.
async fn stream_task<T: EventTransport>(
    transport: T,
    config: Config,
    tx: mpsc::Sender<StreamEvent>,
    stats: Arc<AgentStats>,
    shutdown: CancellationToken,
) {
    let new_backoff = || {
        backon::ExponentialBuilder::default()
            .with_min_delay(config.camera.reconnect_min)
            .with_max_delay(config.camera.reconnect_max)
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut backoff = new_backoff();
    let silence = config.stream_silence();
    loop {
        let connected = tokio::select! {
            () = shutdown.cancelled() => return,
            connected = transport.connect() => connected,
        };
        match connected {
            Err(e) => stats.stream_failed(&e),
            Ok(mut reader) => {
                stats.stream_connected();
                if tx.send(StreamEvent::Connected).await.is_err() {
                    return;
                }
                let mut buf = vec![0u8; 16 * 1024];
                let reason = loop {
                    let read = tokio::select! {
                        () = shutdown.cancelled() => return,
                        read = tokio::time::timeout(silence, reader.read(&mut buf)) => read,
                    };
                    match read {
                        Ok(Ok(0)) => break "closed by the camera".to_owned(),
                        Ok(Ok(n)) => {
                            // Data flowed: the next failure starts the backoff over.
                            backoff = new_backoff();
                            if tx.send(StreamEvent::Data(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                                return;
                            }
                        }
                        Ok(Err(e)) => break e.to_string(),
                        Err(_) => break format!("silent for {silence:?}"),
                    }
                };
                stats.stream_ended(&reason);
            }
        }
        let wait = backoff.next().unwrap_or(config.camera.reconnect_max);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Probes every channel's RTSP URL each `probe.interval`, all channels at once.
async fn probe_task(
    channels: Vec<(u16, String)>,
    config: Config,
    tx: mpsc::Sender<(u16, bool)>,
    stats: Arc<AgentStats>,
    shutdown: CancellationToken,
) {
    if channels.is_empty() {
        return;
    }
    let mut every = tokio::time::interval(config.probe.interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let probes = channels.iter().map(|(channel, url)| async {
            let result = crate::rtsp::probe(url, config.probe.timeout).await;
            (*channel, result)
        });
        let results: BTreeMap<u16, _> = futures_util::future::join_all(probes).await.into_iter().collect();
        for (channel, result) in results {
            if let Err(e) = &result {
                stats.probe_failed(channel, e);
            }
            if tx.send((channel, result.is_ok())).await.is_err() {
                return;
            }
        }
    }
}
