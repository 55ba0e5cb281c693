//! HTTP routes and the mapping from every outcome to its status code.
//!
//! Routes:
//! - `GET|POST /{function}`: invoke (query `arg=` -> argv, body -> stdin,
//!   stdout -> response body);
//! - any method, `/{function}` and `/{function}/any/sub/path`, when the
//!   function is a wasi:http handler component (`handler`): the request
//!   reaches it as an HTTP request;
//! - `GET /-/live`, `GET /-/ready`: the probes (`management`). `/-/` can
//!   never be a function, because names may not start with `-`.
//!   `/-/metrics` and `/-/functions` answer 404 `moved-to-admin` here: they
//!   are served by the admin listener ([`handle_admin`], `admin`), with its
//!   bearer token for the listing.
//!
//! One invocation, top to bottom:
//! 1. [`handle`] routes by path: `/-/...` to `management`, anything else to
//!    `invoke` (GET and POST only).
//! 2. `invoke::invoke` validates the name, reads the resource headers, argv
//!    and body (`request`), lets the wire format (`compat`) turn the body
//!    into stdin, and finds the compiled function in the registry.
//! 3. `invoke::run` reserves the declared resources in admission (maybe
//!    waiting in its FIFO queue) and hands the job to a worker thread, which
//!    applies the CPU quota to its slot and runs the sandbox; the request
//!    waits for its end (`await_end`: polling briefly when it is alone).
//! 4. The outcome becomes the response: stdout through the wire format on
//!    success, or an [`HttpError`] whose [`ErrorKind::status`] is the status
//!    table of the README (`error`).

mod admin;
mod app;
mod await_end;
mod body;
mod budget;
mod compat;
mod deploy;
mod deploy_fs;
mod deploy_list;
mod deploy_util;
mod error;
mod function_config;
mod handler;
mod handler_body;
mod invoke;
mod management;
mod request;
mod response;
mod stream;

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response};

pub use admin::handle_admin;
pub use app::App;
pub use await_end::EndPoll;
pub use body::BodyRules;
pub use budget::BodyBudget;
pub use error::{ErrorKind, HttpError};
pub use management::health_probe;
pub use request::parse_resources;
pub use response::Body;

/// Entry point for every request.
///
/// Routed by the path of the request target, whatever its form (RFC 9112
/// section 3.2): an origin-form `/hello` and an absolute-form
/// `http://host/hello` both reach `hello` (the authority is not checked: one
/// server, one namespace). A method other than GET or POST is 405 with
/// `Allow` on any target, so `CONNECT host:port` and `OPTIONS *` are 405; a
/// GET or POST whose target is not a path (authority-form or `*`) is 400
/// `bad-target`.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let result = if let Some(rest) = path.strip_prefix("/-/") {
        management::management(&app, req.method(), rest)
    } else if let Some(target) = path.strip_prefix('/') {
        invoke::invoke(&app, req, target).await
    } else if !matches!(*req.method(), Method::GET | Method::POST) {
        Err(method_not_allowed(req.method()))
    } else {
        Err(HttpError::new(
            ErrorKind::BadTarget,
            format!(
                "the request target '{}' is not a path; wasmbox serves /{{function}} and /-/ endpoints",
                req.uri()
            ),
        ))
    };
    result.unwrap_or_else(|e| response::error_response(&app, e))
}

/// 405 for a method that no function route takes.
pub(super) fn method_not_allowed(method: &Method) -> HttpError {
    let message = if method == Method::CONNECT {
        "CONNECT is not allowed: wasmbox is not a proxy; use GET or POST /{function}".to_string()
    } else {
        format!("{method} is not allowed; use GET or POST")
    };
    HttpError::new(ErrorKind::MethodNotAllowed, message).header("allow", "GET, POST")
}
