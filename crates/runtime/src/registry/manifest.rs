//! A function's manifest: the optional `NAME.toml` next to `NAME.wasm`
//! (or `.wat`, `.cwasm`) that configures that one function.
//!
//! ```toml
//! args = ["--upper"]            # fixed leading args: argv[1..], before ?arg= values
//!
//! [env]                         # environment variables the guest sees
//! GREETING = "hello"
//!
//! [limits]                      # ceilings for this function (each at most the server's)
//! max_memory_mb = 128           # largest Memory-Request
//! max_cpu_quota = 500           # largest cpu_quota (millicores)
//! timeout_ms = 2000             # wall-clock limit
//! max_output_bytes = 65536      # stdout cap
//! max_stderr_bytes = 4096       # stderr tail kept
//! cpu_budget_ms = 100           # CPU time one invocation may burn
//!
//! [defaults]                    # used when the caller sends no header
//! memory_mb = 64
//! cpu_quota = 250
//! ```
//!
//! Every key is optional; an unknown key, a value of the wrong type or out
//! of range is an error naming the key (and, for syntax, the line). A
//! manifest can only tighten the server's limits: a ceiling above the
//! server's is refused, not silently clamped.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// Largest manifest file read.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 10;
/// Most environment variables.
pub const MAX_ENV_VARS: usize = 128;
/// Most fixed args.
pub const MAX_ARGS: usize = 64;
/// Longest single env value or arg, in bytes.
pub const MAX_VALUE_BYTES: usize = 4096;
/// Longest env variable name.
pub const MAX_ENV_NAME_BYTES: usize = 256;

/// The server's own limits: a manifest may lower them, never raise them.
#[derive(Debug, Clone, Copy)]
pub struct ServerBounds {
    /// `--max-memory-mb`.
    pub max_memory_mb: u64,
    /// `--max-cpu-quota`.
    pub max_cpu_quota: u64,
    /// `--timeout`.
    pub timeout: Duration,
    /// `--max-output-bytes`.
    pub max_output_bytes: usize,
    /// `--max-stderr-bytes`.
    pub max_stderr_bytes: usize,
}

/// A validated manifest (see the module docs for the format).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Environment variables, sorted by name.
    pub env: Vec<(String, String)>,
    /// Fixed leading args (after argv[0]).
    pub args: Vec<String>,
    /// Largest `Memory-Request` (MB) for this function.
    pub max_memory_mb: Option<u64>,
    /// Largest `cpu_quota` (millicores).
    pub max_cpu_quota: Option<u64>,
    /// Wall-clock limit per invocation.
    pub timeout: Option<Duration>,
    /// stdout cap in bytes.
    pub max_output_bytes: Option<usize>,
    /// stderr tail kept, in bytes.
    pub max_stderr_bytes: Option<usize>,
    /// CPU time one invocation may use.
    pub cpu_budget: Option<Duration>,
    /// `Memory-Request` when the caller sends none.
    pub default_memory_mb: Option<u64>,
    /// `cpu_quota` when the caller sends none.
    pub default_cpu_quota: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    defaults: RawDefaults,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_memory_mb: Option<u64>,
    max_cpu_quota: Option<u64>,
    timeout_ms: Option<u64>,
    max_output_bytes: Option<u64>,
    max_stderr_bytes: Option<u64>,
    cpu_budget_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    memory_mb: Option<u64>,
    cpu_quota: Option<u64>,
}

/// Checks `value` (named `key`) is in `lo..=hi`.
fn in_range(key: &str, value: u64, lo: u64, hi: u64, why_hi: &str) -> Result<u64, String> {
    if value < lo {
        return Err(format!("{key} = {value}: must be at least {lo}"));
    }
    if value > hi {
        return Err(format!("{key} = {value}: must be at most {hi} ({why_hi})"));
    }
    Ok(value)
}

fn check_text(what: &str, s: &str) -> Result<(), String> {
    if s.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "{what} is {} bytes long; at most {MAX_VALUE_BYTES}",
            s.len()
        ));
    }
    if s.contains('\0') {
        return Err(format!("{what} contains a NUL character"));
    }
    Ok(())
}

