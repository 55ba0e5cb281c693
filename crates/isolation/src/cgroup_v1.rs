//! `cgroup-v1`: one cgroup per worker thread in the v1 cpu controller, next
//! to (under) the process's own cpu cgroup: `<ours>/wasmbox-<pid>-slot-<n>`.
//! The worker's TID goes into `tasks` once; per invocation only
//! `cpu.cfs_quota_us` is rewritten, on a kept-open fd, and only when the
//! quota changes.

use std::io;
use std::path::{Path, PathBuf};

use crate::cgroup::{self, CgroupSlot, SlotSpec, PREFIX};
use crate::fs;
use crate::{Isolation, IsolationConfig, Mode, Slot};

pub struct CgroupV1 {
    /// The process's own cgroup in the cpu hierarchy; slots are made here.
    base: PathBuf,
    period_us: u64,
    /// `wasmbox-<pid>-<instance>-slot-`: several servers may live in one
    /// process (tests), each with its own slots.
    slot_prefix: String,
}

static INSTANCES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl CgroupV1 {
    pub fn open(config: &IsolationConfig) -> Result<Self, String> {
        let base = match &config.cgroup_root {
            Some(root) => root.clone(),
            None => fs::own_cgroup(fs::Hierarchy::V1("cpu"))?,
        };
        for f in ["cpu.cfs_quota_us", "cpu.cfs_period_us", "tasks"] {
            if !base.join(f).exists() {
                return Err(format!(
                    "{} has no {f}: not a cgroup v1 cpu controller directory",
                    base.display()
                ));
            }
        }
        // Can we make cgroups here at all?
        let probe = base.join(format!("{PREFIX}{}-probe", std::process::id()));
        std::fs::create_dir(&probe).map_err(|e| {
            format!(
                "cannot create a cgroup in {} ({e}); needs write access to the cpu controller",
                base.display()
            )
        })?;
        let _ = fs::remove_cgroup(&probe);
        let removed = remove_stale(&base);
        if removed > 0 {
            tracing::info!(removed, base = %base.display(), "removed stale slot cgroups of earlier runs");
        }
        let instance = INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let slot_prefix = format!("{PREFIX}{}-{instance}-slot-", std::process::id());
        Ok(CgroupV1 {
            base,
            period_us: config.period.as_micros() as u64,
            slot_prefix,
        })
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Directory of worker `n`'s slot.
    pub fn slot_dir(&self, n: usize) -> PathBuf {
        self.base.join(format!("{}{n}", self.slot_prefix))
    }
}

/// Removes slot cgroups whose owning process is gone. Returns how many.
pub fn remove_stale(base: &Path) -> usize {
    cgroup::remove_stale(base, |dir| {
        // Threads of a dead process are gone, but move any stragglers out.
        if let Ok(tasks) = std::fs::read_to_string(dir.join("tasks")) {
            for tid in tasks.lines() {
                let _ = fs::write(&base.join("tasks"), tid);
            }
        }
    })
}

impl Isolation for CgroupV1 {
    fn mode(&self) -> Mode {
        Mode::CgroupV1
    }
    fn describe(&self) -> String {
        format!(
            "cgroup v1 cpu controller: one cgroup per worker thread under {}, period {} µs",
            self.base.display(),
            self.period_us
        )
    }
    fn slot(&self, worker: usize, tid: i32) -> io::Result<Box<dyn Slot>> {
        let period = self.period_us.to_string();
        CgroupSlot::create(SlotSpec {
            dir: self.slot_dir(worker),
            home: self.base.join("tasks"),
            tid,
            period_us: self.period_us,
            setup: &|dir| fs::write(&dir.join("cpu.cfs_period_us"), &period),
            quota_file: Some(("cpu.cfs_quota_us", |q, _| q.to_string())),
            join_file: "tasks",
        })
    }
    fn shutdown(&self) {
        // Slots remove themselves when their worker exits; sweep what is left.
        let Ok(entries) = std::fs::read_dir(&self.base) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&self.slot_prefix)
            {
                if let Err(err) = fs::remove_cgroup(&e.path()) {
                    tracing::warn!(path = %e.path().display(), error = %err, "cannot remove slot cgroup");
                }
            }
        }
    }
}
