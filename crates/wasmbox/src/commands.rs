//! The `run` and `compile` subcommands.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use wasmbox_runtime::sandbox::{self, CancelToken, Stdio};
use wasmbox_runtime::{EpochTicker, Failure, Invocation, Registry, WasmEngine};

use crate::config::{CompileArgs, CompileChildArgs, RunArgs};

/// `wasmbox run MODULE [ARGS...]`: one invocation with the server's limits,
/// the process's stdio, and the guest's exit status as ours. Like
/// `wasmtime run`: a trap exits with 134 (as SIGABRT would), a timeout with
/// 124 (as `timeout` does), a refused memory growth with 137 (as an OOM kill).
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let engine =
        WasmEngine::new(args.engine.engine_config(2)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let _ticker = EpochTicker::start(&engine)?;
    let dir = args
        .module
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let registry = Arc::new(
        Registry::new(engine.clone(), args.limits.registry_config(dir))
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let function = registry.load_path(&args.module)?;
    let memory_mb = args.memory_mb.unwrap_or(args.limits.default_memory_mb);
    if memory_mb == 0 || memory_mb > args.engine.max_memory_mb {
        anyhow::bail!(
            "--memory-mb {memory_mb} must be between 1 and --max-memory-mb {}",
            args.engine.max_memory_mb
        );
    }
    let argv0 = args
        .module
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut argv = vec![argv0];
    argv.extend(args.args);
    let inv = Invocation {
        argv,
        stdio: Stdio::Inherit,
        memory_cap: (memory_mb << 20) as usize,
        timeout: args.limits.timeout,
        throttle: None,
        env: Vec::new(),
        cpu_budget: None,
    };
    let outcome = sandbox::invoke(&engine, &function, inv, &CancelToken::default());
    let _ = std::io::stdout().flush();
    Ok(match outcome.result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Exit(code)) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(f) => {
            let (msg, code) = match f {
                Failure::Trap(m) => (format!("trap: {m}"), 134),
                Failure::Timeout(d) => (format!("timed out after {:.3} s", d.as_secs_f64()), 124),
                Failure::MemoryCap { cap, wanted } => (
                    format!(
                        "memory cap hit: tried to grow to {} MiB, cap is {} MiB (--memory-mb)",
                        wanted.div_ceil(1 << 20),
                        cap >> 20
                    ),
                    137,
                ),
                other => (format!("{other:?}"), 1),
            };
            eprintln!("wasmbox: {}: {msg}", args.module.display());
            ExitCode::from(code)
        }
    })
}

/// `wasmbox compile IN -o OUT`: ahead-of-time compilation for this engine.
pub fn compile(args: CompileArgs) -> anyhow::Result<ExitCode> {
    let engine =
        WasmEngine::new(args.engine.engine_config(1)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let bytes = std::fs::read(&args.input)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.input.display()))?;
    let out = args
        .output
        .clone()
        .unwrap_or_else(|| args.input.with_extension("cwasm"));
    let compiled = wasmbox_runtime::registry::precompile(&engine.engine, &bytes)
        .map_err(|e| anyhow::anyhow!("{} failed to compile: {e:#}", args.input.display()))?;
    std::fs::write(&out, compiled)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    eprintln!(
        "wasmbox: compiled {} -> {}",
        args.input.display(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `wasmbox compile-child --memory-limit-mb N` (internal, started by the
/// server for a heavy compile; module in on stdin, compiled module out on
/// stdout): exit 0 with the output written, exit
/// `CHILD_EXIT_INVALID` with wasmtime's error on stderr if the module is
/// invalid, anything else (1, or a signal) if the budget ran out.
pub fn compile_child(args: CompileChildArgs) -> ExitCode {
    match wasmbox_runtime::registry::compile_child_main(
        args.memory_limit_mb,
        args.engine.engine_config(1),
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err((invalid, message)) => {
            eprintln!("{message}");
            if invalid {
                ExitCode::from(wasmbox_runtime::registry::CHILD_EXIT_INVALID as u8)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
