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
    /// wasmbox RSS right after start, nothing compiled yet.
    pub(crate) rss_start: u64,
    /// First invocation of each function, compiling it (client latency, ns).
    pub(crate) first_cold: Histogram<u64>,
    /// wasmbox (RSS, PSS) once every function has run once and it is idle.
    pub(crate) loaded: (u64, u64),
    /// After a restart with the AOT cache filled by the first run: first
    /// invocations load compiled code from disk.
    pub(crate) first_cached: Histogram<u64>,
    pub(crate) loaded_cached: (u64, u64),
    /// One `wasmtime serve` process per function: how many were measured,
    /// and their summed (RSS, PSS) once each has served a request.
    pub(crate) per_process: Option<(usize, u64, u64)>,
    pub(crate) per_process_skip: Option<String>,
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
        let req = hyper::Request::get(format!("/fn{i:04}?arg=tenant{i}"))
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
            bail!("fn{i:04}: {status} {}", String::from_utf8_lossy(&body));
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
        std::fs::write(dir.path().join(format!("fn{i:04}.wasm")), wasm)?;
    }
    let cache_arg = cache.path().to_string_lossy().to_string();
    let args = ["--cache-dir", cache_arg.as_str()];
    bar.set_length(2 * n as u64);

    let server = ServerProc::start(dir.path(), &args, "/-/live")?;
    let (rss_start, _) = memory(server.pid())?;
    let first_cold = rt.block_on(first_invocations(server.port, n, bar))?;
    let loaded = memory(server.pid())?;
    drop(server);

    let server = ServerProc::start(dir.path(), &args, "/-/live")?;
    let first_cached = rt.block_on(first_invocations(server.port, n, bar))?;
    let loaded_cached = memory(server.pid())?;
    drop(server);

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
        rss_start,
        first_cold,
        loaded,
        first_cached,
        loaded_cached,
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
    println!(
        "compiling: first invocation p50 {:.0} µs p99 {:.0} µs; idle RSS {:.1} MiB",
        q(&d.first_cold, 0.5),
        q(&d.first_cold, 0.99),
        mib(d.loaded.0)
    );
    println!(
        "from the AOT cache: first invocation p50 {:.0} µs p99 {:.0} µs; idle RSS {:.1} MiB",
        q(&d.first_cached, 0.5),
        q(&d.first_cached, 0.99),
        mib(d.loaded_cached.0)
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
