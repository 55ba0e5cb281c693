//! The markdown report of `compare`: goals, the side-by-side tables,
//! density, Wasm vs native, what limits the missed goals, and the plots.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hdrhistogram::Histogram;

use super::systems::{
    self, Cell, ALL, NATIVE, REFERENCE, WASMBOX, WASMBOX_COMPONENT, WASMTIME_RUN, WASMTIME_SERVE,
};
use super::units::{fmt_us, us};
use super::workload::{ExecTime, Scale, Workload, CONCURRENCY};
use crate::machine;

/// Everything one run measured, to render.
pub(crate) struct Report<'a> {
    pub(crate) scale: Scale,
    pub(crate) window: Duration,
    pub(crate) wasmtime_version: String,
    pub(crate) cells: &'a [Cell],
    pub(crate) skipped: &'a [String],
    pub(crate) reference_cgroups: bool,
    pub(crate) density: &'a crate::density::Density,
    pub(crate) exec: &'a [ExecTime],
    pub(crate) all: &'a [Workload],
    pub(crate) elapsed: Duration,
}

fn goal_row(
    r: &mut String,
    what: &str,
    achieved: String,
    goal: &str,
    met: Option<bool>,
    by: String,
) -> std::fmt::Result {
    let verdict = match met {
        Some(true) => "met".to_string(),
        Some(false) => format!("**missed** ({by})"),
        None => "not measured".to_string(),
    };
    writeln!(r, "| {what} | {achieved} | {goal} | {verdict} |")
}

