//! `wasmbox-bench trace`: a synthetic many-function trace (workload.rs)
//! replayed open-loop against a real `wasmbox serve`, without and with an
//! abusive function sending CPU hogs at 10x capacity. Each call is sent at
//! its scheduled time on its own connection, whatever the earlier ones are
//! doing; in-flight calls are bounded (per tenant) and each has a deadline.
//! Writes bench/results/trace.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::client::{self, describe, ms, p50_p99_ms};
use crate::containment::{commit, date, verdict};
use crate::workload::{Kind, Trace, HELLO_MS, MAX_MS};
use crate::{machine, repo_root, server_ctl};

const CAPACITY: u64 = 2000;
/// The abusive function's calls: `spin 1000` at cpu_quota 1000.
const ABUSE_MS: u64 = 1000;
const ABUSE_X: f64 = 10.0;
const INFLIGHT_OTHERS: usize = 1024;
const INFLIGHT_ABUSER: usize = 256;
const NOT_SENT: &str = "not sent (client in-flight bound)";

/// One call to send.
struct Planned {
    at: Duration,
    path: String,
    cpu: u64,
    mem: u64,
    kind: Kind,
    /// Index into the trace's functions; `None` for the abusive function.
    func: Option<usize>,
    /// Requested duration, ms (0 for hello).
    ms: u64,
}

struct Done {
    outcome: String,
    latency: Duration,
    /// How late it was sent.
    lag: Duration,
}

fn plan(trace: &Trace, abusive: bool) -> Vec<Planned> {
    let mut p: Vec<Planned> = trace
        .calls
        .iter()
        .map(|c| {
            let f = &trace.funcs[c.func];
            Planned {
                at: c.at,
                path: trace.path(c),
                cpu: f.cpu,
                mem: f.mem,
                kind: f.kind,
                func: Some(c.func),
                ms: c.ms,
            }
        })
        .collect();
    if abusive {
        // ABUSE_X x capacity of reserved CPU: each call reserves 1 core for
        // ABUSE_MS, so ABUSE_X x cores calls per second, evenly spaced.
        let per_sec = ABUSE_X * CAPACITY as f64 / 1000.0 * 1000.0 / ABUSE_MS as f64;
        let n = (trace.window.as_secs_f64() * per_sec) as usize;
        for i in 0..n {
            p.push(Planned {
                at: Duration::from_secs_f64(i as f64 / per_sec),
                path: format!("/abuser?arg={ABUSE_MS}"),
                cpu: 1000,
                mem: 64,
                kind: Kind::Spin,
                func: None,
                ms: ABUSE_MS,
            });
        }
        p.sort_by_key(|c| c.at);
    }
    p
}

/// Sends every planned call at its time; returns their results in order.
async fn replay(port: u16, plan: &[Planned], limit: Duration) -> Vec<Done> {
    let others = Arc::new(Semaphore::new(INFLIGHT_OTHERS));
    let abuser = Arc::new(Semaphore::new(INFLIGHT_ABUSER));
    let start = Instant::now();
    let mut pending = Vec::with_capacity(plan.len());
    for p in plan {
        let due = start + p.at;
        tokio::time::sleep_until(due).await;
        let lag = Instant::now().saturating_duration_since(due);
        let sem = if p.func.is_some() { &others } else { &abuser };
        let Ok(permit) = sem.clone().try_acquire_owned() else {
            pending.push(Err(Done {
                outcome: NOT_SENT.into(),
                latency: Duration::ZERO,
                lag,
            }));
            continue;
        };
        let (path, cpu, mem, kind) = (p.path.clone(), p.cpu, p.mem, p.kind);
        pending.push(Ok(tokio::spawn(async move {
            let call = client::call_once(port, &path, cpu, mem, limit).await;
            drop(permit);
            Done {
                outcome: call.outcome(&|b| kind.accepts(b)),
                latency: call.latency,
                lag,
            }
        })));
    }
    let mut done = Vec::with_capacity(plan.len());
    for p in pending {
        done.push(match p {
            Err(d) => d,
            Ok(h) => h.await.unwrap_or_else(|e| Done {
                outcome: format!("client task failed: {e}"),
                latency: Duration::ZERO,
                lag: Duration::ZERO,
            }),
        });
    }
    done
}

