//! The update chain on simulated NOR flash: the gateway's signed commands into the detector's
//! [`Updater`], embassy-boot's swap behind the Ed25519 gate of [`firegrid_boot::loader`], the
//! new image's trial boot, self-test and confirmation, and the rollback, with power cut at
//! every flash step; the anti-rollback floor: an image whose signed security counter is
//! below it refused, equal and higher ones taken, the floor raised only when an image is
//! marked good; and key rotation: an image signed by a higher vendor key slot raising the key
//! floor once marked good, images of the slots below it refused afterwards whatever their
//! version and counter, an unknown slot refused, with power cut at every step of a rotation.
//! Each test ends with the device on a good image.
//!
//! The payload of the full-size tests is the detector's real Cortex-M3 image (the release
//! build of `firmware/boards/qemu-lm3s6965`, its loadable segments laid out flat, as a
//! programmer writes them), on the LM3S6965's flash map ([`firegrid_boot::LM3S6965`]).

use std::cell::RefCell;
use std::ops::Range;

use ed25519_dalek::{Signer, SigningKey};
use embassy_embedded_hal::flash::partition::{BlockingPartition, Partition};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use firegrid_boot::loader::{self, Outcome, Refusal};
use firegrid_boot::{KEY_SLOTS, LM3S6965, Layout, PAGE, VendorKeys};
use firegrid_detector::journal::SimulatedNor;
use firegrid_detector::update::{Action, Updater};
use firegrid_detector::{Config, Device, Identity, SelfTestResult, scenario};
use firegrid_protocol::firmware::{ChunkData, FixedBytes, signed_message, version_field};
use firegrid_protocol::{
    Downlink, DownlinkBody, Encoding, FirmwareChunk, FirmwareOffer, FirmwareStatus, MAX_CHUNK, UpdateError,
    UpdateState, UplinkBody,
};
use proptest::prelude::*;
use sha2::Digest;

/// The whole LM3S6965 map up to the end of its key floor, in 1 KiB pages.
const BOARD_PAGES: usize = 0x3_EC00 / 1024;

/// A small map for the exhaustive power-cut sweep: a 4-page active slot.
const SMALL: Layout = Layout {
    bootloader: 0..PAGE,
    state: PAGE..2 * PAGE,
    manifest: 2 * PAGE..3 * PAGE,
    active: 3 * PAGE..7 * PAGE,
    dfu: 7 * PAGE..12 * PAGE,
    security: 12 * PAGE..14 * PAGE,
    key_floor: 14 * PAGE..16 * PAGE,
};

/// The small map's pages.
const SMALL_PAGES: usize = 16;

/// The vendor's signing key of these tests in slot 0 (the gateway's `firegrid firmware
/// keygen` makes real ones).
fn vendor() -> SigningKey {
    vendor_slot(0)
}

/// The tests' vendor key of `slot`: seeds `[0x42; 32]`, `[0x43; 32]`, `[0x44; 32]`.
fn vendor_slot(slot: u8) -> SigningKey {
    SigningKey::from_bytes(&[0x42 + slot; 32])
}

/// The public keys the tests' bootloader is built with, by slot.
fn vendor_keys() -> VendorKeys {
    core::array::from_fn(|slot| vendor_slot(slot as u8).verifying_key().to_bytes())
}

/// A signed image as the gateway offers it.
#[derive(Clone)]
struct Image {
    bytes: Vec<u8>,
    offer: FirmwareOffer,
}

fn sign(bytes: &[u8], version: &str, key: &SigningKey) -> Image {
    sign_counted(bytes, version, 0, key)
}

/// Signs as the gateway's `firegrid firmware sign --security-counter` does, by key slot 0.
fn sign_counted(bytes: &[u8], version: &str, security_counter: u32, key: &SigningKey) -> Image {
    sign_slot(bytes, version, security_counter, 0, key)
}

/// Signs as `firegrid firmware sign --security-counter N --key-slot S` does: the layout-3
/// message (domain, version, counter, key slot, SHA-512 of the image), with `key`.
fn sign_slot(bytes: &[u8], version: &str, security_counter: u32, key_slot: u8, key: &SigningKey) -> Image {
    let sha512: [u8; 64] = <ed25519_dalek::Sha512 as ed25519_dalek::Digest>::digest(bytes).into();
    let message = signed_message(&version_field(version), security_counter, key_slot, &sha512);
    let offer = FirmwareOffer {
        version: version.try_into().unwrap(),
        size: bytes.len() as u32,
        sha256: FixedBytes(sha2::Sha256::digest(bytes).into()),
        signature: FixedBytes(key.sign(&message).to_bytes()),
        security_counter,
        key_slot,
    };
    Image { bytes: bytes.to_vec(), offer }
}

/// The loadable segments of a 32-bit little-endian ELF laid out flat from the lowest one
/// (what `objcopy -O binary` writes).
fn flat_binary(elf: &[u8]) -> Vec<u8> {
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) as usize;
    assert_eq!(&elf[..6], b"\x7fELF\x01\x01", "a 32-bit little-endian ELF");
    let (phoff, phentsize, phnum) = (u32_at(0x1C), u16_at(0x2A), u16_at(0x2C));
    const PT_LOAD: usize = 1;
    let segments: Vec<(usize, usize, usize)> = (0..phnum)
        .map(|i| phoff + i * phentsize)
        .filter(|&ph| u32_at(ph) == PT_LOAD && u32_at(ph + 16) > 0)
        .map(|ph| (u32_at(ph + 12), u32_at(ph + 4), u32_at(ph + 16)))
        .filter(|&(paddr, _, _)| paddr < 0x2000_0000)
        .collect();
    let base = segments.iter().map(|s| s.0).min().unwrap();
    let end = segments.iter().map(|s| s.0 + s.2).max().unwrap();
    let mut out = vec![0xFF; end - base];
    for (paddr, offset, len) in segments {
        out[paddr - base..paddr - base + len].copy_from_slice(&elf[offset..offset + len]);
    }
    out
}

/// The detector's Cortex-M3 image, built once per test run.
fn real_image() -> &'static [u8] {
    static IMAGE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    IMAGE.get_or_init(|| flat_binary(&std::fs::read(crate::qemu::build_image()).unwrap()))
}

/// A different, equally real image: the same build with its bytes changed where a version
/// string would be (the bootloader and the receiver treat images as bytes).
fn other_image(base: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    let n = v.len();
    v[n - 8..].copy_from_slice(b"v1.5.0\0\0");
    v
}

