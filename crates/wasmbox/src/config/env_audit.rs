//! The environment audit: which variables `serve` reads and what each
//! stands for, the check that names an unknown `WASMBOX_*` variable (with a
//! did-you-mean) or a reference-only setting, the variable behind a clap
//! error, and the `--check-config` account of the resolved settings.

use wasmbox_isolation::Requested;

use super::admin::ENV_ADMIN_TOKEN;
use super::defaults::{
    ENV_HEALTHCHECK_HOST, ENV_HEALTHCHECK_PORT, ENV_HOSTNAME, ENV_PORT, ENV_QP_HOST, ENV_QP_PORT,
};
use super::flags::Cli;
use super::resolve::ServeConfig;

/// Environment variables `serve` reads besides the clap `env =` names, and
/// what each stands for.
pub const EXTRA_ENV: &[(&str, &str)] = &[
    (ENV_PORT, "--port, when WEBSERVER_PORT is unset"),
    (
        ENV_HEALTHCHECK_HOST,
        "--health-listen host, with HEALTHCHECK_PORT",
    ),
    (ENV_HEALTHCHECK_PORT, "--health-listen port"),
    (ENV_QP_HOST, "--qp-report host, with QP_PORT"),
    (ENV_QP_PORT, "--qp-report port"),
    (ENV_HOSTNAME, "--pod, when POD_UID is unset"),
    (
        ENV_ADMIN_TOKEN,
        "the admin token, instead of --admin-token-file",
    ),
];

/// Variables whose values are secrets: reported as read, never shown.
pub const SECRET_ENV: &[&str] = &[ENV_ADMIN_TOKEN];

/// What is shown instead of a secret variable's value.
pub const REDACTED: &str = "<redacted>";

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
/// (name, value, flag; the value of a [`SECRET_ENV`] variable is
/// [`REDACTED`]), and an error for a `WASMBOX_*` name it does not know
/// or a reference-only setting. Warnings, not errors, at a real startup.
pub fn check_environment(
    vars: impl IntoIterator<Item = (String, String)>,
) -> (Vec<(String, String, String)>, Vec<String>) {
    let known = serve_env_names();
    let mut read = Vec::new();
    let mut problems = Vec::new();
    for (k, v) in vars {
        if let Some((_, flag)) = known.iter().find(|(name, _)| *name == k) {
            let v = if SECRET_ENV.contains(&k.as_str()) {
                REDACTED.to_string()
            } else {
                v
            };
            read.push((k, v, flag.clone()));
        } else if let Some((_, why)) = REFERENCE_ONLY_ENV.iter().find(|(name, _)| *name == k) {
            problems.push(format!(
                "{k} is a setting of the reference prototype that wasmbox does not read: {why}"
            ));
        } else if k.starts_with("WASMBOX_") {
            let closest = known
                .iter()
                .map(|(name, _)| (strsim::levenshtein(name, &k), name))
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
            ("allow-outbound", super::outbound::describe(&self.outbound)),
            (
                "max-outbound-requests",
                self.outbound.max_requests.to_string(),
            ),
            (
                "max-outbound-connections",
                self.outbound.max_connections.to_string(),
            ),
            // Loading functions (LoadArgs).
            (
                "revalidate-after",
                format!("{:?}", self.registry.revalidate_after),
            ),
            ("prewarm-poll", format!("{:?}", self.registry.prewarm_poll)),
            (
                "prewarm-priority",
                if self.registry.prewarm_idle {
                    "idle"
                } else {
                    "normal"
                }
                .to_string(),
            ),
            (
                "cache-max-mb",
                (self.registry.cache_max_bytes >> 20).to_string(),
            ),
            (
                "max-module-mb",
                (self.registry.compile.max_module_bytes >> 20).to_string(),
            ),
            (
                "max-module-functions",
                self.registry.compile.max_functions.to_string(),
            ),
            (
                "max-function-body-bytes",
                self.registry.compile.max_function_body_bytes.to_string(),
            ),
            (
                "heavy-module-kb",
                (self.registry.compile.heavy_threshold_bytes >> 10).to_string(),
            ),
            (
                "compile-concurrency",
                self.registry.compile.heavy_concurrency.to_string(),
            ),
            (
                "compile-timeout",
                format!("{:?}", self.registry.compile.timeout),
            ),
            (
                "compile-memory-mb",
                self.registry.compile.memory_mb.to_string(),
            ),
            (
                "compile-child",
                opt(
                    self.registry
                        .compile
                        .child
                        .as_ref()
                        .map(|p| p.display().to_string()),
                    "none (in process)",
                ),
            ),
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
            ("max-function-share", a.max_function_share.to_string()),
            (
                "newcomer-cpu-overdraft",
                a.newcomer_cpu_overdraft.to_string(),
            ),
            (
                "max-function-queue-share",
                a.max_function_queue_share.to_string(),
            ),
            ("max-overtaken-wait", format!("{:?}", a.max_overtaken_wait)),
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
        lines
            .into_iter()
            .chain(self.front.describe())
            .chain(self.admin.describe())
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_admin_token_is_read_but_never_shown() {
        let (read, problems) =
            check_environment(vars(&[("WASMBOX_ADMIN_TOKEN", "hunter2-hunter2")]));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            read,
            [(
                "WASMBOX_ADMIN_TOKEN".into(),
                REDACTED.into(),
                "the admin token, instead of --admin-token-file".into()
            )]
        );
    }
}
