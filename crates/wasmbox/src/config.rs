//! Command-line and environment configuration. Every flag can also be set
//! from an environment variable (`WASMBOX_*`, or the reference's names where
//! one exists), so Kubernetes env blocks work unchanged.
//!
//! The clap structs here are parsed once into the plain-data [`ServeConfig`]
//! that the rest of the server reads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use wasmbox_isolation::{IsolationConfig, Mode, Requested};
use wasmbox_runtime::{EngineConfig, ExecutorConfig, RegistryConfig};

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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the functions directory over HTTP.
    Serve(ServeArgs),
    /// Run one module locally with the server's limits; stdin/stdout pass through.
    Run(RunArgs),
    /// Compile a module ahead of time for this engine (.wasm/.wat -> .cwasm).
    Compile(CompileArgs),
}

/// Settings that change the compiled code, shared by every subcommand: a
/// `.cwasm` made by `compile` loads only into a server with the same values.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Largest Memory-Request accepted, in MB (MiB); also each instance's
    /// linear-memory reservation.
    #[arg(long, env = "WASMBOX_MAX_MEMORY_MB", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub max_memory_mb: u64,
}

/// Per-invocation limits shared by `serve` and `run`.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Memory cap when a request has no Memory-Request header, in MB (MiB).
    #[arg(long, env = "WASMBOX_DEFAULT_MEMORY_MB", default_value_t = 200)]
    pub default_memory_mb: u64,
    /// Wall-clock limit per invocation (e.g. 30s, 500ms, 2m).
    #[arg(long, env = "WASMBOX_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Accept precompiled `.cwasm` files (native code: only from trusted sources).
    #[arg(long, env = "WASMBOX_ALLOW_PRECOMPILED")]
    pub allow_precompiled: bool,
    /// Keep compiled code of .wasm/.wat files here, so restarts skip compilation.
    #[arg(long, env = "WASMBOX_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Most functions kept compiled in memory; past it the least recently
    /// used is unloaded and reloaded on its next request (from the cache
    /// dir when set, else by compiling again).
    #[arg(long, env = "WASMBOX_MAX_LOADED_FUNCTIONS", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_loaded_functions: u64,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compat {
    /// wasmbox's own wire format: raw stdin/stdout, Server-Timing.
    None,
    /// The reference prototype's: JSON {"parameter": ...} body, "WASM output: " prefix, its headers.
    Reference,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "WEBSERVER_HOST", default_value = "0.0.0.0")]
    pub host: String,
    /// Port to listen on [env: WEBSERVER_PORT, else PORT (Knative), else 8080].
    #[arg(long, env = "WEBSERVER_PORT")]
    pub port: Option<u16>,
    /// Directory of functions (.wasm, .wat, .cwasm).
    #[arg(long, env = "WASMBOX_FUNCTIONS", default_value = "functions")]
    pub functions: PathBuf,
    /// Wire format.
    #[arg(long, env = "WASMBOX_COMPAT", value_enum, default_value_t = Compat::None)]
    pub compat: Compat,
    /// Largest cpu_quota accepted, in millicores. One invocation runs on one
    /// thread, so more than 1000 can never be used.
    #[arg(long, env = "WASMBOX_MAX_CPU_QUOTA", default_value_t = 1000)]
    pub max_cpu_quota: u64,
    /// cpu_quota when a request has none, in millicores.
    #[arg(long, env = "WASMBOX_DEFAULT_CPU_QUOTA", default_value_t = 1000)]
    pub default_cpu_quota: u64,
    /// Largest request body, in bytes.
    #[arg(long, env = "WASMBOX_MAX_BODY_BYTES", default_value_t = 16 << 20)]
    pub max_body_bytes: usize,
    /// Largest stdout (response body), in bytes; past it the invocation fails.
    #[arg(long, env = "WASMBOX_MAX_OUTPUT_BYTES", default_value_t = 16 << 20)]
    pub max_output_bytes: usize,
    /// How much of stderr (its tail) is kept for the log and error messages, in bytes.
    #[arg(long, env = "WASMBOX_MAX_STDERR_BYTES", default_value_t = 64 << 10)]
    pub max_stderr_bytes: usize,
    /// Most worker threads (and so concurrent invocations).
    #[arg(long, env = "WASMBOX_WORKERS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=8192))]
    pub workers: u32,
    /// How each invocation is held to its cpu_quota.
    #[arg(long, env = "WASMBOX_CPU_ISOLATION", value_enum, default_value_t = CpuIsolation::Auto)]
    pub cpu_isolation: CpuIsolation,
    /// Cgroup directory to make slot cgroups under [default: the process's
    /// own cgroup, from /proc/self/cgroup and /proc/self/mountinfo].
    #[arg(long, env = "WASMBOX_CGROUP_ROOT")]
    pub cgroup_root: Option<PathBuf>,
    /// CFS period for cgroup quotas (cpu_quota 1000 = one full period).
    #[arg(long, env = "WASMBOX_CPU_PERIOD", default_value = "100ms", value_parser = parse_duration)]
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
    #[arg(long, env = "WASMBOX_CPU_OVERBOOK", default_value_t = 1.0)]
    pub cpu_overbook: f64,
    /// Admit up to memory capacity x this (the paper ran about 1.4).
    #[arg(long, env = "WASMBOX_MEMORY_OVERBOOK", default_value_t = 1.0)]
    pub memory_overbook: f64,
    /// Most requests waiting for admission.
    #[arg(long, env = "WASMBOX_MAX_QUEUE", default_value_t = 1000)]
    pub max_queue: usize,
    /// Most Memory-Request MB waiting for admission (the fork's
    /// queueDepthResourceUnits) [default: the admission memory limit].
    #[arg(long, env = "WASMBOX_MAX_QUEUE_MB")]
    pub max_queue_mb: Option<u64>,
    /// Longest wait for admission before 503.
    #[arg(long, env = "WASMBOX_QUEUE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub queue_timeout: Duration,
    /// Hold admissions while container CPU use (cores, mean of the last 5
    /// samples taken every 50 ms) is at or above this (the fork's
    /// resourceUtilizationThreshold) [default: no gate].
    #[arg(long, env = "WASMBOX_CPU_GATE")]
    pub cpu_gate: Option<f64>,
    /// Also serve /live and /ready on this address (reference-style probes)
    /// [env: WASMBOX_HEALTH_LISTEN, or HEALTHCHECK_HOST + HEALTHCHECK_PORT].
    #[arg(long, env = "WASMBOX_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
    /// Memory-utilisation samples (one a second) averaged for readiness.
    #[arg(long, env = "READINESS_WINDOW", default_value_t = 10)]
    pub readiness_window: usize,
    /// Not ready (shedding gradually) above this memory utilisation (0-1).
    #[arg(long, env = "READINESS_UTILIZATION_TRESHOLD", default_value_t = 0.9)]
    pub readiness_threshold: f64,
    /// Report CPU utilisation to the resource-aware queue-proxy at this
    /// websocket URL [env: WASMBOX_QP_REPORT, or QP_HOST + QP_PORT].
    #[arg(long, env = "WASMBOX_QP_REPORT")]
    pub qp_report: Option<String>,
    /// Reporting period in milliseconds.
    #[arg(long, env = "REPORTING_PERIOD_MS", default_value_t = 50)]
    pub reporting_period_ms: u64,
    /// Name reported in the reference's `Pod` header.
    #[arg(long, env = "POD_UID")]
    pub pod: Option<String>,
    /// How long to finish in-flight requests after SIGTERM/SIGINT.
    #[arg(long, env = "WASMBOX_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
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

