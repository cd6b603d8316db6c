//! The layout's, the manifest's and the floor's own checks; the bootloader's decisions are
//! tested with the application's receiver on simulated NOR flash
//! (`firmware/detector/tests/it/ota.rs`).

use crate::floor::{self, Raise, Scan};
use crate::manifest::{self, Entry, Header, Manifest, Refused};
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
    let one_page_floor = Layout { security: 0x3_DC00..0x3_E000, ..LM3S6965.clone() };
    assert!(!one_page_floor.is_valid(4, CHUNK), "the floor moves to a second page when full");
    let floor_in_dfu = Layout { security: 0x3_D800..0x3_E000, ..LM3S6965.clone() };
    assert!(!floor_in_dfu.is_valid(4, CHUNK));
    let one_page_key_floor = Layout { key_floor: 0x3_E400..0x3_E800, ..LM3S6965.clone() };
    assert!(!one_page_key_floor.is_valid(4, CHUNK), "the key floor moves to a second page too");
    let key_floor_on_floor = Layout { key_floor: 0x3_E000..0x3_E800, ..LM3S6965.clone() };
    assert!(!key_floor_on_floor.is_valid(4, CHUNK), "the two floors never share a page");
    const { assert!(LM3S6965.key_floor.end <= 256 * 1024) };
}

fn sample() -> Manifest {
    let mut version = [0; 16];
    version[..5].copy_from_slice(b"1.5.0");
    Manifest {
        version,
        size: 61_932,
        sha256: [0xA5; 32],
        signature: [0x5A; 64],
        security_counter: 0x0102_0304,
        key_slot: 2,
    }
}

