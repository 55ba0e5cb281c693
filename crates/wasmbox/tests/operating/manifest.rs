//! Per-function configuration: `NAME.toml` next to the module.

use bytes::Bytes;
use hyper::Method;

use crate::common::TestServer;
use crate::helpers::{api, put_manifest};

/// Milliseconds of a `Server-Timing` phase.
fn phase(r: &crate::common::Reply, name: &str) -> f64 {
    let st = r.header("server-timing").expect("Server-Timing");
    st.split(", ")
        .find_map(|p| p.strip_prefix(&format!("{name};dur=")))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_manifests_env_and_args_reach_the_guest_and_a_change_takes_effect_on_the_next_request() {
    let s = TestServer::start(&["probe.wasm"], &["--revalidate-after", "0"]).await;
    let m =
        "args = [\"--fixed\", \"two words\"]\n[env]\nGREETING = \"hello tenant\"\nEMPTY = \"\"\n";
    put_manifest(&s, "probe", m)
        .await
        .expect(201, &["probe.toml"]);
    let r = s.get("/probe?arg=q").await;
    r.expect(200, &[]);
    assert_eq!(
        r.text(),
        "arg[0]=probe\narg[1]=--fixed\narg[2]=two words\narg[3]=q\nenv:EMPTY=\nenv:GREETING=hello tenant\n"
    );
    // Written straight into the directory (a volume-based deploy).
    std::fs::write(s.path("probe.toml"), "[env]\nGREETING = \"changed\"\n").unwrap();
    assert_eq!(
        s.get("/probe").await.text(),
        "arg[0]=probe\nenv:GREETING=changed\n"
    );
    // GET returns it with its ETag; DELETE removes it.
    let g = api(
        &s,
        Method::GET,
        "/-/admin/functions/probe/manifest",
        &[],
        Bytes::new(),
    )
    .await;
    g.expect(200, &["changed"]);
    assert!(g.header("etag").unwrap().starts_with('"'));
    api(
        &s,
        Method::DELETE,
        "/-/admin/functions/probe/manifest",
        &[],
        Bytes::new(),
    )
    .await
    .expect(200, &[]);
    assert_eq!(s.get("/probe").await.text(), "arg[0]=probe\n");
    s.stop().await;
}

#[tokio::test]
async fn a_manifests_ceilings_and_defaults_are_enforced() {
    let s = TestServer::start(
        &["memhog.wasm", "echo.wasm", "spin.wasm"],
        &["--revalidate-after", "0"],
    )
    .await;
    put_manifest(
        &s,
        "memhog",
        "[limits]\nmax_memory_mb = 48\nmax_cpu_quota = 300\n[defaults]\nmemory_mb = 16\ncpu_quota = 200\n",
    )
    .await
    .expect(201, &[]);
    let hog = |mb: &'static str, headers: &'static [(&'static str, &'static str)]| {
        let s = &s;
        async move {
            s.request(
                Method::GET,
                &format!("/memhog?arg={mb}"),
                headers,
                Bytes::new(),
            )
            .await
        }
    };
    // Above the function's ceilings: the server's 400 row, naming the manifest.
    let r = hog("1", &[("memory-request", "64")]).await;
    r.expect(400, &["64 MB", "48 MB", "memhog.toml"]);
    assert_eq!(r.header("wasmbox-error"), Some("bad-header"));
    hog("1", &[("cpu_quota", "500")])
        .await
        .expect(400, &["300 millicores", "memhog.toml"]);
    // Without a header the function's default (16 MB) caps it.
    hog("24", &[]).await.expect(422, &["Memory-Request: 16"]);
    hog("24", &[("memory-request", "48")])
        .await
        .expect(200, &[]);

    put_manifest(&s, "echo", "[limits]\nmax_output_bytes = 8\n")
        .await
        .expect(201, &[]);
    let r = s.get("/echo?arg=0123456789").await;
    r.expect(507, &["8 bytes"]);
    s.get("/echo?arg=short").await.expect(200, &["short"]);

    put_manifest(&s, "spin", "[limits]\ntimeout_ms = 300\n")
        .await
        .expect(201, &[]);
    let r = s.get("/spin").await;
    r.expect(504, &["0.300 s"]);
    assert!(
        phase(&r, "total") < 10_000.0,
        "the server's 60 s timeout applied"
    );
    s.stop().await;
}

#[tokio::test]
async fn the_cpu_budget_stops_a_spinning_guest_with_its_own_status() {
    let s = TestServer::start(&["spin.wasm", "sleep.wasm"], &["--revalidate-after", "0"]).await;
    put_manifest(&s, "spin", "[limits]\ncpu_budget_ms = 150\n")
        .await
        .expect(201, &[]);
    let r = s.get("/spin").await;
    r.expect(508, &["CPU-time budget of 150 ms", "cpu_budget_ms"]);
    assert_eq!(r.header("wasmbox-error"), Some("cpu-budget"));
    let cpu = phase(&r, "cpu");
    // Stopped at the first epoch tick past the budget (ticks are 5 ms; the
    // thread may be descheduled between checks on a busy machine).
    assert!((150.0..400.0).contains(&cpu), "cpu {cpu} ms");
    // Under budget it runs to the end.
    s.get("/spin?arg=20").await.expect(200, &["spun"]);
    // A guest sleeping burns no CPU: the budget does not stop it, its
    // (wall-clock) timeout does.
    put_manifest(
        &s,
        "sleep",
        "[limits]\ncpu_budget_ms = 50\ntimeout_ms = 400\n",
    )
    .await
    .expect(201, &[]);
    s.get("/sleep").await.expect(504, &[]);
    s.stop().await;
}

#[tokio::test]
async fn a_manifests_env_and_args_reach_components_too() {
    let s = TestServer::start(
        &["cli-probe.wasm", "httpkit.wasm"],
        &["--revalidate-after", "0"],
    )
    .await;
    let m = "args = [\"--fixed\"]\n[env]\nGREETING = \"hello tenant\"\n";
    for name in ["cli-probe", "httpkit"] {
        put_manifest(&s, name, m).await.expect(201, &[]);
    }
    // A wasi:cli command: argv and environment as a module's.
    assert_eq!(
        s.get("/cli-probe?arg=q").await.text(),
        "arg[0]=cli-probe\narg[1]=--fixed\narg[2]=q\nenv:GREETING=hello tenant\n"
    );
    // A wasi:http handler: the environment (its argv is its name only).
    s.get("/httpkit/env/GREETING")
        .await
        .expect(200, &["hello tenant"]);
    s.get("/httpkit/env/OTHER").await.expect(404, &["not set"]);
    s.stop().await;
}

#[tokio::test]
async fn the_cpu_budget_stops_spinning_components_too() {
    let s = TestServer::start(
        &["cli-spin.wasm", "httpkit.wasm"],
        &["--revalidate-after", "0"],
    )
    .await;
    for name in ["cli-spin", "httpkit"] {
        put_manifest(&s, name, "[limits]\ncpu_budget_ms = 150\n")
            .await
            .expect(201, &[]);
    }
    // A wasi:cli command, and a wasi:http handler stopped before its head.
    for path in ["/cli-spin", "/httpkit/spin/5000"] {
        let r = s.get(path).await;
        r.expect(508, &["CPU-time budget of 150 ms", "cpu_budget_ms"]);
        assert_eq!(r.header("wasmbox-error"), Some("cpu-budget"), "{path}");
        let cpu = phase(&r, "cpu");
        assert!((150.0..400.0).contains(&cpu), "{path}: cpu {cpu} ms");
    }
    // Under budget they run to the end.
    s.get("/cli-spin?arg=20").await.expect(200, &[]);
    s.get("/httpkit/spin/20").await.expect(200, &["spun 20 ms"]);
    s.stop().await;
}

#[tokio::test]
async fn a_broken_manifest_is_an_error_naming_the_problem_never_ignored() {
    let s = TestServer::start(&["echo.wasm"], &["--revalidate-after", "0"]).await;
    let cases = [
        ("[limits]\nmax_memroy_mb = 5\n", "max_memroy_mb"),
        (
            "[limits]\nmax_memory_mb = 999999\n",
            "limits.max_memory_mb = 999999",
        ),
        ("[limits]\ntimeout_ms = 0\n", "at least 1"),
        ("[env]\n\"BAD NAME\" = \"x\"\n", "BAD NAME"),
        ("args = \"not a list\"\n", "args"),
        ("[limits\n", "line 1"),
    ];
    for (text, words) in cases {
        // The API refuses it before it is published...
        let r = put_manifest(&s, "echo", text).await;
        r.expect(422, &[words]);
        assert_eq!(r.header("wasmbox-error"), Some("invalid-manifest"));
        assert!(!s.path("echo.toml").exists());
        // ...and one written into the directory stops the function.
        std::fs::write(s.path("echo.toml"), text).unwrap();
        let r = s.post("/echo", "x").await;
        r.expect(502, &["echo.toml", words]);
        assert_eq!(r.header("wasmbox-error"), Some("bad-manifest"));
        std::fs::remove_file(s.path("echo.toml")).unwrap();
    }
    s.post("/echo", "fine").await.expect(200, &["fine"]);
    // The listing says which manifest is broken.
    std::fs::write(s.path("echo.toml"), "nope = 1\n").unwrap();
    let e = crate::helpers::listed(&s, "echo.wasm").await.unwrap();
    assert_eq!(e["manifest"]["valid"], false);
    assert!(e["manifest"]["error"].as_str().unwrap().contains("nope"));
    s.stop().await;
}

/// With the default `--revalidate-after` (1 s), a manifest changed through
/// the API applies to the very next request (the API drops the cached one).
#[tokio::test]
async fn a_manifest_changed_through_the_api_applies_to_the_very_next_request() {
    let s = TestServer::start(&["probe.wasm"], &[]).await;
    assert_eq!(s.get("/probe").await.text(), "arg[0]=probe\n");
    put_manifest(&s, "probe", "[env]\nV = \"a\"\n")
        .await
        .expect(201, &[]);
    assert_eq!(s.get("/probe").await.text(), "arg[0]=probe\nenv:V=a\n");
    put_manifest(&s, "probe", "[env]\nV = \"b\"\n")
        .await
        .expect(200, &[]);
    assert_eq!(s.get("/probe").await.text(), "arg[0]=probe\nenv:V=b\n");
    api(
        &s,
        Method::DELETE,
        "/-/admin/functions/probe/manifest",
        &[],
        Bytes::new(),
    )
    .await
    .expect(200, &[]);
    assert_eq!(s.get("/probe").await.text(), "arg[0]=probe\n");
    s.stop().await;
}
