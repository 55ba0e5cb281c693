//! The worker pool: dedicated OS threads that run invocations.
//!
//! [`Executor::run`] (or [`Executor::run_then`], which hands the result to
//! a callback on the worker instead of a future) is the one call the server
//! makes: it queues a [`Task`]
//! (a function, its invocation, the request's `cpu_quota`, its cancel
//! signal and whatever must be held while it runs, i.e. the admission
//! reservation) and resolves to what happened. On a worker, the task holds
//! the thread to its quota (the worker's isolation slot), runs the sandbox,
//! and only then releases what it held: a reservation follows the worker,
//! not the client.
//!
//! Workers are started lazily, one more whenever a task arrives and fewer
//! workers are free than tasks wait, up to `max_workers` (and a few at
//! startup, [`Executor::prestart`]), and are kept afterwards. Each
//! worker makes its isolation slot (a cgroup it stays in) once, on its own
//! thread. A worker whose slot cannot be made or stops working retires from
//! taking tasks: a task it could not isolate goes back to the queue for a
//! healthy worker, and the worker retries its slot with exponential backoff
//! (while any worker is backing off, no new ones are started either, so a
//! broken isolation setup does not spawn threads up to the maximum; back
//! from it, the worker starts as many as the jobs queued meanwhile need,
//! [`pool`]). The
//! queue is bounded; the worker that went idle last (among those waiting
//! where the job runs: inside its cgroup slot or at home) takes the next
//! job ([`handoff`]).

mod config;
mod handoff;
mod pool;
mod shared;
mod task;
mod worker;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use wasmbox_isolation::Isolation;

use crate::engine::WasmEngine;

pub use config::{ExecutorConfig, DEFAULT_MAX_QUEUED, DEFAULT_MAX_WORKERS};
pub use handoff::several_cpus;
use handoff::Refused;
use pool::Pool;
pub use shared::{all_busy, PoolStats};
use task::Reply;
pub use task::{ExecError, Ran, Task};
pub use worker::Worker;
use worker::{Done, Job, Pending};

/// The worker pool. Dropping it shuts it down ([`Executor::shutdown`]).
pub struct Executor {
    engine: WasmEngine,
    /// Shared with the workers.
    pool: Arc<Pool>,
}

impl Executor {
    /// A pool with no workers yet (they start as tasks arrive). Creates
    /// wasmtime-wasi's shared runtime first ([`warm_ambient_runtime`]).
    pub fn new(config: ExecutorConfig, engine: WasmEngine, isolation: Arc<dyn Isolation>) -> Self {
        warm_ambient_runtime();
        Executor {
            engine,
            pool: Arc::new(Pool::new(config, isolation)),
        }
    }

    /// [`ExecutorConfig::max_workers`].
    pub fn max_workers(&self) -> usize {
        self.pool.config.max_workers
    }
    /// Worker threads started so far.
    pub fn workers(&self) -> usize {
        self.pool.shared.started.load(Ordering::Relaxed)
    }
    /// Jobs running now.
    pub fn busy(&self) -> usize {
        self.pool.shared.busy.load(Ordering::Relaxed)
    }

    /// A snapshot of the pool's counters.
    pub fn stats(&self) -> PoolStats {
        let s = &self.pool.shared;
        let (queued, free) = self.pool.handoff.counts();
        PoolStats {
            max_workers: self.pool.config.max_workers,
            started: s.started.load(Ordering::Relaxed),
            idle: free,
            busy: s.busy.load(Ordering::Relaxed),
            queued,
            retrying: s.retrying.load(Ordering::Relaxed),
            slot_failures: s.slot_failures.load(Ordering::Relaxed),
            last_slot_error: s.state.lock().unwrap().last_slot_error.clone(),
            slot_moves: self.pool.isolation.moves(),
            slot_rescues: self.pool.isolation.rescues(),
        }
    }

    /// Starts `n` workers now (no more than `max_workers` in all), each of
    /// which makes its isolation slot and waits for jobs, so the first
    /// calls do not wait for a thread and its slot (making one is a mkdir
    /// and a move in and out). Returns how many started.
    pub fn prestart(&self, n: usize) -> usize {
        self.pool.prestart(n)
    }

