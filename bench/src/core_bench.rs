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
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use hdrhistogram::Histogram;
use wasmbox_runtime::sandbox::{self, CancelToken, Stdio as GuestStdio};
use wasmbox_runtime::{EngineConfig, Function, Invocation, WasmEngine};

use crate::scaling::{
    cpu_loop, interleaved, issue_loop, memory_loop, shared_line_loop, Scaled, Work, ROUNDS,
};
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

    // Each 1-thread / 2-thread figure: ROUNDS alternating rounds taking
    // as long in all as one window of each would; hello and the machine's
    // own loops take turns within each round.
    let phase = secs * 2.0 / (2 * ROUNDS) as f64;
    let [scaled, cpu, mem, issue, line]: [Scaled; 5] = interleaved(
        ROUNDS,
        phase,
        &[
            invoke_loop(&engine, &hello),
            cpu_loop(),
            memory_loop(),
            issue_loop(),
            shared_line_loop(),
        ],
    )
    .try_into()
    .expect("one per work");
    let rates = scaled.rates();
    println!(
        "in-process: 1 thread {:.0}/s, 2 threads {:.0}/s, rounds {}",
        rates[0],
        rates[1],
        scaled.rounds_text()
    );
    println!("pure CPU loop: 2 threads / 1 = {:.2}x", cpu.ratio());
    println!("memory loop: 2 threads / 1 = {:.2}x", mem.ratio());
    println!(
        "issue-bound loop: 2 threads / 1 = {:.2}x, rounds {}",
        issue.ratio(),
        issue.rounds_text()
    );
    println!(
        "shared-line loop: 2 threads / 1 = {:.2}x, rounds {}",
        line.ratio(),
        line.rounds_text()
    );
    // Why the pool's size matters: wasmtime shards a pool of 128 slots or
    // more, one shard per core, and a thread takes slots from its own; a
    // smaller pool has one shard, where two threads take turns with the
    // same slots (each reset then writes memory the other core wrote).
    let small = hello_on_threads(
        EngineConfig {
            max_instances: 16,
            ..Default::default()
        },
        ROUNDS,
        phase,
    )?;
    println!(
        "16-slot pool: 1 thread {:.0}/s, 2 threads {:.0}/s, {:.2}x",
        small.rates()[0],
        small.rates()[1],
        small.ratio()
    );
    // Why keep_resident matters: the same with it switched off.
    let cold = hello_on_threads(
        EngineConfig {
            memory_keep_resident: 0,
            table_keep_resident: 0,
            ..Default::default()
        },
        ROUNDS,
        phase,
    )?;
    println!(
        "keep_resident off: 1 thread {:.0}/s, 2 threads {:.0}/s, {:.2}x",
        cold.rates()[0],
        cold.rates()[1],
        cold.ratio()
    );

    writeln!(report, "## In process (no HTTP)\n")?;
    writeln!(
        report,
        "Every 2-thread / 1-thread figure is the median of {ROUNDS} rounds' own ratios \
         ({phase:.2} s on each, the order alternating); rates are the rounds' medians.\n"
    )?;
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
        "| 2 threads / 1 thread (rounds: {}) | {:.2}x | >= 1.8x |",
        scaled.rounds_text(),
        scaled.ratio()
    )?;
    writeln!(
        report,
        "| machine ceiling: pure CPU loop, 2 threads / 1 thread | {:.2}x | |",
        cpu.ratio()
    )?;
    writeln!(
        report,
        "| machine ceiling: memory-bound loop (fill and sum 256 KiB), 2 threads / 1 thread | {:.2}x | |",
        mem.ratio()
    )?;
    writeln!(
        report,
        "| machine ceiling: issue-bound loop (8 independent chains), 2 threads / 1 thread (rounds: {}) | {:.2}x | |",
        issue.rounds_text(),
        issue.ratio()
    )?;
    writeln!(
        report,
        "| the cost of sharing: one counter both threads add to, 2 threads / 1 thread (rounds: {}) | {:.2}x | |",
        line.rounds_text(),
        line.ratio()
    )?;
    writeln!(
        report,
        "| a 16-slot pool (one shard): 1 thread / 2 threads | {:.0} /s / {:.0} /s ({:.2}x) | |",
        small.rates()[0],
        small.rates()[1],
        small.ratio()
    )?;
    writeln!(
        report,
        "| keep_resident off: 1 thread / 2 threads | {:.0} /s / {:.0} /s ({:.2}x) | |\n",
        cold.rates()[0],
        cold.rates()[1],
        cold.ratio()
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

/// The bundled hello in process, on an engine built from `config`, on 1
/// thread and on 2 in alternating rounds ([`interleaved`]).
pub(crate) fn hello_on_threads(
    config: EngineConfig,
    rounds: usize,
    secs: f64,
) -> anyhow::Result<Scaled> {
    let (_loaded, work) = hello_work(config)?;
    let mut s = interleaved(rounds, secs, &[work]);
    Ok(s.remove(0))
}

/// The bundled hello loaded in process on an engine built from `config`,
/// and the work of invoking it; keep the first while the work runs.
pub(crate) fn hello_work(config: EngineConfig) -> anyhow::Result<(InProcess, Work)> {
    let loaded = InProcess::load(config, &repo_root().join("functions/hello.wat"))?;
    let work = invoke_loop(&loaded.engine, &loaded.function);
    Ok((loaded, work))
}

pub(crate) fn invoke_loop(engine: &WasmEngine, f: &Arc<Function>) -> Work {
    let (engine, f, cancel) = (engine.clone(), f.clone(), CancelToken::default());
    Arc::new(move || {
        let o = sandbox::invoke(&engine, &f, invocation(), &cancel);
        assert!(o.result.is_ok(), "{:?}", o.result);
    })
}

async fn http_load(port: u16, concurrency: usize, dur: Duration) -> anyhow::Result<(Lat, f64)> {
    let (l, rate, bad) = http_load_with(port, concurrency, dur, |_| (1000, 200)).await?;
    if bad > 0 {
        bail!("{bad} requests failed");
    }
    Ok((l, rate))
}
