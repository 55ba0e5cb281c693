//! WASI 0.2 components as functions, over real HTTP against the real
//! server, with real guests built from source (functions/build.sh): the
//! `cli-*` guests are the preview-1 command guests built for wasip2
//! (wasi:cli command components); `httpkit` and `hellohttp` are wasi:http
//! handlers. This file: detection, the command contract and its limits,
//! listing, caching, hot reload, precompiled components. Handlers:
//! tests/http_handlers.rs.

mod common;

use bytes::Bytes;
use common::{hang_up_stops, TestServer};
use hyper::Method;
use wasmbox_runtime::engine::{
    CORE_INSTANCES_PER_COMPONENT, MEMORIES_PER_COMPONENT, TABLES_PER_COMPONENT,
};

const CLI: &[&str] = &[
    "cli-echo.wasm",
    "cli-memhog.wasm",
    "cli-spin.wasm",
    "cli-sleep.wasm",
    "cli-exitcode.wasm",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_component_takes_argv_and_stdin_and_answers_with_stdout() {
    let s = TestServer::start(CLI, &[]).await;
    let r = s
        .post("/cli-echo?arg=--upper&arg=hi%20there", "make me loud")
        .await;
    r.expect(200, &["hi there\nMAKE ME LOUD"]);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    let timing = r.header("server-timing").expect("Server-Timing");
    for phase in [
        "queue",
        "isolation",
        "instantiate",
        "execute",
        "cpu",
        "total",
    ] {
        assert!(timing.contains(&format!("{phase};dur=")), "{timing}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_component_answers_424_with_its_stderr_tail() {
    let s = TestServer::start(CLI, &[]).await;
    let r = s.get("/cli-exitcode?arg=3").await;
    // WASI 0.2's exit carries only success or failure: the code is 1.
    r.expect(
        424,
        &["exited with status 1", "failing on purpose with status 3"],
    );
    assert_eq!(r.header("wasm-exit-code"), Some("1"));
    assert_eq!(r.header("wasmbox-error"), Some("exit"));
    s.get("/cli-exitcode?arg=0").await.expect(200, &[]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_component_is_held_to_its_memory_request() {
    let s = TestServer::start(CLI, &[]).await;
    let mem = |mb: &'static str| [("memory-request", mb)];
    let r = s
        .request(Method::GET, "/cli-memhog?arg=64", &mem("32"), Bytes::new())
        .await;
    r.expect(422, &["cap of 32 MiB", "Memory-Request: 32"]);
    let r = s
        .request(Method::GET, "/cli-memhog?arg=64", &mem("128"), Bytes::new())
        .await;
    r.expect(200, &[]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_component_is_stopped_at_its_deadline_running_or_asleep() {
    let s = TestServer::start(CLI, &["--timeout", "300ms"]).await;
    s.get("/cli-spin")
        .await
        .expect(504, &["0.300 s time limit"]);
    s.get("/cli-sleep")
        .await
        .expect(504, &["0.300 s time limit"]);
    s.get("/cli-sleep?arg=1").await.expect(200, &["slept 1 ms"]);
    assert_eq!(s.app.executor.busy(), 0);
    assert_eq!(s.app.admission.snapshot().reserved.cpu_millis, 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_component_past_its_stdout_cap_answers_507() {
    let s = TestServer::start(CLI, &["--max-output-bytes", "10000"]).await;
    s.get("/cli-echo?arg=--bytes&arg=10000")
        .await
        .expect(200, &["xxxx"]);
    s.get("/cli-echo?arg=--bytes&arg=10001")
        .await
        .expect(507, &["output limit of 10000 bytes"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_up_client_stops_its_sleeping_command_component() {
    let s = TestServer::start(CLI, &[]).await;
    hang_up_stops(&s, "/cli-sleep").await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listing_says_each_files_kind_and_world() {
    let s = TestServer::start(
        &["hello.wat", "echo.wasm", "cli-echo.wasm", "httpkit.wasm"],
        &[],
    )
    .await;
    let r = s.admin_get("/-/functions").await;
    r.expect(200, &[]);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let kind = |name: &str| {
        let d = v["details"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {v}"))
            .clone();
        (d["kind"].as_str().unwrap().to_string(), d["world"].clone())
    };
    assert_eq!(
        kind("hello.wat"),
        ("module".into(), serde_json::Value::Null)
    );
    assert_eq!(
        kind("echo.wasm"),
        ("module".into(), serde_json::Value::Null)
    );
    assert_eq!(
        kind("cli-echo.wasm"),
        ("component".into(), "wasi:cli/command".into())
    );
    assert_eq!(
        kind("httpkit.wasm"),
        ("component".into(), "wasi:http/proxy".into())
    );
    assert_eq!(v["functions"].as_array().unwrap().len(), 4);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kind_comes_from_the_header_and_a_replaced_file_changes_kind() {
    let s = TestServer::start(&[], &["--revalidate-after", "0"]).await;
    // A command component under a module-like name, then a handler.
    std::fs::copy(common::guest("cli-echo.wasm"), s.path("thing.wasm")).unwrap();
    s.get("/thing?arg=first").await.expect(200, &["first"]);
    let tmp = s.path(".thing.tmp");
    std::fs::copy(common::guest("hellohttp.wasm"), &tmp).unwrap();
    std::fs::rename(&tmp, s.path("thing.wasm")).unwrap();
    s.get("/thing").await.expect(200, &["Hello from wasmbox!"]);
    // And back to a core module.
    std::fs::copy(common::guest("echo.wasm"), &tmp).unwrap();
    std::fs::rename(&tmp, s.path("thing.wasm")).unwrap();
    s.get("/thing?arg=third").await.expect(200, &["third"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_are_compiled_once_and_served_from_the_aot_cache_after_a_restart() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("aot");
    let args = ["--cache-dir", cache_dir.to_str().unwrap()];
    // The startup scan loads both first (a request for a file it is still
    // loading would load the file again, not wait for it).
    let scanned = |s: &TestServer| s.app.registry.prewarm_scans() >= 1;
    let s = TestServer::start(&["cli-echo.wasm", "httpkit.wasm"], &args).await;
    common::until("the startup scan finished", || scanned(&s)).await;
    s.get("/cli-echo?arg=a").await.expect(200, &["a"]);
    s.get("/httpkit/x").await.expect(200, &["path: /x"]);
    s.get("/cli-echo?arg=b").await.expect(200, &["b"]);
    assert_eq!(s.app.registry.loads(), 2, "each compiled once");
    assert_eq!(s.app.registry.cache_hits(), 0);
    s.stop().await;

    let s = TestServer::start(&["cli-echo.wasm", "httpkit.wasm"], &args).await;
    common::until("the startup scan finished", || scanned(&s)).await;
    s.get("/cli-echo?arg=c").await.expect(200, &["c"]);
    s.get("/httpkit/y").await.expect(200, &["path: /y"]);
    assert_eq!(s.app.registry.cache_hits(), 2, "both from the cache");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precompiled_components_run_with_allow_precompiled() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("kit.cwasm");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_wasmbox"))
        .args([
            "compile",
            common::guest("httpkit.wasm").to_str().unwrap(),
            "-o",
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let s = TestServer::start(&[], &["--allow-precompiled"]).await;
    std::fs::copy(&out, s.path("kit.cwasm")).unwrap();
    s.get("/kit/pre").await.expect(200, &["path: /pre"]);
    s.stop().await;
    let s = TestServer::start(&[], &[]).await;
    std::fs::copy(&out, s.path("kit.cwasm")).unwrap();
    s.get("/kit.cwasm")
        .await
        .expect(403, &["--allow-precompiled"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_exporting_neither_world_answers_502() {
    let s = TestServer::start(&[], &[]).await;
    std::fs::write(s.path("empty.wat"), "(component)").unwrap();
    s.get("/empty").await.expect(
        502,
        &["exports neither wasi:cli/run", "wasi:http/incoming-handler"],
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_component_invocations_by_function() {
    let s = TestServer::start(CLI, &[]).await;
    s.get("/cli-echo?arg=x").await.expect(200, &[]);
    s.get("/cli-exitcode?arg=2").await.expect(424, &[]);
    let m = s.admin_get("/-/metrics").await.text();
    for line in [
        r#"wasmbox_invocations_total{function="cli-echo.wasm",outcome="ok"} 1"#,
        r#"wasmbox_invocations_total{function="cli-exitcode.wasm",outcome="exit"} 1"#,
    ] {
        assert!(m.contains(line), "{line} not in\n{m}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_compile_in_the_compile_child_on_the_heavy_lane() {
    // Everything from 1 KiB up is heavy: both components compile in the
    // child process and come back over its pipe.
    let s = TestServer::start(
        &["cli-echo.wasm", "httpkit.wasm"],
        &["--heavy-module-kb", "1"],
    )
    .await;
    s.get("/cli-echo?arg=heavy").await.expect(200, &["heavy"]);
    s.get("/httpkit/heavy").await.expect(200, &["path: /heavy"]);
    s.stop().await;
}

/// A component holding more core instances, memories or tables than the
/// pool keeps per component is refused when it loads, with the count: the
/// pool is sized so every invocation alive at once may hold that much, and
/// one tenant's component cannot take the slots of the others'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_past_the_pools_per_component_limits_is_refused_at_load() {
    let s = TestServer::start(&[], &[]).await;
    let many = |n: u32, module: &str| {
        let instances = "(core instance (instantiate $m))\n".repeat(n as usize);
        format!("(component (core module $m {module})\n{instances})")
    };
    std::fs::write(
        s.path("memories.wat"),
        many(MEMORIES_PER_COMPONENT + 1, "(memory 0)"),
    )
    .unwrap();
    std::fs::write(
        s.path("tables.wat"),
        many(TABLES_PER_COMPONENT + 1, "(table 0 funcref)"),
    )
    .unwrap();
    std::fs::write(
        s.path("instances.wat"),
        many(CORE_INSTANCES_PER_COMPONENT + 1, ""),
    )
    .unwrap();
    for (name, what) in [
        ("/memories", "linear memories"),
        ("/tables", "tables"),
        ("/instances", "core module instances"),
    ] {
        let r = s.get(name).await;
        r.expect(502, &[what, "exceeds the configured maximum"]);
    }
    // At the limits, it loads (and is refused for exporting neither world).
    std::fs::write(
        s.path("atlimit.wat"),
        many(MEMORIES_PER_COMPONENT, "(memory 0) (table 0 funcref)"),
    )
    .unwrap();
    s.get("/atlimit")
        .await
        .expect(502, &["exports neither wasi:cli/run"]);
    s.stop().await;
}