    /// Runs one invocation on a worker held to its quota.
    pub fn run(&self, task: Task) -> impl Future<Output = Result<Ran, ExecError>> + use<> {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        self.run_then(task, move |r| {
            let _ = done_tx.send(r);
        });
        async move { done_rx.await.unwrap_or(Err(ExecError::Panicked)) }
    }

    /// [`Executor::run`] that hands the result to `reply` instead of a
    /// future, for callers that are not async tasks (an admission start, on
    /// the thread whose released reservation let the request in). `reply`
    /// is called once: on the worker, right after the task's hold is
    /// dropped; or here, at once, when the task is refused (a full queue, a
    /// closed pool); or by whoever drops the task unrun. It must not panic:
    /// it may run while a panicking worker unwinds.
    pub fn run_then(
        &self,
        task: Task,
        reply: impl FnOnce(Result<Ran, ExecError>) + Send + 'static,
    ) {
        let pool = &self.pool;
        let in_slot = task.in_slot();
        let mut pending = Some(Pending {
            task,
            engine: self.engine.clone(),
            done: Reply::new(reply, pool.clone()),
            submitted: Instant::now(),
            attempts: 0,
        });
        // Made into a job only if there is room for it.
        let sent = pool
            .handoff
            .send_with(in_slot, || pending.take().expect("made once").into_job());
        match sent {
            Ok(()) => pool.start_workers(),
            Err(refused) => {
                let error = self.refusal(refused);
                pending.take().expect("not sent").refuse(Err(error));
            }
        }
    }

    /// Runs `f` on a worker thread, with no isolation applied (tests and
    /// tools); the future resolves to its result.
    pub fn submit<F, R>(&self, f: F) -> impl Future<Output = Result<R, ExecError>> + use<F, R>
    where
        F: FnOnce(&mut Worker) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |w: &mut Worker| {
            let r = f(w);
            Done {
                deliver: Box::new(move || {
                    let _ = done_tx.send(r);
                }),
                retire: None,
            }
        });
        let sent = self.dispatch(job);
        async move {
            sent?;
            done_rx.await.map_err(|_| ExecError::Panicked)
        }
    }

    fn dispatch(&self, job: Job) -> Result<(), ExecError> {
        let pool = &self.pool;
        pool.handoff.send(job).map_err(|e| self.refusal(e))?;
        pool.start_workers();
        Ok(())
    }

    fn refusal(&self, refused: Refused) -> ExecError {
        match refused {
            Refused::Full => ExecError::Busy {
                queued: self.pool.handoff.len(),
                max: self.pool.config.max_queued,
            },
            Refused::Closed => ExecError::Closed,
        }
    }

    /// Stops every running invocation (at its next epoch tick, or at once
    /// if it waits in a host call) and every queued one before it starts;
    /// each ends as [`crate::Failure::Shutdown`]. For the drain timeout.
    pub fn stop_all(&self) {
        self.pool.kill.cancel();
    }

    /// Stops taking jobs, lets queued ones finish, joins every worker (each
    /// leaves its slot as it exits) and removes what isolation state is left.
    pub fn shutdown(&self) {
        let pool = &self.pool;
        let was_open = pool.close_and_join();
        // Tasks no worker took (every worker was backing off from a failed
        // slot): dropping them releases what they hold, and their callers
        // get `Closed`.
        drop(pool.handoff.drain());
        if was_open {
            pool.isolation.shutdown();
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// wasmtime-wasi keeps a tokio runtime that it creates lazily, on first use,
/// from whatever thread gets there first. If that were a worker, the
/// runtime's threads would be born inside that worker's cgroup: they would
/// share its CPU quota and keep the cgroup from being removed. So create it
/// here, from a fresh thread outside any slot, before any worker exists.
pub fn warm_ambient_runtime() {
    let _ = std::thread::spawn(|| wasmtime_wasi::runtime::in_tokio(async {})).join();
}

#[cfg(test)]
mod tests;
