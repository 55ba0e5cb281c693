//! `cgroup-v1`: one cgroup per worker thread in the v1 cpu controller,
//! inside this instance's tree under the process's own cpu cgroup (or
//! `--cgroup-root`):
//! ```text
//! <base>/wasmbox-<id>/            the instance tree (see crate::cgroup)
//!     ├── anchor/                 a parked thread of ours, from open to shutdown
//!     ├── slot-0/                 worker 0 while a limited call runs; cpu.cfs_quota_us
//!     └── slot-1/ ...
//! ```
//! Workers wait in `<base>`; per invocation with a limit only
//! `cpu.cfs_quota_us` is rewritten, on a kept-open fd, and only when the
//! quota changes, and the worker moves into its slot only once the call
//! reaches its first epoch tick ([`cgroup::CgroupSlot`]). The anchor keeps
//! the tree live (to the sweep of other servers) before any worker has
//! started. The tree's `cpu.shares` is [`tree_shares`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::cgroup::{self, CgroupSlot, SlotSpec, SlotsShared, ANCHOR, KERNEL, SLOT};
use crate::{fs, sweep, IsolationError};
use crate::{Isolation, IsolationConfig, Mode, Slot};

/// The `cgroup-v1` mode: an instance tree held live by an anchor thread,
/// one slot cgroup per worker.
pub struct CgroupV1 {
    /// The cgroup the instance tree is made in; threads return here.
    base: PathBuf,
    /// `<base>/wasmbox-<id>`.
    tree: PathBuf,
    id: String,
    period_us: u64,
    /// `None` once shut down.
    anchor: Mutex<Option<Anchor>>,
    slots_shared: Arc<SlotsShared>,
}

/// A parked thread that sits in `<tree>/anchor`; on stop it moves itself
/// back to `<base>` and exits.
struct Anchor {
    tid: i32,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Anchor {
    fn start(home: PathBuf) -> Result<Anchor, IsolationError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let stopped = stop.clone();
        let at = home.clone();
        let thread = std::thread::Builder::new()
            .name("cgroup-anchor".into())
            .spawn(move || {
                let tid = crate::current_tid();
                let _ = tx.send(tid);
                while !stopped.load(Ordering::SeqCst) {
                    std::thread::park();
                }
                let _ = fs::write(&home, &tid.to_string());
            })
            .map_err(|e| IsolationError::step("start an anchor thread for", &at, e))?;
        let tid = rx.recv().unwrap_or(0);
        let anchor = Anchor { tid, stop, thread };
        if tid <= 0 {
            // Writing 0 to `tasks` would move the writer instead.
            anchor.stop();
            return Err(IsolationError::unusable(
                Mode::CgroupV1,
                "cannot tell a thread's id: /proc/thread-self is not readable (is /proc mounted?)",
            ));
        }
        Ok(anchor)
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.thread().unpark();
        let _ = self.thread.join();
    }
}

impl CgroupV1 {
    /// Sweeps the base cgroup (the process's own cpu cgroup, or
    /// `cgroup_root`), then makes the instance tree with its anchor and its
    /// `cpu.shares`. [`IsolationError::Unusable`] when the base is no v1 cpu
    /// controller directory or cannot be written.
    pub fn open(config: &IsolationConfig) -> Result<Self, IsolationError> {
        let unusable = |reason: String| IsolationError::unusable(Mode::CgroupV1, reason);
        let base = match &config.cgroup_root {
            Some(root) => root.clone(),
            None => fs::own_cgroup(fs::Hierarchy::V1("cpu")).map_err(unusable)?,
        };
        for f in ["cpu.cfs_quota_us", "cpu.cfs_period_us", "tasks"] {
            if !base.join(f).exists() {
                return Err(unusable(format!(
                    "{} has no {f}: not a cgroup v1 cpu controller directory",
                    base.display()
                )));
            }
        }
        sweep::sweep(&base, &KERNEL);
        let anchor = Anchor::start(base.join("tasks"))?;
        let created = cgroup::create_instance(&base, &KERNEL, |tree| {
            let dir = tree.join(ANCHOR);
            (KERNEL.mkdir)(&dir)?;
            fs::write(&dir.join("tasks"), &anchor.tid.to_string())
        });
        match created {
            Ok((id, tree)) => {
                let this = CgroupV1 {
                    base,
                    tree,
                    id,
                    period_us: config.period.as_micros() as u64,
                    anchor: Mutex::new(Some(anchor)),
                    slots_shared: Arc::default(),
                };
                // Dropping `this` on failure removes the tree again.
                fs::write(&this.tree.join("cpu.shares"), &tree_shares().to_string())?;
                Ok(this)
            }
            Err(e) => {
                anchor.stop();
                Err(e.at_open(Mode::CgroupV1, "needs write access to the cpu controller"))
            }
        }
    }

    /// The cgroup the instance tree is made in; threads return here.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// This instance's tree, `<base>/wasmbox-<id>`.
    pub fn tree(&self) -> &Path {
        &self.tree
    }

    /// This instance's id, 16 hex digits.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Directory of worker `n`'s slot.
    pub fn slot_dir(&self, n: usize) -> PathBuf {
        self.tree.join(format!("{SLOT}{n}"))
    }
}

/// `cpu.shares` of an instance tree. Nested in one tree, the slots compete
/// for CPU with the tree's siblings as one group, where each slot used to
/// weigh 1024 on its own; weigh the tree as the most threads it can keep
/// busy at once, one per core.
pub fn tree_shares() -> u64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    (1024 * cores).min(262_144)
}

impl Isolation for CgroupV1 {
    fn mode(&self) -> Mode {
        Mode::CgroupV1
    }
    fn describe(&self) -> String {
        format!(
            "cgroup v1 cpu controller: one cgroup per worker thread in {}, period {} µs",
            self.tree.display(),
            self.period_us
        )
    }
    fn slot(&self, worker: usize, tid: i32) -> Result<Box<dyn Slot>, IsolationError> {
        let period = self.period_us.to_string();
        CgroupSlot::create(SlotSpec {
            dir: self.slot_dir(worker),
            home: self.base.join("tasks"),
            tid,
            period_us: self.period_us,
            setup: &|dir| fs::write(&dir.join("cpu.cfs_period_us"), &period),
            quota_file: Some(("cpu.cfs_quota_us", |q, _| {
                q.map_or("-1".into(), |q| q.to_string())
            })),
            join_file: "tasks",
            dirs: KERNEL,
            shared: self.slots_shared.clone(),
        })
    }
    fn period(&self) -> Option<Duration> {
        Some(Duration::from_micros(self.period_us))
    }
    fn moves(&self) -> u64 {
        self.slots_shared.moves()
    }
    fn rescues(&self) -> u64 {
        self.slots_shared.rescues()
    }
    /// Removes the whole tree: what slots are left, the anchor (its thread
    /// moves out and exits), the tree itself. Idempotent.
    fn shutdown(&self) {
        let Some(anchor) = self.anchor.lock().unwrap().take() else {
            return;
        };
        anchor.stop();
        if let Err(e) = cgroup::remove_tree(&self.tree, &KERNEL, fs::REMOVE_PATIENCE) {
            tracing::warn!(error = %e, "cgroup tree not fully removed; the next server's sweep removes it once it is empty");
        }
    }
}

impl Drop for CgroupV1 {
    fn drop(&mut self) {
        self.shutdown();
    }
}
