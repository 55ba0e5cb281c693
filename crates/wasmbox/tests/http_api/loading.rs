//! Loading functions over HTTP: unreadable files, the compile budget, the
//! compile child, and a compile that outlives its client. Loads here happen
//! on request (`--prewarm-poll 0`); prewarming is tested in prewarm.rs.

use std::path::{Path, PathBuf};

use super::common::{self, TestServer};

/// A WASI command printing `msg`, with `n` extra functions of straight-line
/// code: about 75 bytes each as binary, so 200 are enough to go to the heavy lane.
fn many_functions(msg: &str, n: usize) -> String {
    let body = "(drop (i32.mul (i32.add (i32.const 1) (i32.const 2)) (i32.const 3)))".repeat(8);
    let funcs: String = (0..n).map(|_| format!("(func {body})\n")).collect();
    format!(
        r#"(module
          (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (data (i32.const 100) "{msg}")
          {funcs}
          (func (export "_start")
            (i32.store (i32.const 0) (i32.const 100))
            (i32.store (i32.const 4) (i32.const {len}))
            (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        len = msg.len()
    )
}

/// Stand-in for EIO, ESTALE or EACCES: a symlink loop at the file's name
/// (stat fails with ELOOP). The tests may run as root, for whom `chmod 000`
/// denies nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_503_unreadable_when_a_file_cannot_be_looked_at_and_its_compiled_function_is_kept() {
    // Every request looks at the file (by default a loaded function's file
    // is looked at again only after a second).
    let s = TestServer::start(
        &["hello.wat"],
        &["--revalidate-after", "0", "--prewarm-poll", "0"],
    )
    .await;
    s.get("/hello").await.expect(200, &["Hello"]);
    let (file, aside) = (s.path("hello.wat"), s.path("aside"));
    std::fs::rename(&file, &aside).unwrap();
    std::os::unix::fs::symlink("hello.wat", &file).unwrap();

    let r = s.get("/hello").await;
    r.expect(503, &["could not be read", "symbolic links"]);
    assert_eq!(r.header("wasmbox-error"), Some("unreadable"));
    assert_eq!(r.header("retry-after"), Some("1"));
    s.get("/-/live").await.expect(200, &["live"]);

    std::fs::remove_file(&file).unwrap();
    std::fs::rename(&aside, &file).unwrap();
    s.get("/hello").await.expect(200, &["Hello"]);
    assert_eq!(s.app.registry.loads(), 1, "the compiled function was kept");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_502_over_the_compile_budget_names_the_limit_and_the_server_stays_up() {
    let s = TestServer::start(
        &["hello.wat"],
        &[
            "--prewarm-poll",
            "0",
            "--max-module-functions",
            "300",
            "--heavy-module-kb",
            "4",
            "--compile-memory-mb",
            "16",
        ],
    )
    .await;
    std::fs::write(s.path("wide.wat"), many_functions("wide", 400)).unwrap();
    let r = s.get("/wide").await;
    r.expect(
        502,
        &[
            "over the compile budget",
            "401 functions",
            "--max-module-functions",
        ],
    );
    assert_eq!(r.header("wasmbox-error"), Some("load-failed"));

    // Within the function limit but on the heavy lane: the compile child
    // cannot run in 16 MiB of address space.
    std::fs::write(s.path("big.wat"), many_functions("big", 200)).unwrap();
    let r = s.get("/big").await;
    r.expect(
        502,
        &["over the compile budget", "16 MiB", "--compile-memory-mb"],
    );
    assert_eq!(r.header("wasmbox-error"), Some("load-failed"));

    s.get("/hello").await.expect(200, &["Hello"]);
    s.get("/-/live").await.expect(200, &["live"]);
    s.stop().await;
}

/// A stand-in compile child that waits on a FIFO until the test lets it go,
/// then runs the real `wasmbox compile-child`: a heavy compile that takes as
/// long as the test wants.
fn gated_child(dir: &Path) -> (PathBuf, PathBuf) {
    let fifo = dir.join("gate");
    let script = dir.join("gated-compile-child");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let text = format!(
        "#!/bin/sh\ncat '{}' >/dev/null\nexec '{}' \"$@\"\n",
        fifo.display(),
        env!("CARGO_BIN_EXE_wasmbox")
    );
    // Written by a short-lived process, so no descriptor open for writing
    // leaks into a concurrently forked child (ETXTBSY on exec).
    let wrote = std::process::Command::new("sh")
        .arg("-c")
        .arg("printf '%s' \"$0\" > \"$1\" && chmod 755 \"$1\"")
        .arg(&text)
        .arg(&script)
        .status()
        .unwrap();
    assert!(wrote.success());
    (script, fifo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heavy_compile_outlives_its_client_and_a_cheap_one_is_answered_meanwhile() {
    let gate = tempfile::tempdir().unwrap();
    let (script, fifo) = gated_child(gate.path());
    let s = TestServer::start(
        &[],
        &[
            "--prewarm-poll",
            "0",
            "--heavy-module-kb",
            "4",
            "--compile-child-exe",
            script.to_str().unwrap(),
        ],
    )
    .await;
    std::fs::write(s.path("big.wat"), many_functions("big", 200)).unwrap();
    std::fs::write(s.path("small.wat"), many_functions("small", 0)).unwrap();
    let registry = s.app.registry.clone();

    let client = common::send_get(&s.base, "/big", "").await;
    common::until("the heavy compile has started", || {
        registry.heavy_compiles_running() == 1
    })
    .await;
    drop(client); // the client hangs up

    s.get("/small").await.expect(200, &["small"]);
    assert_eq!(
        registry.heavy_compiles_running(),
        1,
        "answered while the heavy compile is still running"
    );
    s.admin_get("/-/metrics")
        .await
        .expect(200, &["wasmbox_function_heavy_compiles 1"]);

    // Let the compile through (opening the FIFO waits for its reader).
    let f = fifo.clone();
    tokio::task::spawn_blocking(move || drop(std::fs::File::create(f).unwrap()))
        .await
        .unwrap();
    s.get("/big").await.expect(200, &["big"]);
    assert_eq!(registry.loads(), 2, "big compiled once, small once");
    s.stop().await;
}
