//! Simulated detectors for firmware rollouts: the real detector core (`Device`, `Updater`)
//! and the real bootloader decision (`firegrid_boot::loader`) on simulated NOR flash, one
//! small flash map each. A [`Detector`] takes a gateway command (it signs it for the
//! detector's current boot, as the gateway's MQTT adapter does) and answers with the
//! `fw_status` messages it sent, restarting through its bootloader when it asks to. Used by
//! the gateway's rollout tests and by `firegrid-bench ota`.
//!
//! Two flash sizes: [`Detector`] (16 pages, for the 3.5 KB test image) and
//! [`LargeDetector`] (138 pages, slots of 64 KiB, for a real-size image such as
//! [`large_image`]). The small one keeps the many-detector tests cheap: the bootloader swaps
//! the whole slot, whatever the image's size.

use std::cell::RefCell;
use std::ops::Range;

use ed25519_dalek::SigningKey;
use embassy_embedded_hal::flash::partition::{BlockingPartition, Partition};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_sync::mutex::Mutex;
use firegrid_boot::{Layout, PAGE, VendorKeys};
use firegrid_detector::journal::SimulatedNor;
use firegrid_detector::update::{Action, Updater};
use firegrid_detector::{Config, Device, Identity, SelfTestResult, scenario};
use firegrid_protocol::{
    DeviceId, DeviceKey, Downlink, DownlinkBody, Encoding, FirmwareStatus, Uplink, UplinkBody, VillageId,
};

/// Pages of the small simulated detector's flash.
pub const SMALL: usize = 16;
/// Pages of the large one: 64 KiB slots, as a detector for a real image needs.
pub const LARGE: usize = 138;

/// The flash map of a simulated detector with `pages` pages of 1 KiB: the bootloader, the
/// state and the manifest, then the active slot and the DFU slot one page larger, as large
/// as the rest allows, and the two pages each of the security floor and the key floor last.
/// Slots larger than the
/// small map's get two pages of state (embassy-boot logs a swap in 4 words per slot page: one
/// page of 4-byte words covers 63 slot pages) and two of manifest (one page logs the progress
/// of 46 KiB).
pub const fn layout(pages: usize) -> Layout {
    let (state, manifest) = if pages > SMALL { (2, 2) } else { (1, 1) };
    let slot = (pages as u32 - 6 - state - manifest) / 2;
    let active = (1 + state + manifest) * PAGE;
    let dfu_end = active + (2 * slot + 1) * PAGE;
    Layout {
        bootloader: 0..PAGE,
        state: PAGE..(1 + state) * PAGE,
        manifest: (1 + state) * PAGE..active,
        active: active..active + slot * PAGE,
        dfu: active + slot * PAGE..dfu_end,
        security: dfu_end..dfu_end + 2 * PAGE,
        key_floor: dfu_end + 2 * PAGE..dfu_end + 4 * PAGE,
    }
}

/// The small simulated detectors' flash map (1 KiB pages): a 4-page active slot, a 5-page
/// DFU slot, a 2-page security floor, a 2-page key floor.
pub const MAP: Layout = layout(SMALL);
/// A simulated detector's whole flash.
pub type Flash<const PAGES: usize = SMALL> = SimulatedNor<PAGES, 1024>;
type Part<const PAGES: usize> = Partition<'static, NoopRawMutex, &'static mut Flash<PAGES>>;
type Shared<const PAGES: usize> = &'static Mutex<NoopRawMutex, &'static mut Flash<PAGES>>;

/// The vendor key of slot 0 the simulated detectors' bootloader trusts (a test key).
pub fn vendor() -> SigningKey {
    vendor_slot(0)
}

/// The test vendor key of `slot` (seeds `[0x42; 32]`, `[0x43; 32]`, `[0x44; 32]`, as the
/// bootloader image's `VENDOR_KEYS`).
pub fn vendor_slot(slot: u8) -> SigningKey {
    SigningKey::from_bytes(&[0x42 + slot; 32])
}

/// The public keys of the simulated detectors' bootloader, by slot.
pub fn vendor_keys() -> VendorKeys {
    core::array::from_fn(|slot| vendor_slot(slot as u8).verifying_key().to_bytes())
}

