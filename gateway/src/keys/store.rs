//! The key store file and the provisioning operations on it.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use firegrid_protocol::{DeviceId, DeviceKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use super::{DeviceKeys, KeyStore};

/// Why the key store cannot be used. Never holds key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// The file cannot be read or written.
    #[error("key store {path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        error: io::Error,
    },
    /// Others than its owner may read the file.
    #[error(
        "key store {path} is readable by other users (mode {mode:o}); it holds device secrets: run `chmod 600 {path}`"
    )]
    Exposed {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not a valid key store.
    #[error("key store {path}, line {line}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// 1-based line of the problem.
        line: usize,
        /// What is wrong (never the line's text, which may hold a key).
        message: String,
    },
    /// An operation named a device the store or the registry does not have.
    #[error("device {0} is not in the key store")]
    NoSuchDevice(String),
}

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default, rename = "device")]
    devices: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: String,
    key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_until_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    revoked: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    accept_unsigned: bool,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.key.zeroize();
        if let Some(k) = &mut self.previous_key {
            k.zeroize();
        }
    }
}

const HEADER: &str = "# firegrid device key store: device secrets. Keep it mode 0600, never share it.\n\
# Written by `firegrid devices provision|rotate|revoke`; the gateway reloads it when it changes.\n\n";

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> KeyStoreError + '_ {
    move |error| KeyStoreError::Io { path: path.display().to_string(), error }
}

impl KeyStore {
    /// Reads the store at `path`. Refuses a file that users other than its owner can read or
    /// write, and reports the line of any bad entry without echoing it.
    pub fn load(path: &Path) -> Result<KeyStore, KeyStoreError> {
        let meta = fs::metadata(path).map_err(io_error(path))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyStoreError::Exposed { path: path.display().to_string(), mode });
        }
        let mut text = fs::read_to_string(path).map_err(io_error(path))?;
        let parsed = Self::parse(&text, path);
        text.zeroize();
        parsed
    }

    fn parse(text: &str, path: &Path) -> Result<KeyStore, KeyStoreError> {
        let invalid = |line: usize, message: String| KeyStoreError::Invalid {
            path: path.display().to_string(),
            line,
            message,
        };
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let file: File = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| line_of(s.start));
            invalid(line, e.message().to_owned())
        })?;
        let mut store = KeyStore::empty();
        for entry in &file.devices {
            // The line of an entry, for the messages: where `id = "..."` stands. Found only for
            // a message: searching the text for every entry made loading 20,000 keys take
            // half a minute.
            let line = || text.find(&format!("\"{}\"", entry.id)).map_or(1, line_of);
            let id = DeviceId::new(&entry.id).map_err(|e| invalid(line(), format!("bad device id: {e}")))?;
            let key = DeviceKey::from_hex(&entry.key).map_err(|e| invalid(line(), e.to_string()))?;
            let previous = match (&entry.previous_key, entry.previous_until_ms) {
                (Some(k), Some(until)) => {
                    Some((DeviceKey::from_hex(k).map_err(|e| invalid(line(), e.to_string()))?, until))
                }
                (None, None) => None,
                _ => return Err(invalid(line(), "previous_key and previous_until_ms go together".into())),
            };
            if store.get(&id).is_some() {
                return Err(invalid(line(), format!("device {id} appears twice")));
            }
            store.insert(
                id,
                DeviceKeys { key, previous, revoked: entry.revoked, accept_unsigned: entry.accept_unsigned },
            );
        }
        Ok(store)
    }

    /// Writes the store to `path` atomically (a new file, mode 0600, fsynced, then renamed
    /// over the old one), so the gateway reloading it never reads half a file.
    pub fn save(&self, path: &Path) -> Result<(), KeyStoreError> {
        let file = File {
            devices: self
                .entries()
                .into_iter()
                .map(|(id, k)| Entry {
                    id: id.to_string(),
                    key: hex::encode(k.key.expose()),
                    previous_key: k.previous.as_ref().map(|(old, _)| hex::encode(old.expose())),
                    previous_until_ms: k.previous.as_ref().map(|(_, until)| *until),
                    revoked: k.revoked,
                    accept_unsigned: k.accept_unsigned,
                })
                .collect(),
        };
        let mut text = toml::to_string(&file).map_err(|e| KeyStoreError::Invalid {
            path: path.display().to_string(),
            line: 0,
            message: e.to_string(),
        })?;
        let written = write_secret(path, |f| {
            f.write_all(HEADER.as_bytes())?;
            f.write_all(text.as_bytes())
        });
        text.zeroize();
        written.map_err(io_error(path))
    }
}

