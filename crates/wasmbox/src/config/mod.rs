//! Command-line and environment configuration, in three jobs:
//!
//! - `flags`: the clap structs. Every flag can also be set from an
//!   environment variable (`WASMBOX_*`, or the reference's names where one
//!   exists), so Kubernetes env blocks work unchanged.
//! - `resolve`: the plain-data [`ServeConfig`] the rest of the server reads,
//!   resolved once from the flags and the few variables clap does not read,
//!   with a typed [`ConfigError`]; the defaults are named constants in
//!   `defaults`.
//! - `admin`: the admin listener's settings and its token (a leaf).
//! - `env_audit`: which environment variables `serve` reads, the audit that
//!   flags unknown `WASMBOX_*` names and reference-only settings, and the
//!   `--check-config` account of the resolved settings.

mod admin;
mod defaults;
mod duration;
mod env_audit;
mod flags;
mod front;
mod outbound;
mod resolve;

pub use admin::{AdminConfig, AdminConfigError, AdminToken, TokenSource, ENV_ADMIN_TOKEN};
pub use env_audit::{
    check_environment, env_source_of, serve_env_names, EXTRA_ENV, REFERENCE_ONLY_ENV,
};
pub use flags::Compat;
pub use flags::{
    parse_duration, Cli, Command, CompileArgs, CompileChildArgs, CpuIsolation, EngineArgs,
    LimitArgs, LoadArgs, RunArgs, ServeArgs,
};
pub use front::{FrontArgs, FrontConfig};
pub use resolve::{AdmissionSettings, ConfigError, RequestLimits, ServeConfig};
