//! The firegrid detector core on a Cortex-M3: the QEMU `lm3s6965evb` board image.
//!
//! [`main`] runs the very code the host tests run, [`firegrid_detector::scenario::run_on`]
//! with the real `Adpd188` driver talking to the simulated chip, over every vector in
//! [`firegrid_detector::scenario::VECTORS`] on its first seed (the host tests sweep all
//! `scenario::SEEDS`; the first is the one compared here), and logs each decision through
//! defmt over semihosting. `firmware/detector/tests/it/qemu.rs` decodes the log with
//! `defmt-print` and requires it to equal the host's run line for line. The device state
//! lives in a static, so the image's static RAM figure includes it.
//!
//! The scenario device carries [`firegrid_detector::scenario::SCENARIO_TEST_KEY`], a fixed
//! test key, so every uplink is signed with HMAC-SHA-256 on the target; after the vectors,
//! [`firegrid_detector::scenario::run_trust`] plays forged, unsigned, replayed and genuine
//! commands to it and logs what it did with each. Last,
//! [`firegrid_detector::scenario::run_journal`] persists the device's alarm in a flash
//! journal, resets the device, reloads and resends it, and drops it on its ack. The journal
//! partition is the first four pages of a [`SimulatedNor`] in RAM (eight 1 KiB pages, the
//! LM3S6965's erase page): QEMU's `lm3s6965evb` does not emulate the Stellaris flash
//! controller, so the image cannot program its own flash. On silicon the partitions are the
//! MCU's flash behind its HAL's `embedded-storage-async` NOR driver, and these 8 KiB of RAM
//! are not needed.
//!
//! Then [`firegrid_detector::scenario::run_update`] runs the over-the-air receiver on the same
//! 8 KiB (erased again) as its DFU slot, state, manifest, security floor and key floor: an offer, a refused gap, a reset
//! mid-transfer that resumes, the SHA-256 check and the swap request. The image's Ed25519
//! check is the bootloader's (`firmware/boards/boot-lm3s6965`), so this image links no
//! Ed25519.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::debug;
use defmt_semihosting as _;
use firegrid_detector::Device;
use firegrid_detector::journal::SimulatedNor;
use firegrid_detector::scenario::{self, VECTORS, What};

/// Runs every vector, logs, and ends QEMU with the semihosting exit call.
#[entry]
fn main() -> ! {
    let device: &'static mut Device =
        cortex_m::singleton!(: Device = scenario::fresh_device()).unwrap_or_else(|| unreachable!());
    defmt::info!("begin {=usize} vectors", VECTORS.len());
    for v in VECTORS {
        *device = scenario::fresh_device();
        let o = scenario::run_on(device, v, |d| match d.what {
            What::State(state, milli) => {
                defmt::info!(
                    "{=str} {=u64} state {=str} {=u32}",
                    v.name,
                    d.t_ms,
                    scenario::state_name(state),
                    milli
                )
            }
            What::Fault(fault, on) => defmt::info!(
                "{=str} {=u64} fault {=str} {=str}",
                v.name,
                d.t_ms,
                scenario::fault_name(fault),
                if on { "on" } else { "off" }
            ),
        });
        defmt::info!("{=str} done {=u32} {=u32}", v.name, o.samples, o.uplink_bytes);
    }
    *device = scenario::fresh_device();
    scenario::run_trust(device, |s| {
        defmt::info!(
            "trust {=str} {=str} {=str} {=u32}",
            s.step,
            scenario::state_name(s.state),
            if s.alarm_pending { "pending" } else { "acknowledged" },
            s.refused
        )
    });
    // Eight pages: the journal takes the first four, the update receiver all eight (its DFU
    // slot, state, manifest and the two pages each of the security floor and the key floor).
    type Partition = SimulatedNor<8, 1024>;
    let flash: &'static mut Partition =
        cortex_m::singleton!(: Partition = Partition::new()).unwrap_or_else(|| unreachable!());
    *device = scenario::fresh_device();
    scenario::run_journal(device, &mut *flash, 0..4096, |s| {
        defmt::info!(
            "journal {=str} {=u16} {=str} {=u32} {=u32}",
            s.step,
            s.boot,
            if s.alarm_pending { "pending" } else { "acknowledged" },
            s.records,
            s.sent
        )
    });
    // The same RAM, erased, as the update receiver's DFU slot, state, manifest and floors.
    *flash = Partition::new();
    *device = scenario::fresh_device();
    scenario::run_update(device, &mut *flash, |s| {
        defmt::info!(
            "update {=str} {=str} {=u32} {=str} {=str}",
            s.step,
            s.status.state.as_str(),
            s.status.offset,
            s.status.error.map_or("-", |e| e.as_str()),
            if s.restart { "restart" } else { "-" }
        )
    });
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