/// Parses `30s`, `500ms`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 30s or 500ms"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("unknown unit '{u}' in '{s}' (use ms, s, m or h)")),
    };
    if !(secs > 0.0 && secs < 1e9) {
        return Err(format!("'{s}' must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl EngineArgs {
    pub fn engine_config(&self, max_instances: u32) -> EngineConfig {
        EngineConfig {
            max_memory_mib: self.max_memory_mb,
            max_instances,
            ..EngineConfig::default()
        }
    }
}

impl LimitArgs {
    pub fn registry_config(&self, dir: PathBuf) -> RegistryConfig {
        RegistryConfig {
            dir,
            allow_precompiled: self.allow_precompiled,
            cache_dir: self.cache_dir.clone(),
            max_loaded: usize::try_from(self.max_loaded_functions).unwrap_or(usize::MAX),
        }
    }
}

/// Everything `serve` needs, resolved and checked.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub compat: Compat,
    pub pod: String,
    pub limits: RequestLimits,
    pub drain_timeout: Duration,
    pub engine: EngineConfig,
    pub registry: RegistryConfig,
    pub executor: ExecutorConfig,
    pub isolation: IsolationConfig,
    pub admission: AdmissionSettings,
    pub health_listen: Option<SocketAddr>,
    pub readiness_window: usize,
    pub readiness_threshold: f64,
    pub qp_report: Option<String>,
    pub reporting_period: Duration,
}

/// Admission settings before capacity detection (which happens at startup).
#[derive(Debug, Clone)]
pub struct AdmissionSettings {
    pub capacity_cpu: Option<u64>,
    pub capacity_memory_mb: Option<u64>,
    pub cpu_overbook: f64,
    pub memory_overbook: f64,
    pub max_queue: usize,
    pub max_queue_mb: Option<u64>,
    pub queue_timeout: Duration,
    pub cpu_gate: Option<f64>,
}

/// Bounds and defaults applied to each request.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    pub default_memory_mb: u64,
    pub max_memory_mb: u64,
    pub default_cpu_quota: u64,
    pub max_cpu_quota: u64,
    pub timeout: Duration,
    pub max_body_bytes: usize,
    pub max_output_bytes: usize,
    pub max_stderr_bytes: usize,
}

