//! Every request-target form of RFC 9112 §3.2 sent over a raw TCP socket to
//! a real server: origin-form (`/hello`) is the normal case; authority-form
//! (`CONNECT host:port`), asterisk-form (`OPTIONS *`) and absolute-form
//! (`GET http://host/hello`) each get a precise answer and never take the
//! connection down without one.

mod common;

use std::time::Duration;

use common::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What came back for one raw request.
struct Raw {
    status_line: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request_line` (plus a Host header and `Connection: close`) and
/// reads the whole response, up to a deadline.
async fn send(s: &TestServer, request_line: &str) -> Raw {
    let addr = s.base.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("{request_line}\r\nHost: example.com\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut bytes))
        .await
        .unwrap_or_else(|_| panic!("{request_line}: no complete response within 30 s"))
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| {
        panic!("{request_line}: the connection closed without a response (got {text:?})")
    });
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Raw {
        status_line,
        headers,
        body: body.to_string(),
    }
}

#[track_caller]
fn expect(r: &Raw, status_line: &str, error: Option<&str>, allow: Option<&str>, words: &[&str]) {
    assert_eq!(r.status_line, status_line, "body: {}", r.body);
    assert_eq!(r.header("wasmbox-error"), error, "body: {}", r.body);
    assert_eq!(r.header("allow"), allow, "body: {}", r.body);
    for w in words {
        assert!(r.body.contains(w), "expected {w:?} in body: {}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_405_with_allow_not_a_dead_connection() {
    let s = TestServer::start(&["hello.wat"], &[]).await;
    let r = send(&s, "CONNECT example.com:443 HTTP/1.1").await;
    expect(
        &r,
        "HTTP/1.1 405 Method Not Allowed",
        Some("method-not-allowed"),
        Some("GET, POST"),
        &["CONNECT is not allowed", "not a proxy"],
    );
    // The server is unharmed.
    s.get("/hello").await.expect(200, &["Hello from wasmbox!"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_asterisk_is_405_with_allow() {
    let s = TestServer::start(&[], &[]).await;
    let r = send(&s, "OPTIONS * HTTP/1.1").await;
    expect(
        &r,
        "HTTP/1.1 405 Method Not Allowed",
        Some("method-not-allowed"),
        Some("GET, POST"),
        &["OPTIONS is not allowed"],
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_is_routed_by_its_path() {
    let s = TestServer::start(&["hello.wat"], &[]).await;
    let r = send(&s, "GET http://example.com/hello HTTP/1.1").await;
    expect(&r, "HTTP/1.1 200 OK", None, None, &["Hello from wasmbox!"]);
    let r = send(&s, "GET http://example.com/-/live HTTP/1.1").await;
    expect(&r, "HTTP/1.1 200 OK", None, None, &["live"]);
    let r = send(&s, "GET http://example.com/nosuch HTTP/1.1").await;
    expect(
        &r,
        "HTTP/1.1 404 Not Found",
        Some("not-found"),
        None,
        &["nosuch"],
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authority_or_asterisk_form_with_get_or_post_is_400() {
    let s = TestServer::start(&["hello.wat"], &[]).await;
    for line in [
        "GET example.com:443 HTTP/1.1",
        "POST example.com:443 HTTP/1.1",
        "GET * HTTP/1.1",
    ] {
        let r = send(&s, line).await;
        expect(
            &r,
            "HTTP/1.1 400 Bad Request",
            Some("bad-target"),
            None,
            &["request target", "/{function}"],
        );
    }
    // A PUT to an authority is refused for its method, like a PUT anywhere.
    let r = send(&s, "PUT example.com:443 HTTP/1.1").await;
    expect(
        &r,
        "HTTP/1.1 405 Method Not Allowed",
        Some("method-not-allowed"),
        Some("GET, POST"),
        &["PUT is not allowed"],
    );
    s.get("/hello").await.expect(200, &["Hello from wasmbox!"]);
    s.stop().await;
}
