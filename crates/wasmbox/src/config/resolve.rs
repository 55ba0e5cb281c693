//! The resolved configuration: plain data the rest of the server reads,
//! resolved once from the flags and the few environment variables clap does
//! not read (`PORT`, `HEALTHCHECK_*`, `QP_*`, `HOSTNAME`), and checked.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use wasmbox_isolation::{IsolationConfig, Mode, Requested};
use wasmbox_runtime::executor::DEFAULT_MAX_QUEUED;
use wasmbox_runtime::registry::CompileLimits;
use wasmbox_runtime::{EngineConfig, ExecutorConfig, RegistryConfig};

use wasmbox_runtime::component::outbound::OutboundPolicy;

use super::admin::{resolve_admin, AdminConfig, AdminConfigError, ENV_ADMIN_TOKEN};
use super::defaults::*;
use super::flags::{
    Compat, CpuIsolation, EngineArgs, LimitArgs, LoadArgs, PrewarmPriority, ServeArgs,
};
use super::front::{self, FrontConfig};

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
    /// The admin listener (metrics, function listing) and its token.
    pub admin: AdminConfig,
    pub readiness_window: usize,
    pub readiness_threshold: f64,
    pub qp_report: Option<String>,
    pub reporting_period: Duration,
    pub front: FrontConfig,
    /// `--access-log`: a file, or `-` for stdout.
    pub access_log: Option<PathBuf>,
    /// What components may reach over HTTP.
    pub outbound: OutboundPolicy,
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
    pub max_function_share: f64,
    pub newcomer_cpu_overdraft: f64,
    pub max_function_queue_share: f64,
    pub max_overtaken_wait: Duration,
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

