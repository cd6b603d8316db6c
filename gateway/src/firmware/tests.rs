//! Signing, and the rollout driving real detector cores (firmware/detector's `Device` and
//! `Updater`, firmware/boot's bootloader) on simulated NOR flash: images arrive, verify,
//! swap and boot; a device whose transfer is corrupted ends on its old image; the rollout
//! pauses when the failed share passes its threshold.

use std::time::Duration;

use ed25519_dalek::SigningKey;
use firegrid_protocol::DownlinkBody;
use firegrid_tests::ota::{Detector, new_image, old_image, vendor, vendor_slot};

use super::rollout::{DeviceState, Failure, Plan, Rollout};
use super::signing::{self, SignedImage, VendorKeys};

/// The public keys of `slots`, slot 0 first.
fn keys(slots: &[&SigningKey]) -> VendorKeys {
    VendorKeys::new(slots.iter().map(|k| k.verifying_key()).collect()).unwrap()
}

/// The tests' bootloader keys: slots 0 to 2.
fn all_keys() -> VendorKeys {
    keys(&[&vendor_slot(0), &vendor_slot(1), &vendor_slot(2)])
}

#[test]
fn keygen_writes_a_private_key_file_that_signs_verifiably() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vendor.key");
    let public = signing::keygen(&path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(signing::keygen(&path).is_err(), "an existing key is never overwritten");
    let key = signing::load_key(&path).unwrap();
    assert_eq!(key.verifying_key(), public);
    let image_path = dir.path().join("fw.bin");
    let image = vec![0xA5u8; 1_000];
    std::fs::write(&image_path, &image).unwrap();
    let signed = signing::sign(&image, "1.5.0", &key).unwrap();
    signed.save(&image_path).unwrap();
    let public = VendorKeys::new(vec![public]).unwrap();
    assert_eq!(SignedImage::load(&image_path, &image, Some(&public)).unwrap(), signed);
    let other = keys(&[&SigningKey::from_bytes(&[7; 32])]);
    assert!(SignedImage::load(&image_path, &image, Some(&other)).is_err(), "another vendor's key");
    assert!(SignedImage::load(&image_path, &image[1..], None).is_err(), "another image");
    // The key never shows in an error message.
    std::fs::write(&path, "zz").unwrap();
    let error = signing::load_key(&path).unwrap_err().to_string();
    assert!(!error.contains("zz") && error.contains("not a firmware signing key"), "{error}");
    assert!(signing::sign(&image, "1 5", &key).is_err());
    assert!(signing::sign(&[], "1.5", &key).is_err());
}

/// The signature covers the security counter and the version: a signed-image file edited to
/// carry another counter or version no longer verifies, and the signature is the one of
/// firegrid-protocol's signed message (what the bootloader verifies).
#[test]
fn the_signature_covers_the_security_counter_and_the_version() {
    use ed25519_dalek::Verifier;
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let image_path = dir.path().join("fw.bin");
    let image = new_image();
    std::fs::write(&image_path, &image).unwrap();
    let signed = signing::sign_with_counter(&image, "1.5.0", 7, &vendor()).unwrap();
    assert_eq!(signed.security_counter, 7);
    let message = firegrid_protocol::firmware::signed_message(
        &firegrid_protocol::firmware::version_field("1.5.0"),
        7,
        0,
        &sha2::Sha512::digest(&image).into(),
    );
    let signature = ed25519_dalek::Signature::from_bytes(&signed.signature_bytes().unwrap());
    assert!(vendor().verifying_key().verify(&message, &signature).is_ok());
    let public = keys(&[&vendor()]);
    signed.save(&image_path).unwrap();
    assert!(SignedImage::load(&image_path, &image, Some(&public)).is_ok());
    for edited in [
        SignedImage { security_counter: 9, ..signed.clone() },
        SignedImage { security_counter: 6, ..signed.clone() },
        SignedImage { version: "1.5.1".into(), ..signed.clone() },
    ] {
        edited.save(&image_path).unwrap();
        let error = SignedImage::load(&image_path, &image, Some(&public)).unwrap_err().to_string();
        assert!(error.contains("does not verify under the vendor key"), "{edited:?}: {error}");
    }
    // A file written before the counter existed reads as counter 0.
    let old = r#"{"version":"1.5.0","size":1,"sha256":"00","signature":"00"}"#;
    assert_eq!(serde_json::from_str::<SignedImage>(old).unwrap().security_counter, 0);
}

