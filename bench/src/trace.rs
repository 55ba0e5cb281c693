//! `wasmbox-bench trace`: a synthetic many-function trace (workload.rs)
//! replayed open-loop against a real `wasmbox serve`, without and with an
//! abusive function sending CPU hogs at 10x capacity. Each call is sent at
//! its scheduled time on its own connection, whatever the earlier ones are
//! doing; in-flight calls are bounded (per tenant) and each has a deadline.
//! Writes bench/results/trace.md.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::client::{self, describe, ms, p50_p99_ms};
use crate::trace_plan::{plan, Done, Planned, CAPACITY, INFLIGHT_ABUSER, INFLIGHT_OTHERS};
use crate::trace_report::{ideal_waits, lat, report, summarise, Summary};
use crate::workload::Trace;
use crate::{repo_root, server_ctl};

const NOT_SENT: &str = "not sent (client in-flight bound)";

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
    let (mean, p50, p99) = ideal_waits(&trace);
    println!(
        "ideal strict-FIFO reservation admission (model): wait mean {} p50 {} p99 {}",
        ms(mean),
        ms(p50),
        ms(p99)
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
            .block_on(client::scrape(server.admin_port, Duration::from_secs(5)))
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
