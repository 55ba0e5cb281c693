//! The management endpoints under `/-/` and the reference-style health
//! port.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};

use super::app::App;
use super::error::{ErrorKind, HttpError};
use super::response::{text, Body};
use crate::metrics::GaugeValues;

/// `/-/{rest}`: live, ready, metrics, functions (GET or HEAD).
pub(super) async fn management(
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
        "metrics" => Ok(metrics(app)),
        "functions" => functions(app).await,
        _ => Err(HttpError::new(
            ErrorKind::NoRoute,
            format!("no management endpoint /-/{rest}; there are /-/live, /-/ready, /-/functions"),
        )),
    }
}

fn metrics(app: &App) -> Response<Body> {
    let body = app.metrics.render(&GaugeValues {
        admission: app.admission.snapshot(),
        capacity: app.capacity,
        memory_utilization: app.readiness.mean(),
        pool_stats: app.executor.stats(),
        per_function: app.admission.functions(),
        pool: app.engine.engine.pooling_allocator_metrics(),
        functions: (
            app.registry.held(),
            app.registry.loads(),
            app.registry.cache_hits(),
            app.registry.evictions(),
        ),
        heavy_compiles: app.registry.heavy_compiles_running(),
    });
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

async fn functions(app: &App) -> Result<Response<Body>, HttpError> {
    let names = app.registry.list().await.map_err(|e| {
        HttpError::new(
            ErrorKind::Unreadable,
            format!("cannot list the functions directory: {e}"),
        )
    })?;
    let body = serde_json::json!({ "functions": names }).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}

fn ready(app: &App) -> Response<Body> {
    let blocked = if app.admission.queue_full() {
        Some("the admission queue is full".to_string())
    } else {
        app.executor.stats().stalled()
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
