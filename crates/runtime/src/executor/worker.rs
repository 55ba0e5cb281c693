//! One worker thread's life: make an isolation slot, take jobs until the
//! pool closes, and retire to make a new slot (with backoff) when the slot
//! fails. And the job that runs one [`Task`] on it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmbox_isolation::ledger::Spent;
use wasmbox_isolation::{Ledger, Slot};

use super::handoff::Seat;
use super::pool::Pool;
use super::task::{ExecError, Ran, Reply, Task, ISOLATION_ATTEMPTS};
use crate::engine::WasmEngine;
use crate::sandbox::{self, Failure, Invocation, Outcome, Signals};

/// A job runs on a worker and returns how to deliver its result; the worker
/// counts itself free *before* delivering, so a caller that submits again as
/// soon as it has the result finds the worker free (no needless new thread).
pub(super) type Job = Box<dyn FnOnce(&mut Worker) -> Done + Send>;

/// What a job leaves for its worker to do.
pub(super) struct Done {
    pub(super) deliver: Box<dyn FnOnce() + Send>,
    /// The worker's slot failed (why): leave it and make a new one before
    /// taking more jobs.
    pub(super) retire: Option<String>,
}

/// Per-thread state handed to every job run on that thread.
pub struct Worker {
    /// 0-based index of the worker, stable for its life.
    pub id: usize,
    /// OS thread id (what cgroup `tasks`/`cgroup.threads` files take).
    pub tid: i32,
    slot: Box<dyn Slot>,
    pool: Arc<Pool>,
}

/// The worker thread `id`, counted free by its spawner.
pub(super) fn run(id: usize, pool: Arc<Pool>) {
    let tid = wasmbox_isolation::current_tid();
    let mut backoff = pool.config.retry_backoff;
    loop {
        let error = match pool.isolation.slot(id, tid) {
            Ok(slot) => match serve(id, &pool, slot, tid, &mut backoff) {
                Some(error) => error,
                None => break, // the pool closed
            },
            Err(e) => {
                pool.handoff.unclaim();
                pool.shared.slot_failures.fetch_add(1, Ordering::SeqCst);
                e.to_string()
            }
        };
        if !retry_after(id, &pool, &error, &mut backoff) {
            break;
        }
        pool.handoff.freed();
        // No worker started while this one backed off: jobs that arrived
        // meanwhile get theirs now, not when the next job arrives. This
        // thread has left its slot (a new thread starts in its creator's
        // cgroup), unless moving it home failed as well; then its children
        // start there until they make their own slots.
        pool.start_workers();
    }
    pool.shared.started.fetch_sub(1, Ordering::SeqCst);
}

/// Takes jobs on `slot` until the pool closes (`None`) or the slot fails:
/// then the worker leaves it (its Drop moves the thread out and removes
/// it), no longer counted free, and returns the error (the failure already
/// counted).
fn serve(
    id: usize,
    pool: &Arc<Pool>,
    slot: Box<dyn Slot>,
    tid: i32,
    backoff: &mut Duration,
) -> Option<String> {
    let shared = &pool.shared;
    let mut worker = Worker {
        id,
        tid,
        slot,
        pool: pool.clone(),
    };
    let seat = Seat::here();
    // Keeping watch for the next job is for a worker with no company: with
    // other jobs running, the cores are better left to them.
    while let Some(job) = pool.handoff.recv(
        &seat,
        worker.slot.at_home(),
        shared.busy.load(Ordering::Relaxed) == 0,
    ) {
        shared.busy.fetch_add(1, Ordering::Relaxed);
        // A panicking job must not take the worker down; its caller sees
        // `ExecError::Panicked` because the result sender is dropped.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut worker)));
        shared.busy.fetch_sub(1, Ordering::Relaxed);
        match r {
            Ok(Done {
                deliver,
                retire: Some(error),
            }) => {
                // Counted before the caller hears of the failure.
                shared.slot_failures.fetch_add(1, Ordering::SeqCst);
                deliver_on(id, deliver);
                return Some(error);
            }
            Ok(Done {
                deliver,
                retire: None,
            }) => {
                *backoff = pool.config.retry_backoff;
                if worker.slot.wants_tidy() {
                    // A job that is not an invocation (a call has left its
                    // slot already, `LeaveSlot`). Not counted free while the
                    // slot moves the thread out (tens of µs): a job sent
                    // meanwhile goes to another worker instead of waiting.
                    deliver_on(id, deliver);
                    worker.slot.tidy();
                    pool.handoff.freed();
                } else {
                    pool.handoff.freed();
                    deliver_on(id, deliver);
                }
            }
            Err(_) => {
                // A call leaves its slot as it unwinds (`LeaveSlot`); any
                // other job that panicked after moving in leaves it here.
                worker.slot.tidy();
                pool.handoff.freed();
                tracing::error!(worker = id, "invocation panicked");
            }
        }
    }
    None
}

