//! [`Publisher`]: the device side of a test or benchmark, one MQTT client publishing at QoS 1
//! on behalf of many devices and counting the broker's acknowledgements.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// Requests the client queues before `send` waits.
const QUEUE: usize = 10_000;

/// A QoS 1 publisher on the broker at `127.0.0.1`. Its session is persistent, so messages in
/// flight across a broker restart are retransmitted. Its event loop runs on the current tokio
/// runtime until the publisher is dropped, reconnecting 100 ms after a failure.
pub struct Publisher {
    client: AsyncClient,
    acked: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    /// Connects as `client_id` to the broker at `127.0.0.1:port`, with up to `inflight`
    /// publishes awaiting the broker's acknowledgement.
    pub fn start(port: u16, client_id: &str, inflight: u16) -> Publisher {
        Publisher::start_with(MqttOptions::new(client_id, "127.0.0.1", port), inflight)
    }

    /// As [`Publisher::start`], with the connection described by `opts` (credentials, TLS); its
    /// session is made persistent.
    pub fn start_with(mut opts: MqttOptions, inflight: u16) -> Publisher {
        opts.set_clean_session(false).set_inflight(inflight).set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(opts, QUEUE);
        let acked = Arc::new(AtomicU64::new(0));
        let counter = acked.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Publisher { client, acked, task }
    }

    /// Publishes one `(topic, payload)` at QoS 1, waiting while the client's queue is full.
    ///
    /// # Panics
    /// When the event loop has stopped (it runs until the publisher is dropped).
    pub async fn send(&self, (topic, payload): (String, Vec<u8>)) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    }

    /// Publishes acknowledged by the broker so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until the broker has acknowledged `n` publishes.
    ///
    /// # Panics
    /// When it has not within `timeout`, saying how many it has.
    pub async fn wait_acked(&self, n: u64, timeout: Duration) {
        let started = Instant::now();
        while self.acked() < n {
            assert!(started.elapsed() < timeout, "the broker acknowledged {} of {n} publishes", self.acked());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publishes every message as `client_id` at QoS 1 and returns once the broker has
/// acknowledged them all.
///
/// # Panics
/// When the broker has not acknowledged them within 10 minutes.
pub async fn publish_all(port: u16, client_id: &str, messages: &[(String, Vec<u8>)]) {
    let publisher = Publisher::start(port, client_id, 500);
    for message in messages {
        publisher.send(message.clone()).await;
    }
    publisher.wait_acked(messages.len() as u64, Duration::from_secs(600)).await;
}
