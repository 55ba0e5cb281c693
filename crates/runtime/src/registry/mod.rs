//! The function registry: a directory of `.wasm`, `.wat` and `.cwasm` files,
//! each compiled once into a cached `InstancePre`.
//!
//! Lookups `stat` the file, so a file copied (or renamed) into the
//! directory is invocable on the next request, and a replaced file is
//! recompiled and a deleted one gone once its loaded function's
//! `revalidate_after` has passed (see [`Registry::get`]). Concurrent first requests for the same file
//! version share one load (single-flight), which runs as its own task: it
//! finishes and is kept even if every request waiting for it goes away.
//! Compiled code can also be kept in an on-disk AOT cache so a restart does
//! not recompile.
//!
//! No file-system call runs on an async worker: a request's stats, reads
//! and directory listings go to a bounded blocking pool with a deadline
//! (`fs_pool`), so a hung mount cannot stall the runtime (the prewarm's go
//! to its own threads, with no deadline: a hung mount holds only the
//! prewarm). A file that cannot be looked at
//! (EIO, ESTALE, EACCES, ...) is an error of its own (`LoadError::Io`):
//! unlike a missing file it does not make the registry forget what it has
//! compiled. A failed load is answered from memory for a while, then tried
//! again with doubling delays (`RegistryConfig::retry`); a changed file is
//! tried at once.
//!
//! At most `max_loaded` files stay compiled in memory: past that, the one
//! used least recently is dropped (invocations running it keep it alive
//! until they finish) and is loaded again on its next request, from the AOT
//! cache when there is one. This bounds memory however many tenants'
//! functions the directory holds.
//!
//! New and changed files are compiled as they arrive (`prewarm`, when the
//! server starts it), so a file that has been in the directory a moment is
//! compiled before its first request.
//!
//! The parts: `resolve` maps a name to a file and its version, `load`
//! reads, gates and links one file, `compile` checks the budget and runs
//! compiles on their lanes (heavy ones in a child process), `background`
//! runs the prewarm's loads below the requests' priority, `aot_cache`
//! keeps compiled code on disk, `entry` is one file's slot in the table,
//! and `trusted` is the only code allowed `unsafe` (deserializing native
//! code; `background` has one system call besides). This module holds the
//! in-memory table.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::engine::WasmEngine;
use crate::function::Function;
use crate::names::FunctionName;

mod aot_cache;
mod background;
mod compile;
mod compiled;
mod config;
mod describe;
mod entry;
mod error;
mod fs_pool;
mod load;
pub mod manifest;
mod manifests;
mod prewarm;
mod private_tmp;
mod resolve;
mod trusted;

use background::{Blocking, IdleThreads};
pub use compile::{compile_child_main, CHILD_EXIT_INVALID};
pub use compiled::precompile;
pub use config::{Backoff, CompileLimits, RegistryConfig, WASMTIME_MAX_FUNCTION_BODY};
pub use describe::Description;
use entry::{Entry, Loaded, Verdict};
pub use error::LoadError;
use fs_pool::FsPool;
pub use fs_pool::{FS_DEADLINE, MAX_FS_CALLS};
use load::Loader;
pub use manifest::{Manifest, ServerBounds};
pub use manifests::{read_manifest, stem_of, ManifestError, Manifests};
use resolve::Resolved;
pub use resolve::EXTENSIONS;

/// The functions directory and its compiled files (see the module docs).
pub struct Registry {
    loader: Arc<Loader>,
    fs: FsPool,
    /// Where the prewarm's loads run (see `background`).
    background: IdleThreads,
    config: RegistryConfig,
    /// Keyed by file name.
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    /// URL name -> file name and when a stat last found it there: the
    /// fast path (see `get`).
    seen: Mutex<HashMap<String, (String, Instant)>>,
    /// Number of entries dropped to stay within `max_loaded`.
    evictions: AtomicUsize,
    /// Ticks once per lookup; orders entries by last use.
    clock: AtomicU64,
    /// Files loaded (and put into the table) or cached ahead of their
    /// first request (`prewarm`).
    prewarmed: AtomicUsize,
    /// Scans of the directory the prewarm has finished.
    prewarm_scans: AtomicUsize,
    /// Files the prewarm compiled into the AOT cache only, at the version
    /// it compiled (so later scans leave them alone).
    precached: Mutex<HashMap<String, resolve::Version>>,
}

impl Registry {
    /// A registry over `config.dir`, holding nothing compiled yet. Creates
    /// `cache_dir` if set; fails if it cannot, if it is not to be trusted
    /// (owned by another user, writable by group or others, a symlink), or
    /// if WASI cannot be linked.
    pub fn new(engine: WasmEngine, config: RegistryConfig) -> wasmtime::Result<Self> {
        let loader = Arc::new(Loader::new(engine, &config)?);
        Ok(Registry {
            loader,
            fs: FsPool::new(MAX_FS_CALLS, FS_DEADLINE),
            background: IdleThreads::new(prewarm::PREWARM_CONCURRENCY, config.prewarm_idle),
            config,
            entries: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            evictions: AtomicUsize::new(0),
            clock: AtomicU64::new(0),
            prewarmed: AtomicUsize::new(0),
            prewarm_scans: AtomicUsize::new(0),
            precached: Mutex::new(HashMap::new()),
        })
    }

