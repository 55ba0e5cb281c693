//! Outbound HTTP from components: the flags and their resolution into the
//! runtime's [`OutboundPolicy`].

use clap::Args;
use wasmbox_runtime::component::outbound::{
    HostPattern, OutboundPolicy, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_REQUESTS,
};

/// Outbound HTTP (`wasi:http/outgoing-handler`) from components.
#[derive(Debug, Clone, Args)]
pub struct OutboundArgs {
    /// Hosts components may send HTTP requests to, comma-separated
    /// `host[:port]` patterns (`api.example.com`, `*.example.com:443`,
    /// `127.0.0.1:8080`, `[::1]:9000`, `*`); anything else is denied
    /// (the default: nothing).
    #[arg(long, env = "WASMBOX_ALLOW_OUTBOUND", value_delimiter = ',')]
    pub allow_outbound: Vec<String>,
    /// Most outbound HTTP requests one invocation may make.
    #[arg(long, env = "WASMBOX_MAX_OUTBOUND_REQUESTS", default_value_t = DEFAULT_MAX_REQUESTS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_outbound_requests: u32,
    /// Most outbound connections one invocation may hold open at once.
    #[arg(long, env = "WASMBOX_MAX_OUTBOUND_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_outbound_connections: u32,
}

impl OutboundArgs {
    /// The policy, or the first bad pattern and why.
    pub fn policy(&self) -> Result<OutboundPolicy, String> {
        let allow = self
            .allow_outbound
            .iter()
            .filter(|p| !p.trim().is_empty())
            .map(|p| HostPattern::parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(OutboundPolicy {
            allow,
            max_requests: self.max_outbound_requests,
            max_connections: self.max_outbound_connections,
        })
    }
}

/// How `--check-config` shows the policy.
pub fn describe(p: &OutboundPolicy) -> String {
    if p.allow.is_empty() {
        return "none (denied)".into();
    }
    p.allow
        .iter()
        .map(|h| match h.port {
            Some(port) if h.host.contains(':') => format!("[{}]:{port}", h.host),
            Some(port) => format!("{}:{port}", h.host),
            None => h.host.clone(),
        })
        .collect::<Vec<_>>()
        .join(",")
}
