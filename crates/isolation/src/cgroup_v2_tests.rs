//! cgroup-v2 against STAND-IN trees: plain directories in a tempdir with the
//! control files a kernel would show (this machine's cgroup2 mount has no
//! cpu controller). They check what is written where, not the kernel.

use super::*;
use crate::standin::STANDIN;
use crate::{IsolationConfig, Requested};

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(p).unwrap()
}

/// A stand-in parent cgroup whose subtree_control holds `enabled`.
fn parent(enabled: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    std::fs::write(p.join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
    std::fs::write(p.join("cgroup.subtree_control"), enabled).unwrap();
    std::fs::write(p.join("cgroup.procs"), "").unwrap();
    tmp
}

fn open(parent: &Path) -> Result<CgroupV2, IsolationError> {
    let cfg = IsolationConfig {
        requested: Requested::Exactly(Mode::CgroupV2),
        cgroup_root: Some(parent.to_path_buf()),
        ..Default::default()
    };
    CgroupV2::open_with(&cfg, STANDIN)
}

#[test]
fn enables_cpu_in_the_parent_writes_cpu_max_and_undoes_only_what_it_added() {
    let tmp = parent("");
    let parent = tmp.path();
    let v2 = open(parent).unwrap();
    let domain = v2.domain().to_path_buf();
    assert_eq!(v2.parent(), parent);
    assert_eq!(domain, parent.join(format!("wasmbox-{}", v2.id())));
    assert!(v2.added_cpu_to_parent());
    assert_eq!(read(parent.join("cgroup.subtree_control")), "+cpu");
    assert_eq!(read(domain.join("cgroup.subtree_control")), "+cpu");
    assert_eq!(
        read(domain.join("cgroup.procs")),
        std::process::id().to_string()
    );

    let mut s = v2.slot(0, 4242).unwrap();
    let slot = v2.slot_dir(0);
    assert_eq!(slot, domain.join("slot-0"));
    assert_eq!(read(slot.join("cgroup.type")), "threaded");
    assert_eq!(
        read(slot.join("cgroup.threads")),
        "4242",
        "creation tried the move"
    );
    s.apply(250).unwrap();
    assert_eq!(read(slot.join("cpu.max")), "25000 100000");
    // Unchanged quota: no write at all.
    std::fs::write(slot.join("cpu.max"), "untouched").unwrap();
    s.apply(250).unwrap();
    assert_eq!(read(slot.join("cpu.max")), "untouched");
    // A whole core is no limit for the slot's one thread: nothing to hold
    // and, with the thread at home, nothing written.
    assert!(s.apply(1000).unwrap().is_none());
    assert_eq!(read(slot.join("cpu.max")), "untouched");
    // Below the kernel's 1 ms minimum quota: clamped.
    s.apply(5).unwrap();
    assert!(read(slot.join("cpu.max")).starts_with("1000 100000"));
    // A call at its first tick moves in through cgroup.threads; dropped
    // while in, the slot moves it back to the domain.
    for f in [slot.join("cgroup.threads"), domain.join("cgroup.threads")] {
        std::fs::write(f, "").unwrap();
    }
    let mut t = s.apply(250).unwrap().expect("a limit");
    t.start(crate::thread_cpu_time());
    crate::throttle::burn(std::time::Duration::from_millis(1));
    t.check(std::time::Instant::now() + std::time::Duration::from_secs(60));
    assert!(t.entered());
    assert_eq!(read(slot.join("cgroup.threads")), "4242");
    assert_eq!(read(domain.join("cgroup.threads")), "");
    drop(s);
    assert!(!slot.exists(), "the slot removes itself");
    assert_eq!(
        read(domain.join("cgroup.threads")),
        "4242",
        "its thread moved back"
    );

    v2.shutdown();
    assert_eq!(read(parent.join("cgroup.subtree_control")), "-cpu");
    assert_eq!(
        read(parent.join("cgroup.procs")),
        std::process::id().to_string()
    );
    assert!(!domain.exists());
    // Idempotent, also on drop.
    std::fs::write(parent.join("cgroup.subtree_control"), "cpu").unwrap();
    v2.shutdown();
    drop(v2);
    assert_eq!(read(parent.join("cgroup.subtree_control")), "cpu");
}

#[test]
fn leaves_the_parent_cpu_controller_alone_when_it_was_already_enabled() {
    let tmp = parent("cpu memory");
    let v2 = open(tmp.path()).unwrap();
    assert!(!v2.added_cpu_to_parent());
    assert_eq!(
        read(tmp.path().join("cgroup.subtree_control")),
        "cpu memory"
    );
    assert_eq!(read(v2.domain().join("cgroup.subtree_control")), "+cpu");
    let domain = v2.domain().to_path_buf();
    v2.shutdown();
    assert_eq!(
        read(tmp.path().join("cgroup.subtree_control")),
        "cpu memory"
    );
    assert!(!domain.exists());
}

#[test]
fn instances_in_one_root_get_their_own_trees_and_are_not_swept_while_live() {
    let tmp = parent("");
    let a = open(tmp.path()).unwrap();
    let _slot = a.slot(0, 7).unwrap();
    let b = open(tmp.path()).unwrap();
    assert_ne!(a.domain(), b.domain());
    assert!(a.slot_dir(0).is_dir(), "b's sweep kept a's slot");
    b.shutdown();
    assert!(a.domain().is_dir());
}

#[test]
fn says_what_is_missing_when_cgroup_v2_cannot_work() {
    let tmp = parent("");
    std::fs::write(tmp.path().join("cgroup.controllers"), "memory pids\n").unwrap();
    let err = open(tmp.path()).err().unwrap();
    assert!(matches!(
        err,
        IsolationError::Unusable {
            mode: Mode::CgroupV2,
            ..
        }
    ));
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "--cpu-isolation cgroup-v2 is not usable here: the cpu controller is not available in"
        ) && msg.contains("cgroup.controllers (it lists: 'memory pids')"),
        "{msg}"
    );
    let err = open(Path::new("/nonexistent")).err().unwrap().to_string();
    assert!(
        err.contains("cannot read /nonexistent/cgroup.controllers: No such file or directory")
            && err.ends_with("(is /nonexistent a cgroup2 directory?)"),
        "{err}"
    );
    let tmp = parent("");
    std::fs::remove_file(tmp.path().join("cgroup.subtree_control")).unwrap();
    let err = open(tmp.path()).err().unwrap();
    assert!(
        matches!(err, IsolationError::Step { action: "read", .. }),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .count(),
        0,
        "a failed open leaves no tree"
    );
}
