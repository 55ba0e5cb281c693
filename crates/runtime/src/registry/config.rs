//! The registry's plain-data settings (a leaf: the table, the loader and
//! the compiler all read it).

use std::path::PathBuf;
use std::time::Duration;

/// Plain-data registry settings.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// The functions directory.
    pub dir: PathBuf,
    /// Accept `.cwasm` (native code) files. Off by default, as in wasmtime.
    pub allow_precompiled: bool,
    /// Directory for compiled artifacts of `.wasm`/`.wat` files, keyed by
    /// content hash and engine; `None` disables the disk cache.
    pub cache_dir: Option<PathBuf>,
    /// Most bytes the disk cache keeps; past it the entries used least
    /// recently are deleted.
    pub cache_max_bytes: u64,
    /// Most files kept compiled in memory (least recently used dropped first).
    pub max_loaded: usize,
    /// How long a name's file, once looked at, is served without looking
    /// again (a replaced or deleted file is noticed within this). Zero: every
    /// request looks (one hop to the file-system pool each).
    pub revalidate_after: Duration,
    /// How long a failed load is answered from memory before it is tried
    /// again (the same version of the file; a changed file is tried at once).
    pub retry: Backoff,
    /// What a compile may cost.
    pub compile: CompileLimits,
    /// How often [`super::Registry::start_prewarm`] scans the directory for
    /// new and changed files besides what inotify reports.
    pub prewarm_poll: Duration,
    /// Whether the prewarm's work runs at `SCHED_IDLE` (see
    /// `registry::background`), or at the process's priority.
    pub prewarm_idle: bool,
}

impl RegistryConfig {
    /// Settings for `dir` with every other value at its default.
    pub fn new(dir: PathBuf) -> Self {
        RegistryConfig {
            dir,
            allow_precompiled: false,
            cache_dir: None,
            cache_max_bytes: 768 << 20,
            max_loaded: 512,
            revalidate_after: Duration::from_secs(1),
            retry: Backoff::default(),
            compile: CompileLimits::default(),
            prewarm_poll: Duration::from_secs(10),
            prewarm_idle: true,
        }
    }
}

/// Doubling delays between retries of a failed load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure.
    pub first: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay after `failures` consecutive failures (at least one).
    pub fn after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.first.saturating_mul(1 << doublings).min(self.max)
    }
}

/// The compile budget: what is checked before compiling (with wasmparser,
/// cheaply) and what a compile may use.
#[derive(Debug, Clone)]
pub struct CompileLimits {
    /// Largest module file compiled, in bytes.
    pub max_module_bytes: u64,
    /// Most functions defined in one module.
    pub max_functions: u32,
    /// Largest single function body, in bytes.
    pub max_function_body_bytes: u32,
    /// Modules (as binary wasm) at least this large compile on the heavy
    /// lane; smaller ones on the light lane, so a cheap compile never waits
    /// behind an expensive one.
    pub heavy_threshold_bytes: u64,
    /// Heavy compiles at once.
    pub heavy_concurrency: usize,
    /// Light compiles at once.
    pub light_concurrency: usize,
    /// Wall-clock limit of a heavy compile (enforced when it runs in a
    /// child process).
    pub timeout: Duration,
    /// Address-space limit of the compile child, in MiB.
    pub memory_mb: u64,
    /// The executable to run heavy compiles in (`<exe> compile-child ...`);
    /// `None` compiles them in this process (no time or memory limit).
    pub child: Option<PathBuf>,
}

/// wasmparser's own limit on one function body (`MAX_WASM_FUNCTION_SIZE`),
/// which wasmtime's validation enforces.
pub const WASMTIME_MAX_FUNCTION_BODY: u32 = 7_654_321;

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits {
            max_module_bytes: 64 << 20,
            max_functions: 100_000,
            max_function_body_bytes: WASMTIME_MAX_FUNCTION_BODY,
            heavy_threshold_bytes: 1 << 20,
            heavy_concurrency: 1,
            light_concurrency: 2,
            timeout: Duration::from_secs(60),
            memory_mb: 1024,
            child: None,
        }
    }
}
