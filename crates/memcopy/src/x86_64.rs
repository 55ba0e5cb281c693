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
            let a = load(src);
            let b = load(src.add(n - 16));
            store(dst, a);
            store(dst.add(n - 16), b);
            return;
        }
        if n <= 64 {
            let a = load(src);
            let b = load(src.add(16));
            let c = load(src.add(n - 32));
            let d = load(src.add(n - 16));
            store(dst, a);
            store(dst.add(16), b);
            store(dst.add(n - 32), c);
            store(dst.add(n - 16), d);
            return;
        }
        // `dst` does not start inside `src`: forwards is safe (a region
        // copied forwards onto a lower address reads each byte before it is
        // written).
        if (dst as usize).wrapping_sub(src as usize) >= n {
            // Not onto itself a few bytes lower: `rep movsb` is slow there
            // on some CPUs (glibc avoids it below 64 bytes of distance).
            if n >= REP_MOVSB_FROM && (src as usize).wrapping_sub(dst as usize) >= 64 {
                rep_movsb(dst, src, n);
            } else {
                forwards(dst, src, n);
            }
        } else {
            backwards(dst, src, n);
        }
    }
}

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
        let t = src.add(n - 64);
        let u = dst.add(n - 64);
        let ta = load(t);
        let tb = load(t.add(16));
        let tc = load(t.add(32));
        let td = load(t.add(48));
        let mut i = 0;
        while i + 64 < n {
            block(dst.add(i), src.add(i));
            i += 64;
        }
        store(u, ta);
        store(u.add(16), tb);
        store(u.add(32), tc);
        store(u.add(48), td);
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
        let ha = load(src);
        let hb = load(src.add(16));
        let hc = load(src.add(32));
        let hd = load(src.add(48));
        let mut end = n;
        while end > 64 {
            block(dst.add(end - 64), src.add(end - 64));
            end -= 64;
        }
        store(dst, ha);
        store(dst.add(16), hb);
        store(dst.add(32), hc);
        store(dst.add(48), hd);
    }
}

/// 64 bytes, all four loads before the stores. Values stay in separate
/// locals, never in an array or tuple moved by value: unoptimised code
/// copies those with a call to `memcpy`, which here would be itself.
#[inline(always)]
unsafe fn block(dst: *mut u8, src: *const u8) {
    // SAFETY: the caller's range.
    unsafe {
        let a = load(src);
        let b = load(src.add(16));
        let c = load(src.add(32));
        let d = load(src.add(48));
        store(dst, a);
        store(dst.add(16), b);
        store(dst.add(32), c);
        store(dst.add(48), d);
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