/// The well-behaved functions' results in one run.
struct Summary {
    calls: u64,
    ok: u64,
    outcomes: BTreeMap<String, u64>,
    /// Latency of successful calls (ns): all, short (< 100 ms requested), long.
    all: Histogram<u64>,
    short: Histogram<u64>,
    long: Histogram<u64>,
    /// Slowdown x1000 (latency / requested duration, at least 1 ms).
    short_slow: Histogram<u64>,
    long_slow: Histogram<u64>,
    /// First call of each function, if it succeeded (ns).
    cold: Histogram<u64>,
    cold_failed: u64,
    /// Jain's index over per-function success share, and the worst function.
    jain: f64,
    worst: (f64, String, u64),
    functions: usize,
    lag: Histogram<u64>,
    abuser: BTreeMap<String, u64>,
    /// The server's unlabelled metrics after the run (all functions).
    server: BTreeMap<String, f64>,
}

fn hist() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits is valid")
}

fn summarise(trace: &Trace, plan: &[Planned], done: &[Done]) -> Summary {
    let mut s = Summary {
        calls: 0,
        ok: 0,
        outcomes: BTreeMap::new(),
        all: hist(),
        short: hist(),
        long: hist(),
        short_slow: hist(),
        long_slow: hist(),
        cold: hist(),
        cold_failed: 0,
        jain: f64::NAN,
        worst: (f64::NAN, String::new(), 0),
        functions: 0,
        lag: hist(),
        abuser: BTreeMap::new(),
        server: BTreeMap::new(),
    };
    let n = trace.funcs.len();
    let (mut per_calls, mut per_ok) = (vec![0u64; n], vec![0u64; n]);
    let mut seen = vec![false; n];
    for (p, d) in plan.iter().zip(done) {
        let _ = s.lag.record(d.lag.as_nanos().max(1) as u64);
        let Some(f) = p.func else {
            *s.abuser.entry(d.outcome.clone()).or_default() += 1;
            continue;
        };
        s.calls += 1;
        per_calls[f] += 1;
        *s.outcomes.entry(d.outcome.clone()).or_default() += 1;
        let ok = d.outcome == "200";
        let ns = d.latency.as_nanos().max(1) as u64;
        if !seen[f] {
            seen[f] = true;
            if ok {
                let _ = s.cold.record(ns);
            } else {
                s.cold_failed += 1;
            }
        }
        if !ok {
            continue;
        }
        s.ok += 1;
        per_ok[f] += 1;
        let slow = (d.latency.as_secs_f64() * 1e6 / p.ms.max(HELLO_MS) as f64) as u64;
        let _ = s.all.record(ns);
        if p.ms < 100 {
            let _ = s.short.record(ns);
            let _ = s.short_slow.record(slow.max(1));
        } else {
            let _ = s.long.record(ns);
            let _ = s.long_slow.record(slow.max(1));
        }
    }
    let shares: Vec<(f64, usize)> = (0..n)
        .filter(|&f| per_calls[f] > 0)
        .map(|f| (per_ok[f] as f64 / per_calls[f] as f64, f))
        .collect();
    s.functions = shares.len();
    if !shares.is_empty() {
        let sum: f64 = shares.iter().map(|x| x.0).sum();
        let sq: f64 = shares.iter().map(|x| x.0 * x.0).sum();
        s.jain = if sq > 0.0 {
            sum * sum / (shares.len() as f64 * sq)
        } else {
            0.0
        };
        let &(share, f) = shares
            .iter()
            // Ties: the function with the most calls.
            .min_by(|a, b| {
                a.0.total_cmp(&b.0)
                    .then(per_calls[b.1].cmp(&per_calls[a.1]))
            })
            .expect("not empty");
        s.worst = (share, trace.funcs[f].name.clone(), per_calls[f]);
    }
    s
}

impl Summary {
    fn share(&self) -> f64 {
        self.ok as f64 / self.calls.max(1) as f64
    }
    fn refusals(&self) -> u64 {
        self.calls - self.ok
    }
    fn errors(&self) -> String {
        let e: BTreeMap<String, u64> = self
            .outcomes
            .iter()
            .filter(|(k, _)| k.as_str() != "200")
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        describe(&e)
    }
}

fn slow(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "—".into();
    }
    format!(
        "{:.2} / {:.2}",
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3
    )
}

fn lat(h: &Histogram<u64>) -> String {
    let (a, b) = p50_p99_ms(h);
    format!("{} / {}", ms(a), ms(b))
}

