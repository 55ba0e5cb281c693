//! Density: N tenants' functions in one wasmbox versus one process per
//! function. The N functions are copies of the bundled `echo` guest (Rust,
//! std) made distinct by a custom section naming the tenant, so each is
//! compiled on its own, as N different tenants' modules would be. The same
//! for wasi:http components: density_component.rs.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use indicatif::ProgressBar;

use crate::load::phase_ns;
use crate::peers::{memory, WasmtimeServe};
use crate::{repo_root, ServerProc};

pub(crate) struct Density {
    pub(crate) functions: usize,
    pub(crate) module_bytes: usize,
    /// wasmbox's default `--max-loaded-functions` (from `wasmbox serve --help`).
    pub(crate) max_loaded_default: usize,
    /// wasmbox RSS right after start with nothing to load: [`rss_empty`].
    pub(crate) rss_start: u64,
    /// First boot, defaults: every function compiled on its first request.
    pub(crate) cold: Pass,
    /// After a restart, defaults (LRU at `max_loaded_default`): compiled
    /// code loaded from the AOT cache the first boot filled.
    pub(crate) cached: Pass,
    /// After a restart with `--max-loaded-functions N`: all stay loaded.
    pub(crate) all_loaded: Pass,
    /// One `wasmtime serve` process per function: how many were measured,
    /// and their summed (RSS, PSS) once each has served a request.
    pub(crate) per_process: Option<(usize, u64, u64)>,
    pub(crate) per_process_skip: Option<String>,
}

/// One pass over every function, each invoked once in turn.
pub(crate) struct Pass {
    /// Each first invocation's client latency, ns.
    pub(crate) first: Histogram<u64>,
    /// Each first invocation, in the order made.
    pub(crate) calls: Vec<FirstCall>,
    /// The server's (RSS, PSS) once idle after the pass.
    pub(crate) mem: (u64, u64),
    /// The server's open file descriptors then.
    pub(crate) fds: usize,
}

/// One first invocation: where its time went, ns.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FirstCall {
    /// As the client saw it.
    pub(crate) client: u64,
    /// Server-Timing `total`: from its arrival in the server to its outcome.
    pub(crate) server: u64,
    /// Server-Timing `load`: finding the function (loading it when it was
    /// not loaded) and its manifest.
    pub(crate) load: u64,
    /// Server-Timing `queue` + `isolation`: waiting for a worker, and
    /// applying the CPU quota.
    pub(crate) start: u64,
    /// Server-Timing `instantiate`.
    pub(crate) instantiate: u64,
    /// Server-Timing `execute`.
    pub(crate) execute: u64,
}

impl FirstCall {
    /// Its server-side phases, in words, each duration (ns) written by
    /// `fmt`, and the server's time outside them.
    pub(crate) fn phases(&self, fmt: impl Fn(u64) -> String) -> String {
        let named = self.load + self.start + self.instantiate + self.execute;
        format!(
            "load {}, queue and isolation {}, instantiate {}, execute {}, outside these {}",
            fmt(self.load),
            fmt(self.start),
            fmt(self.instantiate),
            fmt(self.execute),
            fmt(self.server.saturating_sub(named))
        )
    }
}

impl Pass {
    /// The slowest `1 - q` of the first invocations (by client latency; at
    /// least one), each phase's median over them: what the `q` tail is
    /// made of.
    pub(crate) fn tail(&self, q: f64) -> (usize, FirstCall) {
        let order = self.slowest_first();
        let k = ((order.len() as f64 * (1.0 - q)).round() as usize).max(1);
        let tail: Vec<&FirstCall> = order.iter().take(k).map(|&i| &self.calls[i]).collect();
        let median = |f: fn(&FirstCall) -> u64| {
            let mut v: Vec<u64> = tail.iter().map(|c| f(c)).collect();
            v.sort_unstable();
            v.get(v.len() / 2).copied().unwrap_or(0)
        };
        let m = FirstCall {
            client: median(|c| c.client),
            server: median(|c| c.server),
            load: median(|c| c.load),
            start: median(|c| c.start),
            instantiate: median(|c| c.instantiate),
            execute: median(|c| c.execute),
        };
        (tail.len(), m)
    }

    /// Where in the pass its `k` slowest first invocations were made (0:
    /// the first request after the server started), slowest first: whether
    /// the tail is the first calls after a restart or spread over the pass.
    pub(crate) fn slowest_positions(&self, k: usize) -> Vec<usize> {
        self.slowest_first().into_iter().take(k).collect()
    }

    /// The calls' positions, by client latency, slowest first.
    fn slowest_first(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.calls.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(self.calls[i].client));
        order
    }
}

