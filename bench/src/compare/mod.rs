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

mod component;
mod limits;
mod report;
pub(crate) mod systems;
mod units;
mod workload;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use wasmbox_runtime::sandbox::{self, CancelToken, Stdio as GuestStdio};
use wasmbox_runtime::{EngineConfig, Invocation};

use self::report::Report;
use self::systems::{
    Cell, NATIVE, REFERENCE, WASMBOX, WASMBOX_COMPONENT, WASMTIME_RUN, WASMTIME_SERVE,
};
pub(crate) use self::workload::Scale;
use self::workload::{expected_digest, workloads, Workload, CONCURRENCY};
use crate::load::{self, Expect, HttpTarget, LoadResult};
use crate::peers::{self, WasmtimeServe};
use crate::reference::RefServer;
use crate::{repo_root, InProcess, ServerProc};

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
        // The wasi:http hello component, the file `wasmtime serve` runs.
        let target = component::target(server.port);
        rt.block_on(load::http(&target, 1, Duration::ZERO))?
            .all_ok(component::PATH)?;
        for conc in CONCURRENCY {
            measure(WASMBOX_COMPONENT, &all[0], conc, &mut || {
                rt.block_on(load::http(&target, conc, window))
            })?;
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
