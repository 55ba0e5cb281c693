//! Resource-aware, fair admission. Every invocation reserves the CPU
//! (millicores) and memory (MB) it declares; it is admitted while the
//! reservations fit in the limit (capacity x overbooking) and the
//! CPU-utilisation gate is open, and otherwise waits in its function's queue.
//! A third limit counts calls: at most `max_running` are admitted at once
//! (the server's worker count), so a function of tiny reservations cannot
//! take every worker and leave the rest to wait outside the fair order.
//!
//! # Fairness between functions
//!
//! Each function has its own first-in-first-out queue. When anything changes
//! (a call ends, a waiter arrives or leaves, the CPU metric moves), waiters
//! are admitted in this order: the function whose reservations make up the
//! smallest *dominant share* (the largest of its CPU, memory and
//! running-call fractions of the limits) goes first, ties to the request that arrived first. So a
//! function with nothing running goes before one holding most of the pool,
//! however long that one's backlog, and two busy functions converge on equal
//! shares as their calls end.
//!
//! What a function can take from its neighbours, and what it cannot:
//! - **Alone, everything.** A function on an otherwise idle server may
//!   reserve the whole limit; nothing is held back from it.
//! - **Not a turn ahead of smaller neighbours.** While others wait, it goes
//!   after every function that holds less than it does.
//! - **Not more than a share while others wait.** While another function
//!   has a waiter, a function that already holds something and whose next
//!   request would take it past `max_function_share` of the limit (CPU,
//!   memory or running calls; default [`DEFAULT_MAX_FUNCTION_SHARE`] = half) goes after every
//!   function under that ceiling: it waits for its own calls to end, and the
//!   others go on. (If every waiting function is over its ceiling, the
//!   ceiling protects nobody and the plain order applies.) A request larger
//!   than the ceiling still runs: the ceiling never applies to a function
//!   with nothing running.
//! - **Not the room for a newcomer's first call.** A function with nothing running
//!   may reserve up to `newcomer_cpu_overdraft` of the CPU limit *beyond*
//!   the limit (default [`DEFAULT_NEWCOMER_CPU_OVERDRAFT`] = 10 %), so its
//!   first call starts at once even when another function holds all the
//!   CPU. Memory never overdraws. The overdraft is bounded (reservations
//!   never pass limit + overdraft) and CPU is time-shared, so its cost is
//!   that running calls get up to that fraction less CPU than they declared
//!   while it is in use. It does not bypass the CPU gate or `max_running`.
//! - **Not the whole queue.** One function's waiters may take at most
//!   `max_function_queue_share` (default
//!   [`DEFAULT_MAX_FUNCTION_QUEUE_SHARE`] = half) of `max_queue` requests
//!   and of `max_queue_mb`; past that its requests are refused
//!   ([`Rejected::QueueFull`] names the function and its numbers) while
//!   other functions still queue. A function may always queue one request.
//!
//! The trade-off: there is no preemption, so a newcomer whose first call
//! needs more CPU than the overdraft, or memory the others hold, waits for
//! the next call to end (then goes first). Holding capacity back from a lone
//! function instead would make it prompt, but when calls are large (one
//! default 1000-millicore call is half of a 2-core server) any hold-back
//! costs the lone function a whole call's worth; the overdraft costs it at
//! most 10 % of speed, and only while a newcomer runs. Set
//! `newcomer_cpu_overdraft` to 0 to never reserve past the limit.
//!
//! In a virtual-time simulation of the measured case (2 cores; a function
//! with 1000-millicore, 300 ms calls from 32 clients; a 100-millicore
//! function called one call at a time), the small function's queue wait was
//! 4.8 s with one FIFO queue, 298 ms (one hog call) with the fair order
//! alone, and 0 with the default overdraft, while the busy function kept
//! both cores (`tests/sim.rs`).
//!
//! # No starvation, no lost wake-up
//!
//! - If the first request in the order does not fit, later requests that
//!   do fit are admitted past it (backfilling: short calls do not queue
//!   behind a large one), but only until it has waited
//!   `max_overtaken_wait` (default [`DEFAULT_MAX_OVERTAKEN_WAIT`] = 0:
//!   off, strict order). From then on nobody is admitted until it
//!   fits, so a large request waits at most that window plus the calls
//!   admitted during it. Besides, it can be passed only by functions holding
//!   less than its own, and its function holds less as its calls end; at
//!   zero it is first by arrival among functions holding nothing.
//!   (Functions over their ceiling are put after the others, not waited
//!   for: only their own calls ending lets them in, and those end.)
//! - Every change that can let a waiter in re-runs admission under the same
//!   lock, so no wake-up is lost.
//! - A request larger than the whole limit fails at once.
//! - A waiter that times out or whose client leaves is removed, and a
//!   reservation is released on every path (the [`Permit`] is a guard).
//! - [`Admission::close`] fails everything still queued (bounded shutdown).
//!
//! # Starting admitted work where the capacity frees
//!
//! [`Admission::admit`] resolves to a permit in the waiting task, so a
//! queued call starts only after the release that let it in has woken that
//! task, and the task has handed the call to a worker: two wake-ups between
//! one call's end and the next one's start, with every admitted slot idle
//! meanwhile. [`Admission::admit_then`] hands the permit to a start the
//! caller gave instead, run on the thread that admits the request (for a
//! release, the one dropping the permit: the worker whose call ended),
//! right after the admission lock is released. Starts that release at once
//! (their work refused) admit the next waiter, whose start then runs after
//! theirs on the same thread, not inside it; a start that panics is logged
//! and its permit released.

