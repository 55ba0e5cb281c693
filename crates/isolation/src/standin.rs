//! For unit tests: plain directories STANDING IN for cgroups (not a cgroup
//! file system). `mkdir` makes the control files a kernel would show;
//! `rmdir` refuses, like the kernel, a cgroup with children or marked as
//! holding a task this PID namespace cannot see, and otherwise removes the
//! files and the directory. Migration between cgroups is not modelled.

use std::io;
use std::path::Path;
use std::time::Duration;

use crate::cgroup::Dirs;
use crate::IsolationError;

const FILES: [&str; 9] = [
    "tasks",
    "cgroup.procs",
    "cgroup.threads",
    "cgroup.subtree_control",
    "cgroup.type",
    "cpu.max",
    "cpu.cfs_quota_us",
    "cpu.cfs_period_us",
    "cgroup.controllers",
];
/// Marks a stand-in cgroup as holding a task of another PID namespace.
const INVISIBLE: &str = "stand-in.invisible-task";

pub const STANDIN: Dirs = Dirs { mkdir, rmdir };

fn mkdir(path: &Path) -> Result<(), IsolationError> {
    std::fs::create_dir(path).map_err(|e| IsolationError::step("create", path, e))?;
    for f in FILES {
        std::fs::write(path.join(f), "").unwrap();
    }
    Ok(())
}

fn rmdir(path: &Path, _patience: Duration) -> Result<(), IsolationError> {
    let busy = || IsolationError::step("remove", path, io::Error::from_raw_os_error(16));
    let entries = match std::fs::read_dir(path) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(IsolationError::step("remove", path, e)),
    };
    let entries: Vec<_> = entries.flatten().collect();
    if entries
        .iter()
        .any(|e| e.file_type().unwrap().is_dir() || e.file_name() == INVISIBLE)
    {
        return Err(busy());
    }
    for e in entries {
        std::fs::remove_file(e.path()).unwrap();
    }
    std::fs::remove_dir(path).map_err(|e| IsolationError::step("remove", path, e))
}

pub fn hold_invisible_task(cgroup: &Path) {
    std::fs::write(cgroup.join(INVISIBLE), "").unwrap();
}

pub fn release_invisible_task(cgroup: &Path) {
    std::fs::remove_file(cgroup.join(INVISIBLE)).unwrap();
}
