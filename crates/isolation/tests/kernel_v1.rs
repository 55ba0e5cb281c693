//! cgroup-v1 instance trees against the real kernel: this machine's cpu
//! controller at /sys/fs/cgroup/cpu. Each test works in its own fresh test
//! cgroup there (removed again by a guard). Where no writable v1 cpu
//! controller exists the tests print why and return, unless
//! WASMBOX_REQUIRE_CGROUPS=1, where that is a failure.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use wasmbox_isolation::cgroup_v1::CgroupV1;
use wasmbox_isolation::{Isolation, IsolationConfig, Mode, Requested};

const V1: &str = "/sys/fs/cgroup/cpu";
const CHILD_ENV: &str = "WASMBOX_ISOLATION_TEST_CHILD_ROOT";

/// A fresh cgroup under the v1 cpu controller, removed (with whatever is
/// left in it) on drop.
struct TestRoot(PathBuf);

impl TestRoot {
    /// `None` (after printing why) when there is no writable v1 cpu controller.
    fn new(name: &str) -> Option<TestRoot> {
        let dir = Path::new(V1).join(format!("isolation-test-{}-{name}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => Some(TestRoot(dir)),
            Err(e) if std::env::var("WASMBOX_REQUIRE_CGROUPS").as_deref() == Ok("1") => {
                panic!(
                    "WASMBOX_REQUIRE_CGROUPS=1 but cannot create {}: {e}",
                    dir.display()
                )
            }
            Err(e) => {
                eprintln!(
                    "SKIPPED: no writable cgroup v1 cpu controller ({}: {e})",
                    dir.display()
                );
                None
            }
        }
    }

    fn open(&self) -> CgroupV1 {
        CgroupV1::open(&IsolationConfig {
            requested: Requested::Exactly(Mode::CgroupV1),
            cgroup_root: Some(self.0.clone()),
            ..Default::default()
        })
        .unwrap()
    }

    /// Names of the `wasmbox-*` entries in the root.
    fn trees(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("wasmbox-"))
            .collect();
        v.sort();
        v
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        for dir in wasmbox_isolation::cgroup::post_order(&self.0) {
            for tid in std::fs::read_to_string(dir.join("tasks"))
                .unwrap_or_default()
                .lines()
            {
                let _ = std::fs::write(Path::new(V1).join("tasks"), tid);
            }
            let _ = wasmbox_isolation::fs::remove_cgroup(&dir);
        }
    }
}

