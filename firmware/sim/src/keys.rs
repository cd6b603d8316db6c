//! Device keys from a provisioning file, the file `firegrid devices provision` writes for the
//! factory flashing tool:
//!
//! ```text
//! village,device,key
//! dongcun,sd-0001,000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
//! ```
//!
//! A header line `village,device,key`, then one row per device: its village and device ids
//! (as in its topics) and its 256-bit key as 64 lowercase hexadecimal digits. A simulated
//! device with a row is provisioned with that key (it signs its uplinks and admits only
//! authenticated downlinks, as the firmware does); a device without one stays keyless.
//!
//! Errors name the file and the line, never a key: the file is a secret, and an error
//! message ends up in logs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use firegrid_protocol::{DeviceId, DeviceKey, VillageId};

/// The header line of a provisioning file.
pub const HEADER: &str = "village,device,key";

/// Device keys by `(village, device)`. `Debug` prints the devices, never a key.
#[derive(Clone, Default)]
pub struct Keys {
    keys: HashMap<(String, String), DeviceKey>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("devices", &self.keys.len()).finish()
    }
}

/// Why a provisioning file was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The file could not be read.
    #[error("cannot read provisioning file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A line of the file is wrong.
    #[error("provisioning file {}, line {line}: {problem}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// Line number, from 1.
        line: u64,
        /// What is wrong (never the key's text).
        problem: String,
    },
}

impl Keys {
    /// No keys: every device keyless.
    pub fn new() -> Self {
        Keys::default()
    }

    /// Reads a provisioning file.
    pub fn load(path: &Path) -> Result<Keys, KeysError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| KeysError::Read { path: path.to_owned(), source })?;
        Keys::parse(&text, path)
    }

    /// Parses the text of a provisioning file; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Keys, KeysError> {
        let bad = |line: u64, problem: String| KeysError::Line { path: path.to_owned(), line, problem };
        // Ids and keys hold no commas or quotes, so a line splits on commas; counting lines
        // here (not through a CSV reader, which leaves blank lines out of its count) keeps the
        // numbers in errors true to the file.
        let mut keys = Keys::new();
        let mut lines: HashMap<(String, String), u64> = HashMap::new();
        let mut header_seen = false;
        for (index, text_line) in text.lines().enumerate() {
            let line = index as u64 + 1;
            if text_line.trim().is_empty() {
                continue;
            }
            let record: Vec<&str> = text_line.split(',').map(str::trim).collect();
            if !header_seen {
                header_seen = true;
                if record != ["village", "device", "key"] {
                    return Err(bad(line, format!("the header must be `{HEADER}`")));
                }
                continue;
            }
            if record.len() != 3 {
                return Err(bad(
                    line,
                    format!("expected 3 fields (village, device, key), found {}", record.len()),
                ));
            }
            let (village, device, hex) = (record[0], record[1], record[2]);
            VillageId::new(village).map_err(|e| bad(line, format!("village {village:?}: {e}")))?;
            DeviceId::new(device).map_err(|e| bad(line, format!("device {device:?}: {e}")))?;
            let lowercase_hex =
                hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            let key = DeviceKey::from_hex(hex).ok().filter(|_| lowercase_hex).ok_or_else(|| {
                bad(line, format!("the key of {village}/{device} is not 64 lowercase hexadecimal digits"))
            })?;
            let id = (village.to_owned(), device.to_owned());
            if let Some(first) = lines.insert(id.clone(), line) {
                return Err(bad(line, format!("{village}/{device} already has a key on line {first}")));
            }
            keys.keys.insert(id, key);
        }
        if !header_seen {
            return Err(bad(1, format!("the file is empty; it must start with `{HEADER}`")));
        }
        Ok(keys)
    }

    /// The key of `device` in `village`, if it has one.
    pub fn get(&self, village: &str, device: &str) -> Option<&DeviceKey> {
        self.keys.get(&(village.to_owned(), device.to_owned()))
    }

    /// Gives `device` of `village` a key (replacing any).
    pub fn insert(&mut self, village: &str, device: &str, key: DeviceKey) {
        self.keys.insert((village.to_owned(), device.to_owned()), key);
    }

    /// Devices with a key.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no device has a key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys as a provisioning file (header, then rows sorted by village and device), for
    /// tests and tools that provision simulated devices themselves. Secret.
    pub fn to_csv(&self) -> String {
        let mut rows: Vec<_> = self.keys.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = format!("{HEADER}\n");
        for ((village, device), key) in rows {
            let mut hex = [0u8; 64];
            // 32 bytes always fit 64 digits.
            let hex = base16ct::lower::encode_str(key.expose(), &mut hex).unwrap_or_default();
            out += &format!("{village},{device},{hex}\n");
        }
        out
    }
}

