//! Test helpers: a real wasmbox server on a loopback port with its own
//! functions directory, and a real HTTP client.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use wasmbox::config::{Cli, Command};
use wasmbox::http::App;
use wasmbox::server::Server;

/// `GET path` on 127.0.0.1:`port` over a fresh connection, blocking, with
/// `connection: close`: the whole response as text (for a server running
/// as a child process; read timeout 30 s).
pub fn raw_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp
}

/// A loopback port that was free a moment ago, for a child process to bind.
pub fn free_port() -> u16 {
    let [port] = free_ports();
    port
}

/// `N` different loopback ports that were free a moment ago (a serving and
/// an admin port, say): all bound at once, so the kernel cannot hand out
/// one port twice, as separate calls of [`free_port`] sometimes did.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: [std::net::TcpListener; N] =
        std::array::from_fn(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    held.map(|l| l.local_addr().unwrap().port())
}

/// Path of a guest built by functions/build.sh (or a bundled .wat).
pub fn guest(file: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../functions")
        .join(file);
    assert!(
        p.exists(),
        "{} is missing: run functions/build.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

/// The admin token every [`TestServer`] is started with (unless a test
/// asks for none).
pub const TEST_ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub base: String,
    /// The admin listener (`--admin-listen 127.0.0.1:0`): metrics, listing.
    pub admin: String,
    /// Its bearer token, if the server has one.
    pub token: Option<String>,
    _admin_dir: tempfile::TempDir,
    pub app: Arc<App>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Asserts the status and that the body mentions every one of `words`.
    #[track_caller]
    pub fn expect(&self, status: u16, words: &[&str]) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        for w in words {
            assert!(
                self.text().contains(w),
                "expected {w:?} in body: {}",
                self.text()
            );
        }
    }
}

impl TestServer {
    /// Starts `wasmbox serve --port 0 --functions <tmp> <extra...>` in this
    /// process with `guests` copied into the functions directory, and an
    /// admin listener on another loopback port with [`TEST_ADMIN_TOKEN`].
    pub async fn start(guests: &[&str], extra: &[&str]) -> TestServer {
        Self::start_with_token(guests, extra, Some(TEST_ADMIN_TOKEN)).await
    }

