//! Wasm against native execution time, like for like: both are whole
//! processes, timed from spawn to exit. Wasm is `wasmbox run` (wasmbox's own
//! sandbox: the server's engine settings, epoch deadline, memory cap) with
//! the module's compiled code already in an AOT cache dir, so no compile is
//! timed; native is the workload's x86_64 build of the same source.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use anyhow::{bail, Context};

use super::workload::Workload;
use crate::peers;

/// Median wall time (ms) of `runs` whole-process runs of a workload:
/// (`wasmbox run`, native).
pub(crate) fn wasm_vs_native(w: &Workload, src: &Path, runs: usize) -> anyhow::Result<(f64, f64)> {
    let wasmbox = std::env::current_exe()?.with_file_name("wasmbox");
    let cache = tempfile::tempdir()?;
    let wasm_cmd = || {
        let mut c = Command::new(&wasmbox);
        c.args(["run", "--log-level", "error", "--cache-dir"])
            .arg(cache.path())
            .arg("--memory-mb")
            .arg(w.memory_mb.to_string())
            .arg(src)
            .args(&w.args);
        c
    };
    let native = peers::native(w.name)?;
    let native_cmd = || {
        let mut c = Command::new(&native);
        c.args(&w.args);
        c
    };
    // Fills the AOT cache (and the page cache for both binaries).
    check(w, "wasmbox run", wasm_cmd().output()?)?;
    check(w, "native", native_cmd().output()?)?;
    let (mut wasm, mut nat) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        wasm.push(timed(w, "wasmbox run", &mut wasm_cmd())?);
        nat.push(timed(w, "native", &mut native_cmd())?);
    }
    Ok((median(&mut wasm), median(&mut nat)))
}

fn timed(w: &Workload, what: &str, cmd: &mut Command) -> anyhow::Result<f64> {
    let t = Instant::now();
    let out = cmd.output().with_context(|| format!("spawn {cmd:?}"))?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    check(w, what, out)?;
    Ok(ms)
}

fn check(w: &Workload, what: &str, out: Output) -> anyhow::Result<()> {
    if !out.status.success() || !w.expect.accepts(&out.stdout) {
        bail!(
            "{} under {what}: {} {} {}",
            w.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr[..out.stderr.len().min(300)])
        );
    }
    Ok(())
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
