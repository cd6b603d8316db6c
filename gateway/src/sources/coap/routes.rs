//! Which devices the gateway reaches over CoAP, and the command each one has waiting.
//!
//! An NB-IoT device can be reached only just after it spoke (its radio sleeps otherwise, and
//! a carrier's network drops unsolicited datagrams to it), so a command for it is not sent:
//! it waits here and leaves in the response to the device's next request. The firmware
//! driver hands every command for a device here first ([`Routes::post`]); a device that never
//! posted over CoAP is not here, and its command goes out over MQTT as before.
//!
//! Each device has one slot, and a newer command replaces an older one still waiting: every
//! firmware command is the rollout's answer to where the device stood last, so the newest
//! is the one to act on (a stale chunk would only be refused `out_of_order`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Debug, Default)]
struct Slot {
    command: Option<Vec<u8>>,
    /// Advances with every command posted.
    stamp: u64,
    notify: Arc<Notify>,
}

/// The devices reached over CoAP, by device id.
#[derive(Debug, Default)]
pub struct Routes {
    slots: Mutex<HashMap<String, Slot>>,
}

/// Where one request's wait for its answer starts: [`Routes::open`].
#[derive(Debug)]
pub struct Ticket {
    device: String,
    stamp: u64,
    notify: Arc<Notify>,
}

impl Routes {
    /// Notes that `device` just spoke over CoAP: from now on its commands wait here. Call it
    /// before handing the device's message on, so that the answer to it cannot miss the slot.
    pub fn open(&self, device: &str) -> Ticket {
        let mut slots = self.slots.lock().unwrap();
        let slot = slots.entry(device.to_owned()).or_default();
        Ticket { device: device.to_owned(), stamp: slot.stamp, notify: slot.notify.clone() }
    }

    /// Leaves `command` for `device` if it is reached over CoAP; gives it back otherwise (send
    /// it over MQTT).
    pub fn post(&self, device: &str, command: Vec<u8>) -> Result<(), Vec<u8>> {
        let mut slots = self.slots.lock().unwrap();
        let Some(slot) = slots.get_mut(device) else { return Err(command) };
        slot.command = Some(command);
        slot.stamp += 1;
        slot.notify.notify_waiters();
        Ok(())
    }

    /// The answer to the request `ticket` was opened for: the first command posted after it,
    /// waiting up to `wait`; at the end of the wait, a command that was already waiting
    /// before the request (a resend, an offer made between two requests); else `None`.
    pub async fn answer(&self, ticket: Ticket, wait: Duration) -> Option<Vec<u8>> {
        let notified = ticket.notify.notified();
        tokio::pin!(notified);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the stamp is read, so a post in between wakes it.
            notified.as_mut().enable();
            if let Some(command) = self.take_newer(&ticket) {
                return Some(command);
            }
            if tokio::time::timeout_at(deadline, notified.as_mut()).await.is_err() {
                return self.take(&ticket.device);
            }
            notified.set(ticket.notify.notified());
        }
    }

    fn take_newer(&self, ticket: &Ticket) -> Option<Vec<u8>> {
        let mut slots = self.slots.lock().unwrap();
        let slot = slots.get_mut(&ticket.device)?;
        if slot.stamp > ticket.stamp { slot.command.take() } else { None }
    }

    fn take(&self, device: &str) -> Option<Vec<u8>> {
        self.slots.lock().unwrap().get_mut(device)?.command.take()
    }

    /// Devices reached over CoAP.
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
