//! The watch over calls that run ahead outside their slots (cgroup modes).
//!
//! A call with a limit starts in the process's own cgroup and moves itself
//! into its slot at its first epoch tick ([`Door`]). What runs before that
//! tick, or between two checks, is not held: instantiation, one bulk memory
//! instruction over up to the memory cap, a host call's own CPU
//! (`random_get` into a large buffer). A tenant can make that long: one
//! `memory.fill` of 256 MiB is about 150 ms of a whole core here (wasmtime
//! checks the epoch after a bulk operation, not during it).
//!
//! One thread per instance keeps watch over the doors that are armed (a
//! limited call runs, its thread not yet in its slot). It notes each armed
//! call's thread CPU time when it first sees it; once the call has used
//! [`OVERDUE`] more without entering, it nudges the thread
//! ([`crate::nudge`]: a signal whose handler moves the thread in itself,
//! mid-operation). The watch does not move the thread by its TID: that is
//! the slow kind of move (the threadgroup lock's RCU wait under the cgroup
//! mutex, p90 7.3 ms here against 62 µs for a thread moving itself), and
//! every other worker's own move would wait for it. A call nudged so runs
//! at most about `OVERDUE` plus two `POLL`s of CPU outside its slot,
//! however long its unchecked operation.
//!
//! The thread parks while nothing is armed (an idle server costs nothing),
//! and polls every [`POLL`] while anything is.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use nix::time::{clock_gettime, ClockId};

use crate::cgroup::Door;

/// How often armed doors are looked at.
pub const POLL: Duration = Duration::from_millis(5);

/// CPU a call may use outside its slot, after the watch first saw it
/// armed, before the watch nudges it in. Two epoch ticks: a call that
/// executes Wasm reaches its first tick well before.
pub const OVERDUE: Duration = Duration::from_millis(10);

/// The watch of one instance's slots; its thread starts with the first
/// door and ends when this is dropped.
#[derive(Default)]
pub struct Watch {
    inner: Arc<Inner>,
    thread: OnceLock<Option<std::thread::Thread>>,
}

#[derive(Default)]
struct Inner {
    /// Doors registered since the thread last took them.
    new: Mutex<Vec<Weak<Door>>>,
    /// Set by the thread before it parks with nothing armed.
    idle: AtomicBool,
    stop: AtomicBool,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("idle", &self.inner.idle.load(Ordering::Relaxed))
            .finish()
    }
}

