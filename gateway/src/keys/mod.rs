//! Device keys: the gateway's key store, the verdict on each uplink's tag, and the signing of
//! downlinks.
//!
//! Every device may hold its own secret key ([`firegrid_protocol::DeviceKey`], issued by
//! `firegrid devices provision`). The store says per device:
//!
//! - its current key, and during a rotation the previous one with the time until which it is
//!   still accepted (devices are re-keyed in the field one by one);
//! - whether it is revoked (every message refused, nothing sent to it);
//! - whether its unsigned messages are still accepted (`accept_unsigned`, the migration switch
//!   for firmware that does not sign yet; off by default for every device with a key).
//!
//! A device without an entry has no key: its messages are accepted unsigned, counted as
//! unauthenticated and logged (rate-limited), as for every firmware of schema version 1.
//!
//! The store is a TOML file readable by its owner only (mode 0600: [`KeyStore::load`] refuses
//! a file others can read). Keys never reach logs, metrics, the API or error messages:
//! [`firegrid_protocol::DeviceKey`]'s `Debug` prints `redacted`, and nothing here formats one.

pub mod admin;
mod counter;
mod store;

use std::collections::HashMap;

use firegrid_protocol::{AuthError, DeviceId, DeviceKey, Downlink, Uplink, VillageId};

pub use counter::CommandCounter;
pub use store::{KeyStoreError, ProvisionScope, provision, revoke, rotate, write_provisioning_csv};

/// One device's key state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceKeys {
    /// The key the device signs with and commands are signed with.
    pub key: DeviceKey,
    /// The key before the last rotation, accepted on uplinks until `.1` (Unix ms).
    pub previous: Option<(DeviceKey, u64)>,
    /// Refuse everything from this device.
    pub revoked: bool,
    /// Accept its unsigned messages too (firmware not yet signing); counted as unauthenticated.
    pub accept_unsigned: bool,
}

impl DeviceKeys {
    /// A fresh entry holding `key` only.
    pub fn new(key: DeviceKey) -> Self {
        DeviceKeys { key, previous: None, revoked: false, accept_unsigned: false }
    }
}

/// The verdict on an uplink's authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// The tag verified under the device's key: the replay window may move.
    Verified,
    /// Accepted without proof (a device without a key, or one whose unsigned messages are
    /// still accepted): stored and handled, but it never moves the authenticated replay window.
    Unauthenticated,
    /// Refused, with the metrics reason.
    Refused(&'static str),
}

/// Every device's keys, as loaded from the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyStore {
    devices: HashMap<DeviceId, DeviceKeys>,
}

impl KeyStore {
    /// A store without devices: every device is keyless.
    pub fn empty() -> Self {
        KeyStore::default()
    }

    /// The entry of `device`.
    pub fn get(&self, device: &DeviceId) -> Option<&DeviceKeys> {
        self.devices.get(device)
    }

    /// Adds or replaces the entry of `device`.
    pub fn insert(&mut self, device: DeviceId, keys: DeviceKeys) {
        self.devices.insert(device, keys);
    }

    /// Devices with an entry.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether no device has a key.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Entries sorted by device id (for writing the file deterministically).
    pub fn entries(&self) -> Vec<(&DeviceId, &DeviceKeys)> {
        let mut v: Vec<_> = self.devices.iter().collect();
        v.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        v
    }

    /// Judges `msg`, received on `village`'s topics at `now_ms` (wall time, for the rotation
    /// grace period only). The device id is the topic's, which the payload was checked to match.
    pub fn judge(&self, village: &VillageId, msg: &Uplink, now_ms: u64) -> Auth {
        let Some(entry) = self.devices.get(&msg.dev) else {
            return if msg.is_signed() {
                // A device that signs but is not in the store: its tag cannot be checked.
                Auth::Refused("unknown_key")
            } else {
                Auth::Unauthenticated
            };
        };
        if entry.revoked {
            return Auth::Refused("revoked");
        }
        match msg.verify(village, &entry.key) {
            Ok(()) => Auth::Verified,
            Err(AuthError::Unsigned) if entry.accept_unsigned => Auth::Unauthenticated,
            Err(AuthError::Unsigned) => Auth::Refused("unsigned"),
            Err(_) => match &entry.previous {
                Some((old, until_ms)) if now_ms <= *until_ms && msg.verify(village, old).is_ok() => {
                    Auth::Verified
                }
                _ => Auth::Refused("bad_signature"),
            },
        }
    }

    /// Signs `cmd` for `device` of `village` in its boot `boot`, when the device has a key (a
    /// keyless device gets the command unsigned, as version-1 firmware expects). `false` when
    /// the device is revoked: nothing may be sent to it.
    pub fn sign(&self, cmd: &mut Downlink, village: &VillageId, device: &DeviceId, boot: u16) -> bool {
        match self.devices.get(device) {
            Some(entry) if entry.revoked => false,
            Some(entry) => {
                cmd.sign(village, device, boot, &entry.key);
                true
            }
            None => true,
        }
    }
}

#[cfg(test)]
mod tests;
