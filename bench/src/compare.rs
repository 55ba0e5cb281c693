//! `wasmbox-bench compare`: wasmbox against its peers, side by side in one
//! run (issue #5). For hello and the paper's five workloads:
//! 1. wasmbox over HTTP (CPU isolation on: the default `auto`);
//! 2. process per invocation: `wasmtime run --allow-precompiled` of a
//!    `.cwasm`, and the workload's native build, fork/exec per request;
//! 3. the reference's per-request pipeline, re-enacted (reference.rs);
//! 4. `wasmtime serve` of hello as a wasi:http component;
//! 5. density (density.rs);
//! 6. Wasm vs native execution time.
//!
//! Writes bench/results/compare.md and three SVG plots next to it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use wasmbox_runtime::sandbox::{self, CancelToken, Stdio as GuestStdio};
use wasmbox_runtime::{EngineConfig, Invocation};

use crate::load::{self, Expect, HttpTarget, LoadResult};
use crate::peers::{self, WasmtimeServe};
use crate::reference::RefServer;
use crate::{machine, repo_root, InProcess, ServerProc};

/// How long and how big: `--smoke` (CI: every table filled, seconds),
/// `--quick` (under 3 minutes), or the full run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scale {
    Smoke,
    Quick,
    Full,
}

impl Scale {
    fn window(self) -> Duration {
        match self {
            Scale::Smoke => Duration::from_millis(150),
            Scale::Quick => Duration::from_millis(600),
            Scale::Full => Duration::from_secs(4),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Scale::Smoke => "--smoke",
            Scale::Quick => "--quick",
            Scale::Full => "",
        }
    }
}

const CONCURRENCY: [usize; 4] = [1, 2, 16, 64];

/// One function as every system runs it.
struct Workload {
    name: &'static str,
    /// argv[1..] at this scale.
    args: Vec<String>,
    /// Memory-Request (MB) for wasmbox and the re-enactment.
    memory_mb: u64,
    /// What a correct answer contains.
    expect: Expect,
}

/// The paper's five at their default sizes (full), or smaller.
fn workloads(scale: Scale) -> Vec<(&'static str, Vec<&'static str>, u64)> {
    match scale {
        Scale::Full => vec![
            ("jsoncompress", vec!["200000"], 300),
            ("scryptwork", vec!["1000"], 64),
            ("rsakeygen", vec!["2048"], 64),
            ("imageblur", vec!["1000", "10"], 128),
            ("genpdf", vec!["500"], 128),
        ],
        Scale::Quick => vec![
            ("jsoncompress", vec!["20000"], 128),
            ("scryptwork", vec!["100"], 64),
            ("rsakeygen", vec!["1024"], 64),
            ("imageblur", vec!["300", "10"], 64),
            ("genpdf", vec!["100"], 64),
        ],
        Scale::Smoke => vec![
            ("jsoncompress", vec!["1000"], 64),
            ("scryptwork", vec!["5"], 64),
            ("rsakeygen", vec!["1024"], 64),
            ("imageblur", vec!["64", "2"], 64),
            ("genpdf", vec!["10"], 64),
        ],
    }
}

/// The `digest=...` token a native run prints: what every system must print.
fn expected_digest(name: &str, args: &[String]) -> anyhow::Result<String> {
    let out = Command::new(peers::native(name)?).args(args).output()?;
    if !out.status.success() {
        bail!(
            "native {name} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find(|t| t.starts_with("digest="))
        .map(str::to_owned)
        .with_context(|| format!("native {name} printed no digest: {text}"))
}

/// One measured cell: a system running a function at a concurrency.
pub(crate) struct Cell {
    pub(crate) system: &'static str,
    pub(crate) function: &'static str,
    pub(crate) concurrency: usize,
    pub(crate) result: LoadResult,
}

pub(crate) const WASMBOX: &str = "wasmbox";
pub(crate) const WASMTIME_SERVE: &str = "wasmtime serve";
pub(crate) const REFERENCE: &str = "reference pipeline (re-enacted)";
pub(crate) const WASMTIME_RUN: &str = "wasmtime run per request";
pub(crate) const NATIVE: &str = "native fork/exec per request";

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

fn fmt_us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} ms", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.0} µs")
    } else if v >= 0.1 {
        format!("{v:.1} µs")
    } else {
        // Server-Timing carries 0.1 µs resolution.
        "< 0.1 µs".to_string()
    }
}