/// Delivers a job's result. What it drops (an admission reservation, a
/// result no one waits for any more) must not take the worker down with
/// it: a thread gone while counted free would leave jobs queued for it.
fn deliver_on(id: usize, deliver: Box<dyn FnOnce() + Send>) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(deliver)).is_err() {
        tracing::error!(worker = id, "delivering a result panicked");
    }
}

/// Waits `backoff` (doubling it) before a worker whose slot failed (the
/// caller has counted the failure) tries again; false when the pool closed
/// meanwhile.
fn retry_after(id: usize, pool: &Pool, error: &str, backoff: &mut Duration) -> bool {
    let shared = &pool.shared;
    tracing::error!(worker = id, error, retry_in = ?*backoff, "CPU isolation failed on this worker; it takes no invocations until a new slot works");
    let until = Instant::now() + *backoff;
    let mut st = shared.state.lock().unwrap();
    st.last_slot_error = Some(error.to_string());
    st.no_spawn_until = Some(until);
    // Counted once the backoff holds (whoever sees a worker retrying finds
    // no new worker starting, and the error to report).
    shared.retrying.fetch_add(1, Ordering::SeqCst);
    while !st.closed {
        let now = Instant::now();
        if now >= until {
            break;
        }
        st = shared.wake.wait_timeout(st, until - now).unwrap().0;
    }
    let open = !st.closed;
    drop(st);
    shared.retrying.fetch_sub(1, Ordering::SeqCst);
    *backoff = (*backoff * 2).min(pool.config.max_retry_backoff);
    open
}

/// Takes the worker's thread out of its slot cgroup when dropped
/// ([`Slot::tidy`]): as the invocation ends, or as its panic unwinds, and
/// in either case before what the call held (its reservation, its ledger
/// account, its reply) is released.
struct LeaveSlot<'a>(&'a mut Box<dyn Slot>);

impl Drop for LeaveSlot<'_> {
    fn drop(&mut self) {
        self.0.tidy();
    }
}

/// Ends a call's account in the ledger when dropped.
struct Settle<'a> {
    ledger: &'a Ledger,
    function: &'a std::sync::Arc<str>,
    spent: Spent,
}

impl Drop for Settle<'_> {
    fn drop(&mut self) {
        self.ledger.end(self.function, self.spent, Instant::now());
    }
}

/// A task on its way to (or back to) the queue.
pub(super) struct Pending {
    pub task: Task,
    pub engine: WasmEngine,
    pub done: Reply,
    pub submitted: Instant,
    pub attempts: u32,
}

impl Pending {
    pub fn into_job(self) -> Job {
        Box::new(move |w: &mut Worker| self.run_on(w))
    }