#![warn(missing_docs)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

mod config;
mod error;
mod queue;

pub use error::{QueueScope, Rejected};

use config::Limits;
pub use config::{
    AdmissionConfig, DEFAULT_MAX_FUNCTION_QUEUE_SHARE, DEFAULT_MAX_FUNCTION_SHARE,
    DEFAULT_MAX_OVERTAKEN_WAIT, DEFAULT_MAX_QUEUE, DEFAULT_NEWCOMER_CPU_OVERDRAFT,
    DEFAULT_QUEUE_TIMEOUT,
};
use queue::{Outcome, Ready, State};

/// What [`Admission::admit_then`] runs with the permit once its request is
/// admitted.
pub type Start = Box<dyn FnOnce(Permit) + Send>;

/// A function's identity for admission. Cloning is a reference-count
/// increment: keep one per loaded function and pass it to every
/// [`Admission::admit`].
pub type FunctionKey = Arc<str>;

/// Resources of a whole server or of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    /// CPU in millicores (1000 = one core).
    pub cpu_millis: u64,
    /// Memory in MB.
    pub memory_mb: u64,
}

/// A snapshot of the whole server, for metrics and readiness.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// Held by admitted requests; CPU may pass `limit` by a newcomer's
    /// overdraft.
    pub reserved: Resources,
    /// Total that may be reserved at once (capacity x overbooking).
    pub limit: Resources,
    /// Requests waiting, over all functions.
    pub queued: usize,
    /// MB declared by waiting requests, over all functions.
    pub queued_mb: u64,
    /// Latest CPU utilisation fed in, in cores (0 until the first).
    pub cpu_utilization: f64,
    /// Whether the CPU gate holds admissions (utilisation at or above
    /// `cpu_gate`).
    pub gate_closed: bool,
}

/// One function with waiters or running reservations.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionSnapshot {
    /// The function's key.
    pub function: FunctionKey,
    /// Its requests waiting.
    pub queued: usize,
    /// MB declared by its waiting requests.
    pub queued_mb: u64,
    /// Its admitted requests whose permits are still held.
    pub running: usize,
    /// What those admitted requests hold.
    pub reserved: Resources,
}

/// One server's admission: reservations, per-function queues and the CPU
/// gate (see the crate doc). Built shared, by [`Admission::new`].
pub struct Admission {
    config: AdmissionConfig,
    limits: Limits,
    state: Mutex<State>,
}

/// An admitted request's reservation; released when dropped, from any
/// thread.
pub struct Permit {
    admission: Arc<Admission>,
    function: FunctionKey,
    want: Resources,
    /// Time spent waiting in the queue.
    pub waited: Duration,
}

impl Permit {
    /// The function the reservation was made for.
    pub fn function(&self) -> &FunctionKey {
        &self.function
    }

