//! Several `wasmbox serve` processes sharing one cgroup root, each PID 1 of
//! its own PID namespace (as in containers): their cgroup trees never
//! collide, a new server sweeps the tree of a killed one and leaves a live
//! one alone (though it cannot see that one's threads), and SIGTERM leaves
//! nothing behind.
//!
//! Needs root, a writable cgroup v1 cpu controller at /sys/fs/cgroup/cpu and
//! `unshare`; without them the test prints why and returns, unless
//! WASMBOX_REQUIRE_CGROUPS=1, where that is a failure.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const V1: &str = "/sys/fs/cgroup/cpu";
const WAIT: Duration = Duration::from_secs(60);

fn skip(why: String) {
    if std::env::var("WASMBOX_REQUIRE_CGROUPS").as_deref() == Ok("1") {
        panic!("WASMBOX_REQUIRE_CGROUPS=1 but {why}");
    }
    eprintln!("SKIPPED: {why}");
}

/// A fresh test cgroup under the v1 cpu controller (named so that no
/// wasmbox sweep ever matches it) and the servers started in it. On drop,
/// even after a failure: the servers are killed, then every cgroup in the
/// root is removed.
struct Root {
    dir: PathBuf,
    servers: Vec<Child>,
}

impl Root {
    fn new() -> Result<Root, String> {
        let dir = Path::new(V1).join(format!("instances-test-{}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| {
            format!(
                "no writable cgroup v1 cpu controller ({}: {e})",
                dir.display()
            )
        })?;
        let root = Root {
            dir,
            servers: Vec::new(),
        };
        let ok = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "true"])
            .status()
            .map_err(|e| format!("cannot run unshare: {e}"))?;
        if !ok.success() {
            return Err(format!(
                "unshare --pid --fork --mount-proc failed ({ok}); needs root"
            ));
        }
        Ok(root)
    }

    /// `wasmbox-*` trees in the root.
    fn trees(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("wasmbox-"))
            .map(|e| e.path())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill(); // unshare --kill-child takes its server along
            let _ = s.wait();
        }
        for dir in wasmbox_isolation::cgroup::post_order(&self.dir) {
            for tid in std::fs::read_to_string(dir.join("tasks"))
                .unwrap_or_default()
                .lines()
            {
                let _ = std::fs::write(Path::new(V1).join("tasks"), tid);
            }
            if let Err(e) = wasmbox_isolation::fs::remove_cgroup(&dir) {
                eprintln!("test cleanup: {e}");
            }
        }
    }
}

/// One server: its functions dir, port, and host PID (PID 1 in its namespace).
struct Server {
    _functions: tempfile::TempDir,
    port: u16,
    pid: u32,
    /// Index in `Root::servers` of its `unshare` process.
    slot: usize,
}

/// Starts `wasmbox serve` as PID 1 of a new PID namespace, with the hello
/// function, cgroup-v1 under `root`; returns once it logs "serving".
fn start(root: &mut Root) -> Server {
    let functions = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::guest("hello.wat"),
        functions.path().join("hello.wat"),
    )
    .unwrap();
    let port = common::free_port();
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child", "--mount-proc"])
        .arg(env!("CARGO_BIN_EXE_wasmbox"))
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--functions")
        .arg(functions.path())
        .args(["--cpu-isolation", "cgroup-v1", "--cgroup-root"])
        .arg(&root.dir)
        .args([
            "--capacity-cpu",
            "1000000",
            "--capacity-memory-mb",
            "1000000",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("WASMBOX_")) {
        cmd.env_remove(k);
    }
    let mut child = cmd.spawn().unwrap();
    let unshare_pid = child.id();
    let stderr = child.stderr.take().unwrap();
    root.servers.push(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("wasmbox serving") {
                let _ = tx.send(Ok(()));
            }
            log.push_str(&line);
            log.push('\n');
        }
        let _ = tx.send(Err(log)); // exited
    });
    match rx.recv_timeout(WAIT) {
        Ok(Ok(())) => {}
        Ok(Err(log)) => panic!("the server exited before serving:\n{log}"),
        Err(_) => panic!("the server did not start serving within {WAIT:?}"),
    }
    // Its PID 1, seen from here: unshare's only child.
    let children =
        std::fs::read_to_string(format!("/proc/{unshare_pid}/task/{unshare_pid}/children"))
            .unwrap();
    let pid = children.split_whitespace().next().unwrap().parse().unwrap();
    Server {
        _functions: functions,
        port,
        pid,
        slot: root.servers.len() - 1,
    }
}

