use std::os::unix::fs::PermissionsExt;

use firegrid_protocol::{DetectorState, DownlinkBody, StateChange, UplinkBody};

use super::*;

const NOW: u64 = 1_763_860_000_000;
const DAY: u64 = 86_400_000;

fn village() -> VillageId {
    VillageId::new("dongcun").unwrap()
}

fn dev(id: &str) -> DeviceId {
    DeviceId::new(id).unwrap()
}

fn alarm(id: &str) -> Uplink {
    Uplink::new(
        dev(id),
        3,
        7,
        NOW,
        UplinkBody::State(StateChange { state: DetectorState::Alarm, obscuration_db_m: 0.3 }),
    )
}

fn signed(id: &str, key: &DeviceKey) -> Uplink {
    let mut msg = alarm(id);
    msg.sign(&village(), key);
    msg
}

fn store_with(id: &str) -> (KeyStore, DeviceKey) {
    let mut store = KeyStore::empty();
    let issued = provision(&mut store, &[("dongcun".into(), dev(id))], ProvisionScope::New, NOW, DAY);
    let key = issued[0].2.clone();
    (store, key)
}

#[test]
fn verdicts_for_every_kind_of_sender() {
    let (mut store, key) = store_with("sd-1");
    let other = DeviceKey::from_bytes([9; 32]);
    assert_eq!(store.judge(&village(), &signed("sd-1", &key), NOW), Auth::Verified);
    assert_eq!(
        store.judge(&village(), &alarm("sd-1"), NOW),
        Auth::Refused("unsigned"),
        "keyed devices must sign"
    );
    assert_eq!(store.judge(&village(), &signed("sd-1", &other), NOW), Auth::Refused("bad_signature"));
    // Signed for another village's topics.
    let mut moved = alarm("sd-1");
    moved.sign(&VillageId::new("xicun").unwrap(), &key);
    assert_eq!(store.judge(&village(), &moved, NOW), Auth::Refused("bad_signature"));
    // Keyless devices (firmware of schema version 1) are accepted without proof.
    assert_eq!(store.judge(&village(), &alarm("sd-2"), NOW), Auth::Unauthenticated);
    assert_eq!(store.judge(&village(), &signed("sd-2", &other), NOW), Auth::Refused("unknown_key"));
    // The migration switch.
    let mut entry = store.get(&dev("sd-1")).unwrap().clone();
    entry.accept_unsigned = true;
    store.insert(dev("sd-1"), entry);
    assert_eq!(store.judge(&village(), &alarm("sd-1"), NOW), Auth::Unauthenticated);
    assert_eq!(store.judge(&village(), &signed("sd-1", &other), NOW), Auth::Refused("bad_signature"));
    revoke(&mut store, &dev("sd-1")).unwrap();
    assert_eq!(store.judge(&village(), &signed("sd-1", &key), NOW), Auth::Refused("revoked"));
    let mut cmd = Downlink::new(1, NOW, DownlinkBody::Sounders { on: true });
    assert!(!store.sign(&mut cmd, &village(), &dev("sd-1"), 3), "nothing is sent to a revoked device");
}

#[test]
fn rotation_keeps_the_old_key_for_its_grace_period_only() {
    let (mut store, old) = store_with("sd-1");
    let new = rotate(&mut store, &dev("sd-1"), NOW, DAY).unwrap();
    assert_ne!(new, old);
    assert_eq!(store.judge(&village(), &signed("sd-1", &new), NOW), Auth::Verified);
    assert_eq!(store.judge(&village(), &signed("sd-1", &old), NOW + DAY), Auth::Verified);
    assert_eq!(store.judge(&village(), &signed("sd-1", &old), NOW + DAY + 1), Auth::Refused("bad_signature"));
    // Commands are signed with the new key, which the device verifies.
    let mut cmd = Downlink::new(5, NOW, DownlinkBody::Hush { duration_s: 60 });
    assert!(store.sign(&mut cmd, &village(), &dev("sd-1"), 3));
    assert_eq!(cmd.verify(&village(), &dev("sd-1"), &new), Ok(3));
    assert!(cmd.verify(&village(), &dev("sd-1"), &old).is_err());
}

#[test]
fn provisioning_issues_new_keys_or_rotates_all() {
    let devices: Vec<_> = ["sd-1", "sd-2"].iter().map(|d| ("dongcun".to_string(), dev(d))).collect();
    let mut store = KeyStore::empty();
    let first = provision(&mut store, &devices[..1], ProvisionScope::New, NOW, DAY);
    assert_eq!(first.len(), 1);
    let again = provision(&mut store, &devices, ProvisionScope::New, NOW, DAY);
    assert_eq!(again.iter().map(|(_, d, _)| d.as_str()).collect::<Vec<_>>(), ["sd-2"], "only the new row");
    let all = provision(&mut store, &devices, ProvisionScope::All, NOW, DAY);
    assert_eq!(all.len(), 2);
    assert_ne!(all[0].2, first[0].2, "sd-1 was rotated");
    assert!(store.get(&dev("sd-1")).unwrap().previous.is_some());
    assert_ne!(all[0].2, all[1].2, "every device has its own key");
}

#[test]
fn the_file_round_trips_is_private_and_its_errors_never_show_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    let (mut store, key) = store_with("sd-1");
    rotate(&mut store, &dev("sd-1"), NOW, DAY).unwrap();
    let mut entry = store.get(&dev("sd-1")).unwrap().clone();
    entry.accept_unsigned = true;
    store.insert(dev("sd-1"), entry);
    provision(&mut store, &[("dongcun".into(), dev("sd-2"))], ProvisionScope::New, NOW, DAY);
    store.save(&path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(KeyStore::load(&path).unwrap(), store);

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = KeyStore::load(&path).unwrap_err().to_string();
    assert!(error.contains("chmod 600"), "{error}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A damaged entry: the error names the line, not the text.
    let hex = hex::encode(key.expose());
    let bad = format!("[[device]]\nid = \"sd-1\"\nkey = \"{}\"\n", &hex[..60]);
    std::fs::write(&path, &bad).unwrap();
    let error = KeyStore::load(&path).unwrap_err().to_string();
    assert!(error.contains("line 2") && error.contains("64 hexadecimal digits"), "{error}");
    assert!(!error.contains(&hex[..60]), "the error shows key material: {error}");
    let bad = format!("[[device]]\nid = \"sd-1\"\nkey = {}\n", &hex[..60]);
    std::fs::write(&path, &bad).unwrap();
    let error = KeyStore::load(&path).unwrap_err().to_string();
    assert!(!error.contains(&hex[..20]), "the error shows key material: {error}");
    assert!(error.contains("line 3"), "{error}");

    let csv = dir.path().join("batch.csv");
    let issued = vec![("dongcun".to_string(), dev("sd-1"), key.clone())];
    write_provisioning_csv(&csv, &issued).unwrap();
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), format!("village,device,key\ndongcun,sd-1,{hex}\n"));
    assert_eq!(std::fs::metadata(&csv).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!format!("{store:?}").contains(&hex), "Debug prints key material");
}
