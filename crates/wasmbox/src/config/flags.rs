//! The command line: clap structs for `serve`, `run` and `compile`. Each
//! flag also reads its environment variable (`env = ...`); the defaults are
//! the named constants of `defaults`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::defaults::*;
pub use super::duration::{parse_duration, parse_duration_or_zero};
use super::front::FrontArgs;
use super::outbound::OutboundArgs;

#[derive(Debug, Parser)]
#[command(
    name = "wasmbox",
    version,
    about = "Serve many tenants' WebAssembly functions from one process"
)]
pub struct Cli {
    /// Log filter (error, warn, info, debug, trace, or a tracing directive)
    /// [default: info for serve, warn for run and compile].
    #[arg(long, global = true, env = "LOG_LEVEL")]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

// ServeArgs is large and the others small; the one value lives for a moment
// at startup, so boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the functions directory over HTTP.
    Serve(ServeArgs),
    /// Run one module locally with the server's limits; stdin/stdout pass through.
    Run(RunArgs),
    /// Compile a module ahead of time for this engine (.wasm/.wat -> .cwasm).
    Compile(CompileArgs),
    /// Deploy a module (and optionally its manifest) through a server's
    /// admin listener (token from WASMBOX_ADMIN_TOKEN).
    Deploy(crate::cli::DeployArgs),
    /// List or remove functions through a server's admin listener.
    Functions(crate::cli::FunctionsArgs),
    /// Internal: the server's compile child (one module, under a memory
    /// limit, output for the parent to load).
    #[command(name = "compile-child", hide = true)]
    CompileChild(CompileChildArgs),
}

/// Settings that change the compiled code, shared by every subcommand: a
/// `.cwasm` made by `compile` loads only into a server with the same values.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Largest Memory-Request accepted, in MB (MiB); also each instance's
    /// linear-memory reservation.
    #[arg(long, env = "WASMBOX_MAX_MEMORY_MB", default_value_t = DEFAULT_MAX_MEMORY_MB, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub max_memory_mb: u64,
}

/// Per-invocation limits shared by `serve` and `run`.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Memory cap when a request has no Memory-Request header, in MB (MiB).
    #[arg(long, env = "WASMBOX_DEFAULT_MEMORY_MB", default_value_t = DEFAULT_MEMORY_MB)]
    pub default_memory_mb: u64,
    /// Wall-clock limit per invocation (e.g. 30s, 500ms, 2m).
    #[arg(long, env = "WASMBOX_TIMEOUT", default_value = DEFAULT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
    /// Accept precompiled `.cwasm` files (native code: only from trusted sources).
    #[arg(long, env = "WASMBOX_ALLOW_PRECOMPILED")]
    pub allow_precompiled: bool,
    /// Keep compiled code of .wasm/.wat files here, so restarts skip compilation.
    #[arg(long, env = "WASMBOX_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Most functions kept compiled in memory; past it the least recently
    /// used is unloaded and reloaded on its next request (from the cache
    /// dir when set, else by compiling again). Each loaded function may
    /// hold an open descriptor: without the flag, fewer than the default
    /// where the open-file limit cannot hold that many beside two per
    /// worker, 256 reserved and --max-connections (else 64); a larger
    /// value than it can hold is refused [default: 512].
    #[arg(long, env = "WASMBOX_MAX_LOADED_FUNCTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_loaded_functions: Option<u64>,
    #[command(flatten)]
    pub load: LoadArgs,
}

