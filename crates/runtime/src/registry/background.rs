//! Where a load's blocking steps (reading, deserializing, compiling) run:
//! a request's on the file-system pool, at the process's priority; the
//! prewarm's, which no request waits for, on threads of their own below
//! every other thread's CPU priority.
//!
//! The prewarm scan loads every new file in the directory, which after a
//! restart is hundreds of loads back to back. At the process's priority
//! they kept both cores of a 2-core machine busy while the first requests
//! arrived, and each hand-off of those requests (tokio task to worker and
//! back) waited for a core: a `perf sched` trace measured scheduling delays
//! up to 3.6 ms on the request path while the scan ran. On `SCHED_IDLE`
//! threads the scan runs only on a core nothing else wants, and a thread
//! that wakes for a request preempts it at once.
//!
//! Work at that priority can starve for as long as the cores are busy, so
//! nothing a request needs may wait for it: the prewarm loads privately and
//! puts the result in the table only if the table still holds what it held
//! before (`Registry::load_ahead`); its reads take no read gate's permit,
//! and at idle priority its light compiles no compile lane's, which a
//! request would otherwise queue for behind it (its two threads bound what
//! it holds). At normal priority (`--prewarm-priority normal`) it does not
//! starve, and its compiles take the lane as a request's do (bounding the
//! compiles that share the cores); its reads still take no read gate's
//! permit: they have no deadline, and one hung on a mount would hold it.
//!
//! wasmtime compiles a module's functions in parallel on rayon's global
//! pool, which the first thread to use it creates, its threads inheriting
//! that thread's priority: made by a prewarm thread, every later request's
//! compile would run at idle priority. So the prewarm's compiles run their
//! parallel work on a rayon pool of their own, at idle priority
//! ([`IdleThreads::compile_pool`]), and never touch the global one.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

use super::fs_pool::FsPool;

/// Where a load's blocking steps run (see the module docs).
#[derive(Clone, Copy)]
pub(super) enum Blocking<'a> {
    /// For a request: the file-system pool, bounded, with a deadline.
    Request(&'a FsPool),
    /// For the prewarm: idle-priority threads; no deadline, since only the
    /// scan waits (a hung mount holds the scan, not a request).
    Background(&'a IdleThreads),
}

impl Blocking<'_> {
    /// Runs `f` there; errs (with a sentence) if it panicked or, on the
    /// file-system pool, did not finish within the deadline.
    pub(super) async fn run<T: Send + 'static>(
        self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        match self {
            Blocking::Request(fs) => fs.run(f).await,
            Blocking::Background(threads) => threads.run(f).await,
        }
    }

    /// Whether work here can starve (the prewarm's threads at idle
    /// priority): its compiles then hold no lane permit a request may
    /// queue for.
    pub(super) fn may_starve(self) -> bool {
        matches!(self, Blocking::Background(threads) if threads.idle)
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A few threads at `SCHED_IDLE`, started on first use, taking jobs in
/// order; they end when this is dropped.
pub(super) struct IdleThreads {
    threads: usize,
    /// At `SCHED_IDLE`, else at the process's priority (a setting for
    /// hosts that want new files compiled promptly however busy they are).
    idle: bool,
    jobs: OnceLock<mpsc::Sender<Job>>,
    compile: OnceLock<Option<Arc<rayon::ThreadPool>>>,
}

impl IdleThreads {
    pub(super) fn new(threads: usize, idle: bool) -> Self {
        IdleThreads {
            threads: threads.max(1),
            idle,
            jobs: OnceLock::new(),
            compile: OnceLock::new(),
        }
    }

    /// The rayon pool, at idle priority, that a prewarm compile runs
    /// wasmtime's parallel work on (`pool.install(..)`; see the module
    /// docs); `None` if its threads could not be started.
    pub(super) fn compile_pool(&self) -> Option<Arc<rayon::ThreadPool>> {
        self.compile
            .get_or_init(|| {
                let idle = self.idle;
                rayon::ThreadPoolBuilder::new()
                    .num_threads(self.threads)
                    .thread_name(|i| format!("wasmbox-prewarm-compile-{i}"))
                    .start_handler(move |_| lower_priority(idle))
                    .build()
                    .map_err(|e| tracing::warn!(error = %e, "cannot start the prewarm's compile threads: its compiles run as a request's"))
                    .ok()
                    .map(Arc::new)
            })
            .clone()
    }

    /// Runs `f` on one of the threads once it is free.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.sender()
            .send(job)
            .map_err(|_| "no background thread could be started".to_string())?;
        // A job that panicked dropped its sender unsent.
        rx.await
            .map_err(|_| "it panicked on a background thread".to_string())
    }

    fn sender(&self) -> &mpsc::Sender<Job> {
        self.jobs.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            let rx = Arc::new(Mutex::new(rx));
            for i in 0..self.threads {
                let (rx, idle) = (rx.clone(), self.idle);
                let spawned = std::thread::Builder::new()
                    .name(format!("wasmbox-prewarm-{i}"))
                    .spawn(move || take_jobs(&rx, idle));
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "cannot start a background load thread");
                }
            }
            tx
        })
    }
}

/// A background thread's life: lower its priority, then run jobs until the
/// sender is gone. A job that panics is dropped; the thread goes on.
fn take_jobs(jobs: &Mutex<mpsc::Receiver<Job>>, idle: bool) {
    lower_priority(idle);
    loop {
        let next = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(job) = next else { return };
        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
    }
}

/// Puts the calling thread in `SCHED_IDLE`: it runs only on a core no other
/// thread wants, and a thread that wakes up preempts it at once (a nice
/// value, even 19, only weights a share: a waking thread can still wait out
/// the running one's slice). Any thread may lower its own priority; if this
/// one may not (a seccomp profile), it falls back to nice 19.
#[allow(unsafe_code)]
fn lower_priority(idle: bool) {
    if !idle {
        return;
    }
    // The kernel's `struct sched_param` is one int, the static priority,
    // 0 for SCHED_IDLE (libc's may carry more fields, unused on Linux).
    let priority: libc::c_int = 0;
    // SAFETY: the system call reads one int through the pointer, valid for
    // the call; pid 0 is the calling thread. (The system call, not musl's
    // `sched_setscheduler`, which is a stub that fails with ENOSYS.)
    let set = unsafe {
        libc::syscall(
            libc::SYS_sched_setscheduler,
            0 as libc::c_long,
            libc::SCHED_IDLE as libc::c_long,
            &priority as *const libc::c_int,
        )
    };
    if set == 0 {
        return;
    }
    let e = std::io::Error::last_os_error();
    // `None`: the calling thread (Linux keeps the nice value per thread).
    if let Err(nice) = rustix::process::setpriority_process(None, 19) {
        tracing::warn!(sched_idle = %e, nice = %nice, "background loads run at the process's priority");
    }
}
