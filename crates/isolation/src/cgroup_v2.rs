//! `cgroup-v2`: a threaded subtree under the process's own cgroup.
//!
//! Layout, with P the process's cgroup (from /proc/self/cgroup and the
//! cgroup2 mount, or `--cgroup-root`):
//! ```text
//! P/                          cgroup.subtree_control: +cpu (added by us only
//! │                           if it was not there; removed on shutdown only then)
//! └── wasmbox-<id>/           the instance tree (see crate::cgroup); the whole
//!     │                       process moves here (P must hold no processes to
//!     │                       delegate cpu: no-internal-process rule)
//!     ├── slot-0/             cgroup.type = threaded; worker 0, while a call
//!     │                       with a limit runs, in cgroup.threads; cpu.max
//!     └── slot-1/ ...
//! ```
//! The process in the tree keeps it live for the sweep of other servers.
//! Per invocation only `cpu.max` is rewritten on a kept-open fd, and only
//! when the quota changes. Shutdown undoes all of it.
//!
//! The process lives in one tree, so one process holds one cgroup-v2
//! instance at a time.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cgroup::{self, CgroupSlot, Dirs, SlotSpec, SlotsShared, KERNEL, SLOT};
use crate::{fs, sweep, IsolationError};
use crate::{Isolation, IsolationConfig, Mode, Slot};

const HINT: &str = "needs a writable, delegated cgroup2 directory";

/// The `cgroup-v2` mode: the process moved into its instance tree, one
/// threaded slot cgroup per worker.
pub struct CgroupV2 {
    /// The process's original cgroup (P).
    parent: PathBuf,
    /// `parent/wasmbox-<id>`: holds the process and the slots.
    domain: PathBuf,
    id: String,
    period_us: u64,
    /// False only for [`CgroupV2::open_placement_only`].
    cpu: bool,
    /// Whether `open` added `cpu` to P's `cgroup.subtree_control`.
    added_cpu_to_parent: bool,
    dirs: Dirs,
    shut: AtomicBool,
    slots_shared: std::sync::Arc<SlotsShared>,
}

impl CgroupV2 {
    /// Sweeps the parent (the process's own cgroup, or `cgroup_root`), moves
    /// the process into a new instance tree and enables `cpu` in the
    /// parent's and the tree's `cgroup.subtree_control`.
    /// [`IsolationError::Unusable`] when the parent is no cgroup2 directory,
    /// has no cpu controller in `cgroup.controllers`, or cannot be written.
    pub fn open(config: &IsolationConfig) -> Result<Self, IsolationError> {
        Self::open_with(config, KERNEL)
    }

    fn open_with(config: &IsolationConfig, dirs: Dirs) -> Result<Self, IsolationError> {
        let unusable = |reason: String| IsolationError::unusable(Mode::CgroupV2, reason);
        let parent = match &config.cgroup_root {
            Some(p) => p.clone(),
            None => fs::own_cgroup(fs::Hierarchy::V2).map_err(unusable)?,
        };
        let controllers = fs::read(&parent.join("cgroup.controllers")).map_err(|e| {
            unusable(format!(
                "{e} (is {} a cgroup2 directory?)",
                parent.display()
            ))
        })?;
        if !controllers.split_whitespace().any(|c| c == "cpu") {
            return Err(unusable(format!(
                "the cpu controller is not available in {}/cgroup.controllers (it lists: '{}'); on a hybrid host it is bound to cgroup v1",
                parent.display(),
                controllers.trim()
            )));
        }
        Self::setup(parent, config.period.as_micros() as u64, true, dirs)
    }

    /// Places threads in a threaded subtree of `parent` without delegating
    /// the cpu controller, so nothing is enforced. Only for testing placement
    /// and accounting on hosts whose cgroup2 mount has no cpu controller.
    pub fn open_placement_only(parent: PathBuf) -> Result<Self, IsolationError> {
        Self::setup(parent, 100_000, false, KERNEL)
    }