pub(crate) fn run(scale: Scale, out: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let window = scale.window();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let peers_required = std::env::var_os("WASMBOX_REQUIRE_PEERS").is_some_and(|v| v == "1");
    let wasmtime = match peers::wasmtime_cli() {
        Ok(w) => Some(w),
        Err(e) if peers_required => return Err(e),
        Err(e) => {
            eprintln!("note: {e}; its rows are skipped");
            None
        }
    };
    let functions = repo_root().join("functions");
    let peer_dir = tempfile::tempdir()?;

    // The functions: hello, then the workloads at this scale.
    let mut all: Vec<Workload> = vec![Workload {
        name: "hello",
        args: vec![],
        memory_mb: 64,
        expect: Expect::Len(20),
    }];
    for (name, args, memory_mb) in workloads(scale) {
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        let digest = expected_digest(name, &args)?;
        all.push(Workload {
            name,
            args,
            memory_mb,
            expect: Expect::Contains(digest),
        });
    }
    let source = |w: &Workload| {
        if w.name == "hello" {
            functions.join("hello.wat")
        } else {
            functions.join(format!("{}.wasm", w.name))
        }
    };

    let cells_total = all.len() * CONCURRENCY.len() * 4;
    let bar = progress(cells_total as u64, "side by side");
    let mut cells: Vec<Cell> = Vec::new();
    let mut measure = |system: &'static str,
                       w: &Workload,
                       conc: usize,
                       f: &mut dyn FnMut() -> anyhow::Result<LoadResult>|
     -> anyhow::Result<()> {
        bar.set_message(format!("{system}: {} c={conc}", w.name));
        let what = format!("{system} {} c={conc}", w.name);
        let result = f().with_context(|| what.clone())?.all_ok(&what)?;
        cells.push(Cell {
            system,
            function: w.name,
            concurrency: conc,
            result,
        });
        bar.inc(1);
        Ok(())
    };
    let query = |w: &Workload| {
        let q: Vec<String> = w.args.iter().map(|a| format!("arg={a}")).collect();
        if q.is_empty() {
            format!("/{}", w.name)
        } else {
            format!("/{}?{}", w.name, q.join("&"))
        }
    };
    // Every request of a function carries the same resources.
    let resources_for = |memory_mb: u64| -> Arc<dyn Fn(usize) -> (u64, u64) + Send + Sync> {
        Arc::new(move |_| (1000, memory_mb))
    };

    // 1. wasmbox, CPU isolation auto (cgroup-v1 on this machine).
    {
        let server = ServerProc::start_with(&[])?;
        for w in &all {
            let target = HttpTarget {
                port: server.port,
                path: query(w),
                resources: resources_for(w.memory_mb),
                expect: w.expect.clone(),
            };
            // Compile before measuring (as a warm server has).
            rt.block_on(load::http(&target, 1, Duration::ZERO))?
                .all_ok(w.name)?;
            for conc in CONCURRENCY {
                measure(WASMBOX, w, conc, &mut || {
                    rt.block_on(load::http(&target, conc, window))
                })?;
            }
        }
    }
    // 3. The re-enacted reference pipeline, over HTTP the same way.
    let reference = {
        let sources: Vec<(&str, PathBuf)> = all.iter().map(|w| (w.name, source(w))).collect();
        RefServer::start(&sources)?
    };
    for w in &all {
        let target = HttpTarget {
            port: reference.port,
            path: query(w),
            resources: resources_for(w.memory_mb),
            expect: w.expect.clone(),
        };
        for conc in CONCURRENCY {
            measure(REFERENCE, w, conc, &mut || {
                rt.block_on(load::http(&target, conc, window))
            })?;
        }
    }
    let reference_cgroups = reference.cgroups;
    drop(reference);
    // 2. Process per invocation.
    let mut skipped: Vec<String> = Vec::new();
    let mut wasmtime_version = String::from("not installed");
    if let Some((cli, version)) = &wasmtime {
        wasmtime_version = version.clone();
        for w in &all {
            let cwasm = peers::compile_cwasm(cli, &source(w), peer_dir.path())?;
            let (cli, args) = (cli.clone(), w.args.clone());
            let cmd: Arc<dyn Fn() -> Command + Send + Sync> = Arc::new(move || {
                let mut c = Command::new(&cli);
                c.args(["run", "--allow-precompiled"])
                    .arg(&cwasm)
                    .args(&args);
                c
            });
            for conc in CONCURRENCY {
                measure(WASMTIME_RUN, w, conc, &mut || {
                    load::processes(cmd.clone(), &w.expect, conc, window)
                })?;
            }
        }
    } else {
        skipped.push(format!(
            "{WASMTIME_RUN} and {WASMTIME_SERVE}: the wasmtime CLI is not installed"
        ));
    }
    for w in all.iter().filter(|w| w.name != "hello") {
        let (exe, args) = (peers::native(w.name)?, w.args.clone());
        let cmd: Arc<dyn Fn() -> Command + Send + Sync> = Arc::new(move || {
            let mut c = Command::new(&exe);
            c.args(&args);
            c
        });
        for conc in CONCURRENCY {
            measure(NATIVE, w, conc, &mut || {
                load::processes(cmd.clone(), &w.expect, conc, window)
            })?;
        }
    }
    // 4. wasmtime serve, hello only.
    if let Some((cli, _)) = &wasmtime {
        let serve = WasmtimeServe::start(cli, &[])?;
        let target = HttpTarget {
            port: serve.port,
            path: "/".into(),
            resources: resources_for(64),
            expect: Expect::Len(20),
        };
        for conc in CONCURRENCY {
            measure(WASMTIME_SERVE, &all[0], conc, &mut || {
                rt.block_on(load::http(&target, conc, window))
            })?;
        }
    }
    bar.finish_and_clear();

    // 5. Density.
    let (n, procs) = match scale {
        Scale::Smoke => (10, 2),
        Scale::Quick => (200, 4),
        Scale::Full => (1000, 10),
    };
    let bar = progress(0, "density");
    let density = crate::density::run(
        &rt,
        n,
        procs,
        wasmtime.as_ref().map(|(p, _)| p.as_path()),
        &bar,
    )
    .context("density")?;
    bar.finish_and_clear();

    // 6. Wasm vs native execution time.
    let runs = match scale {
        Scale::Smoke => 1,
        Scale::Quick => 3,
        Scale::Full => 5,
    };
    let bar = progress((all.len() - 1) as u64, "wasm vs native");
    let mut exec = Vec::new();
    for w in all.iter().filter(|w| w.name != "hello") {
        bar.set_message(w.name);
        exec.push((w.name, w.args.clone(), wasm_vs_native(w, &source(w), runs)?));
        bar.inc(1);
    }
    bar.finish_and_clear();

    let report = Report {
        scale,
        window,
        wasmtime_version,
        cells: &cells,
        skipped: &skipped,
        reference_cgroups,
        density: &density,
        exec: &exec,
        all: &all,
        elapsed: started.elapsed(),
    };
    let plots_dir = out.with_file_name("plots");
    std::fs::create_dir_all(&plots_dir)?;
    let plots = crate::plots::draw(&plots_dir, &cells, &density)?;
    let text = report.render(out, &plots)?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, text)?;
    println!(
        "wrote {} and {} plots in {}",
        out.display(),
        plots.len(),
        plots_dir.display()
    );
    Ok(())
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>14} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    bar.set_prefix(what.to_string());
    bar
}