/// What a density run registers N distinct copies of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `functions/echo.wasm`, a preview-1 command module: `GET
    /// /fnNNNNN?arg=tenantN` answers `tenantN\n`.
    Module,
    /// `functions/hellohttp.wasm`, a wasi:http handler component: `GET
    /// /httpNNNNN` answers `Hello from wasmbox!\n`.
    Component,
}

impl Kind {
    /// The file copied, under the repository root.
    pub(crate) fn source(self) -> &'static str {
        match self {
            Kind::Module => "functions/echo.wasm",
            Kind::Component => "functions/hellohttp.wasm",
        }
    }

    /// The `i`th copy's function name (its file is `<name>.wasm`).
    fn name(self, i: usize) -> String {
        match self {
            Kind::Module => format!("fn{i:05}"),
            Kind::Component => format!("http{i:05}"),
        }
    }

    /// The `i`th copy's request path and the body it must answer.
    fn request(self, i: usize) -> (String, Vec<u8>) {
        match self {
            Kind::Module => (
                format!("/{}?arg=tenant{i}", self.name(i)),
                format!("tenant{i}\n").into_bytes(),
            ),
            Kind::Component => (
                format!("/{}", self.name(i)),
                b"Hello from wasmbox!\n".to_vec(),
            ),
        }
    }
}

/// Writes `n` distinct copies of `kind`'s file into `dir` (a custom section
/// naming the tenant appended to each); returns the original's size.
pub(crate) fn write_copies(kind: Kind, n: usize, dir: &Path) -> anyhow::Result<usize> {
    let wasm = std::fs::read(repo_root().join(kind.source()))
        .with_context(|| format!("{} (run functions/build.sh)", kind.source()))?;
    for i in 0..n {
        let copy = with_custom_section(&wasm, "tenant", format!("tenant {i}").as_bytes());
        std::fs::write(dir.join(format!("{}.wasm", kind.name(i))), copy)?;
    }
    Ok(wasm.len())
}