/// The key slot is signed and names the key that verifies: an image of slot 1 verifies under
/// slot 1's key only, a file edited to name another slot fails, a slot the configuration has
/// no key for is refused with both named, and no one signs for a slot the bootloader lacks.
#[test]
fn the_signature_covers_the_key_slot_and_is_checked_under_that_slot_only() {
    let dir = tempfile::tempdir().unwrap();
    let image_path = dir.path().join("fw.bin");
    let image = new_image();
    std::fs::write(&image_path, &image).unwrap();
    let signed = signing::sign_in_slot(&image, "2.0.0", 1, 1, &vendor_slot(1)).unwrap();
    assert_eq!(signed.key_slot, 1);
    signed.save(&image_path).unwrap();
    assert_eq!(SignedImage::load(&image_path, &image, Some(&all_keys())).unwrap(), signed);
    let only_slot_0 = keys(&[&vendor_slot(0)]);
    let error = SignedImage::load(&image_path, &image, Some(&only_slot_0)).unwrap_err().to_string();
    assert!(error.contains("signed by key slot 1") && error.contains("slots 0 to 0"), "{error}");
    for slot in [0, 2] {
        SignedImage { key_slot: slot, ..signed.clone() }.save(&image_path).unwrap();
        let error = SignedImage::load(&image_path, &image, Some(&all_keys())).unwrap_err().to_string();
        assert!(error.contains(&format!("does not verify under the vendor key of slot {slot}")), "{error}");
    }
    // Key 0's signature is not key 1's: slot 1 with key 0 fails.
    signing::sign_in_slot(&image, "2.0.0", 1, 1, &vendor_slot(0)).unwrap().save(&image_path).unwrap();
    assert!(SignedImage::load(&image_path, &image, Some(&all_keys())).is_err());
    let error = signing::sign_in_slot(&image, "2.0.0", 1, 3, &vendor_slot(1)).unwrap_err().to_string();
    assert!(error.contains("key slot 3: the bootloader holds slots 0 to 2"), "{error}");
    // A file written before the key slot existed reads as slot 0.
    let old = r#"{"version":"1.5.0","security_counter":2,"size":1,"sha256":"00","signature":"00"}"#;
    assert_eq!(serde_json::from_str::<SignedImage>(old).unwrap().key_slot, 0);
}

/// `firegrid firmware publish` refuses an image signed by a key slot below the last one
/// published (the fleet's key floor as far as the gateway knows it), whatever its counter;
/// the same and higher slots are published.
#[test]
fn publish_refuses_a_key_slot_below_the_last_published() {
    use super::delivery::control::{self, ControlError, Publish, Target};
    let dir = tempfile::tempdir().unwrap();
    let publish = |name: &str, version: &str, counter: u32, slot: u8| {
        let path = dir.path().join(name);
        std::fs::write(&path, new_image()).unwrap();
        signing::sign_in_slot(&new_image(), version, counter, slot, &vendor_slot(slot))
            .unwrap()
            .save(&path)
            .unwrap();
        let devices = vec![Target { village: "v".into(), device: "sd-1".into() }];
        let req = Publish { image: &path, devices, plan: Plan::default(), replace: true };
        control::publish(dir.path(), &all_keys(), req, 1_000)
    };
    assert!(publish("a.bin", "1.5.0", 1, 0).is_ok());
    assert!(publish("b.bin", "2.0.0", 1, 1).is_ok(), "the rotation");
    assert!(publish("c.bin", "2.0.1", 1, 1).is_ok(), "the same slot");
    let refused = publish("d.bin", "9.9.9", 9, 0).unwrap_err();
    assert!(matches!(refused, ControlError::RevokedKey { slot: 0, published: 1, .. }), "{refused:?}");
    let said = refused.to_string();
    assert!(
        said.contains("9.9.9 is signed by key slot 0, below the slot 1 of 2.0.1")
            && said.contains("--key-slot 1"),
        "{said}"
    );
    assert!(publish("e.bin", "2.1.0", 1, 2).is_ok(), "the next rotation");
}