/// A setting that cannot be resolved: which flag or variable, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "--max-loaded-functions {value}: the open-file limit {nofile} holds at most {within} loaded \
         functions (each may keep a descriptor open) beside 2 per worker (--workers {workers}), \
         {} reserved and {connections} connections; lower it, --workers or --max-connections, or \
         raise the limit (ulimit -n)",
        front::RESERVED_DESCRIPTORS
    )]
    LoadedOverFileLimit {
        value: u64,
        nofile: u64,
        within: u64,
        workers: u32,
        connections: u64,
    },
    #[error("PORT={0} is not a port number")]
    Port(String),
    #[error("--host {0} is not an IP address")]
    Host(String),
    #[error("--default-memory-mb {value} must be between 1 and --max-memory-mb {max}")]
    DefaultMemory { value: u64, max: u64 },
    #[error("--default-cpu-quota {value} must be between 1 and --max-cpu-quota {max}")]
    DefaultCpuQuota { value: u64, max: u64 },
    #[error("--cpu-period must be between 1ms and 1s (the kernel's CFS limits), not {0:?}")]
    CpuPeriod(Duration),
    #[error("functions directory {} does not exist", .0.display())]
    FunctionsDir(PathBuf),
    #[error("{flag} {value} must be a ratio above 0 (1.0 = no overbooking)")]
    Overbook { flag: &'static str, value: f64 },
    #[error("--readiness-threshold {0} must be in (0, 1]")]
    ReadinessThreshold(f64),
    #[error("HEALTHCHECK_HOST/PORT {0} is not an address")]
    HealthcheckAddress(String),
    #[error(transparent)]
    Admin(#[from] AdminConfigError),
    #[error("--allow-outbound: {0}")]
    Outbound(String),
}

impl ConfigError {
    /// The flag or environment variable at fault.
    pub fn setting(&self) -> &'static str {
        match self {
            ConfigError::LoadedOverFileLimit { .. } => "--max-loaded-functions",
            ConfigError::Port(_) => ENV_PORT,
            ConfigError::Host(_) => "--host",
            ConfigError::DefaultMemory { .. } => "--default-memory-mb",
            ConfigError::DefaultCpuQuota { .. } => "--default-cpu-quota",
            ConfigError::CpuPeriod(_) => "--cpu-period",
            ConfigError::FunctionsDir(_) => "--functions",
            ConfigError::Overbook { flag, .. } => flag,
            ConfigError::ReadinessThreshold(_) => "--readiness-threshold",
            ConfigError::HealthcheckAddress(_) => ENV_HEALTHCHECK_PORT,
            ConfigError::Admin(e) => e.setting(),
            ConfigError::Outbound(_) => "--allow-outbound",
        }
    }
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

/// The most functions kept loaded: the flag's value if the open-file
/// limit `nofile` can hold it beside `workers` and `connections`
/// (`--max-connections`, else the fewest derived: see
/// [`front::loaded_within`]), else an error; without the flag, the
/// default or as many as the limit holds, if fewer.
pub fn max_loaded_within(
    flag: Option<u64>,
    nofile: Option<u64>,
    workers: u32,
    connections: Option<u64>,
) -> Result<u64, ConfigError> {
    let connections = connections.unwrap_or(front::MIN_CONNECTIONS as u64);
    let within = nofile.map(|n| (n, front::loaded_within(n, workers, connections)));
    match (flag, within) {
        (Some(value), Some((nofile, within))) if value > within => {
            Err(ConfigError::LoadedOverFileLimit {
                value,
                nofile,
                within,
                workers,
                connections,
            })
        }
        (Some(value), _) => Ok(value),
        (None, Some((_, within))) => Ok(DEFAULT_MAX_LOADED_FUNCTIONS.min(within)),
        (None, None) => Ok(DEFAULT_MAX_LOADED_FUNCTIONS),
    }
}

impl LimitArgs {
    pub fn registry_config(&self, dir: PathBuf) -> RegistryConfig {
        RegistryConfig {
            allow_precompiled: self.allow_precompiled,
            cache_dir: self.cache_dir.clone(),
            max_loaded: usize::try_from(
                self.max_loaded_functions
                    .unwrap_or(DEFAULT_MAX_LOADED_FUNCTIONS),
            )
            .unwrap_or(usize::MAX),
            ..self.load.registry_config(dir)
        }
    }
}

impl LoadArgs {
    /// The compile budget and cache bound. Heavy compiles run in a child
    /// only where `registry_config_for_serve` sets one.
    fn registry_config(&self, dir: PathBuf) -> RegistryConfig {
        RegistryConfig {
            revalidate_after: self.revalidate_after,
            prewarm_poll: self.prewarm_poll,
            prewarm_idle: self.prewarm_priority == PrewarmPriority::Idle,
            cache_max_bytes: self.cache_max_mb.saturating_mul(1 << 20),
            compile: CompileLimits {
                max_module_bytes: self.max_module_mb.saturating_mul(1 << 20),
                max_functions: self.max_module_functions,
                max_function_body_bytes: self.max_function_body_bytes,
                heavy_threshold_bytes: self.heavy_module_kb.saturating_mul(1 << 10),
                heavy_concurrency: usize::from(self.compile_concurrency),
                timeout: self.compile_timeout,
                memory_mb: self.compile_memory_mb,
                child: None,
                ..CompileLimits::default()
            },
            ..RegistryConfig::new(dir)
        }
    }

    /// The compile child for `serve`: `--compile-child-exe`, else this
    /// executable (none if it cannot be found: heavy compiles then run in
    /// process).
    fn compile_child(&self) -> Option<PathBuf> {
        self.compile_child_exe
            .clone()
            .or_else(|| std::env::current_exe().ok())
    }
}

/// A set, non-empty environment variable.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl ServeArgs {
    /// Resolves defaults that depend on the environment (PORT, hostname) and
    /// checks that the values agree with each other.
    pub fn resolve(&self) -> Result<ServeConfig, ConfigError> {
        let port = match self.port {
            Some(p) => p,
            None => match std::env::var(ENV_PORT) {
                Ok(p) => p.parse().map_err(|_| ConfigError::Port(p))?,
                Err(_) => DEFAULT_PORT,
            },
        };
        let ip: IpAddr = self
            .host
            .parse()
            .map_err(|_| ConfigError::Host(self.host.clone()))?;
        self.check()?;
        let l = &self.limits;
        let nofile = crate::host::open_file_limit();
        let max_loaded = max_loaded_within(
            l.max_loaded_functions,
            nofile,
            self.workers,
            self.front.max_connections,
        )?;
        let listen = SocketAddr::new(ip, port);
        let health_listen = self.health_listen()?;
        let mut others = vec![("--port", listen)];
        others.extend(health_listen.map(|a| ("--health-listen", a)));
        let admin = resolve_admin(
            self.admin_listen,
            self.admin_token_file.as_deref(),
            // Set but empty is an error, not "no token".
            std::env::var(ENV_ADMIN_TOKEN).ok(),
            self.admin_metrics_auth,
            &others,
        )?;
        let outbound = self.outbound.policy().map_err(ConfigError::Outbound)?;
        Ok(ServeConfig {
            outbound,
            listen,
            compat: self.compat,
            pod: self.pod.clone().unwrap_or_else(hostname),
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
            engine: self
                .engine
                .engine_config(self.workers + SPARE_INSTANCE_SLOTS),
            registry: {
                let mut registry = l.registry_config(self.functions.clone());
                registry.compile.child = l.load.compile_child();
                registry.max_loaded = usize::try_from(max_loaded).unwrap_or(usize::MAX);
                registry
            },
            // Admission lets in at most one call per worker, so the job
            // queue never has to hold more than that (past the default,
            // with more than 4,096 workers, whose slots may all back off).
            executor: ExecutorConfig {
                max_workers: self.workers as usize,
                max_queued: DEFAULT_MAX_QUEUED.max(self.workers as usize),
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
                max_function_share: self.max_function_share,
                newcomer_cpu_overdraft: self.newcomer_cpu_overdraft,
                max_function_queue_share: self.max_function_queue_share,
                max_overtaken_wait: self.max_overtaken_wait,
            },
            health_listen,
            access_log: self.access_log.clone(),
            admin,
            readiness_window: self.readiness_window,
            readiness_threshold: self.readiness_threshold,
            qp_report: self.qp_report(),
            reporting_period: Duration::from_millis(self.reporting_period_ms.max(1)),
            front: self.front.resolve(nofile, self.workers, max_loaded),
        })
    }

    /// The checks of values against their bounds and each other, and that
    /// the functions directory exists.
    fn check(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if l.default_memory_mb == 0 || l.default_memory_mb > self.engine.max_memory_mb {
            return Err(ConfigError::DefaultMemory {
                value: l.default_memory_mb,
                max: self.engine.max_memory_mb,
            });
        }
        if self.default_cpu_quota == 0 || self.default_cpu_quota > self.max_cpu_quota {
            return Err(ConfigError::DefaultCpuQuota {
                value: self.default_cpu_quota,
                max: self.max_cpu_quota,
            });
        }
        let period_us = self.cpu_period.as_micros();
        if !(1000..=1_000_000).contains(&period_us) {
            return Err(ConfigError::CpuPeriod(self.cpu_period));
        }
        if !self.functions.is_dir() {
            return Err(ConfigError::FunctionsDir(self.functions.clone()));
        }
        for (flag, value) in [
            ("--cpu-overbook", self.cpu_overbook),
            ("--memory-overbook", self.memory_overbook),
        ] {
            if !(value > 0.0 && value <= 100.0) {
                return Err(ConfigError::Overbook { flag, value });
            }
        }
        if !(self.readiness_threshold > 0.0 && self.readiness_threshold <= 1.0) {
            return Err(ConfigError::ReadinessThreshold(self.readiness_threshold));
        }
        Ok(())
    }

    /// `--health-listen`, else `HEALTHCHECK_HOST` + `HEALTHCHECK_PORT`.
    fn health_listen(&self) -> Result<Option<SocketAddr>, ConfigError> {
        match (self.health_listen, env(ENV_HEALTHCHECK_PORT)) {
            (Some(a), _) => Ok(Some(a)),
            (None, Some(port)) => {
                let host = env(ENV_HEALTHCHECK_HOST).unwrap_or_else(|| DEFAULT_HEALTH_HOST.into());
                let addr = format!("{host}:{port}");
                match addr.parse() {
                    Ok(a) => Ok(Some(a)),
                    Err(_) => Err(ConfigError::HealthcheckAddress(addr)),
                }
            }
            (None, None) => Ok(None),
        }
    }

    /// `--qp-report`, else `ws://QP_HOST:QP_PORT`.
    fn qp_report(&self) -> Option<String> {
        match (&self.qp_report, env(ENV_QP_PORT)) {
            (Some(u), _) => Some(u.clone()),
            (None, Some(port)) => Some(format!(
                "ws://{}:{port}",
                env(ENV_QP_HOST).unwrap_or_else(|| DEFAULT_QP_HOST.into())
            )),
            (None, None) => None,
        }
    }
}

