//! The sweep, run when a cgroup mode opens: removes the cgroup trees of
//! wasmbox servers that are gone (killed, crashed) from the cgroup root.
//!
//! It looks at `wasmbox-<id>` instance trees and at the PID-named
//! directories of earlier versions (`wasmbox-<pid>`, `wasmbox-<pid>-...`),
//! and at nothing else. A tree is left alone while any thread sits in any
//! of its cgroups:
//! 1. when a cgroup of the tree lists a task in `tasks`, `cgroup.threads` or
//!    `cgroup.procs`, or cgroup2's `cgroup.events` says `populated 1`;
//! 2. when its `anchor` cgroup cannot be removed (EBUSY). Task lists only
//!    show the tasks of the reader's PID namespace, so a server in its own
//!    namespace (every container) looks empty from here; the kernel's
//!    refusal to remove a cgroup that holds a task sees every namespace. The
//!    anchor is tried first so a live tree loses nothing.
//!
//! Otherwise the tree is removed children first, stopping at the first
//! cgroup the kernel refuses to remove. Removing a fresh tree whose creator
//! has not moved in yet is allowed: the creator notices and starts over
//! (see [`cgroup::create_instance`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cgroup::{self, Dirs, ANCHOR};
use crate::IsolationError;

/// How long the anchor may answer EBUSY before its tree counts as live: a
/// cgroup stays busy for a moment after its last task exited.
const ANCHOR_PATIENCE: Duration = Duration::from_millis(100);
/// Files that list a cgroup's tasks (v1 `tasks`, v2 `cgroup.threads`; v1
/// and v2 domain cgroups also `cgroup.procs`).
const TASK_FILES: [&str; 3] = ["tasks", "cgroup.threads", "cgroup.procs"];
/// EOPNOTSUPP: reading `cgroup.procs` of a threaded cgroup.
const EOPNOTSUPP: i32 = 95;

/// What one sweep did, per tree.
#[derive(Debug, Default)]
pub struct Swept {
    /// Trees removed: no thread sat in them.
    pub removed: Vec<PathBuf>,
    /// Trees left alone because a thread sits in them.
    pub live: Vec<PathBuf>,
    /// Trees that could not be (fully) removed, and why.
    pub failed: Vec<(PathBuf, IsolationError)>,
}

/// Sweeps `root` (see the module doc).
pub fn sweep(root: &Path, dirs: &Dirs) -> Swept {
    let mut swept = Swept::default();
    let Ok(entries) = std::fs::read_dir(root) else {
        return swept;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if cgroup::layout(&name).is_none() || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let tree = e.path();
        match sweep_tree(&tree, dirs) {
            Ok(true) => swept.removed.push(tree),
            Ok(false) => swept.live.push(tree),
            Err(err) => swept.failed.push((tree, err)),
        }
    }
    for (tree, err) in &swept.failed {
        tracing::warn!(tree = %tree.display(), error = %err, "cannot remove a stale wasmbox cgroup tree");
    }
    if !swept.removed.is_empty() {
        tracing::info!(root = %root.display(), removed = swept.removed.len(), "removed the cgroup trees of wasmbox servers that are gone");
    }
    swept
}

