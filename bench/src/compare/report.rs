//! The markdown report of `compare`: goals, the side-by-side tables,
//! density, Wasm vs native, what limits the missed goals, and the plots.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hdrhistogram::Histogram;

use super::systems::{
    self, Cell, ALL, NATIVE, REFERENCE, WASMBOX, WASMBOX_COMPONENT, WASMTIME_RUN,
    WASMTIME_RUN_EPOCH, WASMTIME_SERVE,
};
use super::units::{fmt_us, us};
use super::workload::{ExecTime, Scale, Workload, CONCURRENCY, HELLO_QUOTAS};
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
    pub(crate) component_density: &'a crate::density_component::ComponentDensity,
    pub(crate) exec: &'a [ExecTime],
    pub(crate) all: &'a [Workload],
    pub(crate) elapsed: Duration,
    pub(crate) prices: &'a [super::deadline::DeadlinePrice],
    pub(crate) goals: &'a [super::goals::Goal],
    pub(crate) hello: &'a crate::hello_http::HelloHttp,
    pub(crate) scaling: &'a super::goals::Scaling,
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
            "Command: `./bench/run.sh` (builds everything, then `target/release/wasmbox-bench compare{}`). \
             This run took {:.0} s. Load: closed loop, hyper HTTP/1.1 clients with one keep-alive connection each \
             (or one OS thread each spawning processes), {} ms per cell and at least one request per client, \
             latencies in hdrhistogram. Peers: {}. The workloads' requests carry `cpu_quota: 1000`; hello's carry \
             `cpu_quota` {} round robin, so every invocation changes its worker's quota.\n",
            self.scale.name(),
            self.elapsed.as_secs_f64(),
            self.window.as_millis(),
            self.wasmtime_version,
            HELLO_QUOTAS.map(|q| q.to_string()).join("/")
        )?;
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let hello_len = crate::bare_hyper::HELLO.len();
        writeln!(r, "Systems:\n")?;
        writeln!(r, "- **{WASMBOX}**: `wasmbox serve` (release), defaults: CPU isolation `auto` (one cgroup per worker thread where cgroups are writable, quota rewritten when it changes), admission at the detected capacity ({cores} cores here: at most {cores} invocations of `cpu_quota: 1000` run at once, the rest queue FIFO), with the admission queue sized to hold every request the highest concurrency keeps waiting (`--max-queue-mb`: the largest `Memory-Request` x {}, `--max-function-queue-share 1`, `--queue-timeout {}`), so that no cell is answered 503.", super::workload::MOST_CONCURRENT, super::QUEUE_TIMEOUT)?;
        writeln!(r, "- **{REFERENCE}**: the Go prototype's per-request steps re-enacted in Rust with the wasmtime crate wasmbox uses (bench/src/reference.rs), not the prototype itself: a new OS thread, mkdir a cgroup + quota + move the thread in{}, a new Engine, the precompiled module loaded from disk, WASI p1 with stdin/stdout in temp files, `_start`, move back + rmdir.", if self.reference_cgroups { "" } else { " (SKIPPED here: cgroup v1 cpu is not writable)" })?;
        writeln!(r, "- **{WASMTIME_RUN}**: `wasmtime run --allow-precompiled X.cwasm ARGS` as a child process per request (the `.cwasm` from `wasmtime compile`): the container-style process-per-invocation baseline without a container runtime.")?;
        writeln!(r, "- **{WASMTIME_RUN_EPOCH}**: the same with the module compiled with `{}` and run with `{}`: the engine's deadline check, which wasmbox's deadline needs and the plain build has not.", crate::peers::EPOCH_COMPILE.join(" "), crate::peers::EPOCH_RUN.join(" "))?;
        writeln!(r, "- **{NATIVE}**: the workload built for x86_64 from the same source (functions/build.sh), a child process per request.")?;
        writeln!(r, "- **{WASMBOX_COMPONENT}**: wasmbox (same server, same CPU isolation) serving `functions/hellohttp.wasm`, the very component `wasmtime serve` runs, as `/hellohttp`; hello only. The throughput goal against `wasmtime serve` compares these two.\n")?;
        writeln!(r, "- **{WASMTIME_SERVE}**: `wasmtime serve` (defaults) of hello as a wasi:http component (functions/rust/hellohttp, wasm32-wasip2), answering the same {hello_len} bytes; hello only.\n")?;
        if self.scale.process_concurrency().len() < CONCURRENCY.len() {
            writeln!(
                r,
                "At this scale the process-per-request systems are measured at c={} only (`-` in the tables).\n",
                self.scale.process_concurrency().iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",")
            )?;
        }
        for s in self.skipped {
            writeln!(r, "Skipped: {s}.\n")?;
        }

        // Goals.
        writeln!(r, "## Goals\n")?;
        super::goals::write(&mut r, self.goals)?;
        writeln!(r, "### Earlier goals (issue 5)\n")?;
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
            super::goals::rate_ratio(wb_best, ws_best),
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
        goal_row(&mut r, &format!("isolation cost p50 (Server-Timing `isolation`, hello c=1, cpu_quota {} round robin: a quota change per invocation), re-enacted reference / wasmbox", HELLO_QUOTAS.map(|q| q.to_string()).join("/")), iso.map_or("-".into(), |(a, b)| format!("{:.0}x below ({} vs {})", b / a.max(0.001), fmt_us(a), fmt_us(b))), ">= 10x below", iso_ratio.map(|x| x >= 10.0), iso_ratio.map_or(String::new(), |x| format!("{x:.1}x")))?;
        let d = self.density;
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

        super::density_section::write(&mut r, d)?;
        super::density_section::write_components(&mut r, self.component_density)?;
        super::deadline::write(&mut r, self.prices)?;
        super::hello_section::write(&mut r, self.hello)?;

        // Wasm vs native.
        writeln!(r, "## Wasm vs native execution time\n")?;
        writeln!(r, "Median of runs, like for like: both are whole processes timed from spawn to exit. Wasm: `wasmbox run` (wasmbox's sandbox with the server's engine settings and deadline, no CPU quota) with the compiled code already in its AOT cache dir; native: the x86_64 build of the same source. Both print the same digest.\n")?;
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

        super::limits::write(
            &mut r,
            self.cells,
            self.density,
            self.exec,
            self.scaling.hello.rates()[0],
        )?;

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
