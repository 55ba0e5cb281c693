//! Every default as a named constant, and the names of the environment
//! variables that clap does not read.

pub const DEFAULT_HOST: &str = "0.0.0.0";
/// When neither `--port`/`WEBSERVER_PORT` nor `PORT` is set.
pub const DEFAULT_PORT: u16 = 8080;
pub const DEFAULT_FUNCTIONS: &str = "functions";
pub const DEFAULT_MAX_MEMORY_MB: u64 = 4096;
pub const DEFAULT_MEMORY_MB: u64 = 200;
pub const DEFAULT_MAX_CPU_QUOTA: u64 = 1000;
pub const DEFAULT_CPU_QUOTA: u64 = 1000;
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 16 << 20;
pub const DEFAULT_MAX_STDERR_BYTES: usize = 64 << 10;
pub const DEFAULT_MAX_LOADED_FUNCTIONS: u64 = 512;
pub const DEFAULT_WORKERS: u32 = 256;
/// Durations are in `parse_duration` syntax (clap parses them).
pub const DEFAULT_TIMEOUT: &str = "60s";
pub const DEFAULT_CPU_PERIOD: &str = "100ms";
pub const DEFAULT_QUEUE_TIMEOUT: &str = "30s";
pub const DEFAULT_DRAIN_TIMEOUT: &str = "30s";
/// CPU and memory overbooking: 1.0 admits up to capacity.
pub const DEFAULT_OVERBOOK: f64 = 1.0;
pub const DEFAULT_MAX_QUEUE: usize = 1000;
pub const DEFAULT_READINESS_WINDOW: usize = 10;
pub const DEFAULT_READINESS_THRESHOLD: f64 = 0.9;
pub const DEFAULT_REPORTING_PERIOD_MS: u64 = 50;
/// `HEALTHCHECK_HOST` when only `HEALTHCHECK_PORT` is set.
pub const DEFAULT_HEALTH_HOST: &str = "0.0.0.0";
/// `QP_HOST` when only `QP_PORT` is set.
pub const DEFAULT_QP_HOST: &str = "127.0.0.1";
/// The pod name when neither `POD_UID`, `HOSTNAME` nor /etc/hostname gives one.
pub const DEFAULT_POD: &str = "wasmbox";
/// Instance-pool slots beyond one per worker.
pub const SPARE_INSTANCE_SLOTS: u32 = 8;

// Loading functions: the compile budget and the AOT cache bound.
pub const DEFAULT_REVALIDATE_AFTER: &str = "1s";
/// `--prewarm-poll`.
pub const DEFAULT_PREWARM_POLL: &str = "10s";
pub const DEFAULT_CACHE_MAX_MB: u64 = 768;
pub const DEFAULT_MAX_MODULE_MB: u64 = 64;
pub const DEFAULT_MAX_MODULE_FUNCTIONS: u32 = 100_000;
pub const DEFAULT_MAX_FUNCTION_BODY_BYTES: u32 =
    wasmbox_runtime::registry::WASMTIME_MAX_FUNCTION_BODY;
pub const DEFAULT_HEAVY_MODULE_KB: u64 = 1024;
pub const DEFAULT_COMPILE_CONCURRENCY: u16 = 1;
pub const DEFAULT_COMPILE_TIMEOUT: &str = "60s";
pub const DEFAULT_COMPILE_MEMORY_MB: u64 = 1024;

pub const ENV_PORT: &str = "PORT";
pub const ENV_HEALTHCHECK_HOST: &str = "HEALTHCHECK_HOST";
pub const ENV_HEALTHCHECK_PORT: &str = "HEALTHCHECK_PORT";
pub const ENV_QP_HOST: &str = "QP_HOST";
pub const ENV_QP_PORT: &str = "QP_PORT";
pub const ENV_HOSTNAME: &str = "HOSTNAME";