/// `--cpu-isolation` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CpuIsolation {
    /// The strongest mode that works here: cgroup-v2, then cgroup-v1, then throttle.
    Auto,
    /// One threaded cgroup per worker (cpu.max).
    CgroupV2,
    /// One cpu-controller cgroup per worker (cpu.cfs_quota_us).
    CgroupV1,
    /// Userspace: sleep guests that run ahead of their quota (no privileges).
    Throttle,
    /// No CPU limit.
    None,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "WEBSERVER_HOST", default_value = DEFAULT_HOST)]
    pub host: String,
    /// Port to listen on [env: WEBSERVER_PORT, else PORT (Knative), else 8080].
    #[arg(long, env = "WEBSERVER_PORT")]
    pub port: Option<u16>,
    /// Directory of functions (.wasm, .wat, .cwasm).
    #[arg(long, env = "WASMBOX_FUNCTIONS", default_value = DEFAULT_FUNCTIONS)]
    pub functions: PathBuf,
    /// Wire format.
    #[arg(long, env = "WASMBOX_COMPAT", value_enum, default_value_t = Compat::None)]
    pub compat: Compat,
    /// Largest cpu_quota accepted, in millicores. One invocation runs on one
    /// thread, so more than 1000 can never be used.
    #[arg(long, env = "WASMBOX_MAX_CPU_QUOTA", default_value_t = DEFAULT_MAX_CPU_QUOTA)]
    pub max_cpu_quota: u64,
    /// cpu_quota when a request has none, in millicores.
    #[arg(long, env = "WASMBOX_DEFAULT_CPU_QUOTA", default_value_t = DEFAULT_CPU_QUOTA)]
    pub default_cpu_quota: u64,
    /// Largest request body, in bytes.
    #[arg(long, env = "WASMBOX_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Largest stdout (response body), in bytes; past it the invocation fails.
    #[arg(long, env = "WASMBOX_MAX_OUTPUT_BYTES", default_value_t = DEFAULT_MAX_OUTPUT_BYTES)]
    pub max_output_bytes: usize,
    /// How much of stderr (its tail) is kept for the log and error messages, in bytes.
    #[arg(long, env = "WASMBOX_MAX_STDERR_BYTES", default_value_t = DEFAULT_MAX_STDERR_BYTES)]
    pub max_stderr_bytes: usize,
    /// Most worker threads (and so concurrent invocations).
    #[arg(long, env = "WASMBOX_WORKERS", default_value_t = DEFAULT_WORKERS, value_parser = clap::value_parser!(u32).range(1..=8192))]
    pub workers: u32,
    /// How each invocation is held to its cpu_quota.
    #[arg(long, env = "WASMBOX_CPU_ISOLATION", value_enum, default_value_t = CpuIsolation::Auto)]
    pub cpu_isolation: CpuIsolation,
    /// Cgroup directory to make slot cgroups under [default: the process's
    /// own cgroup, from /proc/self/cgroup and /proc/self/mountinfo].
    #[arg(long, env = "WASMBOX_CGROUP_ROOT")]
    pub cgroup_root: Option<PathBuf>,
    /// CFS period for cgroup quotas (cpu_quota 1000 = one full period).
    #[arg(long, env = "WASMBOX_CPU_PERIOD", default_value = DEFAULT_CPU_PERIOD, value_parser = parse_duration)]
    pub cpu_period: Duration,
    /// CPU capacity for admission, in millicores [default: the process's
    /// cgroup cpu limit, else host cores x 1000].
    #[arg(long, env = "WASMBOX_CAPACITY_CPU")]
    pub capacity_cpu: Option<u64>,
    /// Memory capacity for admission, in MiB [default: the process's cgroup
    /// memory limit, else host RAM]. The reference's MEMORY_LIMIT.
    #[arg(long, env = "MEMORY_LIMIT")]
    pub capacity_memory_mb: Option<u64>,
    /// Admit up to CPU capacity x this.
    #[arg(long, env = "WASMBOX_CPU_OVERBOOK", default_value_t = DEFAULT_OVERBOOK)]
    pub cpu_overbook: f64,
    /// Admit up to memory capacity x this (the paper ran about 1.4).
    #[arg(long, env = "WASMBOX_MEMORY_OVERBOOK", default_value_t = DEFAULT_OVERBOOK)]
    pub memory_overbook: f64,
    /// Most requests waiting for admission.
    #[arg(long, env = "WASMBOX_MAX_QUEUE", default_value_t = DEFAULT_MAX_QUEUE)]
    pub max_queue: usize,
    /// Most Memory-Request MB waiting for admission (the fork's
    /// queueDepthResourceUnits) [default: the admission memory limit].
    #[arg(long, env = "WASMBOX_MAX_QUEUE_MB")]
    pub max_queue_mb: Option<u64>,
    /// Longest wait for admission before 503.
    #[arg(long, env = "WASMBOX_QUEUE_TIMEOUT", default_value = DEFAULT_QUEUE_TIMEOUT, value_parser = parse_duration)]
    pub queue_timeout: Duration,
    /// Hold admissions while container CPU use (cores, mean of the last 5
    /// samples taken every 50 ms) is at or above this (the fork's
    /// resourceUtilizationThreshold) [default: no gate].
    #[arg(long, env = "WASMBOX_CPU_GATE")]
    pub cpu_gate: Option<f64>,
    /// Fairness: while another function waits, one function may hold at most
    /// this fraction of the admission limit and of the workers (0 < x <= 1;
    /// 1 = no ceiling).
    #[arg(long, env = "WASMBOX_MAX_FUNCTION_SHARE", default_value_t = wasmbox_admission::DEFAULT_MAX_FUNCTION_SHARE)]
    pub max_function_share: f64,
    /// Fairness: a function with nothing running may reserve this fraction
    /// of the CPU limit beyond the limit, so its first call starts at once
    /// even when others hold every core (0 = off).
    #[arg(long, env = "WASMBOX_NEWCOMER_CPU_OVERDRAFT", default_value_t = wasmbox_admission::DEFAULT_NEWCOMER_CPU_OVERDRAFT)]
    pub newcomer_cpu_overdraft: f64,
    /// Fairness: one function's waiters may take at most this fraction of
    /// --max-queue and --max-queue-mb (0 < x <= 1).
    #[arg(long, env = "WASMBOX_MAX_FUNCTION_QUEUE_SHARE", default_value_t = wasmbox_admission::DEFAULT_MAX_FUNCTION_QUEUE_SHARE)]
    pub max_function_queue_share: f64,
    /// Backfilling: how long a request that does not fit may be passed by
    /// later ones that do (then nobody passes it until it runs; 0 = strict
    /// order).
    #[arg(long, env = "WASMBOX_MAX_OVERTAKEN_WAIT", default_value = "0", value_parser = parse_duration_or_zero)]
    pub max_overtaken_wait: Duration,
    /// Also serve /live and /ready on this address (reference-style probes)
    /// [env: WASMBOX_HEALTH_LISTEN, or HEALTHCHECK_HOST + HEALTHCHECK_PORT].
    #[arg(long, env = "WASMBOX_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
    /// Serve /-/metrics and /-/functions (and /-/live, /-/ready) on this
    /// separate address, not on the serving port [default: off: neither is
    /// served anywhere]. Keep it off the public network: metrics name every
    /// tenant's functions.
    #[arg(long, env = "WASMBOX_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// File holding the bearer token that /-/functions on the admin listener
    /// requires (read once at startup; surrounding whitespace ignored)
    /// [or the token itself in WASMBOX_ADMIN_TOKEN].
    #[arg(long, env = "WASMBOX_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Require the admin token for /-/metrics too (Prometheus then needs
    /// `authorization: {credentials_file: ...}` in its scrape config).
    #[arg(long, env = "WASMBOX_ADMIN_METRICS_AUTH")]
    pub admin_metrics_auth: bool,
    /// Write one JSON line per request (usage and outcome) to this file
    /// (appended to), or to stdout with `-` [default: off].
    #[arg(long, env = "WASMBOX_ACCESS_LOG")]
    pub access_log: Option<PathBuf>,
    /// Memory-utilisation samples (one a second) averaged for readiness.
    #[arg(long, env = "READINESS_WINDOW", default_value_t = DEFAULT_READINESS_WINDOW)]
    pub readiness_window: usize,
    /// Not ready (shedding gradually) above this memory utilisation (0-1).
    #[arg(long, env = "READINESS_UTILIZATION_TRESHOLD", default_value_t = DEFAULT_READINESS_THRESHOLD)]
    pub readiness_threshold: f64,
    /// Report CPU utilisation to the resource-aware queue-proxy at this
    /// websocket URL [env: WASMBOX_QP_REPORT, or QP_HOST + QP_PORT].
    #[arg(long, env = "WASMBOX_QP_REPORT")]
    pub qp_report: Option<String>,
    /// Reporting period in milliseconds.
    #[arg(long, env = "REPORTING_PERIOD_MS", default_value_t = DEFAULT_REPORTING_PERIOD_MS)]
    pub reporting_period_ms: u64,
    /// Name reported in the reference's `Pod` header.
    #[arg(long, env = "POD_UID")]
    pub pod: Option<String>,
    /// How long to finish in-flight requests after SIGTERM/SIGINT.
    #[arg(long, env = "WASMBOX_DRAIN_TIMEOUT", default_value = DEFAULT_DRAIN_TIMEOUT, value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Resolve the configuration from flags and environment, print it and
    /// exit: 0 when it is valid, 1 with the reason when a value is invalid,
    /// a WASMBOX_* variable is unknown, or a reference setting that wasmbox
    /// does not read is set. Nothing is probed (capacity, cgroups): that
    /// happens at startup.
    #[arg(long)]
    pub check_config: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub front: FrontArgs,
    #[command(flatten)]
    pub outbound: OutboundArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Memory cap for this run, in MB (MiB) [default: --default-memory-mb].
    #[arg(long)]
    pub memory_mb: Option<u64>,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Path of the module (.wasm, .wat, .cwasm).
    pub module: PathBuf,
    /// Arguments for the guest (argv[1..]).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct CompileArgs {
    /// Module to compile (.wasm or .wat).
    pub input: PathBuf,
    /// Output file [default: INPUT with extension .cwasm].
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// The wire format requests and responses use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compat {
    /// wasmbox's own wire format: raw stdin/stdout, Server-Timing.
    None,
    /// The reference prototype's: JSON {"parameter": ...} body, "WASM output: " prefix, its headers.
    Reference,
}