fn check_env_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !first_ok
        || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        || name.len() > MAX_ENV_NAME_BYTES
    {
        return Err(format!(
            "env: '{}' is not a valid variable name (letters, digits and '_', not starting with a digit, at most {MAX_ENV_NAME_BYTES} bytes)",
            name.escape_debug()
        ));
    }
    Ok(())
}

impl Manifest {
    /// Parses and validates a manifest's text against the server's limits.
    /// The error is one sentence naming the key (or line) at fault.
    pub fn parse(text: &str, server: &ServerBounds) -> Result<Manifest, String> {
        let raw: Raw = toml::from_str(text).map_err(|e| {
            // toml's message spans lines (a snippet of the source); keep it
            // on one line for a header-sized answer.
            e.to_string()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })?;
        if raw.env.len() > MAX_ENV_VARS {
            return Err(format!(
                "env: {} variables; at most {MAX_ENV_VARS}",
                raw.env.len()
            ));
        }
        for (k, v) in &raw.env {
            check_env_name(k)?;
            check_text(&format!("env.{k}"), v)?;
        }
        if raw.args.len() > MAX_ARGS {
            return Err(format!(
                "args: {} values; at most {MAX_ARGS}",
                raw.args.len()
            ));
        }
        for (i, a) in raw.args.iter().enumerate() {
            check_text(&format!("args[{i}]"), a)?;
        }
        let l = &raw.limits;
        let max_memory_mb = l
            .max_memory_mb
            .map(|v| {
                in_range(
                    "limits.max_memory_mb",
                    v,
                    1,
                    server.max_memory_mb,
                    "the server's --max-memory-mb",
                )
            })
            .transpose()?;
        let max_cpu_quota = l
            .max_cpu_quota
            .map(|v| {
                in_range(
                    "limits.max_cpu_quota",
                    v,
                    1,
                    server.max_cpu_quota,
                    "the server's --max-cpu-quota",
                )
            })
            .transpose()?;
        let server_timeout_ms = u64::try_from(server.timeout.as_millis()).unwrap_or(u64::MAX);
        let timeout_ms = l
            .timeout_ms
            .map(|v| {
                in_range(
                    "limits.timeout_ms",
                    v,
                    1,
                    server_timeout_ms,
                    "the server's --timeout",
                )
            })
            .transpose()?;
        let max_output_bytes = l
            .max_output_bytes
            .map(|v| {
                in_range(
                    "limits.max_output_bytes",
                    v,
                    0,
                    server.max_output_bytes as u64,
                    "the server's --max-output-bytes",
                )
            })
            .transpose()?;
        let max_stderr_bytes = l
            .max_stderr_bytes
            .map(|v| {
                in_range(
                    "limits.max_stderr_bytes",
                    v,
                    0,
                    server.max_stderr_bytes as u64,
                    "the server's --max-stderr-bytes",
                )
            })
            .transpose()?;
        let effective_timeout = timeout_ms.unwrap_or(server_timeout_ms);
        let cpu_budget_ms = l
            .cpu_budget_ms
            .map(|v| {
                in_range(
                    "limits.cpu_budget_ms",
                    v,
                    1,
                    effective_timeout,
                    "the wall-clock timeout: a larger budget could never be reached",
                )
            })
            .transpose()?;
        let d = &raw.defaults;
        let default_memory_mb = d
            .memory_mb
            .map(|v| {
                in_range(
                    "defaults.memory_mb",
                    v,
                    1,
                    max_memory_mb.unwrap_or(server.max_memory_mb),
                    "the largest Memory-Request this function takes",
                )
            })
            .transpose()?;
        let default_cpu_quota = d
            .cpu_quota
            .map(|v| {
                in_range(
                    "defaults.cpu_quota",
                    v,
                    1,
                    max_cpu_quota.unwrap_or(server.max_cpu_quota),
                    "the largest cpu_quota this function takes",
                )
            })
            .transpose()?;
        Ok(Manifest {
            env: raw.env.into_iter().collect(),
            args: raw.args,
            max_memory_mb,
            max_cpu_quota,
            timeout: timeout_ms.map(Duration::from_millis),
            max_output_bytes: max_output_bytes.map(|v| v as usize),
            max_stderr_bytes: max_stderr_bytes.map(|v| v as usize),
            cpu_budget: cpu_budget_ms.map(Duration::from_millis),
            default_memory_mb,
            default_cpu_quota,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> ServerBounds {
        ServerBounds {
            max_memory_mb: 4096,
            max_cpu_quota: 1000,
            timeout: Duration::from_secs(60),
            max_output_bytes: 1 << 24,
            max_stderr_bytes: 1 << 16,
        }
    }

    #[test]
    fn a_full_manifest_parses() {
        let m = Manifest::parse(
            r#"
args = ["--upper", "x"]
[env]
B = "2"
A_1 = "one"
[limits]
max_memory_mb = 128
max_cpu_quota = 500
timeout_ms = 2000
max_output_bytes = 100
max_stderr_bytes = 0
cpu_budget_ms = 150
[defaults]
memory_mb = 64
cpu_quota = 250
"#,
            &server(),
        )
        .unwrap();
        assert_eq!(m.args, ["--upper", "x"]);
        assert_eq!(
            m.env,
            [("A_1".into(), "one".into()), ("B".into(), "2".into())]
        );
        assert_eq!(m.max_memory_mb, Some(128));
        assert_eq!(m.timeout, Some(Duration::from_secs(2)));
        assert_eq!(m.cpu_budget, Some(Duration::from_millis(150)));
        assert_eq!(m.default_cpu_quota, Some(250));
        assert_eq!(Manifest::parse("", &server()).unwrap(), Manifest::default());
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let e = Manifest::parse("[limits]\nmax_memroy_mb = 5\n", &server()).unwrap_err();
        assert!(e.contains("max_memroy_mb"), "{e}");
        let e = Manifest::parse("colour = 1\n", &server()).unwrap_err();
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn values_are_range_checked_against_the_server() {
        let e = Manifest::parse("[limits]\nmax_memory_mb = 5000\n", &server()).unwrap_err();
        assert!(
            e.contains("limits.max_memory_mb = 5000") && e.contains("4096"),
            "{e}"
        );
        let e = Manifest::parse("[limits]\nmax_cpu_quota = 0\n", &server()).unwrap_err();
        assert!(e.contains("at least 1"), "{e}");
        let e = Manifest::parse(
            "[limits]\ntimeout_ms = 100\ncpu_budget_ms = 200\n",
            &server(),
        )
        .unwrap_err();
        assert!(e.contains("cpu_budget_ms"), "{e}");
        let e = Manifest::parse(
            "[limits]\nmax_memory_mb = 64\n[defaults]\nmemory_mb = 128\n",
            &server(),
        )
        .unwrap_err();
        assert!(e.contains("defaults.memory_mb = 128"), "{e}");
        let e = Manifest::parse("[limits]\nmax_memory_mb = -1\n", &server()).unwrap_err();
        assert!(e.contains("max_memory_mb"), "{e}");
    }

    #[test]
    fn env_names_and_values_are_checked() {
        let e = Manifest::parse("[env]\n\"1A\" = \"x\"\n", &server()).unwrap_err();
        assert!(e.contains("'1A'"), "{e}");
        let e = Manifest::parse("[env]\n\"A=B\" = \"x\"\n", &server()).unwrap_err();
        assert!(e.contains("A=B"), "{e}");
        let e = Manifest::parse("[env]\nA = \"x\\u0000\"\n", &server()).unwrap_err();
        assert!(e.contains("NUL"), "{e}");
        let e = Manifest::parse("args = [1]\n", &server()).unwrap_err();
        assert!(e.contains("args") || e.contains("string"), "{e}");
    }

    #[test]
    fn syntax_errors_name_the_line_on_one_line() {
        let e = Manifest::parse("[limits\n", &server()).unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.contains("line 1"), "{e}");
    }
}
