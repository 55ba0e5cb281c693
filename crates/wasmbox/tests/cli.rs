//! The `wasmbox` binary end to end: `run`, `compile`, and `serve` with its
//! defaults and the reference's environment variable names.

mod common;
use common::{free_port, free_ports};

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

fn wasmbox() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wasmbox"));
    clean_env(&mut c);
    c
}

/// Keeps the caller's environment from leaking settings into the tests.
fn clean_env(c: &mut Command) {
    for (k, _) in std::env::vars() {
        if k.starts_with("WASMBOX_")
            || [
                "PORT",
                "WEBSERVER_PORT",
                "WEBSERVER_HOST",
                "LOG_LEVEL",
                "POD_UID",
            ]
            .contains(&k.as_str())
        {
            c.env_remove(k);
        }
    }
}

fn run_with_stdin(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = wasmbox()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn g(name: &str) -> String {
    common::guest(name).to_str().unwrap().to_string()
}

#[test]
fn run_passes_stdio_args_and_exit_status_through() {
    let (code, out, _) =
        run_with_stdin(&["run", &g("echo.wasm"), "--upper", "a", "b"], "piped in\n");
    assert_eq!((code, out.as_str()), (0, "a b\nPIPED IN\n"));
    let (code, out, err) = run_with_stdin(&["run", &g("exitcode.wasm"), "7"], "");
    assert_eq!((code, out.as_str()), (7, "about to exit with 7\n"));
    assert!(err.contains("failing on purpose with status 7"), "{err}");
    let (code, out, _) = run_with_stdin(&["run", &g("hello.wat")], "");
    assert_eq!((code, out.as_str()), (0, "Hello from wasmbox!\n"));
}

#[test]
fn run_applies_the_same_limits() {
    let (code, _, err) = run_with_stdin(&["run", "--timeout", "200ms", &g("spin.wasm")], "");
    assert_eq!(code, 124, "{err}");
    assert!(err.contains("timed out after 0.200 s"), "{err}");
    let (code, _, err) = run_with_stdin(&["run", "--memory-mb", "16", &g("memhog.wasm"), "40"], "");
    assert_eq!(code, 137, "{err}");
    assert!(err.contains("cap is 16 MiB"), "{err}");
    let (code, out, _) = run_with_stdin(&["run", "--memory-mb", "64", &g("memhog.wasm"), "40"], "");
    assert_eq!((code, out.trim()), (0, "allocated 40 MiB (10240 pages)"));
}

#[test]
fn compile_produces_a_cwasm_that_loads_only_where_allowed_and_compatible() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("echo.cwasm");
    let st = wasmbox()
        .args(["compile", &g("echo.wasm"), "-o", out.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(wasmtime::Engine::detect_precompiled(&std::fs::read(&out).unwrap()).is_some());

    let (code, stdout, _) = run_with_stdin(
        &["run", "--allow-precompiled", out.to_str().unwrap(), "x"],
        "y",
    );
    assert_eq!((code, stdout.as_str()), (0, "x\ny"));
    let (code, _, err) = run_with_stdin(&["run", out.to_str().unwrap()], "");
    assert_eq!(code, 1);
    assert!(err.contains("--allow-precompiled"), "{err}");

    // Compiled for an engine with other settings: refused, saying so.
    let other = dir.path().join("other.cwasm");
    let st = wasmbox()
        .args([
            "compile",
            "--max-memory-mb",
            "8192",
            &g("echo.wasm"),
            "-o",
            other.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let (code, _, err) =
        run_with_stdin(&["run", "--allow-precompiled", other.to_str().unwrap()], "");
    assert_eq!(code, 1);
    assert!(
        err.contains("different wasmtime build or engine configuration"),
        "{err}"
    );

    // Default output name; a broken input fails with its name.
    std::fs::copy(common::guest("hello.wat"), dir.path().join("h.wat")).unwrap();
    assert!(wasmbox()
        .args(["compile", dir.path().join("h.wat").to_str().unwrap()])
        .status()
        .unwrap()
        .success());
    assert!(dir.path().join("h.cwasm").exists());
    std::fs::write(dir.path().join("bad.wat"), "(module (func $x (unknown)))").unwrap();
    let o = wasmbox()
        .args(["compile", dir.path().join("bad.wat").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad.wat failed to compile"));
}

/// A `wasmbox serve` child process; stopped with SIGTERM on drop.
struct Served {
    child: Child,
    port: u16,
    /// Its log lines after the "serving" one.
    log: std::sync::mpsc::Receiver<String>,
}

/// Starts `wasmbox serve` in `cwd` with `env` and waits for its "serving" log line.
fn serve(cwd: &Path, args: &[&str], env: &[(&str, String)], port: u16) -> Served {
    let mut cmd = wasmbox();
    cmd.arg("serve")
        .args(args)
        .current_dir(cwd)
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("wasmbox serving") {
            assert!(line.contains(&format!(":{port}")), "{line}");
            break;
        }
    }
    // Keep draining stderr so the child never blocks on a full pipe; the
    // lines go to whichever test reads `log`.
    let (tx, log) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    Served { child, port, log }
}

/// A test that fails midway still stops its server: an orphaned one would
/// keep the test harness's output pipe open, and the run would hang.
impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let mut req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut resp = String::new();
        std::io::Read::read_to_string(&mut s, &mut resp).unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_lowercase(), body.to_string())
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as i32;
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

#[test]
fn serve_defaults_use_port_env_and_the_bundled_functions() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let port = free_port();
    let s = serve(&repo, &[], &[("PORT", port.to_string())], port);
    let (status, head, body) = s.get("/hello", &[("cpu_quota", "500"), ("Memory-Request", "64")]);
    assert_eq!(
        (status, body.as_str()),
        (200, "Hello from wasmbox!\n"),
        "{head}"
    );
    assert!(head.contains("server-timing:"));
    let st = s.terminate();
    assert_eq!(st.code(), Some(0));
}

#[test]
fn serve_accepts_the_reference_environment_names() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(common::guest("echo.wasm"), dir.path().join("echo.wasm")).unwrap();
    let port = free_port();
    let env = [
        ("WEBSERVER_HOST", "127.0.0.1".to_string()),
        ("WEBSERVER_PORT", port.to_string()),
        ("PORT", "1".to_string()), // WEBSERVER_PORT wins over Knative's PORT
        ("LOG_LEVEL", "debug".to_string()),
        ("POD_UID", "uid-1234".to_string()),
        (
            "WASMBOX_FUNCTIONS",
            dir.path().to_str().unwrap().to_string(),
        ),
        ("WASMBOX_COMPAT", "reference".to_string()),
    ];
    let s = serve(dir.path(), &[], &env, port);
    let (status, head, body) = s.get("/echo.wasm?arg=hi", &[]);
    assert_eq!((status, body.as_str()), (200, "WASM output: hi\n"));
    assert!(head.contains("pod: uid-1234"), "{head}");
    assert_eq!(s.terminate().code(), Some(0));
}

#[test]
fn serve_refuses_bad_settings_with_a_message() {
    let o = wasmbox()
        .args(["serve", "--functions", "/nonexistent/dir"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/dir does not exist"));
    let o = wasmbox()
        .args(["serve", "--default-memory-mb", "9000"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("--default-memory-mb 9000 must be between 1 and --max-memory-mb 4096"));
    let o = wasmbox()
        .args(["serve", "--timeout", "soon"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a duration"));
    // An instance pool larger than the address space: which knobs size it.
    let o = wasmbox()
        .args(["serve", "--functions", "/", "--port", "0"])
        .args(["--workers", "8192", "--max-memory-mb", "65536"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("8200 instances") && err.contains("lower --workers or --max-memory-mb"),
        "{err}"
    );
}

/// `wasmbox serve --check-config ..` under an open-file limit of 1,024
/// (soft and hard, as the image test runs the container): (exit code,
/// stdout, stderr).
fn check_config_at_1024(args: &[&str]) -> (i32, String, String) {
    let mut sh = Command::new("sh");
    clean_env(&mut sh);
    let out = sh
        .arg("-c")
        .arg(r#"ulimit -Sn 1024 && ulimit -Hn 1024 && exec "$@""#)
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_wasmbox"))
        .args([
            "serve",
            "--check-config",
            "--functions",
            "/",
            "--workers",
            "256",
        ])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A loaded function may keep a descriptor open: under the container's
/// 1,024 the default shrinks so that functions, workers' files and
/// connections fit together, and a flag asking for more is refused.
#[test]
fn loaded_functions_and_connections_fit_the_open_file_limit() {
    let (code, out, err) = check_config_at_1024(&[]);
    assert_eq!(code, 0, "{err}");
    let value = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(" = "))
            .unwrap_or_else(|| panic!("no {key} in {out}"))
            .to_string()
    };
    // 1,024 - 256 reserved - 2 x 256 workers - 64 connections.
    assert_eq!(value("max-loaded-functions"), "192");
    assert!(
        value("max-connections").starts_with("64 "),
        "{}",
        value("max-connections")
    );
    let (code, _, err) = check_config_at_1024(&["--max-loaded-functions", "512"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--max-loaded-functions 512: the open-file limit 1024 holds at most 192"),
        "{err}"
    );
    let (code, out, err) = check_config_at_1024(&["--max-loaded-functions", "100"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("max-loaded-functions = 100\n"), "{out}");
}

fn raw_get(port: u16, path: &str, headers: &str) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{headers}\r\n"
    )?;
    let mut resp = String::new();
    std::io::Read::read_to_string(&mut s, &mut resp)?;
    Ok(resp)
}

/// SIGTERM in the middle of a burst: every admitted (running or queued)
/// request completes, readiness turns 503 at once, new connections are
/// refused, the process exits 0 and leaves no cgroup behind.
#[test]
fn sigterm_during_a_burst_drains_everything_admitted() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let [port, health, admin] = free_ports();
    let args = [
        "--capacity-cpu",
        "1000",
        "--capacity-memory-mb",
        "100000",
        "--health-listen",
    ];
    let health_addr = format!("127.0.0.1:{health}");
    let admin_addr = format!("127.0.0.1:{admin}");
    let mut all: Vec<&str> = args.to_vec();
    all.push(&health_addr);
    all.extend(["--admin-listen", &admin_addr]);
    let s = serve(&repo, &all, &[("PORT", port.to_string())], port);
    let pid = s.child.id();
    assert!(raw_get(health, "/ready", "")
        .unwrap()
        .starts_with("HTTP/1.1 200"));

    // Six requests that each take the whole CPU capacity: one runs, five queue.
    let burst: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(move || {
                raw_get(port, "/spin?arg=300", "cpu_quota: 1000\r\n").unwrap()
            })
        })
        .collect();
    let t = std::time::Instant::now();
    while !raw_get(admin, "/-/metrics", "")
        .unwrap()
        .contains("wasmbox_queue_depth 5")
    {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "burst never queued"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let trees =
        wasmbox_isolation::cgroup::v1_trees_of_process(pid, Path::new("/sys/fs/cgroup/cpu"));
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();

    // Not ready from now on, and the serving port stops taking connections.
    let t = std::time::Instant::now();
    loop {
        let r = raw_get(health, "/ready", "").unwrap();
        if r.starts_with("HTTP/1.1 503") {
            assert!(r.contains("draining"), "{r}");
            break;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "never turned not-ready"
        );
    }
    let t = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "still accepting connections"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // The admin listener is not the serving port: it still answers while
    // the server drains.
    let r = raw_get(admin, "/-/metrics", "").unwrap();
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("wasmbox_queue_depth"),
        "{r}"
    );
    for b in burst {
        let r = b.join().unwrap();
        assert!(r.starts_with("HTTP/1.1 200") && r.contains("spun"), "{r}");
    }
    let mut s = s;
    assert_eq!(s.child.wait().unwrap().code(), Some(0));
    for tree in &trees {
        assert!(!tree.exists(), "{} left behind", tree.display());
    }
}

/// A guest's output goes into the server's log as one escaped field, so a
/// tenant cannot write lines that read as the server's own: the newline
/// in its stderr stays `\n` inside the one line the server writes.
#[test]
fn guest_output_cannot_forge_lines_in_the_server_log() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let port = free_port();
    let s = serve(&repo, &[], &[("PORT", port.to_string())], port);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let next_line = |what: &str| -> String {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        s.log
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("no line {what} within 60 s: {e}"))
    };
    let forged = "x%0AFORGED-LINE%20INFO%20wasmbox%3A%3Aserver%3A%20all%20is%20well";
    let (status, _, _) = s.get(&format!("/echo?arg=--stderr&arg={forged}"), &[]);
    assert_eq!(status, 200);
    let line = loop {
        let line = next_line("with the guest's stderr");
        assert!(
            !line.starts_with("FORGED-LINE"),
            "the guest wrote a line of its own: {line}"
        );
        if line.contains("guest stderr") {
            break line;
        }
    };
    assert!(line.contains(r"x\nFORGED-LINE INFO"), "{line}");
    assert_eq!(s.terminate().code(), Some(0));
}

/// A handler whose client already has its whole answer (a HEAD: the head
/// is all it gets) finishes apart from its connection, so the connection
/// closes while the guest runs on. At SIGTERM that guest is still held to
/// the drain timeout (1 s), not its own hour.
#[test]
fn a_handler_finishing_after_its_answer_is_held_to_the_drain_timeout() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("functions")).unwrap();
    std::fs::copy(
        common::guest("httpkit.wasm"),
        dir.path().join("functions/httpkit.wasm"),
    )
    .unwrap();
    let port = free_port();
    let mut s = serve(
        dir.path(),
        &["--drain-timeout", "1s", "--timeout", "1h"],
        &[("PORT", port.to_string())],
        port,
    );
    // Its head, then an hour of CPU at a tenth of a core.
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    c.write_all(
        b"HEAD /httpkit/head-spin/3600000 HTTP/1.1\r\nhost: x\r\ncpu_quota: 100\r\nconnection: close\r\n\r\n",
    )
    .unwrap();
    let mut head = String::new();
    std::io::Read::read_to_string(&mut c, &mut head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    // Bounded: far above the drain timeout, far below the guest's hour.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server still runs 60 s after SIGTERM: the guest outlived the drain timeout"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}
