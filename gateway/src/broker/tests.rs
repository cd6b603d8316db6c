use firegrid_protocol::{DeviceId, DeviceKey};

use super::*;
use crate::keys::DeviceKeys;

fn key(byte: u8) -> DeviceKey {
    DeviceKey::from_hex(&format!("{byte:02x}").repeat(32)).unwrap()
}

fn store() -> KeyStore {
    let mut keys = KeyStore::empty();
    keys.insert(DeviceId::new("sd-0001").unwrap(), DeviceKeys::new(key(1)));
    let mut rotated = DeviceKeys::new(key(3));
    rotated.previous = Some((key(2), 10_000));
    keys.insert(DeviceId::new("sd-0002").unwrap(), rotated);
    let mut revoked = DeviceKeys::new(key(4));
    revoked.revoked = true;
    keys.insert(DeviceId::new("sd-0003").unwrap(), revoked);
    keys
}

#[test]
fn every_account_logs_in_with_its_own_password_only() {
    // The platform's password and its hash as `printf %s ... | sha256sum` prints it.
    let platform = PlatformAccount {
        username: "carrier-bridge".into(),
        password_sha256: "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8".into(),
    };
    let accounts = Accounts::new(&[platform]).unwrap();
    let keys = store();
    let gw = accounts.gateway_password().to_owned();
    assert_eq!(gw.len(), 32);
    assert_eq!(accounts.judge(&keys, GATEWAY_USER, &gw, 0), Ok(Account::Gateway));
    assert_eq!(accounts.judge(&keys, GATEWAY_USER, "guess", 0), Err(LoginRefusal::WrongPassword));
    assert_eq!(accounts.judge(&keys, "carrier-bridge", "password", 0), Ok(Account::Platform));
    assert_eq!(accounts.judge(&keys, "carrier-bridge", "Password", 0), Err(LoginRefusal::WrongPassword));

    let one = key(1).mqtt_password();
    assert_eq!(accounts.judge(&keys, "sd-0001", &one, 0), Ok(Account::Device));
    // Device A's password is not device B's.
    assert_eq!(accounts.judge(&keys, "sd-0002", &one, 0), Err(LoginRefusal::WrongPassword));
    assert_eq!(accounts.judge(&keys, "sd-9999", &one, 0), Err(LoginRefusal::UnknownUser));
    assert_eq!(accounts.judge(&keys, "not a device id!", &one, 0), Err(LoginRefusal::UnknownUser));
    assert_eq!(accounts.judge(&keys, "sd-0003", &key(4).mqtt_password(), 0), Err(LoginRefusal::Revoked));
}

#[test]
fn a_rotated_devices_old_password_works_only_during_the_grace_period() {
    let accounts = Accounts::new(&[]).unwrap();
    let keys = store();
    let (old, new) = (key(2).mqtt_password(), key(3).mqtt_password());
    assert_eq!(accounts.judge(&keys, "sd-0002", &new, 0), Ok(Account::Device));
    assert_eq!(accounts.judge(&keys, "sd-0002", &old, 9_999), Ok(Account::Device));
    assert_eq!(accounts.judge(&keys, "sd-0002", &old, 10_000), Err(LoginRefusal::WrongPassword));
    assert_eq!(accounts.judge(&keys, "sd-0002", &new, 10_000), Ok(Account::Device));
}

#[test]
fn malformed_platform_hashes_and_reserved_names_are_refused_and_debug_shows_no_secret() {
    let bad = PlatformAccount { username: "x".into(), password_sha256: "abc".into() };
    assert!(Accounts::new(&[bad]).is_err());
    let reserved = PlatformAccount { username: GATEWAY_USER.into(), password_sha256: "00".repeat(32) };
    assert!(Accounts::new(&[reserved]).is_err());
    let account = PlatformAccount { username: "p".into(), password_sha256: "ab".repeat(32) };
    let accounts = Accounts::new(std::slice::from_ref(&account)).unwrap();
    assert!(!format!("{account:?}").contains("abab"));
    assert!(!format!("{accounts:?}").contains(accounts.gateway_password()));
}
