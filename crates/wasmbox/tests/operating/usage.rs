//! Per-function usage accounting: the figures against what a guest does,
//! every request counted whatever became of it, the access log, request ids.

use bytes::Bytes;
use hyper::Method;

use crate::common::{send_get, until, TestServer};
use crate::helpers::{log_lines, metric};

fn log_flag(dir: &tempfile::TempDir) -> (std::path::PathBuf, String) {
    let p = dir.path().join("access.log");
    let s = p.to_str().unwrap().to_string();
    (p, s)
}

/// CPU time: a guest doing 3x the work is charged about 3x the CPU
/// (tolerance: 2x-4.5x, as the machine is shared), and never more CPU than
/// wall time. The ground truth is the work, not a clock: a busy machine
/// delays the guest (wall time) but does not make it burn more CPU.
#[tokio::test]
async fn cpu_time_follows_the_work_a_guest_does_and_the_totals_add_up() {
    let logs = tempfile::tempdir().unwrap();
    let (log, flag) = log_flag(&logs);
    let s = TestServer::start(&["probe.wasm"], &["--access-log", &flag]).await;
    s.get("/probe?arg=burn&arg=1").await.expect(200, &[]); // compile, warm up
    s.get("/probe?arg=burn&arg=40")
        .await
        .expect(200, &["burned 40M"]);
    s.get("/probe?arg=burn&arg=120")
        .await
        .expect(200, &["burned 120M"]);
    let lines = log_lines(&log, 3).await;
    let cpu = |i: usize| lines[i]["cpu_ms"].as_f64().unwrap();
    let ratio = cpu(2) / cpu(1);
    eprintln!(
        "cpu 40M: {:.1} ms, 120M: {:.1} ms, ratio {ratio:.2}",
        cpu(1),
        cpu(2)
    );
    assert!((2.0..4.5).contains(&ratio), "ratio {ratio}: {lines:?}");
    for l in &lines {
        assert!(
            l["cpu_ms"].as_f64().unwrap() <= l["wall_ms"].as_f64().unwrap() + 1.0,
            "more CPU than wall time: {l}"
        );
        assert_eq!(l["function"], "probe.wasm");
        assert_eq!(l["status"], 200);
        assert!(l["error"].is_null());
    }
    // The counter is the sum of the requests' figures.
    let total: f64 = lines.iter().map(|l| l["cpu_ms"].as_f64().unwrap()).sum();
    let counted = metric(
        &s,
        "wasmbox_function_cpu_seconds_total{function=\"probe.wasm\"}",
    )
    .await
    .unwrap();
    assert!(
        (counted * 1e3 - total).abs() < 0.1,
        "{counted} s vs {total} ms"
    );
    let compiled = metric(
        &s,
        "wasmbox_function_compile_seconds_total{function=\"probe.wasm\"}",
    )
    .await
    .unwrap();
    assert!(compiled > 0.0);
    s.stop().await;
}

/// Peak memory: `memhog N` grows its heap to N MiB: the peak is at least N
/// and at most N + 4 MiB (the guest's stack, data and allocator slack).
/// Memory-MB x seconds: the reservation times the time it was held, which
/// lies between the guest's execution and the whole request.
#[tokio::test]
async fn peak_memory_and_reserved_memory_seconds_match_what_the_guest_did() {
    let logs = tempfile::tempdir().unwrap();
    let (log, flag) = log_flag(&logs);
    let s = TestServer::start(&["memhog.wasm"], &["--access-log", &flag]).await;
    let r = s
        .request(
            Method::GET,
            "/memhog?arg=40",
            &[("memory-request", "100")],
            Bytes::new(),
        )
        .await;
    r.expect(200, &[]);
    let st = r.header("server-timing").unwrap().to_string();
    let execute: f64 = st
        .split(", ")
        .find_map(|p| p.strip_prefix("execute;dur="))
        .unwrap()
        .parse()
        .unwrap();
    let l = &log_lines(&log, 1).await[0];
    let peak = l["peak_mb"].as_f64().unwrap();
    assert!((40.0..=44.0).contains(&peak), "peak {peak} MiB");
    let mbs = l["mb_seconds"].as_f64().unwrap();
    let wall = l["wall_ms"].as_f64().unwrap();
    assert!(
        mbs >= 100.0 * execute / 1e3 - 0.01 && mbs <= 100.0 * wall / 1e3 + 0.01,
        "{mbs} MB-s; execute {execute} ms, wall {wall} ms"
    );
    assert!(l["queue_ms"].as_f64().unwrap() <= wall);
    let sum = metric(
        &s,
        "wasmbox_function_peak_memory_mb_sum{function=\"memhog.wasm\"}",
    )
    .await
    .unwrap();
    assert!((sum - peak).abs() < 0.01, "{sum} vs {peak}");
    s.stop().await;
}

