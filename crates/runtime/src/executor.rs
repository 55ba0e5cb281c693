//! The worker pool: dedicated OS threads that run invocations.
//!
//! Workers are started lazily, one more whenever a job arrives and no worker
//! is idle, up to `max_workers`, and are kept afterwards. Each worker owns a
//! [`Worker`] value for its whole life, including its CPU-isolation slot,
//! made once on the worker thread when it starts (a cgroup it stays in).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use wasmbox_isolation::{Isolation, Slot, Throttle};

/// Plain-data pool settings.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    pub max_workers: usize,
    /// Stack size of each worker thread in bytes.
    pub stack_size: usize,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            max_workers: 256,
            stack_size: 4 << 20,
        }
    }
}

/// Per-thread state handed to every job run on that thread.
pub struct Worker {
    /// 0-based index of the worker, stable for its life.
    pub id: usize,
    /// OS thread id (what cgroup `tasks`/`cgroup.threads` files take).
    pub tid: i32,
    /// This thread's isolation slot, or why it could not be made.
    slot: Result<Box<dyn Slot>, String>,
}

impl Worker {
    /// Holds this thread to `millicores` for the next invocation. Returns the
    /// throttle to run the invocation under, if the mode needs one.
    pub fn isolate(&mut self, millicores: u64) -> Result<Option<Throttle>, String> {
        match &mut self.slot {
            Ok(slot) => slot.apply(millicores).map_err(|e| e.to_string()),
            Err(e) => Err(e.clone()),
        }
    }
}

/// A job runs on the worker and returns how to deliver its result; the worker
/// counts itself idle *before* delivering, so a caller that submits again as
/// soon as it has the result finds the worker idle (no needless new thread).
type Job = Box<dyn FnOnce(&mut Worker) -> Deliver + Send>;
type Deliver = Box<dyn FnOnce() + Send>;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("the worker pool is shut down")]
    Closed,
    #[error("the worker running this invocation panicked")]
    Panicked,
}

struct Shared {
    /// Workers waiting for a job.
    idle: AtomicUsize,
    /// Workers started.
    started: AtomicUsize,
    /// Jobs running right now.
    busy: AtomicUsize,
}