impl ServeArgs {
    /// Resolves defaults that depend on the environment (PORT, hostname) and
    /// checks that the values agree with each other.
    pub fn resolve(&self) -> Result<ServeConfig, String> {
        let port = match self.port {
            Some(p) => p,
            None => match std::env::var("PORT") {
                Ok(p) => p
                    .parse()
                    .map_err(|_| format!("PORT={p} is not a port number"))?,
                Err(_) => 8080,
            },
        };
        let ip: std::net::IpAddr = self
            .host
            .parse()
            .map_err(|_| format!("--host {} is not an IP address", self.host))?;
        let l = &self.limits;
        if l.default_memory_mb == 0 || l.default_memory_mb > self.engine.max_memory_mb {
            return Err(format!(
                "--default-memory-mb {} must be between 1 and --max-memory-mb {}",
                l.default_memory_mb, self.engine.max_memory_mb
            ));
        }
        if self.default_cpu_quota == 0 || self.default_cpu_quota > self.max_cpu_quota {
            return Err(format!(
                "--default-cpu-quota {} must be between 1 and --max-cpu-quota {}",
                self.default_cpu_quota, self.max_cpu_quota
            ));
        }
        let period_us = self.cpu_period.as_micros();
        if !(1000..=1_000_000).contains(&period_us) {
            return Err(format!(
                "--cpu-period must be between 1ms and 1s (the kernel's CFS limits), not {:?}",
                self.cpu_period
            ));
        }
        if !self.functions.is_dir() {
            return Err(format!(
                "functions directory {} does not exist",
                self.functions.display()
            ));
        }
        let pod = self.pod.clone().unwrap_or_else(hostname);
        for (name, v) in [
            ("--cpu-overbook", self.cpu_overbook),
            ("--memory-overbook", self.memory_overbook),
        ] {
            if !(v > 0.0 && v <= 100.0) {
                return Err(format!(
                    "{name} {v} must be a ratio above 0 (1.0 = no overbooking)"
                ));
            }
        }
        if !(self.readiness_threshold > 0.0 && self.readiness_threshold <= 1.0) {
            return Err(format!(
                "--readiness-threshold {} must be in (0, 1]",
                self.readiness_threshold
            ));
        }
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let health_listen = match (self.health_listen, env("HEALTHCHECK_PORT")) {
            (Some(a), _) => Some(a),
            (None, Some(port)) => {
                let host = env("HEALTHCHECK_HOST").unwrap_or_else(|| "0.0.0.0".into());
                Some(format!("{host}:{port}").parse().map_err(|_| {
                    format!("HEALTHCHECK_HOST/PORT {host}:{port} is not an address")
                })?)
            }
            (None, None) => None,
        };
        let qp_report = match (&self.qp_report, env("QP_PORT")) {
            (Some(u), _) => Some(u.clone()),
            (None, Some(port)) => Some(format!(
                "ws://{}:{port}",
                env("QP_HOST").unwrap_or_else(|| "127.0.0.1".into())
            )),
            (None, None) => None,
        };
        Ok(ServeConfig {
            listen: SocketAddr::new(ip, port),
            compat: self.compat,
            pod,
            limits: RequestLimits {
                default_memory_mb: l.default_memory_mb,
                max_memory_mb: self.engine.max_memory_mb,
                default_cpu_quota: self.default_cpu_quota,
                max_cpu_quota: self.max_cpu_quota,
                timeout: l.timeout,
                max_body_bytes: self.max_body_bytes,
                max_output_bytes: self.max_output_bytes,
                max_stderr_bytes: self.max_stderr_bytes,
            },
            drain_timeout: self.drain_timeout,
            // A few spare pool slots beyond the workers.
            engine: self.engine.engine_config(self.workers + 8),
            registry: l.registry_config(self.functions.clone()),
            executor: ExecutorConfig {
                max_workers: self.workers as usize,
                ..ExecutorConfig::default()
            },
            isolation: IsolationConfig {
                requested: match self.cpu_isolation {
                    CpuIsolation::Auto => Requested::Auto,
                    CpuIsolation::CgroupV2 => Requested::Exactly(Mode::CgroupV2),
                    CpuIsolation::CgroupV1 => Requested::Exactly(Mode::CgroupV1),
                    CpuIsolation::Throttle => Requested::Exactly(Mode::Throttle),
                    CpuIsolation::None => Requested::Exactly(Mode::None),
                },
                cgroup_root: self.cgroup_root.clone(),
                period: self.cpu_period,
            },
            admission: AdmissionSettings {
                capacity_cpu: self.capacity_cpu,
                capacity_memory_mb: self.capacity_memory_mb,
                cpu_overbook: self.cpu_overbook,
                memory_overbook: self.memory_overbook,
                max_queue: self.max_queue,
                max_queue_mb: self.max_queue_mb,
                queue_timeout: self.queue_timeout,
                cpu_gate: self.cpu_gate,
            },
            health_listen,
            readiness_window: self.readiness_window,
            readiness_threshold: self.readiness_threshold,
            qp_report,
            reporting_period: Duration::from_millis(self.reporting_period_ms.max(1)),
        })
    }
}

