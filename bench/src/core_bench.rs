//! `wasmbox-bench core`: the core request path with the bundled `hello`
//! function:
//! 1. in-process invocation latency (instantiate + `_start`, one thread);
//! 2. in-process throughput with 1 and 2 threads invoking at once;
//! 3. HTTP over loopback against a `wasmbox serve` child process: latency
//!    and requests/s at concurrency 1 and 16.
//!
//! Results are printed and written as markdown to bench/results/core.md.
//! The in-process helpers are shared with `compare`.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use hdrhistogram::Histogram;
use wasmbox_runtime::sandbox::{self, CancelToken, Stdio as GuestStdio};
use wasmbox_runtime::{EngineConfig, Function, Invocation, WasmEngine};

use crate::{http_load_with, lat, machine, repo_root, InProcess, Lat, ServerProc};

fn invocation() -> Invocation {
    Invocation {
        argv: vec!["hello".into()],
        stdio: GuestStdio::Captured {
            stdin: Bytes::new(),
            stdout_cap: 1 << 20,
            stderr_cap: 1 << 16,
        },
        memory_cap: 64 << 20,
        timeout: Duration::from_secs(10),
        throttle: None,
        env: Vec::new(),
        cpu_budget: None,
    }
}

pub(crate) fn run(quick: bool, out: &Path) -> anyhow::Result<()> {
    let secs = if quick { 1.0 } else { 5.0 };
    let mut report = String::new();
    writeln!(report, "# Core request path benchmark\n")?;
    writeln!(
        report,
        "Function: the bundled `hello` (WAT, writes 20 bytes with `fd_write`). {}\n",
        machine()
    )?;
    writeln!(
        report,
        "Command: `cargo run --release -p wasmbox-bench -- core{}`\n",
        if quick { " --quick" } else { "" }
    )?;

    // 1 + 2: in process, with the server's pool (sharded per thread).
    let hello_path = repo_root().join("functions/hello.wat");
    let InProcess {
        engine,
        function: hello,
        ..
    } = InProcess::load(EngineConfig::default(), &hello_path)?;
    let cancel = CancelToken::default();
    let mut h = Histogram::<u64>::new(3)?;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < deadline {
        let t = Instant::now();
        let o = sandbox::invoke(&engine, &hello, invocation(), &cancel);
        h.record(t.elapsed().as_nanos() as u64)?;
        if o.result.is_err() || &o.stdout[..] != b"Hello from wasmbox!\n" {
            bail!("hello failed: {:?}", o.result);
        }
    }
    let inproc = lat(&h);
    println!(
        "in-process: p50 {:.1} µs, p99 {:.1} µs ({} invocations)",
        inproc.p50_us, inproc.p99_us, inproc.n
    );

    let rates = [1, 2].map(|t| throughput(t, secs, invoke_loop(&engine, &hello)));
    println!(
        "in-process: 1 thread {:.0}/s, 2 threads {:.0}/s",
        rates[0], rates[1]
    );
    // The machine's own ceiling: a pure CPU loop on 1 and 2 threads.
    let cpu = [1, 2].map(|t| throughput(t, secs, cpu_loop()));
    println!("pure CPU loop: 2 threads / 1 = {:.2}x", cpu[1] / cpu[0]);
    let mem = [1, 2].map(|t| throughput(t, secs, memory_loop()));
    println!("memory loop: 2 threads / 1 = {:.2}x", mem[1] / mem[0]);
    // Why the pool's size matters: wasmtime shards a pool of 128 slots or
    // more, one shard per core, and a thread takes slots from its own; a
    // smaller pool has one shard, where two threads take turns with the
    // same slots (each reset then writes memory the other core wrote).
    let small = hello_on_threads(
        EngineConfig {
            max_instances: 16,
            ..Default::default()
        },
        secs,
    )?;
    println!(
        "16-slot pool: 1 thread {:.0}/s, 2 threads {:.0}/s",
        small[0], small[1]
    );
    // Why keep_resident matters: the same with it switched off.
    let cold = hello_on_threads(
        EngineConfig {
            memory_keep_resident: 0,
            table_keep_resident: 0,
            ..Default::default()
        },
        secs,
    )?;
    println!(
        "keep_resident off: 1 thread {:.0}/s, 2 threads {:.0}/s",
        cold[0], cold[1]
    );

    writeln!(report, "## In process (no HTTP)\n")?;
    writeln!(report, "| measure | result | goal |\n|---|---|---|")?;
    writeln!(
        report,
        "| invocation latency p50 | {:.1} µs | <= 20 µs |",
        inproc.p50_us
    )?;
    writeln!(
        report,
        "| invocation latency p99 | {:.1} µs | |",
        inproc.p99_us
    )?;
    writeln!(report, "| throughput, 1 thread | {:.0} /s | |", rates[0])?;
    writeln!(report, "| throughput, 2 threads | {:.0} /s | |", rates[1])?;
    writeln!(
        report,
        "| 2 threads / 1 thread | {:.2}x | >= 1.8x |",
        rates[1] / rates[0]
    )?;
    writeln!(
        report,
        "| machine ceiling: pure CPU loop, 2 threads / 1 thread | {:.2}x | |",
        cpu[1] / cpu[0]
    )?;
    writeln!(
        report,
        "| machine ceiling: memory-bound loop (fill and sum 256 KiB), 2 threads / 1 thread | {:.2}x | |",
        mem[1] / mem[0]
    )?;
    writeln!(
        report,
        "| a 16-slot pool (one shard): 1 thread / 2 threads | {:.0} /s / {:.0} /s ({:.2}x) | |",
        small[0],
        small[1],
        small[1] / small[0]
    )?;
    writeln!(
        report,
        "| keep_resident off: 1 thread / 2 threads | {:.0} /s / {:.0} /s ({:.2}x) | |\n",
        cold[0],
        cold[1],
        cold[1] / cold[0]
    )?;

    // 3: over HTTP against the release binary, with the defaults (CPU
    // isolation auto, admission at the detected capacity) and with both
    // out of the way.
    writeln!(report, "## Over HTTP on loopback\n")?;
    writeln!(
        report,
        "`wasmbox serve` (release build, a separate process) and the load generator (hyper client, \
         HTTP/1.1 keep-alive, one connection per concurrent client) share the machine's 2 cores. \
         Requests carry no resource headers (cpu_quota defaults to 1000).\n"
    )?;
    writeln!(report, "| server settings | concurrency | p50 | p99 | req/s | requests |\n|---|---|---|---|---|---|")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let settings: [(&str, &[&str]); 3] = [
        (
            "defaults (isolation auto = cgroup-v1 here, admission at 2 cores)",
            &[],
        ),
        (
            "cgroup-v1, admission not binding",
            &["--capacity-cpu", "1000000"],
        ),
        (
            "--cpu-isolation none, admission not binding",
            &["--cpu-isolation", "none", "--capacity-cpu", "1000000"],
        ),
    ];
    for (label, args) in settings {
        let server = ServerProc::start_with(args)?;
        for conc in [1usize, 16] {
            let (l, rate) =
                rt.block_on(http_load(server.port, conc, Duration::from_secs_f64(secs)))?;
            println!(
                "http {label} c={conc}: p50 {:.1} µs, p99 {:.1} µs, {rate:.0} req/s",
                l.p50_us, l.p99_us
            );
            writeln!(
                report,
                "| {label} | {conc} | {:.1} µs | {:.1} µs | {rate:.0} | {} |",
                l.p50_us, l.p99_us, l.n
            )?;
        }
    }

    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, &report)?;
    println!("wrote {}", out.display());
    Ok(())
}