/// `--prewarm-priority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrewarmPriority {
    /// SCHED_IDLE.
    Idle,
    /// The process's priority.
    Normal,
}

/// Loading functions: the compile budget and the AOT cache's size.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// How long a loaded function's file, once looked at, is served
    /// without looking again: a replaced or deleted file is noticed within
    /// this (0: every request looks; a new file is always seen at once).
    #[arg(long, env = "WASMBOX_REVALIDATE_AFTER", default_value = DEFAULT_REVALIDATE_AFTER, value_parser = parse_duration_or_zero)]
    pub revalidate_after: Duration,
    /// New and changed function files are compiled as they arrive (inotify)
    /// and on a scan of the directory this often, so their first request
    /// finds them compiled (0: no prewarming; each file compiles on its
    /// first request).
    #[arg(long, env = "WASMBOX_PREWARM_POLL", default_value = DEFAULT_PREWARM_POLL, value_parser = parse_duration_or_zero)]
    pub prewarm_poll: Duration,
    /// The CPU priority of that compiling: `idle` (SCHED_IDLE: only on
    /// cores nothing else wants, so never beside the first requests after
    /// a restart, but late while the cores are busy) or `normal` (the
    /// process's own).
    #[arg(long, env = "WASMBOX_PREWARM_PRIORITY", value_enum, default_value_t = PrewarmPriority::Idle)]
    pub prewarm_priority: PrewarmPriority,
    /// Most MB (MiB) the --cache-dir keeps; past it the entries used least
    /// recently are deleted.
    #[arg(long, env = "WASMBOX_CACHE_MAX_MB", default_value_t = DEFAULT_CACHE_MAX_MB, value_parser = clap::value_parser!(u64).range(1..))]
    pub cache_max_mb: u64,
    /// Largest module file compiled, in MB (MiB); larger ones are refused
    /// (502 load-failed).
    #[arg(long, env = "WASMBOX_MAX_MODULE_MB", default_value_t = DEFAULT_MAX_MODULE_MB, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_module_mb: u64,
    /// Most functions defined in one module (more: refused, 502).
    #[arg(long, env = "WASMBOX_MAX_MODULE_FUNCTIONS", default_value_t = DEFAULT_MAX_MODULE_FUNCTIONS)]
    pub max_module_functions: u32,
    /// Largest function body in bytes (larger: refused, 502).
    #[arg(long, env = "WASMBOX_MAX_FUNCTION_BODY_BYTES", default_value_t = DEFAULT_MAX_FUNCTION_BODY_BYTES)]
    pub max_function_body_bytes: u32,
    /// Modules at least this large (KiB, as binary wasm) compile in a child
    /// process on the heavy lane; smaller ones in process.
    #[arg(long, env = "WASMBOX_HEAVY_MODULE_KB", default_value_t = DEFAULT_HEAVY_MODULE_KB)]
    pub heavy_module_kb: u64,
    /// Heavy compiles at once.
    #[arg(long, env = "WASMBOX_COMPILE_CONCURRENCY", default_value_t = DEFAULT_COMPILE_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub compile_concurrency: u16,
    /// A heavy compile still running after this is stopped and the module
    /// refused (502).
    #[arg(long, env = "WASMBOX_COMPILE_TIMEOUT", default_value = DEFAULT_COMPILE_TIMEOUT, value_parser = parse_duration)]
    pub compile_timeout: Duration,
    /// Address-space limit of a heavy compile, in MB (MiB); a compile that
    /// needs more is refused (502).
    #[arg(long, env = "WASMBOX_COMPILE_MEMORY_MB", default_value_t = DEFAULT_COMPILE_MEMORY_MB, value_parser = clap::value_parser!(u64).range(16..))]
    pub compile_memory_mb: u64,
    /// The executable run as the compile child [default: this one].
    #[arg(long, env = "WASMBOX_COMPILE_CHILD_EXE", hide = true)]
    pub compile_child_exe: Option<PathBuf>,
}

/// `wasmbox compile-child` (internal): a binary module on stdin, the
/// compiled module on stdout.
#[derive(Debug, Clone, Args)]
pub struct CompileChildArgs {
    /// Address-space limit set on this process first, in MiB.
    #[arg(long)]
    pub memory_limit_mb: u64,
    #[command(flatten)]
    pub engine: EngineArgs,
}
