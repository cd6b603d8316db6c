//! The gateway's side of the alarm loop, the part that knows devices: [`signals`] turns
//! device messages, liveness events and Modbus conditions into engine signals, [`linkage`]
//! makes each device of a sounding building follow the engine's sounder state, and
//! [`launch`] starts the case service of `firegrid-cases` with its store, the outbox of
//! `firegrid-notify` and the feeds from ingest; [`lease`] holds the case store's lease of a
//! village's active gateway.

pub mod launch;
pub mod lease;
pub mod linkage;
pub mod signals;

pub use launch::AlarmLoop;
