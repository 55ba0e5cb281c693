//! The serving port against hostile clients, over raw loopback sockets to a
//! real server: half-sent headers, idle keep-alive connections, bodies that
//! trickle, responses nobody reads, more connections than allowed, more
//! body bytes than the budget, HTTP/2 and upgrades. Each test fails on a
//! server without the corresponding limit (it would wait forever, up to the
//! test's deadline).

mod common;

use std::time::Duration;

use common::{until, TestServer};
use hyper::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest any step here may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

async fn connect(s: &TestServer) -> TcpStream {
    TcpStream::connect(s.base.strip_prefix("http://").unwrap())
        .await
        .unwrap()
}

/// Reads until the server closes the connection (EOF or reset); returns
/// what was read. Fails the test if it stays open past [`DEADLINE`].
async fn read_until_closed(stream: &mut TcpStream, what: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 64 << 10];
    let closed = tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "{what}: the server kept the connection open"
    );
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn half_sent_headers_are_cut_off_at_the_header_timeout() {
    let s = TestServer::start(&["hello.wat"], &["--header-read-timeout", "500ms"]).await;
    let mut held = Vec::new();
    for _ in 0..50 {
        let mut c = connect(&s).await;
        c.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        held.push(c);
    }
    for c in &mut held {
        read_until_closed(c, "half-sent headers").await;
    }
    // The server still serves.
    s.get("/hello").await.expect(200, &[]);
    s.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let s = TestServer::start(&["hello.wat"], &["--idle-timeout", "300ms"]).await;
    let mut c = connect(&s).await;
    c.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let text = read_until_closed(&mut c, "idle keep-alive").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    s.stop().await;
}

#[tokio::test]
async fn a_body_that_trickles_gets_408_at_the_body_timeout() {
    let s = TestServer::start(&["echo.wasm"], &["--body-timeout", "500ms"]).await;
    let mut c = connect(&s).await;
    c.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b")
        .await
        .unwrap();
    let text = read_until_closed(&mut c, "trickling body").await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body-timeout"), "{text}");
    assert!(text.contains("10 bytes received"), "{text}");
    assert_eq!(
        s.app.body_budget.used(),
        0,
        "the body's budget is given back"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_response_nobody_reads_is_dropped_at_the_write_timeout() {
    let s = TestServer::start(&["echo.wasm"], &["--write-timeout", "500ms"]).await;
    // 16 MB of output, far more than the socket buffers hold; never read.
    let mut c = connect(&s).await;
    c.write_all(b"GET /echo?arg=--bytes&arg=16000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The response is charged to the body budget while it waits...
    until("the response is built", || {
        s.app.body_budget.used() >= 16_000_000
    })
    .await;
    // ...and released when the server gives up on the reader.
    until("the unread response is dropped", || {
        s.app.body_budget.used() == 0
    })
    .await;
    drop(c);
    s.get("/echo?arg=ok").await.expect(200, &["ok"]);
    s.stop().await;
}

#[tokio::test]
async fn a_reader_that_reads_a_little_now_and_then_is_cut_off_too() {
    let s = TestServer::start(&["echo.wasm"], &["--write-timeout", "1s"]).await;
    let mut c = connect(&s).await;
    c.write_all(b"GET /echo?arg=--bytes&arg=16000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    until("the response is built", || {
        s.app.body_budget.used() >= 16_000_000
    })
    .await;
    // 4 KiB every 200 ms: each read lets a write through, so no single wait
    // reaches the timeout; together they do.
    let trickle = tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        loop {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    until("the trickled response is dropped", || {
        s.app.body_budget.used() == 0
    })
    .await;
    // (What the kernel had already buffered for the client is still there
    // to read; the server's side is gone.)
    trickle.abort();
    s.stop().await;
}

#[tokio::test]
async fn a_chunked_body_that_does_not_fit_is_refused_at_once_not_queued() {
    let s = TestServer::start(
        &["echo.wasm"],
        &[
            "--max-buffered-mb",
            "1",
            "--max-body-bytes",
            "1048576",
            "--queue-timeout",
            "60s",
        ],
    )
    .await;
    let chunked = |n: usize| {
        let mut b =
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        b.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        b.extend(std::iter::repeat_n(b'c', n));
        b.extend_from_slice(b"\r\n");
        b
    };
    // A holds 700 KB of the 1 MiB and stalls before its last chunk.
    let mut a = connect(&s).await;
    a.write_all(&chunked(700_000)).await.unwrap();
    until("A holds its part", || s.app.body_budget.used() >= 700_000).await;
    // B needs 700 KB more: it cannot wait while holding (they would wait
    // for each other), so it is refused now, not at --queue-timeout.
    let mut b = connect(&s).await;
    b.write_all(&chunked(700_000)).await.unwrap();
    let text = read_until_closed_after_response(&mut b).await;
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("overloaded"), "{text}");
    // A finishes.
    a.write_all(b"0\r\n\r\n").await.unwrap();
    let text = read_until_closed_after_response(&mut a).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    s.stop().await;
}

#[tokio::test]
async fn connections_past_the_limit_wait_for_a_free_one() {
    let s = TestServer::start(&["hello.wat"], &["--max-connections", "3"]).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = connect(&s).await;
        c.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(c);
    }
    // A fourth connection is in the kernel's backlog, not served.
    let mut fourth = connect(&s).await;
    fourth
        .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), fourth.read(&mut buf))
            .await
            .is_err(),
        "a connection past --max-connections was served"
    );
    // One closes: the fourth is served.
    held.pop();
    let text = read_until_closed(&mut fourth, "the fourth connection").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    s.stop().await;
}