fn tasks(cgroup: &Path) -> Vec<String> {
    std::fs::read_to_string(cgroup.join("tasks"))
        .unwrap_or_else(|e| panic!("{}: {e}", cgroup.display()))
        .lines()
        .map(String::from)
        .collect()
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// A worker thread of `iso` that holds slot `n` until told to go; returns
/// its TID and the sender that lets it go (leaving its slot as it exits).
fn worker(
    iso: &'static CgroupV1,
    n: usize,
) -> (String, mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (ready_tx, ready) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    let h = std::thread::spawn(move || {
        let tid = wasmbox_isolation::current_tid();
        let mut slot = iso.slot(n, tid).unwrap();
        enter(&mut slot, 250);
        ready_tx.send(tid.to_string()).unwrap();
        let _ = go_rx.recv();
        drop(slot);
    });
    (ready.recv().unwrap(), go, h)
}

#[test]
fn two_instances_get_their_own_trees_and_shutdown_leaves_nothing() {
    let Some(root) = TestRoot::new("two") else {
        return;
    };
    let a: &'static CgroupV1 = Box::leak(Box::new(root.open()));
    let b = root.open();
    assert_ne!(a.tree(), b.tree());
    assert_eq!(a.tree(), root.0.join(format!("wasmbox-{}", a.id())));
    assert_eq!(root.trees().len(), 2);
    // Each tree is live from open on: its anchor holds one thread of ours.
    for t in [a.tree(), b.tree()] {
        let anchor = tasks(&t.join("anchor"));
        assert_eq!(anchor.len(), 1, "{}", t.display());
        assert!(Path::new(&format!("/proc/self/task/{}", anchor[0])).exists());
    }
    let shares = std::fs::read_to_string(a.tree().join("cpu.shares")).unwrap();
    assert_eq!(
        shares.trim(),
        wasmbox_isolation::cgroup_v1::tree_shares().to_string()
    );
    assert!(wasmbox_isolation::cgroup_v1::tree_shares() >= 1024);
    let (tid, go, h) = worker(a, 0);
    assert_eq!(tasks(&a.slot_dir(0)), [tid]);
    let quota = std::fs::read_to_string(a.slot_dir(0).join("cpu.cfs_quota_us")).unwrap();
    assert_eq!(quota.trim(), "25000");
    go.send(()).unwrap();
    h.join().unwrap();
    assert!(
        !a.slot_dir(0).exists(),
        "a slot removes itself when its worker leaves"
    );
    a.shutdown();
    b.shutdown();
    assert_eq!(root.trees(), Vec::<String>::new());
    a.shutdown(); // idempotent
    drop(b);
    assert_eq!(root.trees(), Vec::<String>::new());
}

#[test]
fn opening_an_instance_never_sweeps_a_live_one() {
    let Some(root) = TestRoot::new("live") else {
        return;
    };
    let a: &'static CgroupV1 = Box::leak(Box::new(root.open()));
    let idle = root.open(); // live by its anchor alone, no worker yet
    let (tid, go, h) = worker(a, 3);
    let b = root.open(); // sweeps
    assert_eq!(
        tasks(&a.slot_dir(3)),
        std::slice::from_ref(&tid),
        "a's slot survived b's sweep"
    );
    assert!(a.tree().join("anchor").is_dir() && idle.tree().join("anchor").is_dir());
    assert_eq!(root.trees().len(), 3);
    drop(b);
    let c = root.open();
    assert_eq!(tasks(&a.slot_dir(3)), [tid]);
    assert!(idle.tree().is_dir());
    go.send(()).unwrap();
    h.join().unwrap();
    for iso in [a, &idle, &c] {
        iso.shutdown();
    }
    assert_eq!(root.trees(), Vec::<String>::new());
}

/// A server killed with SIGKILL (a child process holding an instance with a
/// worker in its slot) leaves its tree behind; the next open sweeps it.
#[test]
fn a_killed_servers_tree_is_swept_by_the_next_open() {
    let Some(root) = TestRoot::new("killed") else {
        return;
    };
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_process_holds_an_instance",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &root.0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            // The harness's "test <name> ... " may precede it on the line.
            if let Some((_, t)) = line.split_once("TREE ") {
                let _ = tx.send(PathBuf::from(t.trim()));
            }
        }
    });
    let Ok(tree) = rx.recv_timeout(std::time::Duration::from_secs(60)) else {
        let _ = child.kill();
        panic!("the child did not report its tree within 60 s");
    };
    assert_eq!(tasks(&tree.join("slot-0")).len(), 1);
    let live = root.open();
    assert!(tree.join("slot-0").is_dir(), "the child's tree is live");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(tree.join("slot-0").is_dir(), "killed: nothing cleaned up");
    assert_eq!(tasks(&tree.join("slot-0")), Vec::<String>::new());
    let next = root.open();
    assert!(!tree.exists(), "{} was not swept", tree.display());
    assert_eq!(root.trees(), {
        let mut v = vec![name(live.tree()), name(next.tree())];
        v.sort();
        v
    });
    live.shutdown();
    next.shutdown();
    assert_eq!(root.trees(), Vec::<String>::new());
}

