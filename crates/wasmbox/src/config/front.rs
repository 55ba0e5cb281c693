//! The serving port's front door settings: how many connections, how long
//! a client may take to send a request or to read a response, HTTP/2, and
//! how many request and response bytes may wait in memory.

use std::time::Duration;

use clap::Args;

use super::duration::parse_duration;

/// `--header-read-timeout` default.
pub const DEFAULT_HEADER_READ_TIMEOUT: &str = "10s";
/// `--idle-timeout` default (nginx's keep-alive default is 75 s).
pub const DEFAULT_IDLE_TIMEOUT: &str = "75s";
/// `--body-timeout` default.
pub const DEFAULT_BODY_TIMEOUT: &str = "30s";
/// `--write-timeout` default.
pub const DEFAULT_WRITE_TIMEOUT: &str = "30s";
/// `--http2-max-streams` default.
pub const DEFAULT_HTTP2_MAX_STREAMS: u32 = 32;
/// Descriptors kept out of the connection limit for everything else the
/// server opens (cache entries being written, the prewarm's reads, probes,
/// the admin port), on top of two per worker (its slot cgroup's files) and
/// one per loaded function (see [`descriptors_besides_connections`]).
pub const RESERVED_DESCRIPTORS: u64 = 256;

/// Descriptors the server may hold besides its connections: the reserve,
/// two per worker, and one per loaded function (wasmtime keeps a loaded
/// module's code mapped from its AOT cache file, or its memory's
/// copy-on-write image in a memfd, open for as long as it is loaded).
pub fn descriptors_besides_connections(workers: u32, max_loaded: u64) -> u64 {
    RESERVED_DESCRIPTORS + 2 * u64::from(workers) + max_loaded
}

/// The most functions that can stay loaded under the open-file limit
/// `nofile` beside `workers`, the reserve and `connections` (at least 1).
pub fn loaded_within(nofile: u64, workers: u32, connections: u64) -> u64 {
    nofile
        .saturating_sub(descriptors_besides_connections(workers, connections))
        .max(1)
}
/// Fewest connections the derived limit allows.
pub const MIN_CONNECTIONS: usize = 64;
/// Most connections the derived limit allows (each costs a few KiB of
/// buffers even when idle).
pub const MAX_DERIVED_CONNECTIONS: usize = 16384;
/// Default request-and-response byte budget as a fraction of the memory
/// capacity admission works with (capped at 1 GiB, at least one largest
/// body).
pub const BODY_BUDGET_SHARE: f64 = 0.25;
/// Cap of the derived body budget, in MiB.
pub const MAX_DERIVED_BODY_BUDGET_MB: u64 = 1024;

/// Front-door flags of `serve`.
#[derive(Debug, Clone, Args)]
pub struct FrontArgs {
    /// Most open client connections on the serving port; past it, new ones
    /// wait in the kernel's backlog [default: the open-file limit minus
    /// descriptors kept for workers and files, at least 64].
    #[arg(long, env = "WASMBOX_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// Longest time a client may take to send a request's headers.
    #[arg(long, env = "WASMBOX_HEADER_READ_TIMEOUT", default_value = DEFAULT_HEADER_READ_TIMEOUT, value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// Longest a connection may stay open with no request in progress and
    /// nothing read or written (keep-alive idle).
    #[arg(long, env = "WASMBOX_IDLE_TIMEOUT", default_value = DEFAULT_IDLE_TIMEOUT, value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Longest time a client may take to send a request body (408 past it).
    #[arg(long, env = "WASMBOX_BODY_TIMEOUT", default_value = DEFAULT_BODY_TIMEOUT, value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// Longest a response may wait for a client that does not read it;
    /// then the connection is closed.
    #[arg(long, env = "WASMBOX_WRITE_TIMEOUT", default_value = DEFAULT_WRITE_TIMEOUT, value_parser = parse_duration)]
    pub write_timeout: Duration,
    /// Also accept HTTP/2 (prior knowledge, h2c) on the serving port.
    #[arg(long, env = "WASMBOX_HTTP2")]
    pub http2: bool,
    /// With --http2: most concurrent streams per connection.
    #[arg(long, env = "WASMBOX_HTTP2_MAX_STREAMS", default_value_t = DEFAULT_HTTP2_MAX_STREAMS, value_parser = clap::value_parser!(u32).range(1..))]
    pub http2_max_streams: u32,
    /// Most request- and response-body bytes held in memory at once, in MiB;
    /// a request whose body does not fit waits (up to --queue-timeout, then
    /// 503) [default: a quarter of the admission memory capacity, at most
    /// 1024, at least --max-body-bytes].
    #[arg(long, env = "WASMBOX_MAX_BUFFERED_MB", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_buffered_mb: Option<u64>,
}

