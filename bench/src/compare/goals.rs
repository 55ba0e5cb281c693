//! Issue 13's goals and issue 14's benchmark goals, each with the value
//! this run measured and its verdict (PASS/MISS), as one markdown table: in
//! compare.md and, alone, in bench/results/goals.md.

use std::fmt::Write as _;

use super::deadline::{ratio, DeadlinePrice, OWN_OVERHEAD_GOAL};
use super::systems::{best_rate, Cell, WASMBOX, WASMBOX_COMPONENT, WASMTIME_SERVE};
use super::units::{fmt_us, us};
use crate::density::Density;
use crate::density_component::ComponentDensity;
use crate::hello_http::{self as hh, HelloHttp};
use crate::scaling::{Scaled, ROUNDS};
use crate::stats::Rounds;

/// Functions the density goal is set at.
pub(crate) const DENSITY_GOAL_N: usize = 10_000;
/// wasi:http components (and as many modules) the component density goal
/// is set at (issue 14).
pub(crate) const COMPONENT_DENSITY_GOAL_N: usize = 1_000;
/// The shipped container's open-descriptor limit.
pub(crate) const FD_LIMIT: usize = 1024;

/// One goal: what, measured, target, verdict (None: not measured).
pub(crate) struct Goal {
    pub(crate) what: String,
    pub(crate) measured: String,
    pub(crate) target: String,
    pub(crate) pass: Option<bool>,
}

/// A paired ratio as a goal reads it: the median of the rounds' ratios,
/// each round's, and each server's median rate.
fn paired_text(p: &Rounds) -> String {
    let [base, other] = p.rates();
    format!(
        "{:.2}x (rounds {}; median rates {other:.0}/s vs {base:.0}/s)",
        p.ratio(),
        p.rounds_text()
    )
}

fn goal(what: impl Into<String>, measured: String, target: &str, pass: Option<bool>) -> Goal {
    Goal {
        what: what.into(),
        measured,
        target: target.to_string(),
        pass,
    }
}

/// In-process scaling: hello, and the machine's own (a latency-bound CPU
/// loop, a memory-bound loop, an issue-bound loop, one shared counter),
/// each on 1 worker and on 2.
pub(crate) struct Scaling {
    pub(crate) hello: Scaled,
    pub(crate) cpu: Scaled,
    pub(crate) memory: Scaled,
    pub(crate) issue: Scaled,
    pub(crate) line: Scaled,
}

pub(crate) struct Inputs<'a> {
    pub(crate) cells: &'a [Cell],
    pub(crate) prices: &'a [DeadlinePrice],
    pub(crate) hello: &'a HelloHttp,
    pub(crate) scaling: &'a Scaling,
    pub(crate) density: &'a Density,
    pub(crate) component_density: &'a ComponentDensity,
}

