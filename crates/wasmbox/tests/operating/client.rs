//! The CLI client (`wasmbox deploy`, `wasmbox functions`) against a live
//! server: the real binary as a child process.

use std::process::{Command, Output};

use crate::common::{guest, TestServer, TEST_ADMIN_TOKEN};

/// Runs `wasmbox ARGS` with the admin token in its environment (or not).
async fn cli(args: Vec<String>, token: Option<&str>) -> Output {
    let token = token.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_wasmbox"));
        c.env_clear().args(&args);
        if let Some(t) = token {
            c.env("WASMBOX_ADMIN_TOKEN", t);
        }
        c.output().unwrap()
    })
    .await
    .unwrap()
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn the_cli_deploys_lists_and_removes_functions_on_a_live_server() {
    let s = TestServer::start(&["hello.wat"], &["--revalidate-after", "0"]).await;
    let url = s.admin.clone();
    let echo = guest("echo.wasm");
    let manifest_dir = tempfile::tempdir().unwrap();
    let manifest = manifest_dir.path().join("m.toml");
    std::fs::write(&manifest, "args = [\"--upper\"]\n").unwrap();
    let o = cli(
        args(&[
            "deploy",
            echo.to_str().unwrap(),
            "--name",
            "shout",
            "--manifest",
            manifest.to_str().unwrap(),
            "--url",
            &url,
        ]),
        Some(TEST_ADMIN_TOKEN),
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("created shout (shout.wasm"),
        "{}",
        stdout(&o)
    );
    s.post("/shout", "loud").await.expect(200, &["LOUD"]);

    // Human-readable listing, then JSON.
    let o = cli(
        args(&["functions", "list", "--url", &url]),
        Some(TEST_ADMIN_TOKEN),
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.starts_with("NAME"), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("shout "))
        .expect("a row for shout");
    assert!(
        row.contains(" wasm ") && row.contains(" yes ") && row.ends_with(" ok"),
        "{row}"
    );
    let o = cli(
        args(&["functions", "list", "--url", &url, "--json"]),
        Some(TEST_ADMIN_TOKEN),
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let shout = v["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "shout")
        .unwrap();
    assert_eq!(shout["invocations"], 1);
    let sha = shout["sha256"].as_str().unwrap().to_string();

    // A stale --if-match is refused (exit 1, the server's words on stderr).
    let o = cli(
        args(&[
            "functions",
            "rm",
            "shout",
            "--if-match",
            &"0".repeat(64),
            "--url",
            &url,
        ]),
        Some(TEST_ADMIN_TOKEN),
    )
    .await;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("412 precondition-failed"),
        "{}",
        stderr(&o)
    );
    let o = cli(
        args(&[
            "functions",
            "rm",
            "shout",
            "--if-match",
            &sha,
            "--url",
            &url,
        ]),
        Some(TEST_ADMIN_TOKEN),
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("removed shout (shout.wasm, shout.toml)"),
        "{}",
        stdout(&o)
    );
    s.post("/shout", "x").await.expect(404, &[]);

    // A module that does not compile: exit 1 with the compiler's message.
    let o = cli(
        args(&[
            "deploy",
            guest("hello.wat").to_str().unwrap(),
            "--url",
            &url,
        ]),
        Some(TEST_ADMIN_TOKEN),
    )
    .await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("422 invalid-module"), "{}", stderr(&o));
    s.stop().await;
}

#[tokio::test]
async fn the_cli_says_what_is_wrong_with_distinct_exit_codes() {
    let s = TestServer::start(&[], &[]).await;
    let url = s.admin.clone();
    // No token: 2, naming the variable.
    let o = cli(args(&["functions", "list", "--url", &url]), None).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("WASMBOX_ADMIN_TOKEN"), "{}", stderr(&o));
    // A wrong token: the server refuses, 1.
    let o = cli(args(&["functions", "list", "--url", &url]), Some("wrong")).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("401 unauthorized"), "{}", stderr(&o));
    // A missing file: 2.
    let o = cli(
        args(&["deploy", "/nonexistent.wasm", "--url", &url]),
        Some(TEST_ADMIN_TOKEN),
    )
    .await;
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent.wasm"), "{}", stderr(&o));
    // Nobody listening: 3.
    let port = crate::common::free_port();
    let dead = format!("http://127.0.0.1:{port}");
    let o = cli(
        args(&["functions", "list", "--url", &dead]),
        Some(TEST_ADMIN_TOKEN),
    )
    .await;
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("cannot reach"), "{}", stderr(&o));
    // Not http://: 2.
    let o = cli(
        args(&["functions", "list", "--url", "https://example.invalid"]),
        Some(TEST_ADMIN_TOKEN),
    )
    .await;
    assert_eq!(o.status.code(), Some(2));
    s.stop().await;
}