/// A detector whose key floor is 1 refuses a slot-0 image (`revoked_key`); the rollout counts
/// it as `failed_revoked_key` and the device keeps its image. A slot-1 image boots on it.
#[test]
fn a_device_that_retired_key_0_fails_the_rollout_as_revoked_key() {
    let image = new_image();
    let ids = vec!["sd-0001".to_owned()];
    let mut fleet = vec![Detector::new(false)];
    fleet[0].provision_key_floor(1);
    let slot_0 = signing::sign_in_slot(&image, "1.5.0", 0, 0, &vendor_slot(0)).unwrap();
    let mut rollout = Rollout::new(image.clone(), &slot_0, ids.clone(), Plan::default()).unwrap();
    run(&mut rollout, &mut fleet, &ids);
    assert_eq!(rollout.counts().get(&DeviceState::Failed(Failure::RevokedKey)), Some(&1));
    assert_eq!(DeviceState::Failed(Failure::RevokedKey).as_str(), "failed_revoked_key");
    assert_eq!(fleet[0].active(old_image().len()), old_image(), "the device keeps its image");
    let slot_1 = signing::sign_in_slot(&image, "1.5.0", 0, 1, &vendor_slot(1)).unwrap();
    let mut rollout = Rollout::new(image.clone(), &slot_1, ids.clone(), Plan::default()).unwrap();
    run(&mut rollout, &mut fleet, &ids);
    assert_eq!(rollout.counts().get(&DeviceState::Booted), Some(&1));
    assert_eq!(fleet[0].active(image.len()), image);
    assert_eq!(fleet[0].key_floor(), 1);
}

/// `firegrid firmware publish` refuses an image whose security counter is below the last one
/// published, with a message naming both; equal and higher counters are published.
#[test]
fn publish_refuses_a_counter_below_the_last_published() {
    use super::delivery::control::{self, ControlError, Publish, Target};
    let dir = tempfile::tempdir().unwrap();
    let publish = |name: &str, version: &str, counter: u32| {
        let path = dir.path().join(name);
        std::fs::write(&path, new_image()).unwrap();
        signing::sign_with_counter(&new_image(), version, counter, &vendor()).unwrap().save(&path).unwrap();
        let devices = vec![Target { village: "v".into(), device: "sd-1".into() }];
        let req = Publish { image: &path, devices, plan: Plan::default(), replace: true };
        control::publish(dir.path(), &keys(&[&vendor()]), req, 1_000)
    };
    assert!(publish("a.bin", "1.5.0", 3).is_ok());
    assert!(publish("b.bin", "1.5.1", 3).is_ok(), "equal");
    let refused = publish("c.bin", "1.4.9", 2).unwrap_err();
    assert!(matches!(refused, ControlError::Downgrade { counter: 2, published: 3, .. }), "{refused:?}");
    let said = refused.to_string();
    assert!(
        said.contains("1.4.9 carries security counter 2, below the 3 of 1.5.1")
            && said.contains("--security-counter 3"),
        "{said}"
    );
    let request = control::Request::load(&control::dir(dir.path())).unwrap().unwrap();
    assert_eq!(request.signed.version, "1.5.1", "the refused image replaced nothing");
    assert!(publish("d.bin", "1.6.0", 4).is_ok(), "higher");
}

/// Runs `rollout` over `fleet` until it is done or paused and idle: every command is
/// delivered at once, every status answered (a perfect link; the resends are unit-tested).
fn run(rollout: &mut Rollout, fleet: &mut [Detector], ids: &[String]) -> usize {
    let mut now_ms = 0;
    let mut delivered = 0;
    for _ in 0..100_000 {
        now_ms += 1_000;
        let mut queue = rollout.tick(now_ms);
        if queue.is_empty() && (rollout.is_done() || rollout.is_paused()) {
            break;
        }
        while let Some(send) = queue.pop() {
            delivered += 1;
            let i = ids.iter().position(|d| *d == send.device).unwrap();
            for status in fleet[i].receive(send.body, now_ms) {
                queue.extend(rollout.on_status(&send.device, &status, now_ms));
            }
        }
    }
    delivered
}