/// Sends `n` concurrent hello requests and checks every answer.
fn burst(s: &Server, n: usize) {
    let port = s.port;
    let replies: Vec<_> = (0..n)
        .map(|_| std::thread::spawn(move || common::raw_get(port, "/hello")))
        .collect();
    for r in replies {
        let r = r.join().unwrap();
        assert!(
            r.starts_with("HTTP/1.1 200") && r.contains("Hello from wasmbox!"),
            "{r}"
        );
    }
}

/// The tree whose anchor thread belongs to process `pid`.
fn tree_of(root: &Root, pid: u32) -> PathBuf {
    let owner = |tid: &str| {
        std::fs::read_to_string(format!("/proc/{tid}/status"))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("Tgid:"))
            .map(|t| t.trim().to_string())
    };
    let found: Vec<PathBuf> = root
        .trees()
        .into_iter()
        .filter(|t| {
            std::fs::read_to_string(t.join("anchor/tasks"))
                .unwrap_or_default()
                .lines()
                .any(|tid| owner(tid).as_deref() == Some(&pid.to_string()))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "trees of {pid}: {found:?} among {:?}",
        root.trees()
    );
    found.into_iter().next().unwrap()
}

/// The slots of `tree` once none holds a thread: workers wait in the
/// server's own cgroup and enter their slots only during a call that runs
/// ahead of its quota, leaving before it delivers its result. Polled,
/// with a deadline, as the cgroup files have no change notification to
/// await.
fn settled_slots(tree: &Path) -> Vec<(String, String)> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let s = slots(tree);
        assert!(!s.is_empty(), "{} has no worker slot", tree.display());
        if s.iter().all(|(_, tasks)| tasks.is_empty()) {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a slot of {} still holds a thread between calls: {s:?}",
            tree.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Slot cgroups of a tree, with the tasks in each.
fn slots(tree: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(tree)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("slot-"))
        .map(|n| {
            let tasks = std::fs::read_to_string(tree.join(&n).join("tasks")).unwrap();
            (n, tasks)
        })
        .collect();
    v.sort();
    v
}

/// Sends `signal` to the server and waits for its namespace to end.
fn signal_and_wait(root: &mut Root, s: &Server, signal: &str) -> std::process::ExitStatus {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &s.pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let mut child = std::mem::replace(
        &mut root.servers[s.slot],
        Command::new("true").spawn().unwrap(),
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait().unwrap());
    });
    rx.recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("server {} still running {WAIT:?} after SIG{signal}", s.pid))
}

#[test]
fn servers_sharing_a_cgroup_root_sweep_only_the_dead_ones() {
    let mut root = match Root::new() {
        Ok(r) => r,
        Err(why) => return skip(why),
    };
    let a = start(&mut root);
    let b = start(&mut root);
    assert_ne!(a.pid, b.pid);
    burst(&a, 4);
    burst(&b, 4);
    let (tree_a, tree_b) = (tree_of(&root, a.pid), tree_of(&root, b.pid));
    assert_ne!(tree_a, tree_b);
    assert_eq!(root.trees(), {
        let mut v = vec![tree_a.clone(), tree_b.clone()];
        v.sort();
        v
    });
    for t in [&tree_a, &tree_b] {
        settled_slots(t);
    }
    let slots_b = settled_slots(&tree_b);

    // A is killed: its namespace ends, nothing cleans up.
    let status = signal_and_wait(&mut root, &a, "KILL");
    assert!(!status.success());
    assert!(tree_a.is_dir(), "a killed server cannot clean up");
    assert!(slots(&tree_a).iter().all(|(_, tasks)| tasks.is_empty()));

    // C starts on the same root: it sweeps A's tree but not B's, whose
    // threads it cannot see from its own PID namespace.
    let c = start(&mut root);
    assert!(!tree_a.exists(), "{} was not swept", tree_a.display());
    assert!(tree_b.join("anchor").is_dir());
    // Every slot b had is still there (b may have started more workers
    // since: it makes them lazily).
    let now_b = settled_slots(&tree_b);
    assert!(
        slots_b.iter().all(|s| now_b.contains(s)),
        "b's slots were touched: {slots_b:?} became {now_b:?}"
    );
    burst(&b, 4);
    burst(&c, 2);
    settled_slots(&tree_b);
    let tree_c = tree_of(&root, c.pid);
    assert_eq!(root.trees(), {
        let mut v = vec![tree_b.clone(), tree_c];
        v.sort();
        v
    });

    for s in [&b, &c] {
        assert!(signal_and_wait(&mut root, s, "TERM").success());
    }
    assert_eq!(root.trees(), Vec::<PathBuf>::new());
}
