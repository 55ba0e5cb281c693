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

/// Rounds of each 1-thread / 2-thread measurement ([`scaling`]): even, so
/// each order (1 thread first, 2 threads first) comes up as often.
pub(crate) const SCALING_ROUNDS: usize = 6;

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

    // Each 1-thread / 2-thread figure: SCALING_ROUNDS alternating rounds
    // taking as long in all as one window of each would.
    let phase = secs * 2.0 / (2 * SCALING_ROUNDS) as f64;
    let scaled = scaling(SCALING_ROUNDS, phase, invoke_loop(&engine, &hello));
    let rates = scaled.rates();
    println!(
        "in-process: 1 thread {:.0}/s, 2 threads {:.0}/s, rounds {}",
        rates[0],
        rates[1],
        scaled.rounds_text()
    );
    // The machine's own ceiling: a pure CPU loop on 1 and 2 threads.
    let cpu = scaling(SCALING_ROUNDS, phase, cpu_loop());
    println!("pure CPU loop: 2 threads / 1 = {:.2}x", cpu.ratio());
    let mem = scaling(SCALING_ROUNDS, phase, memory_loop());
    println!("memory loop: 2 threads / 1 = {:.2}x", mem.ratio());
    let issue = scaling(SCALING_ROUNDS, phase, issue_loop());
    println!(
        "issue-bound loop: 2 threads / 1 = {:.2}x, rounds {}",
        issue.ratio(),
        issue.rounds_text()
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
        SCALING_ROUNDS,
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
        SCALING_ROUNDS,
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
        "Every 2-thread / 1-thread figure is the median of {SCALING_ROUNDS} rounds' own ratios \
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
/// thread and on 2 in alternating rounds ([`scaling`]).
pub(crate) fn hello_on_threads(
    config: EngineConfig,
    rounds: usize,
    secs: f64,
) -> anyhow::Result<Scaled> {
    let InProcess {
        engine, function, ..
    } = InProcess::load(config, &repo_root().join("functions/hello.wat"))?;
    Ok(scaling(rounds, secs, invoke_loop(&engine, &function)))
}

/// Calls per second of one piece of work on 1 thread and on 2, measured in
/// rounds: in each, `secs` on one and `secs` on the other, the order
/// swapping from round to round. On a shared machine a slow spell lands
/// in one window; a single window of each then reports it as the scaling
/// (one window of each for hello gave 1.47x to 1.86x across runs in one
/// session, and 0.4 s rounds in one process 1.21x to 2.46x), where the
/// median of the rounds' own ratios leaves a minority of slow rounds out.
pub(crate) struct Scaled {
    /// Each round's rate on 1 thread, in round order.
    pub(crate) one: Vec<f64>,
    /// Each round's rate on 2 threads, in round order.
    pub(crate) two: Vec<f64>,
}

impl Scaled {
    /// Each round's 2-thread rate over its 1-thread rate.
    pub(crate) fn ratios(&self) -> Vec<f64> {
        self.one.iter().zip(&self.two).map(|(a, b)| b / a).collect()
    }

    /// The median of the rounds' ratios: the figure a goal reads.
    pub(crate) fn ratio(&self) -> f64 {
        median(self.ratios())
    }

    /// The median rate on 1 thread and on 2.
    pub(crate) fn rates(&self) -> [f64; 2] {
        [median(self.one.clone()), median(self.two.clone())]
    }

    /// The rounds' ratios, for a report: `1.71x, 1.80x, ...`.
    pub(crate) fn rounds_text(&self) -> String {
        let r: Vec<String> = self.ratios().iter().map(|r| format!("{r:.2}x")).collect();
        r.join(", ")
    }
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `work` on 1 thread and on 2 for `secs` each, in `rounds` rounds
/// (at least one), the first round starting on 1 thread.
pub(crate) fn scaling(
    rounds: usize,
    secs: f64,
    work: impl Fn() + Send + Sync + Clone + 'static,
) -> Scaled {
    let mut s = Scaled {
        one: Vec::new(),
        two: Vec::new(),
    };
    for round in 0..rounds.max(1) {
        let order = if round % 2 == 0 { [1, 2] } else { [2, 1] };
        for threads in order {
            let rate = throughput(threads, secs, work.clone());
            if threads == 1 {
                s.one.push(rate);
            } else {
                s.two.push(rate);
            }
        }
    }
    s
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

/// Work bound by how many instructions a core issues, not by one chain's
/// latency: eight independent xorshift chains keep a core's integer units
/// busy. Two vCPUs that the host runs on the two hardware threads of one
/// core share those units, so this would scale well below 2x then, where
/// the single chain of [`cpu_loop`] (latency-bound) still scales 2x. hello's
/// 2-thread rate has a slow mode on these shared machines (about 1.3x
/// against 1.8x, for seconds at a time and across processes, while the
/// single chain stays at 2x): this control is there to show whether the
/// machine's cores had slow rounds too.
pub(crate) fn issue_loop() -> impl Fn() + Send + Sync + Clone + 'static {
    || {
        let mut x = std::hint::black_box([1u64, 2, 3, 4, 5, 6, 7, 8]);
        for _ in 0..500 {
            for v in x.iter_mut() {
                *v ^= *v << 13;
                *v ^= *v >> 7;
                *v ^= *v << 17;
            }
        }
        std::hint::black_box(x);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The goal reads the median of each round's own ratio, not the ratio
    /// of the median rates: one slow 2-thread round (here the third) moves
    /// neither, but rounds paired with slow 1-thread ones would move the
    /// latter.
    #[test]
    fn scaled_takes_the_median_of_the_rounds_ratios() {
        let s = Scaled {
            one: vec![100.0, 100.0, 100.0, 80.0, 100.0, 100.0],
            two: vec![180.0, 182.0, 130.0, 160.0, 178.0, 181.0],
        };
        assert_eq!(s.ratios(), vec![1.8, 1.82, 1.3, 2.0, 1.78, 1.81]);
        // Sorted: 1.3, 1.78, 1.8, 1.81, 1.82, 2.0: the middle two's mean.
        assert!((s.ratio() - 1.805).abs() < 1e-9, "{}", s.ratio());
        assert_eq!(s.rates(), [100.0, 179.0]);
        assert_eq!(s.rounds_text(), "1.80x, 1.82x, 1.30x, 2.00x, 1.78x, 1.81x");
    }

    #[test]
    fn median_of_odd_even_and_no_values() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }

    /// Each round records one rate on each thread count, and there is
    /// always at least one round.
    #[test]
    fn scaling_runs_every_round_on_both_counts() {
        let s = scaling(3, 0.01, || std::hint::black_box(()));
        assert_eq!((s.one.len(), s.two.len()), (3, 3));
        assert!(s.one.iter().chain(&s.two).all(|r| *r > 0.0));
        let none = scaling(0, 0.01, || ());
        assert_eq!(
            (none.one.len(), none.two.len()),
            (1, 1),
            "at least one round"
        );
    }
}
