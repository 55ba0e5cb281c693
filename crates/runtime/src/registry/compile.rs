//! Compiling on a budget.
//!
//! Before anything is compiled, wasmparser walks the module (cheap: no
//! validation, no code generation) and refuses one that is too large, has
//! too many functions or too large a function body. Compiles then run off
//! the async workers on two lanes with their own concurrency: modules below
//! `heavy_threshold_bytes` on the light lane, in this process; larger ones
//! on the heavy lane, in a child process (`<exe> compile-child`, over pipes)
//! that caps its own address space and is killed at the compile timeout.
//! An expensive compile therefore never holds up a cheap one, and one that
//! would exhaust memory or time is refused instead of taking the server
//! down. Without a child executable (`wasmbox run`, unit tests) heavy
//! compiles run in this process, unbounded in time and memory.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;
use wasmtime::{Engine, Module};

use super::background::Blocking;
use super::compiled::{is_component, Compiled};

use super::config::CompileLimits;
use super::error::LoadError;
use super::trusted;
use crate::engine::EngineConfig;

/// Exit status of `compile-child` when the module failed to compile (its
/// stderr holds wasmtime's error). Any other failure is a crash or a kill.
pub const CHILD_EXIT_INVALID: i32 = 3;

/// A text-format parse error without the lines of source it quotes
/// (` 12 | ...`), keeping the message and its `--> file:line:col`: the
/// error goes into the response, and a file in the functions directory can
/// be a symlink to anything this process may read.
fn without_source(error: &str) -> String {
    error
        .lines()
        .filter(|l| !l.contains('|'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks `bytes` (a `.wasm` or `.wat` file's contents) against the
/// limits, and returns the binary module to compile.
pub(super) fn check(
    limits: &CompileLimits,
    file: &str,
    bytes: &[u8],
) -> Result<Vec<u8>, LoadError> {
    let over = |reason: String| LoadError::OverBudget {
        file: file.to_string(),
        reason,
    };
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    if bytes.len() as u64 > limits.max_module_bytes {
        return Err(over(format!(
            "the module is {:.1} MiB, over the {:.1} MiB limit (--max-module-mb)",
            mib(bytes.len() as u64),
            mib(limits.max_module_bytes)
        )));
    }
    let wasm = wat::parse_bytes(bytes)
        .map_err(|e| LoadError::Invalid {
            file: file.to_string(),
            reason: without_source(&e.to_string()),
        })?
        .into_owned();
    if wasm.len() as u64 > limits.max_module_bytes {
        return Err(over(format!(
            "the module is {:.1} MiB as binary wasm, over the {:.1} MiB limit (--max-module-mb)",
            mib(wasm.len() as u64),
            mib(limits.max_module_bytes)
        )));
    }
    let mut functions: u64 = 0;
    for payload in wasmparser::Parser::new(0).parse_all(&wasm) {
        let payload = payload.map_err(|e| LoadError::Invalid {
            file: file.to_string(),
            reason: e.to_string(),
        })?;
        match payload {
            wasmparser::Payload::FunctionSection(r) => {
                functions += u64::from(r.count());
                if functions > u64::from(limits.max_functions) {
                    return Err(over(format!(
                        "the module defines {functions} functions, over the limit of {} (--max-module-functions)",
                        limits.max_functions
                    )));
                }
            }
            wasmparser::Payload::CodeSectionEntry(body) => {
                let len = body.range().len();
                if len > limits.max_function_body_bytes as usize {
                    return Err(over(format!(
                        "a function body is {len} bytes, over the limit of {} bytes (--max-function-body-bytes)",
                        limits.max_function_body_bytes
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(wasm)
}

/// Compiles in process (blocking).
pub(super) fn compile_here(
    engine: &Engine,
    file: &str,
    wasm: &[u8],
) -> Result<Compiled, LoadError> {
    Compiled::compile(engine, wasm).map_err(|e| LoadError::Invalid {
        file: file.to_string(),
        reason: format!("{e:#}"),
    })
}

/// The two compile lanes (see the module docs).
pub(super) struct Compiler {
    limits: CompileLimits,
    engine_config: EngineConfig,
    light: Semaphore,
    heavy: Semaphore,
    /// Heavy compiles running now (not waiting for the lane).
    pub(super) heavy_running: AtomicUsize,
}

impl Compiler {
    pub(super) fn new(limits: CompileLimits, engine_config: EngineConfig) -> Self {
        Compiler {
            light: Semaphore::new(limits.light_concurrency.max(1)),
            heavy: Semaphore::new(limits.heavy_concurrency.max(1)),
            limits,
            engine_config,
            heavy_running: AtomicUsize::new(0),
        }
    }

    /// The light lane, for a test to hold.
    #[cfg(test)]
    pub(super) fn light_lane(&self) -> &Semaphore {
        &self.light
    }

    pub(super) fn limits(&self) -> &CompileLimits {
        &self.limits
    }

    /// Compiles checked binary `wasm` on its lane; for the prewarm, a
    /// light compile runs on its own threads instead (its parallel work on
    /// their rayon pool), at idle priority without a lane's permit (see
    /// `background`).
    pub(super) async fn compile(
        &self,
        engine: &Engine,
        file: &str,
        wasm: Vec<u8>,
        on: Blocking<'_>,
    ) -> Result<Compiled, LoadError> {
        let heavy = wasm.len() as u64 >= self.limits.heavy_threshold_bytes;
        let panicked = |reason: String| LoadError::Io {
            file: file.to_string(),
            reason: format!("the compiler: {reason}"),
        };
        let prewarm_pool = match on {
            Blocking::Background(threads) if !heavy => threads.compile_pool(),
            _ => None,
        };
        // Without its pool (its threads could not start) the prewarm's
        // compile runs as a request's, on the lane.
        let exempt = prewarm_pool.is_some() && on.may_starve();
        let lane = if heavy { &self.heavy } else { &self.light };
        let _permit = match exempt {
            true => None,
            false => Some(lane.acquire().await.expect("never closed")),
        };
        if let Some(pool) = prewarm_pool {
            let (engine, f) = (engine.clone(), file.to_string());
            return on
                .run(move || pool.install(|| compile_here(&engine, &f, &wasm)))
                .await
                .unwrap_or_else(|e| Err(panicked(e)));
        }
        let _running = heavy.then(|| Running::new(&self.heavy_running));
        if let (true, Some(exe)) = (heavy, &self.limits.child) {
            return self.compile_in_child(exe, engine, file, wasm).await;
        }
        let (engine, f) = (engine.clone(), file.to_string());
        tokio::task::spawn_blocking(move || compile_here(&engine, &f, &wasm))
            .await
            .unwrap_or_else(|e| Err(panicked(format!("panicked: {e}"))))
    }

    /// Runs `exe compile-child`, the module on its stdin, and loads the
    /// compiled module it writes to its stdout. Pipes, not files: the
    /// server's root file system is read-only in the manifests, and nobody
    /// else can reach a pipe.
    async fn compile_in_child(
        &self,
        exe: &Path,
        engine: &Engine,
        file: &str,
        wasm: Vec<u8>,
    ) -> Result<Compiled, LoadError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let io = |what: &str, e: std::io::Error| LoadError::Io {
            file: file.to_string(),
            reason: format!("compile child: {what}: {e}"),
        };
        // No environment: the child needs none, and the server's may hold
        // secrets (the admin token) or a stale LIMITED_ENV that would skip
        // the memory limit.
        let mut child = tokio::process::Command::new(exe)
            .env_clear()
            .arg("compile-child")
            .arg("--memory-limit-mb")
            .arg(self.limits.memory_mb.to_string())
            .arg("--max-memory-mb")
            .arg(self.engine_config.max_memory_mib.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| io(&format!("cannot start {}", exe.display()), e))?;
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        // What the child can write is bounded by its own address space.
        let out_limit = self.limits.memory_mb.saturating_mul(1 << 20);
        let exchange = async move {
            let feed = async move {
                if let Some(mut i) = stdin {
                    // A child that stops reading (it crashed) is seen in its
                    // exit status.
                    let _ = i.write_all(&wasm).await;
                }
            };
            let read = |r: Option<_>, limit: u64| async move {
                let mut buf = Vec::new();
                if let Some(r) = r {
                    let r: Box<dyn tokio::io::AsyncRead + Unpin + Send> = r;
                    let _ = r.take(limit).read_to_end(&mut buf).await;
                }
                buf
            };
            let stdout = stdout.map(|s| Box::new(s) as Box<_>);
            let stderr = stderr.map(|s| Box::new(s) as Box<_>);
            let ((), out, err) =
                tokio::join!(feed, read(stdout, out_limit), read(stderr, 64 << 10));
            (out, String::from_utf8_lossy(&err).trim().to_string())
        };
        let timeout = self.limits.timeout;
        let waited = tokio::time::timeout(timeout, async {
            let (out, err) = exchange.await;
            (child.wait().await, out, err)
        })
        .await;
        let over = |reason: String| LoadError::OverBudget {
            file: file.to_string(),
            reason,
        };
        let (status, output, stderr) = match waited {
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(over(format!(
                    "compiling took longer than {} s (--compile-timeout) and was stopped",
                    timeout.as_secs_f64()
                )));
            }
            Ok((status, out, err)) => (status.map_err(|e| io("wait", e))?, out, err),
        };
        if status.success() {
            return trusted::deserialize_child_output(engine, &output).map_err(|e| {
                LoadError::Incompatible {
                    file: file.to_string(),
                    reason: format!("{e:#}"),
                }
            });
        }
        if status.code() == Some(CHILD_EXIT_INVALID) {
            return Err(LoadError::Invalid {
                file: file.to_string(),
                reason: stderr,
            });
        }
        Err(over(format!(
            "compiling ran out of its {} MiB memory budget (--compile-memory-mb) or crashed ({status}): {}",
            self.limits.memory_mb,
            last_line(&stderr)
        )))
    }
}

fn last_line(s: &str) -> &str {
    s.lines().last().unwrap_or("no message")
}

/// Counts itself in a gauge while alive.
struct Running<'a>(&'a AtomicUsize);

impl<'a> Running<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Running(n)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Set (to anything) in the environment of the compile child once it runs
/// under its memory limit.
const LIMITED_ENV: &str = "_WASMBOX_COMPILE_CHILD_LIMITED";

/// The child's side (`wasmbox compile-child`): caps its own address space
/// at `memory_limit_mb`, reads a binary module from stdin, compiles it for an
/// engine configured as the server's, and writes the result to stdout.
/// `Err(true, message)` when the module is invalid, `Err(false, message)`
/// otherwise.
///
/// The limit is set, then the process executes itself again: an allocator
/// reserves its arenas at startup, and a limit set after that would not
/// bind what is already reserved; a fresh image starts within the limit
/// (binary and all), so every mapping counts.
pub fn compile_child_main(
    memory_limit_mb: u64,
    engine: EngineConfig,
) -> Result<(), (bool, String)> {
    if std::env::var_os(LIMITED_ENV).is_none() {
        let limit = memory_limit_mb.saturating_mul(1 << 20);
        rustix::process::setrlimit(
            rustix::process::Resource::As,
            rustix::process::Rlimit {
                current: Some(limit),
                maximum: Some(limit),
            },
        )
        .map_err(|e| (false, format!("cannot limit memory: {e}")))?;
        let exe = std::env::current_exe()
            .map_err(|e| (false, format!("cannot find this executable: {e}")))?;
        use std::os::unix::process::CommandExt;
        let err = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env(LIMITED_ENV, "1")
            .exec();
        return Err((
            false,
            format!("cannot start within {memory_limit_mb} MiB: {err}"),
        ));
    }
    use std::io::{Read, Write};
    let mut wasm = Vec::new();
    std::io::stdin()
        .read_to_end(&mut wasm)
        .map_err(|e| (false, format!("cannot read the module: {e}")))?;
    let engine =
        crate::engine::compile_only_engine(&engine).map_err(|e| (false, format!("{e:#}")))?;
    // Validation failing means the module is invalid; a failure after it
    // (an allocation refused under the limit) is the budget's.
    let compiled = if is_component(&wasm) {
        // wasmtime has no separate validation of a component: an error
        // returned here is the component's (running out of the budget
        // aborts the child instead of returning).
        engine
            .precompile_component(&wasm)
            .map_err(|e| (true, format!("{e:#}")))?
    } else {
        Module::validate(&engine, &wasm).map_err(|e| (true, format!("{e:#}")))?;
        engine
            .precompile_module(&wasm)
            .map_err(|e| (false, format!("{e:#}")))?
    };
    let mut out = std::io::stdout().lock();
    out.write_all(&compiled)
        .and_then(|()| out.flush())
        .map_err(|e| (false, format!("cannot write the compiled module: {e}")))
}