/// The server's open file descriptors.
fn open_fds(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// `wasmbox serve`'s default `--max-loaded-functions`, read from its help.
fn max_loaded_default() -> anyhow::Result<usize> {
    let exe = std::env::current_exe()?.with_file_name("wasmbox");
    let out = std::process::Command::new(exe)
        .args(["serve", "--help"])
        .output()?;
    let help = String::from_utf8_lossy(&out.stdout);
    let after = help
        .split("--max-loaded-functions")
        .nth(1)
        .context("no --max-loaded-functions in `wasmbox serve --help`")?;
    let default = after
        .split("[default: ")
        .nth(1)
        .and_then(|t| t.split(']').next())
        .context("no default for --max-loaded-functions")?;
    Ok(default.trim().parse()?)
}

/// Appends a custom section `name` holding `payload` to a wasm binary.
fn with_custom_section(wasm: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    fn leb(mut v: usize, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    let mut body = Vec::new();
    leb(name.len(), &mut body);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut out = wasm.to_vec();
    out.push(0);
    leb(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

/// Invokes every function once, in order, on one keep-alive connection;
/// returns each first invocation's latency, and each call's.
async fn first_invocations(
    port: u16,
    kind: Kind,
    n: usize,
    bar: &ProgressBar,
) -> anyhow::Result<(Histogram<u64>, Vec<FirstCall>)> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut h = Histogram::<u64>::new(3)?;
    let mut calls = Vec::with_capacity(n);
    for i in 0..n {
        let (path, expect) = kind.request(i);
        let req = hyper::Request::get(path)
            .header("host", "bench")
            .header("cpu_quota", 1000)
            .header("Memory-Request", 64)
            .body(Empty::<Bytes>::new())?;
        send.ready().await?;
        let t = Instant::now();
        let resp = send.send_request(req).await?;
        let status = resp.status();
        let timing = resp
            .headers()
            .get("server-timing")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = resp.into_body().collect().await?.to_bytes();
        let client = t.elapsed().as_nanos().max(1) as u64;
        h.record(client)?;
        let phase = |p| phase_ns(&timing, p).unwrap_or(0);
        calls.push(FirstCall {
            client,
            server: phase("total"),
            load: phase("load"),
            start: phase("queue") + phase("isolation"),
            instantiate: phase("instantiate"),
            execute: phase("execute"),
        });
        if status != 200 || body.as_ref() != expect.as_slice() {
            bail!(
                "{}: {status} {}",
                kind.name(i),
                String::from_utf8_lossy(&body)
            );
        }
        bar.inc(1);
    }
    Ok((h, calls))
}

/// One server run over `dir` (`wasmbox serve --functions dir args..`):
/// every one of the `n` copies of `kind` invoked once in turn, then the
/// server's memory and descriptors.
pub(crate) fn pass(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    args: &[&str],
    kind: Kind,
    n: usize,
    bar: &ProgressBar,
) -> anyhow::Result<Pass> {
    let server = ServerProc::start(dir, args, "/-/live")?;
    let (first, calls) = rt.block_on(first_invocations(server.port, kind, n, bar))?;
    Ok(Pass {
        first,
        calls,
        mem: memory(server.pid())?,
        fds: open_fds(server.pid())?,
    })
}

/// RSS of `wasmbox serve args..` right after start over an empty functions
/// directory: the server with nothing loaded and nothing compiling, the
/// base that RSS per function is counted from. (Over the real directory
/// the server starts compiling its files as soon as it is up, prewarming,
/// so its RSS right after start already holds some of them and the
/// compiler's working memory.)
pub(crate) fn rss_empty(args: &[&str]) -> anyhow::Result<u64> {
    let empty = tempfile::tempdir()?;
    let server = ServerProc::start(empty.path(), args, "/-/live")?;
    Ok(memory(server.pid())?.0)
}

/// `--cache-max-mb` for `n` functions: 300 KiB each (a compiled `echo` is
/// about 220 KiB), at least the default 768 MB, which holds about 3,500.
pub(crate) fn cache_mb_for(n: usize) -> u64 {
    (n as u64 * 300 / 1024 + 64).max(768)
}

/// The server flags of a density run over `n` functions.
pub(crate) struct ServerArgs {
    cache: String,
    cache_mb: String,
    n: String,
}

impl ServerArgs {
    pub(crate) fn new(cache: &Path, n: usize) -> Self {
        ServerArgs {
            cache: cache.to_string_lossy().into_owned(),
            cache_mb: cache_mb_for(n).to_string(),
            n: n.to_string(),
        }
    }

    /// The defaults, with the AOT cache in `cache` sized for `n`.
    pub(crate) fn defaults(&self) -> [&str; 4] {
        ["--cache-dir", &self.cache, "--cache-max-mb", &self.cache_mb]
    }

    /// The same, with all `n` functions kept loaded.
    pub(crate) fn all_loaded(&self) -> [&str; 6] {
        let [a, b, c, d] = self.defaults();
        [a, b, c, d, "--max-loaded-functions", &self.n]
    }
}

pub(crate) fn run(
    rt: &tokio::runtime::Runtime,
    n: usize,
    processes: usize,
    wasmtime: Option<&Path>,
    bar: &ProgressBar,
) -> anyhow::Result<Density> {
    let dir = tempfile::tempdir()?;
    let cache = tempfile::tempdir()?;
    let module_bytes = write_copies(Kind::Module, n, dir.path())?;
    let args = ServerArgs::new(cache.path(), n);
    let (defaults, all) = (args.defaults(), args.all_loaded());
    bar.set_length(3 * n as u64);
    let pass = |args: &[&str]| pass(rt, dir.path(), args, Kind::Module, n, bar);
    let rss_start = rss_empty(&defaults)?;
    let cold = pass(&defaults)?;
    let cached = pass(&defaults)?;
    let all_loaded = pass(&all)?;

    let (mut per_process, mut per_process_skip) = (None, None);
    match wasmtime {
        // None measured: no per-process figures (they would divide by 0).
        Some(_) if processes == 0 => {
            per_process_skip = Some("none asked for (--processes 0)".into())
        }
        Some(w) => {
            let mut procs = Vec::new();
            for _ in 0..processes {
                procs.push(WasmtimeServe::start(w, &[])?);
            }
            let (mut rss, mut pss) = (0, 0);
            for p in &procs {
                let (r, s) = memory(p.pid())?;
                rss += r;
                pss += s;
            }
            per_process = Some((processes, rss, pss));
        }
        None => per_process_skip = Some("the wasmtime CLI is not installed".into()),
    }
    Ok(Density {
        functions: n,
        module_bytes,
        max_loaded_default: max_loaded_default()?,
        rss_start,
        cold,
        cached,
        all_loaded,
        per_process,
        per_process_skip,
    })
}

/// `wasmbox-bench density`: runs [`run`] with `n` echo modules (skipped
/// when 0) and [`crate::density_component::run`] with `components` of each
/// kind (skipped when 0), and prints the figures.
pub(crate) fn print(n: usize, processes: usize, components: usize) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    if n > 0 {
        print_modules(&rt, n, processes)?;
    }
    if components > 0 {
        let d = crate::density_component::run(&rt, components, &ProgressBar::hidden())?;
        for line in crate::density_component::lines(&d) {
            println!("{line}");
        }
    }
    Ok(())
}

fn print_modules(rt: &tokio::runtime::Runtime, n: usize, processes: usize) -> anyhow::Result<()> {
    let wasmtime = crate::peers::wasmtime_cli().ok();
    let d = run(
        rt,
        n,
        processes,
        wasmtime.as_ref().map(|(p, _)| p.as_path()),
        &ProgressBar::hidden(),
    )?;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1e3;
    println!(
        "{n} functions: RSS at start, empty directory {:.1} MiB",
        mib(d.rss_start)
    );
    for (what, p) in [
        ("compiling, defaults", &d.cold),
        ("from the AOT cache, defaults (LRU)", &d.cached),
        ("from the AOT cache, all loaded", &d.all_loaded),
    ] {
        println!(
            "{what}: first invocation p50 {:.0} µs p99 {:.0} µs; idle RSS {:.1} MiB; {} fds",
            q(&p.first, 0.5),
            q(&p.first, 0.99),
            mib(p.mem.0),
            p.fds
        );
        let (k, t) = p.tail(0.99);
        let us = |ns: u64| format!("{:.0} µs", ns as f64 / 1e3);
        println!(
            "  its slowest {k}, medians: client {}, server {}: {}",
            us(t.client),
            us(t.server),
            t.phases(us)
        );
        println!(
            "  made at positions {:?} of the pass (0: its first request)",
            p.slowest_positions(k)
        );
    }
    println!(
        "idle RSS per loaded function, all loaded: {:.0} KiB",
        d.all_loaded.mem.0.saturating_sub(d.rss_start) as f64 / 1024.0 / n as f64
    );
    if let Some((k, rss, pss)) = d.per_process {
        println!(
            "wasmtime serve per function: RSS {:.1} MiB, PSS {:.1} MiB",
            mib(rss) / k as f64,
            mib(pss) / k as f64
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_tail_is_its_slowest_calls_phase_by_phase() {
        let mut first = Histogram::new(3).unwrap();
        // Made out of order, the slowest by client latency not the last.
        let calls: Vec<FirstCall> = (1..=300u64)
            .map(|i| (i * 7919) % 300 + 1)
            .map(|i| FirstCall {
                client: i * 1000,
                server: i * 900,
                load: (301 - i) * 10,
                ..FirstCall::default()
            })
            .collect();
        for c in &calls {
            first.record(c.client).unwrap();
        }
        let pass = Pass {
            first,
            calls,
            mem: (0, 0),
            fds: 0,
        };
        let (k, t) = pass.tail(0.99);
        assert_eq!(k, 3);
        // The three slowest are 300, 299, 298: the median is 299's.
        assert_eq!((t.client, t.server, t.load), (299_000, 269_100, 20));
        assert!(
            t.phases(|ns| ns.to_string())
                .ends_with("outside these 269080"),
            "{}",
            t.phases(|ns| ns.to_string())
        );
        assert_eq!(pass.tail(1.0).0, 1, "at least one call");
        // Where the calls of 300, 299 and 298 µs were made.
        let at = |us: u64| pass.calls.iter().position(|c| c.client == us * 1000);
        let expected: Vec<usize> = [300, 299, 298].map(|us| at(us).unwrap()).to_vec();
        assert_eq!(pass.slowest_positions(3), expected);
    }

    #[test]
    fn custom_section_is_appended_after_the_binary() {
        // A component's preamble (layer 1): the section goes after it as is.
        let component = b"\0asm\x0d\0\x01\0";
        let out = with_custom_section(component, "tenant", b"tenant 7");
        assert_eq!(&out[..8], component);
        // id 0, size 15 = 1 (name length) + 6 (name) + 8 (payload).
        assert_eq!(out[8], 0);
        assert_eq!(out[9] as usize, 1 + 6 + 8);
        assert_eq!(out[10], 6);
        assert_eq!(&out[11..17], b"tenant");
        assert_eq!(&out[17..], b"tenant 7");
        assert_eq!(out.len(), 8 + 2 + 15);
    }

    #[test]
    fn section_size_is_leb128() {
        let out = with_custom_section(b"", "n", &[7; 200]);
        // 1 + 1 + 200 = 202 = 0xca: two LEB128 bytes (0xca, 0x01).
        assert_eq!(&out[..4], &[0, 0xca, 0x01, 1]);
    }

    #[test]
    fn each_kind_has_distinct_names_and_its_answer() {
        assert_eq!(
            Kind::Module.request(7),
            ("/fn00007?arg=tenant7".to_string(), b"tenant7\n".to_vec())
        );
        assert_eq!(
            Kind::Component.request(7),
            ("/http00007".to_string(), b"Hello from wasmbox!\n".to_vec())
        );
    }
}
