//! Registry tests at the runtime layer: real wasmtime, real files in a
//! temporary directory, inline WAT guests.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::engine::EngineConfig;
use crate::sandbox::{self, CancelToken, Invocation, Stdio};

mod aot_cache;
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
        dir: dir.to_path_buf(),
        allow_precompiled,
        cache_dir: cache_dir.map(Path::to_path_buf),
        max_loaded,
    };
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