/// Median execution time (ms) of a workload: in wasmbox's sandbox
/// (instantiate + run, compiled beforehand) and as a native process (wall
/// time of fork/exec + run; the process start is < 1 ms of it).
fn wasm_vs_native(w: &Workload, src: &Path, runs: usize) -> anyhow::Result<(f64, f64)> {
    let InProcess {
        engine,
        function: f,
        ..
    } = InProcess::load(
        EngineConfig {
            max_instances: 4,
            ..Default::default()
        },
        src,
    )?;
    let mut argv = vec![w.name.to_string()];
    argv.extend(w.args.iter().cloned());
    let (mut wasm, mut native) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let o = sandbox::invoke(
            &engine,
            &f,
            Invocation {
                argv: argv.clone(),
                stdio: GuestStdio::Captured {
                    stdin: bytes::Bytes::new(),
                    stdout_cap: 1 << 20,
                    stderr_cap: 1 << 16,
                },
                memory_cap: (w.memory_mb as usize) << 20,
                timeout: Duration::from_secs(120),
                throttle: None,
            },
            &CancelToken::default(),
        );
        if o.result.is_err() || !w.expect.accepts(&o.stdout) {
            bail!(
                "{} in wasm: {:?} {}",
                w.name,
                o.result,
                String::from_utf8_lossy(&o.stdout)
            );
        }
        wasm.push((o.timings.instantiate + o.timings.execute).as_secs_f64() * 1e3);
        let t = Instant::now();
        let out = Command::new(peers::native(w.name)?)
            .args(&w.args)
            .output()?;
        native.push(t.elapsed().as_secs_f64() * 1e3);
        if !out.status.success() || !w.expect.accepts(&out.stdout) {
            bail!(
                "{} natively: {}",
                w.name,
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
    Ok((median(&mut wasm), median(&mut native)))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Report<'a> {
    scale: Scale,
    window: Duration,
    wasmtime_version: String,
    cells: &'a [Cell],
    skipped: &'a [String],
    reference_cgroups: bool,
    density: &'a crate::density::Density,
    exec: &'a [(&'static str, Vec<String>, (f64, f64))],
    all: &'a [Workload],
    elapsed: Duration,
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
    /// Why each missed goal is missed, for the goals this run missed.
    fn limits(&self, r: &mut String) -> anyhow::Result<()> {
        let p50 = |h: &Histogram<u64>| us(h.value_at_quantile(0.5));
        let mut notes = Vec::new();
        let wb1 = self.cell(WASMBOX, "hello", 1);
        if let Some(c) = wb1.filter(|c| !c.result.server_total.is_empty()) {
            let total = p50(&c.result.server_total);
            if total > 50.0 {
                notes.push(format!(
                    "**Server-side time.** `total` ({}) covers reading the request, the registry's `stat` of the file, \
                     admission, the hand-off to a worker thread (a futex wake when the worker is parked), the quota step, \
                     instantiation and `_start`. In process the invocation alone takes 4-6 µs (bench/results/core.md); \
                     the rest is the hand-off and the HTTP stack sharing two cores with the load generator.",
                    fmt_us(total)
                ));
            }
            if let Some(run) = self.cell(WASMTIME_RUN, "hello", 1) {
                let (run, client) = (p50(&run.result.latency), p50(&c.result.latency));
                if run / client < 50.0 {
                    notes.push(format!(
                        "**`wasmtime run` per invocation.** A process of the wasmtime CLI with a precompiled module starts, \
                         runs hello and exits in {} here, a fast machine for process creation. wasmbox's client-observed \
                         {} at c=1 is mostly the loopback HTTP round trip, which a process-per-invocation platform pays as \
                         well; against wasmbox's server-side time ({}) the ratio is {:.0}x.",
                        fmt_us(run),
                        fmt_us(client),
                        fmt_us(total),
                        run / total
                    ));
                }
            }
        }
        let d = self.density;
        let per = d.loaded_cached.0.saturating_sub(d.rss_start) as f64 / d.functions as f64;
        let at_1000 = (d.rss_start as f64 + 1000.0 * per) / (1 << 20) as f64;
        // Extrapolating from a small N would mostly measure fixed costs.
        if d.functions >= 100 && at_1000 > 256.0 {
            notes.push(format!(
                "**Idle memory with many functions.** Each function that has run keeps its compiled code loaded: the \
                 {} KiB `echo` guest compiles to about 210 KiB of machine code and metadata, mapped from the AOT cache \
                 and dirtied by relocation, plus its module and pre-instantiation state: {:.0} KiB per function in this \
                 run, so about {at_1000:.0} MiB at 1,000. Warm pool slots are capped at 16 (wasmtime's default of 100 \
                 added about 0.2 MiB per function). Staying under 256 MiB needs unloading functions that have been idle \
                 (reloading one from the AOT cache takes the cached first-invocation time above); not done yet. \
                 On first boot the compiler's freed working memory, kept by the allocator, adds to that.",
                d.module_bytes / 1024,
                per / 1024.0
            ));
        }
        if us(d.first_cold.value_at_quantile(0.99)) > 2000.0 {
            notes.push(
                "**First invocation without a cache.** A function never seen before is compiled on its first request \
                 (Cranelift, both cores). Deploy with `--cache-dir` kept across restarts, or precompile with \
                 `wasmbox compile` and `--allow-precompiled`, and the first invocation is a load from disk (the cached row)."
                    .to_string(),
            );
        }
        for (name, _, (wasm, native)) in self.exec {
            if wasm / native <= 1.6 {
                continue;
            }
            notes.push(match *name {
                "rsakeygen" => format!(
                    "**rsakeygen, {:.1}x native.** Key generation is big-integer multiplication. x86_64 multiplies two \
                     64-bit limbs into 128 bits in one instruction; core Wasm has no such instruction (the wide-arithmetic \
                     proposal adds it), so every limb product is emulated with several 64-bit multiplies.",
                    wasm / native
                ),
                "imageblur" | "scryptwork" => format!(
                    "**{name}, {:.2}x native.** Its hot loop is vectorised in both builds (the guests are compiled with \
                     simd128; without it scrypt ran 3.0x native), but Wasm SIMD is 128-bit only and Cranelift's code is \
                     less tuned than LLVM's, and every loop carries the epoch (deadline) check.",
                    wasm / native
                ),
                _ => format!("**{name}, {:.2}x native.**", wasm / native),
            });
        }
        if !notes.is_empty() {
            writeln!(r, "## What limits the missed goals\n")?;
            for n in notes {
                writeln!(r, "{n}\n")?;
            }
        }
        Ok(())
    }

    fn cell(&self, system: &str, function: &str, conc: usize) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.system == system && c.function == function && c.concurrency == conc)
    }

    fn best_rate(&self, system: &str, function: &str) -> Option<(f64, usize)> {
        self.cells
            .iter()
            .filter(|c| c.system == system && c.function == function)
            .map(|c| (c.result.rate, c.concurrency))
            .max_by(|a, b| a.0.total_cmp(&b.0))
    }

    fn render(&self, out: &Path, plots: &[(String, PathBuf)]) -> anyhow::Result<String> {
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
        let (wb_best, ws_best) = (
            self.best_rate(WASMBOX, "hello"),
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
            for system in [WASMBOX, WASMTIME_SERVE, REFERENCE, WASMTIME_RUN, NATIVE] {
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
            for system in [WASMTIME_SERVE, REFERENCE, WASMTIME_RUN, NATIVE] {
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

        self.limits(&mut r)?;

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
