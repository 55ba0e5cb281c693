//! The counters the pool and its workers share, and the snapshot of them
//! that metrics and readiness read.

use std::sync::atomic::AtomicUsize;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use wasmbox_isolation::Ledger;

/// Counters shared with the worker threads.
#[derive(Default)]
pub(super) struct Shared {
    /// Worker threads alive.
    pub(super) started: AtomicUsize,
    /// Jobs running right now.
    pub(super) busy: AtomicUsize,
    /// Workers waiting to retry a failed isolation slot.
    pub(super) retrying: AtomicUsize,
    /// Isolation slot failures since start.
    pub(super) slot_failures: AtomicUsize,
    pub(super) state: Mutex<PoolState>,
    /// Wakes workers backing off when the pool shuts down.
    pub(super) wake: Condvar,
    /// Functions' CPU credit across invocations; `None` when the isolation
    /// mode enforces no quota.
    pub(super) ledger: Option<Ledger>,
}

#[derive(Default)]
pub(super) struct PoolState {
    pub(super) closed: bool,
    /// No new workers before this (a slot failed recently).
    pub(super) no_spawn_until: Option<Instant>,
    pub(super) last_slot_error: Option<String>,
}

/// A snapshot for metrics and readiness.
#[derive(Debug, Clone, Default)]
pub struct PoolStats {
    /// [`ExecutorConfig::max_workers`].
    pub max_workers: usize,
    /// Worker threads started so far.
    pub started: usize,
    /// Workers not running a task: waiting for one, between two, or
    /// starting (counted from the moment a task asks for one).
    pub idle: usize,
    /// Jobs running now.
    pub busy: usize,
    /// Jobs waiting for a worker.
    pub queued: usize,
    /// Workers waiting to retry a failed isolation slot.
    pub retrying: usize,
    /// Isolation slot failures since start.
    pub slot_failures: usize,
    /// The latest slot failure's message.
    pub last_slot_error: Option<String>,
    /// Worker threads moved into or out of their slots since start.
    pub slot_moves: u64,
    /// Calls moved into their slots by the watch (cgroup modes): they ran
    /// past their first epoch tick outside them.
    pub slot_rescues: u64,
}

impl PoolStats {
    /// Why queued invocations cannot start now, if they cannot.
    pub fn stalled(&self) -> Option<String> {
        if self.queued == 0 || self.idle > 0 {
            return None;
        }
        if self.retrying > 0 {
            return Some(format!(
                "{} invocations wait while {} workers cannot set up CPU isolation ({})",
                self.queued,
                self.retrying,
                self.last_slot_error.as_deref().unwrap_or("unknown error")
            ));
        }
        if self.started >= self.max_workers {
            return Some(all_busy(self.busy, self.queued));
        }
        None
    }
}

/// Why calls wait when every worker they may use is busy: the executor's
/// reason, and admission's when it holds calls back at its bound on
/// running invocations.
pub fn all_busy(busy: usize, waiting: usize) -> String {
    format!("all {busy} workers are busy and {waiting} invocations wait")
}
