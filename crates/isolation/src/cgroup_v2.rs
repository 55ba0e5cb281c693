//! `cgroup-v2`: a threaded subtree under the process's own cgroup.
//!
//! Layout, with P the process's cgroup (from /proc/self/cgroup and the
//! cgroup2 mount, or `--cgroup-root`):
//! ```text
//! P/                          cgroup.subtree_control: +cpu
//! └── wasmbox-<pid>/          the whole process moves here (P must hold no
//!     │                       processes to delegate cpu: no-internal-process rule)
//!     ├── slot-0/             cgroup.type = threaded; worker 0's TID in
//!     │                       cgroup.threads; cpu.max = "<quota> <period>"
//!     └── slot-1/ ...
//! ```
//! Per invocation only `cpu.max` is rewritten on a kept-open fd, and only
//! when the quota changes. Shutdown undoes all of it.

use std::io;
use std::path::{Path, PathBuf};

use crate::cgroup::{self, CgroupSlot, SlotSpec, PREFIX};
use crate::fs;
use crate::{Isolation, IsolationConfig, Mode, Slot};

pub struct CgroupV2 {
    /// The process's original cgroup.
    parent: PathBuf,
    /// `parent/wasmbox-<pid>`: holds the process and the slots.
    domain: PathBuf,
    period_us: u64,
    /// False only for [`CgroupV2::open_placement_only`].
    cpu: bool,
}

impl CgroupV2 {
    pub fn open(config: &IsolationConfig) -> Result<Self, String> {
        let parent = match &config.cgroup_root {
            Some(p) => p.clone(),
            None => fs::own_cgroup(fs::Hierarchy::V2)?,
        };
        let controllers = fs::read(&parent.join("cgroup.controllers"))
            .map_err(|e| format!("{e} (is {} a cgroup2 directory?)", parent.display()))?;
        if !controllers.split_whitespace().any(|c| c == "cpu") {
            return Err(format!(
                "the cpu controller is not available in {}/cgroup.controllers (it lists: '{}'); on a hybrid host it is bound to cgroup v1",
                parent.display(),
                controllers.trim()
            ));
        }
        Self::setup(parent, config.period.as_micros() as u64, true)
    }

    /// Places threads in a threaded subtree of `parent` without delegating
    /// the cpu controller, so nothing is enforced. Only for testing placement
    /// and accounting on hosts whose cgroup2 mount has no cpu controller.
    pub fn open_placement_only(parent: PathBuf) -> Result<Self, String> {
        Self::setup(parent, 100_000, false)
    }

    fn setup(parent: PathBuf, period_us: u64, cpu: bool) -> Result<Self, String> {
        let pid = std::process::id();
        let removed = remove_stale(&parent);
        if removed > 0 {
            tracing::info!(removed, parent = %parent.display(), "removed stale wasmbox cgroups of earlier runs");
        }
        let domain = parent.join(format!("{PREFIX}{pid}"));
        let step = |r: io::Result<()>| {
            r.map_err(|e| format!("{e}; needs a writable, delegated cgroup2 directory"))
        };
        match std::fs::create_dir(&domain) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                step(Err(fs::named(&domain, "create", e)))?
            }
            _ => {}
        }
        let this = CgroupV2 {
            parent,
            domain,
            period_us,
            cpu,
        };
        let result = (|| {
            step(fs::write(
                &this.domain.join("cgroup.procs"),
                &pid.to_string(),
            ))?;
            if cpu {
                step(fs::write(
                    &this.parent.join("cgroup.subtree_control"),
                    "+cpu",
                ))?;
                step(fs::write(
                    &this.domain.join("cgroup.subtree_control"),
                    "+cpu",
                ))?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(this),
            Err(e) => {
                this.undo();
                Err(e)
            }
        }
    }

    pub fn domain(&self) -> &Path {
        &self.domain
    }

    pub fn slot_dir(&self, n: usize) -> PathBuf {
        self.domain.join(format!("slot-{n}"))
    }

    /// Moves the process back to its cgroup and removes ours.
    fn undo(&self) {
        for e in std::fs::read_dir(&self.domain)
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with("slot-") {
                let _ = fs::remove_cgroup(&e.path());
            }
        }
        if self.cpu {
            let _ = fs::write(&self.domain.join("cgroup.subtree_control"), "-cpu");
            let _ = fs::write(&self.parent.join("cgroup.subtree_control"), "-cpu");
        }
        let _ = fs::write(
            &self.parent.join("cgroup.procs"),
            &std::process::id().to_string(),
        );
        if let Err(e) = fs::remove_cgroup(&self.domain) {
            tracing::warn!(path = %self.domain.display(), error = %e, "cannot remove wasmbox cgroup");
        }
    }
}

/// Removes `wasmbox-<pid>` trees of processes that are gone.
pub fn remove_stale(parent: &Path) -> usize {
    cgroup::remove_stale(parent, |domain| {
        for slot in std::fs::read_dir(domain).into_iter().flatten().flatten() {
            if slot.path().is_dir() {
                let _ = fs::remove_cgroup(&slot.path());
            }
        }
    })
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
    fn slot(&self, worker: usize, tid: i32) -> io::Result<Box<dyn Slot>> {
        CgroupSlot::create(SlotSpec {
            dir: self.slot_dir(worker),
            home: self.domain.join("cgroup.threads"),
            tid,
            period_us: self.period_us,
            setup: &|dir| fs::write(&dir.join("cgroup.type"), "threaded"),
            quota_file: self
                .cpu
                .then_some(("cpu.max", |q, period| format!("{q} {period}"))),
            join_file: "cgroup.threads",
        })
    }
    fn shutdown(&self) {
        self.undo();
    }
}