/// Writes a secret file atomically with mode 0600.
fn write_secret(path: &Path, write: impl FnOnce(&mut fs::File) -> io::Result<()>) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    write(&mut file)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn fresh_key() -> DeviceKey {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random generator failed");
    let key = DeviceKey::from_bytes(bytes);
    bytes.zeroize();
    key
}

/// Which registry rows `provision` issues keys for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvisionScope {
    /// Rows without a key yet.
    New,
    /// Every row: new rows get a key, keyed rows are rotated.
    All,
}

/// Issues keys for `devices` (`(village, device)` pairs from the registry) into `store`, and
/// returns the keys issued, for the provisioning file. Rotated devices keep their old key
/// accepted until `now_ms + grace_ms`.
pub fn provision(
    store: &mut KeyStore,
    devices: &[(String, DeviceId)],
    scope: ProvisionScope,
    now_ms: u64,
    grace_ms: u64,
) -> Vec<(String, DeviceId, DeviceKey)> {
    let mut issued = Vec::new();
    for (village, device) in devices {
        let key = match (store.get(device).is_some(), scope) {
            (false, _) => {
                let key = fresh_key();
                store.insert(device.clone(), DeviceKeys::new(key.clone()));
                key
            }
            (true, ProvisionScope::All) => rotate(store, device, now_ms, grace_ms).expect("the entry exists"),
            (true, ProvisionScope::New) => continue,
        };
        issued.push((village.clone(), device.clone(), key));
    }
    issued
}

/// Gives `device` a new key; the old one stays accepted on uplinks until `now_ms + grace_ms`
/// (so devices re-keyed in the field one by one keep being heard). Returns the new key.
pub fn rotate(
    store: &mut KeyStore,
    device: &DeviceId,
    now_ms: u64,
    grace_ms: u64,
) -> Result<DeviceKey, KeyStoreError> {
    let entry =
        store.devices.get_mut(device).ok_or_else(|| KeyStoreError::NoSuchDevice(device.to_string()))?;
    let key = fresh_key();
    let old = std::mem::replace(&mut entry.key, key.clone());
    entry.previous = Some((old, now_ms.saturating_add(grace_ms)));
    Ok(key)
}

/// Revokes `device`: every message from it is refused and nothing is sent to it.
pub fn revoke(store: &mut KeyStore, device: &DeviceId) -> Result<(), KeyStoreError> {
    let entry =
        store.devices.get_mut(device).ok_or_else(|| KeyStoreError::NoSuchDevice(device.to_string()))?;
    entry.revoked = true;
    entry.previous = None;
    Ok(())
}

/// Writes the provisioning file for the factory's flashing tool: CSV `village,device,key`
/// (64 lowercase hexadecimal digits), mode 0600.
pub fn write_provisioning_csv(
    path: &Path,
    issued: &[(String, DeviceId, DeviceKey)],
) -> Result<(), KeyStoreError> {
    write_secret(path, |f| {
        f.write_all(b"village,device,key\n")?;
        for (village, device, key) in issued {
            let mut hex = hex::encode(key.expose());
            let line = writeln!(f, "{village},{device},{hex}");
            hex.zeroize();
            line?;
        }
        Ok(())
    })
    .map_err(io_error(path))
}
