//! Helpers of the harness's smoke tests: the checkout, and the release
//! binaries the harness drives.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The target the smoke tests build for: the static build the container
/// image ships (crates/wasmbox/tests/deploy/image.rs builds the same, with
/// the same settings), so a test run compiles wasmtime in release once, not
/// once per target.
const TARGET: &str = "x86_64-unknown-linux-musl";

/// Builds the release `wasmbox` and `wasmbox-bench` (a no-op when they are
/// current) and returns the harness binary.
pub fn release_harness() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .current_dir(repo())
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            TARGET,
            "-p",
            "wasmbox",
            "-p",
            "wasmbox-bench",
        ])
        .status()
        .unwrap();
    assert!(st.success(), "release build failed");
    repo().join(format!("target/{TARGET}/release/wasmbox-bench"))
}
