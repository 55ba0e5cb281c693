//! wasi:http handler components over real HTTP against the real server,
//! with the `httpkit` and `hellohttp` guests built from source: the
//! request reaches the guest as an HTTP request, its response comes back
//! streamed, and every limit wasmbox applies to modules holds; outbound
//! HTTP is denied unless allowed, against a loopback upstream only.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::{hang_up_stops, send_get, until, TestServer};
use hyper::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KIT: &[&str] = &["httpkit.wasm", "hellohttp.wasm", "hello.wat"];

async fn read_all(mut s: TcpStream) -> String {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A loopback upstream: answers every request with `upstream says hi`
/// (or never answers, if `silent`); counts the connections it accepted.
async fn upstream(silent: bool) -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let n = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            n.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf).await;
                if silent {
                    let _ = c.read(&mut buf).await; // until the client goes
                    return;
                }
                let body = "upstream says hi\n";
                let r = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = c.write_all(r.as_bytes()).await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_gets_method_sub_path_query_headers_and_body() {
    let s = TestServer::start(KIT, &[]).await;
    let r = s
        .request(
            Method::PUT,
            "/httpkit/a/b?x=1&y=two",
            &[
                ("x-test", "yes"),
                ("memory-request", "64"),
                ("cpu_quota", "500"),
                ("connection", "x-drop"),
                ("x-drop", "secret"),
            ],
            Bytes::from_static(b"abc"),
        )
        .await;
    r.expect(
        200,
        &[
            "method: PUT\n",
            "path: /a/b?x=1&y=two\n",
            "header: x-test: yes\n",
            "body: 3 bytes\nabc",
        ],
    );
    for hidden in ["memory-request", "cpu_quota", "x-drop", "connection"] {
        assert!(
            !r.text().contains(hidden),
            "{hidden} reached the guest: {}",
            r.text()
        );
    }
    // The function itself, with no sub-path: the path is "/".
    s.request(Method::DELETE, "/httpkit", &[], Bytes::new())
        .await
        .expect(200, &["method: DELETE\n", "path: /\n"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_sets_status_and_headers_and_streams_its_body() {
    let s = TestServer::start(KIT, &[]).await;
    let r = s.get("/httpkit/status/418").await;
    r.expect(418, &["status"]);
    assert_eq!(r.header("x-kit"), Some("status"));
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
    let r = s.get("/httpkit/big/300000").await;
    r.expect(200, &[]);
    assert_eq!(r.body.len(), 300_000);
    assert!(r.body.iter().all(|b| *b == b'x'));
    s.get("/hellohttp")
        .await
        .expect(200, &["Hello from wasmbox!"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_keep_their_routes_only_handlers_take_other_methods_and_sub_paths() {
    let s = TestServer::start(KIT, &[]).await;
    let r = s.get("/hello/x").await;
    r.expect(400, &["single path segment"]);
    assert_eq!(r.header("wasmbox-error"), Some("bad-name"));
    let r = s.request(Method::PUT, "/hello", &[], Bytes::new()).await;
    r.expect(405, &[]);
    assert_eq!(r.header("allow"), Some("GET, POST"));
    s.request(Method::PUT, "/missing", &[], Bytes::new())
        .await
        .expect(405, &[]);
    s.get("/missing/x")
        .await
        .expect(400, &["single path segment"]);
    s.get("/hello").await.expect(200, &["Hello from wasmbox!"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_traps_or_never_answers_gets_500() {
    let s = TestServer::start(KIT, &[]).await;
    let r = s.get("/httpkit/trap").await;
    r.expect(500, &["trapped", "unreachable"]);
    assert_eq!(r.header("wasmbox-error"), Some("trap"));
    s.get("/httpkit/none")
        .await
        .expect(500, &["without setting a response"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_after_the_head_cuts_the_body_short() {
    let s = TestServer::start(KIT, &[]).await;
    // Trapping before the head went out (it is held while the guest
    // executes without waiting): the trap is the answer.
    s.get("/httpkit/late-trap/0")
        .await
        .expect(500, &["unreachable"]);
    // After it went out (the guest waited in a host call): a broken body.
    let raw = read_all(send_get(&s.base, "/httpkit/late-trap/20", "").await).await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("partial"), "{raw}");
    // A chunked body that ends cleanly ends with the last-chunk marker.
    assert!(!raw.ends_with("0\r\n\r\n"), "the body ended cleanly: {raw}");
    let app = s.app.clone();
    until("the worker is free", || app.executor.busy() == 0).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_is_held_to_its_memory_request_over_all_its_memories() {
    let s = TestServer::start(KIT, &[]).await;
    let mem = |mb: &'static str| [("memory-request", mb)];
    let r = s
        .request(Method::GET, "/httpkit/alloc/64", &mem("32"), Bytes::new())
        .await;
    r.expect(422, &["cap of 32 MiB"]);
    assert_eq!(r.header("wasmbox-error"), Some("memory-cap"));
    s.request(Method::GET, "/httpkit/alloc/64", &mem("128"), Bytes::new())
        .await
        .expect(200, &["allocated 64 MiB"]);
    s.stop().await;
}

/// What a component keeps in wasi:http resources is host memory, outside
/// its linear memory and its cap: each header map up to 128 KiB. Its
/// resource table holds as many as fit in its Memory-Request (32 MiB: 256),
/// not wasmtime's million, so a handler cannot hoard gigabytes of the
/// server's memory that way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_cannot_hoard_host_memory_in_resources_past_its_memory_request() {
    let s = TestServer::start(KIT, &[]).await;
    let mem = |mb: &'static str| [("memory-request", mb)];
    // 200 maps of 96 KiB: about 19 MiB, within 32.
    s.request(Method::GET, "/httpkit/hoard/200", &mem("32"), Bytes::new())
        .await
        .expect(200, &["held 200"]);
    // 2,000 would be about 190 MiB: refused past the table's 256 entries.
    let r = s
        .request(Method::GET, "/httpkit/hoard/2000", &mem("32"), Bytes::new())
        .await;
    r.expect(500, &["resource table has no free keys"]);
    // A request for 256 MiB may hold them (2,048 entries).
    s.request(
        Method::GET,
        "/httpkit/hoard/2000",
        &mem("256"),
        Bytes::new(),
    )
    .await
    .expect(200, &["held 2000"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_is_stopped_at_its_deadline_running_or_asleep() {
    let s = TestServer::start(KIT, &["--timeout", "300ms"]).await;
    s.get("/httpkit/sleep/3600000")
        .await
        .expect(504, &["0.300 s time limit"]);
    s.get("/httpkit/spin/3600000")
        .await
        .expect(504, &["0.300 s time limit"]);
    s.get("/httpkit/sleep/1").await.expect(200, &["slept 1 ms"]);
    // The response ends when the guest returns; its worker and reservation
    // are freed once its store is torn down, a moment later.
    let app = s.app.clone();
    until("the worker and the reservation are free", || {
        app.executor.busy() == 0 && app.admission.snapshot().reserved.cpu_millis == 0
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_past_the_output_cap_is_cut_and_the_handler_stopped() {
    let s = TestServer::start(KIT, &["--max-output-bytes", "10000"]).await;
    let r = s.get("/httpkit/big/10000").await;
    r.expect(200, &[]);
    assert_eq!(r.body.len(), 10_000);
    let raw = read_all(send_get(&s.base, "/httpkit/big/1000000", "").await).await;
    assert!(
        raw.starts_with("HTTP/1.1 200"),
        "{}",
        &raw[..raw.len().min(200)]
    );
    assert!(raw.len() < 100_000, "{} bytes came through", raw.len());
    let app = s.app.clone();
    until("the handler stopped", || app.executor.busy() == 0).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_set_before_a_long_computation_goes_out_while_it_runs() {
    // The head is held while the guest executes without waiting; a guest
    // that computes on after setting it must not hold it to the end.
    let s = TestServer::start(KIT, &[]).await;
    // At a tenth of a core, so it does not starve the tests beside it.
    let mut c = send_get(&s.base, "/httpkit/head-spin/60000", "cpu_quota: 100\r\n").await;
    let mut seen = Vec::new();
    let started = async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("started") {
            let n = c.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), started)
        .await
        .expect("the head and the first bytes within 30 s of a 60 s computation");
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!text.contains("done"), "{text}");
    // Hanging up stops it.
    drop(c);
    let app = s.app.clone();
    until("the handler stopped", || app.executor.busy() == 0).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_up_client_stops_its_handler() {
    let s = TestServer::start(KIT, &[]).await;
    hang_up_stops(&s, "/httpkit/sleep/3600000").await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_wait_for_admission_like_modules() {
    let s = TestServer::start(KIT, &["--capacity-cpu", "1000", "--queue-timeout", "200ms"]).await;
    let holder = send_get(&s.base, "/httpkit/sleep/3600000", "cpu_quota: 1000\r\n").await;
    let app = s.app.clone();
    until("the first handler runs", || app.executor.busy() == 1).await;
    let r = s
        .request(
            Method::GET,
            "/httpkit/x",
            &[("cpu_quota", "1000")],
            Bytes::new(),
        )
        .await;
    r.expect(503, &[]);
    assert_eq!(r.header("wasmbox-error"), Some("queue-timeout"));
    drop(holder);
    until("the holder stopped", || app.executor.busy() == 0).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_http_is_denied_by_default_and_allowed_by_pattern_within_bounds() {
    let (addr, accepted) = upstream(false).await;
    let fetch = format!("/httpkit/fetch/{addr}/x");
    let s = TestServer::start(KIT, &[]).await;
    s.get(&fetch).await.expect(502, &["HttpRequestDenied"]);
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
    s.stop().await;

    let s = TestServer::start(
        KIT,
        &[
            "--allow-outbound",
            &format!("{addr},*.example.com"),
            "--max-outbound-requests",
            "1",
        ],
    )
    .await;
    s.get(&fetch).await.expect(200, &["upstream says hi"]);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // Another port of the same host is not on the list.
    s.get("/httpkit/fetch/127.0.0.1:1/x")
        .await
        .expect(502, &["HttpRequestDenied"]);
    // The second request of one invocation is over --max-outbound-requests.
    s.get(&format!("/httpkit/fetch2/{addr}/x"))
        .await
        .expect(502, &["HttpRequestDenied"]);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_call_ends_with_the_invocations_deadline() {
    let (addr, accepted) = upstream(true).await;
    let s = TestServer::start(KIT, &["--allow-outbound", &addr, "--timeout", "500ms"]).await;
    let r = s.get(&format!("/httpkit/fetch/{addr}/x")).await;
    // Either the guest gets its timeout error first and answers with it,
    // or the deadline stops it: never a hang.
    assert!(
        r.status == 504 || (r.status == 502 && r.text().contains("Timeout")),
        "{} {}",
        r.status,
        r.text()
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    let app = s.app.clone();
    until("the worker is free", || app.executor.busy() == 0).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_handler_invocations_by_function() {
    let s = TestServer::start(KIT, &[]).await;
    s.get("/httpkit/x").await.expect(200, &[]);
    s.get("/httpkit/trap").await.expect(500, &[]);
    let lines = [
        r#"wasmbox_invocations_total{function="httpkit.wasm",outcome="ok"} 1"#,
        r#"wasmbox_invocations_total{function="httpkit.wasm",outcome="trap"} 1"#,
    ];
    // A handler's answer goes out before its guest has stopped, and its
    // invocation is counted then: poll, with a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let m = s.admin_get("/-/metrics").await.text();
        let missing: Vec<_> = lines.iter().filter(|l| !m.contains(**l)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{missing:?} not in\n{m}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    s.stop().await;
}

/// A handler's request is billed like a module's: its CPU, peak memory and
/// bytes in are in the access log once the guest has stopped (the answer
/// goes out before that, while the body streams).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handlers_usage_is_accounted_once_its_guest_has_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let s = TestServer::start(KIT, &["--access-log", log.to_str().unwrap()]).await;
    let r = s
        .request(
            Method::POST,
            "/httpkit/spin/60",
            &[],
            Bytes::from_static(b"abc"),
        )
        .await;
    r.expect(200, &["spun"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let line = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains("httpkit")) {
            break serde_json::from_str::<serde_json::Value>(l).unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no access-log line for httpkit: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    assert_eq!(line["status"], 200, "{line}");
    assert!(line["error"].is_null(), "{line}");
    // 60 ms of spinning (by the wall clock): at least 20 ms of CPU, the
    // guest ran on its worker, even with the file's other tests running on
    // the same two cores (30 ms of wall time left too little margin).
    assert!(line["cpu_ms"].as_f64().unwrap() >= 20.0, "{line}");
    assert!(line["peak_mb"].as_f64().unwrap() > 0.0, "{line}");
    assert_eq!(line["bytes_in"], 3, "{line}");
    s.stop().await;
}