    /// [`TestServer::start`] with this admin token (`--admin-token-file`),
    /// or with none configured.
    pub async fn start_with_token(
        guests: &[&str],
        extra: &[&str],
        token: Option<&str>,
    ) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let admin_dir = tempfile::tempdir().unwrap();
        let token_file = admin_dir.path().join("token");
        for g in guests {
            std::fs::copy(guest(g), dir.path().join(g)).unwrap();
        }
        let mut argv = vec![
            "wasmbox",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--functions",
            dir.path().to_str().unwrap(),
        ];
        // Admission capacity is detected from this machine's cgroups unless a
        // test sets it; fix it so tests behave the same on any machine.
        // The prewarm at the process's priority: at SCHED_IDLE it waits
        // while other tests keep the cores busy, and tests that wait for
        // it would time out (the idle threads are tested in the registry's
        // own tests).
        for (flag, value) in [
            ("--capacity-cpu", "1000000"),
            ("--capacity-memory-mb", "1000000"),
            ("--prewarm-priority", "normal"),
        ] {
            if !extra.contains(&flag) {
                argv.extend([flag, value]);
            }
        }
        let token_path = token_file.to_str().unwrap().to_string();
        if !extra.contains(&"--admin-listen") {
            argv.extend(["--admin-listen", "127.0.0.1:0"]);
        }
        if let Some(t) = token {
            std::fs::write(&token_file, format!("{t}\n")).unwrap();
            argv.extend(["--admin-token-file", &token_path]);
        }
        // Heavy compiles run in a child: the wasmbox binary, not this test
        // binary (which `current_exe` would name).
        if !extra.contains(&"--compile-child-exe") {
            argv.extend(["--compile-child-exe", env!("CARGO_BIN_EXE_wasmbox")]);
        }
        argv.extend_from_slice(extra);
        let cli = Cli::try_parse_from(&argv).unwrap();
        let Command::Serve(args) = cli.command else {
            unreachable!()
        };
        let server = Server::bind(args.resolve().unwrap()).await.unwrap();
        let base = format!("http://{}", server.local_addr().unwrap());
        let admin = format!("http://{}", server.admin_addr().expect("an admin listener"));
        let app = server.app.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        let client = Client::builder(TokioExecutor::new()).build_http();
        TestServer {
            dir,
            base,
            admin,
            token: token.map(str::to_string),
            _admin_dir: admin_dir,
            app,
            stop: Some(stop),
            task: Some(task),
            client,
        }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        self.request_to(&self.base, method, path, headers, body.into())
            .await
    }

    /// A GET with the resource headers: `cpu_quota` (millicores) and
    /// `Memory-Request` (MB).
    pub async fn call(&self, path: &str, cpu: u64, mem: u64) -> Reply {
        let (c, m) = (cpu.to_string(), mem.to_string());
        self.request(
            Method::GET,
            path,
            &[("cpu_quota", &c), ("Memory-Request", &m)],
            Bytes::new(),
        )
        .await
    }

    /// Waits (yielding, at most 30 s) until `cond` holds on the admission
    /// snapshot.
    pub async fn until(&self, what: &str, cond: impl Fn(&wasmbox_admission::Snapshot) -> bool) {
        let t = std::time::Instant::now();
        while !cond(&self.app.admission.snapshot()) {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(30),
                "timed out waiting for {what}: {:?}",
                self.app.admission.snapshot()
            );
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// A GET on the admin listener with `headers` only (no token).
    pub async fn admin_request(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.request_to(&self.admin, Method::GET, path, headers, Bytes::new())
            .await
    }

    /// A GET on the admin listener with `Authorization: Bearer <token>`
    /// when the server has a token: what an operator's tool sends.
    pub async fn admin_get(&self, path: &str) -> Reply {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        self.admin_request(path, &headers).await
    }

    async fn request_to(
        &self,
        base: &str,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Reply {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{base}{path}"));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = self
            .client
            .request(b.body(Full::new(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, &[], Bytes::new()).await
    }

    pub async fn post(&self, path: &str, body: &str) -> Reply {
        self.request(Method::POST, path, &[], Bytes::from(body.to_string()))
            .await
    }

    /// Stops the server the way SIGTERM would and waits for it.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

/// Waits (polling, with a deadline) until `cond` holds: for server state
/// that has no change notification to await.
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// Opens a connection to `base` (`http://host:port`) and sends a GET with
/// `headers` (each ending in CRLF); the response is left unread, and
/// dropping the stream hangs up.
pub async fn send_get(base: &str, path: &str, headers: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\n{headers}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

/// Sends `GET path` at `cpu_quota: 100` to a guest that runs until it is
/// stopped, hangs up once it runs, and waits until its worker and its
/// reservation are free: a client that goes away stops its guest.
pub async fn hang_up_stops(s: &TestServer, path: &str) {
    let client = send_get(&s.base, path, "cpu_quota: 100\r\n").await;
    let app = s.app.clone();
    until("the guest runs", || app.executor.busy() == 1).await;
    drop(client);
    until("it stopped and released its reservation", || {
        app.executor.busy() == 0 && app.admission.snapshot().reserved.cpu_millis == 0
    })
    .await;
}

/// Whether cgroup v1 CPU isolation can work here; prints the reason if not
/// (a failure with WASMBOX_REQUIRE_CGROUPS=1, as .ci/run sets).
pub fn v1_usable() -> bool {
    let cfg = wasmbox_isolation::IsolationConfig {
        requested: wasmbox_isolation::Requested::Exactly(wasmbox_isolation::Mode::CgroupV1),
        ..Default::default()
    };
    match wasmbox_isolation::open(&cfg) {
        Ok(_) => true,
        Err(e) if std::env::var("WASMBOX_REQUIRE_CGROUPS").as_deref() == Ok("1") => {
            panic!("WASMBOX_REQUIRE_CGROUPS=1 but cgroup v1 is not usable: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: cgroup v1 cpu controller not usable here: {e}");
            false
        }
    }
}

/// One phase (ms) out of a Server-Timing header.
pub fn phase(timing: &str, name: &str) -> f64 {
    timing
        .split(", ")
        .find_map(|p| p.strip_prefix(&format!("{name};dur=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {timing}"))
}
