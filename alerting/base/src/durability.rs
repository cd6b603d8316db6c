//! Which of the gateway's stores cannot write, and how much each holds in memory meanwhile.
//!
//! A full, read-only or failing disk must not stop the alarm path (ARCHITECTURE.md, "A sick
//! disk"): the spool, the case store and the outbox each keep what they could not write in
//! a bounded memory queue and write it when the disk takes writes again. This is where they
//! say so, for `/healthz`, `/metrics` and the start-of-outage log line.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// One of the stores on the gateway's disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// The spool of accepted messages (the gateway's spool).
    Spool,
    /// The alarm loop's input log and case documents (`firegrid-cases`).
    Cases,
    /// The notification outbox (`firegrid-notify`).
    Outbox,
}

impl Store {
    /// Every store, in the order they are reported.
    pub const ALL: [Store; 3] = [Store::Spool, Store::Cases, Store::Outbox];

    /// The label in metrics and health.
    pub fn name(self) -> &'static str {
        match self {
            Store::Spool => "spool",
            Store::Cases => "cases",
            Store::Outbox => "outbox",
        }
    }
}

/// The write health of every store. Shared by the stores and the health reporters.
#[derive(Debug, Default)]
pub struct StoreHealth {
    unwritable: [AtomicBool; 3],
    held: [AtomicU64; 3],
}

impl StoreHealth {
    /// Records that `store` failed to write (`error`); logs once per outage.
    pub fn failed(&self, store: Store, error: &dyn std::fmt::Display) {
        if !self.unwritable[store as usize].swap(true, Relaxed) {
            tracing::error!(
                store = store.name(),
                %error,
                "A store cannot write; alarms and events are held in memory and still handled, telemetry is shed."
            );
        }
    }

    /// Records that `store` wrote again; logs once per outage.
    pub fn recovered(&self, store: Store) {
        if self.unwritable[store as usize].swap(false, Relaxed) {
            tracing::warn!(store = store.name(), "A store writes again; what it held in memory is stored.");
        }
    }

    /// Sets how many records `store` holds in memory, waiting for the disk.
    pub fn set_held(&self, store: Store, held: u64) {
        self.held[store as usize].store(held, Relaxed);
    }

    /// Whether `store` is failing to write.
    pub fn is_unwritable(&self, store: Store) -> bool {
        self.unwritable[store as usize].load(Relaxed)
    }

    /// Records `store` holds in memory.
    pub fn held(&self, store: Store) -> u64 {
        self.held[store as usize].load(Relaxed)
    }

    /// The stores failing to write.
    pub fn unwritable(&self) -> Vec<&'static str> {
        Store::ALL.into_iter().filter(|s| self.is_unwritable(*s)).map(Store::name).collect()
    }
}