fn fleet(n: usize, corrupt: &[usize]) -> (Vec<Detector>, Vec<String>) {
    let devices = (0..n).map(|i| Detector::new(corrupt.contains(&i))).collect();
    (devices, (0..n).map(|i| format!("sd-{i:04}")).collect())
}

#[test]
fn a_rollout_updates_every_detector_canaries_first_then_in_waves() {
    let image = new_image();
    let signed = signing::sign(&image, "1.5.0", &vendor()).unwrap();
    let (mut detectors, ids) = fleet(10, &[]);
    let plan = Plan { canary_share: 0.2, wave_size: 4, ..Plan::default() };
    let mut rollout = Rollout::new(image.clone(), &signed, ids.clone(), plan).unwrap();
    assert_eq!(rollout.waves(), (0, 3), "2 canaries, then 4 and 4");
    let commands = run(&mut rollout, &mut detectors, &ids);
    assert!(rollout.is_done() && !rollout.is_paused());
    assert_eq!(rollout.counts().get(&DeviceState::Booted), Some(&10));
    assert_eq!(rollout.waves(), (3, 3));
    for d in &mut detectors {
        assert_eq!(d.active(image.len()), image, "the new image is active");
    }
    // Per detector: an offer, ten chunks of 384 bytes (3,500 bytes), a commit, a confirm.
    assert_eq!(commands, 10 * 13);
}

#[test]
fn a_corrupted_transfer_ends_on_the_old_image_and_pauses_the_rollout() {
    let image = new_image();
    let signed = signing::sign(&image, "1.5.0", &vendor()).unwrap();
    // Device 1, a canary, receives corrupted chunks.
    let (mut detectors, ids) = fleet(10, &[1]);
    let plan = Plan { canary_share: 0.2, wave_size: 4, max_failure_share: 0.25, ..Plan::default() };
    let mut rollout = Rollout::new(image.clone(), &signed, ids.clone(), plan).unwrap();
    run(&mut rollout, &mut detectors, &ids);
    assert!(rollout.is_paused(), "one canary of two failed: 50 % is over 25 %");
    assert_eq!(rollout.waves(), (1, 3), "no wave after the canaries");
    let progress: Vec<_> = rollout.progress().collect();
    assert_eq!(progress[0].state, DeviceState::Booted);
    assert_eq!(progress[1].state, DeviceState::Failed(Failure::BadDigest));
    assert!(progress[2..].iter().all(|p| p.state == DeviceState::Waiting));
    assert_eq!(detectors[0].active(image.len()), image);
    assert_eq!(detectors[1].active(3_000), old_image(), "the corrupted one keeps its old image");
    assert_eq!(detectors[2].active(3_000), old_image());
    // An operator resumes: the other waves go, and a failure share under the threshold lets
    // them finish.
    rollout.resume();
    run(&mut rollout, &mut detectors, &ids);
    assert!(rollout.is_done() && !rollout.is_paused());
    assert_eq!(rollout.counts().get(&DeviceState::Booted), Some(&9));
}

#[test]
fn an_image_signed_by_another_key_fails_at_the_bootloader() {
    let image = new_image();
    let forged = signing::sign(&image, "6.6.6", &SigningKey::from_bytes(&[0x66; 32])).unwrap();
    let (mut detectors, ids) = fleet(2, &[]);
    let plan = Plan { canary_share: 0.5, wave_size: 1, ..Plan::default() };
    let mut rollout = Rollout::new(image, &forged, ids.clone(), plan).unwrap();
    run(&mut rollout, &mut detectors, &ids);
    assert!(rollout.is_paused());
    assert_eq!(rollout.progress().next().unwrap().state, DeviceState::Failed(Failure::Refused));
    assert_eq!(detectors[0].active(3_000), old_image());
}