    fn setup(
        parent: PathBuf,
        period_us: u64,
        cpu: bool,
        dirs: Dirs,
    ) -> Result<Self, IsolationError> {
        sweep::sweep(&parent, &dirs);
        let pid = std::process::id().to_string();
        let (id, domain) = cgroup::create_instance(&parent, &dirs, |tree| {
            fs::write(&tree.join("cgroup.procs"), &pid)
        })
        .map_err(|e| e.at_open(Mode::CgroupV2, HINT))?;
        let mut this = CgroupV2 {
            parent,
            domain,
            id,
            period_us,
            cpu,
            added_cpu_to_parent: false,
            dirs,
            shut: AtomicBool::new(false),
            slots_shared: Default::default(),
        };
        let delegated = (|| {
            if !cpu {
                return Ok(());
            }
            let control = this.parent.join("cgroup.subtree_control");
            if !fs::read(&control)?.split_whitespace().any(|c| c == "cpu") {
                fs::write(&control, "+cpu")?;
                this.added_cpu_to_parent = true;
            }
            fs::write(&this.domain.join("cgroup.subtree_control"), "+cpu")
        })();
        match delegated {
            Ok(()) => Ok(this),
            Err(e) => {
                this.undo();
                Err(e.at_open(Mode::CgroupV2, HINT))
            }
        }
    }

    /// The process's original cgroup, where the tree is made and where the
    /// process returns on shutdown.
    pub fn parent(&self) -> &Path {
        &self.parent
    }

    /// This instance's tree, `<parent>/wasmbox-<id>`.
    pub fn domain(&self) -> &Path {
        &self.domain
    }

    /// This instance's id, 16 hex digits.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether `open` enabled the cpu controller in the parent's
    /// `cgroup.subtree_control` (and so shutdown disables it again).
    pub fn added_cpu_to_parent(&self) -> bool {
        self.added_cpu_to_parent
    }

    /// Directory of worker `n`'s slot.
    pub fn slot_dir(&self, n: usize) -> PathBuf {
        self.domain.join(format!("{SLOT}{n}"))
    }

    /// Removes the slots, undoes what `open` changed in the parent, moves
    /// the process back and removes the tree. Idempotent.
    fn undo(&self) {
        if self.shut.swap(true, Ordering::SeqCst) {
            return;
        }
        for e in std::fs::read_dir(&self.domain)
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = cgroup::remove_tree(&e.path(), &self.dirs, fs::REMOVE_PATIENCE);
            }
        }
        if self.cpu {
            // The parent's cpu can only be disabled once no child has it
            // enabled, and it must be before the process can move back.
            let _ = fs::write(&self.domain.join("cgroup.subtree_control"), "-cpu");
        }
        if self.added_cpu_to_parent {
            if let Err(e) = fs::write(&self.parent.join("cgroup.subtree_control"), "-cpu") {
                // EBUSY: another child (another server) now relies on it.
                tracing::info!(error = %e, "leaving the cpu controller enabled in the parent");
            }
        }
        if let Err(e) = fs::write(
            &self.parent.join("cgroup.procs"),
            &std::process::id().to_string(),
        ) {
            tracing::warn!(error = %e, "cannot move the process back to its cgroup");
        }
        if let Err(e) = (self.dirs.rmdir)(&self.domain, fs::REMOVE_PATIENCE) {
            tracing::warn!(error = %e, "cannot remove the wasmbox cgroup tree");
        }
    }
}

impl Isolation for CgroupV2 {
    fn mode(&self) -> Mode {
        Mode::CgroupV2
    }
    fn describe(&self) -> String {
        format!(
            "cgroup v2 threaded subtree {} (one threaded cgroup per worker, cpu.max, period {} µs)",
            self.domain.display(),
            self.period_us
        )
    }
    fn slot(&self, worker: usize, tid: i32) -> Result<Box<dyn Slot>, IsolationError> {
        CgroupSlot::create(SlotSpec {
            dir: self.slot_dir(worker),
            home: self.domain.join("cgroup.threads"),
            tid,
            period_us: self.period_us,
            setup: &|dir| fs::write(&dir.join("cgroup.type"), "threaded"),
            quota_file: self.cpu.then_some(("cpu.max", |q, period| match q {
                Some(q) => format!("{q} {period}"),
                None => format!("max {period}"),
            })),
            join_file: "cgroup.threads",
            dirs: self.dirs,
            shared: self.slots_shared.clone(),
        })
    }
    fn period(&self) -> Option<std::time::Duration> {
        self.cpu
            .then(|| std::time::Duration::from_micros(self.period_us))
    }
    fn moves(&self) -> u64 {
        self.slots_shared.moves()
    }
    fn rescues(&self) -> u64 {
        self.slots_shared.rescues()
    }
    fn shutdown(&self) {
        self.undo();
    }
}

impl Drop for CgroupV2 {
    fn drop(&mut self) {
        self.undo();
    }
}

#[cfg(test)]
#[path = "cgroup_v2_tests.rs"]
mod tests;