    /// Starts compiling new and changed files as they arrive, so their
    /// first request finds them compiled (see `prewarm`). Call once, on a
    /// tokio runtime; the watcher ends when the registry is dropped.
    pub fn start_prewarm(self: &Arc<Self>) {
        prewarm::start(self);
    }

    /// The settings it was built with.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// How many times a file load has been started (compiled or
    /// deserialized, or failed).
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

    /// Heavy compiles running now (on the heavy lane, not waiting for it).
    pub fn heavy_compiles_running(&self) -> usize {
        self.loader.compiler.heavy_running.load(Ordering::Relaxed)
    }

    /// Finds `name` in the directory and returns its compiled form, loading
    /// it (once, however many callers ask at the same time) if this version
    /// of the file has not been seen yet.
    ///
    /// Finding the file is a `stat` on the file-system pool: a hop to
    /// another thread, about 12 us against the 40 us a hello request costs
    /// the server (measured, release build, loaded 2-core machine; an
    /// inline stat is 0.5 us but could block the runtime on a hung mount).
    /// So a name whose file was found within `revalidate_after`, and whose
    /// function is loaded, is served from memory without looking again: at
    /// most one hop per name per interval, and a replaced or deleted file is
    /// noticed within it. Anything else (a new name, a failed or unfinished
    /// load) looks every time.
    pub async fn get(self: &Arc<Self>, name: &FunctionName) -> Result<Arc<Function>, LoadError> {
        if let Some(f) = self.recently_seen(name.as_str()) {
            return Ok(f);
        }
        let result = self.look_and_get(name).await;
        if matches!(result, Err(LoadError::NotFound(_))) {
            self.seen.lock().unwrap().remove(name.as_str());
        }
        result
    }

