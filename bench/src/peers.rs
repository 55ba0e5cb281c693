//! The peers wasmbox is compared with, as real processes: the wasmtime CLI
//! (`wasmtime run` per invocation, `wasmtime serve`), native builds of the
//! workloads, and the memory of a process (RSS, PSS).

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::{free_port, repo_root, wait_http_ok};

/// The wasmtime CLI: `$WASMTIME`, else `wasmtime` on PATH, else
/// `~/.cargo/bin/wasmtime`. Returns it with its `--version` line.
pub(crate) fn wasmtime_cli() -> anyhow::Result<(PathBuf, String)> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("WASMTIME") {
        candidates.push(p.into());
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("wasmtime")));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".cargo/bin/wasmtime"));
    }
    for c in candidates {
        if let Ok(out) = Command::new(&c).arg("--version").output() {
            if out.status.success() {
                let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
                return Ok((c, v));
            }
        }
    }
    bail!(
        "the wasmtime CLI was not found (set $WASMTIME, or install it: \
         cargo install wasmtime-cli@50.0.1 --locked; scripts/setup-bench.sh does)"
    )
}

/// The wasmtime CLI options of the epoch-interruption build: compiled with
/// the epoch check in every loop and function entry, and run with a
/// wall-clock timeout (what wasmbox's deadline needs).
pub(crate) const EPOCH_COMPILE: &[&str] = &["-W", "epoch-interruption=y"];
pub(crate) const EPOCH_RUN: &[&str] = &["-W", "epoch-interruption=y", "-W", "timeout=100s"];

/// `wasmtime compile [flags] src -o dir/name[-tag].cwasm`.
pub(crate) fn compile_cwasm(
    wasmtime: &Path,
    src: &Path,
    dir: &Path,
    flags: &[&str],
) -> anyhow::Result<PathBuf> {
    let stem = src.file_stem().unwrap_or_default().to_string_lossy();
    let tag = if flags.is_empty() { "" } else { "-flags" };
    let out = dir.join(format!("{stem}{tag}.cwasm"));
    let st = Command::new(wasmtime)
        .arg("compile")
        .args(flags)
        .arg(src)
        .arg("-o")
        .arg(&out)
        .status()
        .context("run wasmtime compile")?;
    if !st.success() {
        bail!("wasmtime compile {} failed: {st}", src.display());
    }
    Ok(out)
}

/// The native build of a workload (functions/build.sh puts it there).
pub(crate) fn native(name: &str) -> anyhow::Result<PathBuf> {
    let p = repo_root().join("functions/native").join(name);
    if !p.exists() {
        bail!("{} not found: run functions/build.sh", p.display());
    }
    Ok(p)
}

/// A `wasmtime serve` of hello as a wasi:http component.
pub(crate) struct WasmtimeServe {
    child: Child,
    pub(crate) port: u16,
}

impl WasmtimeServe {
    /// Serves functions/peers/hellohttp.wasm; `extra` are options such as
    /// `-O pooling-allocator=y`. Returns once `GET /` answers 200.
    pub(crate) fn start(wasmtime: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let component = repo_root().join("functions/peers/hellohttp.wasm");
        if !component.exists() {
            bail!("{} not found: run functions/build.sh", component.display());
        }
        let port = free_port()?;
        let log = tempfile::tempfile()?;
        // `-S cli`: the component's std links wasi:cli (environment, exit).
        let mut child = Command::new(wasmtime)
            .args(["serve", "-S", "cli"])
            .args(extra)
            .arg("--addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg(&component)
            .stdout(Stdio::null())
            .stderr(log.try_clone()?)
            .spawn()
            .context("start wasmtime serve")?;
        if let Err(e) = wait_http_ok(port, "/", Duration::from_secs(60), || {
            child.try_wait().ok().flatten().is_some()
        }) {
            let _ = child.kill();
            let _ = child.wait();
            let mut stderr = String::new();
            let mut log = log;
            let _ = log.seek(std::io::SeekFrom::Start(0));
            let _ = log.read_to_string(&mut stderr);
            return Err(e.context(format!("wasmtime serve did not come up: {}", stderr.trim())));
        }
        Ok(WasmtimeServe { child, port })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for WasmtimeServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process's resident memory: (RSS, PSS) in bytes. PSS divides shared
/// pages among the processes sharing them, so it is the fair per-process
/// figure when many copies of one program run.
pub(crate) fn memory(pid: u32) -> anyhow::Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .with_context(|| format!("read /proc/{pid}/smaps_rollup"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in smaps_rollup"))?;
        let kb: u64 = line
            .split_whitespace()
            .nth(1)
            .context("malformed smaps_rollup")?
            .parse()?;
        Ok(kb * 1024)
    };
    Ok((field("Rss:")?, field("Pss:")?))
}
