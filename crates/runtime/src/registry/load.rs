//! Loading one file: read it, gate precompiled native code, compile (through
//! the AOT cache), check it is a WASI command, and link it.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use wasmtime::Module;

use super::{aot_cache, trusted, Registry};
use crate::function::Function;

/// Why a function could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("no function named '{0}' in the functions directory")]
    NotFound(String),
    #[error("'{0}' is a precompiled module (native code); this server was started without --allow-precompiled")]
    PrecompiledNotAllowed(String),
    #[error("'{file}' was precompiled by a different wasmtime build or engine configuration; recompile it with `wasmbox compile` using this server's settings ({reason})")]
    Incompatible { file: String, reason: String },
    #[error("'{file}' failed to compile: {reason}")]
    Invalid { file: String, reason: String },
    #[error("'{file}' is not a WASI command module: it exports no `_start` function")]
    NotACommand { file: String },
    #[error("'{file}' cannot be linked: {reason}")]
    Link { file: String, reason: String },
    #[error("'{file}' could not be read: {reason}")]
    Io { file: String, reason: String },
}

impl Registry {
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
            if !self.config.allow_precompiled {
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
        let Some(dir) = &self.config.cache_dir else {
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
