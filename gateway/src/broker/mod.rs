//! The embedded MQTT broker (rumqttd), started when no external broker is configured, so that
//! one command runs the whole system on one machine. Production deployments point the gateway
//! at Mosquitto or an EMQX cluster instead (`[mqtt]` in the configuration).

pub mod mosquitto;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Why the embedded broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The generated configuration was rejected.
    #[error("embedded broker configuration: {0}")]
    Config(String),
    /// The broker did not accept connections in time (the port may be taken).
    #[error("embedded broker did not start listening on {0} (is the port in use?)")]
    NotListening(SocketAddr),
}

/// Starts rumqttd on `listen` in its own threads and waits until it accepts connections. It
/// runs until the process exits.
pub fn start_embedded(listen: SocketAddr, max_connections: usize) -> Result<(), BrokerError> {
    // Persistent sessions (clean session off) are kept in memory while the process runs; the
    // in-flight window of 500 lets the gateway batch its fsyncs; payloads up to 256 KiB.
    let text = format!(
        r#"
        id = 0
        [router]
        id = 0
        max_connections = {max_connections}
        max_outgoing_packet_count = 500
        max_segment_size = 104857600
        max_segment_count = 10
        [v4.1]
        name = "v4-1"
        listen = "{listen}"
        next_connection_delay_ms = 0
        [v4.1.connections]
        connection_timeout_ms = 60000
        max_payload_size = 262144
        max_inflight_count = 500
        dynamic_filters = true
        "#
    );
    let config: rumqttd::Config = toml::from_str(&text).map_err(|e| BrokerError::Config(e.to_string()))?;
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(error) = broker.start() {
                tracing::error!(%error, "Embedded MQTT broker stopped.");
            }
        })
        .map_err(|e| BrokerError::Config(e.to_string()))?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok() {
            tracing::info!(%listen, "Embedded MQTT broker listening.");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(BrokerError::NotListening(listen))
}