impl Watch {
    /// Watches `door` from now on (until it is dropped). Starts the thread
    /// with the first door; if the thread cannot start or the nudge's
    /// handler cannot be installed, calls are not watched (logged once),
    /// and are held from their first epoch tick only.
    pub fn register(&self, door: &Arc<Door>) {
        let thread = self.thread.get_or_init(|| {
            if let Err(e) = crate::nudge::install() {
                tracing::error!(error = %e, "cannot install the signal handler by which calls running outside their slot cgroups are moved in; such calls are held only from their first epoch tick");
                return None;
            }
            let inner = self.inner.clone();
            std::thread::Builder::new()
                .name("wasmbox-watch".into())
                .spawn(move || run(&inner))
                .map(|h| h.thread().clone())
                .inspect_err(|e| {
                    tracing::error!(error = %e, "cannot start the thread that watches calls running outside their slot cgroups; such calls are held only from their first epoch tick")
                })
                .ok()
        });
        if let Some(t) = thread {
            self.inner
                .new
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Arc::downgrade(door));
            t.unpark();
        }
    }

    /// A door was armed: wakes the thread if it parked with nothing to
    /// watch (one atomic load otherwise).
    pub fn armed(&self) {
        if self.inner.idle.load(Ordering::SeqCst) && self.inner.idle.swap(false, Ordering::SeqCst) {
            if let Some(Some(t)) = self.thread.get() {
                t.unpark();
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        if let Some(Some(t)) = self.thread.get() {
            t.unpark();
        }
    }
}

/// What the thread knows of one door.
struct Seen {
    door: Weak<Door>,
    /// The arming it last saw (the door's count) and the thread's CPU time
    /// then.
    arming: Option<(u64, Duration)>,
    /// The arming whose call could not be nudged (the signal could not be
    /// sent, or its handler's move failed): not tried again for that call.
    given_up: Option<u64>,
}

fn run(inner: &Inner) {
    let mut doors: Vec<Seen> = Vec::new();
    while !inner.stop.load(Ordering::SeqCst) {
        doors.extend(
            std::mem::take(&mut *inner.new.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .map(|door| Seen {
                    door,
                    arming: None,
                    given_up: None,
                }),
        );
        doors.retain(|s| s.door.strong_count() > 0);
        if look(&mut doors) {
            std::thread::park_timeout(POLL);
            continue;
        }
        // Nothing armed: park until a door is. Announce it first, then look
        // once more, so an arming in between is seen either here or by its
        // `Watch::armed` (which then finds `idle` set and unparks).
        inner.idle.store(true, Ordering::SeqCst);
        // Orders the store above before the loads of the doors' states
        // (which are Acquire only), against `Door::arm`'s SeqCst store of
        // its state before its load of `idle`.
        std::sync::atomic::fence(Ordering::SeqCst);
        if any_armed(&doors) {
            inner.idle.store(false, Ordering::SeqCst);
            continue;
        }
        std::thread::park();
        inner.idle.store(false, Ordering::SeqCst);
    }
}

fn any_armed(doors: &[Seen]) -> bool {
    doors
        .iter()
        .any(|s| s.door.upgrade().is_some_and(|d| d.armed().is_some()))
}

/// One look at every door: nudges the threads of calls overdue. Returns
/// whether any door is armed.
fn look(doors: &mut [Seen]) -> bool {
    let mut any = false;
    for seen in doors.iter_mut() {
        let Some(door) = seen.door.upgrade() else {
            continue;
        };
        let Some(arming) = door.armed() else {
            seen.arming = None;
            continue;
        };
        any = true;
        if seen.given_up == Some(arming) {
            continue;
        }
        let Some(cpu) = thread_cpu_time_of(door.tid()) else {
            continue;
        };
        match seen.arming {
            Some((n, since)) if n == arming => {
                if cpu.saturating_sub(since) < OVERDUE {
                    continue;
                }
                if let Err(why) = door.rescue(arming) {
                    seen.given_up = Some(arming);
                    tracing::warn!(tid = door.tid(), "a call that runs outside its slot cgroup with no epoch check was not moved in ({why}); it moves in at its next tick");
                }
            }
            _ => seen.arming = Some((arming, cpu)),
        }
    }
    any
}

/// The CPU time of thread `tid` of this process (the clock glibc's
/// `pthread_getcpuclockid` names: `MAKE_THREAD_CPUCLOCK(tid,
/// CPUCLOCK_SCHED)`); `None` for a thread that is gone or not ours.
pub fn thread_cpu_time_of(tid: i32) -> Option<Duration> {
    const CPUCLOCK_PERTHREAD_SCHED: i32 = 4 | 2;
    let id = ((!tid) << 3) | CPUCLOCK_PERTHREAD_SCHED;
    clock_gettime(ClockId::from_raw(id))
        .ok()
        .map(Duration::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::throttle::{burn, thread_cpu_time};
    use std::time::Instant;

    #[test]
    fn another_threads_cpu_time_is_read_by_its_tid() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        let h = std::thread::spawn(move || {
            burn(Duration::from_millis(20));
            tx.send((crate::current_tid(), thread_cpu_time())).unwrap();
            let _ = done.recv();
        });
        let (tid, own) = rx.recv().unwrap();
        let seen = thread_cpu_time_of(tid).expect("a thread of this process");
        assert!(
            seen >= own && seen >= Duration::from_millis(20),
            "{seen:?} {own:?}"
        );
        done_tx.send(()).unwrap();
        h.join().unwrap();
        // A joined thread's clock goes a moment after the join returns.
        let deadline = Instant::now() + Duration::from_secs(10);
        while thread_cpu_time_of(tid).is_some() {
            assert!(
                Instant::now() < deadline,
                "a thread that is gone still has a clock"
            );
            std::thread::yield_now();
        }
    }
}