/// A fleet whose floor is above the image's counter refuses it at the offer: every device
/// fails `downgrade` (a cause of its own in the counts), none receives a chunk, all keep
/// their image.
#[test]
fn a_downgrade_fails_every_device_at_the_offer_with_its_own_cause() {
    let image = new_image();
    let (mut detectors, ids) = fleet(3, &[]);
    let plan = Plan { canary_share: 1.0, ..Plan::default() };
    let fixed = signing::sign_with_counter(&image, "1.6.0", 4, &vendor()).unwrap();
    let mut rollout = Rollout::new(image.clone(), &fixed, ids.clone(), plan.clone()).unwrap();
    run(&mut rollout, &mut detectors, &ids);
    assert_eq!(rollout.counts().get(&DeviceState::Booted), Some(&3), "floor 4 on every detector");
    let older = old_image();
    let vulnerable = signing::sign_with_counter(&older, "1.5.0", 3, &vendor()).unwrap();
    let mut rollout = Rollout::new(older, &vulnerable, ids.clone(), plan).unwrap();
    let commands = run(&mut rollout, &mut detectors, &ids);
    assert_eq!(commands, 3, "one offer each, refused");
    assert!(rollout.is_done());
    assert_eq!(rollout.counts().get(&DeviceState::Failed(Failure::Downgrade)), Some(&3));
    assert_eq!(DeviceState::Failed(Failure::Downgrade).as_str(), "failed_downgrade");
    for d in &mut detectors {
        assert_eq!(d.active(image.len()), image, "the counter-4 image keeps running");
    }
}

#[test]
fn a_silent_device_is_asked_again_and_then_given_up() {
    let image = new_image();
    let signed = signing::sign(&image, "1.5.0", &vendor()).unwrap();
    let plan =
        Plan { canary_share: 1.0, resend_after: Duration::from_secs(60), max_attempts: 2, ..Plan::default() };
    let mut rollout = Rollout::new(image, &signed, vec!["sd-0001".into()], plan).unwrap();
    assert_eq!(rollout.tick(0).len(), 1, "the offer");
    assert!(rollout.tick(59_999).is_empty(), "not before resend_after");
    let again = rollout.tick(60_000);
    assert!(matches!(again[..], [ref s] if matches!(s.body, DownlinkBody::FwOffer(_))), "{again:?}");
    assert_eq!(rollout.tick(120_000).len(), 1);
    assert!(rollout.tick(180_000).is_empty());
    assert_eq!(rollout.progress().next().unwrap().state, DeviceState::Failed(Failure::Silent));
    assert!(rollout.is_done());
}

/// A 64 KiB image (171 chunks) to one detector that answers every command at once, on a
/// logical clock that jumps to each moment the rollout has something to send. Every status
/// the detector sends goes through the gateway's admission under its default budgets.
/// Returns (commands, statuses refused by admission, resends, when it booted).
fn transfer(min_gap: Duration) -> (usize, usize, usize, u64) {
    use crate::admission::{Admission, AdmissionConfig, Budget, Verdict};
    use firegrid_protocol::DeviceId;
    use firegrid_tests::ota::{LargeDetector, large_image};
    let image = large_image();
    let signed = signing::sign(&image, "1.5.0", &vendor()).unwrap();
    let plan = Plan { canary_share: 1.0, min_gap, ..Plan::default() };
    let mut rollout = Rollout::new(image.clone(), &signed, vec!["sd-0".into()], plan).unwrap();
    let mut detector = LargeDetector::new(false);
    let mut admission = Admission::new(AdmissionConfig::default());
    let dev = DeviceId::new("sd-0").unwrap();
    let (mut commands, mut refused, mut resends, mut sent_at) = (0, 0, 0, Vec::new());
    let mut now_ms = 1_000;
    while !rollout.is_done() {
        assert!(now_ms < 3_600_000, "not done within an hour: {:?}", rollout.progress().next());
        let mut queue = rollout.tick(now_ms);
        while let Some(send) = queue.pop() {
            commands += 1;
            resends += usize::from(send.resend);
            sent_at.push(now_ms);
            for status in detector.receive(send.body, now_ms) {
                // A status refused by admission never reaches the rollout.
                if admission.check_rate_only(&dev, 1, 0, Budget::Firmware, now_ms) != Verdict::Fresh {
                    refused += 1;
                    continue;
                }
                queue.extend(rollout.on_status("sd-0", &status, now_ms));
            }
        }
        // The driver wakes at the next held command, or at its next tick.
        now_ms = rollout.next_due().unwrap_or(now_ms + 250).min(now_ms + 250).max(now_ms + 1);
    }
    let state = rollout.progress().next().unwrap().state;
    assert!(state == DeviceState::Booted && detector.active(image.len()) == image, "{min_gap:?}: {state:?}");
    let gap = min_gap.as_millis() as u64;
    assert!(sent_at.windows(2).all(|w| w[1] - w[0] >= gap), "commands at least {gap} ms apart");
    (commands, refused, resends, now_ms)
}

