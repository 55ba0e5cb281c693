//! The copy itself, with SSE2 and `rep movsb`.

use core::arch::asm;
use core::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_storeu_si128};

/// From this many bytes a forward copy is one `rep movsb`: below it, the
/// instruction's start-up costs more than a loop of 16-byte moves.
pub const REP_MOVSB_FROM: usize = 2048;

/// Copies `n` bytes from `src` to `dst`; the two may overlap (C's
/// `memmove`, and so also `memcpy`).
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `n` bytes.
#[inline]
pub unsafe fn copy(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY (every block below): each access lies within the first `n`
    // bytes of `src` or `dst`, and where the two overlap, what is read is
    // read before anything that could overwrite it is written.
    unsafe {
        if n <= 16 {
            return up_to_16(dst, src, n);
        }
        if n <= 32 {
            let (a, b) = (load(src), load(src.add(n - 16)));
            store(dst, a);
            store(dst.add(n - 16), b);
            return;
        }
        if n <= 64 {
            let head = load32(src);
            let tail = load32(src.add(n - 32));
            store32(dst, head);
            store32(dst.add(n - 32), tail);
            return;
        }
        // `dst` does not start inside `src`: forwards is safe (a region
        // copied forwards onto a lower address reads each byte before it is
        // written).
        if (dst as usize).wrapping_sub(src as usize) >= n {
            if n >= REP_MOVSB_FROM {
                rep_movsb(dst, src, n);
            } else {
                forwards(dst, src, n);
            }
        } else {
            backwards(dst, src, n);
        }
    }
}

type Block = [__m128i; 4];

/// `n` <= 16 bytes: two overlapping moves of the widest size that fits.
#[inline(always)]
unsafe fn up_to_16(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY: both moves lie within the first `n` bytes; both reads come
    // before the writes.
    unsafe {
        if n >= 8 {
            let a = src.cast::<u64>().read_unaligned();
            let b = src.add(n - 8).cast::<u64>().read_unaligned();
            dst.cast::<u64>().write_unaligned(a);
            dst.add(n - 8).cast::<u64>().write_unaligned(b);
        } else if n >= 4 {
            let a = src.cast::<u32>().read_unaligned();
            let b = src.add(n - 4).cast::<u32>().read_unaligned();
            dst.cast::<u32>().write_unaligned(a);
            dst.add(n - 4).cast::<u32>().write_unaligned(b);
        } else if n >= 2 {
            let a = src.cast::<u16>().read_unaligned();
            let b = src.add(n - 2).cast::<u16>().read_unaligned();
            dst.cast::<u16>().write_unaligned(a);
            dst.add(n - 2).cast::<u16>().write_unaligned(b);
        } else if n == 1 {
            *dst = *src;
        }
    }
}

/// `n` > 64, `dst` not inside `src`: 64-byte blocks from the front. The
/// last 64 bytes are read first and written last, so a tail that the
/// blocks' writes overlap is copied as it was.
#[inline(always)]
unsafe fn forwards(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY: as in `copy`; block `i` reads `src[i..i + 64]`, which the
    // writes so far (`dst[..i]`, at or below it) have not reached.
    unsafe {
        let tail = load64(src.add(n - 64));
        let mut i = 0;
        while i + 64 < n {
            let b = load64(src.add(i));
            store64(dst.add(i), b);
            i += 64;
        }
        store64(dst.add(n - 64), tail);
    }
}

/// `n` > 64, `dst` inside `src` (above it): 64-byte blocks from the back;
/// the first 64 bytes are read first and written last.
#[inline(always)]
unsafe fn backwards(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY: as in `copy`; the block ending at `end` reads
    // `src[end - 64..end]`, which the writes so far (`dst[end..]`, at or
    // above it) have not reached.
    unsafe {
        let head = load64(src);
        let mut end = n;
        while end > 64 {
            let b = load64(src.add(end - 64));
            store64(dst.add(end - 64), b);
            end -= 64;
        }
        store64(dst, head);
    }
}

/// One `rep movsb` of `n` bytes forwards (the direction flag is clear at
/// every call, as the ABI requires).
#[inline(always)]
unsafe fn rep_movsb(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY: the caller's ranges; the instruction touches nothing else.
    unsafe {
        asm!(
            "rep movsb",
            inout("rcx") n => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags),
        );
    }
}

#[inline(always)]
unsafe fn load(p: *const u8) -> __m128i {
    // SAFETY: the caller's range.
    unsafe { _mm_loadu_si128(p.cast()) }
}

#[inline(always)]
unsafe fn store(p: *mut u8, v: __m128i) {
    // SAFETY: the caller's range.
    unsafe { _mm_storeu_si128(p.cast(), v) }
}

#[inline(always)]
unsafe fn load32(p: *const u8) -> [__m128i; 2] {
    // SAFETY: the caller's range.
    unsafe { [load(p), load(p.add(16))] }
}

#[inline(always)]
unsafe fn store32(p: *mut u8, v: [__m128i; 2]) {
    // SAFETY: the caller's range.
    unsafe {
        store(p, v[0]);
        store(p.add(16), v[1]);
    }
}

#[inline(always)]
unsafe fn load64(p: *const u8) -> Block {
    // SAFETY: the caller's range.
    unsafe { [load(p), load(p.add(16)), load(p.add(32)), load(p.add(48))] }
}

#[inline(always)]
unsafe fn store64(p: *mut u8, v: Block) {
    // SAFETY: the caller's range.
    unsafe {
        store(p, v[0]);
        store(p.add(16), v[1]);
        store(p.add(32), v[2]);
        store(p.add(48), v[3]);
    }
}
