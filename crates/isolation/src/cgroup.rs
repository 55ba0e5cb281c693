//! What the two cgroup modes share: a slot is a cgroup directory its worker
//! thread sits in for life, with the quota file kept open; and the sweep of
//! directories left behind by processes that are gone.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::{fs, quota_us, Slot, Throttle};

/// Prefix of every directory wasmbox makes; followed by the pid.
pub const PREFIX: &str = "wasmbox-";

/// One worker thread's cgroup.
/// Formats "<quota µs>, <period µs>" as one mode's quota file wants it.
pub type QuotaText = fn(u64, u64) -> String;

pub struct CgroupSlot {
    dir: PathBuf,
    /// Where the TID is written to move the thread back out (v1
    /// `<base>/tasks`, v2 `<domain>/cgroup.threads`).
    home: PathBuf,
    tid: i32,
    /// The kept-open quota file and the text a quota in µs becomes there;
    /// `None` when nothing is enforced (cgroup2 placement only).
    quota: Option<(File, PathBuf, QuotaText)>,
    period_us: u64,
    current: Option<u64>,
}

/// How to make one slot.
pub struct SlotSpec<'a> {
    pub dir: PathBuf,
    pub home: PathBuf,
    pub tid: i32,
    pub period_us: u64,
    /// Mode-specific writes before the thread moves in.
    pub setup: &'a dyn Fn(&Path) -> io::Result<()>,
    /// Quota file name and how to format "<quota µs>, <period µs>" for it.
    pub quota_file: Option<(&'a str, QuotaText)>,
    /// File that takes the TID (`tasks` or `cgroup.threads`).
    pub join_file: &'a str,
}

impl CgroupSlot {
    /// Creates (or reuses) the directory, sets it up, opens the quota file
    /// and moves the thread in; removes the directory again on failure.
    pub fn create(spec: SlotSpec<'_>) -> io::Result<Box<dyn Slot>> {
        let dir = spec.dir;
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(fs::named(&dir, "create", e))
            }
            _ => {}
        }
        let made = (|| {
            (spec.setup)(&dir)?;
            let quota = match spec.quota_file {
                Some((name, format)) => {
                    let p = dir.join(name);
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&p)
                        .map_err(|e| fs::named(&p, "open", e))?;
                    Some((f, p, format))
                }
                None => None,
            };
            fs::write(&dir.join(spec.join_file), &spec.tid.to_string())?;
            Ok(quota)
        })();
        match made {
            Ok(quota) => Ok(Box::new(CgroupSlot {
                dir,
                home: spec.home,
                tid: spec.tid,
                quota,
                period_us: spec.period_us,
                current: None,
            })),
            Err(e) => {
                let _ = fs::remove_cgroup(&dir);
                Err(e)
            }
        }
    }
}

impl Slot for CgroupSlot {
    fn apply(&mut self, millicores: u64) -> io::Result<Option<Throttle>> {
        let q = quota_us(millicores, self.period_us);
        if let Some((file, path, format)) = &self.quota {
            if self.current != Some(q) {
                fs::rewrite(file, path, &format(q, self.period_us))?;
                self.current = Some(q);
            }
        }
        Ok(None)
    }
}

impl Drop for CgroupSlot {
    /// Runs on the worker thread as it exits: move it back, remove the slot.
    fn drop(&mut self) {
        let _ = fs::write(&self.home, &self.tid.to_string());
        if let Err(e) = fs::remove_cgroup(&self.dir) {
            tracing::warn!(path = %self.dir.display(), error = %e, "slot cgroup not removed; shutdown sweeps it");
        }
    }
}

/// Removes the `wasmbox-<pid>...` directories in `parent` whose process is
/// gone, calling `empty` on each first. Returns how many were removed.
pub fn remove_stale(parent: &Path, empty: impl Fn(&Path)) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || fs::pid_alive(pid) {
            continue;
        }
        empty(&e.path());
        match fs::remove_cgroup(&e.path()) {
            Ok(()) => removed += 1,
            Err(err) => {
                tracing::warn!(path = %e.path().display(), error = %err, "cannot remove a stale wasmbox cgroup")
            }
        }
    }
    removed
}
