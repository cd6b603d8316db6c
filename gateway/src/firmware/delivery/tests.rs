//! The request and progress files: what `publish` refuses, pause and resume, and a restart
//! that keeps what the devices settled.

use ed25519_dalek::SigningKey;
use firegrid_tests::ota::{new_image, vendor};

use super::control::{self, ControlError, Progress, Publish, Request, Target};
use crate::firmware::rollout::{DeviceState, Failure, Plan, Rollout};
use crate::firmware::signing::{self, VendorKeys};

fn keys() -> VendorKeys {
    VendorKeys::new(vec![vendor().verifying_key()]).unwrap()
}

fn targets(n: usize) -> Vec<Target> {
    (0..n).map(|i| Target { village: "v".into(), device: format!("sd-{i}") }).collect()
}

fn publish(data: &std::path::Path, image: &std::path::Path, replace: bool) -> Result<Request, ControlError> {
    let req = Publish { image, devices: targets(3), plan: Plan::default(), replace };
    control::publish(data, &keys(), req, 1_000)
}

#[test]
fn publish_refuses_unsigned_foreign_and_mismatched_images() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("fw.bin");
    std::fs::write(&image, new_image()).unwrap();
    let unsigned = publish(dir.path(), &image, false).unwrap_err().to_string();
    assert!(unsigned.contains("is not signed") && unsigned.contains("fw.bin.fwsig.json"), "{unsigned}");
    signing::sign(&new_image(), "1.5.0", &SigningKey::from_bytes(&[9; 32])).unwrap().save(&image).unwrap();
    let foreign = publish(dir.path(), &image, false).unwrap_err().to_string();
    assert!(foreign.contains("does not verify under the vendor key"), "{foreign}");
    signing::sign(&new_image()[1..], "1.5.0", &vendor()).unwrap().save(&image).unwrap();
    let other = publish(dir.path(), &image, false).unwrap_err().to_string();
    assert!(other.contains("does not match the image"), "{other}");
    assert!(Request::load(&control::dir(dir.path())).unwrap().is_none(), "nothing was written");
    assert!(matches!(control::vendor_keys(None, None), Err(ControlError::NoVendorKey)));
    assert!(matches!(control::vendor_keys(Some("12"), None), Err(ControlError::BadVendorKey { slot: 0 })));
}

#[test]
fn a_published_rollout_pauses_resumes_and_is_replaced_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("fw.bin");
    std::fs::write(&image, new_image()).unwrap();
    signing::sign(&new_image(), "1.5.0", &vendor()).unwrap().save(&image).unwrap();
    let request = publish(dir.path(), &image, false).unwrap();
    let fw = control::dir(dir.path());
    assert_eq!(request.image(&fw, &keys()).unwrap(), new_image());
    assert_eq!(Request::load(&fw).unwrap().as_ref(), Some(&request));
    let paused = control::set_paused(dir.path(), true).unwrap();
    assert!(paused.paused && paused.resumes == 0);
    let resumed = control::set_paused(dir.path(), false).unwrap();
    assert!(!resumed.paused && resumed.resumes == 1);
    let busy = publish(dir.path(), &image, false).unwrap_err().to_string();
    assert!(busy.contains("has not finished") && busy.contains("--replace"), "{busy}");
    assert!(publish(dir.path(), &image, true).is_ok());
}

#[test]
fn a_restored_rollout_keeps_settled_devices_and_offers_the_rest_again() {
    let image = new_image();
    let signed = signing::sign(&image, "1.5.0", &vendor()).unwrap();
    let ids: Vec<String> = (0..4).map(|i| format!("sd-{i}")).collect();
    let plan = Plan { canary_share: 0.5, wave_size: 2, ..Plan::default() };
    let mut before = Rollout::new(image.clone(), &signed, ids.clone(), plan.clone()).unwrap();
    assert_eq!(before.tick(0).len(), 2, "the canaries' offers");
    let progress = Progress {
        devices: vec![
            control::DeviceLine { device: "sd-0".into(), state: "booted".into(), offset: 3_500 },
            control::DeviceLine { device: "sd-1".into(), state: "failed_rolled_back".into(), offset: 0 },
            control::DeviceLine { device: "sd-2".into(), state: "transferring".into(), offset: 768 },
        ],
        ..Progress::of("id", "1.5.0", &before, 0, false, 0)
    };
    let mut after = Rollout::new(image, &signed, ids, Plan { max_failure_share: 0.6, ..plan }).unwrap();
    after.restore(progress.settled(), false);
    let sends = after.tick(0);
    // The canaries settled before the restart: the second wave starts at once, and the
    // device that was transferring is offered the image again (its answer says where it is).
    let to: Vec<&str> = sends.iter().map(|s| s.device.as_str()).collect();
    assert_eq!(to, ["sd-2", "sd-3"]);
    let states: Vec<DeviceState> = after.progress().map(|p| p.state).collect();
    assert_eq!(states[..2], [DeviceState::Booted, DeviceState::Failed(Failure::RolledBack)]);
    assert_eq!(after.waves(), (2, 2));
}

