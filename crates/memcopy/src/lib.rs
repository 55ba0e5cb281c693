//! `memcpy` and `memmove` for the static musl build of the server and the
//! bench.
//!
//! musl's x86_64 `memcpy` copies every size of 8 bytes or more with
//! `rep movsq`, whose start-up costs tens of cycles, and its `memmove`
//! jumps to that copy whenever it may copy forwards. A guest's
//! `memory.copy` reaches the host's `memmove`, so a guest that copies many
//! short runs (jsoncompress) paid it on every one: in a profile of 10
//! jsoncompress calls, musl's copy held 11 % of the server's samples,
//! against 4 % for glibc's in `wasmtime run` of the same build
//! (bench/results/profiles.md). The HTTP path's buffer copies pay it too.
//!
//! [`copy`] copies up to 64 bytes with overlapping unaligned loads and
//! stores (everything read before anything is written, so overlap is
//! safe), longer runs in 64-byte blocks, and from [`REP_MOVSB_FROM`] bytes
//! on with `rep movsb` (fast on CPUs with ERMS, which these have; correct
//! on any). Only SSE2 is used: the baseline of the x86_64 target.
//!
//! For `target_env = "musl"` the crate defines the two C symbols. This
//! crate's rlib comes before libc.a on the link line, and `memcpy` and
//! `memmove` are still undefined when the linker reaches it, so it takes
//! these, and every call to either in the binary (the C allocator's, musl's
//! own and the engine's included) comes here; copies a compiler inlines do
//! not. Both must stay in one module (one object file): musl's `memmove`
//! alone would pull in its `memcpy` and fail the link with a duplicate
//! symbol. A binary opts in with `use wasmbox_memcopy as _;`. Elsewhere
//! (glibc, whose copies are already fast) only [`copy`] is compiled, for
//! the tests.

// LLVM must not turn the copy loops below back into calls to `memcpy`:
// inside `memcpy` itself that would recurse. (Moves of aggregates in
// unoptimised code are another way there: the code keeps none, and the
// workspace builds this crate optimised in debug builds too.)
#![no_builtins]
// Raw pointers and the `rep movsb` instruction, in this crate only.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
mod x86_64;

#[cfg(target_arch = "x86_64")]
pub use x86_64::{copy, REP_MOVSB_FROM};

/// The C symbols, for the static musl build.
#[cfg(all(target_arch = "x86_64", target_env = "musl"))]
mod symbols {
    use core::ffi::c_void;

    /// C's `memcpy` (the regions do not overlap).
    ///
    /// # Safety
    /// C's contract: `src` readable and `dst` writable for `n` bytes.
    #[no_mangle]
    pub unsafe extern "C" fn memcpy(dst: *mut c_void, src: *const c_void, n: usize) -> *mut c_void {
        // SAFETY: the caller's contract, and non-overlapping regions
        // are a case of what `copy` takes.
        unsafe { super::copy(dst.cast(), src.cast(), n) };
        dst
    }

    /// C's `memmove` (the regions may overlap).
    ///
    /// # Safety
    /// C's contract: `src` readable and `dst` writable for `n` bytes.
    #[no_mangle]
    pub unsafe extern "C" fn memmove(
        dst: *mut c_void,
        src: *const c_void,
        n: usize,
    ) -> *mut c_void {
        // SAFETY: the caller's contract.
        unsafe { super::copy(dst.cast(), src.cast(), n) };
        dst
    }
}
