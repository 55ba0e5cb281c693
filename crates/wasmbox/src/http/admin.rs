//! The admin listener's routes (`--admin-listen`): `/-/metrics`,
//! `/-/functions`, the deploy API under `/-/admin/functions` (`deploy`),
//! `/-/live`, `/-/ready`, nothing else (no invocations).
//!
//! Access:
//! - `/-/live`, `/-/ready`: open (probes);
//! - `/-/metrics`: open, so that Prometheus can scrape it from its pod
//!   annotations; with `--admin-metrics-auth`, like `/-/functions`;
//! - `/-/functions` and `/-/admin/functions...`: `Authorization: Bearer
//!   <admin token>`. No header, another
//!   scheme or a wrong token: 401 with `WWW-Authenticate: Bearer` (RFC 6750);
//!   no token configured: 403 `admin-token-not-configured`, whatever is sent.
//!
//! Errors here are in wasmbox's own words even under `--compat reference`:
//! the clients are operators' tools.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use super::app::App;
use super::error::{ErrorKind, HttpError};
use super::management::ready;
use super::response::{plain_error_response, text, Body};
use crate::config::AdminConfig;
use crate::metrics::GaugeValues;

/// The realm sent in `WWW-Authenticate`.
const REALM: &str = "wasmbox-admin";

/// Entry point for every request on the admin listener.
pub async fn handle_admin(
    app: &App,
    admin: &AdminConfig,
    req: Request<Incoming>,
) -> Response<Body> {
    let result = match req.uri().path().strip_prefix(DEPLOY_PREFIX) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            let rest = rest.to_string();
            match authorize(admin, &req, DEPLOY_PREFIX) {
                Ok(()) => super::deploy::handle(app, req, &rest).await,
                Err(e) => Err(e),
            }
        }
        _ => route(app, admin, &req).await,
    };
    result.unwrap_or_else(plain_error_response)
}

/// Where the deploy API (`deploy`) lives.
const DEPLOY_PREFIX: &str = "/-/admin/functions";

async fn route<B>(
    app: &App,
    admin: &AdminConfig,
    req: &Request<B>,
) -> Result<Response<Body>, HttpError> {
    let path = req.uri().path();
    let endpoint = match path {
        "/-/live" | "/-/ready" | "/-/metrics" | "/-/functions" => path,
        _ => {
            return Err(HttpError::new(
                ErrorKind::NoRoute,
                format!(
                    "the admin listener serves /-/metrics, /-/functions, /-/admin/functions, \
                     /-/live and /-/ready, not {path}; functions are invoked on the serving port"
                ),
            ))
        }
    };
    let method = req.method();
    if method != Method::GET && method != Method::HEAD {
        return Err(HttpError::new(
            ErrorKind::MethodNotAllowed,
            format!("{method} is not allowed on {endpoint}"),
        )
        .header("allow", "GET, HEAD"));
    }
    match endpoint {
        "/-/live" => Ok(text(StatusCode::OK, "live\n")),
        "/-/ready" => Ok(ready(app)),
        "/-/metrics" => {
            if admin.metrics_auth {
                authorize(admin, req, endpoint)?;
            }
            Ok(metrics(app))
        }
        _ => {
            authorize(admin, req, endpoint)?;
            functions(app).await
        }
    }
}

/// Checks `Authorization: Bearer <token>` against the admin token.
fn authorize<B>(admin: &AdminConfig, req: &Request<B>, endpoint: &str) -> Result<(), HttpError> {
    let Some(token) = &admin.token else {
        return Err(HttpError::new(
            ErrorKind::AdminTokenNotConfigured,
            format!(
                "{endpoint} needs the admin token, and none is configured: start wasmbox with \
                 --admin-token-file PATH or WASMBOX_ADMIN_TOKEN"
            ),
        ));
    };
    let unauthorized = |message: String, invalid: bool| {
        let challenge = if invalid {
            format!("Bearer realm=\"{REALM}\", error=\"invalid_token\"")
        } else {
            format!("Bearer realm=\"{REALM}\"")
        };
        HttpError::new(ErrorKind::Unauthorized, message).header("www-authenticate", challenge)
    };
    let mut values = req.headers().get_all(AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(unauthorized(
            format!("{endpoint} needs one `Authorization: Bearer <admin token>` header"),
            false,
        ));
    };
    // The scheme is case-insensitive (RFC 9110 section 11.1); one space.
    let given = value.as_bytes();
    if given.eq_ignore_ascii_case(b"bearer") {
        return Err(unauthorized(
            format!("{endpoint}: `Authorization: Bearer` carries no token"),
            false,
        ));
    }
    let credentials = match given.split_at_checked(7) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => rest,
        _ => {
            return Err(unauthorized(
                format!(
                "{endpoint} needs `Authorization: Bearer <admin token>` (another scheme was sent)"
            ),
                false,
            ))
        }
    };
    if token.matches(credentials) {
        Ok(())
    } else {
        Err(unauthorized(
            "the bearer token is not the admin token".to_string(),
            true,
        ))
    }
}

fn metrics(app: &App) -> Response<Body> {
    app.accounting.sweep();
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
        front: (
            app.connections.load(std::sync::atomic::Ordering::Relaxed),
            app.body_budget.used(),
            app.body_budget.max(),
        ),
        heavy_compiles: app.registry.heavy_compiles_running(),
        prewarm_scans: app.registry.prewarm_scans(),
    });
    let mut r = Response::new(Full::new(Bytes::from(body)).into());
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

async fn functions(app: &App) -> Result<Response<Body>, HttpError> {
    let described = app.registry.describe().await.map_err(|e| {
        HttpError::new(
            ErrorKind::Unreadable,
            format!("cannot list the functions directory: {e}"),
        )
    })?;
    let names: Vec<&str> = described.iter().map(|d| d.name.as_str()).collect();
    let details: Vec<serde_json::Value> = described
        .iter()
        .map(|d| serde_json::json!({ "name": d.name, "kind": d.kind, "world": d.world }))
        .collect();
    let body = serde_json::json!({ "functions": names, "details": details }).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)).into());
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}
