//! hello over HTTP against its ceilings, for issue 13's goals: wasmbox with
//! CPU isolation on (cgroup-v1, else throttle: the mode is in every label)
//! and `--cpu-isolation none`, against a bare hyper server answering the
//! same bytes (bare_hyper.rs), at c=1 and c=16; the same with admission not
//! binding (at a whole core, and at a quota that holds); the server on one
//! core (`taskset`) against two; and back-to-back calls on one connection
//! at `cpu_quota: 100` against 1000.
//!
//! The ratios the goals read (isolation on / bare hyper, on / none with
//! admission not binding) come from two servers running side by side,
//! measured in alternating rounds ([`Rounds`]): one window of each server
//! taken apart from the other's read a slow spell of this shared machine as
//! the ratio (0.82x and 1.15x for the same two builds in two runs).

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::bare_hyper::{BareHyper, HELLO};
use crate::load::{self, Expect, HttpTarget, LoadResult};
use crate::repo_root;
use crate::scaling::ROUNDS;
use crate::server_ctl::{self, Served};
use crate::stats::{base_first, Rounds};

/// Admission capacity (millicores) that never binds for hello.
pub(crate) const NOT_BINDING: &str = "256000";

/// A quota below a core, for the rows where calls are held to one (a
/// cgroup mode's worker moves into its slot cgroup for such a call once it
/// reaches its first epoch tick, crates/isolation/src/cgroup.rs).
pub(crate) const HELD_QUOTA: u64 = 500;

/// One measured hello cell.
pub(crate) struct Row {
    pub(crate) label: String,
    pub(crate) concurrency: usize,
    pub(crate) cpu_quota: u64,
    pub(crate) result: LoadResult,
}

/// Two servers' rates at the same concurrency and quota, measured in
/// alternating rounds while both run.
pub(crate) struct Pair {
    /// The row label of the ratio's numerator.
    pub(crate) other: &'static str,
    /// The row label of its denominator.
    pub(crate) base: &'static str,
    pub(crate) concurrency: usize,
    pub(crate) cpu_quota: u64,
    pub(crate) rounds: Rounds,
}

/// Everything this part measured: rows measured alone in the order
/// measured, then the paired ones (each holding its rounds' answers
/// together).
pub(crate) struct HelloHttp {
    pub(crate) rows: Vec<Row>,
    pub(crate) pairs: Vec<Pair>,
    /// The isolation mode wasmbox ran with where it is "on".
    pub(crate) mode: &'static str,
}

/// Labels of the rows (the goals look rows up by them).
pub(crate) const ISO_ON: &str = "wasmbox, isolation on, defaults";
pub(crate) const ISO_NONE: &str = "wasmbox, --cpu-isolation none";
pub(crate) const BARE: &str = "bare hyper (no Wasm)";
pub(crate) const ON_NOT_BINDING: &str = "wasmbox, isolation on, --capacity-cpu 256000";
pub(crate) const NONE_NOT_BINDING: &str = "wasmbox, --cpu-isolation none, --capacity-cpu 256000";
pub(crate) const ONE_CORE: &str =
    "wasmbox, isolation on, defaults, server on 1 core (taskset -c 0)";
pub(crate) const B2B: &str = "wasmbox, isolation on, defaults, back to back on one connection";

impl HelloHttp {
    pub(crate) fn get(&self, label: &str, conc: usize, quota: u64) -> Option<&LoadResult> {
        self.rows
            .iter()
            .find(|r| r.label == label && r.concurrency == conc && r.cpu_quota == quota)
            .map(|r| &r.result)
    }

    /// The rounds of `other` against `base`.
    pub(crate) fn pair(&self, other: &str, base: &str, conc: usize, quota: u64) -> Option<&Rounds> {
        self.pairs
            .iter()
            .find(|p| {
                p.other == other && p.base == base && p.concurrency == conc && p.cpu_quota == quota
            })
            .map(|p| &p.rounds)
    }
}

pub(crate) fn target(port: u16, path: &str, quota: u64) -> HttpTarget {
    HttpTarget {
        port,
        path: path.into(),
        resources: Arc::new(move |_| (quota, 64)),
        expect: Expect::Len(HELLO.len()),
    }
}

