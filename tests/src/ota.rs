//! Simulated detectors for firmware rollouts: the real detector core (`Device`, `Updater`)
//! and the real bootloader decision (`firegrid_boot::loader`) on simulated NOR flash, one
//! small flash map each. A [`Detector`] takes a gateway command (it signs it for the
//! detector's current boot, as the gateway's MQTT adapter does) and answers with the
//! `fw_status` messages it sent, restarting through its bootloader when it asks to. Used by
//! the gateway's rollout tests and by `firegrid-bench ota`.

use std::cell::RefCell;
use std::ops::Range;

use ed25519_dalek::SigningKey;
use embassy_embedded_hal::flash::partition::{BlockingPartition, Partition};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_sync::mutex::Mutex;
use firegrid_boot::{Layout, PAGE};
use firegrid_detector::journal::SimulatedNor;
use firegrid_detector::update::{Action, Updater};
use firegrid_detector::{Config, Device, Identity, SelfTestResult, scenario};
use firegrid_protocol::{Downlink, DownlinkBody, Encoding, FirmwareStatus, UplinkBody};

/// The simulated detectors' flash map (1 KiB pages): a 4-page active slot, a 5-page DFU slot.
pub const MAP: Layout = Layout {
    bootloader: 0..PAGE,
    state: PAGE..2 * PAGE,
    manifest: 2 * PAGE..3 * PAGE,
    active: 3 * PAGE..7 * PAGE,
    dfu: 7 * PAGE..12 * PAGE,
};
/// A simulated detector's whole flash.
pub type Flash = SimulatedNor<12, 1024>;
type Part = Partition<'static, NoopRawMutex, &'static mut Flash>;

/// The vendor key the simulated detectors' bootloader trusts (a test key).
pub fn vendor() -> SigningKey {
    SigningKey::from_bytes(&[0x42; 32])
}

/// The image every simulated detector starts on (3,000 bytes).
pub fn old_image() -> Vec<u8> {
    (0..3_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// An image to roll out (3,500 bytes, 10 chunks).
pub fn new_image() -> Vec<u8> {
    (0..3_500u32).map(|i| (i * 13 % 253) as u8).collect()
}

/// One simulated detector: its flash (leaked, so the updater can borrow it for the test's
/// length), its core and its update receiver.
pub struct Detector {
    mutex: &'static Mutex<NoopRawMutex, &'static mut Flash>,
    device: Device,
    updater: Updater<Part, Part, Part>,
    boot: u16,
    seq: u32,
    /// Flips a byte of every chunk it receives (a corrupted transfer).
    pub corrupt: bool,
}

fn part(mutex: &'static Mutex<NoopRawMutex, &'static mut Flash>, r: &Range<u32>) -> Part {
    Partition::new(mutex, r.start, r.end - r.start)
}

impl Detector {
    /// A detector on the old image, at boot 1.
    pub fn new(corrupt: bool) -> Self {
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
    pub fn receive(&mut self, mut body: DownlinkBody, now_ms: u64) -> Vec<FirmwareStatus> {
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

    /// The first `len` bytes of its active slot.
    pub fn active(&mut self, len: usize) -> Vec<u8> {
        use embedded_storage::nor_flash::ReadNorFlash;
        let mut guard = self.mutex.try_lock().unwrap();
        let mut out = vec![0; len.next_multiple_of(4)];
        ReadNorFlash::read(&mut **guard, MAP.active.start, &mut out).unwrap();
        out.truncate(len);
        out
    }
}
