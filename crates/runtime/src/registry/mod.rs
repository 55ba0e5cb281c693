//! The function registry: a directory of `.wasm`, `.wat` and `.cwasm` files,
//! each compiled once into a cached `InstancePre`.
//!
//! Every lookup `stat`s the file, so a file copied (or renamed) into the
//! directory is invocable on the next request, a replaced file is recompiled,
//! and a deleted one is gone. Concurrent first requests for the same file
//! version share one compilation (single-flight). Compiled code can also be
//! kept in an on-disk AOT cache so a restart does not recompile.
//!
//! At most `max_loaded` files stay compiled in memory: past that, the one
//! used least recently is dropped (invocations running it keep it alive
//! until they finish) and is loaded again on its next request, from the AOT
//! cache when there is one. This bounds memory however many tenants'
//! functions the directory holds.
//!
//! The parts: `resolve` maps a name to a file and its version, `load`
//! reads, gates and compiles one file, `aot_cache` keeps compiled code on
//! disk, and `trusted` is the only code allowed `unsafe` (deserializing
//! native code). This module holds the in-memory table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use crate::engine::WasmEngine;
use crate::function::Function;
use crate::names::FunctionName;

mod aot_cache;
mod load;
mod resolve;
mod trusted;

pub use load::LoadError;
use load::Loader;
pub use resolve::EXTENSIONS;
use resolve::{Resolved, Version};

/// Plain-data registry settings.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// The functions directory.
    pub dir: PathBuf,
    /// Accept `.cwasm` (native code) files. Off by default, as in wasmtime.
    pub allow_precompiled: bool,
    /// Directory for compiled artifacts of `.wasm`/`.wat` files, keyed by
    /// content hash and engine; `None` disables the disk cache.
    pub cache_dir: Option<PathBuf>,
    /// Most files kept compiled in memory (least recently used dropped first).
    pub max_loaded: usize,
}

struct Entry {
    version: Version,
    cell: OnceCell<Result<Arc<Function>, LoadError>>,
    /// The registry's use clock when this entry was last asked for.
    last_used: AtomicU64,
}

/// The functions directory and its compiled files (see the module docs).
pub struct Registry {
    loader: Loader,
    config: RegistryConfig,
    /// Keyed by file name.
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    /// Number of entries dropped to stay within `max_loaded`.
    evictions: AtomicUsize,
    /// Ticks once per lookup; orders entries by last use.
    clock: AtomicU64,
}

impl Registry {
    /// A registry over `config.dir`, holding nothing compiled yet. Creates
    /// `cache_dir` if set; fails if it cannot, or if WASI cannot be linked.
    pub fn new(engine: WasmEngine, config: RegistryConfig) -> wasmtime::Result<Self> {
        let loader = Loader::new(engine, config.allow_precompiled, config.cache_dir.clone())?;
        Ok(Registry {
            loader,
            config,
            entries: Mutex::new(HashMap::new()),
            evictions: AtomicUsize::new(0),
            clock: AtomicU64::new(0),
        })
    }

    /// The settings it was built with.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// How many times a file has been loaded (compiled or deserialized).
    pub fn loads(&self) -> usize {
        self.loader.loads.load(Ordering::Relaxed)
    }

    /// How many of those loads came from the disk cache.
    pub fn cache_hits(&self) -> usize {
        self.loader.cache_hits.load(Ordering::Relaxed)
    }

    /// How many compiled files have been dropped to stay within `max_loaded`.
    pub fn evictions(&self) -> usize {
        self.evictions.load(Ordering::Relaxed)
    }

    /// How many files are held (loaded, loading, or failed to load).
    pub fn held(&self) -> usize {
        self.entries.lock().unwrap().len()
    }

    /// Finds `name` in the directory and returns its compiled form, compiling
    /// it (once, however many callers ask at the same time) if this version
    /// of the file has not been seen yet.
    pub async fn get(self: &Arc<Self>, name: &FunctionName) -> Result<Arc<Function>, LoadError> {
        let resolved = resolve::resolve(
            &self.config.dir,
            self.config.allow_precompiled,
            name.as_str(),
        );
        let Some(Resolved {
            file_name,
            path,
            version,
        }) = resolved
        else {
            // Forget anything cached under the candidate names.
            let mut entries = self.entries.lock().unwrap();
            entries.remove(name.as_str());
            for ext in EXTENSIONS {
                entries.remove(&format!("{name}.{ext}"));
            }
            return Err(LoadError::NotFound(name.to_string()));
        };
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        let entry = {
            let mut entries = self.entries.lock().unwrap();
            let e = match entries.get(&file_name) {
                Some(e) if e.version == version => e.clone(),
                _ => {
                    let e = Arc::new(Entry {
                        version,
                        cell: OnceCell::new(),
                        last_used: AtomicU64::new(now),
                    });
                    entries.insert(file_name.clone(), e.clone());
                    self.evict_beyond_limit(&mut entries, &file_name);
                    e
                }
            };
            e.last_used.store(now, Ordering::Relaxed);
            e
        };
        entry
            .cell
            .get_or_init(|| {
                let this = self.clone();
                async move {
                    let f = file_name.clone();
                    tokio::task::spawn_blocking(move || this.loader.load(&f, &path))
                        .await
                        .unwrap_or_else(|e| {
                            Err(LoadError::Io {
                                file: file_name,
                                reason: format!("loader panicked: {e}"),
                            })
                        })
                }
            })
            .await
            .clone()
    }

    /// Drops the least recently used entries (never `keep`, the one just
    /// added) while more than `max_loaded` are held. Entries still loading
    /// are skipped: their waiters share the result. A linear scan, on
    /// insertions only.
    fn evict_beyond_limit(&self, entries: &mut HashMap<String, Arc<Entry>>, keep: &str) {
        while entries.len() > self.config.max_loaded.max(1) {
            let oldest = entries
                .iter()
                .filter(|(name, e)| name.as_str() != keep && e.cell.initialized())
                .min_by_key(|(_, e)| e.last_used.load(Ordering::Relaxed))
                .map(|(name, _)| name.clone());
            let Some(name) = oldest else { return };
            entries.remove(&name);
            self.evictions.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(function = %name, "unloaded (least recently used)");
        }
    }

    /// Blocking variant of [`Registry::get`] for a file path outside the
    /// directory (`wasmbox run`).
    pub fn load_path(&self, path: &Path) -> Result<Arc<Function>, LoadError> {
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.loader.load(&file_name, path)
    }

    /// Names of all invocable files currently in the directory (sorted).
    pub fn list(&self) -> std::io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.config.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if resolve::has_function_extension(&name)
                && FunctionName::validate(name.clone()).is_ok()
                && entry.file_type()?.is_file()
            {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests;
