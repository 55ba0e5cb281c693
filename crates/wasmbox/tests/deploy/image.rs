//! The container image: a static binary, built with podman, serving the bundled functions.

use super::scaling::{http, http_with, wait_ready};
use super::*;

/// True when the ELF file has no program interpreter (PT_INTERP), i.e. it is
/// statically linked and runs on `scratch`.
fn is_static_elf(bytes: &[u8]) -> bool {
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(bytes[4], 2, "not a 64-bit ELF file");
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).all(|i| {
        let p = phoff + i * phentsize;
        u32::from_le_bytes(bytes[p..p + 4].try_into().unwrap()) != 3
    })
}

/// Removes the test's container and image however the test ends.
struct Podman {
    bin: PathBuf,
    container: String,
    image: String,
}

impl Podman {
    fn cmd(&self) -> Command {
        Command::new(&self.bin)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self
            .cmd()
            .args(["rm", "-f", "-t", "0", &self.container])
            .output();
        let _ = self.cmd().args(["rmi", "-f", &self.image]).output();
    }
}

#[test]
fn image_builds_and_serves_bundled_functions_from_a_container() {
    let test = "image_builds_and_serves_bundled_functions_from_a_container";
    let (Some(podman), Some(_runc)) = (require("podman", test), require("runc", test)) else {
        return;
    };
    let Some(_) = require("musl-gcc", test) else {
        return;
    };
    let sysroot = run_ok(Command::new("rustc").args(["--print", "sysroot"]));
    let musl = Path::new(sysroot.trim()).join("lib/rustlib/x86_64-unknown-linux-musl");
    if !musl.is_dir() {
        let msg = format!(
            "{test}: the x86_64-unknown-linux-musl target is not installed (scripts/setup-deploy.sh adds it)"
        );
        assert_ne!(
            std::env::var("WASMBOX_REQUIRE_DEPLOY").as_deref(),
            Ok("1"),
            "{msg}"
        );
        let _ = writeln!(std::io::stderr(), "SKIPPED {msg}");
        return;
    }
    let repo = repo();
    let bundled = ["hello.wat", "echo.wasm", "wc.wasm"];
    for f in bundled {
        assert!(
            repo.join("functions").join(f).is_file(),
            "functions/{f} is missing: run ./functions/build.sh first (scripts/test.sh does)"
        );
    }

    // The static binary the Containerfile copies.
    let started = Instant::now();
    // As scripts/deploy-image.sh builds it; the harness's smoke tests
    // (bench/tests/common) share the build.
    run_ok(
        Command::new(repo.join("scripts/build-static.sh"))
            .current_dir(&repo)
            .args(["-p", "wasmbox"]),
    );
    let binary = repo.join("target/x86_64-unknown-linux-musl/release/wasmbox");
    assert!(
        is_static_elf(&std::fs::read(&binary).unwrap()),
        "{} is not static",
        binary.display()
    );
    eprintln!("musl build: {:.1?}", started.elapsed());

    let unique = format!(
        "wasmbox-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let p = Podman {
        bin: podman,
        container: unique.clone(),
        image: format!("localhost/{unique}:test"),
    };
    let started = Instant::now();
    run_ok(p.cmd().current_dir(&repo).args([
        "build",
        "-q",
        "-f",
        "Containerfile",
        "-t",
        &p.image,
        ".",
    ]));
    let inspect = run_ok(p.cmd().args(["image", "inspect", &p.image]));
    let inspect: Value = serde_json::from_str(&inspect).unwrap();
    let img = &inspect[0];
    let size = img["Size"].as_u64().unwrap();
    eprintln!(
        "image built in {:.1?}: {:.1} MiB ({size} bytes)",
        started.elapsed(),
        size as f64 / (1 << 20) as f64
    );
    assert_eq!(img["Config"]["User"], "65532:65532");
    assert!(
        img["Config"]["ExposedPorts"].get("8080/tcp").is_some(),
        "{}",
        img["Config"]
    );
    assert_eq!(
        img["Config"]["Entrypoint"],
        json!(["/usr/local/bin/wasmbox"])
    );
    assert_eq!(img["Config"]["Cmd"], json!(["serve"]));
    // Only the binary and the functions: scratch adds nothing, so the image
    // is the binary plus the functions, give or take the layer metadata.
    let functions: u64 = std::fs::read_dir(repo.join("functions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm") || p.ends_with("hello.wat"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let payload = std::fs::metadata(&binary).unwrap().len() + functions;
    assert!(
        size >= payload && size < payload + (1 << 20),
        "image {size} bytes, binary + functions {payload}"
    );

    // Run it as Knative would: PORT set, and the admin listener as the
    // manifests configure it.
    let [host_port, admin_port] = free_ports();
    let token = "image-test-admin-token";
    run_ok(p.cmd().args([
        "run",
        "-d",
        "--name",
        &p.container,
        "--runtime=runc",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1000:1000",
        "-e",
        "PORT=8080",
        "-e",
        "WASMBOX_ADMIN_LISTEN=0.0.0.0:9464",
        "-e",
        &format!("WASMBOX_ADMIN_TOKEN={token}"),
        "-p",
        &format!("127.0.0.1:{host_port}:8080"),
        "-p",
        &format!("127.0.0.1:{admin_port}:9464"),
        &p.image,
    ]));
    let logs = || {
        let out = run(p.cmd().args(["logs", &p.container]));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    wait_ready(host_port, "/-/ready", Duration::from_secs(60), logs);

    let (status, body) = http(host_port, "GET", "/hello", "").unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "Hello from wasmbox!\n"),
        "{}",
        logs()
    );
    let (status, body) = http(
        host_port,
        "POST",
        "/echo?arg=--upper&arg=hi",
        "from outside",
    )
    .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "hi\nFROM OUTSIDE"),
        "{}",
        logs()
    );
    let (status, body) = http(host_port, "POST", "/wc", "one two\nthree\n").unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body.split_whitespace().take(3).collect::<Vec<_>>(),
        ["2", "3", "14"],
        "{body}"
    );
    let (status, moved) = http(host_port, "GET", "/-/functions", "").unwrap();
    assert_eq!(status, 404, "{moved}");
    let auth = format!("Authorization: Bearer {token}\r\n");
    let (status, listed) = http_with(admin_port, "GET", "/-/functions", "", &auth).unwrap();
    assert_eq!(status, 200, "{listed}");
    for f in bundled {
        assert!(listed.contains(f), "{f} not in /-/functions: {listed}");
    }

    // Non-root inside the container, so auto isolation settled on throttle.
    let top = run_ok(p.cmd().args(["top", &p.container, "huser", "comm"]));
    assert!(
        top.lines()
            .any(|l| l.split_whitespace().eq(["65532", "wasmbox"])),
        "{top}"
    );
    let log = logs();
    assert!(
        !log.contains(token),
        "the admin token is in the log:\n{log}"
    );
    assert!(
        log.contains("mode=throttle"),
        "isolation not throttle as non-root:\n{log}"
    );

    // SIGTERM drains and exits 0.
    run_ok(p.cmd().args(["stop", "-t", "20", &p.container]));
    let code = run_ok(
        p.cmd()
            .args(["inspect", "--format", "{{.State.ExitCode}}", &p.container]),
    );
    assert_eq!(code.trim(), "0", "exit status after SIGTERM:\n{}", logs());
}
