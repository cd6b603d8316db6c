//! `firegrid broker mosquitto`: per-device credentials and topic ACLs for Eclipse Mosquitto,
//! generated from the registry and the key store, as defence in depth beside the message
//! tags.
//!
//! - **Password file** (`passwd`, Mosquitto's `password_file`): one line per device, user name
//!   the device id, password [`firegrid_protocol::DeviceKey::mqtt_password`] (derived from its
//!   key), hashed the way `mosquitto_passwd` does in Mosquitto 2: `$7$` = PBKDF2-HMAC-SHA512,
//!   101 iterations, a 12-byte random salt, a 64-byte hash, both in standard base64. Plus the
//!   gateway's own account, whose password is kept in `gateway.password` (created once, reused
//!   on every later run so that the running gateway keeps logging in).
//! - **ACL file** (`acl`, Mosquitto's `acl_file`): a device may publish only under
//!   `fg/v1/{its village}/{its id}/up/#` and read only its own `down/+`; only the gateway's
//!   account may read uplinks and publish downlinks. Anything else is denied, since a user's
//!   ACL lists everything it may do.
//!
//! Both files are written mode 0600 (the password file holds hashes only, but nobody else
//! needs it). Regenerate them after a registry or key change and reload Mosquitto
//! (`kill -HUP`), which rereads both.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroize;

use crate::keys::KeyStore;
use crate::registry::Registry;

/// The gateway's MQTT user name in the generated files.
pub const GATEWAY_USER: &str = "firegrid-gateway";

/// Iterations of Mosquitto 2's default `$7$` hashes (`mosquitto_passwd`'s `-I` default).
const ITERATIONS: u32 = 101;

/// What `firegrid broker mosquitto` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// Devices with credentials (registered and keyed).
    pub devices: usize,
    /// Registered devices without a key: they get no account, so they cannot connect.
    pub keyless: Vec<String>,
    /// Whether the gateway's password was created now (else reused).
    pub new_gateway_password: bool,
}

/// One `mosquitto_passwd`-style line for `user`.
fn passwd_line(user: &str, password: &[u8]) -> String {
    let mut salt = [0u8; 12];
    getrandom::fill(&mut salt).expect("the operating system's random generator failed");
    let mut hash = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password, &salt, ITERATIONS, &mut hash);
    let line = format!("{user}:$7${ITERATIONS}${}${}\n", STANDARD.encode(salt), STANDARD.encode(hash));
    hash.zeroize();
    line
}

fn write_private(path: &Path, text: &str) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

/// The gateway's password in `dir/gateway.password`, created (random, 32 hexadecimal digits)
/// if missing. Returns it and whether it was created.
fn gateway_password(dir: &Path) -> io::Result<(String, bool)> {
    let path = dir.join("gateway.password");
    match fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok((text.trim().to_owned(), false)),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random generator failed");
    let password = hex::encode(bytes);
    bytes.zeroize();
    write_private(&path, &format!("{password}\n"))?;
    Ok((password, true))
}

/// Writes `passwd`, `acl` and (once) `gateway.password` into `dir` for every registered device
/// with a key.
pub fn generate(registry: &Registry, keys: &KeyStore, dir: &Path) -> io::Result<Generated> {
    fs::create_dir_all(dir)?;
    let (mut gateway, new_gateway_password) = gateway_password(dir)?;
    let mut passwd = passwd_line(GATEWAY_USER, gateway.as_bytes());
    gateway.zeroize();
    let mut acl = String::from("# Written by `firegrid broker mosquitto`; regenerate, do not edit.\n\n");
    let _ = write!(acl, "user {GATEWAY_USER}\ntopic read fg/v1/+/+/up/#\ntopic write fg/v1/+/+/down/#\n\n");
    let mut out = Generated { devices: 0, keyless: Vec::new(), new_gateway_password };
    for device in registry.devices() {
        let Some(entry) = keys.get(&device.id).filter(|e| !e.revoked) else {
            out.keyless.push(device.id.to_string());
            continue;
        };
        // A stack copy for this line only (heapless strings cannot be wiped without `unsafe`).
        let password = entry.key.mqtt_password();
        passwd.push_str(&passwd_line(device.id.as_str(), password.as_bytes()));
        let village = &device.building.village;
        let _ = write!(
            acl,
            "user {id}\ntopic write fg/v1/{village}/{id}/up/#\ntopic read fg/v1/{village}/{id}/down/+\n\n",
            id = device.id
        );
        out.devices += 1;
    }
    write_private(&dir.join("passwd"), &passwd)?;
    write_private(&dir.join("acl"), &acl)?;
    Ok(out)
}