    /// The loaded function for `name` if a stat found its file within
    /// `revalidate_after`.
    fn recently_seen(&self, name: &str) -> Option<Arc<Function>> {
        let ttl = self.config.revalidate_after;
        if ttl.is_zero() {
            return None;
        }
        let file_name = {
            let seen = self.seen.lock().unwrap();
            let (file_name, at) = seen.get(name)?;
            if at.elapsed() >= ttl {
                return None;
            }
            file_name.clone()
        };
        let entries = self.entries.lock().unwrap();
        let e = entries.get(&file_name)?;
        let f = e.cell.get()?.result.as_ref().ok()?.clone();
        e.last_used.store(
            self.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        Some(f)
    }

    /// Records that a stat just found `name` at `file_name`.
    fn saw(&self, name: &str, file_name: &str) {
        if self.config.revalidate_after.is_zero() {
            return;
        }
        let mut seen = self.seen.lock().unwrap();
        // Names of files since deleted stay until asked for again; bound
        // them crudely.
        if seen.len() >= 4 * self.config.max_loaded.max(1024) {
            seen.clear();
        }
        seen.insert(name.to_string(), (file_name.to_string(), Instant::now()));
    }

    /// The file that serves `name` now, and its version (`None`: no file),
    /// from a stat of its candidates run `on` a request's pool or the
    /// prewarm's threads; errs with a sentence when that stat failed.
    async fn resolve_on(
        &self,
        on: Blocking<'_>,
        name: &FunctionName,
    ) -> Result<Option<Resolved>, String> {
        let (dir, allow, n) = (
            self.config.dir.clone(),
            self.config.allow_precompiled,
            name.to_string(),
        );
        on.run(move || resolve::resolve(&dir, allow, &n))
            .await?
            .map_err(|e| e.to_string())
    }

    /// [`Registry::get`] after a stat.
    async fn look_and_get(
        self: &Arc<Self>,
        name: &FunctionName,
    ) -> Result<Arc<Function>, LoadError> {
        let resolved = self
            .resolve_on(Blocking::Request(&self.fs), name)
            .await
            .map_err(|reason| LoadError::Io {
                file: name.to_string(),
                reason,
            })?;
        let Some(resolved) = resolved else {
            // Forget anything cached under the candidate names.
            let mut entries = self.entries.lock().unwrap();
            entries.remove(name.as_str());
            for ext in EXTENSIONS {
                entries.remove(&format!("{name}.{ext}"));
            }
            return Err(LoadError::NotFound(name.to_string()));
        };
        self.saw(name.as_str(), &resolved.file_name);
        let (file_name, path) = (resolved.file_name.clone(), resolved.path.clone());
        let entry = self.entry_for(resolved);
        if let Some(loaded) = entry.cell.get() {
            return loaded.result.clone();
        }
        // The load runs in a task of its own: a waiter that goes away (its
        // client disconnected) does not cancel it, and the next request
        // finds it finished (or still running) instead of starting again.
        let this = self.clone();
        tokio::spawn(async move {
            entry
                .cell
                .get_or_init(|| async {
                    let size = entry.version.len();
                    let began = Instant::now();
                    let on = Blocking::Request(&this.fs);
                    let (result, read) = this.loader.load(on, file_name, path, size).await;
                    if let Ok(f) = &result {
                        f.set_load_time(began.elapsed());
                    }
                    Loaded {
                        result,
                        read,
                        at: Instant::now(),
                    }
                })
                .await
                .result
                .clone()
        })
        .await
        .unwrap_or_else(|e| {
            Err(LoadError::Io {
                file: name.to_string(),
                reason: format!("loader panicked: {e}"),
            })
        })
    }

    /// The entry to use for `resolved`: the one held, or a new one in its
    /// place (see [`Entry::verdict`]).
    fn entry_for(&self, resolved: Resolved) -> Arc<Entry> {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut dropped = Vec::new();
        let e = {
            let mut entries = self.entries.lock().unwrap();
            let verdict = match entries.get(&resolved.file_name) {
                Some(e) => e.verdict(&resolved.version, Instant::now(), &self.config.retry),
                None => Verdict::Replace { failures: 0 },
            };
            match verdict {
                Verdict::Use => entries[&resolved.file_name].clone(),
                Verdict::Replace { failures } => {
                    let e = Arc::new(Entry::new(resolved.version, failures, now));
                    dropped.extend(entries.insert(resolved.file_name.clone(), e.clone()));
                    self.evict_beyond_limit(&mut entries, &resolved.file_name, &mut dropped);
                    e
                }
            }
        };
        e.last_used.store(now, Ordering::Relaxed);
        unload(dropped);
        e
    }

    /// Takes the least recently used entries out (into `dropped`; never
    /// `keep`, the one just added) while more than `max_loaded` are held. Entries still loading
    /// are skipped: their waiters share the result. A linear scan, on
    /// insertions only.
    fn evict_beyond_limit(
        &self,
        entries: &mut HashMap<String, Arc<Entry>>,
        keep: &str,
        dropped: &mut Vec<Arc<Entry>>,
    ) {
        while entries.len() > self.config.max_loaded.max(1) {
            let oldest = entries
                .iter()
                .filter(|(name, e)| name.as_str() != keep && e.cell.initialized())
                .min_by_key(|(_, e)| e.last_used.load(Ordering::Relaxed))
                .map(|(name, _)| name.clone());
            let Some(name) = oldest else { return };
            dropped.extend(entries.remove(&name));
            self.evictions.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(function = %name, "unloaded (least recently used)");
        }
    }

    /// Blocking variant of [`Registry::get`] for a file path outside the
    /// directory (`wasmbox run`): compiles in this thread.
    pub fn load_path(&self, path: &Path) -> Result<Arc<Function>, LoadError> {
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.loader.load_blocking(&file_name, path)
    }

    /// Makes the next request for `name` look at the directory again (the
    /// deploy API calls it after it publishes or deletes a file, so the
    /// change is seen at once rather than within `revalidate_after`).
    pub fn forget(&self, name: &str) {
        self.seen.lock().unwrap().remove(name);
        let mut entries = self.entries.lock().unwrap();
        for ext in EXTENSIONS {
            entries.remove(&format!("{name}.{ext}"));
        }
    }

    /// Whether `file_name` is compiled and held in memory now.
    pub fn is_loaded(&self, file_name: &str) -> bool {
        self.entries
            .lock()
            .unwrap()
            .get(file_name)
            .is_some_and(|e| e.cell.get().is_some_and(|l| l.result.is_ok()))
    }

    /// Loads the file at `path` as `file_name` would be (budget checks,
    /// compile lanes and child, AOT cache, WASI command and linking checks)
    /// without making it visible: the deploy API's check before it
    /// publishes a module. With a cache dir the compiled code stays there,
    /// so the published file's first load is a cache hit.
    pub async fn check_file(
        self: &Arc<Self>,
        file_name: &str,
        path: &Path,
        size: u64,
    ) -> Result<(), LoadError> {
        let (result, _) = self
            .loader
            .load(
                Blocking::Request(&self.fs),
                file_name.to_string(),
                path.to_path_buf(),
                size,
            )
            .await;
        result.map(|_| ())
    }

    /// Names of all invocable files currently in the directory (sorted),
    /// read on the file system pool.
    pub async fn list(&self) -> std::io::Result<Vec<String>> {
        let dir = self.config.dir.clone();
        self.fs
            .run(move || {
                resolve::list(&dir, |name| {
                    FunctionName::validate(name.to_string()).is_ok()
                })
            })
            .await
            .map_err(std::io::Error::other)?
    }
}

/// Lets go of entries taken out of the table (evicted or replaced). The
/// last holder of a compiled function unmaps its code and memory image;
/// for the table's, that happens on the blocking pool, neither on the
/// request's path nor under the table's lock, which every other request's
/// lookup takes.
fn unload(dropped: Vec<Arc<Entry>>) {
    if dropped.is_empty() {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(move || drop(dropped))),
        Err(_) => drop(dropped),
    }
}

#[cfg(test)]
mod tests;
