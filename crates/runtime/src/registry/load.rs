//! Loading one file: read it (and the version read, from the open file),
//! gate precompiled native code, check the compile budget, compile (through
//! the AOT cache, on a compile lane), check it is a WASI command, and link
//! it.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use wasmtime::Linker;

use super::aot_cache::AotCache;
use super::background::Blocking;
use super::compile::{self, Compiler};
use super::compiled::{is_component, Compiled};
use super::config::RegistryConfig;
use super::error::LoadError;
use super::resolve::{self, Version};
use super::trusted;
use crate::component::{self, host::ComponentHost};
use crate::engine::WasmEngine;
use crate::function::{Code, Function};
use crate::store::{self, Host};

/// What is left to do after the cheap, blocking part of a load.
enum Prepared {
    /// Loaded already (precompiled file, or a cache hit).
    Ready(Compiled),
    /// Binary wasm within the budget, to compile, and its cache entry.
    Compile {
        wasm: Vec<u8>,
        entry: Option<PathBuf>,
    },
}

/// Turns a file into a linked [`Function`]: the engine, the WASI linker,
/// the precompiled gate, the compile budget and the disk cache, and counts
/// of what it did.
pub(super) struct Loader {
    engine: WasmEngine,
    linker: Linker<Host>,
    /// WASI 0.2 and wasi:http, for components.
    component_linker: wasmtime::component::Linker<ComponentHost>,
    allow_precompiled: bool,
    cache: Option<AotCache>,
    pub(super) compiler: Compiler,
    /// Loads of large files (at least the heavy-compile threshold) that may
    /// hold their bytes at once: taken before a file is read, so that loads
    /// queued for the heavy lane cannot pile up holding up to
    /// `--max-module-mb` each.
    large_reads: Arc<Semaphore>,
    /// The same for small files (their own gate: a small file's load never
    /// waits behind a large one's).
    small_reads: Arc<Semaphore>,
    /// Loads (compilations or deserializations) started so far.
    pub(super) loads: AtomicUsize,
    /// Loads served from the disk cache.
    pub(super) cache_hits: AtomicUsize,
}

fn read_error(file: &str, e: ReadError, limit: u64) -> LoadError {
    let e = match e {
        ReadError::Io(e) => e,
        ReadError::TooLarge(size) => {
            return LoadError::OverBudget {
                file: file.to_string(),
                reason: format!(
                    "the file is {:.1} MiB, over the {:.1} MiB a function file of its kind may have (--max-module-mb; {READ_LIMIT_FACTOR} x that for .cwasm)",
                    size as f64 / f64::from(1 << 20),
                    limit as f64 / f64::from(1 << 20)
                ),
            }
        }
    };
    if resolve::is_absent(&e) {
        LoadError::NotFound(file.to_string())
    } else {
        LoadError::Io {
            file: file.to_string(),
            reason: e.to_string(),
        }
    }
}

/// Compiled code (`.cwasm`) is larger than the module it came from: a file
/// is read only if it is at most this many times `--max-module-mb`.
const READ_LIMIT_FACTOR: u64 = 8;

/// Large files' loads holding their bytes at once beyond those compiling on
/// the heavy lane (so a cache hit or a `.cwasm` need not wait for a heavy
/// compile to finish): with the defaults at most 4 x 64 MiB read and held.
const LARGE_READS_BEYOND_LANE: usize = 3;

/// Small files' loads holding their bytes at once (each under the heavy
/// threshold, 1 MiB by default).
const SMALL_READS: usize = 16;

/// Why a file was not read.
enum ReadError {
    Io(std::io::Error),
    /// Its size, above the read limit.
    TooLarge(u64),
}