#[tokio::test]
async fn bodies_past_the_budget_wait_then_get_503() {
    let s = TestServer::start(
        &["echo.wasm"],
        &[
            "--max-buffered-mb",
            "1",
            "--max-body-bytes",
            "1048576",
            "--queue-timeout",
            "300ms",
            "--body-timeout",
            "20s",
        ],
    )
    .await;
    // A slow upload declares (and so reserves) the whole budget.
    let mut slow = connect(&s).await;
    slow.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\nstart")
        .await
        .unwrap();
    until("the slow upload holds the budget", || {
        s.app.body_budget.used() >= 1 << 20
    })
    .await;
    let r = s
        .request(Method::POST, "/echo", &[], vec![b'y'; 100_000])
        .await;
    r.expect(503, &["body budget of 1 MiB", "--max-buffered-mb"]);
    assert_eq!(r.header("wasmbox-error"), Some("overloaded"));
    assert_eq!(r.header("retry-after"), Some("1"));
    // The slow upload finishes; its budget is released, the next one fits.
    slow.write_all(&vec![b'z'; (1 << 20) - 5]).await.unwrap();
    let text = read_until_closed_after_response(&mut slow).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    until("the budget is free", || s.app.body_budget.used() == 0).await;
    let r = s
        .request(Method::POST, "/echo", &[], vec![b'y'; 100_000])
        .await;
    r.expect(200, &[]);
    assert_eq!(r.body.len(), 100_001, "a newline (no args), then the body");
    s.stop().await;
}

#[tokio::test]
async fn unread_responses_past_the_budget_hold_back_new_requests() {
    let s = TestServer::start(
        &["echo.wasm", "hello.wat"],
        &[
            "--max-buffered-mb",
            "1",
            "--max-body-bytes",
            "1048576",
            "--queue-timeout",
            "300ms",
            "--write-timeout",
            "60s",
        ],
    )
    .await;
    // 4 MB of output nobody reads: charged, and over the 1 MiB budget.
    let mut unread = connect(&s).await;
    unread
        .write_all(
            b"GET /echo?arg=--bytes&arg=4000000 HTTP/1.1\r\nHost: x\r\nMemory-Request: 8\r\n\r\n",
        )
        .await
        .unwrap();
    until("the unread response is charged", || {
        s.app.body_budget.used() > 1 << 20
    })
    .await;
    // A request without a body waits too, and gives up at --queue-timeout.
    let r = s.get("/hello").await;
    r.expect(503, &["--max-buffered-mb"]);
    assert_eq!(r.header("wasmbox-error"), Some("overloaded"));
    // The reader goes away: the response is dropped, requests run again.
    drop(unread);
    until("the dropped response is released", || {
        s.app.body_budget.used() == 0
    })
    .await;
    s.get("/hello").await.expect(200, &[]);
    s.stop().await;
}