/// Ok(true): removed; Ok(false): live, untouched.
fn sweep_tree(tree: &Path, dirs: &Dirs) -> Result<bool, IsolationError> {
    let cgroups = cgroup::post_order(tree);
    if cgroups.iter().any(|c| holds_tasks(c)) {
        return Ok(false);
    }
    let anchor = tree.join(ANCHOR);
    if anchor.is_dir() {
        match (dirs.rmdir)(&anchor, ANCHOR_PATIENCE) {
            Ok(()) => {}
            Err(e) if e.is_busy() => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    for c in cgroups.iter().filter(|c| **c != anchor) {
        (dirs.rmdir)(c, crate::fs::REMOVE_PATIENCE)?;
    }
    Ok(true)
}

/// Whether `cgroup` visibly holds a task; an unreadable task list counts
/// as holding one (when in doubt, keep).
fn holds_tasks(cgroup: &Path) -> bool {
    if std::fs::read_to_string(cgroup.join("cgroup.events"))
        .is_ok_and(|s| s.lines().any(|l| l.trim() == "populated 1"))
    {
        return true;
    }
    TASK_FILES
        .iter()
        .any(|f| match std::fs::read_to_string(cgroup.join(f)) {
            Ok(s) => !s.trim().is_empty(),
            Err(e) => {
                e.kind() != std::io::ErrorKind::NotFound && e.raw_os_error() != Some(EOPNOTSUPP)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::standin::{self, STANDIN};

    /// Builds `rel` (and its parents) under `root` as stand-in cgroups.
    fn cg(root: &Path, rel: &str) -> PathBuf {
        let mut p = root.to_path_buf();
        for part in rel.split('/') {
            p = p.join(part);
            if !p.exists() {
                (STANDIN.mkdir)(&p).unwrap();
            }
        }
        p
    }

    /// STAND-IN trees: plain directories in a tempdir with the control
    /// files a kernel would show, not a cgroup file system.
    #[test]
    fn sweeps_empty_trees_and_keeps_every_tree_with_a_task() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let live = "wasmbox-00000000000000aa";
        let anchored = "wasmbox-00000000000000bb";
        let hidden = "wasmbox-00000000000000cc";
        let populated = "wasmbox-00000000000000dd";
        let dead = "wasmbox-00000000000000ee";
        cg(root, &format!("{live}/{ANCHOR}"));
        std::fs::write(cg(root, &format!("{live}/slot-0")).join("tasks"), "4242\n").unwrap();
        std::fs::write(
            cg(root, &format!("{anchored}/{ANCHOR}")).join("tasks"),
            "17\n",
        )
        .unwrap();
        cg(root, &format!("{anchored}/slot-1"));
        // A neighbour in another PID namespace: its task lists read empty,
        // but the kernel refuses to remove its anchor.
        standin::hold_invisible_task(&cg(root, &format!("{hidden}/{ANCHOR}")));
        cg(root, &format!("{hidden}/slot-0"));
        std::fs::write(
            cg(root, populated).join("cgroup.events"),
            "populated 1\nfrozen 0\n",
        )
        .unwrap();
        cg(root, &format!("{populated}/slot-0"));
        cg(root, &format!("{dead}/{ANCHOR}"));
        cg(root, &format!("{dead}/slot-0"));
        cg(root, &format!("{dead}/slot-1"));
        // Earlier versions' PID-named layouts (v1 slots, a v1 probe, a v2 domain).
        cg(root, "wasmbox-123-0-slot-3");
        cg(root, "wasmbox-123-probe");
        std::fs::write(cg(root, "wasmbox-124-1-slot-0").join("tasks"), "99\n").unwrap();
        cg(root, "wasmbox-125/slot-0");
        // Not ours.
        cg(root, "wasmbox-test");
        cg(root, "other");

        let swept = sweep(root, &STANDIN);
        let names = |v: &[PathBuf]| {
            let mut n: Vec<String> = v
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            n.sort();
            n
        };
        assert!(swept.failed.is_empty(), "{:?}", swept.failed);
        assert_eq!(
            names(&swept.removed),
            [
                dead,
                "wasmbox-123-0-slot-3",
                "wasmbox-123-probe",
                "wasmbox-125"
            ]
        );
        assert_eq!(
            names(&swept.live),
            [live, anchored, hidden, populated, "wasmbox-124-1-slot-0"]
        );
        for gone in [
            dead,
            "wasmbox-123-0-slot-3",
            "wasmbox-123-probe",
            "wasmbox-125",
        ] {
            assert!(!root.join(gone).exists(), "{gone}");
        }
        // Live trees keep every cgroup, the hidden one included.
        for kept in [
            format!("{live}/{ANCHOR}"),
            format!("{live}/slot-0"),
            format!("{anchored}/slot-1"),
            format!("{hidden}/{ANCHOR}"),
            format!("{hidden}/slot-0"),
            format!("{populated}/slot-0"),
            "wasmbox-124-1-slot-0".into(),
            "wasmbox-test".into(),
            "other".into(),
        ] {
            assert!(root.join(&kept).is_dir(), "{kept} was removed");
        }
        // Once the hidden neighbour's task is gone, its tree goes too.
        standin::release_invisible_task(&root.join(hidden).join(ANCHOR));
        let swept = sweep(root, &STANDIN);
        assert_eq!(names(&swept.removed), [hidden]);
    }

    /// The creation race, on STAND-IN directories: a sweeper removes the
    /// fresh tree before its creator moves in; the creator starts over.
    #[test]
    fn a_tree_swept_before_its_creator_moved_in_is_made_again_under_a_new_id() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let first = std::cell::RefCell::new(None::<PathBuf>);
        let (id, tree) = cgroup::create_instance(root, &STANDIN, |tree| {
            if first.borrow().is_none() {
                *first.borrow_mut() = Some(tree.to_path_buf());
                let swept = sweep(root, &STANDIN);
                assert_eq!(swept.removed, [tree.to_path_buf()]);
            }
            crate::fs::write(&tree.join("cgroup.procs"), "1")
        })
        .unwrap();
        let first = first.into_inner().unwrap();
        assert_ne!(first, tree);
        assert!(!first.exists());
        assert_eq!(tree, root.join(format!("wasmbox-{id}")));
        assert_eq!(
            std::fs::read_to_string(tree.join("cgroup.procs")).unwrap(),
            "1"
        );
    }

    /// Any other failure to move in is reported, and the tree is removed.
    #[test]
    fn a_failure_to_move_in_is_reported_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let err = cgroup::create_instance(root, &STANDIN, |tree| {
            crate::fs::write(&tree.join("cgroup.procs"), "1")?;
            Err(IsolationError::write(
                &tree.join("cgroup.procs"),
                "1",
                std::io::Error::from_raw_os_error(22),
            ))
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("cgroup.procs: Invalid argument"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(root).unwrap().count(), 0);
    }
}
