//! The trace scenario's summary of one run (the trace's functions, the
//! abusive function apart) and its markdown report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::client::{describe, ms, p50_p99_ms};
use crate::containment::{run_header, verdict};
use crate::server_ctl;
use crate::trace_plan::{
    Done, Planned, ABUSE_MS, ABUSE_X, CAPACITY, INFLIGHT_ABUSER, INFLIGHT_OTHERS,
};
use crate::workload::{ideal_fifo_waits, Kind, Trace, HELLO_MS, MAX_MS};

/// The well-behaved functions' results in one run.
pub(crate) struct Summary {
    pub(crate) calls: u64,
    pub(crate) ok: u64,
    pub(crate) outcomes: BTreeMap<String, u64>,
    /// Latency of successful calls (ns): all, short (< 100 ms requested), long.
    pub(crate) all: Histogram<u64>,
    pub(crate) short: Histogram<u64>,
    pub(crate) long: Histogram<u64>,
    /// Slowdown x1000 (latency / requested duration, at least 1 ms).
    pub(crate) short_slow: Histogram<u64>,
    pub(crate) long_slow: Histogram<u64>,
    /// First call of each function, if it succeeded (ns).
    pub(crate) cold: Histogram<u64>,
    pub(crate) cold_failed: u64,
    /// Jain's index over per-function success share, and the worst function.
    pub(crate) jain: f64,
    pub(crate) worst: (f64, String, u64),
    pub(crate) functions: usize,
    pub(crate) lag: Histogram<u64>,
    pub(crate) abuser: BTreeMap<String, u64>,
    /// The server's unlabelled metrics after the run (all functions).
    pub(crate) server: BTreeMap<String, f64>,
}

fn hist() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits is valid")
}

pub(crate) fn summarise(trace: &Trace, plan: &[Planned], done: &[Done]) -> Summary {
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
    pub(crate) fn share(&self) -> f64 {
        self.ok as f64 / self.calls.max(1) as f64
    }
    pub(crate) fn refusals(&self) -> u64 {
        self.calls - self.ok
    }
    pub(crate) fn errors(&self) -> String {
        let e: BTreeMap<String, u64> = self
            .outcomes
            .iter()
            .filter(|(k, _)| k.as_str() != "200")
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        describe(&e)
    }
}

pub(crate) fn slow(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "—".into();
    }
    format!(
        "{:.2} / {:.2}",
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3
    )
}

pub(crate) fn lat(h: &Histogram<u64>) -> String {
    let (a, b) = p50_p99_ms(h);
    format!("{} / {}", ms(a), ms(b))
}

/// Mean, p50 and p99 (ms) of [`ideal_fifo_waits`] on this trace.
pub(crate) fn ideal_waits(trace: &Trace) -> (f64, f64, f64) {
    let mut w = ideal_fifo_waits(trace);
    if w.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    w.sort_by(f64::total_cmp);
    let at = |q: f64| w[((w.len() - 1) as f64 * q).round() as usize] * 1e3;
    (
        w.iter().sum::<f64>() / w.len() as f64 * 1e3,
        at(0.5),
        at(0.99),
    )
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn report(
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
    writeln!(r, "{}\n", run_header(mode))?;
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
         Poisson arrivals; in a window this short only the more popular functions are invoked at all. \
         Note that `spin MS` and `sleep MS` last MS of wall time whatever CPU they get, so CPU contention \
         shows as fewer rounds of work, not as longer calls: latency above the requested duration is \
         queueing for admission, compilation (first calls) and HTTP.\n",
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
        "| of which CPU-burning (`spin`) | {:.2} |",
        trace.cpu_load()
    )?;
    let (mean, p50, p99) = ideal_waits(trace);
    writeln!(
        r,
        "| yardstick (a model, not measured): queue wait under ideal strict-FIFO reservation admission, \
         no overhead, mean / p50 / p99 | {} / {} / {} |\n",
        ms(mean),
        ms(p50),
        ms(p99)
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
        "server: mean queue wait / mean execution, all functions (`/-/metrics`, admin listener)",
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
            .get("wasmbox_function_loads_total")
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
