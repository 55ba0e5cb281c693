//! Helpers the deploy API's handlers share (`deploy`, `deploy_list`):
//! blocking file-system calls off the async workers, their errors, ETags
//! and JSON answers.

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, ETAG};
use hyper::{Response, StatusCode};

use super::app::App;
use super::deploy_fs as dfs;
use super::error::{ErrorKind, HttpError};
use super::response::Body;

/// The functions directory.
pub(super) fn dir(app: &App) -> PathBuf {
    app.registry.config().dir.clone()
}

/// Runs blocking file-system work off the async workers.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    what: &'static str,
) -> Result<T, HttpError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HttpError::new(ErrorKind::Internal, format!("{what}: {e}")))?
        .map_err(|e| io_error(what, &e))
}

pub(super) fn io_error(what: &str, e: &std::io::Error) -> HttpError {
    if dfs::is_read_only(e) {
        HttpError::new(
            ErrorKind::ReadOnly,
            format!("{what}: the functions directory cannot be written ({e}); deploy through the volume instead, or mount it read-write"),
        )
    } else {
        HttpError::new(ErrorKind::Unreadable, format!("{what}: {e}")).header("retry-after", 1)
    }
}

/// The `ETag` of a file with this sha256.
pub(super) fn etag(sha: &str) -> String {
    format!("\"{sha}\"")
}

/// A JSON answer, with the `ETag` of `sha` if given.
pub(super) fn json(
    status: StatusCode,
    value: serde_json::Value,
    sha: Option<&str>,
) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string() + "\n")).into());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(v) = sha.and_then(|s| HeaderValue::from_str(&etag(s)).ok()) {
        r.headers_mut().insert(ETAG, v);
    }
    r
}
