//! The firegrid detector's bootloader core on a Cortex-M3: the QEMU `lm3s6965evb` image.
//!
//! [`main`] runs [`firegrid_boot::loader::prepare`], the very code a reset runs on the
//! detector, over a small flash map in RAM ([`SimulatedNor`], fourteen 1 KiB pages: QEMU's
//! `lm3s6965evb` does not emulate the Stellaris flash controller, so the image cannot program
//! its own flash): an old image in the active slot, a new one (security counter 1) in the DFU
//! slot with its manifest and embassy-boot's swap request. Three times: with the image as
//! signed, which must be verified (Ed25519, ed25519-dalek on the 32-bit backend) and swapped
//! in on trial; with one byte of it changed, which must be refused with the old image kept;
//! and as signed on a device whose security floor is 2, which must be refused as a
//! downgrade. It logs each outcome through defmt over semihosting;
//! `firmware/detector/tests/it/qemu.rs` checks the log and measures the image, whose flash
//! figure is the bootloader's (the RAM map adds 14 KiB for the simulated flash that the real
//! part does not need).
//!
//! [`VENDOR_KEY`] is the public half of the tests' vendor key (`[0x42; 32]` as an Ed25519
//! seed); a production bootloader is built with the vendor's own public key in its place
//! (`firegrid firmware keygen` prints it). `firmware/detector/tests/it/ota.rs` checks that the
//! key and [`SIGNATURE`] here are that test key's.
#![no_std]
#![no_main]

use core::cell::RefCell;
use core::ops::Range;

use cortex_m_rt::entry;
use cortex_m_semihosting::debug;
use defmt_semihosting as _;
use embassy_embedded_hal::flash::partition::BlockingPartition;
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};
use firegrid_boot::loader::{self, Outcome, Refusal};
use firegrid_boot::manifest::{self, Manifest};
use firegrid_detector::journal::SimulatedNor;

/// The tests' vendor public key (hex `2152f8d19b791d24453242e15f2eab6cb7cffa7b6a5ed30097960e069881db12`).
const VENDOR_KEY: [u8; 32] = hex32("2152f8d19b791d24453242e15f2eab6cb7cffa7b6a5ed30097960e069881db12");

/// The test key's signature of [`new_byte`]'s 3,500-byte image as version `1.5.0` with
/// security counter [`COUNTER`] (of firegrid-protocol's `signed_message`: domain, version,
/// counter and the image's SHA-512).
const SIGNATURE: [u8; 64] = hex64(concat!(
    "bc0085cb14a759b9978d64148112b57ac2f3c1ab028ac4c495832e7ed8a2520b",
    "f5a1a9d9b36831c46a7455322fbacb14524ac498e47e35a83105f97bd6d68703"
));

/// The new image's security counter.
const COUNTER: u32 = 1;

const OLD_LEN: u32 = 3_000;
const NEW_LEN: u32 = 3_500;

/// The small map (1 KiB pages): state, manifest, a 4-page active slot, a 5-page DFU slot, a
/// 2-page security floor.
const STATE: Range<u32> = 1024..2048;
const MANIFEST: Range<u32> = 2048..3072;
const ACTIVE: Range<u32> = 3072..7168;
const DFU: Range<u32> = 7168..12288;
const SECURITY: Range<u32> = 12288..14336;

type Flash = SimulatedNor<14, 1024>;

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => panic!("lowercase hex"),
    }
}

