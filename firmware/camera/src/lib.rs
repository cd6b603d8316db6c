//! The firegrid camera agent: runs on a camera's (or NVR's) embedded Linux, or next to it,
//! and normalises what IP cameras already produce into firegrid's device protocol.
//!
//! Its main types:
//!
//! - Pure, push-fed parsers of the three event APIs, in [`vendor`]:
//!   [`vendor::hikvision::HikvisionParser`] (ISAPI alert stream, multipart XML),
//!   [`vendor::dahua::DahuaParser`] (`eventManager.cgi` attach stream) and
//!   [`vendor::onvif::OnvifParser`] (PullPoint `PullMessagesResponse`). Each turns bytes into
//!   vendor-neutral [`CameraSignal`]s (smoke, fire, fire lane blocked, video loss, tampering,
//!   heartbeat) or typed [`ParseError`]s, and each vendor module can also *write* its format
//!   ([`vendor::Vendor::encode`]) for tests and the fleet simulator.
//! - [`ChannelTracker`] (sans-IO, time as an argument): turns signals and RTSP probe results
//!   into protocol `camera_event` uplinks on start and end, and `camera_health` uplinks on
//!   status changes (offline after 3 missed heartbeats, back after 1 good one).
//! - [`Outbox`]: the file-backed, fsynced, ordered queue from which uplinks are delivered and
//!   which they leave only when acknowledged.
//! - [`Agent`]: the I/O shell. An [`source::EventTransport`] opens the event stream (HTTP with
//!   Digest or Basic auth, ONVIF pull loop, or a [`CameraFeed`] a simulator pushes into), the agent
//!   reconnects with backoff and jitter, probes RTSP, and publishes through rumqttc at QoS 1
//!   from the outbox, in order, removing messages on the gateway's `down/ack`.
//! - [`Config`]: the TOML configuration; `firegrid-camera.example.toml` documents it.
//!
//! **Architecture Invariant:** parsers and the tracker never do I/O and never read a clock;
//! only `agent`, `mqtt`, `source` and `rtsp` touch the network, and only `outbox` and `boot`
//! the disk. Messages are only the protocol crate's.

pub mod agent;
pub mod boot;
pub mod channel;
pub mod config;
pub mod mqtt;
pub mod multipart;
pub mod outbox;
pub mod queue;
pub mod rtsp;
pub mod signal;
pub mod source;
pub mod stats;
pub mod vendor;

pub use agent::{Agent, AgentError};
pub use channel::{ChannelTracker, TrackerConfig};
pub use config::Config;
pub use outbox::{Outbox, OutboxError};
pub use signal::{CameraSignal, ExtraCodes, ParseError, Parsed, SignalKind, StreamParser};
pub use source::feed::{CameraFeed, FeedTransport, feed};
pub use source::{CameraTransport, EventTransport, TransportError};
pub use stats::{AgentStats, StatsSnapshot};
pub use vendor::Vendor;
