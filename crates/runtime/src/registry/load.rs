//! Loading one file: read it, gate precompiled native code, compile (through
//! the AOT cache), check it is a WASI command, and link it.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use wasmtime::Module;

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;

use wasmtime::Linker;

use super::{aot_cache, trusted};
use crate::engine::WasmEngine;
use crate::function::Function;
use crate::store::{self, Host};

/// Why a function could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// No file for the name in the functions directory (or it was gone by
    /// the time it was read). Holds the name.
    #[error("no function named '{0}' in the functions directory")]
    NotFound(String),
    /// The file holds precompiled native code and the registry's
    /// `allow_precompiled` is off. Holds the file name.
    #[error("'{0}' is a precompiled module (native code); this server was started without --allow-precompiled")]
    PrecompiledNotAllowed(String),
    #[error("'{file}' was precompiled by a different wasmtime build or engine configuration; recompile it with `wasmbox compile` using this server's settings ({reason})")]
    /// Precompiled code this engine cannot load: made by another wasmtime
    /// build or engine configuration.
    Incompatible {
        /// The file name.
        file: String,
        /// wasmtime's error.
        reason: String,
    },
    #[error("'{file}' failed to compile: {reason}")]
    /// The file is not a valid module: it failed to compile, or is a
    /// `.cwasm` that does not hold precompiled code.
    Invalid {
        /// The file name.
        file: String,
        /// The compile error.
        reason: String,
    },
    #[error("'{file}' is not a WASI command module: it exports no `_start` function")]
    /// The module exports no `_start` function.
    NotACommand {
        /// The file name.
        file: String,
    },
    #[error("'{file}' cannot be linked: {reason}")]
    /// The module imports something WASI p1 does not provide.
    Link {
        /// The file name.
        file: String,
        /// The linker's error.
        reason: String,
    },
    #[error("'{file}' could not be read: {reason}")]
    /// The file could not be read (or its loader panicked).
    Io {
        /// The file name.
        file: String,
        /// The I/O error, or the panic.
        reason: String,
    },
}

/// Turns a file into a linked [`Function`]: the engine, the WASI linker,
/// the precompiled gate and the disk cache, and counts of what it did.
pub(super) struct Loader {
    engine: WasmEngine,
    linker: Linker<Host>,
    allow_precompiled: bool,
    cache_dir: Option<PathBuf>,
    /// Loads (compilations or deserializations) done so far.
    pub(super) loads: AtomicUsize,
    /// Loads served from the disk cache.
    pub(super) cache_hits: AtomicUsize,
}

impl Loader {
    /// A loader for `engine`; creates `cache_dir` if set. Fails if it
    /// cannot, or if WASI cannot be linked.
    pub(super) fn new(
        engine: WasmEngine,
        allow_precompiled: bool,
        cache_dir: Option<PathBuf>,
    ) -> wasmtime::Result<Self> {
        let linker = store::linker(&engine.engine)?;
        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                wasmtime::format_err!("cannot create cache dir {}: {e}", dir.display())
            })?;
        }
        Ok(Loader {
            engine,
            linker,
            allow_precompiled,
            cache_dir,
            loads: AtomicUsize::new(0),
            cache_hits: AtomicUsize::new(0),
        })
    }

    /// Reads and compiles one file (blocking).
    pub(super) fn load(&self, file_name: &str, path: &Path) -> Result<Arc<Function>, LoadError> {
        let file = file_name.to_string();
        self.loads.fetch_add(1, Ordering::Relaxed);
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LoadError::NotFound(file.clone()),
            _ => LoadError::Io {
                file: file.clone(),
                reason: e.to_string(),
            },
        })?;
        let started = std::time::Instant::now();
        let module = if wasmtime::Engine::detect_precompiled(&bytes).is_some() {
            if !self.allow_precompiled {
                return Err(LoadError::PrecompiledNotAllowed(file));
            }
            trusted::deserialize(&self.engine.engine, &bytes).map_err(|e| {
                LoadError::Incompatible {
                    file: file.clone(),
                    reason: e.to_string(),
                }
            })?
        } else if path.extension().is_some_and(|e| e == "cwasm") {
            return Err(LoadError::Invalid {
                file,
                reason: "a .cwasm file must hold a module precompiled by `wasmbox compile`".into(),
            });
        } else {
            self.compile_cached(&file, &bytes)?
        };
        if !matches!(
            module.get_export("_start"),
            Some(wasmtime::ExternType::Func(_))
        ) {
            return Err(LoadError::NotACommand { file });
        }
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Link {
                file: file.clone(),
                reason: format!("{e:#}"),
            })?;
        tracing::info!(function = %file, elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "loaded");
        Ok(Arc::new(Function {
            id: Arc::from(file.as_str()),
            file_name: file,
            path: path.to_path_buf(),
            pre,
        }))
    }

    /// Compiles `.wasm`/`.wat` bytes, through the disk cache when enabled.
    fn compile_cached(&self, file: &str, bytes: &[u8]) -> Result<Module, LoadError> {
        let compile = || {
            Module::new(&self.engine.engine, bytes).map_err(|e| LoadError::Invalid {
                file: file.to_string(),
                reason: format!("{e:#}"),
            })
        };
        let Some(dir) = &self.cache_dir else {
            return compile();
        };
        let entry = aot_cache::entry_path(dir, &self.engine.engine, bytes);
        if let Some(module) = aot_cache::lookup(&self.engine.engine, &entry) {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(module);
        }
        let module = compile()?;
        aot_cache::store(&entry, &module);
        Ok(module)
    }
}