    /// What the permit holds.
    pub fn resources(&self) -> Resources {
        self.want
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission
            .lock_admitting()
            .release(&self.function, self.want);
    }
}

/// The state locked by a call that may admit waiters. Unlocking runs the
/// starts of those admitted meanwhile ([`Admission::admit_then`]) and drops
/// the starts of waiters that left, both outside the lock.
struct Locked<'a> {
    admission: &'a Arc<Admission>,
    state: Option<MutexGuard<'a, State>>,
}

impl Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        self.state.as_ref().expect("locked until dropped")
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.state.as_mut().expect("locked until dropped")
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let Some(mut st) = self.state.take() else {
            return;
        };
        let ready = std::mem::take(&mut st.ready);
        let discarded = std::mem::take(&mut st.discarded);
        drop(st);
        drop(discarded);
        run_starts(self.admission, ready);
    }
}

thread_local! {
    /// Starts handed to this thread while it runs others: a start that
    /// drops a permit (its work was refused) admits the next waiter, whose
    /// start then waits here instead of running deeper in the same stack.
    static STARTING: RefCell<Option<VecDeque<(Permit, Start)>>> = const { RefCell::new(None) };
}

/// Runs the starts of admitted waiters, each with its permit, on this
/// thread; a panicking start is logged (its permit is released as it
/// unwinds) and the others still run.
fn run_starts(admission: &Arc<Admission>, ready: Vec<Ready>) {
    if ready.is_empty() {
        return;
    }
    let mut batch: VecDeque<(Permit, Start)> = ready
        .into_iter()
        .map(|r| {
            let permit = Permit {
                admission: admission.clone(),
                function: r.function,
                want: r.want,
                waited: r.waited,
            };
            (permit, r.start)
        })
        .collect();
    let outermost = STARTING.with(|s| {
        let mut s = s.borrow_mut();
        match s.as_mut() {
            Some(queue) => {
                queue.append(&mut batch);
                false
            }
            None => {
                *s = Some(VecDeque::new());
                true
            }
        }
    });
    if !outermost {
        return;
    }
    loop {
        while let Some((permit, start)) = batch.pop_front() {
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| start(permit)));
            if ran.is_err() {
                tracing::error!("starting an admitted request panicked");
            }
        }
        let more = STARTING.with(|s| {
            let mut s = s.borrow_mut();
            let queue = s.as_mut().expect("set by the outermost call");
            if queue.is_empty() {
                *s = None;
                None
            } else {
                Some(std::mem::take(queue))
            }
        });
        match more {
            Some(more) => batch = more,
            None => return,
        }
    }
}

impl Admission {
    /// Admission with these settings, nothing reserved or queued. Ratios
    /// out of range are clamped, not refused: check them with
    /// [`AdmissionConfig::validate`] first.
    pub fn new(config: AdmissionConfig) -> Arc<Self> {
        let limits = Limits::new(&config);
        let state = Mutex::new(State::new(limits, config.cpu_gate));
        Arc::new(Admission {
            config,
            limits,
            state,
        })
    }

    /// The settings it was built with.
    pub fn config(&self) -> &AdmissionConfig {
        &self.config
    }

    /// Total that may be reserved at once (capacity x overbooking); a
    /// newcomer's CPU overdraft comes on top.
    pub fn limit(&self) -> Resources {
        self.limits.total
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic under the lock would be a bug; recovering keeps the
        // releases that run in `Drop` from turning it into an abort.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lock for a change that may admit waiters ([`Locked`]).
    fn lock_admitting(self: &Arc<Self>) -> Locked<'_> {
        Locked {
            admission: self,
            state: Some(self.lock()),
        }
    }

    /// Admits `want` for `function` now, or waits its turn in the
    /// function's queue (see the crate doc for the order).
    pub async fn admit(
        self: &Arc<Self>,
        function: &FunctionKey,
        want: Resources,
    ) -> Result<Permit, Rejected> {
        let permit = self.wait_turn(function, want, None).await?;
        Ok(permit.expect("with no start the permit comes back"))
    }