/// Reads a provisioning file: [`Keys::load`].
pub fn load(path: &Path) -> Result<Keys, KeysError> {
    Keys::load(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn check(text: &str, expected: Result<&[(&str, &str)], &str>) {
        let got = Keys::parse(text, Path::new("keys.csv"));
        match (got, expected) {
            (Ok(keys), Ok(devices)) => {
                assert_eq!(keys.len(), devices.len(), "{text}");
                for (v, d) in devices {
                    assert_eq!(keys.get(v, d).map(|k| k.expose()[31]), Some(0x1f), "{v}/{d}");
                }
            }
            (Err(e), Err(message)) => {
                let shown = e.to_string();
                assert_eq!(shown, message);
                assert!(!shown.contains(&KEY[..16]) && !shown.contains("0a0b"), "a key leaked: {shown}");
            }
            (got, expected) => panic!("{text:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn provisioning_files_load_or_fail_naming_the_line_and_never_the_key() {
        check(
            &format!("village,device,key\ndongcun,sd-1,{KEY}\ndongcun,sd-2,{KEY}\n"),
            Ok(&[("dongcun", "sd-1"), ("dongcun", "sd-2")]),
        );
        check("village,device,key\n", Ok(&[]));
        check(&format!("village,device,key\r\nxicun,cam-1,{KEY}\r\n"), Ok(&[("xicun", "cam-1")]));
        check(
            "",
            Err(
                "provisioning file keys.csv, line 1: the file is empty; it must start with `village,device,key`",
            ),
        );
        check(
            &format!("device,village,key\ndongcun,sd-1,{KEY}\n"),
            Err("provisioning file keys.csv, line 1: the header must be `village,device,key`"),
        );
        check(
            &format!("village,device,key\ndongcun,sd-1,{}\n", &KEY[..62]),
            Err(
                "provisioning file keys.csv, line 2: the key of dongcun/sd-1 is not 64 lowercase hexadecimal digits",
            ),
        );
        check(
            &format!("village,device,key\ndongcun,sd-1,{}\n", KEY.to_uppercase()),
            Err(
                "provisioning file keys.csv, line 2: the key of dongcun/sd-1 is not 64 lowercase hexadecimal digits",
            ),
        );
        check(
            &format!("village,device,key\ndongcun,sd-1,{}\n", KEY.replace('0', "g")),
            Err(
                "provisioning file keys.csv, line 2: the key of dongcun/sd-1 is not 64 lowercase hexadecimal digits",
            ),
        );
        check(
            &format!("village,device,key\ndongcun,sd-1,{KEY},extra\n"),
            Err("provisioning file keys.csv, line 2: expected 3 fields (village, device, key), found 4"),
        );
        check(
            &format!("village,device,key\ndongcun,sd-1,{KEY}\n\ndongcun,sd-1,{KEY}\n"),
            Err("provisioning file keys.csv, line 4: dongcun/sd-1 already has a key on line 2"),
        );
        assert!(
            Keys::parse(&format!("village,device,key\ndong cun,sd-1,{KEY}\n"), Path::new("keys.csv"))
                .unwrap_err()
                .to_string()
                .starts_with("provisioning file keys.csv, line 2: village \"dong cun\":")
        );
    }

    #[test]
    fn written_files_load_back_and_missing_files_name_the_path() {
        let mut keys = Keys::new();
        keys.insert("dongcun", "sd-2", DeviceKey::from_bytes([0xab; 32]));
        keys.insert("dongcun", "sd-1", DeviceKey::from_hex(KEY).unwrap());
        let text = keys.to_csv();
        assert_eq!(
            text,
            format!("village,device,key\ndongcun,sd-1,{KEY}\ndongcun,sd-2,{}\n", "ab".repeat(32))
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.csv");
        std::fs::write(&path, &text).unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.get("dongcun", "sd-2"), Some(&DeviceKey::from_bytes([0xab; 32])));
        assert_eq!(loaded.get("dongcun", "sd-3"), None);
        assert_eq!(format!("{loaded:?}"), "Keys { devices: 2 }");
        let missing = load(&dir.path().join("nope.csv")).unwrap_err().to_string();
        assert!(
            missing.starts_with("cannot read provisioning file ") && missing.contains("nope.csv"),
            "{missing}"
        );
    }
}
