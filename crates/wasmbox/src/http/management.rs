//! The management endpoints the serving port keeps under `/-/` (the probes
//! Knative needs), the readiness answer both listeners share, and the
//! reference-style health port. Metrics and the function listing are on
//! the admin listener only (`admin`).

use hyper::{Method, Response, StatusCode};
use wasmbox_runtime::executor::all_busy;

use super::app::App;
use super::error::{ErrorKind, HttpError};
use super::response::{text, Body};

/// `/-/{rest}` on the serving port: live and ready (GET or HEAD); metrics
/// and functions answer 404 `moved-to-admin`.
pub(super) fn management(
    app: &App,
    method: &Method,
    rest: &str,
) -> Result<Response<Body>, HttpError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(HttpError::new(
            ErrorKind::MethodNotAllowed,
            format!("{method} is not allowed on /-/{rest}"),
        )
        .header("allow", "GET, HEAD"));
    }
    match rest {
        "live" => Ok(text(StatusCode::OK, "live\n")),
        "ready" => Ok(ready(app)),
        "metrics" => Err(moved(
            "/-/metrics",
            "scrape it there (no token needed unless --admin-metrics-auth)",
        )),
        "functions" => Err(moved(
            "/-/functions",
            "ask it there with `Authorization: Bearer <admin token>`",
        )),
        _ => Err(HttpError::new(
            ErrorKind::NoRoute,
            format!(
                "no management endpoint /-/{rest}; the serving port has /-/live and /-/ready \
                 (/-/metrics and /-/functions are on the admin listener, --admin-listen)"
            ),
        )),
    }
}

/// 404 for an endpoint that only the admin listener serves.
fn moved(endpoint: &str, how: &str) -> HttpError {
    HttpError::new(
        ErrorKind::MovedToAdmin,
        format!(
            "{endpoint} is not served on this port: it moved to the admin listener \
             (--admin-listen / WASMBOX_ADMIN_LISTEN, off unless set); {how}"
        ),
    )
}

/// `/-/ready`: 200, or 503 with the reason.
pub(super) fn ready(app: &App) -> Response<Body> {
    // The executor's reason first: workers that cannot set up isolation
    // also leave calls waiting in admission.
    let blocked = if app.admission.queue_full() {
        Some("the admission queue is full".to_string())
    } else if let Some(why) = app.executor.stats().stalled() {
        Some(why)
    } else {
        app.admission
            .waiting_for_running()
            .map(|(busy, waiting)| all_busy(busy, waiting))
    };
    match app.readiness.check(blocked.as_deref()) {
        Ok(()) => text(StatusCode::OK, "ready\n"),
        Err(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// The reference-compatible health port: `/live` and `/ready`.
pub fn health_probe(app: &App, path: &str) -> Response<Body> {
    match path {
        "/live" => text(StatusCode::OK, "live\n"),
        "/ready" => ready(app),
        _ => text(
            StatusCode::NOT_FOUND,
            "the health port serves /live and /ready\n",
        ),
    }
}
