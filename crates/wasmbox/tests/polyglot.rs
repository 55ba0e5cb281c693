//! The Python (componentize-py) and JavaScript (componentize-js) wasi:http
//! guests, built from source by functions/build.sh, served end to end:
//! their toolchains' imports (wasi:cli, filesystem, random, clocks, and
//! sockets for Python) link, the request reaches them, and the memory cap
//! holds. Without the tools (scripts/setup-components.sh) the guests are
//! not built and these tests say so and return, unless
//! WASMBOX_REQUIRE_COMPONENT_TOOLS=1 (set by .ci/run).
//!
//! The guests are 13-18 MB components: their first request compiles them
//! (on the heavy lane, in the compile child), which takes minutes in a
//! debug build, hence the generous compile budget here.

mod common;

use std::path::Path;

use bytes::Bytes;
use common::TestServer;
use hyper::Method;

/// Whether `file` was built; says why not, or fails when it is required.
fn built(file: &str) -> bool {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../functions")
        .join(file);
    if p.exists() {
        return true;
    }
    if std::env::var("WASMBOX_REQUIRE_COMPONENT_TOOLS").as_deref() == Ok("1") {
        panic!("WASMBOX_REQUIRE_COMPONENT_TOOLS=1 but {file} was not built (functions/build.sh)");
    }
    eprintln!("SKIPPED: {file} not built (scripts/setup-components.sh installs its toolchain)");
    false
}

const BUDGET: &[&str] = &[
    "--compile-timeout",
    "1200s",
    "--compile-memory-mb",
    "8192",
    "--timeout",
    "120s",
];

async fn serves_requests_and_holds_the_memory_cap(file: &str, greeting: &str) {
    let s = TestServer::start(&[file], BUDGET).await;
    let name = file.trim_end_matches(".wasm");
    let r = s
        .request(
            Method::POST,
            &format!("/{name}/a/b?c=1"),
            &[("memory-request", "256")],
            Bytes::from_static(b"abc"),
        )
        .await;
    r.expect(
        200,
        &[greeting, "method: POST", "path: /a/b?c=1", "body: 3 bytes"],
    );
    s.request(
        Method::PATCH,
        &format!("/{name}"),
        &[("memory-request", "256")],
        Bytes::new(),
    )
    .await
    .expect(200, &["method: PATCH", "path: /\n"]);
    // Its runtime alone needs more than 2 MiB of linear memory.
    let r = s
        .request(
            Method::GET,
            &format!("/{name}"),
            &[("memory-request", "2")],
            Bytes::new(),
        )
        .await;
    r.expect(422, &["cap of 2 MiB"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_handler_runs_unchanged() {
    if built("pyhello.wasm") {
        serves_requests_and_holds_the_memory_cap("pyhello.wasm", "Hello from Python!").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_handler_runs_unchanged() {
    if built("jshello.wasm") {
        serves_requests_and_holds_the_memory_cap("jshello.wasm", "Hello from JavaScript!").await;
    }
}