/// Reads `path` (at most `limit` bytes, checked by fstat before anything is
/// allocated, so a huge or sparse file cannot exhaust memory) and returns
/// its bytes with the version of the file they were read from (fstat of the
/// open file, not an earlier stat). Opened non-blocking, so a FIFO swapped
/// in does not hang the thread.
fn read(path: &Path, limit: u64) -> Result<(Vec<u8>, Version), ReadError> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(ReadError::Io)?;
    let meta = f.metadata().map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::Io(std::io::ErrorKind::NotFound.into()));
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // A file that grew since the fstat is read only up to the limit (+1,
    // to notice), and its version differs from `meta`'s: the caller reads
    // it again.
    (&mut f)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge(bytes.len() as u64));
    }
    Ok((bytes, Version::of(&meta)))
}

impl Loader {
    /// A loader for `engine`; opens (and checks) the cache dir if set.
    /// Fails if it is not to be trusted, or if WASI cannot be linked.
    pub(super) fn new(engine: WasmEngine, config: &RegistryConfig) -> wasmtime::Result<Self> {
        let linker = store::linker(&engine.engine)?;
        let component_linker = component::host::linker(&engine.engine)?;
        let cache = match &config.cache_dir {
            Some(dir) => Some(
                AotCache::open(dir, config.cache_max_bytes)
                    .map_err(|e| wasmtime::format_err!("{e}"))?,
            ),
            None => None,
        };
        let limits = &config.compile;
        Ok(Loader {
            large_reads: Arc::new(Semaphore::new(
                limits.heavy_concurrency + LARGE_READS_BEYOND_LANE,
            )),
            small_reads: Arc::new(Semaphore::new(SMALL_READS)),
            compiler: Compiler::new(config.compile.clone(), engine.config.clone()),
            engine,
            linker,
            component_linker,
            allow_precompiled: config.allow_precompiled,
            cache,
            loads: AtomicUsize::new(0),
            cache_hits: AtomicUsize::new(0),
        })
    }

    /// Loads one file off the async workers: reading and cache lookups
    /// `on` the file system pool or the prewarm's idle threads, compiling
    /// on its lane (see `background`). Returns the version of the bytes
    /// read, when any were.
    pub(super) async fn load(
        self: &Arc<Self>,
        on: Blocking<'_>,
        file: String,
        path: PathBuf,
        size: u64,
    ) -> (Result<Arc<Function>, LoadError>, Option<Version>) {
        // Held until the load is done: its bytes live that long.
        let _reading = self.read_gate(on, size).await;
        self.loads.fetch_add(1, Ordering::Relaxed);
        let (this, f, p) = (self.clone(), file.clone(), path.clone());
        let limit = self.read_limit(&path);
        let prepared = on
            .run(move || {
                let (bytes, version) = read(&p, limit).map_err(|e| read_error(&f, e, limit))?;
                Ok::<_, LoadError>((this.prepare(&f, &p, &bytes), version))
            })
            .await;
        let (prepared, version) = match prepared {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return (Err(e), None),
            Err(reason) => return (Err(LoadError::Io { file, reason }), None),
        };
        let result = match prepared {
            Err(e) => Err(e),
            Ok(Prepared::Ready(module)) => self.finish(&file, &path, module),
            Ok(Prepared::Compile { wasm, entry }) => {
                match self
                    .compiler
                    .compile(&self.engine.engine, &file, wasm, on)
                    .await
                {
                    Err(e) => Err(e),
                    Ok(module) => {
                        let (this, name) = (self.clone(), file.clone());
                        on.run(move || {
                            this.store(entry.as_deref(), &module);
                            this.finish(&file, &path, module)
                        })
                        .await
                        .unwrap_or_else(|reason| Err(LoadError::Io { file: name, reason }))
                    }
                }
            }
        };
        (result, Some(version))
    }

