//! CPU isolation of components, measured as in tests/cpu_isolation.rs: a
//! CPU-bound command component (`cli-spin`) and a CPU-bound handler
//! (`httpkit/spin/MS`) at cpu_quota 250, the CPU time their worker thread
//! received (Server-Timing `cpu`) against wall time (`execute`). Components
//! run on the same worker threads as modules, in the same slots.
//!
//! cgroup-v1 runs where this machine has a writable cpu controller (else
//! it says why and returns, unless WASMBOX_REQUIRE_CGROUPS=1); throttle
//! runs everywhere. One test at a time: they measure CPU shares.

mod common;

use bytes::Bytes;
use common::{phase, v1_usable, TestServer};
use hyper::Method;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The share of a core `path` received at cpu_quota `quota`.
async fn share(s: &TestServer, path: &str, quota: u64) -> f64 {
    let q = quota.to_string();
    let r = s
        .request(Method::GET, path, &[("cpu_quota", &q)], Bytes::new())
        .await;
    r.expect(200, &["spun"]);
    let t = r.header("server-timing").unwrap();
    let share = phase(t, "cpu") / phase(t, "execute");
    eprintln!(
        "{path} at cpu_quota {quota}: {:.1} % of a core",
        share * 100.0
    );
    share
}

async fn components_are_held_to_their_quota(mode: &str) {
    let s = TestServer::start(
        &["cli-spin.wasm", "httpkit.wasm"],
        &["--cpu-isolation", mode],
    )
    .await;
    for path in ["/cli-spin?arg=1500", "/httpkit/spin/1500"] {
        let got = share(&s, path, 250).await;
        assert!(
            (got - 0.25).abs() <= 0.05,
            "{mode} {path}: got {:.1} % of a core, want 25 % ± 5",
            got * 100.0
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_holds_components_to_their_quota() {
    let _g = SERIAL.lock().await;
    components_are_held_to_their_quota("throttle").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgroup_v1_holds_components_to_their_quota() {
    let _g = SERIAL.lock().await;
    if v1_usable() {
        components_are_held_to_their_quota("cgroup-v1").await;
    }
}
