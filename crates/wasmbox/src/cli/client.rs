//! A small HTTP client for the admin listener: one request, the bearer
//! token from WASMBOX_ADMIN_TOKEN, a deadline.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The environment variable holding the admin token (shared with `serve`).
pub const ENV_TOKEN: &str = "WASMBOX_ADMIN_TOKEN";

/// How long one request may take (an upload is compiled before the answer).
const DEADLINE: Duration = Duration::from_secs(300);

/// What went wrong before an HTTP answer came back.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad input on our side (no token, a bad URL, an unreadable file).
    #[error("{0}")]
    Usage(String),
    /// The server could not be reached or did not answer.
    #[error("{0}")]
    Unreachable(String),
}

/// An answer.
pub struct Answer {
    pub status: StatusCode,
    pub error_kind: Option<String>,
    pub etag: Option<String>,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim_end().to_string()
    }
}

/// The admin token from the environment.
pub fn token() -> Result<String, ClientError> {
    match std::env::var(ENV_TOKEN) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => Err(ClientError::Usage(format!(
            "{ENV_TOKEN} is not set: export the admin token the server was started with"
        ))),
    }
}

/// Sends one request to `base` + `path` and reads the whole answer.
pub async fn send(
    base: &str,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Bytes,
) -> Result<Answer, ClientError> {
    let base = base.trim_end_matches('/');
    if !base.starts_with("http://") {
        return Err(ClientError::Usage(format!(
            "--url {base}: give an http:// URL (the admin listener speaks plain HTTP; keep it on a private network)"
        )));
    }
    let uri: hyper::Uri = format!("{base}{path}")
        .parse()
        .map_err(|e| ClientError::Usage(format!("--url {base}: {e}")))?;
    let token = token()?;
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"));
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| ClientError::Usage(e.to_string()))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let call = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| ClientError::Unreachable(format!("cannot reach {base}: {e}")))?;
        let status = resp.status();
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (error_kind, etag) = (header("wasmbox-error"), header("etag"));
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Unreachable(format!("reading the answer from {base}: {e}")))?
            .to_bytes();
        Ok(Answer {
            status,
            error_kind,
            etag,
            body,
        })
    };
    tokio::time::timeout(DEADLINE, call).await.map_err(|_| {
        ClientError::Unreachable(format!(
            "{base} did not answer within {} s",
            DEADLINE.as_secs()
        ))
    })?
}