    /// A permit to hold a file of `size` bytes in memory (see
    /// `large_reads`); none for the prewarm, whose two threads bound what
    /// it holds, and whose permits, held while it starves (at idle
    /// priority) or while a read hangs with no deadline (its reads have
    /// none), would keep requests waiting (see `background`).
    async fn read_gate(&self, on: Blocking<'_>, size: u64) -> Option<OwnedSemaphorePermit> {
        if matches!(on, Blocking::Background(_)) {
            return None;
        }
        let gate = if size >= self.compiler.limits().heavy_threshold_bytes {
            &self.large_reads
        } else {
            &self.small_reads
        };
        let permit = gate.clone().acquire_owned().await;
        Some(permit.expect("the read gates are never closed"))
    }

    /// For the prewarm, past the table's room: compiles the file into the
    /// AOT cache unless the cache holds an entry for its bytes already,
    /// which is left as it is (not deserialized: its first request does
    /// that, and one that fails to load is compiled again then). A file
    /// that is not a module within the budget is left to its first
    /// request, which reports what is wrong. Returns the version of the
    /// bytes read, when any were, and whether it compiled the file into
    /// the cache.
    pub(super) async fn precache(
        self: &Arc<Self>,
        on: Blocking<'_>,
        file: String,
        path: PathBuf,
        size: u64,
    ) -> (Option<Version>, bool) {
        if self.cache.is_none() {
            return (None, false);
        }
        let _reading = self.read_gate(on, size).await;
        let (this, f) = (self.clone(), file.clone());
        let limit = self.read_limit(&path);
        let read = on
            .run(move || {
                let (bytes, version) = read(&path, limit).ok()?;
                let todo = this.to_cache(&f, &bytes);
                Some((todo, version))
            })
            .await;
        let Ok(Some((todo, version))) = read else {
            return (None, false);
        };
        let Some((wasm, entry)) = todo else {
            return (Some(version), false);
        };
        self.loads.fetch_add(1, Ordering::Relaxed);
        let engine = &self.engine.engine;
        let Ok(module) = self.compiler.compile(engine, &file, wasm, on).await else {
            return (Some(version), false);
        };
        let this = self.clone();
        let _ = on.run(move || this.store(Some(&entry), &module)).await;
        (Some(version), true)
    }

    /// What [`Loader::precache`] compiles for `bytes`: the checked module
    /// and its cache entry, if it is a module within the budget and not in
    /// the cache yet.
    fn to_cache(&self, file: &str, bytes: &[u8]) -> Option<(Vec<u8>, PathBuf)> {
        if wasmtime::Engine::detect_precompiled(bytes).is_some() {
            return None;
        }
        let wasm = compile::check(self.compiler.limits(), file, bytes).ok()?;
        let entry = self.cache.as_ref()?.entry(&self.engine.engine, bytes);
        (!entry.is_file()).then_some((wasm, entry))
    }

    /// The most bytes a function file may have to be read at all:
    /// `--max-module-mb`, or for precompiled code (larger than the module it
    /// came from) [`READ_LIMIT_FACTOR`] times that.
    fn read_limit(&self, path: &Path) -> u64 {
        let max = self.compiler.limits().max_module_bytes;
        if path.extension().is_some_and(|e| e == "cwasm") {
            max.saturating_mul(READ_LIMIT_FACTOR)
        } else {
            max
        }
    }

    /// Reads and compiles one file, all on this thread (`wasmbox run`):
    /// the budget is checked, compiles run in process.
    pub(super) fn load_blocking(
        &self,
        file: &str,
        path: &Path,
    ) -> Result<Arc<Function>, LoadError> {
        self.loads.fetch_add(1, Ordering::Relaxed);
        let limit = self.read_limit(path);
        let (bytes, _) = read(path, limit).map_err(|e| read_error(file, e, limit))?;
        let module = match self.prepare(file, path, &bytes)? {
            Prepared::Ready(module) => module,
            Prepared::Compile { wasm, entry } => {
                let module = compile::compile_here(&self.engine.engine, file, &wasm)?;
                self.store(entry.as_deref(), &module);
                module
            }
        };
        self.finish(file, path, module)
    }

