//! Outbound HTTP from components (`wasi:http/outgoing-handler`): denied
//! unless the target is on the operator's allow-list, and bounded per
//! invocation (requests made, connections open at once, and the
//! invocation's own deadline).
//!
//! A refused request fails inside the guest with `HTTP-request-denied`
//! (not on the list, or over the request count) or
//! `connection-limit-reached` (too many open), and is logged with the
//! function's name.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use tokio::sync::Semaphore;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// One `host[:port]` pattern of the allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Lower-case host; `*` alone matches any host, `*.example.com` any
    /// subdomain of example.com (not example.com itself).
    pub host: String,
    /// The port; `None` matches any port.
    pub port: Option<u16>,
}

impl HostPattern {
    /// Parses `host`, `host:port`, `*.domain`, `*`, `[v6]` or `[v6]:port`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = |why: &str| format!("outbound pattern '{s}': {why}");
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if s.contains('/') || s.contains('@') {
            return Err(bad("give host[:port] only, no scheme, path or user"));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
            };
            (h.to_string(), port)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h.to_string(), Some(p)),
                Some(_) => return Err(bad("write IPv6 addresses in brackets: [::1]:8080")),
                None => (s.to_string(), None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad("the port must be 1-65535"))?,
            ),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let wildcard_ok = host == "*" || host.strip_prefix("*.").is_some_and(|d| !d.contains('*'));
        if host.contains('*') && !wildcard_ok {
            return Err(bad(
                "'*' may only be the whole host or its first label (*.example.com)",
            ));
        }
        Ok(HostPattern {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        match self.host.strip_prefix("*.") {
            _ if self.host == "*" => true,
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => self.host == host,
        }
    }
}

/// What components may reach over HTTP, and how much per invocation.
#[derive(Debug, Clone)]
pub struct OutboundPolicy {
    /// Allowed targets; empty denies everything.
    pub allow: Vec<HostPattern>,
    /// Most outbound requests one invocation may make.
    pub max_requests: u32,
    /// Most outbound connections one invocation may hold open at once.
    pub max_connections: u32,
}

