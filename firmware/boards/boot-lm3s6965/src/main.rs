//! The firegrid detector's bootloader core on a Cortex-M3: the QEMU `lm3s6965evb` image.
//!
//! [`main`] runs [`firegrid_boot::loader::prepare`], the very code a reset runs on the
//! detector, over a small flash map in RAM ([`SimulatedNor`], fourteen 1 KiB pages: QEMU's
//! `lm3s6965evb` does not emulate the Stellaris flash controller, so the image cannot program
//! its own flash): an old image in the active slot, a new one (security counter 1) in the DFU
//! slot with its manifest and embassy-boot's swap request. Five times: with the image as
//! signed by key slot 0, which must be verified (Ed25519, ed25519-dalek on the 32-bit
//! backend) and swapped in on trial; with one byte of it changed, which must be refused with
//! the old image kept; as signed on a device whose security floor is 2, which must be refused
//! as a downgrade; as signed by slot 0 on a device whose key floor is 1, which must be refused
//! as a revoked key; and as signed by slot 1 on that device, which must be verified under the
//! slot-1 key and swapped in. It logs each outcome through defmt over semihosting;
//! `firmware/detector/tests/it/qemu.rs` checks the log and measures the image, whose flash
//! figure is the bootloader's (the RAM map adds 16 KiB for the simulated flash that the real
//! part does not need).
//!
//! [`VENDOR_KEYS`] are the public halves of the tests' vendor keys (`[0x42; 32]`, `[0x43; 32]`
//! and `[0x44; 32]` as Ed25519 seeds, slots 0 to 2); a production bootloader is built with the
//! vendor's own public keys in their place (`firegrid firmware keygen` prints each).
//! `firmware/detector/tests/it/ota.rs` checks that the keys, [`SIGNATURE`] and
//! [`SIGNATURE_SLOT_1`] here are those test keys'.
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
use firegrid_boot::VendorKeys;
use firegrid_boot::loader::{self, Outcome, Refusal};
use firegrid_boot::manifest::{self, Manifest};
use firegrid_detector::journal::SimulatedNor;

/// The tests' vendor public keys by slot (the key in use and two spares).
const VENDOR_KEYS: VendorKeys = [
    hex32("2152f8d19b791d24453242e15f2eab6cb7cffa7b6a5ed30097960e069881db12"),
    hex32("22fc297792f0b6ffc0bfcfdb7edb0c0aa14e025a365ec0e342e86e3829cb74b6"),
    hex32("d759793bbc13a2819a827c76adb6fba8a49aee007f49f2d0992d99b825ad2c48"),
];

/// The slot-0 test key's signature of [`new_byte`]'s 3,500-byte image as version `1.5.0`
/// with security counter [`COUNTER`] (of firegrid-protocol's `signed_message`: domain,
/// version, counter, key slot 0 and the image's SHA-512).
const SIGNATURE: [u8; 64] = hex64(concat!(
    "07b8e9c62ef916c25fceda23de96b06cb6a0c3610cdd93ab7e920c7ba39e4e9a",
    "05c3d0017481dcaa85e290d4c97218a7a8d8e1bf48570f2aab1eb7c075ca2d04"
));

/// The same image signed by the slot-1 test key (key slot 1 in the signed message).
const SIGNATURE_SLOT_1: [u8; 64] = hex64(concat!(
    "62a04f842a3b2e9db886255c6579ce9b91edd7d0d7773a824e6327bb80eacbd0",
    "509f8e4dc5b01b6656723d4dc484e8fe360b7c088a9cd9a4dfa37c2317811a00"
));

/// The new image's security counter.
const COUNTER: u32 = 1;

const OLD_LEN: u32 = 3_000;
const NEW_LEN: u32 = 3_500;

