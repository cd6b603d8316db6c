//! The layout's and the manifest's own checks; the bootloader's decisions are tested with the
//! application's receiver on simulated NOR flash (`firmware/detector/tests/it/ota.rs`).

use crate::manifest::{self, Entry, Header, Manifest};
use crate::{LM3S6965, Layout, PAGE};

/// The detector's chunk size (firegrid-protocol `MAX_CHUNK`), on which the manifest's
/// progress log is sized.
const CHUNK: u32 = 384;

#[test]
fn the_board_layout_is_valid_and_fits_the_part() {
    const {
        assert!(LM3S6965.is_valid(4, CHUNK));
        assert!(LM3S6965.dfu.end <= 256 * 1024, "inside the LM3S6965's 256 KiB");
        assert!(LM3S6965.max_image() >= 64 * 1024, "the active slot holds the application budget");
    }
    let mut dfu_too_small = LM3S6965.clone();
    dfu_too_small.dfu.end -= PAGE;
    assert!(!dfu_too_small.is_valid(4, CHUNK), "embassy-boot needs one spare page");
    let overlapping = Layout { manifest: 0x0_C400..0x0_D800, ..LM3S6965.clone() };
    assert!(!overlapping.is_valid(4, CHUNK));
    let unaligned = Layout { bootloader: 0..0x0_C001, ..LM3S6965.clone() };
    assert!(!unaligned.is_valid(4, CHUNK));
    let small_state = Layout { state: 0x0_C000..0x0_C400, ..LM3S6965.clone() };
    assert!(!small_state.is_valid(4, CHUNK), "2 + 4 × 96 words do not fit in 1 KiB");
}

fn sample() -> Manifest {
    let mut version = [0; 16];
    version[..5].copy_from_slice(b"1.5.0");
    Manifest { version, size: 61_932, sha256: [0xA5; 32], signature: [0x5A; 64] }
}

fn written(m: &Manifest, marks: &[(u32, [u8; 4])]) -> [u8; manifest::HEADER_LEN] {
    let mut bytes = [0xFF; manifest::HEADER_LEN];
    bytes[..manifest::HEADER_MARK_AT as usize].copy_from_slice(&m.encode());
    for (at, mark) in marks {
        bytes[*at as usize..*at as usize + 4].copy_from_slice(mark);
    }
    bytes
}

#[test]
fn a_header_counts_only_with_its_mark() {
    let m = sample();
    assert_eq!(Header::decode(&written(&m, &[])), None, "cut before the HEADER mark");
    let header = Header::decode(&written(&m, &[(manifest::HEADER_MARK_AT, manifest::HEADER_MARK)])).unwrap();
    assert_eq!(header, Header { manifest: m.clone(), committed: false, refused: false, booted: false });
    assert_eq!(header.manifest.version_str(), "1.5.0");
    let committed = Header::decode(&written(
        &m,
        &[(manifest::HEADER_MARK_AT, manifest::HEADER_MARK), (manifest::COMMIT_AT, manifest::COMMIT_MARK)],
    ))
    .unwrap();
    assert!(committed.committed && !committed.refused);
    let refused = Header::decode(&written(
        &m,
        &[
            (manifest::HEADER_MARK_AT, manifest::HEADER_MARK),
            (manifest::COMMIT_AT, manifest::COMMIT_MARK),
            (manifest::REFUSED_AT, manifest::REFUSED_MARK),
        ],
    ))
    .unwrap();
    assert!(refused.refused && !refused.booted);
    let booted = Header::decode(&written(
        &m,
        &[
            (manifest::HEADER_MARK_AT, manifest::HEADER_MARK),
            (manifest::COMMIT_AT, manifest::COMMIT_MARK),
            (manifest::BOOTED_AT, manifest::BOOTED_MARK),
        ],
    ))
    .unwrap();
    assert!(booted.booted && !booted.refused);
}

#[test]
fn progress_entries_detect_a_torn_word() {
    for end in [0, 4, 384, 61_932, u32::MAX - 1] {
        assert_eq!(manifest::read_entry(&manifest::entry(end)), Entry::Written(end));
    }
    assert_eq!(manifest::read_entry(&[0xFF; 8]), Entry::Erased);
    let mut torn = [0xFF; 8];
    torn[0] = manifest::entry(768)[0];
    assert_eq!(manifest::read_entry(&torn), Entry::Torn, "only the first byte programmed");
    let mut half = manifest::entry(768);
    half[4..].fill(0xFF);
    assert_eq!(manifest::read_entry(&half), Entry::Torn, "the complement missing");
    assert_eq!(manifest::capacity(4 * PAGE, CHUNK), 495 * CHUNK);
}