    /// [`Admission::admit`] that hands the permit to `start` instead, run
    /// the moment the request is admitted, on the thread that admits it:
    /// the caller's if it is admitted at once, else the one whose released
    /// reservation (or CPU figure) let it in. Work queued behind a running
    /// call so starts from the thread that ends that call, with no round
    /// trip through the waiting task. Resolves once admitted (`start` has
    /// run, or runs on that thread as soon as it lets go of the lock and
    /// any starts before it have run); when the request is refused, times
    /// out or its future is dropped while it waits, `start` is dropped
    /// unrun.
    pub async fn admit_then(
        self: &Arc<Self>,
        function: &FunctionKey,
        want: Resources,
        start: impl FnOnce(Permit) + Send + 'static,
    ) -> Result<(), Rejected> {
        self.wait_turn(function, want, Some(Box::new(start)))
            .await
            .map(|_| ())
    }

    /// Admits or queues; the permit comes back when there is no `start`.
    async fn wait_turn(
        self: &Arc<Self>,
        function: &FunctionKey,
        want: Resources,
        start: Option<Start>,
    ) -> Result<Option<Permit>, Rejected> {
        let limit = self.limits.total;
        if want.cpu_millis > limit.cpu_millis || want.memory_mb > limit.memory_mb {
            return Err(Rejected::TooLarge {
                want: format!("{} millicores and {} MB", want.cpu_millis, want.memory_mb),
                limit: format!(
                    "{} millicores and {} MB (capacity x overbooking)",
                    limit.cpu_millis, limit.memory_mb
                ),
            });
        }
        let permit = |waited| Permit {
            admission: self.clone(),
            function: function.clone(),
            want,
            waited,
        };
        let has_start = start.is_some();
        let (seq, mut rx) = {
            let mut st = self.lock_admitting();
            if st.draining {
                return Err(Rejected::Draining);
            }
            if st.try_admit_now(function, want) {
                return Ok(match start {
                    // Run as the lock is released, as a queued one's is (a
                    // start that panics is logged and its permit released
                    // there too, not unwound into the caller).
                    Some(start) => {
                        st.ready.push(Ready {
                            function: function.clone(),
                            want,
                            waited: Duration::ZERO,
                            start,
                        });
                        None
                    }
                    None => {
                        drop(st);
                        Some(permit(Duration::ZERO))
                    }
                });
            }
            self.check_queue_limits(&st, function, want)?;
            let (tx, mut rx) = oneshot::channel();
            let seq = st.enqueue(function, want, tx, start);
            // It may be first in the fair order and fit right away (a
            // start then runs as the lock is released).
            st.admit_waiters();
            if rx.try_recv() == Ok(Outcome::Admitted) {
                return Ok((!has_start).then(|| permit(Duration::ZERO)));
            }
            (seq, rx)
        };
        let started = tokio::time::Instant::now();
        // If this future is dropped (client gone), leave the queue or give
        // back a reservation made for us in the meantime.
        let mut guard = WaitGuard {
            admission: self,
            function,
            seq,
            want,
            rx: &mut rx,
            has_start,
            armed: true,
        };
        let woke = tokio::time::timeout(self.config.queue_timeout, &mut *guard.rx).await;
        guard.armed = false;
        let outcome = match woke {
            Ok(Ok(o)) => o,
            // Timed out (or, never, the sender vanished): leave the queue,
            // unless we were admitted or closed just now.
            _ => {
                let mut st = self.lock_admitting();
                if st.remove_waiter(function, seq) {
                    return Err(Rejected::Timeout(self.config.queue_timeout));
                }
                match guard.rx.try_recv() {
                    Ok(o) => o,
                    Err(_) => return Err(Rejected::Timeout(self.config.queue_timeout)),
                }
            }
        };
        match outcome {
            Outcome::Admitted => Ok((!has_start).then(|| permit(started.elapsed()))),
            Outcome::Closed => Err(Rejected::Draining),
        }
    }

