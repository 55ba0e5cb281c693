//! The pool's settings and their defaults.

use std::time::Duration;

/// Plain-data pool settings.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Most worker threads (started on demand, then kept).
    pub max_workers: usize,
    /// Stack size of each worker thread in bytes.
    pub stack_size: usize,
    /// Most tasks waiting for a worker; past it, [`ExecError::Busy`].
    pub max_queued: usize,
    /// First wait before a worker whose isolation slot failed tries again;
    /// doubles per failure up to `max_retry_backoff`.
    pub retry_backoff: Duration,
    /// Longest wait between those retries.
    pub max_retry_backoff: Duration,
}

/// Default of [`ExecutorConfig::max_workers`].
pub const DEFAULT_MAX_WORKERS: usize = 256;
/// Default of [`ExecutorConfig::max_queued`].
pub const DEFAULT_MAX_QUEUED: usize = 4096;

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            max_workers: DEFAULT_MAX_WORKERS,
            stack_size: 4 << 20,
            max_queued: DEFAULT_MAX_QUEUED,
            retry_backoff: Duration::from_millis(100),
            max_retry_backoff: Duration::from_secs(5),
        }
    }
}