/// Environment variables `serve` reads besides the clap `env =` names, and
/// what each stands for.
pub const EXTRA_ENV: &[(&str, &str)] = &[
    ("PORT", "--port, when WEBSERVER_PORT is unset"),
    (
        "HEALTHCHECK_HOST",
        "--health-listen host, with HEALTHCHECK_PORT",
    ),
    ("HEALTHCHECK_PORT", "--health-listen port"),
    ("QP_HOST", "--qp-report host, with QP_PORT"),
    ("QP_PORT", "--qp-report port"),
    ("HOSTNAME", "--pod, when POD_UID is unset"),
];

/// The reference prototype's settings that wasmbox does not read, and why.
pub const REFERENCE_ONLY_ENV: &[(&str, &str)] = &[
    ("WASM_RUNTIME", "wasmbox always runs wasmtime"),
    (
        "GC_UTILIZATION_TRESHOLD",
        "wasmbox frees each instance when its invocation ends; there is no GC to trigger",
    ),
    (
        "METRICS_COLLECTION_WINDOW",
        "the CPU sample window is fixed (5 samples, 50 ms apart)",
    ),
    (
        "MAX_RETRIES",
        "the queue-proxy reporter reconnects with capped backoff, forever",
    ),
    (
        "RETRY_DELAY_SEC",
        "the queue-proxy reporter reconnects with capped backoff, forever",
    ),
    (
        "MEM_PRE_ALLOCATION_RATIO",
        "linear memory is reserved by the pooling allocator (--max-memory-mb)",
    ),
];