/// A client that hangs up while its guest runs is counted, once, as
/// client-gone, with the CPU its guest used until it was stopped.
#[tokio::test]
async fn a_request_abandoned_by_its_client_is_counted_with_its_figures() {
    let logs = tempfile::tempdir().unwrap();
    let (log, flag) = log_flag(&logs);
    let s = TestServer::start(&["spin.wasm"], &["--access-log", &flag]).await;
    // Compiled and a worker started: the next call runs at once.
    s.get("/spin?arg=1").await.expect(200, &[]);
    let conn = send_get(&s.base, "/spin", "x-request-id: gone-1\r\n").await;
    until("the spin guest runs on a worker", || {
        s.app.executor.stats().busy > 0
    })
    .await;
    drop(conn);
    let l = &log_lines(&log, 2).await[1];
    assert_eq!(l["request_id"], "gone-1");
    assert_eq!(l["error"], "client-gone");
    assert_eq!(l["status"], 499);
    assert!(l["cpu_ms"].as_f64().unwrap() > 0.0, "{l}");
    let n = metric(
        &s,
        "wasmbox_invocations_total{function=\"spin.wasm\",outcome=\"client-gone\"}",
    )
    .await;
    assert_eq!(n, Some(1.0));
    s.stop().await;
    assert_eq!(log_lines(&log, 2).await.len(), 2, "counted twice");
}

