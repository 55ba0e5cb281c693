//! `copy` against `copy_within` (the platform's own memmove) for every
//! size up to past the block size, sizes around the `rep movsb` threshold,
//! every misalignment of either side, and overlaps in both directions.
#![cfg(target_arch = "x86_64")]
#![allow(unsafe_code)]

use wasmbox_memcopy::{copy, REP_MOVSB_FROM};

/// Sizes that reach every branch: each up to four blocks and a half, and
/// around the `rep movsb` threshold.
fn sizes() -> Vec<usize> {
    let mut v: Vec<usize> = (0..=300).collect();
    v.extend(REP_MOVSB_FROM - 65..REP_MOVSB_FROM + 65);
    v.extend([4096, 4099, 10_000]);
    v
}

/// A buffer no two bytes of which (within 251) are equal, so a byte copied
/// from the wrong place shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn disjoint_regions_at_every_alignment() {
    for n in sizes() {
        for src_off in 0..4 {
            for dst_off in [0, 1, 7, 15] {
                let src = pattern(n + src_off);
                // Guards either side: a write out of range changes them.
                let mut dst = vec![0xEEu8; n + dst_off + 64];
                // SAFETY: both ranges lie in their buffers.
                unsafe { copy(dst.as_mut_ptr().add(dst_off), src.as_ptr().add(src_off), n) };
                assert_eq!(
                    &dst[dst_off..dst_off + n],
                    &src[src_off..],
                    "n={n} src+{src_off} dst+{dst_off}"
                );
                assert!(
                    dst[..dst_off].iter().all(|&b| b == 0xEE),
                    "wrote before dst: n={n}"
                );
                assert!(
                    dst[dst_off + n..].iter().all(|&b| b == 0xEE),
                    "wrote past dst: n={n}"
                );
            }
        }
    }
}

#[test]
fn overlapping_regions_in_both_directions() {
    for n in sizes() {
        for distance in [1, 2, 8, 15, 16, 17, 31, 63, 64, 65, 127, 200] {
            for dst_above in [true, false] {
                let mut expected = pattern(n + distance + 32);
                let mut got = expected.clone();
                let (src, dst) = if dst_above {
                    (8, 8 + distance)
                } else {
                    (8 + distance, 8)
                };
                expected.copy_within(src..src + n, dst);
                let base = got.as_mut_ptr();
                // SAFETY: both ranges lie in `got`.
                unsafe { copy(base.add(dst), base.add(src), n) };
                assert!(
                    got == expected,
                    "n={n} distance={distance} dst_above={dst_above}"
                );
            }
        }
    }
}

#[test]
fn a_region_onto_itself_is_unchanged() {
    for n in sizes() {
        let mut got = pattern(n);
        let p = got.as_mut_ptr();
        // SAFETY: the range is the buffer.
        unsafe { copy(p, p, n) };
        assert!(got == pattern(n), "n={n}");
    }
}