    fn run_on(self, w: &mut Worker) -> Done {
        let queued = self.submitted.elapsed();
        let stopped = if w.pool.kill.is_cancelled() {
            Some(Failure::Shutdown)
        } else if self.task.cancel.is_cancelled() {
            Some(Failure::Cancelled)
        } else {
            None
        };
        if let Some(failure) = stopped {
            return self.finish(Ok(Ran {
                outcome: Outcome::not_run(failure),
                queued,
                isolation: Duration::ZERO,
            }));
        }
        // Hold this thread to the request's cpu_quota (a cgroup quota
        // rewrite, or a throttle budget the invocation carries).
        let t = Instant::now();
        let throttle = match w.slot.apply(self.task.cpu_millis) {
            Ok(throttle) => throttle,
            Err(e) => return self.isolation_failed(w, e.to_string()),
        };
        let isolation = t.elapsed();
        let Pending {
            task, engine, done, ..
        } = self;
        let Task {
            function,
            invocation,
            cancel,
            hold,
            cpu_millis,
        } = task;
        let invocation = Invocation {
            throttle,
            ..invocation
        };
        // A function in CPU debt from its earlier calls waits before it
        // starts (its slot budget is fresh, so the debt is settled here).
        let ledger = w
            .pool
            .shared
            .ledger
            .as_ref()
            .filter(|_| Ledger::applies(cpu_millis));
        let hold_off = ledger.map_or(Duration::ZERO, |l| {
            l.begin(&function.id, cpu_millis, Instant::now())
        });
        let signals = Signals {
            cancel: &cancel,
            shutdown: &w.pool.kill,
        };
        // Ends the ledger's account of this call even if the invocation
        // panics, so the function's running count returns to zero. A panic
        // settles with no CPU spent and none of the asked wait waited, so
        // the debt `begin` cleared against that wait is owed again: the
        // panic loses how long it waited, and owing a paid debt twice is
        // the side that keeps a function within its quota. The CPU the
        // call used before it panicked is lost with it, and not charged.
        let mut settle = ledger.map(|l| Settle {
            ledger: l,
            function: &function.id,
            spent: Spent {
                millicores: cpu_millis,
                asked: hold_off,
                ..Spent::default()
            },
        });
        // Declared last, so a panic drops it first.
        let slot = LeaveSlot(&mut w.slot);
        let began = Instant::now();
        let outcome = sandbox::invoke_until(&engine, &function, invocation, signals, hold_off);
        slot.0.used(outcome.timings.cpu);
        drop(slot);
        if let Some(s) = &mut settle {
            let t = &outcome.timings;
            // Wall time from the end of the wait, whether or not
            // instantiation finished (its CPU counts either way).
            s.spent.cpu = t.cpu;
            s.spent.wall = began.elapsed().saturating_sub(t.held);
            s.spent.waited = t.held;
        }
        drop(settle);
        Done {
            // The guest has stopped; the worker counts itself free before
            // this runs, so a released reservation never outlives a busy
            // worker.
            deliver: Box::new(move || {
                drop(hold);
                done.send(Ok(Ran {
                    outcome,
                    queued,
                    isolation,
                }));
            }),
            retire: None,
        }
    }

    /// This worker's slot failed: hand the task to another worker (up to
    /// [`ISOLATION_ATTEMPTS`] in all) and retire.
    fn isolation_failed(mut self, w: &Worker, error: String) -> Done {
        tracing::error!(worker = w.id, error = %error, "cannot apply a CPU quota");
        self.attempts += 1;
        let in_slot = self.task.in_slot();
        let mut this = Some(self);
        if this.as_ref().unwrap().attempts < ISOLATION_ATTEMPTS {
            // Made into a job only if there is room for it.
            let sent = w
                .pool
                .handoff
                .send_with(in_slot, || this.take().expect("made once").into_job());
            if sent.is_ok() {
                return Done {
                    deliver: Box::new(|| {}),
                    retire: Some(error),
                };
            }
        }
        let this = this.expect("not sent");
        let mut done = this.finish(Err(ExecError::Isolation(error.clone())));
        done.retire = Some(error);
        done
    }

    /// Once the worker counts itself free: releases what the task held and
    /// delivers the result.
    fn finish(self, r: Result<Ran, ExecError>) -> Done {
        Done {
            deliver: Box::new(move || self.refuse(r)),
            retire: None,
        }
    }

    /// Releases what the task held, then delivers `r`, here and now.
    pub fn refuse(self, r: Result<Ran, ExecError>) {
        let Pending { task, done, .. } = self;
        drop(task);
        done.send(r);
    }
}
