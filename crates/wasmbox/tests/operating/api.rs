//! The deploy API: `/-/admin/functions` on the admin listener.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use hyper::Method;

use crate::common::{until, TestServer, TEST_ADMIN_TOKEN};
use crate::helpers::{api, deploy, guest_bytes, listed, raw, sha256};

#[tokio::test]
async fn the_deploy_api_needs_the_admin_token_and_is_not_on_the_serving_port() {
    let s = TestServer::start(&[], &[]).await;
    let wasm = guest_bytes("echo.wasm");
    let put = |headers: Vec<(&'static str, String)>| {
        let (admin, wasm) = (s.admin.clone(), wasm.clone());
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            raw(&admin, Method::PUT, "/-/admin/functions/f", &h, wasm).await
        }
    };
    let none = put(vec![]).await;
    none.expect(401, &["Authorization"]);
    assert_eq!(none.header("wasmbox-error"), Some("unauthorized"));
    let wrong = put(vec![("authorization", "Bearer nope".into())]).await;
    wrong.expect(401, &[]);
    assert!(wrong
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
    assert!(
        !s.path("f.wasm").exists(),
        "an unauthorized deploy wrote the file"
    );
    let right = put(vec![(
        "authorization",
        format!("Bearer {TEST_ADMIN_TOKEN}"),
    )])
    .await;
    right.expect(201, &["\"f.wasm\""]);
    s.post("/f", "hi").await.expect(200, &["hi"]);
    // The serving port has no deploy API.
    let h = [("authorization", format!("Bearer {TEST_ADMIN_TOKEN}"))];
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for m in [Method::PUT, Method::DELETE, Method::GET] {
        let r = raw(&s.base, m.clone(), "/-/admin/functions/g", &h, wasm.clone()).await;
        assert!(
            matches!(r.status.as_u16(), 404 | 405),
            "{m} on the serving port: {}",
            r.status
        );
    }
    assert!(!s.path("g.wasm").exists());
    s.stop().await;

    let s = TestServer::start_with_token(&[], &[], None).await;
    for m in [Method::PUT, Method::GET, Method::DELETE] {
        let r = raw(&s.admin, m, "/-/admin/functions/f", &[], wasm.clone()).await;
        r.expect(403, &["no"]);
        assert_eq!(
            r.header("wasmbox-error"),
            Some("admin-token-not-configured")
        );
    }
    assert!(!s.path("f.wasm").exists());
    s.stop().await;
}

/// Replaces a function's module again and again while clients call it:
/// every call succeeds, and answers as one version or the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replacing_a_module_under_load_fails_no_request_and_no_request_sees_half_a_module() {
    let s = Arc::new(TestServer::start(&[], &["--revalidate-after", "0"]).await);
    deploy(&s, "f", "echo.wasm").await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (s, stop) = (s.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let (mut echo, mut probe) = (0, 0);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) {
                assert!(std::time::Instant::now() < deadline, "clients ran too long");
                let r = s.get("/f?arg=x").await;
                assert_eq!(r.status, 200, "a call failed during a deploy: {}", r.text());
                match r.text().as_str() {
                    "x\n" => echo += 1,
                    t if t.starts_with("arg[0]=f\narg[1]=x\n") => probe += 1,
                    t => panic!("neither version answered: {t:?}"),
                }
            }
            (echo, probe)
        }));
    }
    for i in 0..8 {
        let file = if i % 2 == 0 {
            "probe.wasm"
        } else {
            "echo.wasm"
        };
        let r = deploy(&s, "f", file).await;
        assert_eq!(
            r.header("etag").unwrap(),
            format!("\"{}\"", sha256(&guest_bytes(file)))
        );
    }
    // The last deploy (echo) is what the next call sees: at once.
    assert_eq!(s.get("/f?arg=y").await.text(), "y\n");
    stop.store(true, Ordering::Relaxed);
    let (mut echo, mut probe) = (0, 0);
    for c in clients {
        let (e, p) = c.await.unwrap();
        (echo, probe) = (echo + e, probe + p);
    }
    assert!(echo > 0, "no call saw the echo version");
    eprintln!("calls during the deploys: {echo} echo, {probe} probe");
    // No temporary file is left in the directory.
    let names: Vec<String> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["f.wasm"], "{names:?}");
    Arc::into_inner(s).unwrap().stop().await;
}