/// The gateway's side of the rig, and the clock.
struct Gateway {
    layout: Layout,
    /// The device's boot counter (the gateway signs for it; the device starts at 1).
    boot: u16,
    seq: u32,
    now_ms: u64,
    /// The images the active slot may hold when the bootloader hands over (empty: not checked).
    good: Vec<Vec<u8>>,
    /// The floor as each boot's application found it, in order.
    floors: Vec<u32>,
    /// The key floor as each boot's application found it, in order.
    key_floors: Vec<u32>,
}

type Part<'a, const P: usize> = Partition<'a, NoopRawMutex, &'a mut SimulatedNor<P, 1024>>;
type App<'a, const P: usize> = Updater<Part<'a, P>, Part<'a, P>, Part<'a, P>>;

/// A reset: the bootloader runs (again, when power fails under it), then `app` runs the
/// application: a fresh device of the next boot and the updater started on the flash.
fn boot<const P: usize, R>(
    flash: &mut SimulatedNor<P, 1024>,
    gw: &mut Gateway,
    app: impl FnOnce(&mut Gateway, &mut Device, &mut App<'_, P>) -> R,
) -> (Outcome, R) {
    let outcome = loop {
        let result = {
            let mutex =
                embassy_sync::blocking_mutex::Mutex::<NoopRawMutex, _>::new(RefCell::new(&mut *flash));
            let part = |r: &Range<u32>| BlockingPartition::new(&mutex, r.start, r.end - r.start);
            let (mut active, mut dfu) = (part(&gw.layout.active), part(&gw.layout.dfu));
            let (mut state, mut manifest) = (part(&gw.layout.state), part(&gw.layout.manifest));
            let (mut security, mut key_floor) = (part(&gw.layout.security), part(&gw.layout.key_floor));
            loader::prepare(
                &mut active,
                &mut dfu,
                &mut state,
                &mut manifest,
                &mut security,
                &mut key_floor,
                &vendor_keys(),
            )
        };
        match result {
            Ok(outcome) => break outcome,
            Err(_) if flash.is_cut() => flash.power_on(),
            Err(e) => panic!("bootloader failed: {e:?}"),
        }
    };
    for (i, image) in gw.good.iter().enumerate() {
        if active(flash, &gw.layout, image.len()) == *image {
            break;
        }
        assert!(i + 1 < gw.good.len(), "the bootloader handed over a mix of images ({outcome:?})");
    }
    gw.boot = gw.boot.wrapping_add(1);
    gw.now_ms += 60_000;
    let id = Identity { boot: gw.boot, ..scenario::scenario_identity() };
    let mut device = Device::new(Config::default(), scenario::CALIBRATION, id, gw.now_ms);
    let layout = gw.layout.clone();
    let mutex = embassy_sync::mutex::Mutex::<NoopRawMutex, _>::new(&mut *flash);
    let part = |r: &Range<u32>| Partition::new(&mutex, r.start, r.end - r.start);
    let mut updater = Updater::start(
        part(&layout.dfu),
        part(&layout.state),
        part(&layout.manifest),
        part(&layout.security),
        part(&layout.key_floor),
        &mut device,
        gw.now_ms,
    );
    if let Ok(floor) = updater.floor() {
        gw.floors.push(floor);
    }
    if let Ok(floor) = updater.key_floor() {
        gw.key_floors.push(floor);
    }
    let r = app(gw, &mut device, &mut updater);
    (outcome, r)
}

/// The statuses the device queued, and a perfect link: everything handed over and acknowledged.
fn statuses(device: &mut Device) -> Vec<FirmwareStatus> {
    let out = device
        .outbox()
        .entries()
        .iter()
        .filter_map(|e| match &e.msg.body {
            UplinkBody::FwStatus(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    while let Some(msg) = device.outbox().next_due(u64::MAX) {
        let (boot, seq) = (msg.boot, msg.seq);
        device.outbox_mut().mark_sent(boot, seq, 0);
        device.outbox_mut().ack(boot, seq);
    }
    out
}

impl Gateway {
    fn new(layout: Layout) -> Self {
        Gateway {
            layout,
            boot: 0,
            seq: 0,
            now_ms: 1_000,
            good: Vec::new(),
            floors: Vec::new(),
            key_floors: Vec::new(),
        }
    }

    /// Sends one signed command for the device's current boot; returns the updater's action
    /// and the status it answered with.
    fn send<const P: usize>(
        &mut self,
        device: &mut Device,
        up: &mut App<'_, P>,
        body: DownlinkBody,
    ) -> (Action, FirmwareStatus) {
        self.seq += 1;
        self.now_ms += 100;
        let id = scenario::scenario_identity();
        let mut cmd = Downlink::new(self.seq, 0, body);
        cmd.sign(&id.village, &id.dev, self.boot, &scenario::SCENARIO_TEST_KEY);
        let mut buf = [0u8; firegrid_protocol::MAX_PAYLOAD];
        let bytes = cmd.encode(Encoding::Compact, &mut buf).unwrap();
        device.on_downlink_in(self.now_ms, bytes, Encoding::Compact);
        let Some(fw) = device.take_firmware_command() else {
            panic!("not a firmware command: {body_kind}", body_kind = cmd.kind().as_str())
        };
        let action = up.apply(device, self.now_ms, fw);
        let status = statuses(device).pop().expect("every firmware command is answered");
        (action, status)
    }
}

/// How the rig's device and gateway behave.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// The new image's self-test passes.
    self_test_ok: bool,
    /// After a rollback the gateway offers the image again (a power cut during the trial
    /// rolls back a good image).
    retry_after_rollback: bool,
}

const GOOD: Plan = Plan { self_test_ok: true, retry_after_rollback: true };

/// How an update ended.
#[derive(Debug, Clone, PartialEq)]
enum End {
    Booted,
    RolledBack,
    Refused,
    BadDigest,
    /// Refused as a downgrade, by the application at the offer or by the bootloader.
    Downgrade,
    /// Refused as signed by a revoked key, by the application at the offer or by the
    /// bootloader.
    RevokedKey,
    /// Refused at the offer for a key slot the bootloader has no key for.
    RefusedAtOffer,
}

fn chunk(image: &Image, offset: u32) -> DownlinkBody {
    let end = (offset as usize + MAX_CHUNK).min(image.bytes.len());
    let data = heapless::Vec::from_slice(&image.bytes[offset as usize..end]).unwrap();
    DownlinkBody::FwChunk(FirmwareChunk { offset, data: ChunkData(data) })
}

/// What one boot of the device did under the gateway's drive.
enum Step {
    Reset,
    Done(End),
}

/// One boot driven like the gateway's rollout drives a device: offer, chunks from the
/// offset the device reports, commit; on trial, the self-test and `fw_confirm`. Power cuts
/// (`flash` errors) end the boot.
fn drive_boot<const P: usize>(
    gw: &mut Gateway,
    device: &mut Device,
    up: &mut App<'_, P>,
    image: &Image,
    plan: Plan,
    log: &mut Vec<String>,
) -> Step {
    let mut status = up.status();
    for s in statuses(device) {
        log.push(format!("boot {} {:?} {:?}", gw.boot, s.state, s.error));
    }
    if status.error == Some(UpdateError::Flash) {
        return Step::Reset;
    }
    loop {
        match status.state {
            UpdateState::Trial => {
                assert!(device.take_self_test_request(), "a trial boot runs the self-test");
                let ok = plan.self_test_ok;
                device.on_self_test(
                    gw.now_ms,
                    SelfTestResult { horn_ok: ok, chamber_ok: true, battery_mv: 3_000 },
                );
                // The gateway acknowledges the self-test's state changes (alarm class: while
                // they wait, firmware commands do too).
                statuses(device);
                if up.poll(device, gw.now_ms) == Action::Restart {
                    log.push(format!("boot {} self-test failed, restart", gw.boot));
                    return Step::Reset;
                }
                let (_, s) = gw.send(device, up, DownlinkBody::FwConfirm {});
                if s.error == Some(UpdateError::Flash) {
                    return Step::Reset;
                }
                status = s;
            }
            UpdateState::Booted => return Step::Done(End::Booted),
            UpdateState::RolledBack if !plan.retry_after_rollback => return Step::Done(End::RolledBack),
            UpdateState::Idle if status.error == Some(UpdateError::Refused) => {
                return Step::Done(End::Refused);
            }
            UpdateState::Idle if status.error == Some(UpdateError::BadDigest) => {
                return Step::Done(End::BadDigest);
            }
            UpdateState::Idle if status.error == Some(UpdateError::Downgrade) => {
                return Step::Done(End::Downgrade);
            }
            UpdateState::Idle if status.error == Some(UpdateError::RevokedKey) => {
                return Step::Done(End::RevokedKey);
            }
            UpdateState::Idle | UpdateState::RolledBack => {
                let (_, s) = gw.send(device, up, DownlinkBody::FwOffer(image.offer.clone()));
                match s.error {
                    None => status = s,
                    Some(UpdateError::Downgrade) => return Step::Done(End::Downgrade),
                    Some(UpdateError::RevokedKey) => return Step::Done(End::RevokedKey),
                    Some(UpdateError::Refused) => return Step::Done(End::RefusedAtOffer),
                    Some(_) => return Step::Reset,
                }
            }
            UpdateState::Receiving if status.version != image.offer.version => {
                let (_, s) = gw.send(device, up, DownlinkBody::FwOffer(image.offer.clone()));
                status = s;
            }
            UpdateState::Receiving if status.offset < image.offer.size => {
                let (_, s) = gw.send(device, up, chunk(image, status.offset));
                match s.error {
                    None => status = s,
                    Some(UpdateError::Flash) => return Step::Reset,
                    Some(e) => panic!("chunk at {} refused: {e:?}", status.offset),
                }
            }
            UpdateState::Receiving | UpdateState::Verified => {
                let (action, s) = gw.send(device, up, DownlinkBody::FwCommit {});
                if action == Action::Restart {
                    assert_eq!(s.state, UpdateState::Swapping);
                    return Step::Reset;
                }
                match s.error {
                    Some(UpdateError::BadDigest) => return Step::Done(End::BadDigest),
                    _ => return Step::Reset,
                }
            }
            UpdateState::Swapping => return Step::Reset,
        }
    }
}

/// Drives the update over as many boots as it takes (at most `rounds`); returns how it
/// ended, the bootloader's outcomes and a log.
fn update<const P: usize>(
    flash: &mut SimulatedNor<P, 1024>,
    gw: &mut Gateway,
    image: &Image,
    plan: Plan,
) -> (End, Vec<Outcome>, Vec<String>) {
    let (mut outcomes, mut log) = (Vec::new(), Vec::new());
    for _ in 0..12 {
        let (outcome, step) =
            boot(flash, gw, |gw, device, up| drive_boot(gw, device, up, image, plan, &mut log));
        outcomes.push(outcome);
        if flash.is_cut() {
            log.push(format!("boot {} power cut", gw.boot));
            flash.power_on();
        }
        if let Step::Done(end) = step {
            return (end, outcomes, log);
        }
    }
    panic!("the update did not settle; outcomes {outcomes:?}, log {log:#?}");
}

/// Flash with `image` installed in the active slot and a factory-fresh state (erased: boot).
fn installed<const P: usize>(layout: &Layout, image: &[u8]) -> Box<SimulatedNor<P, 1024>> {
    use embedded_storage::nor_flash::NorFlash;
    let mut flash = Box::new(SimulatedNor::<P, 1024>::new());
    let mut padded = image.to_vec();
    padded.resize(image.len().next_multiple_of(4), 0xFF);
    flash.write(layout.active.start, &padded).unwrap();
    flash
}

/// The first `len` bytes of the active slot.
fn active<const P: usize>(flash: &mut SimulatedNor<P, 1024>, layout: &Layout, len: usize) -> Vec<u8> {
    use embedded_storage::nor_flash::ReadNorFlash;
    let mut out = vec![0; len.next_multiple_of(4)];
    flash.read(layout.active.start, &mut out).unwrap();
    out.truncate(len);
    out
}

/// Whether embassy-boot's state reads as "boot": no swap, revert or DFU request (its magic
/// word is anything but all `0xF0`, `0xC0` or `0xE0`; BOOT magic, erased, or a BOOT magic
/// cut short by a power loss).
fn settled<const P: usize>(flash: &mut SimulatedNor<P, 1024>, layout: &Layout) -> bool {
    use embedded_storage::nor_flash::ReadNorFlash;
    let mut word = [0u8; 4];
    flash.read(layout.state.start, &mut word).unwrap();
    ![[0xF0; 4], [0xC0; 4], [0xE0; 4]].contains(&word)
}

#[test]
fn a_signed_image_is_received_verified_swapped_and_booted() {
    let old = real_image().to_vec();
    let new = sign(&other_image(&old), "1.5.0", &vendor());
    let mut flash = installed::<BOARD_PAGES>(&LM3S6965, &old);
    let mut gw = Gateway::new(LM3S6965.clone());
    let (end, outcomes, log) = update(&mut flash, &mut gw, &new, GOOD);
    assert_eq!(end, End::Booted, "{log:#?}");
    assert_eq!(outcomes, [Outcome::Boot, Outcome::Trial], "one transfer boot, one trial boot");
    assert_eq!(active(&mut flash, &LM3S6965, new.bytes.len()), new.bytes, "the new image is active");
    assert!(settled(&mut flash, &LM3S6965), "marked booted: no rollback at the next reset");
    // The next reset keeps the new image.
    let (outcome, status) = boot(&mut *flash, &mut gw, |_, _, up| up.status());
    assert_eq!(outcome, Outcome::Boot);
    assert_eq!(status.state, UpdateState::Idle);
    assert_eq!(active(&mut flash, &LM3S6965, new.bytes.len()), new.bytes);
    println!("real image: {} bytes, {} chunks", new.bytes.len(), new.bytes.len().div_ceil(MAX_CHUNK));
}

#[test]
fn an_image_signed_by_another_key_is_refused_and_the_old_one_kept() {
    let old = real_image().to_vec();
    let forged = sign(&other_image(&old), "6.6.6", &SigningKey::from_bytes(&[0x66; 32]));
    let mut flash = installed::<BOARD_PAGES>(&LM3S6965, &old);
    let mut gw = Gateway::new(LM3S6965.clone());
    let (end, outcomes, log) = update(&mut flash, &mut gw, &forged, GOOD);
    assert_eq!(end, End::Refused, "{log:#?}");
    assert_eq!(outcomes, [Outcome::Boot, Outcome::Refused(Refusal::BadSignature)]);
    assert_eq!(active(&mut flash, &LM3S6965, old.len()), old, "the old image stays");
    assert!(settled(&mut flash, &LM3S6965), "the request is cleared");
    let (outcome, status) = boot(&mut *flash, &mut gw, |_, _, up| up.status());
    assert_eq!((outcome, status.state, status.error), (Outcome::Boot, UpdateState::Idle, None));
}

#[test]
fn a_truncated_image_never_boots() {
    let old = real_image().to_vec();
    let new = other_image(&old);
    let mut gw = Gateway::new(LM3S6965.clone());
    // Cut short in transfer: the offer is the whole image's, a third of it never arrives
    // (the gateway's last chunks lost, then a commit): the device's SHA-256 check refuses it.
    let mut short = sign(&new, "1.5.0", &vendor());
    short.bytes.truncate(new.len() / 3 * 2);
    short.bytes.resize(new.len(), 0xFF);
    let mut flash = installed::<BOARD_PAGES>(&LM3S6965, &old);
    let (end, outcomes, log) = update(&mut flash, &mut gw, &short, GOOD);
    assert_eq!((end, outcomes), (End::BadDigest, vec![Outcome::Boot]), "{log:#?}");
    assert_eq!(active(&mut flash, &LM3S6965, old.len()), old);
    // Cut short before signing: size and SHA-256 describe the short bytes, the signature the
    // whole image; the bootloader's check refuses it.
    let mut signed_whole = sign(&new, "1.5.0", &vendor());
    let cut = new.len() / 2;
    signed_whole.bytes.truncate(cut);
    signed_whole.offer.size = cut as u32;
    signed_whole.offer.sha256 = FixedBytes(sha2::Sha256::digest(&signed_whole.bytes).into());
    let (end, outcomes, log) = update(&mut flash, &mut gw, &signed_whole, GOOD);
    assert_eq!(end, End::Refused, "{log:#?}");
    assert_eq!(outcomes.last(), Some(&Outcome::Refused(Refusal::BadSignature)));
    assert_eq!(active(&mut flash, &LM3S6965, old.len()), old);
    assert!(settled(&mut flash, &LM3S6965));
}

#[test]
fn a_new_image_failing_its_self_test_is_rolled_back() {
    let old = real_image().to_vec();
    let new = sign(&other_image(&old), "1.5.0", &vendor());
    let mut flash = installed::<BOARD_PAGES>(&LM3S6965, &old);
    let mut gw = Gateway::new(LM3S6965.clone());
    let plan = Plan { self_test_ok: false, retry_after_rollback: false };
    let (end, outcomes, log) = update(&mut flash, &mut gw, &new, plan);
    assert_eq!(end, End::RolledBack, "{log:#?}");
    assert_eq!(outcomes, [Outcome::Boot, Outcome::Trial, Outcome::Reverted]);
    assert!(log.iter().any(|l| l.contains("self-test failed")), "{log:#?}");
    assert_eq!(active(&mut flash, &LM3S6965, old.len()), old, "the previous image is back");
    assert!(settled(&mut flash, &LM3S6965));
}

#[test]
fn a_trial_image_never_confirmed_is_rolled_back_after_its_deadline() {
    let old = real_image().to_vec();
    let new = sign(&other_image(&old), "1.5.0", &vendor());
    let mut flash = installed::<BOARD_PAGES>(&LM3S6965, &old);
    let mut gw = Gateway::new(LM3S6965.clone());
    let (_, log) = boot(&mut *flash, &mut gw, |gw, device, up| {
        let mut log = Vec::new();
        let mut status = up.status();
        while status.offset < new.offer.size || status.state == UpdateState::Idle {
            let body = if status.state == UpdateState::Idle {
                DownlinkBody::FwOffer(new.offer.clone())
            } else {
                chunk(&new, status.offset)
            };
            status = gw.send(device, up, body).1;
        }
        log.push(gw.send(device, up, DownlinkBody::FwCommit {}).0);
        log
    });
    assert_eq!(log, [Action::Restart]);
    let (outcome, actions) = boot(&mut *flash, &mut gw, |gw, device, up| {
        assert_eq!(up.status().state, UpdateState::Trial);
        assert!(device.take_self_test_request());
        device.on_self_test(gw.now_ms, SelfTestResult { horn_ok: true, chamber_ok: true, battery_mv: 3_000 });
        statuses(device);
        // The gateway never confirms: nothing before the deadline, a restart at it.
        let start = gw.now_ms;
        let before = up.poll(device, start + firegrid_detector::update::TRIAL_MS - 1);
        let at = up.poll(device, start + firegrid_detector::update::TRIAL_MS);
        (before, at)
    });
    assert_eq!((outcome, actions), (Outcome::Trial, (Action::None, Action::Restart)));
    let (outcome, status) = boot(&mut *flash, &mut gw, |_, _, up| up.status());
    assert_eq!((outcome, status.state), (Outcome::Reverted, UpdateState::RolledBack));
    assert_eq!(active(&mut flash, &LM3S6965, old.len()), old);
}

/// The small map's old image (3,000 bytes) and new one (3,500 bytes, 10 chunks).
fn small_images() -> (Vec<u8>, Vec<u8>) {
    let old = (0..3_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let new = (0..3_500u32).map(|i| (i * 13 % 253) as u8).collect();
    (old, new)
}

/// Writes floor records `values` into the floor partition, in order, as a device that marked
/// images of those counters good has them (or as the factory provisions the first).
fn provision_floor<const P: usize>(flash: &mut SimulatedNor<P, 1024>, layout: &Layout, values: &[u32]) {
    provision(flash, &layout.security, values);
}

/// Writes key floor records `values` (key slots), as [`provision_floor`] does the floor's.
fn provision_key_floor<const P: usize>(flash: &mut SimulatedNor<P, 1024>, layout: &Layout, values: &[u32]) {
    provision(flash, &layout.key_floor, values);
}

fn provision<const P: usize>(flash: &mut SimulatedNor<P, 1024>, part: &Range<u32>, values: &[u32]) {
    use embedded_storage::nor_flash::NorFlash;
    for (i, &v) in values.iter().enumerate() {
        let at = part.start + (i * firegrid_boot::floor::RECORD_LEN) as u32;
        flash.write(at, &firegrid_boot::floor::record(v)).unwrap();
    }
}

/// The floor as the bootloader reads it.
fn floor_of<const P: usize>(flash: &mut SimulatedNor<P, 1024>, layout: &Layout) -> u32 {
    read_floor(flash, &layout.security)
}

/// The key floor as the bootloader reads it.
fn key_floor_of<const P: usize>(flash: &mut SimulatedNor<P, 1024>, layout: &Layout) -> u32 {
    read_floor(flash, &layout.key_floor)
}

fn read_floor<const P: usize>(flash: &mut SimulatedNor<P, 1024>, part: &Range<u32>) -> u32 {
    let mutex = embassy_sync::blocking_mutex::Mutex::<NoopRawMutex, _>::new(RefCell::new(&mut *flash));
    let mut partition = BlockingPartition::new(&mutex, part.start, part.end - part.start);
    loader::floor(&mut partition).unwrap()
}

/// The whole update of a small image on a small map, with the power cut once at every flash
/// step in turn (every word programmed, every page erased: transfer, commit, swap, trial,
/// mark booted, the floor raised): each run ends with the new image active and booted and the
/// floor at its counter, at every moment the device boots a good image (the old or the new
/// one, never a mix), and no boot ever finds the floor lower than before or anywhere but at
/// the old counter or the new one.
///
/// The floor starts at `floor` records `1..=floor`; with 128 records, the first page (1 KiB,
/// 8-byte records) is full, so raising it erases the second page and writes there; with 1, it
/// appends a record. The new image is signed by key slot `slot`: with 1, the key floor (erased:
/// slot 0) is raised too, right after the floor, and every boot must find it at 0 or 1, never
/// lower than before, and at 1 in the end.
fn sweep_power_cuts(floor: u32, slot: u8) {
    let (old, new) = small_images();
    let new = sign_slot(&new, "1.5.0", floor + 1, slot, &vendor_slot(slot));
    let slot = u32::from(slot);
    let floors: Vec<u32> = (1..=floor).collect();
    let mut reference = installed::<SMALL_PAGES>(&SMALL, &old);
    provision_floor(&mut reference, &SMALL, &floors);
    let start = reference.steps();
    let (end, _, _) = update(&mut reference, &mut Gateway::new(SMALL), &new, GOOD);
    assert_eq!(end, End::Booted);
    assert_eq!(floor_of(&mut reference, &SMALL), floor + 1);
    assert_eq!(key_floor_of(&mut reference, &SMALL), slot);
    let total = reference.steps() - start;
    // 875 words of transfer, 4 pages × 2 copies × (1 erase + 256 words) of swap, the marks
    // and the floor's record (and, moving, its page erase).
    assert!(total > 2_900, "the sweep covers transfer and swap ({total} steps)");
    for k in 0..total {
        let mut flash = installed::<SMALL_PAGES>(&SMALL, &old);
        provision_floor(&mut flash, &SMALL, &floors);
        flash.cut_after(k);
        let mut gw = Gateway::new(SMALL);
        gw.good = vec![old.clone(), new.bytes.clone()];
        let (end, outcomes, log) = update(&mut flash, &mut gw, &new, GOOD);
        assert_eq!(end, End::Booted, "cut at step {k}: {outcomes:?} {log:#?}");
        assert!(
            active(&mut flash, &SMALL, new.bytes.len()) == new.bytes,
            "cut at step {k}: {outcomes:?} {log:#?}"
        );
        assert!(settled(&mut flash, &SMALL), "cut at step {k}");
        for outcome in outcomes {
            assert!(!matches!(outcome, Outcome::Refused(_)), "cut at step {k}: a good image refused");
        }
        assert_eq!(floor_of(&mut flash, &SMALL), floor + 1, "cut at step {k}: the floor raised");
        assert!(gw.floors.iter().all(|f| *f == floor || *f == floor + 1), "cut at step {k}: {:?}", gw.floors);
        assert!(gw.floors.is_sorted(), "cut at step {k}: the floor went down: {:?}", gw.floors);
        assert_eq!(key_floor_of(&mut flash, &SMALL), slot, "cut at step {k}: the key floor raised");
        assert!(gw.key_floors.iter().all(|f| *f == 0 || *f == slot), "cut at step {k}: {:?}", gw.key_floors);
        assert!(gw.key_floors.is_sorted(), "cut at step {k}: the key floor went down: {:?}", gw.key_floors);
    }
}

#[test]
fn power_cut_at_every_step_ends_on_a_good_image() {
    sweep_power_cuts(1, 0);
}

#[test]
fn power_cut_at_every_step_while_the_floor_moves_to_its_next_page_ends_on_a_good_image() {
    sweep_power_cuts(128, 0);
}

/// A key rotation (the new image signed by slot 1) with the power cut at every step: the key
/// floor, written right after the security floor, is the old slot or the new one at every
/// boot and the new one in the end.
#[test]
fn power_cut_at_every_step_of_a_key_rotation_ends_on_a_good_image_and_a_consistent_key_floor() {
    sweep_power_cuts(1, 1);
}

#[test]
fn an_image_below_the_floor_is_refused_at_the_offer_and_the_device_keeps_its_image() {
    let (old, new) = small_images();
    let older = sign_counted(&new, "1.4.9", 4, &vendor());
    let mut flash = installed::<SMALL_PAGES>(&SMALL, &old);
    provision_floor(&mut *flash, &SMALL, &[5]);
    let mut gw = Gateway::new(SMALL);
    let start = flash.steps();
    let (end, outcomes, log) = update(&mut flash, &mut gw, &older, GOOD);
    assert_eq!((end, outcomes), (End::Downgrade, vec![Outcome::Boot]), "{log:#?}");
    assert_eq!(flash.steps(), start, "refused before anything was erased or written");
    assert_eq!(active(&mut flash, &SMALL, old.len()), old);
    assert_eq!(floor_of(&mut flash, &SMALL), 5);
    let (outcome, status) = boot(&mut *flash, &mut gw, |_, _, up| up.status());
    assert_eq!((outcome, status.state, status.error), (Outcome::Boot, UpdateState::Idle, None));
}

/// The bootloader's own gate, behind the application's: an image transferred and committed
/// while the floor was lower (here the floor is written between the commit and the reset)
/// is refused at the swap, reported `downgrade`, and the current image boots.
#[test]
fn the_bootloader_refuses_a_committed_image_below_the_floor() {
    let (old, new) = small_images();
    let older = sign_counted(&new, "1.4.9", 4, &vendor());
    let mut flash = installed::<SMALL_PAGES>(&SMALL, &old);
    let mut gw = Gateway::new(SMALL);
    let (_, step) = boot(&mut *flash, &mut gw, |gw, device, up| {
        drive_boot(gw, device, up, &older, GOOD, &mut Vec::new())
    });
    assert!(matches!(step, Step::Reset), "committed, swap requested");
    provision_floor(&mut *flash, &SMALL, &[5]);
    let (outcome, (status, count)) =
        boot(&mut *flash, &mut gw, |_, _, up| (up.status(), up.errors().of(UpdateError::Downgrade)));
    assert_eq!(outcome, Outcome::Refused(Refusal::Downgrade));
    assert_eq!((status.state, status.error, count), (UpdateState::Idle, Some(UpdateError::Downgrade), 1));
    assert_eq!(active(&mut flash, &SMALL, old.len()), old, "the current image stays");
    assert!(settled(&mut flash, &SMALL), "the request is cleared");
    // The same image, signed with the counter raised, is taken: the refusal was the counter's.
    let fixed = sign_counted(&new, "1.5.0", 5, &vendor());
    let (end, _, log) = update(&mut flash, &mut gw, &fixed, GOOD);
    assert_eq!(end, End::Booted, "{log:#?}");
}

/// A counter forged upwards in the offer (a gateway or a device key cannot re-sign) fails the
/// signature: the counter is part of the signed message.
#[test]
fn a_counter_changed_after_signing_fails_the_signature() {
    let (old, new) = small_images();
    let mut raised = sign_counted(&new, "1.5.0", 4, &vendor());
    raised.offer.security_counter = 9;
    let mut flash = installed::<SMALL_PAGES>(&SMALL, &old);
    provision_floor(&mut *flash, &SMALL, &[5]);
    let (end, outcomes, log) = update(&mut flash, &mut Gateway::new(SMALL), &raised, GOOD);
    assert_eq!(end, End::Refused, "{log:#?}");
    assert_eq!(outcomes.last(), Some(&Outcome::Refused(Refusal::BadSignature)));
    assert_eq!(active(&mut flash, &SMALL, old.len()), old);
    assert_eq!(floor_of(&mut flash, &SMALL), 5);
}

#[test]
fn equal_and_higher_counters_are_taken_and_the_floor_rises_only_once_marked_good() {
    let (old, new) = small_images();
    let mut flash = installed::<SMALL_PAGES>(&SMALL, &old);
    provision_floor(&mut *flash, &SMALL, &[5]);
    let mut gw = Gateway::new(SMALL);
    // Equal: taken, the floor stays.
    let equal = sign_counted(&new, "1.5.0", 5, &vendor());
    let (end, outcomes, log) = update(&mut flash, &mut gw, &equal, GOOD);
    assert_eq!((end, outcomes), (End::Booted, vec![Outcome::Boot, Outcome::Trial]), "{log:#?}");
    assert_eq!(floor_of(&mut flash, &SMALL), 5);
    // Higher: the trial boot still finds the old floor; marked good, the new one.
    let higher = sign_counted(&old, "1.6.0", 6, &vendor());
    gw.floors.clear();
    let (end, outcomes, log) = update(&mut flash, &mut gw, &higher, GOOD);
    assert_eq!((end, outcomes), (End::Booted, vec![Outcome::Boot, Outcome::Trial]), "{log:#?}");
    assert_eq!(gw.floors, [5, 5], "the transfer boot and the trial boot start on floor 5");
    assert_eq!(floor_of(&mut flash, &SMALL), 6, "raised once marked good");
    // The image of counter 5 is now a downgrade.
    let (end, _, log) = update(&mut flash, &mut gw, &equal, GOOD);
    assert_eq!(end, End::Downgrade, "{log:#?}");
    assert_eq!(active(&mut flash, &SMALL, old.len()), old, "the counter-6 image runs");
}

#[test]
fn a_trial_that_rolls_back_leaves_the_floor_where_it_was() {
    let (old, new) = small_images();
    let mut flash = installed::<SMALL_PAGES>(&SMALL, &old);
    provision_floor(&mut *flash, &SMALL, &[5]);
    let mut gw = Gateway::new(SMALL);
    let failing = sign_counted(&new, "1.7.0", 7, &vendor());
    let plan = Plan { self_test_ok: false, retry_after_rollback: false };
    let (end, outcomes, log) = update(&mut flash, &mut gw, &failing, plan);
    assert_eq!(end, End::RolledBack, "{log:#?}");
    assert_eq!(outcomes, [Outcome::Boot, Outcome::Trial, Outcome::Reverted]);
    assert_eq!(active(&mut flash, &SMALL, old.len()), old, "the previous image is back");
    assert_eq!(floor_of(&mut flash, &SMALL), 5, "the floor did not follow the failed trial");
    // The device is not locked out of counter 5: an image of that counter still installs.
    let five = sign_counted(&new, "1.5.1", 5, &vendor());
    let (end, _, log) = update(&mut flash, &mut gw, &five, GOOD);
    assert_eq!(end, End::Booted, "{log:#?}");
    assert_eq!(floor_of(&mut flash, &SMALL), 5);
}

/// Key rotation: key 0 leaked, the vendor signs the next release with key 1. Accepted on a
/// device whose key floor is 0; the trial boot still finds key floor 0; marked good, the key
/// floor is 1. Afterwards an image signed by key 0 is refused `revoked_key` at the offer, with
/// a higher version and security counter than the running one, before anything is written;
/// the device keeps the slot-1 image, and slot 2 (the next spare) is still taken.
#[test]
fn an_image_of_key_slot_1_raises_the_key_floor_once_marked_good_and_key_0_is_refused_after() {
    let (old, new) = small_images();
    let mut flash = installed::<SMALL_PAGES>(&SMALL, &old);
    let mut gw = Gateway::new(SMALL);
    let rotated = sign_slot(&new, "2.0.0", 1, 1, &vendor_slot(1));
    let (end, outcomes, log) = update(&mut flash, &mut gw, &rotated, GOOD);
    assert_eq!((end, outcomes), (End::Booted, vec![Outcome::Boot, Outcome::Trial]), "{log:#?}");
    assert_eq!(gw.key_floors, [0, 0], "the transfer boot and the trial boot start on key floor 0");
    assert_eq!(key_floor_of(&mut flash, &SMALL), 1, "raised once marked good");
    assert_eq!(floor_of(&mut flash, &SMALL), 1);
    // The leaked key's image: higher version, higher counter, still refused.
    let leaked = sign_slot(&old, "9.9.9", 9, 0, &vendor_slot(0));
    let start = flash.steps();
    let (end, outcomes, log) = update(&mut flash, &mut gw, &leaked, GOOD);
    assert_eq!((end, outcomes), (End::RevokedKey, vec![Outcome::Boot]), "{log:#?}");
    assert_eq!(flash.steps(), start, "refused before anything was erased or written");
    assert_eq!(active(&mut flash, &SMALL, new.len()), new, "the slot-1 image runs");
    assert!(settled(&mut flash, &SMALL));
    assert_eq!((key_floor_of(&mut flash, &SMALL), floor_of(&mut flash, &SMALL)), (1, 1));
    let (outcome, (status, count)) =
        boot(&mut *flash, &mut gw, |_, _, up| (up.status(), up.errors().of(UpdateError::RevokedKey)));
    assert_eq!((outcome, status.state, status.error, count), (Outcome::Boot, UpdateState::Idle, None, 0));
    // The next rotation: slot 2 is taken and raises the key floor to 2; slot 1 is revoked then.
    let next = sign_slot(&old, "2.1.0", 1, 2, &vendor_slot(2));
    let (end, _, log) = update(&mut flash, &mut gw, &next, GOOD);
    assert_eq!(end, End::Booted, "{log:#?}");
    assert_eq!(key_floor_of(&mut flash, &SMALL), 2);
    let (end, _, log) = update(&mut flash, &mut gw, &rotated, GOOD);
    assert_eq!(end, End::RevokedKey, "{log:#?}");
    assert_eq!(active(&mut flash, &SMALL, old.len()), old, "the slot-2 image runs");
}

/// The bootloader's own gate, behind the application's: a slot-0 image transferred and
/// committed while the key floor was 0 (here the key floor is written between the commit and
/// the reset, as if a rotation had been confirmed meanwhile) is refused at the swap with the
/// REFUSED mark FGKR, reported `revoked_key` and counted, and the current image boots.
#[test]
fn the_bootloader_refuses_a_committed_image_of_a_revoked_key() {
    let (old, new) = small_images();
    let leaked = sign_slot(&new, "9.9.9", 9, 0, &vendor_slot(0));
    let mut flash = installed::<SMALL_PAGES>(&SMALL, &old);
    let mut gw = Gateway::new(SMALL);
    let (_, step) = boot(&mut *flash, &mut gw, |gw, device, up| {
        drive_boot(gw, device, up, &leaked, GOOD, &mut Vec::new())
    });
    assert!(matches!(step, Step::Reset), "committed, swap requested");
    provision_key_floor(&mut *flash, &SMALL, &[1]);
    let (outcome, (status, count)) =
        boot(&mut *flash, &mut gw, |_, _, up| (up.status(), up.errors().of(UpdateError::RevokedKey)));
    assert_eq!(outcome, Outcome::Refused(Refusal::RevokedKey));
    assert_eq!((status.state, status.error, count), (UpdateState::Idle, Some(UpdateError::RevokedKey), 1));
    assert_eq!(active(&mut flash, &SMALL, old.len()), old, "the current image stays");
    assert!(settled(&mut flash, &SMALL), "the request is cleared");
    // The same image signed by slot 1 is taken: the refusal was the key's.
    let rotated = sign_slot(&new, "9.9.9", 9, 1, &vendor_slot(1));
    let (end, _, log) = update(&mut flash, &mut gw, &rotated, GOOD);
    assert_eq!(end, End::Booted, "{log:#?}");
}

/// Writes a committed manifest for `image` (already in the DFU slot or not) and embassy-boot's
/// SWAP magic, as an application of another build might: the bootloader's checks alone.
fn commit_directly<const P: usize>(
    flash: &mut SimulatedNor<P, 1024>,
    layout: &Layout,
    image: &Image,
    key_slot: u8,
) {
    use embedded_storage::nor_flash::NorFlash;
    use firegrid_boot::manifest::{self, Manifest};
    let mut padded = image.bytes.clone();
    padded.resize(padded.len().next_multiple_of(4), 0xFF);
    flash.write(layout.dfu.start, &padded).unwrap();
    let m = Manifest {
        version: version_field(&image.offer.version),
        size: image.offer.size,
        sha256: image.offer.sha256.0,
        signature: image.offer.signature.0,
        security_counter: image.offer.security_counter,
        key_slot,
    };
    flash.write(layout.manifest.start, &m.encode()).unwrap();
    flash.write(layout.manifest.start + manifest::HEADER_MARK_AT, &manifest::HEADER_MARK).unwrap();
    flash.write(layout.manifest.start + manifest::COMMIT_AT, &manifest::COMMIT_MARK).unwrap();
    flash.write(layout.state.start, &[0xF0; 4]).unwrap();
}

/// A key slot the bootloader holds no key for is refused at the offer (`refused`, nothing
/// written) and, should a manifest name one anyway, at the swap (FGRF). A signature relabelled
/// to another slot fails: the slot is part of the signed message.
#[test]
fn an_unknown_or_relabelled_key_slot_is_refused() {
    let (old, new) = small_images();
    let unknown = sign_slot(&new, "1.5.0", 0, KEY_SLOTS as u8, &vendor_slot(KEY_SLOTS as u8));
    let mut flash = installed::<SMALL_PAGES>(&SMALL, &old);
    let mut gw = Gateway::new(SMALL);
    let start = flash.steps();
    let (end, _, log) = update(&mut flash, &mut gw, &unknown, GOOD);
    assert_eq!(end, End::RefusedAtOffer, "{log:#?}");
    assert_eq!(flash.steps(), start, "refused before anything was erased or written");
    commit_directly(&mut *flash, &SMALL, &unknown, KEY_SLOTS as u8);
    let (outcome, status) = boot(&mut *flash, &mut gw, |_, _, up| up.status());
    assert_eq!(outcome, Outcome::Refused(Refusal::UnknownKey));
    assert_eq!((status.state, status.error), (UpdateState::Idle, Some(UpdateError::Refused)));
    assert_eq!(active(&mut flash, &SMALL, old.len()), old);
    assert!(settled(&mut flash, &SMALL));
    // Key 0's signature presented as slot 1's: verified under key 1, it fails.
    let mut relabelled = sign_slot(&new, "1.5.0", 0, 0, &vendor_slot(0));
    relabelled.offer.key_slot = 1;
    let (end, outcomes, log) = update(&mut flash, &mut gw, &relabelled, GOOD);
    assert_eq!(end, End::Refused, "{log:#?}");
    assert_eq!(outcomes.last(), Some(&Outcome::Refused(Refusal::BadSignature)));
    // Key 1's signature of slot 1 presented as slot 0 (under a key floor of 0): it fails too,
    // so no one can relabel a good image into a revoked slot or out of one.
    let mut lowered = sign_slot(&new, "1.5.0", 0, 1, &vendor_slot(1));
    lowered.offer.key_slot = 0;
    let (end, outcomes, log) = update(&mut flash, &mut gw, &lowered, GOOD);
    assert_eq!(end, End::Refused, "{log:#?}");
    assert_eq!(outcomes.last(), Some(&Outcome::Refused(Refusal::BadSignature)));
    assert_eq!(active(&mut flash, &SMALL, old.len()), old);
    assert_eq!(key_floor_of(&mut flash, &SMALL), 0);
}

/// A trial of the first slot-1 image that fails its self-test is rolled back and leaves the
/// key floor at 0: key 0's images still install (the rotation has not happened).
#[test]
fn a_rotation_whose_trial_rolls_back_leaves_the_key_floor_where_it_was() {
    let (old, new) = small_images();
    let mut flash = installed::<SMALL_PAGES>(&SMALL, &old);
    let mut gw = Gateway::new(SMALL);
    let failing = sign_slot(&new, "2.0.0", 0, 1, &vendor_slot(1));
    let plan = Plan { self_test_ok: false, retry_after_rollback: false };
    let (end, outcomes, log) = update(&mut flash, &mut gw, &failing, plan);
    assert_eq!(end, End::RolledBack, "{log:#?}");
    assert_eq!(outcomes, [Outcome::Boot, Outcome::Trial, Outcome::Reverted]);
    assert_eq!(active(&mut flash, &SMALL, old.len()), old, "the previous image is back");
    assert_eq!(key_floor_of(&mut flash, &SMALL), 0, "the key floor did not follow the failed trial");
    let zero = sign_slot(&new, "1.5.1", 0, 0, &vendor_slot(0));
    let (end, _, log) = update(&mut flash, &mut gw, &zero, GOOD);
    assert_eq!(end, End::Booted, "{log:#?}");
    assert_eq!(key_floor_of(&mut flash, &SMALL), 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// The same on the real image and the board's map, at random steps (a full sweep of the
    /// 62 KiB image's some 90,000 steps would take hours).
    #[test]
    fn power_cut_anywhere_in_a_real_update_ends_on_a_good_image(at in 0.0f64..1.0) {
        let old = real_image().to_vec();
        let new = sign(&other_image(&old), "1.5.0", &vendor());
        static TOTAL: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        let total = *TOTAL.get_or_init(|| {
            let mut flash = installed::<BOARD_PAGES>(&LM3S6965, &old);
            let start = flash.steps();
            update(&mut flash, &mut Gateway::new(LM3S6965.clone()), &new, GOOD);
            flash.steps() - start
        });
        let k = (at * total as f64) as u64;
        let mut flash = installed::<BOARD_PAGES>(&LM3S6965, &old);
        flash.cut_after(k);
        let mut gw = Gateway::new(LM3S6965.clone());
        gw.good = vec![old.clone(), new.bytes.clone()];
        let (end, outcomes, _) = update(&mut flash, &mut gw, &new, GOOD);
        prop_assert_eq!(end, End::Booted, "cut at step {} of {}: {:?}", k, total, outcomes);
        prop_assert_eq!(active(&mut flash, &LM3S6965, new.bytes.len()), new.bytes.clone());
        prop_assert!(settled(&mut flash, &LM3S6965));
    }
}

/// The image, public keys and signatures the bootloader's Cortex-M3 image verifies under QEMU
/// (`firmware/boards/boot-lm3s6965`): the constants there must be these test keys'.
#[test]
fn the_bootloader_image_carries_these_test_keys_and_signatures() {
    let image: Vec<u8> = (0..3_500u32).map(|i| (i * 13 % 253) as u8).collect();
    // The signature is written as a `concat!` of two 64-digit halves.
    let source = include_str!("../../../boards/boot-lm3s6965/src/main.rs").replace("\",\n    \"", "");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let keys: Vec<String> = vendor_keys().iter().map(|k| hex(k)).collect();
    // Security counter 1: the image's `COUNTER`; signed by slot 0 and by slot 1.
    let signatures: Vec<String> = [0, 1]
        .into_iter()
        .map(|slot| hex(&sign_slot(&image, "1.5.0", 1, slot, &vendor_slot(slot)).offer.signature.0))
        .collect();
    println!("keys {keys:#?}\nsignatures {signatures:#?}");
    for (slot, key) in keys.iter().enumerate() {
        assert!(source.contains(key), "the bootloader image's test key {slot} is {key}");
    }
    for (slot, signature) in signatures.iter().enumerate() {
        assert!(source.contains(signature), "the bootloader image's slot-{slot} signature is {signature}");
    }
}
