//! Compiling new and changed function files before their first request.
//!
//! A task watches the functions directory (inotify, so a file is seen as it
//! is closed or moved in; and a scan every `RegistryConfig::prewarm_poll`
//! as well, for file systems where inotify says nothing, such as a
//! Kubernetes ConfigMap volume that swaps a symlink, or a network mount).
//! Each scan lists the directory and stats every function file in one
//! call, then loads what the table does not hold at its current version, a
//! few at a time (`PREWARM_CONCURRENCY`), the blocking work on threads
//! below every request's CPU priority (`background`; compiles keep their
//! budget, and heavy ones their lane and child):
//! - while the table has room (below `max_loaded`), the file is loaded as
//!   a request would load it, and put into the table unless a request has
//!   loaded it, or started to, or the table filled meanwhile (a request
//!   never waits for the prewarm: it loads the file itself, and the
//!   prewarm's copy is dropped);
//! - past that, with an AOT cache, it is compiled into the cache only
//!   (unless the cache has it already, as after a restart: then nothing is
//!   done), so its first request deserializes instead of compiling, and
//!   nothing loaded is pushed out to make room;
//! - past that without a cache, it is left for its first request.
//!
//! Failed loads are not retried by the scan sooner than a request would
//! retry them (the entry's backoff decides).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fd::OwnedFd;
use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::background::Blocking;
use super::entry::{Entry, Loaded, Verdict};
use super::resolve::{self, Resolved};
use super::Registry;
use crate::names::FunctionName;

/// Loads a scan runs at once (and its idle-priority threads).
pub(super) const PREWARM_CONCURRENCY: usize = 2;

/// Most files remembered as compiled into the cache (forgetting them all
/// costs one cache lookup each at the next scan).
const PRECACHED_MAX: usize = 100_000;

/// How long a burst of directory events is gathered before one scan.
const SETTLE: Duration = Duration::from_millis(50);

/// What one scan decided for a file.
enum Plan {
    /// Load it into the table.
    Load(FunctionName, Resolved),
    /// Compile it into the AOT cache only.
    Cache(Resolved),
}

/// Starts the watcher for `registry` on the current tokio runtime; it ends
/// when the registry is dropped.
pub(super) fn start(registry: &Arc<Registry>) {
    let every = registry.config.prewarm_poll;
    let changed = Arc::new(Notify::new());
    match inotify(&registry.config.dir) {
        Ok(fd) => {
            let (weak, changed) = (Arc::downgrade(registry), changed.clone());
            let spawned = std::thread::Builder::new()
                .name("wasmbox-prewarm-watch".into())
                .spawn(move || watch(fd, &changed, &weak));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the directory watcher: new files are found by scanning");
            }
        }
        Err(e) => {
            tracing::info!(dir = %registry.config.dir.display(), error = %e, every = ?every, "no inotify on the functions directory: new files are found by scanning");
        }
    }
    tokio::spawn(run(Arc::downgrade(registry), changed, every));
}

/// An inotify descriptor on `dir` for files written, moved in, created or
/// removed (the last two for directories and symlinks swapped in).
fn inotify(dir: &std::path::Path) -> std::io::Result<OwnedFd> {
    let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
    inotify::add_watch(
        &fd,
        dir,
        WatchFlags::CLOSE_WRITE | WatchFlags::MOVED_TO | WatchFlags::CREATE | WatchFlags::DELETE,
    )?;
    Ok(fd)
}

/// The watcher thread: waits for events on `fd` (looking once a second
/// whether the registry is gone), discards them (the scan that follows
/// looks at the whole directory) and wakes the scanner.
fn watch(fd: OwnedFd, changed: &Notify, registry: &Weak<Registry>) {
    let mut buf = [0u8; 4096];
    let second = Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    while registry.strong_count() > 0 {
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match poll(&mut fds, Some(&second)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                return tracing::warn!(error = %e, "the directory watcher stopped: new files are found by scanning");
            }
        }
        while rustix::io::read(&fd, &mut buf).is_ok_and(|n| n > 0) {}
        changed.notify_one();
    }
}

async fn run(registry: Weak<Registry>, changed: Arc<Notify>, every: Duration) {
    loop {
        {
            let Some(r) = registry.upgrade() else { return };
            r.scan().await;
            r.prewarm_scans.fetch_add(1, Ordering::Relaxed);
        }
        tokio::select! {
            _ = changed.notified() => {
                // Gather the rest of a burst (a deploy of many files).
                tokio::time::sleep(SETTLE).await;
            }
            _ = tokio::time::sleep(every) => {}
        }
    }
}

impl Registry {
    /// Files loaded into the table (or compiled into the cache) ahead of
    /// their first request; not those whose load a request's overtook.
    pub fn prewarmed(&self) -> usize {
        self.prewarmed.load(Ordering::Relaxed)
    }

    /// Scans of the directory finished; the first ends the compile of
    /// every file there at start.
    pub fn prewarm_scans(&self) -> usize {
        self.prewarm_scans.load(Ordering::Relaxed)
    }