/// Reads one response's head (status line and headers) from a keep-alive
/// connection.
async fn read_until_closed_after_response(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(DEADLINE, async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before a response");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("no response");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn stdout_is_capped_by_the_memory_request() {
    let s = TestServer::start(&["echo.wasm"], &[]).await;
    let r = s
        .request(
            Method::GET,
            "/echo?arg=--bytes&arg=3000000",
            &[("memory-request", "2")],
            "",
        )
        .await;
    r.expect(
        507,
        &["output limit of 2097152 bytes", "Memory-Request: 2 MiB"],
    );
    // Within the request's memory it passes.
    let r = s
        .request(
            Method::GET,
            "/echo?arg=--bytes&arg=3000000",
            &[("memory-request", "8")],
            "",
        )
        .await;
    r.expect(200, &[]);
    assert_eq!(r.body.len(), 3_000_000);
    s.stop().await;
}

/// An HTTP/2 prior-knowledge client on `s`.
async fn h2_get(s: &TestServer, path: &str) -> Result<u16, String> {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, http_body_util::Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let uri: hyper::Uri = format!("{}{path}", s.base).parse().unwrap();
    match tokio::time::timeout(DEADLINE, client.get(uri)).await {
        Err(_) => Err("timed out".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(r)) => Ok(r.status().as_u16()),
    }
}

#[tokio::test]
async fn http2_is_off_unless_enabled() {
    let s = TestServer::start(&["hello.wat"], &[]).await;
    assert!(
        h2_get(&s, "/hello").await.is_err(),
        "HTTP/2 served by default"
    );
    s.stop().await;
    let s = TestServer::start(&["hello.wat"], &["--http2", "--http2-max-streams", "4"]).await;
    assert_eq!(h2_get(&s, "/hello").await, Ok(200));
    s.stop().await;
}

#[tokio::test]
async fn an_upgrade_request_is_served_as_a_plain_request() {
    let s = TestServer::start(&["hello.wat"], &[]).await;
    let mut c = connect(&s).await;
    c.write_all(
        b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let text = read_until_closed(&mut c, "upgrade").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    s.stop().await;
}

#[tokio::test]
async fn the_admin_port_cuts_off_half_sent_headers_too() {
    let s = TestServer::start(&["hello.wat"], &[]).await;
    let mut c = TcpStream::connect(s.admin.strip_prefix("http://").unwrap())
        .await
        .unwrap();
    c.write_all(b"GET /-/metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    // The side ports' header timeout (10 s) closes it.
    read_until_closed(&mut c, "half-sent headers on the admin port").await;
    s.admin_get("/-/metrics").await.expect(200, &[]);
    s.stop().await;
}

type H2Builder = hyper::client::conn::http2::Builder<hyper_util::rt::TokioExecutor>;

/// An HTTP/2 client's side of one connection: its handle for requests
/// (the client closes the connection when it is dropped), and the task
/// driving the connection, which ends when the server closes it.
type H2Client = (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
);

/// Sends `GET /hello` over an HTTP/2 connection to `s` made by `builder`:
/// the response (its head) and the client, kept open.
async fn h2_hello(
    s: &TestServer,
    builder: &H2Builder,
) -> (hyper::Response<hyper::body::Incoming>, H2Client) {
    use http_body_util::Empty;
    let io = hyper_util::rt::TokioIo::new(connect(s).await);
    let (mut send, conn) = builder
        .handshake::<_, Empty<bytes::Bytes>>(io)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(format!("{}/hello", s.base))
        .body(Empty::new())
        .unwrap();
    let r = send.send_request(req).await.unwrap();
    assert_eq!(r.status(), 200);
    (r, (send, conn))
}

/// Waits for the server to close the client's connection, the client
/// holding it open meanwhile.
async fn closed_by_the_server((send, conn): H2Client) {
    let ended = tokio::time::timeout(DEADLINE, conn).await;
    drop(send);
    assert!(
        ended.is_ok(),
        "the connection was still open {DEADLINE:?} later"
    );
}

/// An HTTP/2 connection that only sends PINGs, which hyper answers, carries
/// no request: it is closed at the idle timeout like a silent one, and does
/// not hold a connection slot for as long as its client likes.
#[tokio::test]
async fn an_http2_connection_kept_up_by_pings_alone_is_closed_when_idle() {
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioTimer};
    let s = TestServer::start(&["hello.wat"], &["--http2", "--idle-timeout", "300ms"]).await;
    let mut builder = H2Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_millis(50))
        .keep_alive_while_idle(true);
    let (r, client) = h2_hello(&s, &builder).await;
    r.into_body().collect().await.unwrap();
    // From here only PINGs, every 50 ms: the server closes it.
    closed_by_the_server(client).await;
    s.stop().await;
}

/// An HTTP/2 client that grants no window for its response's body holds
/// the response in hyper with no socket write waiting: the frame it was
/// handed counts as waiting to be written, and the connection is closed at
/// the write timeout.
#[tokio::test]
async fn an_http2_client_that_grants_no_window_meets_the_write_timeout() {
    let s = TestServer::start(&["hello.wat"], &["--http2", "--write-timeout", "300ms"]).await;
    let mut builder = H2Builder::new(hyper_util::rt::TokioExecutor::new());
    builder.initial_stream_window_size(0);
    // The head comes (it needs no window); the body never can.
    let (r, client) = h2_hello(&s, &builder).await;
    closed_by_the_server(client).await;
    drop(r);
    s.stop().await;
}

/// A response still being streamed is a request in progress, not an idle
/// connection: a body that takes longer than the idle timeout arrives
/// whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_streaming_past_the_idle_timeout_arrives_whole() {
    let s = TestServer::start(&["httpkit.wasm"], &["--idle-timeout", "300ms"]).await;
    // Its head at once, then a line every 400 ms: nothing is read or
    // written for longer than the idle timeout, three times.
    let r = s.get("/httpkit/drip/4/400").await;
    r.expect(200, &["drip 0", "drip 3"]);
    s.stop().await;
}