/// The image every simulated detector starts on (3,000 bytes).
pub fn old_image() -> Vec<u8> {
    (0..3_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// An image to roll out (3,500 bytes, 10 chunks).
pub fn new_image() -> Vec<u8> {
    image(3_500)
}

/// A real-size image for [`LargeDetector`]s: 64 KiB, 171 chunks (a detector application
/// with its firmware receiver is about 59 KB, BENCHMARKS.md "Over-the-air update").
pub fn large_image() -> Vec<u8> {
    image(64 * 1024)
}

/// An image of `len` bytes to roll out (the pattern of [`new_image`]).
pub fn image(len: usize) -> Vec<u8> {
    (0..len as u32).map(|i| (i * 13 % 253) as u8).collect()
}

/// A simulated detector with the large flash ([`LARGE`] pages).
pub type LargeDetector = Detector<LARGE>;

/// One simulated detector: its flash of `PAGES` pages (leaked, so the updater can borrow it
/// for the test's length), its core and its update receiver.
pub struct Detector<const PAGES: usize = SMALL> {
    mutex: Shared<PAGES>,
    device: Device,
    updater: Updater<Part<PAGES>, Part<PAGES>, Part<PAGES>, Part<PAGES>, Part<PAGES>>,
    id: Identity,
    boot: u16,
    seq: u32,
    /// Flips a byte of every chunk it receives (a corrupted transfer).
    pub corrupt: bool,
    /// Its self-test fails on a new image (a horn that does not sound), which rolls it back.
    pub self_test_fails: bool,
}

fn part<const PAGES: usize>(mutex: Shared<PAGES>, r: &Range<u32>) -> Part<PAGES> {
    Partition::new(mutex, r.start, r.end - r.start)
}

impl<const PAGES: usize> Detector<PAGES> {
    /// Its flash map.
    pub const MAP: Layout = layout(PAGES);

    /// The largest image it holds.
    pub const fn capacity() -> usize {
        let map = layout(PAGES);
        (map.active.end - map.active.start) as usize
    }

    /// A detector on the old image, at boot 1, with the scenario's identity.
    pub fn new(corrupt: bool) -> Self {
        Self::with_identity(scenario::scenario_identity(), corrupt)
    }

    /// A detector `dev` of `village` holding `key`, on the old image at boot 1.
    pub fn keyed(village: &str, dev: &str, key: DeviceKey) -> Self {
        let village = VillageId::new(village).expect("a valid village id");
        let dev = DeviceId::new(dev).expect("a valid device id");
        Self::with_identity(Identity::new(village, dev, 1).with_key(key), false)
    }

    fn with_identity(id: Identity, corrupt: bool) -> Self {
        use embedded_storage::nor_flash::NorFlash;
        let flash: &'static mut Flash<PAGES> = Box::leak(Box::new(Flash::new()));
        flash.write(Self::MAP.active.start, &old_image()).unwrap();
        let mutex: Shared<PAGES> = Box::leak(Box::new(Mutex::new(flash)));
        let (device, updater) = Self::start(mutex, &id, 1);
        Detector { mutex, device, updater, id, boot: 1, seq: 0, corrupt, self_test_fails: false }
    }

    fn start(
        mutex: Shared<PAGES>,
        id: &Identity,
        boot: u16,
    ) -> (Device, Updater<Part<PAGES>, Part<PAGES>, Part<PAGES>, Part<PAGES>, Part<PAGES>>) {
        let id = Identity { boot, ..id.clone() };
        let mut device = Device::new(Config::default(), scenario::CALIBRATION, id, 0);
        let map = Self::MAP;
        let updater = Updater::start(
            part(mutex, &map.dfu),
            part(mutex, &map.state),
            part(mutex, &map.manifest),
            part(mutex, &map.security),
            part(mutex, &map.key_floor),
            &mut device,
            0,
        );
        (device, updater)
    }

    /// A reset: the bootloader, then the application again; a trial image runs its self-test.
    fn reset(&mut self) {
        {
            let mut guard = self.mutex.try_lock().expect("nothing else holds the flash");
            let flash: &mut Flash<PAGES> = &mut guard;
            let blocking = embassy_sync::blocking_mutex::Mutex::<NoopRawMutex, _>::new(RefCell::new(flash));
            let p = |r: &Range<u32>| BlockingPartition::new(&blocking, r.start, r.end - r.start);
            let map = Self::MAP;
            let (mut a, mut d, mut s, mut m) = (p(&map.active), p(&map.dfu), p(&map.state), p(&map.manifest));
            firegrid_boot::loader::prepare(
                &mut a,
                &mut d,
                &mut s,
                &mut m,
                &mut p(&map.security),
                &mut p(&map.key_floor),
                &vendor_keys(),
            )
            .unwrap();
        }
        self.boot += 1;
        let (device, updater) = Self::start(self.mutex, &self.id, self.boot);
        self.device = device;
        self.updater = updater;
        if self.device.take_self_test_request() {
            let horn_ok = !self.self_test_fails;
            self.device.on_self_test(0, SelfTestResult { horn_ok, chamber_ok: true, battery_mv: 3_000 });
        }
    }

    /// Writes key floor `slot` into its key floor partition, as on a detector that marked an
    /// image of that key slot good before (or whose factory provisioned it so): images of
    /// lower slots are refused.
    pub fn provision_key_floor(&mut self, slot: u32) {
        use embedded_storage::nor_flash::NorFlash;
        let mut guard = self.mutex.try_lock().expect("nothing else holds the flash");
        NorFlash::write(&mut **guard, Self::MAP.key_floor.start, &firegrid_boot::floor::record(slot))
            .unwrap();
    }

    /// Its key floor, as its bootloader reads it.
    pub fn key_floor(&mut self) -> u32 {
        self.updater.key_floor().unwrap()
    }

    /// Its boot counter (one more at every restart).
    pub fn boot(&self) -> u16 {
        self.boot
    }

    /// Its id.
    pub fn id(&self) -> &DeviceId {
        &self.id.dev
    }

    /// Reports where its receiver stands (an idle `fw_status` on a fresh detector), as a
    /// signed uplink: how the gateway learns its boot before it offers anything.
    pub fn announce(&mut self, now_ms: u64) -> Vec<Uplink> {
        let status = self.updater.status();
        self.device.report_update(now_ms, status);
        self.drain_uplinks()
    }

    /// A power cut: the detector restarts through its bootloader, whatever it was doing, and
    /// reports what its flash holds. Returns what it sent.
    pub fn power_cut(&mut self) -> Vec<Uplink> {
        let _ = self.drain_uplinks();
        self.reset();
        self.drain_uplinks()
    }

    /// Receives one command as it came off the broker (signed by the gateway), and returns
    /// the signed uplinks it sent, restarting when its receiver asks (a swap, a rollback).
    pub fn receive_payload(&mut self, payload: &[u8], now_ms: u64) -> Vec<Uplink> {
        self.device.on_downlink_in(now_ms, payload, Encoding::detect(payload));
        self.settle(now_ms)
    }

    /// Runs the receiver after a command: applies it, lets a trial image decide, and restarts
    /// (as often as the receiver asks) collecting every uplink.
    fn settle(&mut self, now_ms: u64) -> Vec<Uplink> {
        let mut action = Action::None;
        if let Some(fw) = self.device.take_firmware_command() {
            action = self.updater.apply(&mut self.device, now_ms, fw);
        }
        let mut out = Vec::new();
        for _ in 0..4 {
            if self.updater.poll(&mut self.device, now_ms) == Action::Restart {
                action = Action::Restart;
            }
            out.extend(self.drain_uplinks());
            if action != Action::Restart {
                break;
            }
            self.reset();
            action = Action::None;
        }
        out
    }

    /// What the device sent since the last call, signed; everything is taken as delivered.
    fn drain_uplinks(&mut self) -> Vec<Uplink> {
        let out: Vec<Uplink> = self.device.outbox().entries().iter().map(|e| e.msg.clone()).collect();
        while let Some(msg) = self.device.outbox().next_due(u64::MAX) {
            let (boot, seq) = (msg.boot, msg.seq);
            self.device.outbox_mut().mark_sent(boot, seq, 0);
            self.device.outbox_mut().ack(boot, seq);
        }
        out
    }

    /// Receives one command (signed by the gateway for this boot) and returns the statuses it
    /// sent back, restarting when the receiver asks.
    pub fn receive(&mut self, mut body: DownlinkBody, now_ms: u64) -> Vec<FirmwareStatus> {
        if let (true, DownlinkBody::FwChunk(chunk)) = (self.corrupt, &mut body) {
            chunk.data.0[0] ^= 0xFF;
        }
        self.seq += 1;
        let id = &self.id;
        let mut cmd = Downlink::new(self.seq, 0, body);
        cmd.sign(&id.village, &id.dev, self.boot, id.key.as_ref().expect("a keyed detector"));
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

    /// The first `len` bytes of its active slot.
    pub fn active(&mut self, len: usize) -> Vec<u8> {
        use embedded_storage::nor_flash::ReadNorFlash;
        let mut guard = self.mutex.try_lock().unwrap();
        let mut out = vec![0; len.next_multiple_of(4)];
        ReadNorFlash::read(&mut **guard, Self::MAP.active.start, &mut out).unwrap();
        out.truncate(len);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_small_map_is_the_one_the_tests_always_used_and_the_large_one_holds_64_kib() {
        assert_eq!(
            layout(SMALL),
            Layout {
                bootloader: 0..PAGE,
                state: PAGE..2 * PAGE,
                manifest: 2 * PAGE..3 * PAGE,
                active: 3 * PAGE..7 * PAGE,
                dfu: 7 * PAGE..12 * PAGE,
                security: 12 * PAGE..14 * PAGE,
                key_floor: 14 * PAGE..16 * PAGE,
            }
        );
        let large = layout(LARGE);
        assert_eq!(large.active.end - large.active.start, 64 * 1024);
        assert_eq!(large.dfu.end - large.dfu.start, 65 * 1024);
        assert_eq!(large.security.end - large.security.start, 2 * PAGE, "the floor's two pages");
        assert_eq!(large.key_floor.end - large.key_floor.start, 2 * PAGE, "the key floor's two pages");
        assert_eq!(large.key_floor.end, LARGE as u32 * PAGE, "the whole flash, nothing past it");
        assert!(
            firegrid_boot::manifest::capacity(2 * PAGE, firegrid_protocol::MAX_CHUNK as u32) >= 64 * 1024
        );
    }
}
