//! The deploy API on the admin listener, under `/-/admin/functions`
//! (bearer token checked by the caller, `admin`):
//!
//! - `GET /-/admin/functions`: every function file with its size, sha256,
//!   manifest state, whether it is loaded, and its usage totals;
//! - `GET|PUT|DELETE /-/admin/functions/{name}`: one function's module
//!   (`PUT` body: binary `.wasm`, published as `{name}.wasm`);
//! - `GET|PUT|DELETE /-/admin/functions/{name}/manifest`: its `{name}.toml`.
//!
//! A module is compiled (through the AOT cache, on the compile lanes, with
//! the compile budget) and a manifest validated *before* it is published;
//! publication is a temporary file in the functions directory, fsync,
//! rename, fsync of the directory. A refused upload leaves the old version
//! serving. `If-Match: "<sha256>"` (or `*`) and `If-None-Match: *` make
//! concurrent deploys safe (412 when they do not hold); responses carry the
//! content's `ETag`. Changes are serialized within the process.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, ETAG};
use hyper::{Method, Request, Response, StatusCode};
use wasmbox_runtime::registry::{manifest::MAX_MANIFEST_BYTES, Manifest};
use wasmbox_runtime::{FunctionName, LoadError};

use super::app::App;
use super::deploy_fs::{self as dfs, MODULE_EXTENSIONS};
use super::deploy_list::{list, one};
use super::deploy_util::{blocking, dir, etag, json};
use super::error::{ErrorKind, HttpError};
use super::response::Body;

/// One deploy (or delete) at a time in this process.
static CHANGES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Longest a client may take to send an upload.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// `rest`: the path after `/-/admin/functions`.
pub(super) async fn handle(
    app: &App,
    req: Request<Incoming>,
    rest: &str,
) -> Result<Response<Body>, HttpError> {
    let method = req.method().clone();
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        [""] => match method {
            Method::GET | Method::HEAD => list(app).await,
            _ => Err(not_allowed(&method, "GET")),
        },
        [raw] => {
            let name = deploy_name(raw)?;
            match method {
                Method::GET | Method::HEAD => one(app, &name).await,
                Method::PUT => put_module(app, &name, req).await,
                Method::DELETE => delete_function(app, &name, &req).await,
                _ => Err(not_allowed(&method, "GET, PUT, DELETE")),
            }
        }
        [raw, "manifest"] => {
            let name = deploy_name(raw)?;
            match method {
                Method::GET | Method::HEAD => get_manifest(app, &name).await,
                Method::PUT => put_manifest(app, &name, req).await,
                Method::DELETE => delete_manifest(app, &name, &req).await,
                _ => Err(not_allowed(&method, "GET, PUT, DELETE")),
            }
        }
        _ => Err(HttpError::new(
            ErrorKind::NoRoute,
            "the deploy API serves /-/admin/functions, /-/admin/functions/{name} and /-/admin/functions/{name}/manifest",
        )),
    }
}

fn not_allowed(method: &Method, allow: &'static str) -> HttpError {
    HttpError::new(
        ErrorKind::MethodNotAllowed,
        format!("{method} is not allowed here; use {allow}"),
    )
    .header("allow", allow)
}

/// A function name as the serving path takes it, without an extension:
/// the API chooses the file (`{name}.wasm`, `{name}.toml`).
fn deploy_name(raw: &str) -> Result<String, HttpError> {
    let name = FunctionName::parse(raw)?;
    let s = name.as_str();
    if let Some((_, ext)) = s.rsplit_once('.') {
        if MODULE_EXTENSIONS.contains(&ext) || ext == "toml" {
            return Err(HttpError::new(
                ErrorKind::BadName,
                format!(
                    "give the function's bare name, without .{ext}: the deploy API picks the file"
                ),
            ));
        }
    }
    Ok(s.to_string())
}