const fn hex32(s: &str) -> [u8; 32] {
    let b = s.as_bytes();
    let mut out = [0; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = nibble(b[2 * i]) << 4 | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

const fn hex64(s: &str) -> [u8; 64] {
    let b = s.as_bytes();
    let mut out = [0; 64];
    let mut i = 0;
    while i < 64 {
        out[i] = nibble(b[2 * i]) << 4 | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

fn old_byte(i: u32) -> u8 {
    (i * 7 % 251) as u8
}

fn new_byte(i: u32) -> u8 {
    (i * 13 % 253) as u8
}

/// Programs `len` bytes of `byte` at `at` (a word at a time).
fn program(flash: &mut Flash, at: u32, len: u32, byte: impl Fn(u32) -> u8) {
    for w in (0..len).step_by(4) {
        let word: [u8; 4] =
            core::array::from_fn(|k| if w + (k as u32) < len { byte(w + k as u32) } else { 0xFF });
        flash.write(at + w, &word).unwrap_or_else(|_| panic!("program"));
    }
}

/// Erased flash with the old image active, the new one (with byte `flip` inverted, if any)
/// in the DFU slot, its committed manifest, embassy-boot's SWAP magic, and the security
/// floor at `floor` (erased for 0).
fn install(flash: &mut Flash, flip: Option<u32>, floor: u32) {
    *flash = Flash::new();
    program(flash, ACTIVE.start, OLD_LEN, old_byte);
    program(flash, DFU.start, NEW_LEN, |i| if Some(i) == flip { !new_byte(i) } else { new_byte(i) });
    let mut version = [0; 16];
    version[..5].copy_from_slice(b"1.5.0");
    // The bootloader checks the signature, not the SHA-256 (the application's check).
    let m =
        Manifest { version, size: NEW_LEN, sha256: [0; 32], signature: SIGNATURE, security_counter: COUNTER };
    let header = m.encode();
    let ok = (floor == 0 || flash.write(SECURITY.start, &firegrid_boot::floor::record(floor)).is_ok())
        && flash.write(MANIFEST.start, &header).is_ok()
        && flash.write(MANIFEST.start + manifest::HEADER_MARK_AT, &manifest::HEADER_MARK).is_ok()
        && flash.write(MANIFEST.start + manifest::COMMIT_AT, &manifest::COMMIT_MARK).is_ok()
        // embassy-boot's SWAP_MAGIC (0xF0) in every byte of the state's first word.
        && flash.write(STATE.start, &[0xF0; 4]).is_ok();
    if !ok {
        panic!("install");
    }
}

/// Runs the bootloader's decision over `flash`.
fn prepare(flash: &mut Flash) -> Option<Outcome> {
    let mutex = Mutex::<NoopRawMutex, _>::new(RefCell::new(flash));
    let part = |r: Range<u32>| BlockingPartition::new(&mutex, r.start, r.end - r.start);
    let (mut active, mut dfu, mut state, mut manifest) =
        (part(ACTIVE), part(DFU), part(STATE), part(MANIFEST));
    let mut security = part(SECURITY);
    loader::prepare(&mut active, &mut dfu, &mut state, &mut manifest, &mut security, &VENDOR_KEY).ok()
}

/// Whether the active slot holds `len` bytes of `byte`.
fn active_is(flash: &mut Flash, len: u32, byte: impl Fn(u32) -> u8) -> bool {
    let mut word = [0u8; 4];
    (0..len).step_by(4).all(|w| {
        flash.read(ACTIVE.start + w, &mut word).is_ok()
            && (0..4).all(|k| w + k >= len || word[k as usize] == byte(w + k))
    })
}

fn outcome_name(o: Option<Outcome>) -> &'static str {
    match o {
        Some(Outcome::Boot) => "boot",
        Some(Outcome::Trial) => "trial",
        Some(Outcome::Reverted) => "reverted",
        Some(Outcome::Refused(Refusal::BadSignature)) => "refused bad_signature",
        Some(Outcome::Refused(Refusal::NoManifest)) => "refused no_manifest",
        Some(Outcome::Refused(Refusal::Oversized)) => "refused oversized",
        Some(Outcome::Refused(Refusal::Downgrade)) => "refused downgrade",
        None => "flash error",
    }
}

/// Runs the three cases, logs, and ends QEMU with the semihosting exit call.
#[entry]
fn main() -> ! {
    let flash: &'static mut Flash =
        cortex_m::singleton!(: Flash = Flash::new()).unwrap_or_else(|| unreachable!());
    defmt::info!("begin");
    install(flash, None, 0);
    let outcome = prepare(flash);
    let active = if active_is(flash, NEW_LEN, new_byte) { "new" } else { "old" };
    defmt::info!("boot signed {=str} active {=str}", outcome_name(outcome), active);
    install(flash, Some(1_234), 0);
    let outcome = prepare(flash);
    let active = if active_is(flash, OLD_LEN, old_byte) { "old" } else { "new" };
    defmt::info!("boot altered {=str} active {=str}", outcome_name(outcome), active);
    install(flash, None, COUNTER + 1);
    let outcome = prepare(flash);
    let active = if active_is(flash, OLD_LEN, old_byte) { "old" } else { "new" };
    defmt::info!("boot downgrade {=str} active {=str}", outcome_name(outcome), active);
    defmt::info!("end");
    debug::exit(debug::EXIT_SUCCESS);
    loop {
        cortex_m::asm::wfi();
    }
}

/// A panic ends QEMU with a failure status after logging, so the test sees it.
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    defmt::error!("panic");
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