pub(crate) fn goals(i: &Inputs) -> Vec<Goal> {
    let mut g = Vec::new();
    for p in i.prices {
        g.push(goal(
            format!("{}: wasmbox's own overhead over `wasmtime run` of the same epoch build (c=1 p50, execution)", p.function),
            format!("{} ({:.2} ms vs {:.2} ms; engine's epoch / plain {})", ratio(p.own_exec()), p.wasmbox / 1e3, p.exec_epoch / 1e3, ratio(p.engine_exec())),
            &format!("<= {OWN_OVERHEAD_GOAL}x"),
            p.met(),
        ));
    }
    if i.prices.is_empty() {
        g.push(goal(
            "own overhead over the epoch build",
            "-".into(),
            &format!("<= {OWN_OVERHEAD_GOAL}x"),
            None,
        ));
    }
    let (wb, ws) = (
        best_rate(i.cells, WASMBOX, "hello"),
        best_rate(i.cells, WASMTIME_SERVE, "hello"),
    );
    g.push(goal(
        "hello req/s, wasmbox / `wasmtime serve` (best concurrency of each)",
        rate_ratio(wb, ws),
        ">= 3x",
        wb.zip(ws).map(|(a, b)| a.0 / b.0 >= 3.0),
    ));
    // Issue 14: the same wasi:http component in both.
    let wc = best_rate(i.cells, WASMBOX_COMPONENT, "hello");
    g.push(goal(
        "hello req/s, wasmbox wasi:http component / `wasmtime serve` same component (best concurrency of each)",
        rate_ratio(wc, ws),
        ">= 1.5x",
        wc.zip(ws).map(|(a, b)| a.0 / b.0 >= 1.5),
    ));
    let h = i.hello;
    let on_label = format!("isolation {}", h.mode);
    let nb = h.pair(hh::ON_NOT_BINDING, hh::NONE_NOT_BINDING, 16, 1000);
    g.push(goal(
        format!(
            "hello c=16, admission not binding (`--capacity-cpu {}`): {on_label} / none (the median of {} alternating rounds' ratios, both servers running)",
            hh::NOT_BINDING,
            ROUNDS
        ),
        nb.map_or("-".into(), paired_text),
        ">= 0.9x",
        nb.map(|p| p.ratio() >= 0.9),
    ));
    let s = &i.scaling;
    let [one, two] = s.hello.rates();
    g.push(goal(
        format!(
            "2 workers / 1, in process (hello; the median of {} alternating rounds' ratios)",
            s.hello.base.len()
        ),
        format!(
            "{:.2}x (rounds {}; median rates {one:.0}/s -> {two:.0}/s; the machine's own, each the median of its rounds taken in turn with hello's: a latency-bound CPU loop {:.2}x, a memory-bound loop {:.2}x, an issue-bound loop {:.2}x with rounds {}; one counter both add to {:.2}x with rounds {})",
            s.hello.ratio(),
            s.hello.rounds_text(),
            s.cpu.ratio(),
            s.memory.ratio(),
            s.issue.ratio(),
            s.issue.rounds_text(),
            s.line.ratio(),
            s.line.rounds_text()
        ),
        ">= 1.8x",
        Some(s.hello.ratio() >= 1.8),
    ));
    let server = h
        .get(hh::ISO_ON, 1, 1000)
        .filter(|r| !r.server_total.is_empty())
        .map(|r| us(r.server_total.value_at_quantile(0.5)));
    g.push(goal(
        format!("hello server-side p50 (Server-Timing `total`, c=1, {on_label})"),
        server.map_or("-".into(), fmt_us),
        "<= 35 µs",
        server.map(|v| v <= 35.0),
    ));
    let p99 = |q| {
        h.get(hh::B2B, 1, q)
            .map(|r| us(r.latency.value_at_quantile(0.99)))
    };
    let b2b = p99(100).zip(p99(1000));
    g.push(goal(
        format!(
            "back-to-back hello, one connection, {on_label}: p99 at `cpu_quota: 100` / at 1000"
        ),
        b2b.map_or("-".into(), |(a, b)| {
            format!("{:.2}x ({} vs {})", a / b, fmt_us(a), fmt_us(b))
        }),
        "<= 2x",
        b2b.map(|(a, b)| a / b <= 2.0),
    ));
    let bare = h.pair(hh::ISO_ON, hh::BARE, 16, 1000);
    g.push(goal(
        format!(
            "hello req/s c=16, wasmbox ({on_label}, defaults) / bare hyper (the median of {ROUNDS} alternating rounds' ratios, both servers running)"
        ),
        bare.map_or("-".into(), paired_text),
        ">= 0.5x",
        bare.map(|p| p.ratio() >= 0.5),
    ));
    let d = i.density;
    let scaled = if d.functions < DENSITY_GOAL_N {
        format!(
            " (scaled down to {} in this run; the goal is at {DENSITY_GOAL_N})",
            d.functions
        )
    } else {
        String::new()
    };
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    g.push(goal(
        format!("density: distinct functions registered{scaled}"),
        d.functions.to_string(),
        &format!(">= {DENSITY_GOAL_N}"),
        Some(d.functions >= DENSITY_GOAL_N),
    ));
    let rss = mib(d.cached.mem.0);
    g.push(goal(
        format!(
            "density: idle RSS after each ran once, defaults (LRU at {}), after a restart",
            d.max_loaded_default
        ),
        format!("{rss:.0} MiB"),
        "<= 300 MiB",
        Some(rss <= 300.0),
    ));
    let p99 = us(d.cached.first.value_at_quantile(0.99));
    let (_, tail) = d.cached.tail(0.99);
    g.push(goal(
        "density: first invocation p99, defaults, after a restart (code in the AOT cache)",
        format!(
            "{} (the slowest 1 %, medians: server {}, of it load {})",
            fmt_us(p99),
            fmt_us(us(tail.server)),
            fmt_us(us(tail.load))
        ),
        "<= 2 ms",
        Some(p99 <= 2000.0),
    ));
    let fds = d.cached.fds.max(d.all_loaded.fds).max(d.cold.fds);
    g.push(goal(
        "density: open descriptors of the server, most over the passes (defaults, all loaded)",
        fds.to_string(),
        &format!("<= {FD_LIMIT}"),
        Some(fds <= FD_LIMIT),
    ));
    let c = i.component_density;
    let (per_c, per_m) = (
        c.component.per_function(c.functions),
        c.module.per_function(c.functions),
    );
    let scaled = if c.functions != COMPONENT_DENSITY_GOAL_N {
        format!(" (N={} in this run)", c.functions)
    } else {
        String::new()
    };
    g.push(goal(
        format!("component density: idle RSS per loaded wasi:http handler / per preview-1 module, N={COMPONENT_DENSITY_GOAL_N} (scaled in --quick){scaled}"),
        format!(
            "{:.2}x ({:.0} KiB vs {:.0} KiB)",
            c.ratio(),
            per_c / 1024.0,
            per_m / 1024.0
        ),
        "<= 1.5x",
        Some(c.ratio() <= 1.5),
    ));
    g
}

/// The goals as a markdown table.
pub(crate) fn write(r: &mut String, goals: &[Goal]) -> std::fmt::Result {
    writeln!(
        r,
        "| goal | measured | target | verdict |\n|---|---|---|---|"
    )?;
    for g in goals {
        let v = match g.pass {
            Some(true) => "PASS",
            Some(false) => "**MISS**",
            None => "not measured",
        };
        writeln!(r, "| {} | {} | {} | {v} |", g.what, g.measured, g.target)?;
    }
    let (pass, all) = (
        goals.iter().filter(|g| g.pass == Some(true)).count(),
        goals.len(),
    );
    writeln!(r, "\n{pass} of {all} goals met in this run.\n")
}

/// `a / b` of two best rates (req/s, at concurrency), with both; `-` if
/// either is missing.
pub(crate) fn rate_ratio(a: Option<(f64, usize)>, b: Option<(f64, usize)>) -> String {
    a.zip(b).map_or("-".into(), |(a, b)| {
        format!(
            "{:.2}x ({:.0}/s at c={} vs {:.0}/s at c={})",
            a.0 / b.0,
            a.0,
            a.1,
            b.0,
            b.1
        )
    })
}
