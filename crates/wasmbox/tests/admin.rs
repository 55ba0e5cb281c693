//! Management off the public path: a real `wasmbox serve` process, real
//! HTTP over loopback. `/-/metrics` and `/-/functions` are not on the
//! serving port (404 `moved-to-admin`); the admin listener serves them, the
//! listing only with the bearer token; a bad token file stops startup;
//! `--check-config` and the log never show the token.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use common::{free_port, free_ports};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn functions_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for g in ["hello.wat", "echo.wasm"] {
        std::fs::copy(common::guest(g), dir.path().join(g)).unwrap();
    }
    dir
}

fn wasmbox() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wasmbox"));
    c.env_clear().env("LOG_LEVEL", "debug");
    c
}

/// A `wasmbox serve` process with its stderr collected; SIGTERM on drop.
struct Served {
    child: Child,
    port: u16,
    admin: u16,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

/// Starts `wasmbox serve` with an admin listener, `extra` flags and `env`,
/// and waits until it serves.
fn serve(extra: &[&str], env: &[(&str, &str)]) -> Served {
    let dir = functions_dir();
    let [port, admin] = free_ports();
    let mut cmd = wasmbox();
    cmd.args(["serve", "--host", "127.0.0.1", "--cpu-isolation", "none"])
        .args(["--port", &port.to_string()])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .arg("--functions")
        .arg(dir.path())
        .args(extra)
        .envs(env.iter().copied())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let log = Arc::new(Mutex::new(Vec::new()));
    for line in lines.by_ref() {
        let line = line.unwrap();
        let serving = line.contains("wasmbox serving");
        log.lock().unwrap().push(line);
        if serving {
            break;
        }
    }
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("wasmbox serving")),
        "wasmbox did not start:\n{}",
        log.lock().unwrap().join("\n")
    );
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    Served {
        child,
        port,
        admin,
        log,
        _dir: dir,
    }
}

impl Served {
    /// SIGTERM, wait, and the whole log.
    fn stop(mut self) -> String {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert_eq!(self.child.wait().unwrap().code(), Some(0));
        // The reader thread sees EOF once the process is gone.
        std::thread::sleep(std::time::Duration::from_millis(100));
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response: status, lower-cased head, body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
    }
    #[track_caller]
    fn expect(&self, status: u16, error: Option<&str>, words: &[&str]) {
        assert_eq!(self.status, status, "{}\n{}", self.head, self.body);
        assert_eq!(self.header("wasmbox-error"), error, "{}", self.head);
        for w in words {
            assert!(self.body.contains(w), "expected {w:?} in: {}", self.body);
        }
    }
}