impl Default for OutboundPolicy {
    fn default() -> Self {
        OutboundPolicy {
            allow: Vec::new(),
            max_requests: DEFAULT_MAX_REQUESTS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Default of [`OutboundPolicy::max_requests`].
pub const DEFAULT_MAX_REQUESTS: u32 = 32;
/// Default of [`OutboundPolicy::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4;

impl OutboundPolicy {
    /// Whether `host:port` is on the allow-list.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.to_ascii_lowercase();
        self.allow.iter().any(|p| p.matches(&host, port))
    }
}

/// One invocation's outbound state: the hooks wasmtime-wasi-http calls to
/// send a request.
pub struct Outbound {
    policy: Arc<OutboundPolicy>,
    function: Arc<str>,
    deadline: Instant,
    sent: u32,
    connections: Arc<Semaphore>,
}

impl Outbound {
    /// For one invocation of `function`, ending at `deadline`.
    pub fn new(policy: Arc<OutboundPolicy>, function: Arc<str>, deadline: Instant) -> Self {
        let connections = Arc::new(Semaphore::new(policy.max_connections as usize));
        Outbound {
            policy,
            function,
            deadline,
            sent: 0,
            connections,
        }
    }

    /// Checks a request against the policy; on success, the connection
    /// permit it holds while its connection is open.
    fn admit(
        &mut self,
        request: &http::Request<WasiBody>,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, Error> {
        let uri = request.uri();
        let host = uri.host().unwrap_or_default();
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let function = &*self.function;
        if !self.policy.allows(host, port) {
            tracing::warn!(function, target = %format!("{host}:{port}"), "outbound HTTP request denied: the target is not in --allow-outbound");
            return Err(Error::HttpRequestDenied);
        }
        if self.sent >= self.policy.max_requests {
            tracing::warn!(function, limit = self.policy.max_requests, "outbound HTTP request denied: this invocation made its most requests (--max-outbound-requests)");
            return Err(Error::HttpRequestDenied);
        }
        let permit = self.connections.clone().try_acquire_owned().map_err(|_| {
            tracing::warn!(function, limit = self.policy.max_connections, "outbound HTTP request refused: this invocation holds its most open connections (--max-outbound-connections)");
            Error::ConnectionLimitReached
        })?;
        self.sent += 1;
        Ok(permit)
    }
}

type Sent = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

impl WasiHttpHooks for Outbound {
    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        super::host::OUTGOING_BODY_CHUNK
    }

    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        1
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        let permit = match self.admit(&request) {
            Ok(p) => p,
            Err(e) => return Box::new(async move { Err(e) }),
        };
        let deadline = self.deadline;
        Box::new(async move {
            // Every wait is bounded by what is left of the invocation's time.
            let left = deadline.saturating_duration_since(Instant::now());
            let options = clamp(options.unwrap_or_default(), left);
            // The connection lives on wasmtime-wasi's shared runtime (the
            // worker's own runtime has timers only), outside the worker's
            // CPU slot, and is dropped with the invocation.
            let ambient = ambient();
            let on_ambient = ambient.clone();
            let sent = Ambient(ambient.spawn(async move {
                let sending = wasmtime_wasi_http::default_send_request(request, Some(options));
                let (response, io) = tokio::time::timeout_at(deadline.into(), sending)
                    .await
                    .map_err(|_| Error::ConnectionTimeout)??;
                // The connection stays open (and counted) until its driver
                // ends.
                let io = Ambient(on_ambient.spawn(async move {
                    let _permit = permit;
                    io.await
                }));
                Ok::<_, Error>((response.map(BodyExt::boxed_unsync), io))
            }));
            let (response, io) = sent.await??;
            let io = async move { io.await? };
            Ok((
                response,
                Box::new(io) as Box<dyn Future<Output = Result<(), Error>> + Send>,
            ))
        })
    }
}

/// wasmtime-wasi's shared runtime (IO and timers on threads of its own).
/// Asked for from a fresh thread: on a worker, the worker's own runtime
/// would be the "current" one. Called first at startup
/// ([`crate::WasmEngine::with_outbound`]), so the runtime's threads are
/// not born inside a worker's CPU slot.
pub fn ambient() -> tokio::runtime::Handle {
    static AMBIENT: std::sync::OnceLock<tokio::runtime::Handle> = std::sync::OnceLock::new();
    AMBIENT
        .get_or_init(|| {
            std::thread::spawn(|| {
                wasmtime_wasi::runtime::with_ambient_tokio_runtime(tokio::runtime::Handle::current)
            })
            .join()
            .expect("cannot reach wasmtime-wasi's runtime")
        })
        .clone()
}

/// A task on the shared runtime, aborted when dropped.
struct Ambient<T>(tokio::task::JoinHandle<T>);

impl<T> Future for Ambient<T> {
    type Output = Result<T, Error>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.map_err(|_| Error::ConnectionTerminated))
    }
}

impl<T> Drop for Ambient<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn clamp(mut o: RequestOptions, left: Duration) -> RequestOptions {
    let c = |t: Option<Duration>| Some(t.map_or(left, |t| t.min(left)));
    o.connect_timeout = c(o.connect_timeout);
    o.first_byte_timeout = c(o.first_byte_timeout);
    o.between_bytes_timeout = c(o.between_bytes_timeout);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(list: &[&str]) -> OutboundPolicy {
        OutboundPolicy {
            allow: list
                .iter()
                .map(|p| HostPattern::parse(p).unwrap())
                .collect(),
            ..OutboundPolicy::default()
        }
    }

    #[test]
    fn empty_list_denies_everything() {
        assert!(!OutboundPolicy::default().allows("example.com", 80));
    }

    #[test]
    fn host_port_and_wildcards_match_as_documented() {
        let p = policy(&["127.0.0.1:8080", "*.example.com", "API.test", "[::1]:9"]);
        assert!(p.allows("127.0.0.1", 8080));
        assert!(!p.allows("127.0.0.1", 8081));
        assert!(p.allows("a.example.com", 443));
        assert!(p.allows("a.b.example.com", 80));
        assert!(!p.allows("example.com", 80));
        assert!(!p.allows("badexample.com", 80));
        assert!(p.allows("api.test", 1));
        assert!(p.allows("[::1]", 9));
        assert!(!p.allows("[::1]", 10));
        assert!(policy(&["*"]).allows("anything", 1));
    }

    #[test]
    fn bad_patterns_say_why() {
        for (s, why) in [
            ("", "empty"),
            ("http://x", "no scheme"),
            ("x:0", "1-65535"),
            ("x:http", "1-65535"),
            ("a*.b", "first label"),
            ("::1", "brackets"),
        ] {
            let e = HostPattern::parse(s).unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
    }
}
