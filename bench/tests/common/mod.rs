//! Helpers of the harness's smoke tests: the checkout, and the release
//! binaries the harness drives.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the release `wasmbox` and `wasmbox-bench` (a no-op when they are
/// current) and returns the harness binary.
pub fn release_harness() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .current_dir(repo())
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "wasmbox",
            "-p",
            "wasmbox-bench",
        ])
        .status()
        .unwrap();
    assert!(st.success(), "release build failed");
    repo().join("target/release/wasmbox-bench")
}