/// The bundled hello in process, on an engine built from `config`, for
/// `secs` on 1 thread and then on 2: invocations per second of each.
pub(crate) fn hello_on_threads(config: EngineConfig, secs: f64) -> anyhow::Result<[f64; 2]> {
    let InProcess {
        engine, function, ..
    } = InProcess::load(config, &repo_root().join("functions/hello.wat"))?;
    Ok([1, 2].map(|t| throughput(t, secs, invoke_loop(&engine, &function))))
}

/// Runs `work` on `threads` threads for `secs`; returns calls per second.
pub(crate) fn throughput(
    threads: usize,
    secs: f64,
    work: impl Fn() + Send + Sync + Clone + 'static,
) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (count, stop, work) = (count.clone(), stop.clone(), work.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    work();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

pub(crate) fn invoke_loop(
    engine: &WasmEngine,
    f: &Arc<Function>,
) -> impl Fn() + Send + Sync + Clone + 'static {
    let (engine, f, cancel) = (engine.clone(), f.clone(), CancelToken::default());
    move || {
        let o = sandbox::invoke(&engine, &f, invocation(), &cancel);
        assert!(o.result.is_ok(), "{:?}", o.result);
    }
}

/// Work bound by memory bandwidth rather than by the ALU: each call fills
/// and sums a 256 KiB buffer of its thread's (much as resetting and
/// touching a guest's memory does). Two cores that share caches or
/// execution units (SMT siblings on the host) scale far less than 2x here
/// even when the pure CPU loop scales.
pub(crate) fn memory_loop() -> impl Fn() + Send + Sync + Clone + 'static {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 256 << 10]);
    }
    || {
        BUF.with_borrow_mut(|b| {
            let v = std::hint::black_box(b.len() as u8);
            b.fill(v);
            let sum: u64 = b.iter().step_by(64).map(|x| u64::from(*x)).sum();
            std::hint::black_box(sum);
        })
    }
}

pub(crate) fn cpu_loop() -> impl Fn() + Send + Sync + Clone + 'static {
    || {
        let mut x = 1u64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        std::hint::black_box(x);
    }
}

async fn http_load(port: u16, concurrency: usize, dur: Duration) -> anyhow::Result<(Lat, f64)> {
    let (l, rate, bad) = http_load_with(port, concurrency, dur, |_| (1000, 200)).await?;
    if bad > 0 {
        bail!("{bad} requests failed");
    }
    Ok((l, rate))
}
