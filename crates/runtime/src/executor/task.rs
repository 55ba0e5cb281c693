//! What travels to a worker and back: the task, its result, and why a task
//! may get none.

use std::sync::Arc;
use std::time::Duration;

use super::pool::Pool;
use crate::cancel::CancelToken;
use crate::function::Function;
use crate::sandbox::{Invocation, Outcome};

/// One invocation for the pool.
pub struct Task {
    /// The compiled function to run.
    pub function: Arc<Function>,
    /// How to run it; its `throttle` is replaced by what the worker's slot
    /// returns for `cpu_millis`.
    pub invocation: Invocation,
    /// The request's `cpu_quota` in millicores.
    pub cpu_millis: u64,
    /// Raised when the caller goes away.
    pub cancel: CancelToken,
    /// Dropped on the worker once the invocation has stopped (or when the
    /// task is dropped unrun): an admission reservation.
    pub hold: Box<dyn Send>,
}

impl Task {
    /// Whether its call is held to a quota, so a worker waiting inside its
    /// slot cgroup is the one to wake for it.
    pub(super) fn in_slot(&self) -> bool {
        wasmbox_isolation::limits(self.cpu_millis)
    }
}

/// What became of a task.
#[derive(Debug)]
pub struct Ran {
    /// What the invocation did (not run if it was cancelled or the pool
    /// stopped while it was queued).
    pub outcome: Outcome,
    /// Waiting for a worker.
    pub queued: Duration,
    /// Applying the CPU quota to the worker's slot.
    pub isolation: Duration,
}

/// Why a task got no [`Ran`]: it did not run, or its result was lost.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The pool is shut down; the task did not run.
    #[error("the worker pool is shut down")]
    Closed,
    /// The worker panicked while running the job; its result is lost.
    #[error("the worker running this invocation panicked")]
    Panicked,
    #[error("{queued} invocations are already waiting for a worker (limit {max})")]
    /// The queue was full; the task was not queued.
    Busy {
        /// Tasks waiting at the time.
        queued: usize,
        /// [`ExecutorConfig::max_queued`].
        max: usize,
    },
    /// The CPU quota could not be applied on any worker tried (up to
    /// three); the task did not run. Holds the last error.
    #[error("CPU isolation could not be applied to a worker: {0}")]
    Isolation(String),
}

type ReplyFn = Box<dyn FnOnce(Result<Ran, ExecError>) + Send>;

/// Where a task's result goes: to a callback, called once, on the worker
/// that delivers it, or by whoever drops the task unrun (with `Closed` once
/// the pool has closed, else `Panicked`: a worker unwound past it).
pub(super) struct Reply {
    to: Option<ReplyFn>,
    pool: Arc<Pool>,
}

impl Reply {
    pub(super) fn new(
        to: impl FnOnce(Result<Ran, ExecError>) + Send + 'static,
        pool: Arc<Pool>,
    ) -> Self {
        Reply {
            to: Some(Box::new(to)),
            pool,
        }
    }

    pub(super) fn send(mut self, r: Result<Ran, ExecError>) {
        if let Some(to) = self.to.take() {
            to(r);
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(to) = self.to.take() {
            let st = self.pool.shared.state.lock();
            let closed = st.map_or_else(|p| p.into_inner().closed, |s| s.closed);
            to(Err(if closed {
                ExecError::Closed
            } else {
                ExecError::Panicked
            }));
        }
    }
}

/// Tries a task gets at applying its quota before it fails (each on another
/// worker, as the failing one retires).
pub(super) const ISOLATION_ATTEMPTS: u32 = 3;
