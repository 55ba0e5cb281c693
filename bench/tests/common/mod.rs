//! Helpers of the harness's smoke tests: the checkout, and the release
//! binaries the harness drives.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the release `wasmbox` and `wasmbox-bench` (a no-op when they are
/// current) and returns the harness binary. The static build the container
/// image ships (scripts/build-static.sh, which the image test uses too), so
/// a test run compiles wasmtime in release once, not once per target.
pub fn release_harness() -> PathBuf {
    let st = Command::new(repo().join("scripts/build-static.sh"))
        .current_dir(repo())
        .args(["-p", "wasmbox", "-p", "wasmbox-bench"])
        .status()
        .unwrap();
    assert!(st.success(), "release build failed");
    repo().join("target/x86_64-unknown-linux-musl/release/wasmbox-bench")
}
