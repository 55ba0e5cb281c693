//! `copy` against `copy_within` (the platform's own memmove) for every
//! size up to past the block size, sizes around the `rep movsb` threshold,
//! every misalignment of either side, and overlaps in both directions.
//! Built for musl (`scripts/test.sh` runs that too), every case also goes
//! through the C symbols the crate defines there, the ones the binaries
//! link; `copy_within` is then this crate's own `memmove`, so the expected
//! bytes come from a plain byte loop instead.
#![cfg(target_arch = "x86_64")]
#![allow(unsafe_code)]

use wasmbox_memcopy::{copy, REP_MOVSB_FROM};

type Copy = unsafe fn(*mut u8, *const u8, usize);

#[cfg(target_env = "musl")]
mod c {
    use std::ffi::c_void;

    extern "C" {
        fn memcpy(dst: *mut c_void, src: *const c_void, n: usize) -> *mut c_void;
        fn memmove(dst: *mut c_void, src: *const c_void, n: usize) -> *mut c_void;
    }

    /// C's `memmove`, checking that it returns `dst`.
    pub unsafe fn c_memmove(dst: *mut u8, src: *const u8, n: usize) {
        // SAFETY: the caller's ranges.
        let r = unsafe { memmove(dst.cast(), src.cast(), n) };
        assert_eq!(r, dst.cast(), "memmove returns dst");
    }

    /// C's `memcpy` (disjoint regions only), checking that it returns `dst`.
    pub unsafe fn c_memcpy(dst: *mut u8, src: *const u8, n: usize) {
        // SAFETY: the caller's ranges, which do not overlap.
        let r = unsafe { memcpy(dst.cast(), src.cast(), n) };
        assert_eq!(r, dst.cast(), "memcpy returns dst");
    }
}

/// What copies regions that may overlap.
fn movers() -> Vec<(&'static str, Copy)> {
    #[allow(unused_mut)]
    let mut v: Vec<(&'static str, Copy)> = vec![("copy", copy)];
    #[cfg(target_env = "musl")]
    v.push(("memmove", c::c_memmove));
    v
}

/// What copies disjoint regions.
fn copiers() -> Vec<(&'static str, Copy)> {
    #[allow(unused_mut)]
    let mut v = movers();
    #[cfg(target_env = "musl")]
    v.push(("memcpy", c::c_memcpy));
    v
}

/// `buf[src..src + n]` copied to `buf[dst..]` one byte at a time, in the
/// direction that reads each byte before it is overwritten.
fn reference_move(buf: &mut [u8], src: usize, dst: usize, n: usize) {
    if dst < src {
        for i in 0..n {
            buf[dst + i] = buf[src + i];
        }
    } else {
        for i in (0..n).rev() {
            buf[dst + i] = buf[src + i];
        }
    }
}

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
    for (name, copy) in copiers() {
        for n in sizes() {
            for src_off in 0..4 {
                for dst_off in [0, 1, 7, 15] {
                    let src = pattern(n + src_off);
                    // Guards either side: a write out of range changes them.
                    let mut dst = vec![0xEEu8; n + dst_off + 64];
                    // SAFETY: both ranges lie in their buffers.
                    unsafe { copy(dst.as_mut_ptr().add(dst_off), src.as_ptr().add(src_off), n) };
                    let at = format!("{name}: n={n} src+{src_off} dst+{dst_off}");
                    assert!(dst[dst_off..dst_off + n] == src[src_off..], "{at}");
                    assert!(
                        dst[..dst_off].iter().all(|&b| b == 0xEE),
                        "wrote before dst: {at}"
                    );
                    assert!(
                        dst[dst_off + n..].iter().all(|&b| b == 0xEE),
                        "wrote past dst: {at}"
                    );
                }
            }
        }
    }
}

#[test]
fn overlapping_regions_in_both_directions() {
    for (name, copy) in movers() {
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
                    reference_move(&mut expected, src, dst, n);
                    let base = got.as_mut_ptr();
                    // SAFETY: both ranges lie in `got`.
                    unsafe { copy(base.add(dst), base.add(src), n) };
                    let at = format!("{name}: n={n} distance={distance} dst_above={dst_above}");
                    assert!(got == expected, "{at}");
                }
            }
        }
    }
}

#[test]
fn a_region_onto_itself_is_unchanged() {
    for (name, copy) in movers() {
        for n in sizes() {
            let mut got = pattern(n);
            let p = got.as_mut_ptr();
            // SAFETY: the range is the buffer.
            unsafe { copy(p, p, n) };
            assert!(got == pattern(n), "{name}: n={n}");
        }
    }
}

#[test]
fn zero_bytes_touch_neither_pointer() {
    for (_, copy) in copiers() {
        // SAFETY: with zero bytes C lets both pointers be null.
        unsafe { copy(std::ptr::null_mut(), std::ptr::null(), 0) };
    }
}
