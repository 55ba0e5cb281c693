//! How a response is built: the body type, plain-text responses, and the
//! error response every failure becomes.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use super::app::App;
use super::compat::Phases;
use super::error::HttpError;

pub use super::stream::Body;

/// A plain-text response.
pub(super) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The response for `e` in wasmbox's own words, whatever the wire format:
/// its status, its message as the body, `Wasmbox-Error`, its extra headers.
/// For the admin listener, whose clients are operators' tools, not the
/// reference's.
pub(super) fn plain_error_response(e: HttpError) -> Response<Body> {
    let body = format!("{}\n", e.message);
    with_error_headers(e, body)
}

/// The response for `e`: its status, its message as the body (as the wire
/// format words failures), `Wasmbox-Error`, and its extra headers.
pub(super) fn error_response(app: &App, e: HttpError) -> Response<Body> {
    let body = app.compat.failure_body(&e.message);
    let mut r = with_error_headers(e, body);
    app.compat
        .add_headers(r.headers_mut(), app, Phases::default());
    r
}

/// `body` with `e`'s status, `Wasmbox-Error` and extra headers.
fn with_error_headers(e: HttpError, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = text(e.kind.status(), body);
    let h = r.headers_mut();
    h.insert(
        HeaderName::from_static("wasmbox-error"),
        HeaderValue::from_static(e.kind.as_str()),
    );
    for (k, v) in e.headers {
        h.insert(k, v);
    }
    r
}
