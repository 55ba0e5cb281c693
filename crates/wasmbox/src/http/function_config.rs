//! A function's manifest applied to one request: its ceilings and defaults
//! for the resource headers, its env and fixed args, its timeout, output
//! caps and CPU budget (format: `wasmbox_runtime::registry::manifest`).

use std::time::Duration;

use hyper::header::HeaderMap;
use wasmbox_admission::Resources;
use wasmbox_runtime::registry::{Manifest, ManifestError, Manifests};
use wasmbox_runtime::Function;

use super::error::{ErrorKind, HttpError};
use super::request::parse_resources_for;
use crate::config::RequestLimits;

/// What a request runs with once its function's manifest is applied.
pub(super) struct Effective {
    pub resources: Resources,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    pub timeout: Duration,
    pub max_output_bytes: usize,
    pub max_stderr_bytes: usize,
    pub cpu_budget: Option<Duration>,
}

/// Looks up `function`'s manifest and applies it to the request's headers.
/// `server` are the resources already parsed with the server's limits
/// (used as they are when there is no manifest).
pub(super) async fn effective(
    manifests: &Manifests,
    function: &Function,
    headers: &HeaderMap,
    limits: &RequestLimits,
    server: Resources,
) -> Result<Effective, HttpError> {
    let manifest = manifests.get(&function.file_name).await.map_err(|e| {
        let kind = match e {
            ManifestError::Invalid { .. } => ErrorKind::BadManifest,
            ManifestError::Io { .. } => ErrorKind::Unreadable,
        };
        HttpError::new(
            kind,
            format!("{e}; the function is not run until it is fixed"),
        )
    })?;
    let Some(m) = manifest else {
        return Ok(Effective {
            resources: server,
            env: Vec::new(),
            args: Vec::new(),
            timeout: limits.timeout,
            max_output_bytes: limits.max_output_bytes,
            max_stderr_bytes: limits.max_stderr_bytes,
            cpu_budget: None,
        });
    };
    let own = function_limits(&m, limits);
    let whose = format!(
        "the function's (its manifest {})",
        Manifests::file_name(wasmbox_runtime::registry::stem_of(&function.file_name))
    );
    let resources = parse_resources_for(headers, &own, &whose)?;
    Ok(Effective {
        resources,
        env: m.env.clone(),
        args: m.args.clone(),
        timeout: own.timeout,
        max_output_bytes: own.max_output_bytes,
        max_stderr_bytes: own.max_stderr_bytes,
        cpu_budget: m.cpu_budget,
    })
}

/// The server's limits, with the manifest's ceilings and defaults in place.
fn function_limits(m: &Manifest, server: &RequestLimits) -> RequestLimits {
    let max_memory_mb = m.max_memory_mb.unwrap_or(server.max_memory_mb);
    let max_cpu_quota = m.max_cpu_quota.unwrap_or(server.max_cpu_quota);
    RequestLimits {
        default_memory_mb: m
            .default_memory_mb
            .unwrap_or(server.default_memory_mb)
            .min(max_memory_mb),
        max_memory_mb,
        default_cpu_quota: m
            .default_cpu_quota
            .unwrap_or(server.default_cpu_quota)
            .min(max_cpu_quota),
        max_cpu_quota,
        timeout: m.timeout.unwrap_or(server.timeout),
        max_body_bytes: server.max_body_bytes,
        max_output_bytes: m.max_output_bytes.unwrap_or(server.max_output_bytes),
        max_stderr_bytes: m.max_stderr_bytes.unwrap_or(server.max_stderr_bytes),
    }
}
