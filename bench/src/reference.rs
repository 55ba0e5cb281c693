//! The reference prototype's per-request pipeline, RE-ENACTED here in Rust
//! with the same wasmtime version as wasmbox (the report labels it so; the
//! Go prototype itself is not run). Per request, as the reference does:
//! 1. a new OS thread (the reference locks its goroutine to one);
//! 2. `mkdir` a fresh cgroup, write the quota, move the thread in (cgroup v1
//!    cpu here: this machine's cgroup2 has no cpu controller);
//! 3. a new `Engine`, the precompiled module loaded from disk, a new Linker
//!    with WASI p1, stdin and stdout through temp files, a linear-memory
//!    limit from `Memory-Request`, `_start`;
//! 4. move the thread back, `rmdir` the cgroup, answer with stdout.
//!
//! The answer carries `Server-Timing: isolation;dur=..., total;dur=...`
//! (cgroup steps 2 + 4; the whole pipeline), so the load generator reads
//! both exactly as it does from wasmbox.

use std::collections::HashMap;
use std::io::{Read, Seek, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use wasmtime::{Config, Engine, Linker, Module, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::{InputFile, OutputFile};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::WasiCtxBuilder;

use crate::isolation::{reference_v1_enter, reference_v1_leave, v1_base};

/// A running re-enactment server; stops when dropped.
pub(crate) struct RefServer {
    pub(crate) port: u16,
    /// Whether the cgroup steps ran (false where cgroup v1 is not writable).
    pub(crate) cgroups: bool,
    _runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

struct Shared {
    /// name -> the precompiled module's file.
    modules: HashMap<String, PathBuf>,
    cgroup_base: Option<PathBuf>,
    next: AtomicU64,
}

struct State {
    wasi: WasiP1Ctx,
    limits: StoreLimits,
}

impl RefServer {
    /// Precompiles each `(name, .wasm/.wat path)` for a default-config
    /// engine (as the reference's `.cwasm` files are) and starts serving
    /// `GET /name?arg=..` on a loopback port.
    pub(crate) fn start(functions: &[(&str, PathBuf)]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let engine = Engine::new(&Config::new()).map_err(|e| anyhow!("{e}"))?;
        let mut modules = HashMap::new();
        for (name, path) in functions {
            // precompile_module takes the text format too (wasmtime's `wat` feature).
            let wasm = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
            let code = engine
                .precompile_module(&wasm)
                .map_err(|e| anyhow!("precompile {}: {e}", path.display()))?;
            let cwasm = dir.path().join(format!("{name}.cwasm"));
            std::fs::write(&cwasm, code)?;
            modules.insert(name.to_string(), cwasm);
        }
        // wasmtime-wasi's own tokio runtime must not be born inside a
        // request's cgroup (its threads would keep the rmdir busy).
        wasmbox_runtime::executor::warm_ambient_runtime();
        let cgroup_base = v1_base();
        let shared = Arc::new(Shared {
            modules,
            cgroup_base: cgroup_base.clone(),
            next: AtomicU64::new(0),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind(SocketAddr::from((
            [127, 0, 0, 1],
            0,
        ))))?;
        let port = listener.local_addr()?.port();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(shared, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(RefServer {
            port,
            cgroups: cgroup_base.is_some(),
            _runtime: runtime,
            _dir: dir,
        })
    }
}

async fn handle(shared: Arc<Shared>, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let header = |n: &str, default: u64| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(default)
    };
    let (quota, memory_mb) = (header("cpu_quota", 1000), header("memory-request", 200));
    let name = req.uri().path().trim_start_matches('/').to_string();
    let mut argv = vec![name.clone()];
    if let Some(q) = req.uri().query() {
        argv.extend(
            form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| k == "arg")
                .map(|(_, v)| v.into_owned()),
        );
    }
    let Some(cwasm) = shared.modules.get(&name).cloned() else {
        return reply(404, Bytes::from("no such function"), None);
    };
    // One OS thread per request, as the reference pins each to a thread.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(pipeline(&shared, &cwasm, argv, quota, memory_mb));
    });
    match rx.await {
        Ok(Ok((stdout, timing))) => reply(200, stdout.into(), Some(timing)),
        Ok(Err(e)) => reply(500, Bytes::from(format!("{e:#}")), None),
        Err(_) => reply(500, Bytes::from("pipeline thread died"), None),
    }
}

fn reply(status: u16, body: Bytes, timing: Option<String>) -> Response<Full<Bytes>> {
    let mut r = Response::builder().status(status);
    if let Some(t) = timing {
        r = r.header("server-timing", t);
    }
    r.body(Full::new(body)).expect("valid response")
}

/// Steps 2-4 on the calling (fresh) thread. Returns stdout and the
/// Server-Timing value.
fn pipeline(
    shared: &Shared,
    cwasm: &Path,
    argv: Vec<String>,
    quota: u64,
    memory_mb: u64,
) -> anyhow::Result<(Vec<u8>, String)> {
    let start = Instant::now();
    let tid = wasmbox_isolation::current_tid().to_string();
    let n = shared.next.fetch_add(1, Ordering::Relaxed);
    let cgroup = shared.cgroup_base.as_ref().map(|base| {
        let name = format!("wasmbox-bench-reenact-{}-{n}", std::process::id());
        (base, reference_v1_enter(base, &name, &tid, quota * 100))
    });
    let entered = start.elapsed();

    let run = run_module(cwasm, argv, memory_mb);

    let t = Instant::now();
    if let Some((base, dir)) = &cgroup {
        reference_v1_leave(base, &tid, dir);
    }
    let isolation = entered + t.elapsed();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let timing = format!(
        "isolation;dur={:.3}, total;dur={:.3}",
        ms(isolation),
        ms(start.elapsed())
    );
    Ok((run?, timing))
}

fn run_module(cwasm: &Path, argv: Vec<String>, memory_mb: u64) -> anyhow::Result<Vec<u8>> {
    let err = |e: wasmtime::Error| anyhow!("{e:?}");
    let engine = Engine::new(&Config::new()).map_err(err)?;
    // SAFETY: the file was written by `Engine::precompile_module` in
    // `RefServer::start`, for an engine with this same default
    // configuration, into a private temp dir.
    #[allow(unsafe_code)]
    let module = unsafe { Module::deserialize_file(&engine, cwasm) }.map_err(err)?;
    // The request body (empty in the benchmark) goes through a temp file.
    let mut stdin = tempfile::tempfile()?;
    stdin.write_all(b"")?;
    stdin.rewind()?;
    let mut stdout = tempfile::tempfile()?;
    let wasi = WasiCtxBuilder::new()
        .args(&argv)
        .stdin(InputFile::new(stdin.try_clone()?))
        .stdout(OutputFile::new(stdout.try_clone()?))
        .build_p1();
    let limits = StoreLimitsBuilder::new()
        .memory_size((memory_mb as usize) << 20)
        .build();
    let mut store = Store::new(&engine, State { wasi, limits });
    store.limiter(|s| &mut s.limits);
    let mut linker: Linker<State> = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s| &mut s.wasi).map_err(err)?;
    let instance = linker.instantiate(&mut store, &module).map_err(err)?;
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .map_err(err)?;
    if let Err(e) = start.call(&mut store, ()) {
        match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(wasmtime_wasi::I32Exit(0)) => {}
            _ => return Err(err(e)),
        }
    }
    drop(store);
    let mut out = Vec::new();
    stdout.rewind()?;
    stdout.read_to_end(&mut out)?;
    Ok(out)
}