/// Every request is counted, refused ones included; the request id comes
/// from X-Request-Id or traceparent, or is generated, and is returned.
#[tokio::test]
async fn refused_requests_are_counted_and_every_response_carries_its_request_id() {
    let logs = tempfile::tempdir().unwrap();
    let (log, flag) = log_flag(&logs);
    let s = TestServer::start(&["echo.wasm"], &["--access-log", &flag]).await;
    let r = s
        .request(Method::POST, "/echo", &[("x-request-id", "abc-123")], "hi")
        .await;
    r.expect(200, &[]);
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    let first_len = r.body.len();
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = s
        .request(
            Method::GET,
            "/echo",
            &[("traceparent", tp), ("memory-request", "x")],
            Bytes::new(),
        )
        .await;
    r.expect(400, &[]);
    assert_eq!(
        r.header("x-request-id"),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    let long = "a".repeat(200);
    let r = s
        .request(
            Method::GET,
            "/nosuch",
            &[("x-request-id", long.as_str())],
            Bytes::new(),
        )
        .await;
    r.expect(404, &[]);
    let generated = r.header("x-request-id").unwrap();
    assert_eq!(generated.len(), 32, "{generated}");
    assert!(generated.bytes().all(|b| b.is_ascii_hexdigit()));
    let lines = log_lines(&log, 3).await;
    assert_eq!(lines[0]["bytes_in"], 2);
    assert_eq!(lines[0]["bytes_out"], first_len);
    assert_eq!(lines[1]["error"], "bad-header");
    assert_eq!(lines[1]["request_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(lines[2]["error"], "not-found");
    assert!(lines[2]["function"].is_null());
    assert_eq!(lines[2]["request_id"], generated);
    assert_eq!(
        metric(
            &s,
            "wasmbox_invocations_total{function=\"-\",outcome=\"not-found\"}"
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        metric(
            &s,
            "wasmbox_invocations_total{function=\"-\",outcome=\"bad-header\"}"
        )
        .await,
        Some(1.0)
    );
    s.stop().await;
}

/// A wasi:http handler's body is streamed after its head: its record
/// waits for the body's end and carries the bytes that went out, and how
/// the body ended when it ended short (the status stays the 200 sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_is_recorded_with_its_bytes_and_how_it_ended() {
    let logs = tempfile::tempdir().unwrap();
    let (log, flag) = log_flag(&logs);
    let s = TestServer::start(
        &["httpkit.wasm"],
        &["--access-log", &flag, "--max-output-bytes", "400000"],
    )
    .await;
    let r = s.get("/httpkit/big/300000").await;
    r.expect(200, &[]);
    assert_eq!(r.body.len(), 300_000);
    // Past the output cap: cut off after what fitted.
    let mut cut = send_get(&s.base, "/httpkit/big/1000000", "").await;
    let mut raw = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut cut, &mut raw).await;
    assert!(raw.starts_with(b"HTTP/1.1 200"));
    // The guest traps after its head and 8 bytes ("partial\n").
    let mut trapped = send_get(&s.base, "/httpkit/late-trap/20", "").await;
    let mut raw = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut trapped, &mut raw).await;
    assert!(raw.starts_with(b"HTTP/1.1 200"));
    let lines = log_lines(&log, 3).await;
    let with_bytes = |bytes: &dyn Fn(u64) -> bool| {
        lines
            .iter()
            .find(|l| bytes(l["bytes_out"].as_u64().unwrap()))
            .cloned()
    };
    let whole = with_bytes(&|b| b == 300_000).unwrap_or_else(|| panic!("{lines:?}"));
    assert!(whole["error"].is_null(), "{whole}");
    let over = with_bytes(&|b| b > 8 && b <= 400_000 && b != 300_000)
        .unwrap_or_else(|| panic!("no cut-off record with its bytes: {lines:?}"));
    assert_eq!(over["status"], 200, "{over}");
    assert_eq!(over["error"], "output-limit", "{over}");
    let broken = with_bytes(&|b| b == 8).unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(broken["status"], 200, "{broken}");
    assert_eq!(broken["error"], "trap", "{broken}");
    let total: u64 = lines.iter().map(|l| l["bytes_out"].as_u64().unwrap()).sum();
    assert_eq!(
        metric(
            &s,
            "wasmbox_function_response_bytes_total{function=\"httpkit.wasm\"}"
        )
        .await,
        Some(total as f64)
    );
    s.stop().await;
}

/// A response that may carry no body (HEAD, 204) is never polled by
/// hyper, nor is a body past the length its head declared: the handler's
/// body is read to its end apart, so the guest is not stopped mid-work as
/// if its client had gone, and the request is recorded as served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bodyless_response_lets_the_handler_finish_and_is_recorded_as_served() {
    let logs = tempfile::tempdir().unwrap();
    let (log, flag) = log_flag(&logs);
    let s = TestServer::start(&["httpkit.wasm"], &["--access-log", &flag]).await;
    // Sets its head, writes, burns 100 ms, writes again: the head goes out
    // while it runs.
    let r = s
        .request(Method::HEAD, "/httpkit/head-spin/100", &[], Bytes::new())
        .await;
    r.expect(200, &[]);
    assert!(r.body.is_empty());
    s.get("/httpkit/status/204").await.expect(204, &[]);
    // Recorded as each ends: the HEAD's guest may still run after the 204.
    let lines = log_lines(&log, 2).await;
    for l in &lines {
        assert!(l["error"].is_null(), "{l}");
        assert_eq!(l["bytes_out"], 0, "{l}");
    }
    let mut statuses: Vec<u64> = lines
        .iter()
        .map(|l| l["status"].as_u64().unwrap())
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 204]);
    // A body of the length its head declares: hyper stops there without
    // asking the body for its end; the client has it all.
    let r = s.get("/httpkit/sized/10000").await;
    r.expect(200, &[]);
    assert_eq!(r.body.len(), 10_000);
    let lines = log_lines(&log, 3).await;
    assert!(lines[2]["error"].is_null(), "{}", lines[2]);
    assert_eq!(lines[2]["bytes_out"], 10_000);
    s.stop().await;
}