    /// One pass: find files the table does not hold at their current
    /// version and load them (see the module docs).
    async fn scan(self: &Arc<Self>) {
        let (dir, allow) = (self.config.dir.clone(), self.config.allow_precompiled);
        // On the idle threads too: after a restart, a stat of every file
        // while the first requests arrive.
        let listed = Blocking::Background(&self.background)
            .run(move || {
                let names = resolve::list(&dir, |n| FunctionName::validate(n.to_string()).is_ok())?;
                Ok::<_, std::io::Error>(
                    names
                        .into_iter()
                        .filter_map(|n| Some((n.clone(), resolve::resolve(&dir, allow, &n).ok()??)))
                        .collect::<Vec<_>>(),
                )
            })
            .await;
        let found = match listed {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => return tracing::warn!(error = %e, "cannot scan the functions directory"),
            Err(e) => return tracing::warn!(error = %e, "cannot scan the functions directory"),
        };
        let plans = self.plan(found);
        if plans.is_empty() {
            return;
        }
        let started = Instant::now();
        let count = plans.len();
        let mut running = JoinSet::new();
        for plan in plans {
            while running.len() >= PREWARM_CONCURRENCY {
                running.join_next().await;
            }
            let this = self.clone();
            running.spawn(async move {
                let ahead = match plan {
                    Plan::Load(name, r) => this.load_ahead(&name, r).await,
                    Plan::Cache(r) => {
                        let size = r.version.len();
                        let file = r.file_name.clone();
                        let on = Blocking::Background(&this.background);
                        let (read, compiled) = this.loader.precache(on, file, r.path, size).await;
                        // A file changed while it was read is looked at
                        // again by the next scan.
                        if let Some(v) = read {
                            let mut precached = this.precached.lock().unwrap();
                            if precached.len() >= PRECACHED_MAX {
                                precached.clear();
                            }
                            precached.insert(r.file_name, v);
                        }
                        compiled
                    }
                };
                if ahead {
                    this.prewarmed.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        while running.join_next().await.is_some() {}
        tracing::info!(files = count, took = ?started.elapsed(), "prewarmed new and changed function files");
    }

    /// What to do with each file found: nothing for those held at their
    /// version (or failed and not due for a retry).
    fn plan(&self, found: Vec<(String, Resolved)>) -> Vec<Plan> {
        let entries = self.entries.lock().unwrap();
        let precached = self.precached.lock().unwrap();
        let mut room = self.config.max_loaded.saturating_sub(entries.len());
        let cached = self.config.cache_dir.is_some();
        let now = Instant::now();
        let mut plans = Vec::new();
        for (name, r) in found {
            if self.holds_version(&entries, &r, now) {
                continue;
            }
            if precached.get(&r.file_name) == Some(&r.version) {
                continue;
            }
            if room > 0 {
                room -= 1;
                if let Ok(name) = FunctionName::validate(name) {
                    plans.push(Plan::Load(name, r));
                }
            } else if cached {
                plans.push(Plan::Cache(r));
            }
        }
        plans
    }

    /// Whether `entries` hold `r` at its version: loaded, loading, or
    /// failed and not due for a retry.
    fn holds_version(
        &self,
        entries: &HashMap<String, Arc<Entry>>,
        r: &Resolved,
        now: Instant,
    ) -> bool {
        entries
            .get(&r.file_name)
            .is_some_and(|e| matches!(e.verdict(&r.version, now, &self.config.retry), Verdict::Use))
    }

    /// Loads `r` (found under `name`) on the idle-priority threads and puts
    /// it into the table if the file is still that version, the table's
    /// slot for it is still what it was before the load, and the table has
    /// room: a request that loaded the file meanwhile, or started to, or
    /// found another version of it, keeps what it has, and a function a
    /// request loaded is never pushed out for this one. Nothing waits for
    /// it but the scan (see `background`). Whether it was put into the
    /// table.
    pub(super) async fn load_ahead(self: &Arc<Self>, name: &FunctionName, r: Resolved) -> bool {
        let (before, failures) = {
            let entries = self.entries.lock().unwrap();
            let before = entries.get(&r.file_name).cloned();
            let verdict = before
                .as_ref()
                .map(|e| e.verdict(&r.version, Instant::now(), &self.config.retry));
            match verdict {
                Some(Verdict::Use) => return false,
                Some(Verdict::Replace { failures }) => (before, failures),
                None => (None, 0),
            }
        };
        let began = Instant::now();
        let (file, path, size) = (r.file_name.clone(), r.path.clone(), r.version.len());
        let on = Blocking::Background(&self.background);
        let (result, read) = self.loader.load(on, file, path, size).await;
        if let Ok(f) = &result {
            f.set_load_time(began.elapsed());
        }
        // Only if the file is still the one loaded: a request may have
        // found a newer one, before the load or during it (the next scan
        // loads that).
        let unchanged = matches!(self.resolve_on(on, name).await, Ok(Some(now))
            if now.file_name == r.file_name && now.version == r.version);
        if !unchanged {
            return false;
        }
        let loaded = Loaded {
            result,
            read,
            at: Instant::now(),
        };
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        {
            let mut entries = self.entries.lock().unwrap();
            let held = entries.get(&r.file_name);
            let untouched = match (held, &before) {
                (Some(held), Some(before)) => Arc::ptr_eq(held, before),
                (None, None) => entries.len() < self.config.max_loaded,
                _ => false,
            };
            if !untouched {
                return false;
            }
            let entry = Entry::new(r.version, failures, now);
            let _ = entry.cell.set(loaded);
            entries.insert(r.file_name.clone(), Arc::new(entry));
        }
        self.saw(name.as_str(), &r.file_name);
        true
    }
}