/// One HTTP/1.1 request with `headers` (name, value).
fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    std::io::Read::read_to_string(&mut s, &mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    Answer {
        status: head.split(' ').nth(1).unwrap().parse().unwrap(),
        // Header names lower-cased; values as sent.
        head: head
            .lines()
            .map(|l| match l.split_once(": ") {
                Some((k, v)) => format!("{}: {v}", k.to_lowercase()),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        body: body.to_string(),
    }
}

fn get(port: u16, path: &str) -> Answer {
    request(port, "GET", path, &[])
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn metrics_and_listing_are_on_the_admin_listener_only() {
    let s = serve(&[], &[("WASMBOX_ADMIN_TOKEN", TOKEN)]);
    // The serving port: invocations and the probes, nothing else.
    get(s.port, "/hello").expect(200, None, &["Hello from wasmbox!"]);
    get(s.port, "/-/live").expect(200, None, &["live"]);
    get(s.port, "/-/ready").expect(200, None, &["ready"]);
    for endpoint in ["/-/metrics", "/-/functions"] {
        // Not even with the token: the serving port is public.
        for headers in [vec![], vec![("authorization", bearer(TOKEN))]] {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            request(s.port, "GET", endpoint, &h).expect(
                404,
                Some("moved-to-admin"),
                &[
                    endpoint,
                    "is not served on this port: it moved to the admin listener",
                    "--admin-listen",
                ],
            );
        }
    }
    // The admin listener: probes and metrics open, no invocations.
    get(s.admin, "/-/live").expect(200, None, &["live"]);
    get(s.admin, "/-/ready").expect(200, None, &["ready"]);
    let m = get(s.admin, "/-/metrics");
    m.expect(
        200,
        None,
        &[r#"wasmbox_invocations_total{function="hello.wat",outcome="ok"} 1"#],
    );
    assert!(
        m.header("content-type").unwrap().contains("openmetrics"),
        "{}",
        m.head
    );
    get(s.admin, "/hello").expect(404, Some("no-route"), &["serving port"]);
    get(s.admin, "/-/nope").expect(404, Some("no-route"), &["/-/metrics, /-/functions"]);
    let r = request(s.admin, "POST", "/-/functions", &[]);
    r.expect(405, Some("method-not-allowed"), &[]);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    s.stop();
}

#[test]
fn listing_needs_the_right_bearer_token_which_is_never_logged() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let s = serve(&["--admin-token-file", file.to_str().unwrap()], &[]);
    let listing = |auth: Option<&str>| match auth {
        Some(a) => request(s.admin, "GET", "/-/functions", &[("authorization", a)]),
        None => get(s.admin, "/-/functions"),
    };

    let none = listing(None);
    none.expect(
        401,
        Some("unauthorized"),
        &["Authorization: Bearer <admin token>"],
    );
    assert_eq!(
        none.header("www-authenticate"),
        Some(r#"Bearer realm="wasmbox-admin""#)
    );
    let same_length_wrong = "0123456789abcdef0123456789abcdeX";
    assert_eq!(same_length_wrong.len(), TOKEN.len());
    for wrong in [
        same_length_wrong.to_string(),
        "short".to_string(),
        format!("{TOKEN}0"),
    ] {
        let r = listing(Some(&bearer(&wrong)));
        r.expect(401, Some("unauthorized"), &["not the admin token"]);
        assert_eq!(
            r.header("www-authenticate"),
            Some(r#"Bearer realm="wasmbox-admin", error="invalid_token""#),
            "{wrong:?}"
        );
    }
    listing(Some("Bearer")).expect(401, Some("unauthorized"), &["carries no token"]);
    // The right token under another scheme is still refused.
    listing(Some(&format!("Basic {TOKEN}"))).expect(401, Some("unauthorized"), &["scheme"]);

    for auth in [bearer(TOKEN), format!("bearer {TOKEN}")] {
        let r = listing(Some(&auth));
        r.expect(200, None, &[]);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(
            v["functions"],
            serde_json::json!(["echo.wasm", "hello.wat"])
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    // Metrics stay open by default (Prometheus scrapes them).
    get(s.admin, "/-/metrics").expect(200, None, &["wasmbox_queue_depth"]);

    let log = s.stop();
    assert!(log.contains("admin listener"), "{log}");
    assert!(!log.contains(TOKEN), "the token is in the log:\n{log}");
    assert!(
        !log.contains(same_length_wrong),
        "a tried token is in the log:\n{log}"
    );
}

#[test]
fn without_a_token_the_listing_is_forbidden_and_says_why() {
    let s = serve(&[], &[]);
    for headers in [vec![], vec![("authorization", bearer(TOKEN))]] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        request(s.admin, "GET", "/-/functions", &h).expect(
            403,
            Some("admin-token-not-configured"),
            &[
                "none is configured",
                "--admin-token-file",
                "WASMBOX_ADMIN_TOKEN",
            ],
        );
    }
    get(s.admin, "/-/metrics").expect(200, None, &["wasmbox_queue_depth"]);
    s.stop();
}

#[test]
fn admin_metrics_auth_puts_metrics_behind_the_token() {
    let s = serve(&["--admin-metrics-auth"], &[("WASMBOX_ADMIN_TOKEN", TOKEN)]);
    let r = get(s.admin, "/-/metrics");
    r.expect(401, Some("unauthorized"), &["/-/metrics"]);
    assert!(r.header("www-authenticate").is_some(), "{}", r.head);
    request(
        s.admin,
        "GET",
        "/-/metrics",
        &[("authorization", &bearer(TOKEN))],
    )
    .expect(200, None, &["wasmbox_queue_depth"]);
    // The probes never need it.
    get(s.admin, "/-/ready").expect(200, None, &["ready"]);
    s.stop();
}

/// `wasmbox serve <args>` (with a functions directory) that must fail:
/// (exit code, stderr).
fn refused(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let dir = functions_dir();
    let out = wasmbox()
        .args(["serve", "--host", "127.0.0.1"])
        .arg("--functions")
        .arg(dir.path())
        .args(args)
        .env("PORT", "0")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "started:\n{err}");
    (out.status.code().unwrap_or(-1), err)
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_bad_admin_token_stops_startup_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let missing: PathBuf = dir.path().join("missing");
    let (code, err) = refused(
        &[
            "--admin-listen",
            &admin,
            "--admin-token-file",
            path_str(&missing),
        ],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "cannot read the admin token file {}",
            missing.display()
        )),
        "{err}"
    );

    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let (_, err) = refused(
        &[
            "--admin-listen",
            &admin,
            "--admin-token-file",
            path_str(&empty),
        ],
        &[],
    );
    assert!(
        err.contains(&format!(
            "the admin token from --admin-token-file {} is empty",
            empty.display()
        )),
        "{err}"
    );

    let (_, err) = refused(&["--admin-listen", &admin], &[("WASMBOX_ADMIN_TOKEN", "")]);
    assert!(
        err.contains("the admin token from WASMBOX_ADMIN_TOKEN is empty"),
        "{err}"
    );

    let spaced = dir.path().join("spaced");
    std::fs::write(&spaced, "not a token").unwrap();
    let (_, err) = refused(&["--admin-token-file", path_str(&spaced)], &[]);
    assert!(
        err.contains("cannot be sent in an Authorization header"),
        "{err}"
    );
    assert!(
        !err.contains("not a token"),
        "the token is in the message:\n{err}"
    );

    let (_, err) = refused(
        &["--admin-token-file", path_str(&spaced)],
        &[("WASMBOX_ADMIN_TOKEN", TOKEN)],
    );
    assert!(
        err.contains("both --admin-token-file and WASMBOX_ADMIN_TOKEN are set"),
        "{err}"
    );

    let (_, err) = refused(&["--admin-listen", &admin, "--admin-metrics-auth"], &[]);
    assert!(
        err.contains("--admin-metrics-auth needs an admin token"),
        "{err}"
    );

    let port = free_port().to_string();
    let (_, err) = refused(
        &["--admin-listen", &format!("127.0.0.1:{port}")],
        &[("PORT", &port)],
    );
    assert!(
        err.contains("the admin listener needs a port of its own"),
        "{err}"
    );
}

#[test]
fn check_config_shows_the_admin_settings_but_not_the_token() {
    let dir = functions_dir();
    let check = |args: &[&str], env: &[(&str, &str)]| {
        let out = wasmbox()
            .args(["serve", "--check-config", "--functions"])
            .arg(dir.path())
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(!text.contains(TOKEN), "the token is shown:\n{text}");
        text
    };
    let out = check(
        &["--admin-listen", "0.0.0.0:9464"],
        &[("WASMBOX_ADMIN_TOKEN", TOKEN)],
    );
    for line in [
        "admin-listen = 0.0.0.0:9464\n",
        "admin-token = set, from WASMBOX_ADMIN_TOKEN (value not shown)\n",
        "admin-metrics-auth = false\n",
        "  WASMBOX_ADMIN_TOKEN=<redacted> (the admin token, instead of --admin-token-file)\n",
    ] {
        assert!(out.contains(line), "no {line:?} in:\n{out}");
    }

    let token_dir = tempfile::tempdir().unwrap();
    let file = token_dir.path().join("token");
    std::fs::write(&file, TOKEN).unwrap();
    let out = check(
        &["--admin-metrics-auth"],
        &[
            ("WASMBOX_ADMIN_LISTEN", "127.0.0.1:9464"),
            ("WASMBOX_ADMIN_TOKEN_FILE", path_str(&file)),
        ],
    );
    for line in [
        "admin-listen = 127.0.0.1:9464\n".to_string(),
        format!(
            "admin-token = set, from --admin-token-file {} (value not shown)\n",
            file.display()
        ),
        "admin-metrics-auth = true\n".to_string(),
        "  WASMBOX_ADMIN_LISTEN=127.0.0.1:9464 (--admin-listen)\n".to_string(),
    ] {
        assert!(out.contains(&line), "no {line:?} in:\n{out}");
    }

    let out = check(&[], &[]);
    assert!(
        out.contains("admin-listen = off (no metrics, no listing)\n"),
        "{out}"
    );
    assert!(
        out.contains("admin-token = not configured (/-/functions answers 403)\n"),
        "{out}"
    );
}
