//! Blocking file-system calls (stat, open, read, readdir) off the async
//! workers, on tokio's blocking pool with a bound on how many run at once
//! and a deadline for each.
//!
//! A hung mount (NFS, FUSE) then costs at most `MAX_FS_CALLS` blocked
//! threads; requests fail with a clear error after `FS_DEADLINE` instead of
//! waiting forever, and nothing else on the runtime (`/-/live`, functions
//! already loaded) is held up.
//!
//! Cost: a hop to another thread and back, about 12 us (measured, release
//! build, busy 2-core machine) where an inline `stat` takes 0.5 us. The
//! registry therefore does not pay it on every request: see
//! `Registry::get` (`revalidate_after`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

/// Blocking file-system calls in flight at once.
pub const MAX_FS_CALLS: usize = 16;
/// How long a request waits for one (including the wait for a free slot).
pub const FS_DEADLINE: Duration = Duration::from_secs(10);

/// The bounded pool (see the module docs).
pub(super) struct FsPool {
    permits: Arc<Semaphore>,
    max: usize,
    deadline: Duration,
}

impl FsPool {
    pub(super) fn new(max: usize, deadline: Duration) -> Self {
        FsPool {
            permits: Arc::new(Semaphore::new(max.max(1))),
            max: max.max(1),
            deadline,
        }
    }

    /// Calls running now (or stuck).
    #[cfg(test)]
    pub(super) fn busy(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// Runs `f` on the blocking pool. Errs (with a sentence) if it did not
    /// finish within the deadline or panicked; a call that hangs keeps its
    /// slot until it returns.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let call = async {
            let permit = self
                .permits
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                f()
            })
            .await
        };
        match tokio::time::timeout(self.deadline, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("file system call panicked: {e}")),
            Err(_) => Err(format!(
                "the functions directory did not answer within {} s ({} of {} file system calls still running)",
                self.deadline.as_secs_f64(),
                self.max - self.permits.available_permits(),
                self.max
            )),
        }
    }
}
