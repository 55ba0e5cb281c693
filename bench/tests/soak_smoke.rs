//! A short soak (`wasmbox-bench soak --seconds 10`) against the release
//! server: mixed, partly hostile traffic at saturation, then the report's
//! verdicts: no status outside the table, no 500, descriptors, threads,
//! slot cgroups and RSS back within their bounds, the server still serving.
//! The bounds are the report's own; no timing is asserted.

mod common;

use common::repo;
use std::process::Command;

#[test]
fn a_short_soak_passes_every_verdict() {
    for needed in [
        "functions/echo.wasm",
        "functions/sleep.wasm",
        "functions/spin.wasm",
    ] {
        assert!(
            repo().join(needed).exists(),
            "{needed} is missing: run functions/build.sh (scripts/test.sh does)"
        );
    }
    // The harness drives the release binaries.
    let harness = common::release_harness();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("soak.md");
    let run = Command::new(&harness)
        .current_dir(repo())
        .args(["soak", "--seconds", "10", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "soak failed: {}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let report = std::fs::read_to_string(&out).unwrap();
    let verdicts: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("- PASS") || l.starts_with("- FAIL"))
        .collect();
    assert!(verdicts.len() >= 6, "no verdicts in the report:\n{report}");
    assert!(
        verdicts.iter().all(|v| v.starts_with("- PASS")),
        "a soak verdict failed:\n{report}"
    );
}