/// Not a test on its own: the child process of the test above (does nothing
/// unless started by it).
#[test]
fn child_process_holds_an_instance() {
    let Ok(root) = std::env::var(CHILD_ENV) else {
        return;
    };
    let iso = CgroupV1::open(&IsolationConfig {
        requested: Requested::Exactly(Mode::CgroupV1),
        cgroup_root: Some(root.into()),
        ..Default::default()
    })
    .unwrap();
    let iso: &'static CgroupV1 = Box::leak(Box::new(iso));
    let (_tid, _go, _h) = worker(iso, 0);
    // Straight to stdout: the test harness captures print!.
    let mut out = std::io::stdout();
    writeln!(out, "TREE {}", iso.tree().display()).unwrap();
    out.flush().unwrap();
    // Hold everything until killed (or the parent goes away).
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn explicit_v1_on_a_directory_that_is_not_a_cpu_cgroup_says_what_is_missing() {
    let err = wasmbox_isolation::open(&IsolationConfig {
        requested: Requested::Exactly(Mode::CgroupV1),
        cgroup_root: Some("/nonexistent".into()),
        ..Default::default()
    })
    .err()
    .unwrap();
    assert!(matches!(
        err,
        wasmbox_isolation::IsolationError::Unusable {
            mode: Mode::CgroupV1,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        "--cpu-isolation cgroup-v1 is not usable here: /nonexistent has no cpu.cfs_quota_us: not a cgroup v1 cpu controller directory"
    );
}

/// The creation race on the real kernel: another server's sweep removes a
/// fresh tree before its creator moved a thread in; the move fails with
/// ENOENT and the creator starts over under a new id.
#[test]
fn a_tree_swept_before_use_is_made_again_under_a_new_id() {
    use wasmbox_isolation::cgroup::{create_instance, KERNEL};
    let Some(root) = TestRoot::new("race") else {
        return;
    };
    let first = std::cell::RefCell::new(None::<PathBuf>);
    let tid = wasmbox_isolation::current_tid().to_string();
    let (_, tree) = create_instance(&root.0, &KERNEL, |tree| {
        if first.borrow().is_none() {
            *first.borrow_mut() = Some(tree.to_path_buf());
            let swept = wasmbox_isolation::sweep::sweep(&root.0, &KERNEL);
            assert_eq!(swept.removed, [tree.to_path_buf()]);
        }
        wasmbox_isolation::fs::write(&tree.join("tasks"), &tid)
    })
    .unwrap();
    let first = first.into_inner().unwrap();
    assert_ne!(first, tree);
    assert!(!first.exists());
    assert_eq!(tasks(&tree), std::slice::from_ref(&tid));
    // Live now: a sweep keeps it.
    let swept = wasmbox_isolation::sweep::sweep(&root.0, &KERNEL);
    assert_eq!((swept.removed.len(), swept.live), (0, vec![tree.clone()]));
    wasmbox_isolation::fs::write(&Path::new(V1).join("tasks"), &tid).unwrap();
}

/// A counter from a cgroup's `cpu.stat`: `nr_periods` (periods in which the
/// group ran), `nr_throttled` (periods it was held back in).
fn cpu_stat(cgroup: &Path, key: &str) -> u64 {
    std::fs::read_to_string(cgroup.join("cpu.stat"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.parse().ok())
        .unwrap()
}

/// Burns `cpu` of the calling thread's CPU time.
fn burn(cpu: std::time::Duration) {
    let start = wasmbox_isolation::thread_cpu_time();
    while wasmbox_isolation::thread_cpu_time() - start < cpu {}
}

/// Applies `millicores` (a limit) as a call would and runs ahead of it, so
/// that the calling thread (the slot's) is in its slot cgroup afterwards,
/// as a call's epoch tick would put it.
fn enter(slot: &mut Box<dyn wasmbox_isolation::Slot>, millicores: u64) {
    use std::time::{Duration, Instant};
    if let Some(mut t) = slot.apply(millicores).unwrap() {
        // Started as an invocation starts it; its first tick (a check that
        // finds CPU used) moves it in; a bounded loop all the same.
        t.start(wasmbox_isolation::thread_cpu_time());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !t.entered() {
            assert!(Instant::now() < deadline, "never ran ahead of its quota");
            burn(Duration::from_millis(2));
            t.check(Instant::now() + Duration::from_secs(60));
        }
    }
    assert!(!slot.at_home());
}

/// What one invocation spent on a worker does not throttle the next: once
/// the slot is told what was used, its next `apply` refills the period's
/// budget (and without that report a burn past what is left is throttled).
/// A 1 s period keeps each step inside one period; an attempt in which the
/// period ended on its own anyway (its timer keeps its own phase, so the
/// control proves nothing) is made again.
#[test]
fn an_invocation_starts_with_a_fresh_budget_after_a_costly_one() {
    use std::time::Duration;
    let Some(root) = TestRoot::new("fresh-budget") else {
        return;
    };
    let iso = CgroupV1::open(&IsolationConfig {
        requested: Requested::Exactly(Mode::CgroupV1),
        cgroup_root: Some(root.0.clone()),
        period: Duration::from_secs(1),
    })
    .unwrap();
    let dir = iso.slot_dir(0);
    let ms = Duration::from_millis(1);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut slot = iso.slot(0, wasmbox_isolation::current_tid()).unwrap();
            for attempt in 1.. {
                assert!(attempt <= 5, "a period ended during every attempt");
                // A full budget to start from.
                slot.used(Duration::from_secs(1));
                let periods = cpu_stat(&dir, "nr_periods");
                // 100 millicores of a 1 s period: 100 ms of CPU per period.
                enter(&mut slot, 100);
                burn(80 * ms);
                // Not reported: the budget is left as it is, 20 ms.
                slot.apply(100).unwrap();
                let before = cpu_stat(&dir, "nr_throttled");
                burn(50 * ms);
                let control = cpu_stat(&dir, "nr_throttled");
                if control == before && cpu_stat(&dir, "nr_periods") != periods {
                    continue;
                }
                assert!(
                    control > before,
                    "the control burn was not throttled: the period did not run out"
                );
                // The throttle ended the period; the new one has 70 ms left.
                // Reported, the next apply refills the budget to 100 ms.
                slot.used(130 * ms);
                slot.apply(100).unwrap();
                burn(80 * ms);
                assert_eq!(
                    cpu_stat(&dir, "nr_throttled"),
                    control,
                    "throttled after a refill"
                );
                break;
            }
            drop(slot);
        });
    });
}