fn hostname() -> String {
    std::env::var(ENV_HOSTNAME)
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| DEFAULT_POD.into())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::{Cli, Command};

    /// `serve --port 1` with `extra`, and `--functions /` (a directory that
    /// exists) unless `extra` names one.
    fn serve(extra: &[&str]) -> ServeArgs {
        let mut argv = vec!["wasmbox", "serve", "--port", "1"];
        if !extra.contains(&"--functions") {
            argv.extend(["--functions", "/"]);
        }
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(args) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    /// Each loaded function may hold a descriptor: the default shrinks to
    /// what the open-file limit holds, and a flag past it is refused with
    /// the numbers, where before a container with a hard limit of 1,024
    /// admitted 512 loaded functions, 2 x 256 workers' files and 256
    /// connections (1,280 descriptors plus the reserve).
    #[test]
    fn loaded_functions_fit_the_open_file_limit() {
        // 1,024 - 256 reserved - 2 x 256 workers - 64 connections.
        assert_eq!(max_loaded_within(None, Some(1024), 256, None).unwrap(), 192);
        assert_eq!(
            max_loaded_within(None, Some(1 << 20), 256, None).unwrap(),
            DEFAULT_MAX_LOADED_FUNCTIONS
        );
        assert_eq!(
            max_loaded_within(None, None, 256, None).unwrap(),
            DEFAULT_MAX_LOADED_FUNCTIONS
        );
        // Nothing left for functions: still one.
        assert_eq!(max_loaded_within(None, Some(300), 256, None).unwrap(), 1);
        assert_eq!(max_loaded_within(Some(1), Some(300), 256, None).unwrap(), 1);
        assert_eq!(
            max_loaded_within(Some(192), Some(1024), 256, None).unwrap(),
            192
        );
        // An explicit connection limit is what the functions sit beside.
        assert_eq!(
            max_loaded_within(None, Some(1024), 256, Some(16)).unwrap(),
            240
        );
        let e = max_loaded_within(Some(200), Some(1024), 256, Some(200)).unwrap_err();
        assert!(e.to_string().contains("at most 56 loaded"), "{e}");
        assert!(e.to_string().contains("and 200 connections"), "{e}");
        let e = max_loaded_within(Some(193), Some(1024), 256, None).unwrap_err();
        assert_eq!(e.setting(), "--max-loaded-functions");
        let msg = e.to_string();
        assert!(
            msg.contains("--max-loaded-functions 193")
                && msg.contains("open-file limit 1024 holds at most 192")
                && msg.contains("--workers 256"),
            "{msg}"
        );
        // Whatever is loaded, the connections derived fit in what is left.
        let front = serve(&[]).front.resolve(Some(1024), 256, 192);
        assert_eq!(
            front.max_connections as u64,
            1024 - front::descriptors_besides_connections(256, 192)
        );
        assert_eq!(front.max_connections, front::MIN_CONNECTIONS);
    }

    #[test]
    fn defaults_are_the_named_constants() {
        let c = serve(&[]).resolve().unwrap();
        assert_eq!(c.limits.max_memory_mb, DEFAULT_MAX_MEMORY_MB);
        assert_eq!(c.limits.default_memory_mb, DEFAULT_MEMORY_MB);
        assert_eq!(c.limits.default_cpu_quota, DEFAULT_CPU_QUOTA);
        assert_eq!(c.limits.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(c.limits.timeout, Duration::from_secs(60));
        assert_eq!(c.isolation.period, Duration::from_millis(100));
        assert_eq!(c.executor.max_workers, DEFAULT_WORKERS as usize);
        assert_eq!(
            c.engine.max_instances,
            DEFAULT_WORKERS + SPARE_INSTANCE_SLOTS
        );
        assert_eq!(c.compat, Compat::None);
    }

    /// The pool reserves address space for every instance at the most a
    /// component may hold: at the most workers accepted and the default
    /// largest memory it still maps (at four memories per instance it did
    /// not).
    #[test]
    fn the_engine_pool_maps_at_the_most_workers_accepted() {
        let c = serve(&["--workers", "8192"]).resolve().unwrap();
        wasmbox_runtime::WasmEngine::new(c.engine.clone()).expect("the pool maps");
    }

    #[test]
    fn errors_name_their_setting_and_the_reason() {
        let cases: [(&[&str], &str, &str); 7] = [
            (
                &["--default-memory-mb", "9000"],
                "--default-memory-mb",
                "--default-memory-mb 9000 must be between 1 and --max-memory-mb 4096",
            ),
            (
                &["--default-cpu-quota", "0"],
                "--default-cpu-quota",
                "--default-cpu-quota 0 must be between 1 and --max-cpu-quota 1000",
            ),
            (
                &["--cpu-period", "5s"],
                "--cpu-period",
                "--cpu-period must be between 1ms and 1s (the kernel's CFS limits), not 5s",
            ),
            (
                &["--functions", "/no/such/dir"],
                "--functions",
                "functions directory /no/such/dir does not exist",
            ),
            (
                &["--memory-overbook", "0"],
                "--memory-overbook",
                "--memory-overbook 0 must be a ratio above 0 (1.0 = no overbooking)",
            ),
            (
                &["--readiness-threshold", "2"],
                "--readiness-threshold",
                "--readiness-threshold 2 must be in (0, 1]",
            ),
            (
                &["--host", "nope"],
                "--host",
                "--host nope is not an IP address",
            ),
        ];
        for (flags, setting, message) in cases {
            let e = serve(flags).resolve().unwrap_err();
            assert_eq!(e.setting(), setting, "{flags:?}");
            assert_eq!(e.to_string(), message, "{flags:?}");
        }
    }
}