impl Report<'_> {
    fn cell(&self, system: &str, function: &str, conc: usize) -> Option<&Cell> {
        systems::cell(self.cells, system, function, conc)
    }

    fn best_rate(&self, system: &str, function: &str) -> Option<(f64, usize)> {
        systems::best_rate(self.cells, system, function)
    }

    /// The markdown text; `out` is where it goes (the plots' paths are
    /// written relative to it).
    pub(crate) fn render(&self, out: &Path, plots: &[(String, PathBuf)]) -> anyhow::Result<String> {
        let mut r = String::new();
        let p50 = |h: &Histogram<u64>| us(h.value_at_quantile(0.5));
        writeln!(r, "# wasmbox side by side with its peers\n")?;
        writeln!(r, "{}\n", machine())?;
        writeln!(
            r,
            "Command: `./bench/run.sh` (builds everything, then `target/release/wasmbox-bench compare {}`). \
             This run took {:.0} s. Load: closed loop, hyper HTTP/1.1 clients with one keep-alive connection each \
             (or one OS thread each spawning processes), {} ms per cell and at least one request per client, \
             latencies in hdrhistogram. Peers: {}. All requests carry `cpu_quota: 1000`.\n",
            self.scale.name(),
            self.elapsed.as_secs_f64(),
            self.window.as_millis(),
            self.wasmtime_version
        )?;
        writeln!(r, "Systems:\n")?;
        writeln!(r, "- **{WASMBOX}**: `wasmbox serve` (release), defaults: CPU isolation `auto` (cgroup-v1 here: one cgroup per worker thread, quota rewritten per invocation), admission at the detected capacity (2 cores: 2 invocations of `cpu_quota: 1000` run at once, the rest queue FIFO).")?;
        writeln!(r, "- **{REFERENCE}**: the Go prototype's per-request steps re-enacted in Rust with wasmtime 48 (bench/src/reference.rs), not the prototype itself: a new OS thread, mkdir a cgroup + quota + move the thread in{}, a new Engine, the precompiled module loaded from disk, WASI p1 with stdin/stdout in temp files, `_start`, move back + rmdir.", if self.reference_cgroups { "" } else { " (SKIPPED here: cgroup v1 cpu is not writable)" })?;
        writeln!(r, "- **{WASMTIME_RUN}**: `wasmtime run --allow-precompiled X.cwasm ARGS` as a child process per request (the `.cwasm` from `wasmtime compile`): the container-style process-per-invocation baseline without a container runtime.")?;
        writeln!(r, "- **{NATIVE}**: the workload built for x86_64 from the same source (functions/build.sh), a child process per request.")?;
        writeln!(r, "- **{WASMBOX_COMPONENT}**: wasmbox (same server, same CPU isolation) serving `functions/hellohttp.wasm`, the very component `wasmtime serve` runs, as `/hellohttp`; hello only. The throughput goal against `wasmtime serve` compares these two.\n")?;
        writeln!(r, "- **{WASMTIME_SERVE}**: `wasmtime serve` (defaults) of hello as a wasi:http component (functions/rust/hellohttp, wasm32-wasip2), answering the same 20 bytes; hello only.\n")?;
        for s in self.skipped {
            writeln!(r, "Skipped: {s}.\n")?;
        }

        // Goals.
        writeln!(r, "## Goals\n")?;
        writeln!(
            r,
            "| goal | achieved | target | verdict |\n|---|---|---|---|"
        )?;
        let wb1 = self.cell(WASMBOX, "hello", 1);
        let overhead = wb1
            .filter(|c| !c.result.server_total.is_empty())
            .map(|c| p50(&c.result.server_total));
        goal_row(
            &mut r,
            "hello server-side time p50 (Server-Timing `total`, c=1)",
            overhead.map_or("-".into(), fmt_us),
            "<= 50 µs",
            overhead.map(|v| v <= 50.0),
            overhead.map_or(String::new(), |v| format!("{:.1}x over", v / 50.0)),
        )?;
        // Like for like: the same component in both, when wasmbox served it.
        let (wb_best, ws_best) = (
            self.best_rate(WASMBOX_COMPONENT, "hello")
                .or_else(|| self.best_rate(WASMBOX, "hello")),
            self.best_rate(WASMTIME_SERVE, "hello"),
        );
        let ratio = wb_best.zip(ws_best).map(|(a, b)| a.0 / b.0);
        goal_row(
            &mut r,
            "hello throughput vs `wasmtime serve` (best concurrency of each)",
            match (wb_best, ws_best) {
                (Some(a), Some(b)) => format!(
                    "{:.2}x ({:.0}/s at c={} vs {:.0}/s at c={})",
                    a.0 / b.0,
                    a.0,
                    a.1,
                    b.0,
                    b.1
                ),
                _ => "-".into(),
            },
            ">= 1.2x",
            ratio.map(|x| x >= 1.2),
            ratio.map_or(String::new(), |x| {
                format!("{:.0} % short", (1.2 - x) / 1.2 * 100.0)
            }),
        )?;
        let run_ratio = wb1
            .zip(self.cell(WASMTIME_RUN, "hello", 1))
            .map(|(a, b)| p50(&b.result.latency) / p50(&a.result.latency));
        goal_row(
            &mut r,
            "hello p50 latency, `wasmtime run` per invocation / wasmbox (c=1)",
            run_ratio.map_or("-".into(), |x| format!("{x:.0}x lower")),
            ">= 50x lower",
            run_ratio.map(|x| x >= 50.0),
            run_ratio.map_or(String::new(), |x| {
                format!("{:.0} % short", (50.0 - x) / 50.0 * 100.0)
            }),
        )?;
        let iso = wb1
            .zip(self.cell(REFERENCE, "hello", 1))
            .filter(|(a, b)| {
                !a.result.isolation.is_empty()
                    && !b.result.isolation.is_empty()
                    && self.reference_cgroups
            })
            .map(|(a, b)| (p50(&a.result.isolation), p50(&b.result.isolation)));
        let iso_ratio = iso.map(|(a, b)| b / a.max(0.001));
        goal_row(&mut r, "isolation cost p50 (Server-Timing `isolation`, hello c=1), re-enacted reference / wasmbox", iso.map_or("-".into(), |(a, b)| format!("{:.0}x below ({} vs {})", b / a.max(0.001), fmt_us(a), fmt_us(b))), ">= 10x below", iso_ratio.map(|x| x >= 10.0), iso_ratio.map_or(String::new(), |x| format!("{x:.1}x")))?;
        let d = self.density;
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let target = if d.functions == 1000 {
            "<= 256 MiB"
        } else {
            "<= 256 MiB (at 1,000; this run has fewer)"
        };
        for (when, rss) in [
            (
                "after a restart, each loaded once from the AOT cache",
                d.loaded_cached.0,
            ),
            ("on first boot, each compiled once", d.loaded.0),
        ] {
            let idle = mib(rss);
            goal_row(
                &mut r,
                &format!("{} functions: idle RSS of the server, {when}", d.functions),
                format!("{idle:.0} MiB"),
                target,
                Some(idle <= 256.0),
                format!("{:.0} MiB over", idle - 256.0),
            )?;
        }
        let p99_cached = us(d.first_cached.value_at_quantile(0.99));
        let p99_cold = us(d.first_cold.value_at_quantile(0.99));
        goal_row(
            &mut r,
            "first invocation p99 across them (compiled code in the AOT cache, after a restart)",
            fmt_us(p99_cached),
            "<= 2 ms",
            Some(p99_cached <= 2000.0),
            format!("{:.1}x over", p99_cached / 2000.0),
        )?;
        goal_row(
            &mut r,
            "first invocation p99 across them (nothing cached: compiles on first use)",
            fmt_us(p99_cold),
            "<= 2 ms",
            Some(p99_cold <= 2000.0),
            format!("{:.1}x over", p99_cold / 2000.0),
        )?;
        for (name, _, (wasm, native)) in self.exec {
            let x = wasm / native;
            goal_row(
                &mut r,
                &format!("{name}: Wasm / native execution time"),
                format!("{x:.2}x ({wasm:.1} ms vs {native:.1} ms)"),
                "<= 1.6x",
                Some(x <= 1.6),
                format!("{:.0} % over", (x - 1.6) / 1.6 * 100.0),
            )?;
        }
        writeln!(r)?;

        // Side by side.
        writeln!(r, "## Latency and throughput, side by side\n")?;
        writeln!(r, "p50 / p99 client-observed latency and requests/s per concurrency. `server` is Server-Timing `total` p50 where the server sends it.\n")?;
        for w in self.all {
            writeln!(r, "### {} {}\n", w.name, w.args.join(" "))?;
            write!(r, "| system |")?;
            for c in CONCURRENCY {
                write!(r, " c={c} p50 / p99 | c={c} req/s |")?;
            }
            writeln!(r, " server p50 (c=1) |")?;
            writeln!(r, "|---|{}---|", "---|---|".repeat(CONCURRENCY.len()))?;
            for system in ALL {
                if self.cell(system, w.name, 1).is_none() {
                    continue;
                }
                write!(r, "| {system} |")?;
                for c in CONCURRENCY {
                    match self.cell(system, w.name, c) {
                        Some(cell) => write!(
                            r,
                            " {} / {} | {:.0} |",
                            fmt_us(p50(&cell.result.latency)),
                            fmt_us(us(cell.result.latency.value_at_quantile(0.99))),
                            cell.result.rate
                        )?,
                        None => write!(r, " - | - |")?,
                    }
                }
                let server = self
                    .cell(system, w.name, 1)
                    .filter(|c| !c.result.server_total.is_empty())
                    .map_or("-".to_string(), |c| fmt_us(p50(&c.result.server_total)));
                writeln!(r, " {server} |")?;
            }
            // Pairwise ratios at c=1 (latency) and best throughput.
            let base = self
                .cell(WASMBOX, w.name, 1)
                .map(|c| p50(&c.result.latency));
            let mut ratios = Vec::new();
            for system in ALL.into_iter().filter(|s| *s != WASMBOX) {
                if let (Some(b), Some(c)) = (base, self.cell(system, w.name, 1)) {
                    let (wr, sr) = (
                        self.best_rate(WASMBOX, w.name),
                        self.best_rate(system, w.name),
                    );
                    ratios.push(format!(
                        "{system}: p50 {:.1}x wasmbox's, best throughput wasmbox {:.2}x",
                        p50(&c.result.latency) / b,
                        wr.zip(sr).map_or(0.0, |(a, b)| a.0 / b.0)
                    ));
                }
            }
            writeln!(
                r,
                "\nRatios (c=1 p50 latency; best req/s over the concurrencies): {}.\n",
                ratios.join("; ")
            )?;
        }

        // Density.
        writeln!(
            r,
            "## Density: {} functions in one wasmbox vs one process per function\n",
            d.functions
        )?;
        writeln!(r, "The functions are copies of `echo` ({} KiB of Wasm, Rust std), each made distinct by a custom section, invoked once each in turn on one connection. \
             wasmbox runs with its defaults plus `--cache-dir`: it keeps at most 512 functions compiled in memory (`--max-loaded-functions`), \
             unloading the least recently used, which reload on their next request (from the AOT cache here: the cached first-invocation row is that cost).\n", d.module_bytes / 1024)?;
        writeln!(r, "| measure | result |\n|---|---|")?;
        writeln!(
            r,
            "| wasmbox RSS after start, nothing compiled | {:.1} MiB |",
            mib(d.rss_start)
        )?;
        writeln!(
            r,
            "| first invocation, compiling: p50 / p99 | {} / {} |",
            fmt_us(us(d.first_cold.value_at_quantile(0.5))),
            fmt_us(p99_cold)
        )?;
        writeln!(
            r,
            "| idle after all ran once: RSS / PSS | {:.1} / {:.1} MiB |",
            mib(d.loaded.0),
            mib(d.loaded.1)
        )?;
        writeln!(
            r,
            "| after a restart, first invocation from the AOT cache: p50 / p99 | {} / {} |",
            fmt_us(us(d.first_cached.value_at_quantile(0.5))),
            fmt_us(p99_cached)
        )?;
        writeln!(
            r,
            "| idle after all ran once from the cache: RSS / PSS | {:.1} / {:.1} MiB |",
            mib(d.loaded_cached.0),
            mib(d.loaded_cached.1)
        )?;
        writeln!(
            r,
            "| wasmbox per function, from the cache (idle RSS / N) | {:.0} KiB |",
            d.loaded_cached.0 as f64 / 1024.0 / d.functions as f64
        )?;
        match d.per_process {
            Some((k, rss, pss)) => {
                writeln!(r, "| one `wasmtime serve` process per function: {k} processes, summed RSS / PSS | {:.1} / {:.1} MiB |", mib(rss), mib(pss))?;
                writeln!(
                    r,
                    "| per function, process each (RSS / PSS) | {:.1} / {:.1} MiB |",
                    mib(rss) / k as f64,
                    mib(pss) / k as f64
                )?;
                writeln!(
                    r,
                    "| ratio, per function: process (PSS) / wasmbox (RSS, from the cache) | {:.0}x |",
                    (pss as f64 / k as f64)
                        / (d.loaded_cached.0 as f64 / d.functions as f64)
                )?;
            }
            None => writeln!(
                r,
                "| one process per function | skipped: {} |",
                d.per_process_skip.as_deref().unwrap_or("?")
            )?,
        }
        writeln!(r, "\nA process per function here is only the Wasm host; a container adds its runtime's shim and, under Knative, a queue-proxy sidecar per pod, so the real per-function cost is higher.\n")?;

        // Wasm vs native.
        writeln!(r, "## Wasm vs native execution time\n")?;
        writeln!(r, "Median of runs; Wasm: instantiate + run in wasmbox's sandbox (code compiled beforehand, no CPU quota); native: wall time of the process. Both print the same digest.\n")?;
        writeln!(
            r,
            "| workload | args | Wasm | native | Wasm / native |\n|---|---|---|---|---|"
        )?;
        for (name, args, (wasm, native)) in self.exec {
            writeln!(
                r,
                "| {name} | {} | {wasm:.1} ms | {native:.1} ms | {:.2}x |",
                args.join(" "),
                wasm / native
            )?;
        }
        writeln!(r)?;

        super::limits::write(&mut r, self.cells, self.density, self.exec)?;

        writeln!(r, "## Plots\n")?;
        for (title, path) in plots {
            let rel = path
                .strip_prefix(out.parent().unwrap_or(Path::new(".")))
                .unwrap_or(path);
            writeln!(r, "![{title}]({})\n", rel.display())?;
        }
        Ok(r)
    }
}
