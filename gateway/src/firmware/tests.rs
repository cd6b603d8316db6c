//! Signing, and the rollout driving real detector cores (firmware/detector's `Device` and
//! `Updater`, firmware/boot's bootloader) on simulated NOR flash: images arrive, verify,
//! swap and boot; a device whose transfer is corrupted ends on its old image; the rollout
//! pauses when the failed share passes its threshold.

use std::cell::RefCell;
use std::ops::Range;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use embassy_embedded_hal::flash::partition::{BlockingPartition, Partition};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_sync::mutex::Mutex;
use firegrid_boot::{Layout, PAGE};
use firegrid_detector::journal::SimulatedNor;
use firegrid_detector::update::{Action, Updater};
use firegrid_detector::{Config, Device, Identity, SelfTestResult, scenario};
use firegrid_protocol::{Downlink, DownlinkBody, Encoding, FirmwareStatus, UplinkBody};

use super::rollout::{DeviceState, Failure, Plan, Rollout};
use super::signing::{self, SignedImage};

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
    assert_eq!(SignedImage::load(&image_path, &image, Some(&public)).unwrap(), signed);
    let other = SigningKey::from_bytes(&[7; 32]).verifying_key();
    assert!(SignedImage::load(&image_path, &image, Some(&other)).is_err(), "another vendor's key");
    assert!(SignedImage::load(&image_path, &image[1..], None).is_err(), "another image");
    // The key never shows in an error message.
    std::fs::write(&path, "zz").unwrap();
    let error = signing::load_key(&path).unwrap_err().to_string();
    assert!(!error.contains("zz") && error.contains("not a firmware signing key"), "{error}");
    assert!(signing::sign(&image, "1 5", &key).is_err());
    assert!(signing::sign(&[], "1.5", &key).is_err());
}

const MAP: Layout = Layout {
    bootloader: 0..PAGE,
    state: PAGE..2 * PAGE,
    manifest: 2 * PAGE..3 * PAGE,
    active: 3 * PAGE..7 * PAGE,
    dfu: 7 * PAGE..12 * PAGE,
};
type Flash = SimulatedNor<12, 1024>;
type Part = Partition<'static, NoopRawMutex, &'static mut Flash>;

fn vendor() -> SigningKey {
    SigningKey::from_bytes(&[0x42; 32])
}

fn old_image() -> Vec<u8> {
    (0..3_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

fn new_image() -> Vec<u8> {
    (0..3_500u32).map(|i| (i * 13 % 253) as u8).collect()
}

/// One simulated detector: its flash (leaked, so the updater can borrow it for the test's
/// length), its core and its update receiver.
struct Detector {
    mutex: &'static Mutex<NoopRawMutex, &'static mut Flash>,
    device: Device,
    updater: Updater<Part, Part, Part>,
    boot: u16,
    seq: u32,
    /// Flips a byte of every chunk it receives (a corrupted transfer).
    corrupt: bool,
}

fn part(mutex: &'static Mutex<NoopRawMutex, &'static mut Flash>, r: &Range<u32>) -> Part {
    Partition::new(mutex, r.start, r.end - r.start)
}

impl Detector {
    fn new(corrupt: bool) -> Self {
        use embedded_storage::nor_flash::NorFlash;
        let flash: &'static mut Flash = Box::leak(Box::new(Flash::new()));
        flash.write(MAP.active.start, &old_image()).unwrap();
        let mutex: &'static Mutex<NoopRawMutex, &'static mut Flash> = Box::leak(Box::new(Mutex::new(flash)));
        let (device, updater) = Self::start(mutex, 1);
        Detector { mutex, device, updater, boot: 1, seq: 0, corrupt }
    }

    fn start(
        mutex: &'static Mutex<NoopRawMutex, &'static mut Flash>,
        boot: u16,
    ) -> (Device, Updater<Part, Part, Part>) {
        let id = Identity { boot, ..scenario::scenario_identity() };
        let mut device = Device::new(Config::default(), scenario::CALIBRATION, id, 0);
        let updater = Updater::start(
            part(mutex, &MAP.dfu),
            part(mutex, &MAP.state),
            part(mutex, &MAP.manifest),
            &mut device,
            0,
        );
        (device, updater)
    }

    /// A reset: the bootloader, then the application again; a trial image runs its self-test.
    fn reset(&mut self) {
        {
            let mut guard = self.mutex.try_lock().expect("nothing else holds the flash");
            let flash: &mut Flash = &mut guard;
            let blocking = embassy_sync::blocking_mutex::Mutex::<NoopRawMutex, _>::new(RefCell::new(flash));
            let p = |r: &Range<u32>| BlockingPartition::new(&blocking, r.start, r.end - r.start);
            let (mut a, mut d, mut s, mut m) = (p(&MAP.active), p(&MAP.dfu), p(&MAP.state), p(&MAP.manifest));
            firegrid_boot::loader::prepare(
                &mut a,
                &mut d,
                &mut s,
                &mut m,
                &vendor().verifying_key().to_bytes(),
            )
            .unwrap();
        }
        self.boot += 1;
        let (device, updater) = Self::start(self.mutex, self.boot);
        self.device = device;
        self.updater = updater;
        if self.device.take_self_test_request() {
            self.device
                .on_self_test(0, SelfTestResult { horn_ok: true, chamber_ok: true, battery_mv: 3_000 });
        }
    }

    /// Receives one command (signed by the gateway for this boot) and returns the statuses it
    /// sent back, restarting when the receiver asks.
    fn receive(&mut self, mut body: DownlinkBody, now_ms: u64) -> Vec<FirmwareStatus> {
        if let (true, DownlinkBody::FwChunk(chunk)) = (self.corrupt, &mut body) {
            chunk.data.0[0] ^= 0xFF;
        }
        self.seq += 1;
        let id = scenario::scenario_identity();
        let mut cmd = Downlink::new(self.seq, 0, body);
        cmd.sign(&id.village, &id.dev, self.boot, &scenario::SCENARIO_TEST_KEY);
        let mut buf = [0u8; firegrid_protocol::MAX_PAYLOAD];
        self.device.on_downlink_in(
            now_ms,
            cmd.encode(Encoding::Compact, &mut buf).unwrap(),
            Encoding::Compact,
        );
        let mut action = Action::None;
        if let Some(fw) = self.device.take_firmware_command() {
            action = self.updater.apply(&mut self.device, now_ms, fw);
        }
        if self.updater.poll(&mut self.device, now_ms) == Action::Restart {
            action = Action::Restart;
        }
        let mut out = self.drain();
        if action == Action::Restart {
            self.reset();
            out.extend(self.drain());
        }
        out
    }

    /// What the device sent: its `fw_status` messages; everything else is acknowledged.
    fn drain(&mut self) -> Vec<FirmwareStatus> {
        let out = self
            .device
            .outbox()
            .entries()
            .iter()
            .filter_map(|e| match &e.msg.body {
                UplinkBody::FwStatus(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        while let Some(msg) = self.device.outbox().next_due(u64::MAX) {
            let (boot, seq) = (msg.boot, msg.seq);
            self.device.outbox_mut().mark_sent(boot, seq, 0);
            self.device.outbox_mut().ack(boot, seq);
        }
        out
    }

    fn active(&mut self, len: usize) -> Vec<u8> {
        use embedded_storage::nor_flash::ReadNorFlash;
        let mut guard = self.mutex.try_lock().unwrap();
        let mut out = vec![0; len.next_multiple_of(4)];
        ReadNorFlash::read(&mut **guard, MAP.active.start, &mut out).unwrap();
        out.truncate(len);
        out
    }
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