/// The small map (1 KiB pages): state, manifest, a 4-page active slot, a 5-page DFU slot, a
/// 2-page security floor and a 2-page key floor.
const STATE: Range<u32> = 1024..2048;
const MANIFEST: Range<u32> = 2048..3072;
const ACTIVE: Range<u32> = 3072..7168;
const DFU: Range<u32> = 7168..12288;
const SECURITY: Range<u32> = 12288..14336;
const KEY_FLOOR: Range<u32> = 14336..16384;

type Flash = SimulatedNor<16, 1024>;

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

/// How [`install`] prepares a case.
struct Case {
    /// Byte of the new image inverted after signing.
    flip: Option<u32>,
    /// The security floor (erased for 0).
    floor: u32,
    /// The key floor (erased for 0).
    key_floor: u32,
    /// The key slot the manifest names, with its signature.
    slot: u8,
}

/// Erased flash with the old image active, the new one in the DFU slot, its committed
/// manifest, embassy-boot's SWAP magic, and the floors, as `case` says.
fn install(flash: &mut Flash, case: Case) {
    let Case { flip, floor, key_floor, slot } = case;
    // Erased in place: a `Flash::new()` temporary per case would put 16 KiB on the stack
    // for each inlined call (five of them overflow the 64 KiB of RAM).
    if flash.erase(0, flash.capacity() as u32).is_err() {
        panic!("erase");
    }
    program(flash, ACTIVE.start, OLD_LEN, old_byte);
    program(flash, DFU.start, NEW_LEN, |i| if Some(i) == flip { !new_byte(i) } else { new_byte(i) });
    let mut version = [0; 16];
    version[..5].copy_from_slice(b"1.5.0");
    // The bootloader checks the signature, not the SHA-256 (the application's check).
    let signature = if slot == 1 { SIGNATURE_SLOT_1 } else { SIGNATURE };
    let m = Manifest {
        version,
        size: NEW_LEN,
        sha256: [0; 32],
        signature,
        security_counter: COUNTER,
        key_slot: slot,
    };
    let header = m.encode();
    let ok = (floor == 0 || flash.write(SECURITY.start, &firegrid_boot::floor::record(floor)).is_ok())
        && (key_floor == 0 || flash.write(KEY_FLOOR.start, &firegrid_boot::floor::record(key_floor)).is_ok())
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
    let (mut security, mut key_floor) = (part(SECURITY), part(KEY_FLOOR));
    loader::prepare(
        &mut active,
        &mut dfu,
        &mut state,
        &mut manifest,
        &mut security,
        &mut key_floor,
        &VENDOR_KEYS,
    )
    .ok()
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
        Some(Outcome::Refused(Refusal::UnknownKey)) => "refused unknown_key",
        Some(Outcome::Refused(Refusal::RevokedKey)) => "refused revoked_key",
        None => "flash error",
    }
}

/// Runs `case` and logs its outcome and which image is active.
fn run(flash: &mut Flash, name: &str, case: Case) {
    install(flash, case);
    let outcome = prepare(flash);
    let active = if active_is(flash, NEW_LEN, new_byte) {
        "new"
    } else if active_is(flash, OLD_LEN, old_byte) {
        "old"
    } else {
        "mixed"
    };
    defmt::info!("boot {=str} {=str} active {=str}", name, outcome_name(outcome), active);
}

/// Runs the five cases, logs, and ends QEMU with the semihosting exit call.
#[entry]
fn main() -> ! {
    let flash: &'static mut Flash =
        cortex_m::singleton!(: Flash = Flash::new()).unwrap_or_else(|| unreachable!());
    defmt::info!("begin");
    let signed = || Case { flip: None, floor: 0, key_floor: 0, slot: 0 };
    run(flash, "signed", signed());
    run(flash, "altered", Case { flip: Some(1_234), ..signed() });
    run(flash, "downgrade", Case { floor: COUNTER + 1, ..signed() });
    run(flash, "revoked", Case { key_floor: 1, ..signed() });
    run(flash, "rotated", Case { key_floor: 1, slot: 1, ..signed() });
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
