//! Fair admission across functions, over real HTTP: one function's backlog
//! does not hold up another function's first call, cannot fill the queue
//! for the others, and a function with less running goes first when
//! capacity frees. The hog is the `sleep` guest (it holds its reservation
//! without burning CPU, so the test does not depend on machine load).

mod common;

use common::{send_get, until, TestServer};
use wasmbox_admission::FunctionSnapshot;

fn of(s: &TestServer, function: &str) -> FunctionSnapshot {
    s.app
        .admission
        .functions()
        .into_iter()
        .find(|f| &*f.function == function)
        .unwrap_or(FunctionSnapshot {
            function: function.into(),
            queued: 0,
            queued_mb: 0,
            running: 0,
            reserved: Default::default(),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_functions_backlog_does_not_hold_up_the_others() {
    let s = TestServer::start(
        &["hello.wat", "sleep.wasm"],
        &[
            "--capacity-cpu",
            "2000",
            "--max-queue",
            "8",
            "--cpu-isolation",
            "none",
        ],
    )
    .await;
    std::fs::copy(common::guest("sleep.wasm"), s.path("hog.wasm")).unwrap();
    let hog = "cpu_quota: 1000\r\nMemory-Request: 16\r\n";

    // The hog alone may take the whole capacity: two run, four wait.
    let mut hogs = Vec::new();
    for _ in 0..2 {
        hogs.push(send_get(&s.base, "/hog", hog).await);
    }
    until("two hogs running", || of(&s, "hog.wasm").running == 2).await;
    for _ in 0..4 {
        hogs.push(send_get(&s.base, "/hog", hog).await);
    }
    until("four more hogs queued", || {
        let h = of(&s, "hog.wasm");
        h.running == 2 && h.queued == 4
    })
    .await;

    // Its queue share (half of --max-queue 8) is full: the hog is refused,
    let r = s
        .request(
            hyper::Method::GET,
            "/hog",
            &[("cpu_quota", "1000"), ("Memory-Request", "16")],
            bytes::Bytes::new(),
        )
        .await;
    r.expect(503, &["function", "hog.wasm"]);
    assert_eq!(r.header("wasmbox-error"), Some("queue-full"));

    // but another function's first call starts at once, ahead of the hog's
    // backlog (which is still there when it has finished).
    s.request(
        hyper::Method::GET,
        "/hello",
        &[("cpu_quota", "100"), ("Memory-Request", "16")],
        bytes::Bytes::new(),
    )
    .await
    .expect(200, &["Hello from wasmbox!"]);
    assert_eq!(of(&s, "hog.wasm").queued, 4);

    // A second tenant's call that does not fit waits, and goes before the
    // hog's older backlog when capacity frees.
    let other = send_get(&s.base, "/sleep", hog).await;
    until("the other tenant queued", || {
        of(&s, "sleep.wasm").queued == 1
    })
    .await;
    let m = s.admin_get("/-/metrics").await.text();
    assert!(
        m.contains(r#"wasmbox_function_queued{function="hog.wasm"} 4"#),
        "{m}"
    );
    assert!(
        m.contains(r#"wasmbox_function_running{function="hog.wasm"} 2"#),
        "{m}"
    );
    drop(hogs.remove(0)); // a running hog's client hangs up
    until("the other tenant admitted", || {
        of(&s, "sleep.wasm").running == 1
    })
    .await;
    let h = of(&s, "hog.wasm");
    assert_eq!(h.running + h.queued, 5);
    assert!(h.queued >= 3, "{h:?}");

    drop(other);
    drop(hogs);
    until("everything released", || {
        s.app.admission.snapshot().reserved.cpu_millis == 0
    })
    .await;
    s.stop().await;
}

/// With CPU and memory to spare, a hog can still take every worker. Calls
/// past the worker count wait in admission, where the fair order applies,
/// not in the workers' first-come queue: another function's call starts on
/// the first worker that frees, ahead of the hog's backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hog_holding_every_worker_does_not_queue_others_behind_its_backlog() {
    let s = TestServer::start(
        &["hello.wat", "sleep.wasm"],
        &["--workers", "2", "--cpu-isolation", "none"],
    )
    .await;
    std::fs::copy(common::guest("sleep.wasm"), s.path("hog.wasm")).unwrap();
    let hog = "cpu_quota: 100\r\nMemory-Request: 16\r\n";
    // Two first (the ones that run, so hanging up one frees a worker),
    let mut hogs = Vec::new();
    for _ in 0..2 {
        hogs.push(send_get(&s.base, "/hog", hog).await);
    }
    until("two hogs running", || {
        of(&s, "hog.wasm").running == 2 && s.app.executor.stats().busy == 2
    })
    .await;
    // then four that wait in admission, not in the workers' queue.
    for _ in 0..4 {
        hogs.push(send_get(&s.base, "/hog", hog).await);
    }
    until("four hogs waiting in admission", || {
        of(&s, "hog.wasm").queued == 4
    })
    .await;
    assert_eq!(of(&s, "hog.wasm").running, 2);
    assert_eq!(s.app.executor.stats().queued, 0);

    let hello = s.request(
        hyper::Method::GET,
        "/hello",
        &[("cpu_quota", "100"), ("Memory-Request", "16")],
        bytes::Bytes::new(),
    );
    let free_a_worker = async {
        until("hello queued", || of(&s, "hello.wat").queued == 1).await;
        drop(hogs.remove(0)); // a running hog's client hangs up
    };
    let (r, ()) = tokio::join!(hello, free_a_worker);
    r.expect(200, &["Hello from wasmbox!"]);
    // Hello took the freed worker ahead of the hog's backlog; its own end
    // (before its answer) let the next hog in.
    let h = of(&s, "hog.wasm");
    assert_eq!((h.running, h.queued), (2, 3));

    drop(hogs);
    until("everything released", || {
        s.app.admission.snapshot().reserved.cpu_millis == 0
    })
    .await;
    s.stop().await;
}
