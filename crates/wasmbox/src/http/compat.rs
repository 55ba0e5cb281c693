//! The wire formats, as rules of [`Compat`]: how a request body becomes
//! stdin, how stdout becomes the response body, how a failure is worded,
//! and which extra headers every response carries.
//!
//! - `Compat::None`, wasmbox's own: the body is stdin as is; stdout is the
//!   body as is (`text/plain` when it is UTF-8, else
//!   `application/octet-stream`); no extra headers.
//! - `Compat::Reference`, the reference prototype's: a POST body is JSON
//!   `{"parameter": "<string>"}` whose string is stdin; the response body is
//!   `WASM output: ` and stdout; a failure is `WASM output: Failed to run
//!   WASM module: ` and the message; every response carries
//!   `Cgroup-Creation-Time`, `Cgroup-Assign-Time`, `Execution-Time` (ms),
//!   `Num-Current-Requests` and `Pod`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::Method;

use super::app::App;
use super::error::{ErrorKind, HttpError};
use crate::config::Compat;

const TEXT: &str = "text/plain; charset=utf-8";
const BINARY: &str = "application/octet-stream";
/// What the reference puts before stdout in a response body.
const REFERENCE_OUTPUT: &str = "WASM output: ";
/// What the reference puts before the message of a failure.
const REFERENCE_FAILURE: &str = "WASM output: Failed to run WASM module: ";

/// The phases the reference headers report, zero for a request that did not
/// run.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Phases {
    /// Applying the CPU quota to the worker (the reference's cgroup assignment).
    pub isolation: Duration,
    /// Instantiation and execution.
    pub execution: Duration,
}

impl Compat {
    /// The guest's stdin for a request with this method and body.
    pub(super) fn stdin(self, method: &Method, body: Bytes) -> Result<Bytes, HttpError> {
        match self {
            Compat::Reference if method == Method::POST => reference_stdin(&body),
            _ => Ok(body),
        }
    }

    /// The response body and its content type for the guest's stdout.
    pub(super) fn success_body(self, stdout: Bytes) -> (Bytes, &'static str) {
        match self {
            Compat::Reference => {
                let mut b = REFERENCE_OUTPUT.as_bytes().to_vec();
                b.extend_from_slice(&stdout);
                (Bytes::from(b), TEXT)
            }
            Compat::None if std::str::from_utf8(&stdout).is_ok() => (stdout, TEXT),
            Compat::None => (stdout, BINARY),
        }
    }

    /// The response body for a failure with this message.
    pub(super) fn failure_body(self, message: &str) -> String {
        let prefix = match self {
            Compat::Reference => REFERENCE_FAILURE,
            Compat::None => "",
        };
        format!("{prefix}{message}\n")
    }

    /// Adds the headers this format puts on every response.
    pub(super) fn add_headers(self, h: &mut HeaderMap, app: &App, phases: Phases) {
        if self != Compat::Reference {
            return;
        }
        let ms = |d: Duration| HeaderValue::from(d.as_millis() as u64);
        h.insert(
            HeaderName::from_static("cgroup-creation-time"),
            ms(Duration::ZERO),
        );
        h.insert(
            HeaderName::from_static("cgroup-assign-time"),
            ms(phases.isolation),
        );
        h.insert(
            HeaderName::from_static("execution-time"),
            ms(phases.execution),
        );
        h.insert(
            HeaderName::from_static("num-current-requests"),
            HeaderValue::from(app.in_flight.load(Ordering::Relaxed)),
        );
        if let Ok(v) = HeaderValue::from_str(&app.pod) {
            h.insert(HeaderName::from_static("pod"), v);
        }
    }
}

/// The reference's POST body: `{"parameter": "<string>"}` -> stdin.
fn reference_stdin(body: &[u8]) -> Result<Bytes, HttpError> {
    #[derive(serde::Deserialize)]
    struct Param {
        parameter: String,
    }
    if body.is_empty() {
        return Ok(Bytes::new());
    }
    serde_json::from_slice::<Param>(body)
        .map(|p| Bytes::from(p.parameter))
        .map_err(|e| {
            HttpError::new(
                ErrorKind::BadBody,
                format!("body must be JSON {{\"parameter\": \"<string>\"}} in reference mode: {e}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_format_wraps_stdin_stdout_and_failures() {
        let r = Compat::Reference;
        let body = Bytes::from_static(br#"{"parameter": "hi"}"#);
        assert_eq!(r.stdin(&Method::POST, body.clone()).unwrap(), "hi");
        assert_eq!(r.stdin(&Method::GET, body.clone()).unwrap(), body);
        assert_eq!(r.stdin(&Method::POST, Bytes::new()).unwrap(), "");
        let e = r
            .stdin(&Method::POST, Bytes::from_static(b"hi"))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadBody);
        assert_eq!(
            r.success_body(Bytes::from_static(b"out")),
            (Bytes::from_static(b"WASM output: out"), TEXT)
        );
        assert_eq!(
            r.failure_body("boom"),
            "WASM output: Failed to run WASM module: boom\n"
        );
    }

    #[test]
    fn own_format_passes_bytes_through() {
        let n = Compat::None;
        let body = Bytes::from_static(br#"{"parameter": "hi"}"#);
        assert_eq!(n.stdin(&Method::POST, body.clone()).unwrap(), body);
        assert_eq!(
            n.success_body(Bytes::from_static(b"out")),
            (Bytes::from_static(b"out"), TEXT)
        );
        assert_eq!(
            n.success_body(Bytes::from_static(b"\xff")),
            (Bytes::from_static(b"\xff"), BINARY)
        );
        assert_eq!(n.failure_body("boom"), "boom\n");
    }
}