/// A worker waits in the base cgroup (beside the process's other threads)
/// and starts every call there; a call with a limit moves it into its slot
/// (written by the thread itself: only that thread moves) only once it runs
/// ahead of its quota, under that quota, and it moves back out after the
/// call. A call with no limit never moves it.
#[test]
fn a_worker_enters_its_slot_only_for_a_call_that_runs_ahead_and_leaves_after() {
    let Some(root) = TestRoot::new("enter") else {
        return;
    };
    let iso = root.open();
    let dir = iso.slot_dir(0);
    let quota = || std::fs::read_to_string(dir.join("cpu.cfs_quota_us")).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            let tid = wasmbox_isolation::current_tid().to_string();
            let mut slot = iso.slot(0, tid.parse().unwrap()).unwrap();
            let inside = || tasks(&dir) == std::slice::from_ref(&tid);
            let at_base = || tasks(&root.0).contains(&tid);
            assert!(
                at_base() && tasks(&dir).is_empty(),
                "made, and waiting at the base"
            );
            for _ in 0..3 {
                assert!(slot.apply(1000).unwrap().is_none());
                assert!(at_base() && slot.at_home() && !slot.wants_tidy());
            }
            let mut t = slot.apply(250).unwrap().expect("a limit is held");
            t.start(wasmbox_isolation::thread_cpu_time());
            assert_eq!(quota().trim(), "25000");
            assert!(at_base(), "the call starts at the base");
            // Its first tick.
            burn(std::time::Duration::from_millis(1));
            t.check(std::time::Instant::now() + std::time::Duration::from_secs(60));
            // Only this thread is in the slot: `0` moved the writer, not its process.
            assert!(t.entered() && inside() && !at_base());
            assert_eq!(iso.moves(), 1);
            assert!(slot.wants_tidy());
            slot.tidy();
            assert!(at_base() && tasks(&dir).is_empty());
            assert_eq!(iso.moves(), 2);
            // In again, then dropped while inside (as a worker that exits).
            enter(&mut slot, 500);
            assert!(inside());
            assert_eq!(quota().trim(), "50000");
            // Dropped, it goes back to the base and the slot goes.
            drop(slot);
            assert!(at_base() && !dir.exists());
        });
    });
}

/// A call with a limit that uses CPU at home and never reaches a check (one
/// long operation with no epoch check inside, such as a bulk memory
/// instruction) is nudged by the watch thread (a signal whose handler
/// moves the thread in itself) and held by the kernel from there; the
/// worker moves it back out after.
#[test]
fn a_call_that_runs_long_without_a_check_is_moved_into_its_slot_by_the_watch() {
    use std::time::{Duration, Instant};
    let Some(root) = TestRoot::new("watch") else {
        return;
    };
    let iso = root.open();
    let dir = iso.slot_dir(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let tid = wasmbox_isolation::current_tid().to_string();
            let mut slot = iso.slot(0, tid.parse().unwrap()).unwrap();
            let t = slot.apply(100).unwrap().expect("a limit is held");
            assert!(tasks(&root.0).contains(&tid), "the call starts at the base");
            // No check: only the watch can move it.
            let deadline = Instant::now() + Duration::from_secs(20);
            while slot.at_home() {
                assert!(
                    Instant::now() < deadline,
                    "the watch never moved the call in"
                );
                burn(Duration::from_millis(1));
            }
            assert_eq!(tasks(&dir), std::slice::from_ref(&tid));
            assert_eq!((iso.rescues(), iso.moves()), (1, 1));
            // Held by the kernel now: 100 millicores of a 100 ms period.
            let throttled = cpu_stat(&dir, "nr_throttled");
            burn(Duration::from_millis(30));
            assert!(
                cpu_stat(&dir, "nr_throttled") > throttled,
                "not held in its slot"
            );
            assert!(!t.entered(), "no check ran");
            slot.used(Duration::from_millis(40));
            slot.tidy();
            assert!(tasks(&dir).is_empty() && tasks(&root.0).contains(&tid));
            assert_eq!((iso.rescues(), iso.moves()), (1, 2));
        });
    });
}
