//! The `firegrid devices` commands on the key store files: provision, rotate, revoke and the
//! migration switch. They edit the files; a running gateway reloads the key store when it
//! changes.

use std::path::Path;

use firegrid_protocol::{DeviceId, DeviceKey};

use super::store::{KeyStoreError, ProvisionScope, provision, revoke, rotate, write_provisioning_csv};
use super::{DeviceKeys, KeyStore};
use crate::registry::Registry;

/// Why a `firegrid devices` command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The key store.
    #[error(transparent)]
    Keys(#[from] KeyStoreError),
    /// The registry.
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    /// A device named on the command line is not in the registry.
    #[error("device {0} is not in the registry")]
    NotRegistered(String),
    /// A device id is not valid.
    #[error("bad device id {0:?}: {1}")]
    BadId(String, firegrid_protocol::IdError),
}

/// The store at `path`, or an empty one when the file does not exist yet.
fn open_or_empty(path: &Path) -> Result<KeyStore, KeyStoreError> {
    if path.exists() { KeyStore::load(path) } else { Ok(KeyStore::empty()) }
}

fn ids(devices: &[String]) -> Result<Vec<DeviceId>, AdminError> {
    devices.iter().map(|d| DeviceId::new(d).map_err(|e| AdminError::BadId(d.clone(), e))).collect()
}

/// Writes the provisioning file first and the store second: if the store cannot be written
/// the provisioning file is removed again, so no device is ever flashed with a key the
/// gateway does not know.
fn commit(
    store: &KeyStore,
    keys: &Path,
    issued: &[(String, DeviceId, DeviceKey)],
    out: &Path,
) -> Result<(), AdminError> {
    write_provisioning_csv(out, issued)?;
    if let Err(error) = store.save(keys) {
        let _ = std::fs::remove_file(out);
        return Err(error.into());
    }
    Ok(())
}

/// `firegrid devices provision`: keys for the registry's devices without one (or, with
/// `all`, new keys for every device), into `keys` and the provisioning file `out`. Returns how
/// many keys were issued.
pub fn provision_registry(
    registry: &Path,
    keys: &Path,
    out: &Path,
    all: bool,
    now_ms: u64,
    grace_ms: u64,
) -> Result<usize, AdminError> {
    let registry = Registry::load(registry)?;
    let mut store = open_or_empty(keys)?;
    let devices: Vec<(String, DeviceId)> =
        registry.devices().iter().map(|d| (d.building.village.to_string(), d.id.clone())).collect();
    let scope = if all { ProvisionScope::All } else { ProvisionScope::New };
    let issued = provision(&mut store, &devices, scope, now_ms, grace_ms);
    if !issued.is_empty() {
        commit(&store, keys, &issued, out)?;
    }
    Ok(issued.len())
}

/// `firegrid devices rotate`: new keys for `devices` (the old ones stay accepted for
/// `grace_ms`), written to the provisioning file `out`.
pub fn rotate_devices(
    registry: &Path,
    keys: &Path,
    out: &Path,
    devices: &[String],
    now_ms: u64,
    grace_ms: u64,
) -> Result<usize, AdminError> {
    let registry = Registry::load(registry)?;
    let mut store = KeyStore::load(keys)?;
    let mut issued = Vec::new();
    for id in ids(devices)? {
        let village = registry
            .get(&id)
            .ok_or_else(|| AdminError::NotRegistered(id.to_string()))?
            .building
            .village
            .to_string();
        let key = rotate(&mut store, &id, now_ms, grace_ms)?;
        issued.push((village, id, key));
    }
    commit(&store, keys, &issued, out)?;
    Ok(issued.len())
}

/// `firegrid devices revoke`: every message from `devices` is refused from the next reload on.
pub fn revoke_devices(keys: &Path, devices: &[String]) -> Result<usize, AdminError> {
    let mut store = KeyStore::load(keys)?;
    let ids = ids(devices)?;
    for id in &ids {
        revoke(&mut store, id)?;
    }
    store.save(keys)?;
    Ok(ids.len())
}

/// `firegrid devices accept-unsigned`: whether `devices`' unsigned messages are still
/// accepted (firmware that does not sign yet); they are counted as unauthenticated.
pub fn set_accept_unsigned(keys: &Path, devices: &[String], on: bool) -> Result<usize, AdminError> {
    let mut store = KeyStore::load(keys)?;
    let ids = ids(devices)?;
    for id in &ids {
        let mut entry: DeviceKeys =
            store.get(id).cloned().ok_or_else(|| KeyStoreError::NoSuchDevice(id.to_string()))?;
        entry.accept_unsigned = on;
        store.insert(id.clone(), entry);
    }
    store.save(keys)?;
    Ok(ids.len())
}

/// `firegrid devices reset-window`: asks the running gateway at `api` (its base URL) to reset
/// `device`'s replay window, as the officer whose bearer `token` is given. Returns the
/// gateway's answer, or its error sentence.
pub async fn reset_window_via_api(api: &str, token: &str, device: &str) -> Result<String, String> {
    let url = format!("{}/api/v1/devices/{device}/reset-window", api.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("cannot reach the gateway at {api}: {e}"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if status.is_success() {
        Ok(body.to_string())
    } else {
        Err(format!("{status}: {}", body["error"]["message"].as_str().unwrap_or("(no message)")))
    }
}