#[test]
fn a_real_size_image_is_paced_under_the_firmware_budget_and_never_resent() {
    let chunks = (64 * 1024usize).div_ceil(firegrid_protocol::MAX_CHUNK);
    assert_eq!(chunks, 171);
    let gap = Plan::default().min_gap;
    let (commands, refused, resends, done_ms) = transfer(gap);
    // An offer, every chunk once, a commit, a confirm: nothing refused, nothing sent again.
    assert_eq!((commands, refused, resends), (1 + chunks + 2, 0, 0));
    // One gap per command after the first, and at most one tick before the first.
    let bound = 1_000 + 250 + (commands as u64) * gap.as_millis() as u64;
    assert!(done_ms <= bound, "done at {done_ms} ms, bound {bound} ms");
    // Unpaced, the same transfer outruns the firmware burst and waits for resends.
    let (_, refused, resends, _) = transfer(Duration::ZERO);
    assert!(refused > 0 && resends > 0, "unpaced: {refused} refused, {resends} resends");
}

#[test]
fn a_held_command_waits_one_gap_at_most_when_the_clock_steps_back() {
    use firegrid_protocol::{FirmwareStatus, UpdateState};
    let image = new_image();
    let signed = signing::sign(&image, "1.5.0", &vendor()).unwrap();
    let plan = Plan { canary_share: 1.0, min_gap: Duration::from_millis(250), ..Plan::default() };
    let mut rollout = Rollout::new(image, &signed, vec!["sd-0".into()], plan).unwrap();
    let t = 1_800_000_000_000;
    assert_eq!(rollout.tick(t).len(), 1, "the offer");
    let receiving = |offset| FirmwareStatus {
        version: "1.5.0".try_into().unwrap(),
        state: UpdateState::Receiving,
        offset,
        error: None,
    };
    assert_eq!(rollout.on_status("sd-0", &receiving(0), t + 10), None, "held: 10 ms after the offer");
    assert_eq!(rollout.next_due(), Some(t + 250));
    assert!(rollout.paced(t + 249).is_empty());
    // The wall clock is corrected an hour back: the chunk goes a gap from now, not in an hour.
    let back = t - 3_600_000;
    assert!(rollout.paced(back).is_empty());
    assert_eq!(rollout.next_due(), Some(back + 250));
    let sent = rollout.tick(back + 250);
    assert!(
        matches!(sent[..], [ref s] if matches!(s.body, DownlinkBody::FwChunk(_)) && !s.resend),
        "{sent:?}"
    );
    // And the next one keeps its gap in the new time.
    assert_eq!(rollout.on_status("sd-0", &receiving(384), back + 260), None);
    assert_eq!(rollout.next_due(), Some(back + 500));
}

mod paced {
    //! Model test: whatever the statuses and their timing, two commands to one device are
    //! never closer than `min_gap`, and the answer to a device's latest status is sent by its
    //! due time.
    use firegrid_protocol::{FirmwareStatus, FirmwareVersion, UpdateError, UpdateState};
    use proptest::prelude::*;

    use super::*;
    use crate::firmware::rollout::{Send, chunk};

    const GAP_MS: u64 = 250;
    const DEVICES: usize = 3;

