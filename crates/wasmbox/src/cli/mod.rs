//! The client side of the deploy API, in the same binary:
//! `wasmbox deploy FILE [--name N] [--manifest M] --url ADMIN_URL`,
//! `wasmbox functions list --url ADMIN_URL`, `wasmbox functions rm NAME
//! --url ADMIN_URL`; the token from WASMBOX_ADMIN_TOKEN; a summary for
//! people, or the server's JSON with `--json`.
//!
//! Exit codes: 0 done; 1 the server refused (its status, `Wasmbox-Error`
//! kind and message are printed on stderr); 2 bad input here (no token, a
//! bad URL or name, an unreadable file; clap's usage errors are 2 too);
//! 3 the server could not be reached or did not answer in time.

pub mod args;
pub mod client;

use std::process::ExitCode;

use bytes::Bytes;
use hyper::Method;

pub use args::{DeployArgs, FunctionsArgs, FunctionsCommand, Target};
use client::{send, Answer, ClientError};

/// Exit code: the server refused.
pub const EXIT_REFUSED: u8 = 1;
/// Exit code: bad input here.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the server could not be reached.
pub const EXIT_UNREACHABLE: u8 = 3;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot build a tokio runtime")
}

fn fail(e: ClientError) -> ExitCode {
    eprintln!("wasmbox: {e}");
    ExitCode::from(match e {
        ClientError::Usage(_) => EXIT_USAGE,
        ClientError::Unreachable(_) => EXIT_UNREACHABLE,
    })
}

/// An answer that is not 2xx: printed on stderr, exit 1.
fn refused(what: &str, a: &Answer) -> ExitCode {
    eprintln!(
        "wasmbox: {what} refused: {} {}: {}",
        a.status.as_u16(),
        a.error_kind.as_deref().unwrap_or("-"),
        a.text()
    );
    ExitCode::from(EXIT_REFUSED)
}

fn if_match_header(v: &Option<String>) -> Vec<(&'static str, String)> {
    match v.as_deref() {
        None => Vec::new(),
        Some("none") => vec![("if-none-match", "*".to_string())],
        Some(sha) => vec![("if-match", format!("\"{}\"", sha.trim_matches('"')))],
    }
}

fn path_of(name: &str) -> String {
    format!("/-/admin/functions/{name}")
}

/// `wasmbox deploy`.
pub fn deploy(a: DeployArgs) -> ExitCode {
    let name = match &a.name {
        Some(n) => n.clone(),
        None => match a.file.file_stem().and_then(|s| s.to_str()) {
            Some(s) => s.to_string(),
            None => {
                return fail(ClientError::Usage(format!(
                    "{}: cannot make a function name from it; give --name",
                    a.file.display()
                )))
            }
        },
    };
    if wasmbox_runtime::FunctionName::validate(name.clone()).is_err() || name.contains('%') {
        return fail(ClientError::Usage(format!(
            "'{name}' is not a valid function name (letters, digits and . _ ~ + -, not starting with . or -)"
        )));
    }
    let wasm = match std::fs::read(&a.file) {
        Ok(b) => b,
        Err(e) => {
            return fail(ClientError::Usage(format!(
                "cannot read {}: {e}",
                a.file.display()
            )))
        }
    };
    let manifest = match &a.manifest {
        Some(p) => match std::fs::read(p) {
            Ok(b) => Some(b),
            Err(e) => {
                return fail(ClientError::Usage(format!(
                    "cannot read {}: {e}",
                    p.display()
                )))
            }
        },
        None => None,
    };
    let t = &a.target;
    runtime().block_on(async {
        let mut outputs = Vec::new();
        if let Some(m) = manifest {
            let path = format!("{}/manifest", path_of(&name));
            match send(&t.url, Method::PUT, &path, &[], Bytes::from(m)).await {
                Err(e) => return fail(e),
                Ok(ans) if !ans.status.is_success() => return refused("the manifest", &ans),
                Ok(ans) => outputs.push(ans),
            }
        }
        let headers = if_match_header(&a.if_match);
        match send(
            &t.url,
            Method::PUT,
            &path_of(&name),
            &headers,
            Bytes::from(wasm),
        )
        .await
        {
            Err(e) => fail(e),
            Ok(ans) if !ans.status.is_success() => refused("the deploy", &ans),
            Ok(ans) => {
                outputs.push(ans);
                for ans in &outputs {
                    if t.json {
                        println!("{}", ans.text());
                    } else {
                        println!("{}", summary(ans));
                    }
                }
                ExitCode::SUCCESS
            }
        }
    })
}

