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

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use wasmtime::{Linker, Module};

use crate::engine::WasmEngine;
use crate::function::Function;
use crate::names::FunctionName;
use crate::store::{self, Host};

/// File extensions that hold functions, in lookup order for a bare name.
pub const EXTENSIONS: [&str; 3] = ["cwasm", "wasm", "wat"];

/// Plain-data registry settings.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub dir: PathBuf,
    /// Accept `.cwasm` (native code) files. Off by default, as in wasmtime.
    pub allow_precompiled: bool,
    /// Directory for compiled artifacts of `.wasm`/`.wat` files, keyed by
    /// content hash and engine; `None` disables the disk cache.
    pub cache_dir: Option<PathBuf>,
    /// Most files kept compiled in memory (least recently used dropped first).
    pub max_loaded: usize,
}

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

/// Identity of one version of a file: if any of these change, it is a new
/// version and is compiled again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Version {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

struct Entry {
    version: Version,
    cell: OnceCell<Result<Arc<Function>, LoadError>>,
    /// The registry's use clock when this entry was last asked for.
    last_used: AtomicU64,
}

pub struct Registry {
    engine: WasmEngine,
    linker: Linker<Host>,
    config: RegistryConfig,
    /// Keyed by file name.
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    /// Number of loads (compilations or deserializations) done so far.
    loads: AtomicUsize,
    /// Number of loads served from the disk cache.
    cache_hits: AtomicUsize,
    /// Number of entries dropped to stay within `max_loaded`.
    evictions: AtomicUsize,
    /// Ticks once per lookup; orders entries by last use.
    clock: AtomicU64,
}

impl Registry {
    pub fn new(engine: WasmEngine, config: RegistryConfig) -> wasmtime::Result<Self> {
        let linker = store::linker(&engine.engine)?;
        if let Some(dir) = &config.cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                wasmtime::format_err!("cannot create cache dir {}: {e}", dir.display())
            })?;
        }
        Ok(Registry {
            engine,
            linker,
            config,
            entries: Mutex::new(HashMap::new()),
            loads: AtomicUsize::new(0),
            cache_hits: AtomicUsize::new(0),
            evictions: AtomicUsize::new(0),
            clock: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// How many times a file has been loaded (compiled or deserialized).
    pub fn loads(&self) -> usize {
        self.loads.load(Ordering::Relaxed)
    }

    /// How many of those loads came from the disk cache.
    pub fn cache_hits(&self) -> usize {
        self.cache_hits.load(Ordering::Relaxed)
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
        let Some((file_name, path, version)) = self.resolve(name.as_str()) else {
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
                    tokio::task::spawn_blocking(move || this.load(&f, &path))
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
        self.load(&file_name, path)
    }

    /// Names of all invocable files currently in the directory (sorted).
    pub fn list(&self) -> std::io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.config.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let ext_ok = Path::new(&name)
                .extension()
                .is_some_and(|e| EXTENSIONS.iter().any(|x| e == *x));
            if ext_ok
                && FunctionName::validate(name.clone()).is_ok()
                && entry.file_type()?.is_file()
            {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Maps a URL name to a file. A name with a known extension names that
    /// file exactly; a bare name tries `.cwasm` (when allowed), `.wasm`, `.wat`.
    fn resolve(&self, name: &str) -> Option<(String, PathBuf, Version)> {
        let has_ext = Path::new(name)
            .extension()
            .is_some_and(|e| EXTENSIONS.iter().any(|x| e == *x));
        let candidates: Vec<String> = if has_ext {
            vec![name.to_string()]
        } else {
            EXTENSIONS
                .iter()
                .filter(|e| self.config.allow_precompiled || **e != "cwasm")
                .map(|e| format!("{name}.{e}"))
                .collect()
        };
        candidates.into_iter().find_map(|file_name| {
            let path = self.config.dir.join(&file_name);
            let meta = std::fs::metadata(&path).ok().filter(|m| m.is_file())?;
            use std::os::unix::fs::MetadataExt;
            let version = Version {
                len: meta.len(),
                modified: meta.modified().ok(),
                inode: meta.ino(),
            };
            Some((file_name, path, version))
        })
    }

    /// Reads and compiles one file (blocking).
    fn load(&self, file_name: &str, path: &Path) -> Result<Arc<Function>, LoadError> {
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
        let cached = dir.join(format!("{}.cwasm", self.cache_key(bytes)));
        if cached.exists() {
            match trusted::deserialize_cache_entry(&self.engine.engine, &cached) {
                Ok(m) => {
                    self.cache_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(m);
                }
                Err(e) => {
                    tracing::warn!(path = %cached.display(), error = %e, "ignoring unusable cache entry")
                }
            }
        }
        let module = compile()?;
        match module.serialize() {
            Ok(data) => {
                // Write to a temporary name and rename, so readers never see
                // a partial file.
                let tmp = cached.with_extension(format!("tmp{}", std::process::id()));
                if let Err(e) =
                    std::fs::write(&tmp, data).and_then(|_| std::fs::rename(&tmp, &cached))
                {
                    tracing::warn!(path = %cached.display(), error = %e, "cannot write cache entry");
                    let _ = std::fs::remove_file(&tmp);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot serialize module for the cache"),
        }
        Ok(module)
    }

    /// Content hash of the module bytes plus the engine's compatibility hash.
    fn cache_key(&self, bytes: &[u8]) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .engine
            .precompile_compatibility_hash()
            .hash(&mut h);
        let digest = Sha256::digest(bytes);
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        format!("{hex}-{:016x}", h.finish())
    }
}

/// The one place that loads native code: `.cwasm` files (only with
/// `--allow-precompiled`, i.e. the operator trusts the directory) and our own
/// AOT cache entries.
mod trusted {
    #![allow(unsafe_code)]

    pub fn deserialize(
        engine: &wasmtime::Engine,
        bytes: &[u8],
    ) -> wasmtime::Result<wasmtime::Module> {
        // SAFETY: wasmtime requires the bytes to come from `Module::serialize`
        // or `Engine::precompile_module` of a trusted source; they are checked
        // for a matching engine version and configuration before use. The
        // caller only passes files the operator opted in to trust, or our own
        // cache entries.
        unsafe { wasmtime::Module::deserialize(engine, bytes) }
    }

    /// Maps one of our own cache entries instead of copying it: its code
    /// pages are shared, file-backed and only resident once used, which
    /// matters with a thousand functions loaded.
    pub fn deserialize_cache_entry(
        engine: &wasmtime::Engine,
        path: &std::path::Path,
    ) -> wasmtime::Result<wasmtime::Module> {
        // SAFETY: as for `deserialize`, and the file must not change while
        // mapped: cache entries are only ever written under a temporary name
        // and renamed into place, so a mapped entry's inode is never
        // rewritten (a replacement is a new inode).
        unsafe { wasmtime::Module::deserialize_file(engine, path) }
    }
}
