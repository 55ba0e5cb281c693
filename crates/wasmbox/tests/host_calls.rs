//! What a guest can make the host hold through its WASI calls stays within
//! its Memory-Request, over real HTTP with real guests: the buffer a
//! random-bytes call fills on the host, and the pollables of a preview-1
//! `poll_oneoff`. Past the bound the call traps (500 `trap`); within it the
//! call works as before.

mod common;

use bytes::Bytes;
use common::TestServer;
use hyper::Method;

/// A module that asks for `len` random bytes in one `random_get` into its
/// one page of memory, and exits with the call's errno.
fn random_get(len: u64) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (call $random (i32.const 0) (i32.const {len})))))"#
    )
}

/// A module that polls `n` clock subscriptions at once (all zero: the
/// realtime clock, relative, due now) and exits with the call's errno.
fn poll_clocks(n: u32) -> String {
    let (events, count) = (n * 48, n * 80);
    let pages = (count + 4).div_ceil(65536);
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") {pages})
  (func (export "_start")
    (call $exit (call $poll (i32.const 0) (i32.const {events}) (i32.const {n}) (i32.const {count})))))"#
    )
}

const MB16: (&str, &str) = ("memory-request", "16");

/// The host fills the whole buffer before it writes it to the guest (and
/// before it looks at whether the guest's memory holds it): wasmtime lets
/// one call ask for 64 MiB, so a module at Memory-Request 1 looping on it
/// held 64 MiB of the host's per worker. Now a call may ask for no more
/// than the Memory-Request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_bytes_call_may_ask_no_more_than_the_memory_request() {
    let s = TestServer::start(&["httpkit.wasm"], &[]).await;
    std::fs::write(s.path("rand4k.wat"), random_get(4096)).unwrap();
    std::fs::write(s.path("rand64m.wat"), random_get(64 << 20)).unwrap();
    let get = |path: &'static str| s.request(Method::GET, path, &[MB16], Bytes::new());
    get("/rand4k").await.expect(200, &[]);
    let r = get("/rand64m").await;
    r.expect(500, &["get-random-bytes"]);
    assert_eq!(r.header("wasmbox-error"), Some("trap"));
    // A component, through wasi:random.
    get("/httpkit/random/4096")
        .await
        .expect(200, &["got 4096 random bytes"]);
    let r = get("/httpkit/random/67108864").await;
    r.expect(500, &[]);
    assert_eq!(r.header("wasmbox-error"), Some("trap"));
    // The same ask fits a larger request.
    s.request(
        Method::GET,
        "/httpkit/random/67108864",
        &[("memory-request", "128")],
        Bytes::new(),
    )
    .await
    .expect(200, &["got 67108864 random bytes"]);
    s.stop().await;
}

/// Each clock subscription of a `poll_oneoff` is a resource in the module's
/// table, host memory outside its linear memory: wasmtime's table takes a
/// million, so a module could hold hundreds of MiB of the host's for as
/// long as it polls. At Memory-Request 16 the table holds 4,096 entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_may_hold_no_more_subscriptions_than_fit_its_memory_request() {
    let s = TestServer::start(&[], &[]).await;
    std::fs::write(s.path("poll100.wat"), poll_clocks(100)).unwrap();
    std::fs::write(s.path("poll5000.wat"), poll_clocks(5000)).unwrap();
    let get = |path: &'static str| s.request(Method::GET, path, &[MB16], Bytes::new());
    get("/poll100").await.expect(200, &[]);
    let r = get("/poll5000").await;
    r.expect(500, &[]);
    assert_eq!(r.header("wasmbox-error"), Some("trap"), "{}", r.text());
    // Within a larger request's table.
    s.request(
        Method::GET,
        "/poll5000",
        &[("memory-request", "64")],
        Bytes::new(),
    )
    .await
    .expect(200, &[]);
    s.stop().await;
}
