//! Resource-aware serving end to end: real slow guests over HTTP through the
//! admission queue, readiness, metrics, the queue-proxy reporter and a
//! graceful drain.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_follows_arrival_and_a_large_request_is_not_starved() {
    let s = Arc::new(
        TestServer::start(
            &["spin.wasm"],
            &[
                "--capacity-cpu",
                "100000",
                "--capacity-memory-mb",
                "1000",
                "--max-queue-mb",
                "10000",
                "--cpu-isolation",
                "none",
            ],
        )
        .await,
    );
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    // First holds 600 MB; then "big" (1000 MB) must wait for it; the small
    // ones would fit next to the first but must not overtake "big".
    for (i, (name, mem)) in [
        ("first", 600),
        ("big", 1000),
        ("small1", 100),
        ("small2", 100),
        ("small3", 100),
    ]
    .into_iter()
    .enumerate()
    {
        let (s2, order2) = (s.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let ms = if name == "first" { 600 } else { 50 };
            let r = s2.call(&format!("/spin?arg={ms}"), 10, mem).await;
            r.expect(200, &["spun"]);
            order2.lock().unwrap().push(name);
        }));
        if i == 0 {
            s.until("first admitted", |a| a.reserved.memory_mb == 600)
                .await;
        } else {
            s.until("queued", |a| a.queued == i).await;
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(&order[..2], &["first", "big"], "{order:?}");
    assert_eq!(s.app.admission.snapshot().reserved.memory_mb, 0);
    Arc::into_inner(s).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overbooking_admits_exactly_up_to_the_ratio() {
    let args = [
        "--capacity-cpu",
        "100000",
        "--capacity-memory-mb",
        "1000",
        "--memory-overbook",
        "1.5",
        "--cpu-isolation",
        "none",
        "--workers",
        "32",
    ];
    let s = Arc::new(TestServer::start(&["spin.wasm"], &args).await);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let s2 = s.clone();
            tokio::spawn(async move { s2.call("/spin?arg=600", 10, 100).await.status.as_u16() })
        })
        .collect();
    // 15 x 100 MB = 1500 MB = 1000 MB x 1.5 run; the 16th waits.
    s.until("15 admitted and 1 queued", |a| {
        a.reserved.memory_mb == 1500 && a.queued == 1
    })
    .await;
    assert_eq!(s.app.admission.limit().memory_mb, 1500);
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    Arc::into_inner(s).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_larger_than_capacity_fails_at_once() {
    let s = TestServer::start(&["hello.wat"], &["--capacity-memory-mb", "1000"]).await;
    let r = s.call("/hello", 100, 2000).await;
    r.expect(413, &["2000 MB", "at most", "1000 MB", "never run here"]);
    assert_eq!(r.header("wasmbox-error"), Some("exceeds-capacity"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after_and_flips_readiness() {
    let args = [
        "--capacity-cpu",
        "1000",
        "--max-queue",
        "1",
        "--cpu-isolation",
        "none",
    ];
    let s = Arc::new(TestServer::start(&["spin.wasm"], &args).await);
    s.get("/-/ready").await.expect(200, &["ready"]);
    let (a, b) = (s.clone(), s.clone());
    let running =
        tokio::spawn(async move { a.call("/spin?arg=800", 1000, 10).await.status.as_u16() });
    s.until("one running", |x| x.reserved.cpu_millis == 1000)
        .await;
    let queued =
        tokio::spawn(async move { b.call("/spin?arg=10", 1000, 10).await.status.as_u16() });
    s.until("one queued", |x| x.queued == 1).await;
    let r = s.call("/spin?arg=10", 1000, 10).await;
    r.expect(503, &["queue is full"]);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("wasmbox-error"), Some("queue-full"));
    s.get("/-/ready").await.expect(503, &["queue is full"]);
    assert_eq!((running.await.unwrap(), queued.await.unwrap()), (200, 200));
    s.get("/-/ready").await.expect(200, &["ready"]);
    Arc::into_inner(s).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_longer_than_the_queue_timeout_answers_503() {
    let args = [
        "--capacity-cpu",
        "1000",
        "--queue-timeout",
        "200ms",
        "--cpu-isolation",
        "none",
    ];
    let s = Arc::new(TestServer::start(&["spin.wasm"], &args).await);
    let a = s.clone();
    let running =
        tokio::spawn(async move { a.call("/spin?arg=1500", 1000, 10).await.status.as_u16() });
    s.until("one running", |x| x.reserved.cpu_millis == 1000)
        .await;
    let r = s.call("/spin?arg=10", 1000, 10).await;
    r.expect(503, &["waited 200ms in the admission queue"]);
    assert_eq!(r.header("wasmbox-error"), Some("queue-timeout"));
    assert_eq!(s.app.admission.snapshot().queued, 0);
    assert_eq!(running.await.unwrap(), 200);
    Arc::into_inner(s).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_invocations_queue_and_capacity() {
    let args = [
        "--capacity-cpu",
        "3000",
        "--capacity-memory-mb",
        "2048",
        "--memory-overbook",
        "1.5",
    ];
    let s = TestServer::start(&["hello.wat", "spin.wasm"], &args).await;
    s.get("/hello").await.expect(200, &[]);
    s.get("/hello").await.expect(200, &[]);
    s.get("/spin?arg=1").await.expect(200, &[]);
    s.call("/hello", 100, 3100).await.expect(413, &[]);
    let r = s.admin_get("/-/metrics").await;
    assert!(r.header("content-type").unwrap().contains("openmetrics"));
    let m = r.text();
    for line in [
        r#"wasmbox_invocations_total{function="hello.wat",outcome="ok"} 2"#,
        r#"wasmbox_invocations_total{function="spin.wasm",outcome="ok"} 1"#,
        r#"wasmbox_invocations_total{function="hello.wat",outcome="exceeds-capacity"} 1"#,
        "wasmbox_capacity_cpu_millicores 3000",
        "wasmbox_capacity_memory_mb 2048",
        "wasmbox_admission_limit_memory_mb 3072",
        "wasmbox_reserved_memory_mb 0",
        "wasmbox_queue_depth 0",
        "wasmbox_queue_wait_seconds_count 3",
        "wasmbox_execution_seconds_count 3",
        "wasmbox_workers_busy 0",
        "wasmbox_pool_core_instances 0",
    ] {
        assert!(m.lines().any(|l| l == line), "missing {line:?} in:\n{m}");
    }
    s.stop().await;
}

/// A real websocket server stands in for the queue-proxy fork (the fork
/// itself is a Go program that does not exist here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reporter_sends_decodable_frames_and_reconnects_after_a_restart() {
    use futures_util::StreamExt;
    use prost::Message as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("ws://{addr}");
    let s = TestServer::start(
        &["hello.wat"],
        &["--qp-report", &url, "--reporting-period-ms", "20"],
    )
    .await;

    async fn frames(listener: &tokio::net::TcpListener, n: usize) -> Vec<f64> {
        let (stream, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        let mut got = Vec::new();
        while got.len() < n {
            match ws.next().await.unwrap().unwrap() {
                tokio_tungstenite::tungstenite::Message::Binary(b) => got.push(
                    wasmbox::reporter::SuperPodMetrics::decode(&b[..])
                        .unwrap()
                        .cpu_utilization,
                ),
                other => panic!("unexpected frame {other:?}"),
            }
        }
        got
    }
    let first = frames(&listener, 3).await;
    assert!(
        first.iter().all(|c| c.is_finite() && *c >= 0.0),
        "{first:?}"
    );
    // "Restart" the queue-proxy: drop the listener and the connection, then
    // listen again on the same port.
    drop(listener);
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let again = tokio::time::timeout(Duration::from_secs(20), frames(&listener, 3))
        .await
        .expect("reporter reconnected");
    assert_eq!(again.len(), 3);
    s.get("/hello").await.expect(200, &[]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reporter_never_blocks_serving_when_nobody_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}");
    let s = TestServer::start(
        &["hello.wat"],
        &["--qp-report", &url, "--reporting-period-ms", "5"],
    )
    .await;
    for _ in 0..5 {
        s.get("/hello").await.expect(200, &["Hello"]);
    }
    s.stop().await;
}
