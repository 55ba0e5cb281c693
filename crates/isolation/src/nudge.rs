//! The watch's nudge: a signal that makes a worker thread move itself into
//! its slot cgroup.
//!
//! A thread that moves itself writes `0` (the kernel's "this thread") to
//! its slot's `tasks` or `cgroup.threads`, which the kernel does without
//! the threadgroup lock: tens of µs. Moving another thread by its TID takes
//! that lock for writing, which waits out an RCU grace period under the
//! cgroup mutex (7-11 ms here), and every other worker's own move waits
//! for it meanwhile. So the watch ([`crate::watch`]) does not move a call
//! that runs long outside its slot: it sends that thread this signal
//! ([`send`]), and the thread's handler moves the thread in, between two
//! instructions of whatever it runs, a bulk memory operation included.
//!
//! The handler does only async-signal-safe work: it loads this thread's
//! door from a thread-local pointer ([`post`]), wins the door's state by
//! compare-and-swap ([`Door::nudged`]), and moves with `open`, `write` and
//! `close` on a path prepared beforehand ([`move_self`]); it leaves `errno`
//! as it found it. A signal that arrives late (the call ended, a later call
//! runs, the slot is gone, or the TID now names another of the process's
//! threads) does nothing unless the door it finds is nudged itself, and
//! then makes the very move that nudge asks for.
//!
//! A thread holds one slot at a time (a worker drops its slot before it
//! makes another): a second slot posted on the same thread replaces the
//! first, whose calls are then held from their first epoch tick only.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::sync::atomic::{compiler_fence, AtomicPtr, Ordering};
use std::sync::OnceLock;

use crate::cgroup::Door;

thread_local! {
    /// The door of the slot this thread holds, while it holds one (an
    /// atomic: the handler reads what the thread's own code writes).
    static POSTED: AtomicPtr<Door> = const { AtomicPtr::new(std::ptr::null_mut()) };
}

/// The signal: a real-time one (queued, and used by neither the C library's
/// threads, wasmtime, nor tokio).
fn number() -> libc::c_int {
    libc::SIGRTMIN() + 2
}

/// Installs the handler, once per process; the error says why it could not
/// be (then nothing is nudged: calls are held from their first epoch tick).
pub(crate) fn install() -> Result<(), String> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let sig = number();
            if sig > libc::SIGRTMAX() {
                return Err(format!("no real-time signal {sig} on this system"));
            }
            // SAFETY: `sigaction` is plain data, valid zeroed; the handler
            // is async-signal-safe (the module doc) and takes the one
            // argument a handler without SA_SIGINFO is given.
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                    return Err(format!("sigaction({sig}): {}", io::Error::last_os_error()));
                }
                if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
                    return Err(format!("signal {sig} already has a handler"));
                }
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_nudge as extern "C" fn(libc::c_int) as libc::sighandler_t;
                // Interrupted system calls resume; wasmtime's alternate
                // stack is used where the thread has one.
                sa.sa_flags = libc::SA_RESTART | libc::SA_ONSTACK;
                libc::sigemptyset(&mut sa.sa_mask);
                if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                    return Err(format!("sigaction({sig}): {}", io::Error::last_os_error()));
                }
            }
            Ok(())
        })
        .clone()
}

/// Makes `door` the one a nudge of this thread moves in, until [`unpost`],
/// and lets the signal through on this thread (a thread inherits its
/// creator's blocked signals).
pub(crate) fn post(door: &Door) {
    POSTED.with(|p| p.store(std::ptr::from_ref(door).cast_mut(), Ordering::Relaxed));
    compiler_fence(Ordering::SeqCst);
    // SAFETY: a sigset_t is plain data, filled by sigemptyset/sigaddset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, number());
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// Ends [`post`] of `door` on this thread, before the door may go away.
pub(crate) fn unpost(door: &Door) {
    compiler_fence(Ordering::SeqCst);
    POSTED.with(|p| {
        let _ = p.compare_exchange(
            std::ptr::from_ref(door).cast_mut(),
            std::ptr::null_mut(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    });
    compiler_fence(Ordering::SeqCst);
}

/// Whether `door` is this thread's posted one.
#[cfg(test)]
pub(crate) fn posted(door: &Door) -> bool {
    POSTED.with(|p| std::ptr::eq(p.load(Ordering::Relaxed), door))
}

/// Whether this thread has a posted door.
#[cfg(test)]
pub(crate) fn posted_any() -> bool {
    POSTED.with(|p| !p.load(Ordering::Relaxed).is_null())
}

/// Nudges thread `tid` of this process.
pub(crate) fn send(tid: i32) -> io::Result<()> {
    // SAFETY: tgkill takes plain integers and touches no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            libc::c_long::from(libc::getpid()),
            libc::c_long::from(tid),
            libc::c_long::from(number()),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Moves the calling thread into the cgroup whose `tasks` (or
/// `cgroup.threads`) is `join`, with async-signal-safe calls only; the
/// `errno` of a failure.
pub(crate) fn move_self(join: &CStr) -> Result<(), i32> {
    // SAFETY: `join` is a NUL-terminated path; the buffer written is a
    // one-byte static; the descriptor is ours and closed once.
    unsafe {
        let fd = libc::open(join.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(*libc::__errno_location());
        }
        let written = libc::write(fd, b"0".as_ptr().cast(), 1);
        let r = if written == 1 {
            Ok(())
        } else {
            Err(*libc::__errno_location())
        };
        libc::close(fd);
        r
    }
}

extern "C" fn on_nudge(_: libc::c_int) {
    // SAFETY: errno is this thread's own.
    let errno = unsafe { *libc::__errno_location() };
    let door = POSTED.with(|p| p.load(Ordering::Relaxed));
    if !door.is_null() {
        // SAFETY: a posted door outlives its posting: the slot that holds
        // it unposts it on this thread before letting go of it.
        unsafe { &*door }.nudged();
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}