#[tokio::test]
async fn a_module_that_does_not_compile_is_refused_and_the_old_one_keeps_serving() {
    let s = TestServer::start(&[], &["--revalidate-after", "0"]).await;
    let first = deploy(&s, "f", "echo.wasm").await;
    let etag = first.header("etag").unwrap().to_string();
    let put = |body: &'static [u8]| {
        api(
            &s,
            Method::PUT,
            "/-/admin/functions/f",
            &[],
            Bytes::from_static(body),
        )
    };
    // Truncated: the compiler's own message comes back.
    let r = put(b"\0asm\x01\0\0\0\x01\x05").await;
    r.expect(422, &["failed to compile", "not deployed"]);
    assert_eq!(r.header("wasmbox-error"), Some("invalid-module"));
    // A valid module that is not a WASI command.
    put(b"\0asm\x01\0\0\0").await.expect(422, &["_start"]);
    // Not WebAssembly at all.
    put(b"#!/bin/sh\necho hi\n").await.expect(422, &["\\0asm"]);
    s.post("/f", "still").await.expect(200, &["still"]);
    let entry = listed(&s, "f.wasm").await.unwrap();
    assert_eq!(format!("\"{}\"", entry["sha256"].as_str().unwrap()), etag);
    assert_eq!(std::fs::read_dir(s.dir.path()).unwrap().count(), 1);
    s.stop().await;
}

#[tokio::test]
async fn uploads_over_the_module_limit_and_bad_names_are_refused() {
    let s = TestServer::start(&[], &["--max-module-mb", "1"]).await;
    let big = Bytes::from(vec![0u8; (1 << 20) + 1]);
    let r = api(&s, Method::PUT, "/-/admin/functions/big", &[], big).await;
    r.expect(413, &["1048576"]);
    for bad in ["..%2fx", "f.wasm", "f.toml", ".hidden", "-x", "a%2Fb"] {
        let r = api(
            &s,
            Method::PUT,
            &format!("/-/admin/functions/{bad}"),
            &[],
            guest_bytes("echo.wasm"),
        )
        .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert_eq!(r.header("wasmbox-error"), Some("bad-name"), "{bad}");
    }
    assert_eq!(std::fs::read_dir(s.dir.path()).unwrap().count(), 0);
    s.stop().await;
}

#[tokio::test]
async fn if_match_makes_concurrent_deploys_safe_and_delete_removes_the_function() {
    let s = TestServer::start(&[], &["--revalidate-after", "0"]).await;
    let path = "/-/admin/functions/f";
    let echo = guest_bytes("echo.wasm");
    let create = api(
        &s,
        Method::PUT,
        path,
        &[("if-none-match", "*")],
        echo.clone(),
    )
    .await;
    create.expect(201, &[]);
    let etag = create.header("etag").unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", sha256(&echo)));
    api(
        &s,
        Method::PUT,
        path,
        &[("if-none-match", "*")],
        echo.clone(),
    )
    .await
    .expect(412, &["exists"]);
    let stale = format!("\"{}\"", "0".repeat(64));
    let r = api(
        &s,
        Method::PUT,
        path,
        &[("if-match", &stale)],
        guest_bytes("probe.wasm"),
    )
    .await;
    r.expect(412, &[&etag]);
    assert_eq!(r.header("wasmbox-error"), Some("precondition-failed"));
    assert_eq!(
        s.get("/f?arg=z").await.text(),
        "z\n",
        "a refused deploy changed the function"
    );
    let replaced = api(
        &s,
        Method::PUT,
        path,
        &[("if-match", &etag)],
        guest_bytes("probe.wasm"),
    )
    .await;
    replaced.expect(200, &["\"replaced\":true"]);
    let etag2 = replaced.header("etag").unwrap().to_string();
    assert_ne!(etag, etag2);
    assert!(s.get("/f").await.text().starts_with("arg[0]=f"));
    // GET one function: its ETag.
    let one = api(&s, Method::GET, path, &[], Bytes::new()).await;
    one.expect(200, &["\"name\":\"f\""]);
    assert_eq!(one.header("etag"), Some(etag2.as_str()));
    api(
        &s,
        Method::DELETE,
        path,
        &[("if-match", &etag)],
        Bytes::new(),
    )
    .await
    .expect(412, &[]);
    api(
        &s,
        Method::DELETE,
        path,
        &[("if-match", &etag2)],
        Bytes::new(),
    )
    .await
    .expect(200, &["f.wasm"]);
    s.get("/f").await.expect(404, &[]);
    api(&s, Method::DELETE, path, &[], Bytes::new())
        .await
        .expect(404, &["no function f"]);
    api(&s, Method::GET, path, &[], Bytes::new())
        .await
        .expect(404, &[]);
    s.stop().await;
}