/// One line about a deploy answer.
fn summary(a: &Answer) -> String {
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
    let verb = if v["replaced"].as_bool() == Some(true) {
        "replaced"
    } else {
        "created"
    };
    let size = v["size"]
        .as_u64()
        .map(|s| format!(", {s} bytes"))
        .unwrap_or_default();
    format!(
        "{verb} {} ({}{size}), sha256 {}",
        v["name"].as_str().unwrap_or("?"),
        v["file"].as_str().unwrap_or("?"),
        v["sha256"].as_str().unwrap_or("?"),
    )
}

/// `wasmbox functions ...`.
pub fn functions(a: FunctionsArgs) -> ExitCode {
    match a.command {
        FunctionsCommand::List { target } => runtime().block_on(async {
            match send(
                &target.url,
                Method::GET,
                "/-/admin/functions",
                &[],
                Bytes::new(),
            )
            .await
            {
                Err(e) => fail(e),
                Ok(ans) if !ans.status.is_success() => refused("the listing", &ans),
                Ok(ans) if target.json => {
                    println!("{}", ans.text());
                    ExitCode::SUCCESS
                }
                Ok(ans) => {
                    print!("{}", table(&ans));
                    ExitCode::SUCCESS
                }
            }
        }),
        FunctionsCommand::Rm {
            name,
            if_match,
            target,
        } => runtime().block_on(async {
            let headers = if_match_header(&if_match);
            match send(
                &target.url,
                Method::DELETE,
                &path_of(&name),
                &headers,
                Bytes::new(),
            )
            .await
            {
                Err(e) => fail(e),
                Ok(ans) if !ans.status.is_success() => refused("the delete", &ans),
                Ok(ans) if target.json => {
                    println!("{}", ans.text());
                    ExitCode::SUCCESS
                }
                Ok(ans) => {
                    let v: serde_json::Value =
                        serde_json::from_slice(&ans.body).unwrap_or_default();
                    let files: Vec<&str> = v["removed"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|f| f.as_str()).collect())
                        .unwrap_or_default();
                    println!("removed {name} ({})", files.join(", "));
                    ExitCode::SUCCESS
                }
            }
        }),
    }
}

/// The listing as a table.
fn table(a: &Answer) -> String {
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
    let mut out = format!(
        "{:<24} {:<5} {:>10} {:<12} {:<6} {:>11} {:<20} {}\n",
        "NAME", "KIND", "SIZE", "SHA256", "LOADED", "INVOCATIONS", "LAST INVOKED", "MANIFEST"
    );
    for f in v["functions"].as_array().into_iter().flatten() {
        let last = f["last_invoked_unix"]
            .as_f64()
            .map(|t| {
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(t),
                )
                .to_string()
            })
            .unwrap_or_else(|| "never".into());
        let manifest = match &f["manifest"] {
            serde_json::Value::Null => "-".to_string(),
            m if m["valid"].as_bool() == Some(true) => "ok".to_string(),
            m => format!("INVALID: {}", m["error"].as_str().unwrap_or("?")),
        };
        let sha = f["sha256"].as_str().unwrap_or("");
        out.push_str(&format!(
            "{:<24} {:<5} {:>10} {:<12} {:<6} {:>11} {:<20} {}\n",
            f["name"].as_str().unwrap_or("?"),
            f["kind"].as_str().unwrap_or("?"),
            f["size"].as_u64().unwrap_or(0),
            &sha[..sha.len().min(12)],
            if f["loaded"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            f["invocations"].as_u64().unwrap_or(0),
            last,
            manifest
        ));
    }
    out
}
