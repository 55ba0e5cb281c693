//! The scaling rules read metrics that a real wasmbox serves.

use super::*;

/// One HTTP/1.1 request; returns (status, body).
pub(super) fn http(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    http_with(port, method, path, body, "")
}

/// [`http`] with extra header lines (each ending in CRLF).
pub(super) fn http_with(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
    headers: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\ncpu_quota: 500\r\nMemory-Request: 64\r\n\
         {headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {resp:?}")))?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    // Bodies are small here; undo chunked encoding if the server used it.
    let body = if resp
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body.as_str();
        while let Some((len, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        body
    };
    Ok((status, body))
}

/// Polls `GET path` until it answers 200, up to `deadline`.
pub(super) fn wait_ready(port: u16, path: &str, deadline: Duration, what: impl Fn() -> String) {
    let start = Instant::now();
    loop {
        match http(port, "GET", path, "") {
            Ok((200, _)) => return,
            r if start.elapsed() > deadline => {
                panic!(
                    "{path} not 200 after {deadline:?} (last: {r:?}):\n{}",
                    what()
                )
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[test]
fn scaling_rules_use_metrics_wasmbox_serves() {
    // The HPA's and KEDA's metric names against a real wasmbox's /-/metrics,
    // on its admin listener as the manifests configure it.
    let hpa = read_yaml("deploy/base/hpa.yaml");
    let keda = read_yaml("deploy/overlays/keda/scaledobject.yaml");
    let mut names = vec![hpa[0]["spec"]["metrics"][0]["pods"]["metric"]["name"]
        .as_str()
        .expect("HPA pods metric")
        .to_string()];
    let query = keda[0]["spec"]["triggers"][0]["metadata"]["query"]
        .as_str()
        .unwrap();
    let mut rest = query;
    while let Some(i) = rest.find("wasmbox_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        names.push(name);
    }
    assert!(names.len() >= 3, "metric names found: {names:?}");

    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let [port, admin] = free_ports();
    let _server = Kill(
        Command::new(env!("CARGO_BIN_EXE_wasmbox"))
            .env_clear()
            .args([
                "serve",
                "--cpu-isolation",
                "throttle",
                "--host",
                "127.0.0.1",
            ])
            .arg("--port")
            .arg(port.to_string())
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{admin}"))
            .arg("--functions")
            .arg(repo().join("functions"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(port, "/-/ready", Duration::from_secs(30), String::new);
    let (status, moved) = http(port, "GET", "/-/metrics", "").unwrap();
    assert_eq!(
        status, 404,
        "the serving port still serves metrics: {moved}"
    );
    assert!(moved.contains("admin listener"), "{moved}");
    let (status, metrics) = http(admin, "GET", "/-/metrics", "").unwrap();
    assert_eq!(status, 200);
    for name in &names {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{"))),
            "metric {name} (used for scaling) is not served:\n{metrics}"
        );
    }
}