/// The resolved front-door settings.
#[derive(Debug, Clone)]
pub struct FrontConfig {
    /// Most open connections on the serving port.
    pub max_connections: usize,
    /// Where `max_connections` came from (for the startup log and
    /// --check-config).
    pub max_connections_from: String,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
    pub write_timeout: Duration,
    /// HTTP/2 streams per connection, when HTTP/2 is on.
    pub http2_max_streams: Option<u32>,
    /// Set by the flag; else derived from capacity at startup.
    pub max_buffered_mb: Option<u64>,
}

impl FrontArgs {
    /// Resolves the connection limit against the open-file limit (`nofile`:
    /// the hard limit, to which the server raises its soft limit at start),
    /// `workers` and the most functions kept loaded.
    pub fn resolve(&self, nofile: Option<u64>, workers: u32, max_loaded: u64) -> FrontConfig {
        let (max_connections, from) = match (self.max_connections, nofile) {
            (Some(n), _) => (n as usize, "--max-connections".to_string()),
            (None, Some(limit)) => {
                let reserved = descriptors_besides_connections(workers, max_loaded);
                let n = (limit.saturating_sub(reserved) as usize)
                    .clamp(MIN_CONNECTIONS, MAX_DERIVED_CONNECTIONS);
                (n, format!("open-file limit {limit} - {reserved} reserved"))
            }
            (None, None) => (
                MIN_CONNECTIONS * 16,
                "default (open-file limit unknown)".to_string(),
            ),
        };
        FrontConfig {
            max_connections,
            max_connections_from: from,
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            body_timeout: self.body_timeout,
            write_timeout: self.write_timeout,
            http2_max_streams: self.http2.then_some(self.http2_max_streams),
            max_buffered_mb: self.max_buffered_mb,
        }
    }
}

impl FrontConfig {
    /// `--check-config` lines.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "max-connections",
                format!("{} ({})", self.max_connections, self.max_connections_from),
            ),
            (
                "header-read-timeout",
                format!("{:?}", self.header_read_timeout),
            ),
            ("idle-timeout", format!("{:?}", self.idle_timeout)),
            ("body-timeout", format!("{:?}", self.body_timeout)),
            ("write-timeout", format!("{:?}", self.write_timeout)),
            (
                "http2",
                match self.http2_max_streams {
                    Some(n) => format!("on, {n} streams per connection"),
                    None => "off".to_string(),
                },
            ),
            (
                "max-buffered-mb",
                match self.max_buffered_mb {
                    Some(n) => n.to_string(),
                    None => "a quarter of the memory capacity (at startup)".to_string(),
                },
            ),
        ]
    }

    /// The body budget in bytes, given the admission memory capacity.
    pub fn buffered_bytes(&self, capacity_memory_mb: u64, max_body_bytes: usize) -> usize {
        let mb = self.max_buffered_mb.unwrap_or_else(|| {
            ((capacity_memory_mb as f64 * BODY_BUDGET_SHARE) as u64).min(MAX_DERIVED_BODY_BUDGET_MB)
        });
        usize::try_from(mb.saturating_mul(1 << 20))
            .unwrap_or(usize::MAX)
            .max(max_body_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        front: FrontArgs,
    }

    fn args(a: &[&str]) -> FrontArgs {
        T::parse_from(std::iter::once("t").chain(a.iter().copied())).front
    }

    #[test]
    fn connection_limit_follows_the_descriptor_limit() {
        let c = args(&[]).resolve(Some(4096), 256, 512);
        assert_eq!(c.max_connections, 4096 - 256 - 512 - 512);
        assert_eq!(
            args(&[]).resolve(Some(4096), 256, 10).max_connections,
            4096 - 256 - 512 - 10
        );
        // A tiny limit still leaves the minimum.
        assert_eq!(
            args(&[]).resolve(Some(100), 256, 512).max_connections,
            MIN_CONNECTIONS
        );
        assert_eq!(
            args(&[]).resolve(Some(1 << 20), 256, 512).max_connections,
            MAX_DERIVED_CONNECTIONS
        );
        // The flag wins.
        assert_eq!(
            args(&["--max-connections", "7"])
                .resolve(Some(1 << 20), 256, 512)
                .max_connections,
            7
        );
    }

    #[test]
    fn body_budget_is_a_share_of_memory_and_at_least_one_body() {
        let c = args(&[]).resolve(None, 1, 512);
        assert_eq!(c.buffered_bytes(2048, 16 << 20), 512 << 20);
        assert_eq!(c.buffered_bytes(1 << 20, 16 << 20), 1024 << 20);
        assert_eq!(c.buffered_bytes(8, 16 << 20), 16 << 20);
        let c = args(&["--max-buffered-mb", "3"]).resolve(None, 1, 512);
        assert_eq!(c.buffered_bytes(2048, 1), 3 << 20);
        assert!(c.http2_max_streams.is_none());
        assert_eq!(
            args(&["--http2"]).resolve(None, 1, 512).http2_max_streams,
            Some(DEFAULT_HTTP2_MAX_STREAMS)
        );
    }
}