/// Layout 3 byte for byte, from the table in `manifest.rs`.
#[test]
fn the_header_is_laid_out_as_documented() {
    let bytes = sample().encode();
    assert_eq!(bytes.len(), 128, "the fields end where the HEADER mark begins");
    assert_eq!(&bytes[..6], b"1.5.0\0");
    assert_eq!(bytes[16..20], 61_932u32.to_le_bytes());
    assert_eq!(bytes[20..52], [0xA5; 32]);
    assert_eq!(bytes[52..116], [0x5A; 64]);
    assert_eq!(bytes[116..120], [0x04, 0x03, 0x02, 0x01], "the security counter, little-endian");
    assert_eq!(bytes[120..124], [2, 0, 0, 0], "the key slot, little-endian");
    assert_eq!(bytes[124..128], [0xFF; 4], "the REFUSED mark stays erased");
    assert_eq!(
        (
            manifest::KEY_SLOT_AT,
            manifest::REFUSED_AT,
            manifest::HEADER_MARK_AT,
            manifest::COMMIT_AT,
            manifest::BOOTED_AT,
            manifest::PROGRESS_AT
        ),
        (120, 124, 128, 132, 136, 140)
    );
    assert_eq!(manifest::HEADER_MARK, *b"FGH3");
    assert_eq!(manifest::REVOKED_KEY_MARK, *b"FGKR");
    // A layout-2 header (mark FGH2 at 124, no key slot) reads as absent, committed or not.
    let mut layout2 = [0xFF; manifest::HEADER_LEN];
    layout2[..120].copy_from_slice(&bytes[..120]);
    layout2[124..128].copy_from_slice(b"FGH2");
    layout2[128..132].copy_from_slice(b"FGCM");
    assert_eq!(Header::decode(&layout2), None);
    // A layout-1 header (mark FGHD at 120, no counter) reads as absent.
    let mut layout1 = [0xFF; manifest::HEADER_LEN];
    layout1[..116].copy_from_slice(&bytes[..116]);
    layout1[120..124].copy_from_slice(b"FGHD");
    layout1[124..128].copy_from_slice(b"FGCM");
    assert_eq!(Header::decode(&layout1), None);
    // A key slot word beyond one byte (damaged flash) reads as a slot no bootloader has.
    let mut wide = written(&sample(), &[(manifest::HEADER_MARK_AT, manifest::HEADER_MARK)]);
    wide[120..124].copy_from_slice(&0x0100u32.to_le_bytes());
    assert_eq!(Header::decode(&wide).unwrap().manifest.key_slot, u8::MAX);
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
    assert_eq!(header, Header { manifest: m.clone(), committed: false, refused: None, booted: false });
    assert_eq!(header.manifest.version_str(), "1.5.0");
    let committed = Header::decode(&written(
        &m,
        &[(manifest::HEADER_MARK_AT, manifest::HEADER_MARK), (manifest::COMMIT_AT, manifest::COMMIT_MARK)],
    ))
    .unwrap();
    assert!(committed.committed && committed.refused.is_none());
    let refused = Header::decode(&written(
        &m,
        &[
            (manifest::HEADER_MARK_AT, manifest::HEADER_MARK),
            (manifest::COMMIT_AT, manifest::COMMIT_MARK),
            (manifest::REFUSED_AT, manifest::REFUSED_MARK),
        ],
    ))
    .unwrap();
    assert!(refused.refused == Some(Refused::Unverified) && !refused.booted);
    let downgrade = Header::decode(&written(
        &m,
        &[
            (manifest::HEADER_MARK_AT, manifest::HEADER_MARK),
            (manifest::COMMIT_AT, manifest::COMMIT_MARK),
            (manifest::REFUSED_AT, manifest::DOWNGRADE_MARK),
        ],
    ))
    .unwrap();
    assert_eq!(downgrade.refused, Some(Refused::Downgrade));
    assert_eq!(downgrade.manifest.security_counter, 0x0102_0304);
    let revoked = Header::decode(&written(
        &m,
        &[
            (manifest::HEADER_MARK_AT, manifest::HEADER_MARK),
            (manifest::COMMIT_AT, manifest::COMMIT_MARK),
            (manifest::REFUSED_AT, manifest::REVOKED_KEY_MARK),
        ],
    ))
    .unwrap();
    assert_eq!((revoked.refused, revoked.manifest.key_slot), (Some(Refused::RevokedKey), 2));
    let booted = Header::decode(&written(
        &m,
        &[
            (manifest::HEADER_MARK_AT, manifest::HEADER_MARK),
            (manifest::COMMIT_AT, manifest::COMMIT_MARK),
            (manifest::BOOTED_AT, manifest::BOOTED_MARK),
        ],
    ))
    .unwrap();
    assert!(booted.booted && booted.refused.is_none());
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
    assert_eq!(manifest::capacity(4 * PAGE, CHUNK), 494 * CHUNK);
}

/// A floor partition of `pages` pages of 64 bytes (8 records each) in RAM, with NOR's rule
/// that programming only clears bits.
struct Floor {
    bytes: Vec<u8>,
}

const FLOOR_PAGE: u32 = 64;

impl Floor {
    fn new(pages: u32) -> Self {
        Floor { bytes: vec![0xFF; (pages * FLOOR_PAGE) as usize] }
    }

    fn scan(&self) -> Scan {
        let mut scan = Scan::new(FLOOR_PAGE, self.bytes.len() as u32);
        for (i, record) in self.bytes.chunks(floor::RECORD_LEN).enumerate() {
            scan.feed((i * floor::RECORD_LEN) as u32, record.try_into().unwrap());
        }
        scan
    }

    fn program(&mut self, at: u32, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            self.bytes[at as usize + i] &= b;
        }
    }

    /// Raises the floor as the application does; returns the steps taken.
    fn raise(&mut self, to: u32) -> Option<Raise> {
        let plan = self.scan().raise(to)?;
        let at = match &plan {
            Raise::Append { at } => *at,
            Raise::Move { erase } => {
                self.bytes[erase.start as usize..erase.end as usize].fill(0xFF);
                erase.start
            }
        };
        self.program(at, &floor::record(to));
        Some(plan)
    }
}

