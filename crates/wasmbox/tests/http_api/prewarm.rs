//! New and changed function files are compiled before their first request:
//! as they are written into the directory (inotify), into the table while it
//! has room and into the AOT cache past that.

use super::common::{self, TestServer};

/// A WASI command printing `msg`.
fn printer(msg: &str) -> String {
    format!(
        r#"(module
          (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (data (i32.const 100) "{msg}")
          (func (export "_start")
            (i32.store (i32.const 0) (i32.const 100))
            (i32.store (i32.const 4) (i32.const {len}))
            (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        len = msg.len()
    )
}

/// Writes `text` to `name` in the server's directory the way a deploy
/// should: a temporary name, then a rename into place.
fn deploy(s: &TestServer, name: &str, text: &str) {
    let tmp = s.path(&format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, s.path(name)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_file_is_compiled_before_its_first_request_and_a_changed_one_again() {
    // The scan interval is long: only the watcher can find the file in
    // time. Every request looks at the file (no --revalidate-after window).
    let s = TestServer::start(
        &["hello.wat"],
        &["--prewarm-poll", "1h", "--revalidate-after", "0"],
    )
    .await;
    let r = &s.app.registry;
    // The startup scan loads what is there, and counts as finished only
    // then (what a benchmark waits for before it measures).
    common::until("the startup scan finished", || r.prewarm_scans() >= 1).await;
    assert_eq!(
        r.prewarmed(),
        1,
        "the scan ended before hello.wat was loaded"
    );
    let loads = r.loads();
    s.get("/hello").await.expect(200, &["Hello"]);
    assert_eq!(r.loads(), loads, "the first request compiled hello.wat");

    deploy(&s, "fresh.wat", &printer("fresh one"));
    common::until("fresh.wat prewarmed", || r.prewarmed() >= 2).await;
    let loads = r.loads();
    s.get("/fresh").await.expect(200, &["fresh one"]);
    assert_eq!(r.loads(), loads, "the first request compiled fresh.wat");

    // Replaced: compiled again before it is asked for.
    deploy(&s, "fresh.wat", &printer("fresh two"));
    common::until("the new fresh.wat prewarmed", || r.prewarmed() >= 3).await;
    let loads = r.loads();
    s.get("/fresh").await.expect(200, &["fresh two"]);
    assert_eq!(
        r.loads(),
        loads,
        "the first request after the change compiled it"
    );
    s.stop().await;
}

/// With the table full, a new file is compiled into the AOT cache only
/// (nothing loaded is pushed out), and its first request deserializes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_table_new_files_are_compiled_into_the_cache_only() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("aot");
    let s = TestServer::start(
        &["hello.wat"],
        &[
            "--prewarm-poll",
            "1h",
            "--max-loaded-functions",
            "1",
            "--cache-dir",
            cache_dir.to_str().unwrap(),
        ],
    )
    .await;
    let r = &s.app.registry;
    common::until("hello.wat prewarmed at startup", || r.prewarmed() >= 1).await;
    deploy(&s, "later.wat", &printer("from the cache"));
    common::until("later.wat prewarmed", || r.prewarmed() >= 2).await;
    assert_eq!(r.held(), 1, "prewarming pushed a loaded function out");
    assert_eq!(r.evictions(), 0);
    let (loads, hits) = (r.loads(), r.cache_hits());
    s.get("/later").await.expect(200, &["from the cache"]);
    assert_eq!(
        (r.loads(), r.cache_hits()),
        (loads + 1, hits + 1),
        "the first request did not load later.wat from the cache"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prewarm_poll_0_leaves_compiling_to_the_first_request() {
    let s = TestServer::start(&["hello.wat"], &["--prewarm-poll", "0"]).await;
    let r = &s.app.registry;
    let loads = r.loads();
    let first = s.get("/hello").await;
    first.expect(200, &["Hello"]);
    assert_eq!(r.loads(), loads + 1);
    assert_eq!(r.prewarmed(), 0);
    assert_eq!(r.prewarm_scans(), 0);
    // The compile is in the first call's `load` phase, and part of its
    // `total`; the second call finds the function loaded.
    let second = s.get("/hello").await;
    second.expect(200, &["Hello"]);
    assert_eq!(r.loads(), loads + 1);
    let timing = |r: &common::Reply| r.header("server-timing").unwrap().to_string();
    let (first, second) = (timing(&first), timing(&second));
    let load = |t: &str| common::phase(t, "load");
    assert!(load(&first) > load(&second), "{first} / {second}");
    for t in [&first, &second] {
        assert!(load(t) <= common::phase(t, "total"), "{t}");
    }
    s.stop().await;
}