/// Every environment variable `serve` reads, with the flag it sets.
pub fn serve_env_names() -> Vec<(String, String)> {
    use clap::CommandFactory;
    let cli = Cli::command();
    let serve = cli
        .find_subcommand("serve")
        .expect("the serve subcommand exists");
    let mut names: Vec<(String, String)> = cli
        .get_arguments()
        .chain(serve.get_arguments())
        .filter_map(|a| {
            let env = a.get_env()?.to_str()?.to_string();
            Some((env, format!("--{}", a.get_long()?)))
        })
        .collect();
    names.extend(
        EXTRA_ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    names
}

/// For a clap error about an invalid value: the environment variable it
/// came from, when the flag was not on the command line but its variable is
/// set (clap's message names only the flag).
pub fn env_source_of(err: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    use clap::CommandFactory;
    if !matches!(
        err.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = arg.strip_prefix("--")?.split([' ', '=']).next()?;
    if std::env::args().any(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}="))) {
        return None;
    }
    let cli = Cli::command();
    let env = cli
        .get_subcommands()
        .flat_map(|c| c.get_arguments())
        .chain(cli.get_arguments())
        .find(|a| a.get_long() == Some(long))?
        .get_env()?
        .to_str()?
        .to_string();
    std::env::var_os(&env).map(|_| env)
}

/// What `serve` makes of these environment variables: the ones it reads
/// (name, value, flag), and an error for a `WASMBOX_*` name it does not know
/// or a reference-only setting. Warnings, not errors, at a real startup.
pub fn check_environment(
    vars: impl IntoIterator<Item = (String, String)>,
) -> (Vec<(String, String, String)>, Vec<String>) {
    let known = serve_env_names();
    let mut read = Vec::new();
    let mut problems = Vec::new();
    for (k, v) in vars {
        if let Some((_, flag)) = known.iter().find(|(name, _)| *name == k) {
            read.push((k, v, flag.clone()));
        } else if let Some((_, why)) = REFERENCE_ONLY_ENV.iter().find(|(name, _)| *name == k) {
            problems.push(format!(
                "{k} is a setting of the reference prototype that wasmbox does not read: {why}"
            ));
        } else if k.starts_with("WASMBOX_") {
            let closest = known
                .iter()
                .map(|(name, _)| (edit_distance(name, &k), name))
                .min()
                .filter(|(d, _)| *d <= 3)
                .map(|(_, name)| format!(" (did you mean {name}?)"))
                .unwrap_or_default();
            problems.push(format!(
                "{k} is not an environment variable wasmbox reads{closest}"
            ));
        }
    }
    read.sort();
    problems.sort();
    (read, problems)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

impl ServeConfig {
    /// A human-readable account of the resolved settings, one per line.
    pub fn describe(&self) -> String {
        let l = &self.limits;
        let a = &self.admission;
        let opt = |v: Option<String>, none: &str| v.unwrap_or_else(|| none.to_string());
        let lines = [
            ("listen", self.listen.to_string()),
            ("functions", self.registry.dir.display().to_string()),
            ("compat", format!("{:?}", self.compat).to_lowercase()),
            ("pod", self.pod.clone()),
            (
                "cpu-isolation",
                match self.isolation.requested {
                    Requested::Auto => "auto".to_string(),
                    Requested::Exactly(m) => m.to_string(),
                },
            ),
            (
                "cgroup-root",
                opt(
                    self.isolation
                        .cgroup_root
                        .as_ref()
                        .map(|p| p.display().to_string()),
                    "own cgroup",
                ),
            ),
            ("cpu-period", format!("{:?}", self.isolation.period)),
            ("default-memory-mb", l.default_memory_mb.to_string()),
            ("max-memory-mb", l.max_memory_mb.to_string()),
            ("default-cpu-quota", l.default_cpu_quota.to_string()),
            ("max-cpu-quota", l.max_cpu_quota.to_string()),
            ("timeout", format!("{:?}", l.timeout)),
            ("max-body-bytes", l.max_body_bytes.to_string()),
            ("max-output-bytes", l.max_output_bytes.to_string()),
            ("max-stderr-bytes", l.max_stderr_bytes.to_string()),
            ("workers", self.executor.max_workers.to_string()),
            (
                "allow-precompiled",
                self.registry.allow_precompiled.to_string(),
            ),
            (
                "cache-dir",
                opt(
                    self.registry
                        .cache_dir
                        .as_ref()
                        .map(|p| p.display().to_string()),
                    "none",
                ),
            ),
            ("max-loaded-functions", self.registry.max_loaded.to_string()),
            (
                "capacity-cpu",
                opt(a.capacity_cpu.map(|v| v.to_string()), "detected at startup"),
            ),
            (
                "capacity-memory-mb",
                opt(
                    a.capacity_memory_mb.map(|v| v.to_string()),
                    "detected at startup",
                ),
            ),
            ("cpu-overbook", a.cpu_overbook.to_string()),
            ("memory-overbook", a.memory_overbook.to_string()),
            ("max-queue", a.max_queue.to_string()),
            (
                "max-queue-mb",
                opt(
                    a.max_queue_mb.map(|v| v.to_string()),
                    "the memory admission limit",
                ),
            ),
            ("queue-timeout", format!("{:?}", a.queue_timeout)),
            ("cpu-gate", opt(a.cpu_gate.map(|v| v.to_string()), "off")),
            (
                "health-listen",
                opt(self.health_listen.map(|v| v.to_string()), "off"),
            ),
            ("readiness-window", self.readiness_window.to_string()),
            ("readiness-threshold", self.readiness_threshold.to_string()),
            ("qp-report", opt(self.qp_report.clone(), "off")),
            ("reporting-period", format!("{:?}", self.reporting_period)),
            ("drain-timeout", format!("{:?}", self.drain_timeout)),
        ];
        lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect()
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "wasmbox".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
    }

    fn vars(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_names_are_checked() {
        let (read, problems) = check_environment(vars(&[
            ("WASMBOX_CPU_ISOLATION", "throttle"),
            ("PORT", "8080"),
            ("READINESS_UTILIZATION_TRESHOLD", "0.8"),
            ("PATH", "/bin"),
        ]));
        assert_eq!(
            read,
            [
                (
                    "PORT".into(),
                    "8080".into(),
                    "--port, when WEBSERVER_PORT is unset".into()
                ),
                (
                    "READINESS_UTILIZATION_TRESHOLD".into(),
                    "0.8".into(),
                    "--readiness-threshold".into()
                ),
                (
                    "WASMBOX_CPU_ISOLATION".into(),
                    "throttle".into(),
                    "--cpu-isolation".into()
                ),
            ]
        );
        assert!(problems.is_empty(), "{problems:?}");

        let (_, problems) = check_environment(vars(&[
            ("WASMBOX_CPU_ISOLATON", "throttle"),
            ("WASMBOX_NOPE", "1"),
            ("WASM_RUNTIME", "wasmedge"),
        ]));
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("WASMBOX_CPU_ISOLATON is not an environment variable wasmbox reads (did you mean WASMBOX_CPU_ISOLATION?)"), "{problems:?}");
        assert_eq!(
            problems[1],
            "WASMBOX_NOPE is not an environment variable wasmbox reads"
        );
        assert!(problems[2].starts_with("WASM_RUNTIME is a setting of the reference prototype"));
    }
}