/// `[firmware] vendor_public_keys` by slot; `vendor_public_key` alone is slot 0; both at once,
/// an empty list, too many keys or a bad one are refused, naming the slot.
#[test]
fn vendor_keys_are_read_by_slot_and_the_two_forms_never_together() {
    let hex = |k: &SigningKey| hex::encode(k.verifying_key().as_bytes());
    let (k0, k1) = (SigningKey::from_bytes(&[0x42; 32]), SigningKey::from_bytes(&[0x43; 32]));
    let one = control::vendor_keys(Some(&hex(&k0)), None).unwrap();
    assert_eq!((one.len(), one.get(0)), (1, Some(&k0.verifying_key())));
    let list = vec![hex(&k0), hex(&k1)];
    let two = control::vendor_keys(None, Some(&list)).unwrap();
    assert_eq!((two.len(), two.get(1), two.get(2)), (2, Some(&k1.verifying_key()), None));
    let both = control::vendor_keys(Some(&hex(&k0)), Some(&list)).unwrap_err();
    assert!(matches!(both, ControlError::BothVendorKeyForms), "{both:?}");
    assert!(both.to_string().contains("both vendor_public_key and vendor_public_keys"), "{both}");
    assert!(matches!(control::vendor_keys(None, Some(&[])), Err(ControlError::NoVendorKey)));
    let four = vec![hex(&k0); 4];
    assert!(matches!(control::vendor_keys(None, Some(&four)), Err(ControlError::TooManyVendorKeys(4))));
    let bad = vec![hex(&k0), "12".into()];
    let error = control::vendor_keys(None, Some(&bad)).unwrap_err();
    assert!(matches!(error, ControlError::BadVendorKey { slot: 1 }), "{error:?}");
}

/// What the console reads beside the counts: the image's size, the failure share against its
/// threshold, and whose pause it is; and a progress file written before these existed loads.
#[test]
fn the_progress_says_the_image_size_the_failure_share_and_who_paused() {
    use firegrid_protocol::{FirmwareStatus, UpdateError, UpdateState};
    let image = new_image();
    let signed = signing::sign(&image, "1.5.0", &vendor()).unwrap();
    let ids: Vec<String> = (0..4).map(|i| format!("sd-{i}")).collect();
    let plan = Plan { canary_share: 0.25, wave_size: 3, max_failure_share: 0.1, ..Plan::default() };
    let mut rollout = Rollout::new(image, &signed, ids, plan).unwrap();
    assert_eq!(rollout.tick(0).len(), 1, "the canary's offer");
    let running = Progress::of("id", "1.5.0", &rollout, 0, false, 0);
    assert_eq!((running.image_bytes, running.max_failure_share), (3_500, 0.1));
    assert_eq!((running.failure_share, running.paused_by), (0.0, None));
    let receiving = |offset| FirmwareStatus {
        version: "1.5.0".try_into().unwrap(),
        state: UpdateState::Receiving,
        offset,
        error: None,
    };
    rollout.on_status("sd-0", &receiving(768), 1_000);
    let transferring = Progress::of("id", "1.5.0", &rollout, 0, false, 1_000);
    assert_eq!(transferring.devices[0].offset, 768);
    let failed = FirmwareStatus { error: Some(UpdateError::SelfTestFailed), ..receiving(0) };
    rollout.on_status("sd-0", &failed, 2_000);
    assert!(rollout.is_paused());
    let by_itself = Progress::of("id", "1.5.0", &rollout, 0, false, 2_000);
    assert_eq!((by_itself.failure_share, by_itself.paused_by), (1.0, Some(control::PausedBy::Failures)));
    let by_operator = Progress::of("id", "1.5.0", &rollout, 0, true, 2_000);
    assert_eq!(by_operator.paused_by, Some(control::PausedBy::Operator));
    let json = serde_json::to_value(&by_itself).unwrap();
    assert_eq!(
        (&json["paused_by"], &json["image_bytes"]),
        (&serde_json::json!("failures"), &serde_json::json!(3_500))
    );

    let dir = tempfile::tempdir().unwrap();
    let old = r#"{"id": "id", "version": "1.5.0", "paused": false, "done": false, "waves": [1, 2],
        "resumes": 0, "counts": {"waiting": 1}, "devices": [], "updated_ms": 5}"#;
    std::fs::write(dir.path().join(control::PROGRESS), old).unwrap();
    let loaded = Progress::load(dir.path()).unwrap().unwrap();
    assert_eq!((loaded.updated_ms, loaded.image_bytes, loaded.paused_by), (5, 0, None));
}