#[test]
fn the_floor_is_the_largest_record_and_moves_to_the_next_page_when_full() {
    assert!(Scan::fits(FLOOR_PAGE, 2 * FLOOR_PAGE) && !Scan::fits(FLOOR_PAGE, FLOOR_PAGE));
    let mut f = Floor::new(2);
    assert_eq!(f.scan().floor(), 0, "an erased partition is floor 0");
    assert_eq!(f.raise(0), None, "nothing to write for 0");
    assert_eq!(f.raise(5), Some(Raise::Append { at: 0 }));
    assert_eq!(f.scan().floor(), 5);
    assert_eq!(f.raise(5), None, "equal: already there");
    assert_eq!(f.raise(3), None, "the floor never goes down");
    assert_eq!(f.scan().floor(), 5);
    // Seven more records fill the first page; the ninth goes to the second page, the
    // seventeenth back to the first, erased.
    for v in 6..13 {
        assert_eq!(f.raise(v), Some(Raise::Append { at: (v - 5) * 8 }));
    }
    assert_eq!(f.raise(13), Some(Raise::Move { erase: 64..128 }));
    for v in 14..21 {
        assert_eq!(f.raise(v), Some(Raise::Append { at: 64 + (v - 13) * 8 }));
    }
    assert_eq!(f.raise(21), Some(Raise::Move { erase: 0..64 }));
    assert_eq!(f.scan().floor(), 21);
    assert_eq!(f.raise(22), Some(Raise::Append { at: 8 }));
    assert_eq!(f.scan().floor(), 22);
}

#[test]
fn a_torn_or_half_erased_floor_record_is_the_old_floor_or_the_new_one() {
    // Torn at every byte of the record being written: never a value other than old or new.
    for cut in 0..floor::RECORD_LEN {
        let mut f = Floor::new(2);
        f.raise(7);
        let Some(Raise::Append { at }) = f.scan().raise(9) else { panic!() };
        f.program(at, &floor::record(9)[..cut]);
        let got = f.scan().floor();
        assert!(got == 7 || got == 9, "cut after {cut} bytes: {got}");
        if cut < 4 {
            assert_eq!(got, 7, "cut inside the value: not the new floor yet");
        }
        // The next raise skips the torn slot and lands.
        f.raise(9);
        assert_eq!(f.scan().floor(), 9);
    }
    // A page erased in its first half only (the move interrupted): the floor is the other
    // page's, and the next raise erases that page again.
    let mut f = Floor::new(2);
    for v in 1..=16 {
        f.raise(v);
    }
    assert_eq!(f.scan().raise(17), Some(Raise::Move { erase: 0..64 }));
    f.bytes[..32].fill(0xFF);
    assert_eq!(f.scan().floor(), 16);
    assert_eq!(f.raise(17), Some(Raise::Move { erase: 0..64 }));
    assert_eq!(f.scan().floor(), 17);
    // Nothing valid but garbage in the first page: it is erased before the first record.
    let mut f = Floor::new(2);
    f.program(0, &[0x12]);
    assert_eq!(f.scan().floor(), 0);
    assert_eq!(f.raise(1), Some(Raise::Move { erase: 0..64 }));
    assert_eq!(f.scan().floor(), 1);
}

/// The key floor is the same log over its own pages: raised to a slot torn at every byte of
/// its record, it reads as the old slot or the new one, and the next raise lands.
#[test]
fn a_torn_key_floor_record_is_the_old_slot_or_the_new_one() {
    for (from, to) in [(0, 1), (1, 2)] {
        for cut in 0..floor::RECORD_LEN {
            let mut f = Floor::new(2);
            f.raise(from);
            let at = match f.scan().raise(to) {
                Some(Raise::Append { at }) => at,
                other => panic!("{other:?}"),
            };
            f.program(at, &floor::record(to)[..cut]);
            let got = f.scan().floor();
            assert!(got == from || got == to, "{from} → {to} cut after {cut} bytes: {got}");
            f.raise(to);
            assert_eq!(f.scan().floor(), to);
        }
    }
}
