//! A wasi:http handler's request body, over real HTTP against the real
//! server with the `httpkit` guest built from source: past its first
//! 64 KiB the body reaches the guest while the client is still sending it,
//! under the limits a command's stdin has, and a stalled upload holds no
//! more of the body budget than that first part.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::TestServer;
use hyper::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KIT: &[&str] = &["httpkit.wasm"];

/// Longest any single step of these tests may take before it fails.
const STEP: Duration = Duration::from_secs(30);

async fn connect(s: &TestServer) -> TcpStream {
    TcpStream::connect(s.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads from `c` into `seen` until `done(seen)` holds; fails the test
/// after [`STEP`] or if the server closes first.
async fn read_until(
    c: &mut TcpStream,
    seen: &mut Vec<u8>,
    what: &str,
    done: impl Fn(&[u8]) -> bool,
) {
    let wait = async {
        let mut buf = vec![0u8; 65536];
        while !done(seen) {
            let n = c.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "the server closed before {what}: {}",
                String::from_utf8_lossy(seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(STEP, wait).await.unwrap_or_else(|_| {
        panic!(
            "no {what} within {STEP:?}: {}",
            String::from_utf8_lossy(seen)
        )
    });
}

fn count(bytes: &[u8], b: u8) -> usize {
    bytes.iter().filter(|x| **x == b).count()
}

/// Writes one chunk of a chunked body.
async fn chunk(c: &mut TcpStream, data: &[u8]) {
    c.write_all(format!("{:x}\r\n", data.len()).as_bytes())
        .await
        .unwrap();
    c.write_all(data).await.unwrap();
    c.write_all(b"\r\n").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_body_reaches_the_handler_while_the_client_still_sends_it() {
    let s = TestServer::start(KIT, &[]).await;
    let mut c = connect(&s).await;
    let head = "POST /httpkit/pipe HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n";
    c.write_all(head.as_bytes()).await.unwrap();
    // More than the part read before admission; `z` is no hex digit, so
    // chunk-size lines never count as body.
    chunk(&mut c, &[b'z'; 70_000]).await;
    let mut seen = Vec::new();
    // The guest answers and echoes this part before the body has ended.
    read_until(&mut c, &mut seen, "the first part echoed", |b| {
        count(b, b'z') >= 70_000
    })
    .await;
    assert!(
        seen.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&seen[..40])
    );
    chunk(&mut c, &[b'y'; 1000]).await;
    c.write_all(b"0\r\n\r\n").await.unwrap();
    read_until(&mut c, &mut seen, "the end of the response", |b| {
        b.ends_with(b"0\r\n\r\n")
    })
    .await;
    assert_eq!(count(&seen, b'y'), 1000);
    assert_eq!(count(&seen, b'z'), 70_000);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_after_admission_gets_408_and_frees_the_worker() {
    let s = TestServer::start(KIT, &["--body-timeout", "1s", "--workers", "1"]).await;
    let mut c = connect(&s).await;
    let head = "POST /httpkit HTTP/1.1\r\nhost: x\r\ncontent-length: 200000\r\n\r\n";
    c.write_all(head.as_bytes()).await.unwrap();
    c.write_all(&[b'q'; 100_000]).await.unwrap();
    // ... and nothing more: the guest's read fails at the body timeout, it
    // traps, and the client gets the limit it hit, not a 500.
    let mut seen = Vec::new();
    read_until(&mut c, &mut seen, "a response", |b| {
        b.windows(4).any(|w| w == b"\r\n\r\n")
    })
    .await;
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    // Server-Timing: the guest ran (a body refused at the door has none).
    assert!(text.contains("server-timing:"), "{text}");
    read_until(&mut c, &mut seen, "the error message", |b| {
        String::from_utf8_lossy(b).contains("--body-timeout")
    })
    .await;
    // The one worker is free again.
    s.get("/httpkit/status/204").await.expect(204, &[]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_past_the_limit_while_streaming_gets_413() {
    let s = TestServer::start(KIT, &["--max-body-bytes", "150000"]).await;
    let mut c = connect(&s).await;
    let head = "POST /httpkit HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n";
    c.write_all(head.as_bytes()).await.unwrap();
    chunk(&mut c, &[b'q'; 100_000]).await;
    chunk(&mut c, &[b'q'; 100_000]).await;
    let mut seen = Vec::new();
    read_until(&mut c, &mut seen, "the limit's message", |b| {
        String::from_utf8_lossy(b).contains("150000 bytes")
    })
    .await;
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("body-too-large"), "{text}");
    assert!(
        text.contains("server-timing:"),
        "the guest did not run: {text}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_holds_only_its_first_part_of_the_body_budget() {
    // A budget of 2,000,000 bytes: a stalled upload that reserved all of
    // its declared 1,900,000 would leave no room for the second upload.
    let s = TestServer::start(
        KIT,
        &[
            "--max-body-bytes",
            "2000000",
            "--max-buffered-mb",
            "1",
            "--queue-timeout",
            "2s",
        ],
    )
    .await;
    let mut stalled = connect(&s).await;
    let head = "POST /httpkit/pipe HTTP/1.1\r\nhost: x\r\ncontent-length: 1900000\r\n\r\n";
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(&[b'z'; 100_000]).await.unwrap();
    let mut seen = Vec::new();
    read_until(&mut stalled, &mut seen, "the stalled upload's echo", |b| {
        count(b, b'z') >= 100_000
    })
    .await;
    let body = Bytes::from(vec![b'u'; 1_900_000]);
    let r = s
        .request(Method::POST, "/httpkit", &[("memory-request", "64")], body)
        .await;
    r.expect(200, &["body: 1900000 bytes"]);
    drop(stalled);
    s.stop().await;
}