    /// The cheap part (blocking): the precompiled gate, the budget check,
    /// the cache lookup.
    fn prepare(&self, file: &str, path: &Path, bytes: &[u8]) -> Result<Prepared, LoadError> {
        let file = file.to_string();
        if wasmtime::Engine::detect_precompiled(bytes).is_some() {
            if !self.allow_precompiled {
                return Err(LoadError::PrecompiledNotAllowed(file));
            }
            return trusted::deserialize(&self.engine.engine, bytes)
                .map(Prepared::Ready)
                .map_err(|e| LoadError::Incompatible {
                    file,
                    reason: e.to_string(),
                });
        }
        if path.extension().is_some_and(|e| e == "cwasm") {
            return Err(LoadError::Invalid {
                file,
                reason: "a .cwasm file must hold a module precompiled by `wasmbox compile`".into(),
            });
        }
        let wasm = compile::check(self.compiler.limits(), &file, bytes)?;
        let entry = self
            .cache
            .as_ref()
            .map(|c| c.entry(&self.engine.engine, bytes));
        if let (Some(cache), Some(entry)) = (&self.cache, &entry) {
            if let Some(module) = cache.lookup(&self.engine.engine, entry, is_component(&wasm)) {
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Prepared::Ready(module));
            }
        }
        Ok(Prepared::Compile { wasm, entry })
    }

    fn store(&self, entry: Option<&Path>, module: &Compiled) {
        if let (Some(cache), Some(entry)) = (&self.cache, entry) {
            cache.store(entry, module);
        }
    }

    /// Checks the module is a WASI command (or the component a command or
    /// an HTTP handler) and links it.
    fn finish(
        &self,
        file: &str,
        path: &Path,
        compiled: Compiled,
    ) -> Result<Arc<Function>, LoadError> {
        let file = file.to_string();
        let module = match compiled {
            Compiled::Module(m) => m,
            Compiled::Component(c) => {
                let code = component::link(&self.component_linker, &c).map_err(|reason| {
                    LoadError::Link {
                        file: file.clone(),
                        reason,
                    }
                })?;
                return Ok(self.function(file, path, code));
            }
        };
        if let Err(why) = command_start(&module) {
            return Err(LoadError::NotACommand { file, why });
        }
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Link {
                file: file.clone(),
                reason: format!("{e:#}"),
            })?;
        Ok(self.function(file, path, Code::Module(pre)))
    }

    fn function(&self, file: String, path: &Path, code: Code) -> Arc<Function> {
        let function = Function {
            id: Arc::from(file.as_str()),
            file_name: file,
            path: path.to_path_buf(),
            code,
            load_nanos: Default::default(),
        };
        tracing::info!(function = %function.file_name, kind = function.kind(), world = function.world().map(|w| w.as_str()), "loaded");
        Arc::new(function)
    }
}

/// Whether `module` exports a command's `_start`: a function that takes no
/// arguments and returns nothing, the only kind the sandbox calls. `Err`
/// says what it has instead, so a module with another one is refused when
/// it loads, not failed on every call.
fn command_start(module: &wasmtime::Module) -> Result<(), String> {
    use wasmtime::ExternType;
    let list = |types: &mut dyn Iterator<Item = wasmtime::ValType>| {
        types.map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
    };
    match module.get_export("_start") {
        Some(ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => Ok(()),
        Some(ExternType::Func(f)) => Err(format!(
            "its `_start` takes ({}) and returns ({}); a command's takes and returns nothing",
            list(&mut f.params()),
            list(&mut f.results())
        )),
        Some(ExternType::Global(_)) => Err(not_a_function("a global")),
        Some(ExternType::Table(_)) => Err(not_a_function("a table")),
        Some(ExternType::Memory(_)) => Err(not_a_function("a memory")),
        Some(ExternType::Tag(_)) => Err(not_a_function("a tag")),
        None => Err("it exports no `_start` function".into()),
    }
}

fn not_a_function(kind: &str) -> String {
    format!("its `_start` is {kind}, not a function")
}
