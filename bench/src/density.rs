//! Density: N tenants' functions in one wasmbox versus one process per
//! function. The N functions are copies of the bundled `echo` guest (Rust,
//! std) made distinct by a custom section naming the tenant, so each is
//! compiled on its own, as N different tenants' modules would be.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use indicatif::ProgressBar;

use crate::peers::{memory, WasmtimeServe};
use crate::{repo_root, ServerProc};

pub(crate) struct Density {
    pub(crate) functions: usize,
    pub(crate) module_bytes: usize,
    /// wasmbox's default `--max-loaded-functions` (from `wasmbox serve --help`).
    pub(crate) max_loaded_default: usize,
    /// wasmbox RSS right after start, nothing compiled yet.
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
    /// The server's (RSS, PSS) once idle after the pass.
    pub(crate) mem: (u64, u64),
    /// The server's open file descriptors then.
    pub(crate) fds: usize,
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
/// returns each first invocation's latency.
async fn first_invocations(
    port: u16,
    n: usize,
    bar: &ProgressBar,
) -> anyhow::Result<Histogram<u64>> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut h = Histogram::<u64>::new(3)?;
    for i in 0..n {
        let req = hyper::Request::get(format!("/fn{i:05}?arg=tenant{i}"))
            .header("host", "bench")
            .header("cpu_quota", 1000)
            .header("Memory-Request", 64)
            .body(Empty::<Bytes>::new())?;
        send.ready().await?;
        let t = Instant::now();
        let resp = send.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        h.record(t.elapsed().as_nanos().max(1) as u64)?;
        if status != 200 || body.as_ref() != format!("tenant{i}\n").as_bytes() {
            bail!("fn{i:05}: {status} {}", String::from_utf8_lossy(&body));
        }
        bar.inc(1);
    }
    Ok(h)
}

pub(crate) fn run(
    rt: &tokio::runtime::Runtime,
    n: usize,
    processes: usize,
    wasmtime: Option<&Path>,
    bar: &ProgressBar,
) -> anyhow::Result<Density> {
    let echo = std::fs::read(repo_root().join("functions/echo.wasm"))
        .context("functions/echo.wasm (run functions/build.sh)")?;
    let dir = tempfile::tempdir()?;
    let cache = tempfile::tempdir()?;
    for i in 0..n {
        let wasm = with_custom_section(&echo, "tenant", format!("tenant {i}").as_bytes());
        std::fs::write(dir.path().join(format!("fn{i:05}.wasm")), wasm)?;
    }
    let cache_arg = cache.path().to_string_lossy().to_string();
    let n_arg = n.to_string();
    let defaults = ["--cache-dir", cache_arg.as_str()];
    let all = [
        "--cache-dir",
        cache_arg.as_str(),
        "--max-loaded-functions",
        n_arg.as_str(),
    ];
    bar.set_length(3 * n as u64);
    let pass = |args: &[&str], rss_start: Option<&mut u64>| -> anyhow::Result<Pass> {
        let server = ServerProc::start(dir.path(), args, "/-/live")?;
        if let Some(r) = rss_start {
            *r = memory(server.pid())?.0;
        }
        let first = rt.block_on(first_invocations(server.port, n, bar))?;
        Ok(Pass {
            first,
            mem: memory(server.pid())?,
            fds: open_fds(server.pid())?,
        })
    };
    let mut rss_start = 0;
    let cold = pass(&defaults, Some(&mut rss_start))?;
    let cached = pass(&defaults, None)?;
    let all_loaded = pass(&all, None)?;

    let (mut per_process, mut per_process_skip) = (None, None);
    match wasmtime {
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
        module_bytes: echo.len(),
        max_loaded_default: max_loaded_default()?,
        rss_start,
        cold,
        cached,
        all_loaded,
        per_process,
        per_process_skip,
    })
}

/// `wasmbox-bench density`: runs [`run`] and prints the figures.
pub(crate) fn print(n: usize, processes: usize) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let wasmtime = crate::peers::wasmtime_cli().ok();
    let d = run(
        &rt,
        n,
        processes,
        wasmtime.as_ref().map(|(p, _)| p.as_path()),
        &ProgressBar::hidden(),
    )?;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1e3;
    println!("{n} functions: RSS at start {:.1} MiB", mib(d.rss_start));
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
    }
    if let Some((k, rss, pss)) = d.per_process {
        println!(
            "wasmtime serve per function: RSS {:.1} MiB, PSS {:.1} MiB",
            mib(rss) / k as f64,
            mib(pss) / k as f64
        );
    }
    Ok(())
}