pub struct Executor {
    config: ExecutorConfig,
    isolation: Arc<dyn Isolation>,
    tx: Mutex<Option<Sender<Job>>>,
    rx: Receiver<Job>,
    shared: Arc<Shared>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Executor {
    pub fn new(config: ExecutorConfig, isolation: Arc<dyn Isolation>) -> Self {
        warm_ambient_runtime();
        let (tx, rx) = crossbeam_channel::unbounded();
        Executor {
            config,
            isolation,
            tx: Mutex::new(Some(tx)),
            rx,
            shared: Arc::new(Shared {
                idle: AtomicUsize::new(0),
                started: AtomicUsize::new(0),
                busy: AtomicUsize::new(0),
            }),
            handles: Mutex::new(Vec::new()),
        }
    }

    pub fn max_workers(&self) -> usize {
        self.config.max_workers
    }
    /// Worker threads started so far.
    pub fn workers(&self) -> usize {
        self.shared.started.load(Ordering::Relaxed)
    }
    /// Jobs running now.
    pub fn busy(&self) -> usize {
        self.shared.busy.load(Ordering::Relaxed)
    }

    /// Runs `f` on a worker thread; the future resolves to its result.
    pub fn submit<F, R>(&self, f: F) -> impl Future<Output = Result<R, ExecError>> + use<F, R>
    where
        F: FnOnce(&mut Worker) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |w: &mut Worker| {
            let r = f(w);
            Box::new(move || {
                let _ = done_tx.send(r);
            })
        });
        let sent = self.dispatch(job);
        async move {
            sent?;
            done_rx.await.map_err(|_| ExecError::Panicked)
        }
    }

    fn dispatch(&self, job: Job) -> Result<(), ExecError> {
        let guard = self.tx.lock().unwrap();
        let tx = guard.as_ref().ok_or(ExecError::Closed)?;
        // Start a worker if nobody is idle to take this job.
        if self.shared.idle.load(Ordering::SeqCst) <= self.rx.len() {
            self.maybe_spawn();
        }
        tx.send(job).map_err(|_| ExecError::Closed)
    }

    fn maybe_spawn(&self) {
        let shared = &self.shared;
        let id = shared.started.load(Ordering::SeqCst);
        if id >= self.config.max_workers {
            return;
        }
        shared.started.store(id + 1, Ordering::SeqCst); // under the tx lock
        shared.idle.fetch_add(1, Ordering::SeqCst);
        let rx = self.rx.clone();
        let shared2 = shared.clone();
        let isolation = self.isolation.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("wasmbox-worker-{id}"))
            .stack_size(self.config.stack_size)
            .spawn(move || worker_loop(id, rx, shared2, isolation));
        match spawned {
            Ok(h) => self.handles.lock().unwrap().push(h),
            Err(e) => {
                tracing::error!(error = %e, "cannot start a worker thread");
                shared.started.fetch_sub(1, Ordering::SeqCst);
                shared.idle.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Stops taking jobs, lets queued ones finish, joins every worker (each
    /// leaves its slot as it exits) and removes what isolation state is left.
    pub fn shutdown(&self) {
        let was_open = self.tx.lock().unwrap().take().is_some();
        let handles = std::mem::take(&mut *self.handles.lock().unwrap());
        for h in handles {
            let _ = h.join();
        }
        if was_open {
            self.isolation.shutdown();
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn worker_loop(id: usize, rx: Receiver<Job>, shared: Arc<Shared>, isolation: Arc<dyn Isolation>) {
    let tid = wasmbox_isolation::current_tid();
    let slot = isolation.slot(id, tid).map_err(|e| {
        tracing::error!(worker = id, error = %e, "cannot set up CPU isolation for this worker; its invocations will fail");
        format!("CPU isolation ({}) failed on this worker: {e}", isolation.mode())
    });
    let mut worker = Worker { id, tid, slot };
    // `idle` was counted for us by the spawner.
    while let Ok(job) = rx.recv() {
        shared.idle.fetch_sub(1, Ordering::SeqCst);
        shared.busy.fetch_add(1, Ordering::Relaxed);
        // A panicking job must not take the worker down; its caller sees
        // `ExecError::Panicked` because the result sender is dropped.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut worker)));
        shared.busy.fetch_sub(1, Ordering::Relaxed);
        shared.idle.fetch_add(1, Ordering::SeqCst);
        match r {
            Ok(deliver) => deliver(),
            Err(_) => tracing::error!(worker = id, "invocation panicked"),
        }
    }
}

/// The sync WASI host runs its async internals on a tokio runtime that
/// wasmtime-wasi creates lazily, on first use, from whatever thread gets
/// there first. If that were a worker, the runtime's threads would be born
/// inside that worker's cgroup: they would share its CPU quota and keep the
/// cgroup from being removed. So create it here, from a fresh thread outside
/// any slot, before any worker exists.
pub fn warm_ambient_runtime() {
    let _ = std::thread::spawn(|| wasmtime_wasi::runtime::in_tokio(async {})).join();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> Arc<dyn Isolation> {
        Arc::new(wasmbox_isolation::none::NoIsolation)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_jobs_on_dedicated_threads_and_grows_lazily() {
        let ex = Executor::new(
            ExecutorConfig {
                max_workers: 4,
                ..Default::default()
            },
            none(),
        );
        assert_eq!(ex.workers(), 0);
        let name = ex
            .submit(|_w| std::thread::current().name().unwrap().to_string())
            .await
            .unwrap();
        assert!(name.starts_with("wasmbox-worker-"), "{name}");
        assert_eq!(ex.workers(), 1);
        // One worker is idle, so a second sequential job reuses it.
        ex.submit(|_| ()).await.unwrap();
        assert_eq!(ex.workers(), 1);

        // Four jobs that block until all four run at once need four workers.
        let barrier = Arc::new(std::sync::Barrier::new(4));
        let jobs: Vec<_> = (0..4)
            .map(|_| {
                let b = barrier.clone();
                ex.submit(move |w| {
                    b.wait();
                    w.id
                })
            })
            .collect();
        let mut ids = Vec::new();
        for j in jobs {
            ids.push(j.await.unwrap());
        }
        ids.sort();
        assert_eq!(ids, vec![0, 1, 2, 3]);
        assert_eq!(ex.workers(), 4);
    }

    #[tokio::test]
    async fn a_panicking_job_is_reported_and_the_worker_survives() {
        let ex = Executor::new(
            ExecutorConfig {
                max_workers: 1,
                ..Default::default()
            },
            none(),
        );
        let r = ex.submit(|_| -> u32 { panic!("boom") }).await;
        assert!(matches!(r, Err(ExecError::Panicked)));
        assert_eq!(
            ex.submit(|w| w.tid).await.unwrap(),
            ex.submit(|w| w.tid).await.unwrap()
        );
    }

    #[tokio::test]
    async fn shutdown_refuses_new_jobs() {
        let ex = Executor::new(ExecutorConfig::default(), none());
        ex.submit(|_| ()).await.unwrap();
        ex.shutdown();
        assert!(matches!(ex.submit(|_| ()).await, Err(ExecError::Closed)));
    }
}