/// Pins every thread of `pid` (and those it starts later) to CPU 0.
fn pin_to_cpu0(pid: u32) -> anyhow::Result<()> {
    let st = Command::new("taskset")
        .args(["-a", "-c", "-p", "0", &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("run taskset")?;
    if !st.success() {
        bail!("taskset -a -c -p 0 {pid}: {st}");
    }
    Ok(())
}

/// One server under test: its row label and its port and path.
type Under<'a> = (&'static str, u16, &'a str);

/// `other` and `base`, both running, at `conc` and `quota` in [`ROUNDS`]
/// alternating rounds of `phase` each, after a warm-up of each: the pair's
/// rounds, and each server's row (its rounds' answers together).
fn alternating(
    rt: &tokio::runtime::Runtime,
    [other, base]: [Under; 2],
    conc: usize,
    quota: u64,
    phase: Duration,
) -> anyhow::Result<(Pair, [Row; 2])> {
    let targets = [other, base].map(|(_, port, path)| target(port, path, quota));
    for t in &targets {
        rt.block_on(load::http(t, conc, phase / 2))?;
    }
    let mut rounds = Rounds::default();
    let mut parts: [Vec<LoadResult>; 2] = Default::default();
    for round in 0..ROUNDS {
        let order = if base_first(round) { [1, 0] } else { [0, 1] };
        for i in order {
            let label = [other.0, base.0][i];
            let r = rt
                .block_on(load::http(&targets[i], conc, phase))?
                .all_ok(label)?;
            [&mut rounds.other, &mut rounds.base][i].push(r.rate);
            parts[i].push(r);
        }
    }
    let [o, b] = parts;
    let row = |label: &str, parts| {
        anyhow::Ok(Row {
            label: label.to_string(),
            concurrency: conc,
            cpu_quota: quota,
            result: load::combined(parts)?,
        })
    };
    let rows = [row(other.0, o)?, row(base.0, b)?];
    let pair = Pair {
        other: other.0,
        base: base.0,
        concurrency: conc,
        cpu_quota: quota,
        rounds,
    };
    Ok((pair, rows))
}

pub(crate) fn run(rt: &tokio::runtime::Runtime, window: Duration) -> anyhow::Result<HelloHttp> {
    let functions = repo_root().join("functions");
    // A paired cell's rounds give each server two windows in all (four for
    // the pair, against two and a half when each had one window and a
    // warm-up): a round's phase is a third of a window.
    let phase = (window * 2 / ROUNDS as u32).max(Duration::from_millis(100));
    let mut rows = Vec::new();
    let mut pairs = Vec::new();
    let mut measure = |label: &str, port: u16, path: &str, conc: usize, quota: u64| {
        let t = target(port, path, quota);
        // Warm up (compile, connections, worker threads).
        rt.block_on(load::http(&t, conc, window / 4))?;
        let result = rt.block_on(load::http(&t, conc, window))?.all_ok(label)?;
        rows.push(Row {
            label: label.to_string(),
            concurrency: conc,
            cpu_quota: quota,
            result,
        });
        anyhow::Ok(())
    };
    let mode;
    let mut paired = Vec::new();
    {
        let s: Served = server_ctl::start(&functions, &[], "/hello")?;
        mode = s.mode;
        measure(ISO_ON, s.port, "/hello", 1, 1000)?;
        measure(B2B, s.port, "/hello", 1, 100)?;
        measure(B2B, s.port, "/hello", 1, 1000)?;
        let b = BareHyper::start()?;
        measure(BARE, b.port, "/", 1, 1000)?;
        paired.push(alternating(
            rt,
            [(ISO_ON, s.port, "/hello"), (BARE, b.port, "/")],
            16,
            1000,
            phase,
        )?);
    }
    {
        let s = server_ctl::start(&functions, &[], "/hello")?;
        pin_to_cpu0(s.pid())?;
        for conc in [1, 16] {
            measure(ONE_CORE, s.port, "/hello", conc, 1000)?;
        }
    }
    {
        let on = server_ctl::start(&functions, &["--capacity-cpu", NOT_BINDING], "/hello")?;
        let none = crate::ServerProc::start_with(&[
            "--cpu-isolation",
            "none",
            "--capacity-cpu",
            NOT_BINDING,
        ])?;
        for quota in [1000, HELD_QUOTA] {
            paired.push(alternating(
                rt,
                [
                    (ON_NOT_BINDING, on.port, "/hello"),
                    (NONE_NOT_BINDING, none.port, "/hello"),
                ],
                16,
                quota,
                phase,
            )?);
        }
    }
    {
        let s = crate::ServerProc::start_with(&["--cpu-isolation", "none"])?;
        for conc in [1, 16] {
            measure(ISO_NONE, s.port, "/hello", conc, 1000)?;
        }
    }
    for (pair, pair_rows) in paired {
        pairs.push(pair);
        rows.extend(pair_rows);
    }
    Ok(HelloHttp { rows, pairs, mode })
}
