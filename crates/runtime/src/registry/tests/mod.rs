//! Registry tests at the runtime layer: real wasmtime, real files in a
//! temporary directory, inline WAT guests.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::engine::EngineConfig;
use crate::sandbox::{self, CancelToken, Invocation, Stdio};

mod aot_cache;
mod budget;
mod commands;
mod loading;
mod prewarm;
mod resolution;
mod table;

fn engine() -> WasmEngine {
    WasmEngine::new(EngineConfig {
        max_instances: 4,
        ..Default::default()
    })
    .unwrap()
}

fn registry(
    engine: &WasmEngine,
    dir: &Path,
    allow_precompiled: bool,
    cache_dir: Option<&Path>,
    max_loaded: usize,
) -> Arc<Registry> {
    let config = RegistryConfig {
        allow_precompiled,
        cache_dir: cache_dir.map(Path::to_path_buf),
        max_loaded,
        ..config(dir)
    };
    with_config(engine, config)
}

/// Defaults, but every request looks at the file (these tests replace
/// files and expect the next request to see it).
fn config(dir: &Path) -> RegistryConfig {
    RegistryConfig {
        revalidate_after: Duration::ZERO,
        ..RegistryConfig::new(dir.to_path_buf())
    }
}

fn with_config(engine: &WasmEngine, config: RegistryConfig) -> Arc<Registry> {
    Arc::new(Registry::new(engine.clone(), config).unwrap())
}

/// A WASI command that prints `msg` (ASCII, no quotes or backslashes).
fn guest(msg: &str) -> String {
    format!(
        r#"(module
          (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (data (i32.const 100) "{msg}")
          (func (export "_start")
            (i32.store (i32.const 0) (i32.const 100))
            (i32.store (i32.const 4) (i32.const {len}))
            (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        len = msg.len()
    )
}

/// `guest(msg)` precompiled for `engine`: the contents of a `.cwasm` file.
fn precompiled(engine: &WasmEngine, msg: &str) -> Vec<u8> {
    engine
        .engine
        .precompile_module(guest(msg).as_bytes())
        .unwrap()
}

fn name(s: &str) -> FunctionName {
    FunctionName::parse(s).unwrap()
}

/// Runs `f` once (on a blocking thread, as the sandbox requires) and returns
/// what it printed.
async fn run(engine: &WasmEngine, f: &Arc<Function>) -> String {
    let (engine, f) = (engine.clone(), f.clone());
    let outcome = tokio::task::spawn_blocking(move || {
        let inv = Invocation {
            argv: vec![f.file_name.clone()],
            stdio: Stdio::Captured {
                stdin: Default::default(),
                stdout_cap: 1024,
                stderr_cap: 1024,
            },
            memory_cap: 1 << 20,
            timeout: Duration::from_secs(60),
            throttle: None,
            env: Vec::new(),
            cpu_budget: None,
        };
        sandbox::invoke(&engine, &f, inv, &CancelToken::default())
    })
    .await
    .unwrap();
    outcome.result.expect("the guest runs to completion");
    String::from_utf8(outcome.stdout.to_vec()).unwrap()
}

/// Writes `contents` to `dir/file` under a temporary name and renames it
/// into place, as a deployment would: the file gets a new inode.
fn replace(dir: &Path, file: &str, contents: impl AsRef<[u8]>) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

/// Waits until `cond` holds, checking every millisecond; fails after 30 s.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A stand-in for a slow compile child: a shell script that, called as
/// `script compile-child ...`, reads the module from stdin, waits until the
/// test opens its FIFO for writing, then writes `output` (a module the test
/// precompiled for the engine, as the real child would have) to stdout. It stands in for a
/// compile that takes long, deterministically: the test decides when it
/// ends. Heavy-lane compiles (modules of at least `threshold` bytes) go to
/// it.
struct SlowCompiler {
    _dir: tempfile::TempDir,
    script: std::path::PathBuf,
    fifo: std::path::PathBuf,
}

impl SlowCompiler {
    fn new(output: &[u8]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("gate");
        let out = dir.path().join("out.cwasm");
        let script = dir.path().join("slow-compiler");
        std::fs::write(&out, output).unwrap();
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let text = format!(
            "#!/bin/sh\ncat >/dev/null\ncat '{}' >/dev/null\ncat '{}'\n",
            fifo.display(),
            out.display()
        );
        // Written by a short-lived process, so no descriptor open for
        // writing leaks into a concurrently forked child (ETXTBSY on exec).
        let wrote = std::process::Command::new("sh")
            .arg("-c")
            .arg("printf '%s' \"$0\" > \"$1\" && chmod 755 \"$1\"")
            .arg(&text)
            .arg(&script)
            .status()
            .unwrap();
        assert!(wrote.success());
        SlowCompiler {
            _dir: dir,
            script,
            fifo,
        }
    }

    /// Compile limits sending modules of at least `threshold` bytes to the
    /// stand-in.
    fn limits(&self, threshold: u64) -> CompileLimits {
        CompileLimits {
            heavy_threshold_bytes: threshold,
            child: Some(self.script.clone()),
            ..CompileLimits::default()
        }
    }

    /// Lets every waiting compile finish (from a blocking thread: opening
    /// the FIFO waits for its reader).
    async fn release(&self) {
        let fifo = self.fifo.clone();
        tokio::task::spawn_blocking(move || drop(std::fs::File::create(fifo).unwrap()))
            .await
            .unwrap();
    }
}

impl Drop for SlowCompiler {
    /// Should an assertion fail with a compile still waiting, open the FIFO
    /// read-write (never blocks on Linux) so the script ends.
    fn drop(&mut self) {
        let rw = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.fifo);
        drop(rw);
    }
}

/// `guest(msg)` with `pad` bytes of extra data: a module large enough for
/// the heavy lane.
fn big_guest(msg: &str, pad: usize) -> String {
    guest(msg).replacen(
        "(func (export",
        &format!(
            "(data (i32.const 4096) \"{}\")\n(func (export",
            "x".repeat(pad)
        ),
        1,
    )
}