    #[derive(Debug, Clone)]
    enum Op {
        /// A status from a device after `wait_ms`.
        Status { device: usize, wait_ms: u64, status: u8, chunk: u32 },
        /// A tick after `wait_ms`.
        Tick { wait_ms: u64 },
        /// A wake-up at the rollout's next due time, if any.
        Due,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..DEVICES, 0..400u64, 0..6u8, 0..10u32)
                .prop_map(|(device, wait_ms, status, chunk)| Op::Status { device, wait_ms, status, chunk }),
            2 => (0..400u64).prop_map(|wait_ms| Op::Tick { wait_ms }),
            2 => Just(Op::Due),
        ]
    }

    fn status(kind: u8, chunk: u32, size: u32) -> FirmwareStatus {
        let ours: FirmwareVersion = "1.5.0".try_into().unwrap();
        let (state, offset, error) = match kind {
            0..=2 => (UpdateState::Receiving, (chunk * 384).min(size), None),
            3 => (UpdateState::Idle, 0, None),
            4 => (UpdateState::Receiving, chunk * 384, Some(UpdateError::Busy)),
            _ => (UpdateState::Verified, size, None),
        };
        FirmwareStatus { version: ours, state, offset, error }
    }

    proptest! {
        #[test]
        fn commands_to_a_device_keep_their_gap(ops in proptest::collection::vec(op(), 1..200)) {
            let image = new_image();
            let signed = signing::sign(&image, "1.5.0", &vendor()).unwrap();
            let size = image.len() as u32;
            let ids: Vec<String> = (0..DEVICES).map(|i| format!("sd-{i}")).collect();
            let plan = Plan {
                canary_share: 1.0,
                min_gap: Duration::from_millis(GAP_MS),
                resend_after: Duration::from_secs(2),
                max_attempts: 1_000,
                ..Plan::default()
            };
            let mut rollout = Rollout::new(image.clone(), &signed, ids.clone(), plan).unwrap();
            let mut now_ms = 10_000;
            let mut sent: Vec<(u64, Send)> = rollout.tick(now_ms).into_iter().map(|s| (now_ms, s)).collect();
            // Each device's latest status: where `sent` stood then, and the answer it needs.
            let mut latest: Vec<Option<(usize, Option<DownlinkBody>)>> = vec![None; DEVICES];
            for op in ops {
                match op {
                    Op::Status { device, wait_ms, status: kind, chunk: k } => {
                        now_ms += wait_ms;
                        let status = status(kind, k, size);
                        let expected = match (status.state, status.error) {
                            (_, Some(_)) => None,
                            (UpdateState::Idle, _) => Some(DownlinkBody::FwOffer(rollout.offer().clone())),
                            (UpdateState::Receiving, _) if status.offset < size => Some(chunk(&image, status.offset)),
                            _ => Some(DownlinkBody::FwCommit {}),
                        };
                        latest[device] = Some((sent.len(), expected));
                        let answer = rollout.on_status(&ids[device], &status, now_ms);
                        sent.extend(answer.map(|s| (now_ms, s)));
                    }
                    Op::Tick { wait_ms } => {
                        now_ms += wait_ms;
                        sent.extend(rollout.tick(now_ms).into_iter().map(|s| (now_ms, s)));
                    }
                    Op::Due => {
                        if let Some(due) = rollout.next_due() {
                            now_ms = now_ms.max(due);
                            sent.extend(rollout.paced(now_ms).into_iter().map(|s| (now_ms, s)));
                        }
                    }
                }
            }
            // Nothing is held longer than a gap.
            while let Some(due) = rollout.next_due() {
                prop_assert!(due <= now_ms + GAP_MS, "held until {due}, now {now_ms}");
                now_ms = now_ms.max(due);
                sent.extend(rollout.paced(now_ms).into_iter().map(|s| (now_ms, s)));
            }
            // The first command to a device after its latest status is that status's answer
            // (a status held back is answered, not lost, and not answered with an older one).
            for (device, latest) in latest.iter().enumerate() {
                let Some((at, Some(expected))) = latest else { continue };
                let next = sent[*at..].iter().find(|(_, s)| s.device == ids[device]).map(|(_, s)| &s.body);
                prop_assert_eq!(next, Some(expected), "{}", ids[device]);
            }
            for id in &ids {
                let times: Vec<u64> = sent.iter().filter(|(_, s)| &s.device == id).map(|&(t, _)| t).collect();
                for w in times.windows(2) {
                    prop_assert!(w[1] - w[0] >= GAP_MS, "{id}: commands at {} and {} ms", w[0], w[1]);
                }
            }
        }
    }
}