    /// The server's limits first (they matter to everyone), then the
    /// function's share of them. A function may always queue one request.
    fn check_queue_limits(
        &self,
        st: &State,
        function: &FunctionKey,
        want: Resources,
    ) -> Result<(), Rejected> {
        if st.queued >= self.config.max_queue
            || st.queued_mb + want.memory_mb > self.config.max_queue_mb
        {
            return Err(Rejected::QueueFull {
                scope: QueueScope::Server,
                waiting: st.queued,
                queued_mb: st.queued_mb,
                max_queue: self.config.max_queue,
                max_queue_mb: self.config.max_queue_mb,
            });
        }
        let l = &self.limits;
        match st.functions.get(&**function) {
            Some(f)
                if !f.queue.is_empty()
                    && (f.queue.len() >= l.function_queue
                        || f.queued_mb + want.memory_mb > l.function_queue_mb) =>
            {
                Err(Rejected::QueueFull {
                    scope: QueueScope::Function(function.clone()),
                    waiting: f.queue.len(),
                    queued_mb: f.queued_mb,
                    max_queue: l.function_queue,
                    max_queue_mb: l.function_queue_mb,
                })
            }
            _ => Ok(()),
        }
    }

    /// Feeds the latest CPU utilisation (cores); re-checks waiters when it
    /// drops, so the gate never stalls the queues until timeout.
    pub fn set_cpu_utilization(self: &Arc<Self>, cores: f64) {
        let mut st = self.lock_admitting();
        st.cpu_utilization = cores;
        st.admit_waiters();
    }

    /// Stops admitting new requests; those already waiting keep their place.
    pub fn start_draining(&self) {
        self.lock().draining = true;
    }

    /// Stops admitting and fails every request still waiting with
    /// [`Rejected::Draining`] (for the drain timeout). Running requests keep
    /// their permits.
    pub fn close(&self) {
        let discarded = {
            let mut st = self.lock();
            st.draining = true;
            st.close();
            std::mem::take(&mut st.discarded)
        };
        // Outside the lock: a start may hold what takes locks to drop.
        drop(discarded);
    }

    /// The whole server now: reservations, limit, queue and CPU gate.
    pub fn snapshot(&self) -> Snapshot {
        let st = self.lock();
        Snapshot {
            reserved: st.reserved,
            limit: self.limits.total,
            queued: st.queued,
            queued_mb: st.queued_mb,
            cpu_utilization: st.cpu_utilization,
            gate_closed: st.gate_closed(),
        }
    }

    /// Every function with waiters or running reservations, by name.
    pub fn functions(&self) -> Vec<FunctionSnapshot> {
        let st = self.lock();
        let mut v: Vec<_> = st
            .functions
            .iter()
            .map(|(k, f)| FunctionSnapshot {
                function: k.clone(),
                queued: f.queue.len(),
                queued_mb: f.queued_mb,
                running: f.running,
                reserved: f.reserved,
            })
            .collect();
        v.sort_by(|a, b| a.function.cmp(&b.function));
        v
    }

    /// True when the server's queue is full (any new waiter would be
    /// refused). One function's full share is not reported here: it refuses
    /// only that function, so it is no reason to take the pod out of
    /// service.
    pub fn queue_full(&self) -> bool {
        let st = self.lock();
        st.queued >= self.config.max_queue || st.queued_mb >= self.config.max_queue_mb
    }

    /// Requests wait while `max_running` calls run (for the server, every
    /// worker is busy): `(running, queued)`, else `None`.
    pub fn waiting_for_running(&self) -> Option<(usize, usize)> {
        let st = self.lock();
        (st.queued > 0 && st.running >= self.limits.max_running).then_some((st.running, st.queued))
    }
}

#[cfg(test)]
impl Admission {
    fn check_invariants(&self) {
        self.lock().check_invariants();
    }
}

struct WaitGuard<'a> {
    admission: &'a Arc<Admission>,
    function: &'a FunctionKey,
    seq: u64,
    want: Resources,
    rx: &'a mut oneshot::Receiver<Outcome>,
    /// Admitted with a start, the reservation went with it.
    has_start: bool,
    armed: bool,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut st = self.admission.lock_admitting();
        if !st.remove_waiter(self.function, self.seq)
            && !self.has_start
            && self.rx.try_recv() == Ok(Outcome::Admitted)
        {
            // Admitted but never picked up: release.
            st.release(self.function, self.want);
        }
    }
}

#[cfg(test)]
mod tests;
