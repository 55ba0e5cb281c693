//! Small helpers over the cgroup file systems: finding mounts and our own
//! cgroup, and writing control files with errors that name the file.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::IsolationError;

/// Writes `value` to a control file; the error names the file and value.
pub fn write(path: &Path, value: &str) -> Result<(), IsolationError> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| IsolationError::write(path, value, e))
}

/// Rewrites an already open control file in place.
pub fn rewrite(f: &File, path: &Path, value: &str) -> Result<(), IsolationError> {
    f.write_at(value.as_bytes(), 0)
        .map(|_| ())
        .map_err(|e| IsolationError::write(path, value, e))
}

/// Reads a control file; the error names the file.
pub fn read(path: &Path) -> Result<String, IsolationError> {
    std::fs::read_to_string(path).map_err(|e| IsolationError::step("read", path, e))
}

/// Makes a directory (in a cgroup file system: a cgroup).
pub fn create_dir(path: &Path) -> Result<(), IsolationError> {
    std::fs::create_dir(path).map_err(|e| IsolationError::step("create", path, e))
}

/// How long [`remove_cgroup`] waits out EBUSY.
pub const REMOVE_PATIENCE: Duration = Duration::from_secs(1);

/// Removes a cgroup directory, waiting up to [`REMOVE_PATIENCE`] while the
/// kernel still holds it; a directory already gone is fine.
pub fn remove_cgroup(path: &Path) -> Result<(), IsolationError> {
    remove_cgroup_within(path, REMOVE_PATIENCE)
}

/// Removes a cgroup directory. The kernel lets go of a cgroup a moment after
/// its last task left or exited (RCU), so `rmdir` can fail with EBUSY right
/// after; retry with backoff for up to `patience`, as runc does. A cgroup
/// that still holds tasks or children stays EBUSY.
pub fn remove_cgroup_within(path: &Path, patience: Duration) -> Result<(), IsolationError> {
    let mut wait = Duration::from_micros(100);
    let give_up = Instant::now() + patience;
    loop {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(crate::error::EBUSY) && Instant::now() < give_up => {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(IsolationError::step("remove", path, e)),
        }
    }
}

/// One line of /proc/self/mountinfo that we care about.
#[derive(Debug, Clone)]
pub struct Mount {
    /// Root of the mount within its hierarchy (field 4).
    pub root: String,
    /// Where it is mounted (field 5).
    pub mount_point: PathBuf,
    /// File system type: `cgroup2`, `cgroup` (v1), ... (after ` - `).
    pub fs_type: String,
    /// Super options, split at commas; a v1 mount lists its controllers
    /// here.
    pub super_options: Vec<String>,
}

/// Every mount in the text of /proc/self/mountinfo; malformed lines are
/// skipped.
pub fn mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            Some(Mount {
                root: unescape(pre.get(3)?),
                mount_point: PathBuf::from(unescape(pre.get(4)?)),
                fs_type: post.first()?.to_string(),
                super_options: post
                    .get(2)
                    .map(|o| o.split(',').map(String::from).collect())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Joins a mount point and a cgroup path seen from /proc/self/cgroup,
/// allowing for mounts of a sub-tree (root != "/").
pub fn cgroup_dir(mount: &Mount, cgroup_path: &str) -> PathBuf {
    let rel = cgroup_path
        .strip_prefix(mount.root.trim_end_matches('/'))
        .unwrap_or(cgroup_path);
    mount.mount_point.join(rel.trim_start_matches('/'))
}

/// The path, in the v1 hierarchy carrying `controller`, that a
/// `/proc/<pid>/cgroup` (or `/proc/thread-self/cgroup`) file's `contents`
/// give: the third field of the line whose second lists the controller.
pub fn v1_path_of<'a>(contents: &'a str, controller: &str) -> Option<&'a str> {
    contents.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then_some(path)
    })
}

/// A cgroup hierarchy: the unified cgroup2 one, or the v1 hierarchy that
/// carries a given controller.
#[derive(Debug, Clone, Copy)]
pub enum Hierarchy<'a> {
    /// The unified cgroup2 hierarchy.
    V2,
    /// The v1 hierarchy that carries this controller (e.g. `cpu`).
    V1(&'a str),
}

/// This process's cgroup directory in `h`, found from /proc/self/mountinfo
/// and /proc/self/cgroup.
pub fn own_cgroup(h: Hierarchy<'_>) -> Result<PathBuf, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let mounts = mounts(&mountinfo);
    let (mount, path) = match h {
        Hierarchy::V2 => {
            let m = mounts.iter().find(|m| m.fs_type == "cgroup2").ok_or(
                "no cgroup2 file system is mounted (no 'cgroup2' line in /proc/self/mountinfo)",
            )?;
            let path = own
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .ok_or("/proc/self/cgroup has no cgroup2 ('0::') line")?;
            (m, path.to_string())
        }
        Hierarchy::V1(controller) => {
            let m = mounts
                .iter()
                .find(|m| m.fs_type == "cgroup" && m.super_options.iter().any(|o| o == controller))
                .ok_or_else(|| {
                    format!("no cgroup v1 {controller} controller is mounted (no 'cgroup' line with option '{controller}' in /proc/self/mountinfo)")
                })?;
            let path = v1_path_of(&own, controller)
                .ok_or_else(|| format!("/proc/self/cgroup has no {controller} controller line"))?;
            (m, path.to_string())
        }
    };
    Ok(cgroup_dir(mount, &path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
41 31 0:38 /kubepods/pod1 /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 31 0:40 / /data\\040dir rw - ext4 /dev/vda rw";

    #[test]
    fn parses_mountinfo() {
        let m = mounts(MOUNTINFO);
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].super_options, vec!["rw", "cpu", "cpuacct"]);
        assert_eq!(m[2].fs_type, "cgroup2");
        assert_eq!(m[3].mount_point, PathBuf::from("/data dir"));
        assert_eq!(
            cgroup_dir(&m[2], "/kubepods/pod1/ctr"),
            PathBuf::from("/sys/fs/cgroup/unified/ctr")
        );
        assert_eq!(
            cgroup_dir(&m[0], "/a/b"),
            PathBuf::from("/sys/fs/cgroup/cpu/a/b")
        );
        assert_eq!(cgroup_dir(&m[0], "/"), PathBuf::from("/sys/fs/cgroup/cpu/"));
    }
}