/// Checks `If-Match` / `If-None-Match` against the current content hash.
fn preconditions<B>(req: &Request<B>, current: Option<&str>) -> Result<(), HttpError> {
    let header = |n: &str| {
        req.headers()
            .get(n)
            .map(|v| v.to_str().unwrap_or("").trim().to_string())
    };
    if let Some(m) = header("if-match") {
        let ok = match current {
            None => false,
            Some(cur) => {
                m == "*"
                    || m.split(',')
                        .map(|t| t.trim().trim_start_matches("W/"))
                        .any(|t| t == etag(cur))
            }
        };
        if !ok {
            let now = current.map_or("none (no such file)".to_string(), etag);
            return Err(HttpError::new(
                ErrorKind::PreconditionFailed,
                format!("If-Match: {m} does not match the current version: {now}; fetch it again and retry"),
            ));
        }
    }
    if let Some(m) = header("if-none-match") {
        if m == "*" && current.is_some() {
            return Err(HttpError::new(
                ErrorKind::PreconditionFailed,
                "If-None-Match: * but the file exists",
            ));
        }
    }
    Ok(())
}

/// Reads an upload of at most `limit` bytes (413 above, from
/// Content-Length when it is given).
async fn read_upload(req: Request<Incoming>, limit: u64, what: &str) -> Result<Bytes, HttpError> {
    let too_large = || {
        HttpError::new(
            ErrorKind::BodyTooLarge,
            format!("the {what} is larger than the {limit} bytes allowed"),
        )
    };
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let body = Limited::new(req.into_body(), limit as usize);
    match tokio::time::timeout(UPLOAD_TIMEOUT, body.collect()).await {
        Err(_) => Err(HttpError::new(
            ErrorKind::BodyTimeout,
            format!(
                "the {what} did not arrive within {} s",
                UPLOAD_TIMEOUT.as_secs()
            ),
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(HttpError::new(
            ErrorKind::BadBody,
            format!("reading the {what}: {e}"),
        )),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

/// `PUT /-/admin/functions/{name}`.
async fn put_module(
    app: &App,
    name: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    let limit = app.registry.config().compile.max_module_bytes;
    let _one_at_a_time = CHANGES.lock().await;
    let file = format!("{name}.wasm");
    let (d, f) = (dir(app), file.clone());
    let current = blocking(
        move || dfs::file_sha256(&d.join(f)),
        "reading the current module",
    )
    .await?;
    preconditions(&req, current.as_deref())?;
    let wasm = read_upload(req, limit, "module (--max-module-mb)").await?;
    if !wasm.starts_with(b"\0asm") {
        return Err(HttpError::new(
            ErrorKind::InvalidModule,
            "the body is not a binary WebAssembly module (it does not start with \\0asm)",
        ));
    }
    let sha = dfs::sha256_hex(&wasm);
    let size = wasm.len() as u64;
    let d = dir(app);
    // Removed when dropped unless published: also if this request is
    // dropped (its client gone) during the write, where the blocking task
    // finishes and drops its result.
    let upload = blocking(
        move || dfs::Upload::write(&d, "wasm", &wasm),
        "writing the module",
    )
    .await?;
    // Compiled (and put in the AOT cache) before anyone can see it.
    app.registry
        .check_file(&file, upload.path(), size)
        .await
        .map_err(refused)?;
    let (d, f, n) = (dir(app), file.clone(), name.to_string());
    blocking(
        move || {
            upload.publish(&d, &f)?;
            // A .cwasm or .wat of the same name would shadow or confuse it.
            for ext in ["cwasm", "wat"] {
                dfs::remove(&d, &format!("{n}.{ext}"))?;
            }
            dfs::sync_dir(&d)
        },
        "publishing the module",
    )
    .await?;
    app.registry.forget(name);
    tracing::info!(function = %file, sha256 = %sha, bytes = size, "deployed");
    let status = if current.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(json(
        status,
        serde_json::json!({
            "name": name, "file": file, "size": size, "sha256": sha,
            "replaced": current.is_some(),
        }),
        Some(&sha),
    ))
}

/// A module the loader refused: 422 with its message (a transient I/O
/// error is 503).
fn refused(e: LoadError) -> HttpError {
    match e {
        LoadError::Io { .. } => {
            HttpError::new(ErrorKind::Unreadable, e.to_string()).header("retry-after", 1)
        }
        e => HttpError::new(
            ErrorKind::InvalidModule,
            format!(
                "{e}; the module was not deployed (the previous version, if any, still serves)"
            ),
        ),
    }
}

/// `DELETE /-/admin/functions/{name}`: its module files and its manifest.
async fn delete_function<B>(
    app: &App,
    name: &str,
    req: &Request<B>,
) -> Result<Response<Body>, HttpError> {
    let _one_at_a_time = CHANGES.lock().await;
    let (d, f) = (dir(app), format!("{name}.wasm"));
    let current = blocking(move || dfs::file_sha256(&d.join(f)), "reading the module").await?;
    preconditions(req, current.as_deref())?;
    let (d, n) = (dir(app), name.to_string());
    let removed = blocking(
        move || {
            let mut removed = Vec::new();
            for ext in MODULE_EXTENSIONS.iter().chain(&["toml"]) {
                let file = format!("{n}.{ext}");
                if dfs::remove(&d, &file)? {
                    removed.push(file);
                }
            }
            dfs::sync_dir(&d)?;
            Ok(removed)
        },
        "deleting the function",
    )
    .await?;
    app.registry.forget(name);
    app.manifests.forget(name);
    if removed.is_empty() {
        return Err(HttpError::new(
            ErrorKind::NotFound,
            format!("no function {name} in the functions directory"),
        ));
    }
    tracing::info!(function = %name, ?removed, "deleted");
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "name": name, "removed": removed }),
        None,
    ))
}