/// Makes `dir` unwritable for this process: mode 0555 for a normal user;
/// for root (which ignores modes) the immutable attribute. `None` (and a
/// printed reason) if neither works here.
fn make_read_only(dir: &std::path::Path) -> Option<bool> {
    use std::os::unix::fs::PermissionsExt;
    if rustix::process::geteuid().is_root() {
        let ok = std::process::Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIP: running as root and `chattr +i` is unavailable here; cannot make a directory read-only");
            return None;
        }
        Some(true)
    } else {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        Some(false)
    }
}

#[tokio::test]
async fn a_read_only_functions_directory_answers_409_with_the_reason() {
    let s = TestServer::start(&["echo.wasm"], &[]).await;
    let Some(immutable) = make_read_only(s.dir.path()) else {
        return;
    };
    let r = api(
        &s,
        Method::PUT,
        "/-/admin/functions/f",
        &[],
        guest_bytes("echo.wasm"),
    )
    .await;
    let d = api(
        &s,
        Method::DELETE,
        "/-/admin/functions/echo",
        &[],
        Bytes::new(),
    )
    .await;
    let m = crate::helpers::put_manifest(&s, "echo", "args = []\n").await;
    if immutable {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(s.dir.path())
            .status();
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for r in [&r, &d, &m] {
        r.expect(409, &["cannot be written"]);
        assert_eq!(r.header("wasmbox-error"), Some("read-only"));
    }
    // Still serving what is there.
    s.post("/echo", "ok").await.expect(200, &["ok"]);
    s.stop().await;
}

#[tokio::test]
async fn the_listing_shows_each_functions_hash_state_and_usage() {
    let s = TestServer::start(&["hello.wat"], &[]).await;
    deploy(&s, "f", "echo.wasm").await;
    let before = listed(&s, "f.wasm").await.unwrap();
    assert_eq!(before["loaded"], false);
    assert_eq!(before["invocations"], 0);
    assert!(before["last_invoked_unix"].is_null());
    for _ in 0..3 {
        s.post("/f", "x").await.expect(200, &[]);
    }
    s.get("/f?arg=--bytes&arg=100").await; // whatever it answers, it is counted
    s.request(Method::GET, "/f", &[("memory-request", "0")], Bytes::new())
        .await
        .expect(400, &[]);
    let e = listed(&s, "f.wasm").await.unwrap();
    assert_eq!(e["name"], "f");
    assert_eq!(e["kind"], "wasm");
    assert_eq!(e["size"], guest_bytes("echo.wasm").len());
    assert_eq!(e["sha256"], sha256(&guest_bytes("echo.wasm")));
    assert_eq!(e["loaded"], true);
    assert!(e["outcomes"]["ok"].as_u64().unwrap() >= 3, "{e}");
    assert!(e["last_invoked_unix"].as_f64().unwrap() > 1.0e9);
    assert!(e["compile_seconds"].as_f64().unwrap() > 0.0, "{e}");
    // The bad-header request came before the function was looked up.
    assert_eq!(e["invocations"], 4, "{e}");
    let hello = listed(&s, "hello.wat").await.unwrap();
    assert_eq!(hello["kind"], "wat");
    assert!(hello["manifest"].is_null());
    s.stop().await;
}

/// A deploy whose client hangs up while its module compiles (a large
/// component: seconds) publishes nothing and leaves no temporary file in
/// the functions directory: an admin client on a flaky link cannot fill
/// the disk with `.deploy-*` files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_abandoned_while_its_module_compiles_leaves_nothing_behind() {
    use tokio::io::AsyncWriteExt;
    let s = TestServer::start(&[], &[]).await;
    let module = guest_bytes("pyhello.wasm");
    let mut c = tokio::net::TcpStream::connect(s.admin.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "PUT /-/admin/functions/p HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TEST_ADMIN_TOKEN}\r\ncontent-length: {}\r\n\r\n",
        module.len()
    );
    c.write_all(head.as_bytes()).await.unwrap();
    c.write_all(&module).await.unwrap();
    let dir = s.dir.path().to_path_buf();
    let temps = move || {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".deploy-"))
            .count()
    };
    // Its temporary file exists (being written, or compiling): hang up.
    until("the upload is written", || temps() == 1).await;
    drop(c);
    until("the temporary file is removed", || temps() == 0).await;
    let names: Vec<String> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.is_empty(), "{names:?}: the deploy was published");
    s.stop().await;
}
