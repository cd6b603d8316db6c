//! The receiver on its own (the whole chain with the bootloader is in `tests/it/ota.rs`):
//! the update scenario that the Cortex-M3 image runs too, and what a device refuses.

use firegrid_protocol::{Downlink, DownlinkBody, Encoding, UpdateError, UpdateState};

use super::*;
use crate::journal::SimulatedNor;
use crate::scenario::{self, UpdateStep};

fn lines(flash: SimulatedNor<8, 1024>) -> Vec<String> {
    let mut out = Vec::new();
    scenario::run_update(&mut scenario::fresh_device(), flash, |s: &UpdateStep| {
        let mut line = String::new();
        scenario::write_update_step(&mut line, s).unwrap();
        out.push(line);
    });
    out
}

#[test]
fn the_update_scenario_refuses_a_gap_resumes_after_a_reset_and_requests_the_swap() {
    assert_eq!(
        lines(SimulatedNor::new()),
        [
            "update start idle 0 - -",
            "update offered receiving 0 - -",
            "update gap receiving 0 out_of_order -",
            "update chunk receiving 384 - -",
            "update reset receiving 384 - -",
            "update resumed receiving 384 - -",
            "update received receiving 1000 - -",
            "update committed swapping 1000 - restart",
        ]
    );
}

#[test]
fn a_broken_flash_is_reported_and_nothing_is_requested() {
    let mut flash = SimulatedNor::<8, 1024>::new();
    flash.set_broken(true);
    let got = lines(flash);
    assert_eq!(got[1], "update offered idle 0 flash -");
    assert_eq!(got.last().unwrap(), "update committed idle 0 no_offer -");
}

/// A device with an alarm refuses every firmware command (`busy`) and writes nothing.
#[test]
fn firmware_commands_wait_while_the_device_has_a_fire() {
    let mut device = scenario::fresh_device();
    device.queue(
        0,
        firegrid_protocol::UplinkBody::State(firegrid_protocol::StateChange {
            state: firegrid_protocol::DetectorState::Alarm,
            obscuration_db_m: 0.3,
        }),
    );
    let mut flash = SimulatedNor::<8, 1024>::new();
    let mutex =
        embassy_sync::mutex::Mutex::<embassy_sync::blocking_mutex::raw::NoopRawMutex, _>::new(&mut flash);
    let part = |at, len| embassy_embedded_hal::flash::partition::Partition::new(&mutex, at, len);
    let mut up = Updater::start(
        part(0, 2048),
        part(2048, 1024),
        part(3072, 1024),
        part(4096, 2048),
        part(6144, 2048),
        &mut device,
        0,
    );
    let id = scenario::scenario_identity();
    let mut cmd = Downlink::new(
        1,
        0,
        DownlinkBody::FwOffer(firegrid_protocol::FirmwareOffer {
            version: "2.0.0".try_into().unwrap(),
            size: 100,
            sha256: firegrid_protocol::firmware::FixedBytes([0; 32]),
            signature: firegrid_protocol::firmware::FixedBytes([0; 64]),
            security_counter: 0,
            key_slot: 0,
        }),
    );
    cmd.sign(&id.village, &id.dev, id.boot, id.key.as_ref().unwrap());
    let mut buf = [0u8; 512];
    device.on_downlink_in(0, cmd.encode(Encoding::Compact, &mut buf).unwrap(), Encoding::Compact);
    let fw = device.take_firmware_command().expect("an authenticated offer");
    assert_eq!(up.apply(&mut device, 0, fw), Action::None);
    let status = up.status();
    assert_eq!((status.state, status.error), (UpdateState::Idle, Some(UpdateError::Busy)));
    assert_eq!(up.errors().of(UpdateError::Busy), 1);
    let _ = up.into_parts();
    assert_eq!(flash.steps(), 0, "nothing written while busy");
}

/// An unauthenticated chunk never reaches the receiver: the device refuses it first.
#[test]
fn a_forged_chunk_is_refused_by_the_device() {
    let mut device = scenario::fresh_device();
    let id = scenario::scenario_identity();
    let chunk = firegrid_protocol::FirmwareChunk { offset: 0, data: Default::default() };
    let mut cmd = Downlink::new(1, 0, DownlinkBody::FwChunk(chunk));
    cmd.sign(&id.village, &id.dev, id.boot, &firegrid_protocol::DeviceKey::from_bytes([9; 32]));
    let mut buf = [0u8; 512];
    device.on_downlink_in(0, cmd.encode(Encoding::Compact, &mut buf).unwrap(), Encoding::Compact);
    assert_eq!(device.take_firmware_command(), None);
    assert_eq!(device.refusals().bad_signature, 1);
}
