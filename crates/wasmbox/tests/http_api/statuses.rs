//! One test per row of the status table (200 to 507).

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_200_runs_wat_rust_and_c_guests_with_args_and_stdin() {
    let s = TestServer::start(ALL, &[]).await;
    let r = s
        .request(
            Method::GET,
            "/hello",
            &[("cpu_quota", "500"), ("Memory-Request", "64")],
            Bytes::new(),
        )
        .await;
    r.expect(200, &["Hello from wasmbox!"]);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    let timing = r.header("server-timing").unwrap();
    for phase in [
        "queue;dur=",
        "isolation;dur=",
        "instantiate;dur=",
        "execute;dur=",
        "total;dur=",
    ] {
        assert!(timing.contains(phase), "{timing}");
    }
    // The file name with its extension works too.
    s.get("/hello.wat")
        .await
        .expect(200, &["Hello from wasmbox!"]);

    let r = s
        .post("/echo?arg=--upper&arg=one&arg=two%20words", "stdin text\n")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "one two words\nSTDIN TEXT\n");

    // The C guest (clang + wasi-libc).
    let r = s.post("/wc", "a b c\nd e\n").await;
    assert_eq!(r.text(), "2 5 10\n");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_400_for_invalid_names() {
    let s = TestServer::start(ALL, &[]).await;
    for (path, why) in [
        ("/..", "'..'"),
        ("/a%2fb", "'/'"),
        ("/%2e%2e%2fetc%2fpasswd", "'/'"),
        ("/a/b", "single path segment"),
        ("/a%00b", "control character"),
        ("/a%0d%0ab", "control character"),
        ("/.hidden", "must not start with '.'"),
        ("/-x", "must not start with '-'"),
        ("/a%zz", "percent-escape"),
        ("/a%20b", "allowed are"),
    ] {
        let r = s.get(path).await;
        r.expect(400, &["invalid function name", why]);
        assert_eq!(r.header("wasmbox-error"), Some("bad-name"), "{path}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_400_for_malformed_resource_headers() {
    let s = TestServer::start(ALL, &[]).await;
    for (h, v, words) in [
        (
            "Memory-Request",
            "abc",
            &["Memory-Request", "not a whole number"][..],
        ),
        ("Memory-Request", "-64", &["Memory-Request", "negative"]),
        ("Memory-Request", "0", &["Memory-Request", "at least 1"]),
        (
            "Memory-Request",
            "1e9",
            &["Memory-Request", "not a whole number"],
        ),
        (
            "Memory-Request",
            "100000000000000000000000",
            &["Memory-Request", "too large"],
        ),
        (
            "Memory-Request",
            "5000",
            &["Memory-Request", "above this server's maximum of 4096 MB"],
        ),
        ("cpu_quota", "-1", &["cpu_quota", "negative"]),
        ("cpu-quota", "lots", &["cpu_quota", "not a whole number"]),
        (
            "CPU_QUOTA",
            "1500",
            &[
                "cpu_quota",
                "above this server's maximum of 1000 millicores",
            ],
        ),
    ] {
        let r = s
            .request(Method::GET, "/hello", &[(h, v)], Bytes::new())
            .await;
        r.expect(400, words);
        assert_eq!(r.header("wasmbox-error"), Some("bad-header"));
    }
    // Header names match case-insensitively; both spellings of cpu_quota.
    let r = s
        .request(
            Method::GET,
            "/hello",
            &[("MEMORY-REQUEST", "16"), ("Cpu-Quota", "250")],
            Bytes::new(),
        )
        .await;
    r.expect(200, &["Hello"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_400_for_bad_reference_body() {
    let s = TestServer::start(ALL, &["--compat", "reference"]).await;
    let r = s.post("/echo", "not json").await;
    r.expect(400, &["{\"parameter\": \"<string>\"}"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_403_for_cwasm_without_allow_precompiled() {
    let s = TestServer::start(&[], &[]).await;
    let compiled = s
        .app
        .engine
        .engine
        .precompile_module(&std::fs::read(common::guest("echo.wasm")).unwrap())
        .unwrap();
    std::fs::write(s.path("pre.cwasm"), compiled).unwrap();
    let r = s.get("/pre.cwasm").await;
    r.expect(403, &["pre.cwasm", "--allow-precompiled"]);
    // A bare name does not even look at .cwasm files without the flag.
    s.get("/pre").await.expect(404, &["pre"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precompiled_modules_run_with_allow_precompiled() {
    let s = TestServer::start(&[], &["--allow-precompiled"]).await;
    let compiled = s
        .app
        .engine
        .engine
        .precompile_module(&std::fs::read(common::guest("echo.wasm")).unwrap())
        .unwrap();
    std::fs::write(s.path("pre.cwasm"), compiled).unwrap();
    let r = s.post("/pre?arg=hi", "x").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "hi\nx"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_404_405_for_unknown_functions_routes_and_methods() {
    let s = TestServer::start(ALL, &[]).await;
    s.get("/nope")
        .await
        .expect(404, &["no function named 'nope'"]);
    s.get("/").await.expect(404, &["/-/functions"]);
    s.get("/-/nope").await.expect(404, &["/-/live"]);
    // Files without a module extension are never functions.
    std::fs::write(s.path("notes.txt"), "hi").unwrap();
    s.get("/notes.txt").await.expect(404, &["notes.txt"]);
    let r = s.request(Method::PUT, "/hello", &[], Bytes::new()).await;
    r.expect(405, &["PUT"]);
    assert_eq!(r.header("allow"), Some("GET, POST"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_413_for_oversized_body() {
    let s = TestServer::start(ALL, &["--max-body-bytes", "1024"]).await;
    s.post("/wc", &"x".repeat(1024))
        .await
        .expect(200, &["0 1 1024"]);
    let r = s.post("/wc", &"x".repeat(1025)).await;
    r.expect(413, &["1024 bytes"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_422_when_the_memory_cap_is_hit_and_200_under_a_larger_request() {
    let s = TestServer::start(ALL, &[]).await;
    let r = s
        .request(
            Method::GET,
            "/memhog?arg=100",
            &[("Memory-Request", "64")],
            Bytes::new(),
        )
        .await;
    r.expect(
        422,
        &["cap of 64 MiB", "Memory-Request: 64", "memory allocation"],
    );
    assert_eq!(r.header("wasmbox-error"), Some("memory-cap"));
    let r = s
        .request(
            Method::GET,
            "/memhog?arg=100",
            &[("Memory-Request", "256")],
            Bytes::new(),
        )
        .await;
    r.expect(200, &["allocated 100 MiB"]);
    // A module whose initial memory is above the cap fails at instantiation.
    std::fs::write(
        s.path("big.wat"),
        r#"(module (memory 2000) (func (export "_start")))"#,
    )
    .unwrap();
    let r = s
        .request(
            Method::GET,
            "/big",
            &[("Memory-Request", "100")],
            Bytes::new(),
        )
        .await;
    r.expect(422, &["125 MiB", "cap of 100 MiB"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_424_for_non_zero_exit_with_code_and_stderr_tail() {
    let s = TestServer::start(ALL, &[]).await;
    let r = s.get("/exitcode?arg=3").await;
    r.expect(
        424,
        &["exited with status 3", "failing on purpose with status 3"],
    );
    assert_eq!(r.header("wasm-exit-code"), Some("3"));
    // exit(0) is success.
    s.get("/exitcode?arg=0")
        .await
        .expect(200, &["about to exit with 0"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_500_for_a_trap_with_its_message() {
    let s = TestServer::start(&[], &[]).await;
    std::fs::write(
        s.path("boom.wat"),
        r#"(module (func (export "_start") unreachable))"#,
    )
    .unwrap();
    let r = s.get("/boom").await;
    r.expect(500, &["function trapped", "unreachable"]);
    assert_eq!(r.header("wasmbox-error"), Some("trap"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_502_for_modules_that_do_not_compile_or_load() {
    let s = TestServer::start(&[], &["--allow-precompiled"]).await;
    std::fs::write(s.path("garbage.wasm"), b"\0asm\x01\0\0\0\x99\x99").unwrap();
    s.get("/garbage")
        .await
        .expect(502, &["'garbage.wasm' failed to compile"]);
    std::fs::write(s.path("lib.wat"), r#"(module (func (export "f")))"#).unwrap();
    s.get("/lib").await.expect(502, &["no `_start`"]);
    std::fs::write(
        s.path("imports.wat"),
        r#"(module (import "env" "nope" (func)) (func (export "_start")))"#,
    )
    .unwrap();
    s.get("/imports")
        .await
        .expect(502, &["cannot be linked", "nope"]);
    std::fs::write(s.path("fake.cwasm"), b"\0asm\x01\0\0\0").unwrap();
    s.get("/fake.cwasm").await.expect(502, &["wasmbox compile"]);

    // A .cwasm made by an engine with another configuration.
    let other = wasmbox_runtime::WasmEngine::new(wasmbox_runtime::EngineConfig {
        max_memory_mib: 8192,
        max_instances: 2,
        ..Default::default()
    })
    .unwrap();
    let foreign = other
        .engine
        .precompile_module(&std::fs::read(common::guest("echo.wasm")).unwrap())
        .unwrap();
    std::fs::write(s.path("foreign.cwasm"), foreign).unwrap();
    let r = s.get("/foreign").await;
    r.expect(502, &["different wasmtime build or engine configuration"]);
    assert_eq!(r.header("wasmbox-error"), Some("load-failed"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_503_when_the_worker_pool_is_shut_down() {
    let s = TestServer::start(ALL, &[]).await;
    s.app.executor.shutdown();
    let r = s.get("/hello").await;
    r.expect(503, &["shutting down"]);
    assert_eq!(r.header("retry-after"), Some("1"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_504_when_the_deadline_passes() {
    let s = TestServer::start(ALL, &["--timeout", "300ms"]).await;
    let r = s.get("/spin").await; // spins forever
    r.expect(504, &["0.300 s time limit"]);
    // The worker is free again and serves the next request.
    s.get("/spin?arg=10").await.expect(200, &["spun"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_507_when_stdout_exceeds_its_cap() {
    let s = TestServer::start(ALL, &["--max-output-bytes", "10000"]).await;
    s.get("/echo?arg=--bytes&arg=10000")
        .await
        .expect(200, &["xxxx"]);
    let r = s.get("/echo?arg=--bytes&arg=10001").await;
    r.expect(507, &["output limit of 10000 bytes"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stderr_is_bounded_to_its_tail() {
    let s = TestServer::start(ALL, &["--max-stderr-bytes", "16"]).await;
    let r = s.get("/exitcode?arg=2").await;
    // "exitcode: failing on purpose with status 2\n" -> its last 16 bytes.
    r.expect(424, &["h status 2"]);
    assert!(!r.text().contains("exitcode: failing"), "{}", r.text());
    s.stop().await;
}
