//! What the executor and its workers share: the queue, the counters, and
//! the means to start more workers. Workers start workers too: one back
//! from a slot backoff starts as many as the jobs queued meanwhile need
//! (no new worker starts during a backoff, and nothing else would start
//! them until the next job arrives).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use wasmbox_isolation::{Isolation, Ledger};

use super::config::ExecutorConfig;
use super::handoff::Handoff;
use super::shared::Shared;
use super::worker::{self, Job};
use crate::cancel::CancelToken;

pub(super) struct Pool {
    pub(super) config: ExecutorConfig,
    pub(super) isolation: Arc<dyn Isolation>,
    /// Jobs and idle workers; workers also put back tasks they could not
    /// isolate.
    pub(super) handoff: Handoff<Job>,
    /// Raised to stop every running and queued invocation (shutdown).
    pub(super) kill: CancelToken,
    pub(super) shared: Shared,
    /// Held while starting a worker, and by shutdown while it closes.
    spawning: Mutex<()>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    pub(super) fn new(config: ExecutorConfig, isolation: Arc<dyn Isolation>) -> Self {
        Pool {
            handoff: Handoff::new(config.max_queued),
            shared: Shared {
                ledger: isolation.period().map(Ledger::new),
                ..Shared::default()
            },
            config,
            isolation,
            kill: CancelToken::default(),
            spawning: Mutex::new(()),
            handles: Mutex::new(Vec::new()),
        }
    }

    /// Starts workers while fewer are free than jobs wait (the count and
    /// the queue are read under one lock, so of two jobs sent together
    /// each finds its own worker), until none is short or none can start.
    pub(super) fn start_workers(self: &Arc<Self>) {
        while self.handoff.claim() {
            if !self.spawn() {
                self.handoff.unclaim();
                break;
            }
        }
    }

    /// Starts up to `n` workers with no job waiting for them; returns how
    /// many started.
    pub(super) fn prestart(self: &Arc<Self>, n: usize) -> usize {
        let mut started = 0;
        while started < n {
            // Counted free before it starts, as a claimed worker is.
            self.handoff.freed();
            if !self.spawn() {
                self.handoff.unclaim();
                break;
            }
            started += 1;
        }
        started
    }

    /// Starts a worker (already counted free by [`Handoff::claim`]);
    /// false if the pool is full, closed, or backing off from a failed
    /// slot, or the thread could not be made. The thread starts in its
    /// creator's cgroup until it makes its own slot ([`worker::run`]).
    fn spawn(self: &Arc<Self>) -> bool {
        let _one_at_a_time = self.spawning.lock().unwrap();
        let shared = &self.shared;
        let id = shared.started.load(Ordering::SeqCst);
        if id >= self.config.max_workers {
            return false;
        }
        {
            let st = shared.state.lock().unwrap();
            if st.closed || st.no_spawn_until.is_some_and(|t| Instant::now() < t) {
                return false;
            }
        }
        shared.started.store(id + 1, Ordering::SeqCst); // under `spawning`
        let pool = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("wasmbox-worker-{id}"))
            .stack_size(self.config.stack_size)
            .spawn(move || worker::run(id, pool));
        match spawned {
            Ok(h) => {
                self.handles.lock().unwrap().push(h);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start a worker thread");
                shared.started.fetch_sub(1, Ordering::SeqCst);
                false
            }
        }
    }

    /// Closes the pool and joins every worker; false if it was closed
    /// already.
    pub(super) fn close_and_join(&self) -> bool {
        // Under `spawning`: a worker being started now has its handle in
        // `handles` before this goes on, and none starts after.
        let was_open = {
            let _no_spawning = self.spawning.lock().unwrap();
            self.shared.state.lock().unwrap().closed = true;
            self.shared.wake.notify_all();
            self.handoff.close()
        };
        let handles = std::mem::take(&mut *self.handles.lock().unwrap());
        for h in handles {
            let _ = h.join();
        }
        was_open
    }
}
