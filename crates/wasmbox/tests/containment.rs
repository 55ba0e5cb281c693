//! Tenant containment over real HTTP with real guests: a guest asleep in a
//! host call meets its deadline; clients that hang up free their workers and
//! reservations; readiness says when invocations cannot start; SIGTERM with
//! sleepers and spinners in flight ends within the drain timeout, exit 0,
//! no cgroup left. (Fair admission across functions: tests/fairness.rs.)

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{send_get, until, TestServer};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

async fn read_all(mut s: TcpStream) -> String {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_asleep_in_a_host_call_answers_504_at_its_deadline() {
    let s = TestServer::start(&["sleep.wasm"], &["--timeout", "300ms"]).await;
    let r = s.get("/sleep").await; // an hour, in one poll_oneoff
    r.expect(504, &["time limit"]);
    assert_eq!(r.header("wasmbox-error"), Some("timeout"));
    s.get("/sleep?arg=1").await.expect(200, &["slept 1 ms"]);
    // The worker is free again: nothing runs, nothing is reserved.
    let snap = s.app.admission.snapshot();
    assert_eq!(snap.reserved.cpu_millis, 0);
    assert_eq!(s.app.executor.busy(), 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_sleepers_free_their_workers_and_readiness_follows() {
    let s = TestServer::start(&["sleep.wasm", "hello.wat"], &["--workers", "4"]).await;
    s.get("/-/ready").await.expect(200, &["ready"]);
    // Twelve sleepers on four workers: four run, and the capacity has room
    // for all twelve, but eight wait in admission (in its fair order, not
    // in the workers' first-come queue) for a worker.
    let mut clients = Vec::new();
    for _ in 0..12 {
        clients.push(send_get(&s.base, "/sleep", "cpu_quota: 100\r\n").await);
    }
    let app = s.app.clone();
    until("four sleepers running and eight queued", || {
        app.executor.stats().busy == 4 && app.admission.snapshot().queued == 8
    })
    .await;
    assert_eq!(app.executor.stats().queued, 0);
    // Invocations cannot start: not ready, saying why.
    let r = s.get("/-/ready").await;
    r.expect(503, &["all 4 workers are busy", "8 invocations wait"]);
    assert_eq!(s.app.admission.snapshot().reserved.cpu_millis, 400);

    // The clients hang up: every sleeper stops, running or queued.
    drop(clients);
    until("reservations released", || {
        app.admission.snapshot().reserved.cpu_millis == 0
    })
    .await;
    // A reservation is released only once its guest has stopped.
    assert_eq!(app.executor.busy(), 0);
    assert_eq!(app.executor.stats().queued, 0);
    s.get("/-/ready").await.expect(200, &["ready"]);
    s.get("/hello").await.expect(200, &["Hello from wasmbox!"]);
    // Each abandoned request is counted as client-gone.
    let m = s.admin_get("/-/metrics").await.text();
    assert!(
        m.contains(r#"wasmbox_invocations_total{function="sleep.wasm",outcome="client-gone"} 12"#),
        "{m}"
    );
    s.stop().await;
}

const V1_ROOT: &str = "/sys/fs/cgroup/cpu";

/// A fresh cgroup under the v1 cpu controller for one test, removed (with
/// anything left inside) when dropped; `None` (after printing why) where
/// there is none, unless WASMBOX_REQUIRE_CGROUPS=1.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new(name: &str) -> Option<TestCgroup> {
        let dir = Path::new(V1_ROOT).join(format!("wbtest-{}-{name}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => Some(TestCgroup(dir)),
            Err(e) if std::env::var("WASMBOX_REQUIRE_CGROUPS").as_deref() == Ok("1") => {
                panic!(
                    "WASMBOX_REQUIRE_CGROUPS=1 but cannot create {}: {e}",
                    dir.display()
                )
            }
            Err(e) => {
                eprintln!("SKIPPED: no writable cgroup v1 cpu controller: {e}");
                None
            }
        }
    }

    /// Every cgroup directory below this one.
    fn children(&self) -> Vec<PathBuf> {
        fn walk(d: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    walk(&e.path(), out);
                    out.push(e.path());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.0, &mut out);
        out
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for d in self.children() {
            let _ = std::fs::remove_dir(d);
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn sigterm_with_sleepers_and_spinners_in_flight_ends_within_the_drain_timeout() {
    let Some(cg) = TestCgroup::new("drain") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for g in ["sleep.wasm", "spin.wasm"] {
        std::fs::copy(common::guest(g), dir.path().join(g)).unwrap();
    }
    let port = common::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmbox"))
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--functions", dir.path().to_str().unwrap()])
        .args(["--cpu-isolation", "cgroup-v1", "--cgroup-root"])
        .arg(&cg.0)
        .args(["--drain-timeout", "1s", "--timeout", "1h", "--workers", "6"])
        .args([
            "--capacity-cpu",
            "1000000",
            "--capacity-memory-mb",
            "1000000",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let in_flight = rt.block_on(async {
        until("the server accepts connections", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(send_get(&base, "/sleep", "connection: close\r\n").await);
            clients.push(send_get(&base, "/spin", "connection: close\r\n").await);
        }
        // Every one of them holds a worker, and a seventh waits for one:
        // readiness says so.
        clients.push(send_get(&base, "/sleep", "connection: close\r\n").await);
        until("six busy workers and one call waiting", || {
            common::raw_get(port, "/-/ready")
                .contains("all 6 workers are busy and 1 invocations wait")
        })
        .await;
        clients
    });
    let signalled = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let replies: Vec<String> = rt.block_on(async {
        let mut out = Vec::new();
        for c in in_flight {
            out.push(read_all(c).await);
        }
        out
    });
    // Bounded: wait for the exit with a deadline far above the drain timeout.
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if signalled.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("still running 60 s after SIGTERM with a 1 s drain timeout");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
    for r in &replies {
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.to_lowercase().contains("wasmbox-error: draining"), "{r}");
    }
    assert_eq!(cg.children(), Vec::<PathBuf>::new(), "slot cgroups left");
}
