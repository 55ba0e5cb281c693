//! The deploy API's listing: `GET /-/admin/functions` and
//! `GET /-/admin/functions/{name}`: every function file with its hash, its
//! manifest's state, whether it is loaded, and its usage totals.

use std::path::Path;

use hyper::{Response, StatusCode};
use wasmbox_runtime::registry::{read_manifest, ServerBounds};
use wasmbox_runtime::FunctionName;

use super::app::App;
use super::deploy_fs::{self as dfs, FileInfo, MODULE_EXTENSIONS};
use super::deploy_util::{blocking, dir, json};
use super::error::{ErrorKind, HttpError};
use super::response::Body;

/// A listing entry: the file, its manifest's state, whether it is loaded,
/// and its usage totals.
fn entry(app: &App, info: &FileInfo, manifest: serde_json::Value) -> serde_json::Value {
    let stats = app.accounting.stats(&info.file);
    serde_json::json!({
        "name": info.name,
        "file": info.file,
        "kind": info.kind,
        "size": info.size,
        "sha256": info.sha256,
        "modified_unix": info.modified_unix,
        "manifest": manifest,
        "loaded": app.registry.is_loaded(&info.file),
        "invocations": stats.as_ref().map_or(0, |s| s.invocations),
        "outcomes": stats.as_ref().map(|s| &s.outcomes),
        "last_invoked_unix": stats.as_ref().and_then(|s| s.last_invoked_unix),
        "cpu_seconds": stats.as_ref().map_or(0.0, |s| s.cpu_seconds),
        "compile_seconds": stats.as_ref().map_or(0.0, |s| s.compile_seconds),
    })
}

/// The manifest state of `stem` in `dir` (blocking).
fn manifest_state(dir: &Path, stem: &str, app_bounds: &ServerBounds) -> serde_json::Value {
    let file = format!("{stem}.toml");
    match read_manifest(&dir.join(&file), &file, app_bounds) {
        Ok(None) => serde_json::Value::Null,
        Ok(Some(_)) => serde_json::json!({ "file": file, "valid": true }),
        Err(e) => serde_json::json!({ "file": file, "valid": false, "error": e.to_string() }),
    }
}

/// `GET /-/admin/functions`.
pub(super) async fn list(app: &App) -> Result<Response<Body>, HttpError> {
    let (d, bounds) = (dir(app), *app.manifests.bounds());
    let files = blocking(
        move || {
            let files = dfs::list(&d, |f| FunctionName::validate(f.to_string()).is_ok())?;
            Ok(files
                .into_iter()
                .map(|f| {
                    let m = manifest_state(&d, &f.name, &bounds);
                    (f, m)
                })
                .collect::<Vec<_>>())
        },
        "listing the functions directory",
    )
    .await?;
    let entries: Vec<_> = files
        .iter()
        .map(|(f, m)| entry(app, f, m.clone()))
        .collect();
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "functions": entries }),
        None,
    ))
}

/// `GET /-/admin/functions/{name}`: its module files' entries.
pub(super) async fn one(app: &App, name: &str) -> Result<Response<Body>, HttpError> {
    let (d, n, bounds) = (dir(app), name.to_string(), *app.manifests.bounds());
    let files = blocking(
        move || {
            let mut out = Vec::new();
            for ext in MODULE_EXTENSIONS {
                if let Some(f) = dfs::info(&d, &n, ext)? {
                    out.push(f);
                }
            }
            let m = manifest_state(&d, &n, &bounds);
            Ok((out, m))
        },
        "reading the function",
    )
    .await?;
    let (files, manifest) = files;
    let Some(first) = files.iter().find(|f| f.kind == "wasm").or(files.first()) else {
        return Err(HttpError::new(
            ErrorKind::NotFound,
            format!("no function {name} in the functions directory"),
        ));
    };
    let sha = first.sha256.clone();
    let entries: Vec<_> = files
        .iter()
        .map(|f| entry(app, f, manifest.clone()))
        .collect();
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "name": name, "files": entries }),
        Some(&sha),
    ))
}