/// The functions directory: a copy of its guest per function, and the
/// abusive function (a copy of spin).
fn functions_dir(trace: &Trace) -> anyhow::Result<tempfile::TempDir> {
    let src = repo_root().join("functions");
    let dir = tempfile::tempdir()?;
    for f in &trace.funcs {
        std::fs::copy(src.join(f.kind.source()), dir.path().join(f.file())).map_err(|e| {
            anyhow::anyhow!(
                "functions/{} (run functions/build.sh): {e}",
                f.kind.source()
            )
        })?;
    }
    std::fs::copy(src.join("spin.wasm"), dir.path().join("abuser.wasm"))?;
    Ok(dir)
}

pub(crate) fn run(quick: bool, seed: u64, load: f64, out: &Path) -> anyhow::Result<()> {
    if !(load > 0.0 && load <= 5.0) {
        anyhow::bail!("--load {load}: expected a fraction of capacity in (0, 5]");
    }
    let (n, window, limit) = if quick {
        (200, Duration::from_secs(30), Duration::from_secs(15))
    } else {
        (200, Duration::from_secs(120), Duration::from_secs(30))
    };
    let trace = Trace::generate(seed, n, window, load, CAPACITY);
    let dir = functions_dir(&trace)?;
    let counts = trace.counts();
    println!(
        "trace: {} functions ({} invoked), {} calls over {:.1} s, reserved load {:.2}, CPU load {:.2}",
        n,
        counts.iter().filter(|&&c| c > 0).count(),
        trace.calls.len(),
        trace.window.as_secs_f64(),
        trace.reserved_load(),
        trace.cpu_load()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let timeout = format!("{}s", 10);
    let cap = CAPACITY.to_string();
    let server_args = [
        "--timeout",
        timeout.as_str(),
        "--capacity-cpu",
        cap.as_str(),
    ];
    let mut runs = Vec::new();
    let mut mode = "";
    for abusive in [false, true] {
        let plan = plan(&trace, abusive);
        let server = server_ctl::start(dir.path(), &server_args, "/-/live")?;
        mode = server.mode;
        let label = if abusive { "with" } else { "without" };
        println!(
            "run {label} the abusive function: {} calls, --cpu-isolation {mode}",
            plan.len()
        );
        let done = rt.block_on(replay(server.port, &plan, limit));
        let metrics = rt
            .block_on(client::scrape(server.port, Duration::from_secs(5)))
            .unwrap_or_else(|e| {
                eprintln!("metrics after the run: {e:#}");
                BTreeMap::new()
            });
        let stopped = server.stop();
        let mut s = summarise(&trace, &plan, &done);
        s.server = metrics;
        println!(
            "  others: success {:.1} % ({}), p99 {}, short p50/p99 {}, long p50/p99 {}; abuser: {}; server {}",
            100.0 * s.share(),
            s.errors(),
            ms(p50_p99_ms(&s.all).1),
            lat(&s.short),
            lat(&s.long),
            describe(&s.abuser),
            stopped.describe()
        );
        runs.push((s, stopped));
    }
    let (without, with) = (&runs[0].0, &runs[1].0);
    let longest = trace.calls.iter().map(|c| c.ms).max().unwrap_or(0) as f64;
    let p99 = |s: &Summary| p50_p99_ms(&s.all).1;
    let goals = [
        (
            "no refusals at this load (without the abusive function)".to_string(),
            format!("{} of {} calls not 200", without.refusals(), without.calls),
            without.refusals() == 0,
        ),
        (
            format!(
                "p99 latency no more than about the longest call ({longest:.0} ms, +10 %), without the abusive function"
            ),
            ms(p99(without)),
            p99(without) <= 1.1 * longest,
        ),
        (
            "others' success share with the abusive function at least half of without".into(),
            format!(
                "{:.1} % vs {:.1} %",
                100.0 * with.share(),
                100.0 * without.share()
            ),
            with.share() >= 0.5 * without.share(),
        ),
        (
            "others' p99 with the abusive function within 2x of without".into(),
            format!("{} vs {}", ms(p99(with)), ms(p99(without))),
            p99(with) <= 2.0 * p99(without),
        ),
    ];
    for (g, m, pass) in &goals {
        println!("goal: {g}: {m}: {}", if *pass { "PASS" } else { "FAIL" });
    }
    let r = report(
        &trace,
        quick,
        seed,
        load,
        mode,
        &server_args,
        limit,
        &runs,
        &goals,
    )?;
    std::fs::create_dir_all(out.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(out, &r)?;
    println!("wrote {}", out.display());
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn report(
    trace: &Trace,
    quick: bool,
    seed: u64,
    load: f64,
    mode: &str,
    server_args: &[&str],
    limit: Duration,
    runs: &[(Summary, server_ctl::Stopped)],
    goals: &[(String, String, bool)],
) -> anyhow::Result<String> {
    let mut r = String::new();
    writeln!(
        r,
        "# Trace-driven benchmark (synthetic Azure-like workload)\n"
    )?;
    writeln!(
        r,
        "{} Date: {}. Checkout: commit {}. CPU isolation: `{mode}`.\n",
        machine(),
        date(),
        commit()
    )?;
    let mut cmd = String::from("target/release/wasmbox-bench trace");
    if quick {
        cmd.push_str(" --quick");
    }
    write!(cmd, " --seed {seed} --load {load}")?;
    writeln!(
        r,
        "Command: `{cmd}`. Server: `wasmbox serve --cpu-isolation {mode} {}`, a fresh one per run.\n",
        server_args.join(" ")
    )?;
    writeln!(r, "## The workload\n")?;
    writeln!(
        r,
        "**SYNTHETIC**: no real trace is replayed. A seeded generator (bench/src/workload.rs) makes {} distinct \
         functions (copies of `spin`, `sleep` and `hello` under their own names) shaped after the published \
         Azure Functions characterisation (Shahrad et al., \"Serverless in the Wild\", USENIX ATC 2020): \
         invocation rates spanning about 8 orders of magnitude and heavily skewed (a small fraction of functions \
         make most invocations); execution times roughly log-normal, ~50 % of functions averaging under 1 s and \
         75 % under 10 s (fitted here as a log-normal with median 1 s and 75th percentile 10 s, capped at {:.0} s); \
         memory per app mostly 100-300 MB (here Memory-Request from a skewed log-normal, median 64 MB, 16-256 MB). \
         Our own assumptions: popular functions tend to be short (correlation -0.6 between the normals behind \
         rate and duration; without it a window of seconds holds only a handful of calls at this load), \
         75 % of functions burn CPU (`spin MS`, cpu_quota 250/500/1000), 20 % wait (`sleep MS`, \
         cpu_quota 100), 5 % are `hello`, dealt in order of popularity (15 : 4 : 1) so most calls burn CPU; \
         Poisson arrivals; in a window this short only the more popular functions are invoked at all.\n",
        trace.funcs.len(),
        MAX_MS / 1000.0
    )?;
    let counts = trace.counts();
    let invoked = counts.iter().filter(|&&c| c > 0).count();
    let mut sorted = counts.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let top = (trace.funcs.len() / 10).max(1);
    let top_share = sorted[..top].iter().sum::<u64>() as f64 / trace.calls.len().max(1) as f64;
    let w: Vec<f64> = trace.funcs.iter().map(|f| f.weight).collect();
    let span =
        w.iter().cloned().fold(f64::MIN, f64::max) / w.iter().cloned().fold(f64::MAX, f64::min);
    let short = trace.calls.iter().filter(|c| c.ms < 100).count();
    let sleeps = trace
        .calls
        .iter()
        .filter(|c| trace.funcs[c.func].kind == Kind::Sleep)
        .count();
    let mut mems: Vec<u64> = trace.funcs.iter().map(|f| f.mem).collect();
    mems.sort_unstable();
    writeln!(
        r,
        "| property of this trace (seed {seed}) | value |\n|---|---|"
    )?;
    writeln!(
        r,
        "| functions (invoked in the window) | {} ({invoked}) |",
        trace.funcs.len()
    )?;
    writeln!(
        r,
        "| calls | {} ({short} short, < 100 ms; {sleeps} `sleep`) |",
        trace.calls.len()
    )?;
    writeln!(r, "| window | {:.1} s |", trace.window.as_secs_f64())?;
    writeln!(
        r,
        "| invocation rate, fastest / slowest function | {span:.1e} ({:.1} orders of magnitude) |",
        span.log10()
    )?;
    writeln!(
        r,
        "| calls made by the busiest 10 % of functions | {:.1} % |",
        100.0 * top_share
    )?;
    writeln!(
        r,
        "| Memory-Request per function, median / max | {} / {} MB |",
        mems[mems.len() / 2],
        mems[mems.len() - 1]
    )?;
    writeln!(
        r,
        "| offered load: reserved CPU (cpu_quota x duration) / capacity ({CAPACITY} m) | {:.2} |",
        trace.reserved_load()
    )?;
    writeln!(
        r,
        "| of which CPU-burning (`spin`) | {:.2} |\n",
        trace.cpu_load()
    )?;
    writeln!(
        r,
        "Replay: open-loop, each call sent at its scheduled time on its own connection; at most {INFLIGHT_OTHERS} \
         calls of the trace and {INFLIGHT_ABUSER} of the abusive function in flight (past that a call is not sent \
         and counts as a failure); each call allowed {} s (then the client hangs up). \
         **Abusive function**: `abuser` (a copy of `spin`) called open-loop with `arg={ABUSE_MS}` at cpu_quota 1000, \
         evenly spaced at {:.0} calls/s, i.e. {ABUSE_X:.0}x capacity, for the whole window.\n",
        limit.as_secs(),
        ABUSE_X * CAPACITY as f64 / ABUSE_MS as f64
    )?;
    writeln!(
        r,
        "## Results for the trace's functions (the abusive function excluded)\n"
    )?;
    writeln!(
        r,
        "Latencies and slowdowns are over successful calls; slowdown = latency / the call's requested duration \
         (hello: {HELLO_MS} ms).\n"
    )?;
    let (a, b) = (&runs[0].0, &runs[1].0);
    writeln!(
        r,
        "| | without the abusive function | with it |\n|---|---|---|"
    )?;
    let row = |r: &mut String, k: &str, f: &dyn Fn(&Summary) -> String| {
        writeln!(r, "| {k} | {} | {} |", f(a), f(b))
    };
    row(&mut r, "calls", &|s| s.calls.to_string())?;
    row(&mut r, "success share", &|s| {
        format!("{:.2} %", 100.0 * s.share())
    })?;
    row(&mut r, "failures by status", &|s| s.errors())?;
    row(&mut r, "latency p99, all calls", &|s| {
        ms(p50_p99_ms(&s.all).1)
    })?;
    row(&mut r, "short calls (< 100 ms): latency p50 / p99", &|s| {
        lat(&s.short)
    })?;
    row(&mut r, "short calls: slowdown p50 / p99", &|s| {
        slow(&s.short_slow)
    })?;
    row(&mut r, "long calls: latency p50 / p99", &|s| lat(&s.long))?;
    row(&mut r, "long calls: slowdown p50 / p99", &|s| {
        slow(&s.long_slow)
    })?;
    row(
        &mut r,
        "cold first calls: latency p50 / p99 (failed)",
        &|s| format!("{} ({})", lat(&s.cold), s.cold_failed),
    )?;
    row(
        &mut r,
        "Jain's index over per-function success share",
        &|s| format!("{:.3} ({} functions)", s.jain, s.functions),
    )?;
    row(&mut r, "worst function's success share", &|s| {
        format!(
            "{:.1} % ({}, {} calls)",
            100.0 * s.worst.0,
            s.worst.1,
            s.worst.2
        )
    })?;
    row(&mut r, "client send lag p99 / max", &|s| {
        format!(
            "{} / {}",
            ms(s.lag.value_at_quantile(0.99) as f64 / 1e6),
            ms(s.lag.max() as f64 / 1e6)
        )
    })?;
    row(&mut r, "abusive function's calls", &|s| describe(&s.abuser))?;
    row(
        &mut r,
        "server: mean queue wait / mean execution, all functions (`/-/metrics`)",
        &|s| {
            let mean = |m: &str| {
                let (sum, n) = (
                    s.server.get(&format!("{m}_sum")),
                    s.server.get(&format!("{m}_count")),
                );
                match (sum, n) {
                    (Some(sum), Some(n)) if *n > 0.0 => ms(sum / n * 1e3),
                    _ => "not read".into(),
                }
            };
            format!(
                "{} / {}",
                mean("wasmbox_queue_wait_seconds"),
                mean("wasmbox_execution_seconds")
            )
        },
    )?;
    row(&mut r, "server: function loads", &|s| {
        s.server
            .get("wasmbox_function_loads")
            .map_or("not read".into(), |v| v.to_string())
    })?;
    writeln!(
        r,
        "| server shutdown after the run | {} | {} |\n",
        runs[0].1.describe(),
        runs[1].1.describe()
    )?;
    writeln!(r, "## Goals (load {load})\n")?;
    writeln!(r, "| goal | measured | verdict |\n|---|---|---|")?;
    for (g, m, pass) in goals {
        writeln!(r, "| {g} | {m} | {} |", verdict(*pass))?;
    }
    Ok(r)
}
