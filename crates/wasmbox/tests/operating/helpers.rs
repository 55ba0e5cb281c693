//! Calls to the deploy API, and reading the access log and metrics.

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::common::{Reply, TestServer, TEST_ADMIN_TOKEN};

/// `method` on the admin listener with the right token and `headers`.
pub async fn api(
    s: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let auth = format!("Bearer {TEST_ADMIN_TOKEN}");
    let mut all = vec![("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    raw(&s.admin, method, path, &all, body.into()).await
}

/// One request to `base` with exactly `headers`.
pub async fn raw(
    base: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut b = Request::builder()
        .method(method)
        .uri(format!("{base}{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client
        .request(b.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

/// The bytes of a guest from `functions/`.
pub fn guest_bytes(file: &str) -> Bytes {
    Bytes::from(std::fs::read(crate::common::guest(file)).unwrap())
}

/// `PUT /-/admin/functions/{name}` of a guest; asserts it was accepted.
pub async fn deploy(s: &TestServer, name: &str, file: &str) -> Reply {
    let r = api(
        s,
        Method::PUT,
        &format!("/-/admin/functions/{name}"),
        &[],
        guest_bytes(file),
    )
    .await;
    assert!(r.status.is_success(), "deploy {name}: {}", r.text());
    r
}

/// `PUT /-/admin/functions/{name}/manifest`.
pub async fn put_manifest(s: &TestServer, name: &str, toml: &str) -> Reply {
    api(
        s,
        Method::PUT,
        &format!("/-/admin/functions/{name}/manifest"),
        &[],
        Bytes::from(toml.to_string()),
    )
    .await
}

/// sha256 hex of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The listing's entry for `file`.
pub async fn listed(s: &TestServer, file: &str) -> Option<serde_json::Value> {
    let r = api(s, Method::GET, "/-/admin/functions", &[], Bytes::new()).await;
    r.expect(200, &[]);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"] == file)
        .cloned()
}

/// The access log's lines once it has at least `n` (the writer is a thread
/// of its own: polled, with a deadline).
pub async fn log_lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("every access-log line is JSON"))
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the access log has {} lines, expected {n}",
            lines.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// The value of the sample `series` (full name with labels) in the metrics.
pub async fn metric(s: &TestServer, series: &str) -> Option<f64> {
    let text = s.admin_get("/-/metrics").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}