/// `PUT /-/admin/functions/{name}/manifest`.
async fn put_manifest(
    app: &App,
    name: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    let _one_at_a_time = CHANGES.lock().await;
    let file = format!("{name}.toml");
    let (d, f) = (dir(app), file.clone());
    let current = blocking(
        move || dfs::file_sha256(&d.join(f)),
        "reading the current manifest",
    )
    .await?;
    preconditions(&req, current.as_deref())?;
    let body = read_upload(req, MAX_MANIFEST_BYTES, "manifest").await?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| HttpError::new(ErrorKind::InvalidManifest, "the manifest is not UTF-8"))?;
    Manifest::parse(text, app.manifests.bounds()).map_err(|reason| {
        HttpError::new(
            ErrorKind::InvalidManifest,
            format!("the manifest is invalid: {reason}; it was not deployed"),
        )
    })?;
    let sha = dfs::sha256_hex(&body);
    let (d, f) = (dir(app), file.clone());
    blocking(
        move || dfs::Upload::write(&d, "toml", &body)?.publish(&d, &f),
        "publishing the manifest",
    )
    .await?;
    app.manifests.forget(name);
    tracing::info!(manifest = %file, sha256 = %sha, "deployed");
    let status = if current.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(json(
        status,
        serde_json::json!({ "name": name, "file": file, "sha256": sha, "replaced": current.is_some() }),
        Some(&sha),
    ))
}

/// `GET /-/admin/functions/{name}/manifest`: the text, with its ETag.
async fn get_manifest(app: &App, name: &str) -> Result<Response<Body>, HttpError> {
    let path = dir(app).join(format!("{name}.toml"));
    let text = blocking(
        move || match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        },
        "reading the manifest",
    )
    .await?
    .ok_or_else(|| {
        HttpError::new(
            ErrorKind::NotFound,
            format!("function {name} has no manifest ({name}.toml)"),
        )
    })?;
    let sha = dfs::sha256_hex(&text);
    let mut r = Response::new(Full::new(Bytes::from(text)).into());
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/toml"));
    if let Ok(v) = HeaderValue::from_str(&etag(&sha)) {
        h.insert(ETAG, v);
    }
    Ok(r)
}

/// `DELETE /-/admin/functions/{name}/manifest`.
async fn delete_manifest<B>(
    app: &App,
    name: &str,
    req: &Request<B>,
) -> Result<Response<Body>, HttpError> {
    let _one_at_a_time = CHANGES.lock().await;
    let (d, f) = (dir(app), format!("{name}.toml"));
    let current = blocking(move || dfs::file_sha256(&d.join(f)), "reading the manifest").await?;
    preconditions(req, current.as_deref())?;
    let (d, f) = (dir(app), format!("{name}.toml"));
    let removed = blocking(
        move || {
            let r = dfs::remove(&d, &f)?;
            dfs::sync_dir(&d)?;
            Ok(r)
        },
        "deleting the manifest",
    )
    .await?;
    app.manifests.forget(name);
    if !removed {
        return Err(HttpError::new(
            ErrorKind::NotFound,
            format!("function {name} has no manifest ({name}.toml)"),
        ));
    }
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "name": name, "removed": [format!("{name}.toml")] }),
        None,
    ))
}
