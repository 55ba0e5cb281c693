//! Serving under change: concurrency, hot reload, management endpoints, compat mode, client disconnects, the AOT cache, LRU unloading, the paper's workloads.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_invocations_are_all_correct() {
    let s = std::sync::Arc::new(TestServer::start(ALL, &[]).await);
    let mut tasks = Vec::new();
    for i in 0..64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let r = s
                .post(&format!("/echo?arg=req{i}"), &format!("body {i}"))
                .await;
            (i, r.status.as_u16(), r.text())
        }));
    }
    for t in tasks {
        let (i, status, text) = t.await.unwrap();
        assert_eq!((status, text), (200, format!("req{i}\nbody {i}")));
    }
    assert!(s.app.executor.workers() <= 64);
    std::sync::Arc::into_inner(s).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_compile_once() {
    // No prewarm: its own load of echo.wasm, racing the requests, would be
    // a second one (a request never waits for the prewarm's).
    let s = std::sync::Arc::new(TestServer::start(&["echo.wasm"], &["--prewarm-poll", "0"]).await);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.get("/echo?arg=x").await.status.as_u16() })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(s.app.registry.loads(), 1);
    std::sync::Arc::into_inner(s).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_added_replaced_and_deleted_while_serving() {
    // Every request looks at the file (by default a loaded function's file
    // is looked at again only after a second); loads happen on request (a
    // prewarm load racing a request would be a load of its own).
    let args = ["--revalidate-after", "0", "--prewarm-poll", "0"];
    let s = TestServer::start(&[], &args).await;
    s.get("/f").await.expect(404, &[]);
    // Deploy the seed's way: write elsewhere, move into the directory.
    let staged = s.dir.path().join(".staged");
    std::fs::copy(common::guest("hello.wat"), &staged).unwrap();
    std::fs::rename(&staged, s.path("f.wat")).unwrap();
    s.get("/f").await.expect(200, &["Hello from wasmbox!"]);
    // Replace with a different function (copied in place).
    std::fs::remove_file(s.path("f.wat")).unwrap();
    std::fs::copy(common::guest("echo.wasm"), s.path("f.wasm")).unwrap();
    let r = s.post("/f?arg=new", "version").await;
    assert_eq!(r.text(), "new\nversion");
    // Overwrite the same file name with new content.
    std::fs::copy(common::guest("wc.wasm"), s.path("f.wasm")).unwrap();
    s.post("/f", "a b").await.expect(200, &["0 2 3"]);
    assert_eq!(s.app.registry.loads(), 3);
    std::fs::remove_file(s.path("f.wasm")).unwrap();
    s.get("/f").await.expect(404, &["'f'"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_endpoints() {
    let s = TestServer::start(ALL, &[]).await;
    s.get("/-/live").await.expect(200, &["live"]);
    s.get("/-/ready").await.expect(200, &["ready"]);
    // Metrics and the listing are on the admin listener only.
    for endpoint in ["/-/functions", "/-/metrics"] {
        let r = s.get(endpoint).await;
        r.expect(404, &[endpoint, "moved to the admin listener"]);
        assert_eq!(r.header("wasmbox-error"), Some("moved-to-admin"));
    }
    s.admin_get("/-/live").await.expect(200, &["live"]);
    s.admin_get("/-/ready").await.expect(200, &["ready"]);
    let r = s.admin_get("/-/functions").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let names: Vec<&str> = v["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "echo.wasm",
            "exitcode.wasm",
            "hello.wat",
            "memhog.wasm",
            "spin.wasm",
            "wc.wasm"
        ]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_compat_round_trip() {
    let s = TestServer::start(ALL, &["--compat", "reference", "--pod", "pod-7"]).await;
    let r = s
        .request(
            Method::POST,
            "/echo.wasm",
            &[("cpu_quota", "1000"), ("Memory-Request", "128")],
            r#"{"parameter": "shout me"}"#,
        )
        .await;
    r.expect(200, &[]);
    assert_eq!(r.text(), "WASM output: \nshout me");
    for h in [
        "cgroup-creation-time",
        "cgroup-assign-time",
        "execution-time",
        "num-current-requests",
    ] {
        let v = r.header(h).unwrap_or_else(|| panic!("missing {h}"));
        assert!(v.parse::<u64>().is_ok(), "{h}: {v}");
    }
    assert_eq!(r.header("num-current-requests"), Some("1"));
    assert_eq!(r.header("pod"), Some("pod-7"));
    let r = s.get("/exitcode").await;
    r.expect(424, &["WASM output: Failed to run WASM module"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_stops_its_invocation() {
    let s = TestServer::start(ALL, &["--timeout", "60s"]).await;
    let base = s.base.clone();
    // Send a request for a never-ending function, then hang up.
    let mut stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    use tokio::io::AsyncWriteExt;
    stream
        .write_all(b"GET /spin HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // Wait until it runs.
    while s.app.executor.busy() == 0 {
        tokio::task::yield_now().await;
    }
    drop(stream);
    // The worker is released long before the 60 s deadline.
    let t = std::time::Instant::now();
    while s.app.executor.busy() != 0 {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "invocation still running after the client left"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_cache_skips_compilation_after_a_restart_and_survives_corruption() {
    let cache = tempfile::tempdir().unwrap();
    // Loads happen on request here (prewarming is tested in prewarm.rs).
    let args = [
        "--cache-dir",
        cache.path().to_str().unwrap(),
        "--prewarm-poll",
        "0",
    ];
    let s = TestServer::start(&["echo.wasm"], &args).await;
    s.get("/echo?arg=one").await.expect(200, &["one"]);
    assert_eq!(s.app.registry.cache_hits(), 0);
    s.stop().await;
    let entries: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");

    let s = TestServer::start(&["echo.wasm"], &args).await;
    s.get("/echo?arg=two").await.expect(200, &["two"]);
    assert_eq!(s.app.registry.cache_hits(), 1);
    s.stop().await;

    // A damaged entry is ignored and rewritten. It is damaged by replacing
    // the file, not by writing into it: the last server's module may still
    // be mapped from that inode in this process (what holds it can outlive
    // `stop` for a moment), and a file truncated under a mapping raises
    // SIGBUS on the next touch of it, its drop included (seen once here:
    // the whole test binary died). The server itself only ever renames new
    // entries into place.
    let damaged = cache.path().join("damaged.tmp");
    std::fs::write(&damaged, b"garbage").unwrap();
    std::fs::rename(&damaged, &entries[0]).unwrap();
    let s = TestServer::start(&["echo.wasm"], &args).await;
    s.get("/echo?arg=three").await.expect(200, &["three"]);
    assert_eq!(s.app.registry.cache_hits(), 0);
    s.stop().await;
    assert!(wasmtime::Engine::detect_precompiled(&std::fs::read(&entries[0]).unwrap()).is_some());
}

/// With more functions than --max-loaded-functions, the least recently
/// used is unloaded, and its next request loads it again (from the cache).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_recently_used_functions_are_unloaded_beyond_the_limit() {
    let cache = tempfile::tempdir().unwrap();
    let args = [
        "--cache-dir",
        cache.path().to_str().unwrap(),
        "--max-loaded-functions",
        "2",
        "--prewarm-poll",
        "0",
    ];
    let s = TestServer::start(&["echo.wasm", "hello.wat", "wc.wasm"], &args).await;
    s.get("/echo?arg=a").await.expect(200, &["a"]);
    s.get("/hello").await.expect(200, &["Hello from wasmbox!"]);
    s.get("/echo?arg=b").await.expect(200, &["b"]); // echo is now the newer
    assert_eq!((s.app.registry.held(), s.app.registry.evictions()), (2, 0));
    s.get("/wc").await.expect(200, &["0"]); // unloads hello, not echo
    assert_eq!((s.app.registry.held(), s.app.registry.evictions()), (2, 1));
    assert_eq!(s.app.registry.loads(), 3);
    s.get("/echo?arg=c").await.expect(200, &["c"]);
    assert_eq!(s.app.registry.loads(), 3, "echo stayed loaded");
    s.get("/hello").await.expect(200, &["Hello from wasmbox!"]);
    assert_eq!(s.app.registry.loads(), 4, "hello was loaded again");
    assert_eq!(s.app.registry.cache_hits(), 1, "from the AOT cache");
    assert_eq!((s.app.registry.held(), s.app.registry.evictions()), (2, 2));
    let metrics = s.admin_get("/-/metrics").await.text();
    for line in [
        "wasmbox_functions_loaded 2",
        "wasmbox_function_loads_total 4",
        "wasmbox_function_cache_hits_total 1",
        "wasmbox_function_unloads_total 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in:\n{metrics}"
        );
    }
    s.stop().await;
}

/// The paper's five workloads, at small sizes, through the server; their
/// inputs are generated deterministically, so the digests are fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_papers_workloads_run_at_small_sizes() {
    let guests = [
        "jsoncompress.wasm",
        "scryptwork.wasm",
        "rsakeygen.wasm",
        "imageblur.wasm",
        "genpdf.wasm",
    ];
    let s = TestServer::start(&guests, &[]).await;
    for (path, want) in [
        (
            "/jsoncompress?arg=1000",
            "tweets=1000 json_bytes=138775 lz4_bytes=51410 digest=a7b3cc459991584c\n",
        ),
        ("/scryptwork?arg=5", "strings=5 digest=b96e9f596c0d889f\n"),
        (
            "/rsakeygen?arg=1024",
            "bits=1024 modulus_bytes=128 digest=70819bc6395ed48c\n",
        ),
        (
            "/imageblur?arg=64&arg=2",
            "size=64 sigma=2 jpeg_in=1507 jpeg_out=1487 digest=cd2399c6d01fa9dd\n",
        ),
        (
            "/genpdf?arg=50",
            "items=50 pages=2 bytes=9531 digest=71f07d4bd5451d71\n",
        ),
    ] {
        let r = s
            .request(
                Method::GET,
                path,
                &[("Memory-Request", "256")],
                Bytes::new(),
            )
            .await;
        assert_eq!(
            (r.status.as_u16(), r.text().as_str()),
            (200, want),
            "{path}"
        );
    }
    s.stop().await;
}
