//! `wasmbox-bench guest-build --quick` against the variants
//! functions/build.sh makes: every setting's row is written, each guest
//! ran (the harness fails on a wrong output) and each figure is a number.
//! No timing is asserted.

mod common;

use common::repo;
use std::process::Command;

#[test]
fn every_build_setting_gets_a_measured_row() {
    for needed in [
        "functions/echo.wasm",
        "functions/variants/echo-stack64k.wasm",
        "functions/scryptwork.wasm",
        "functions/variants/scryptwork-nosimd.wasm",
    ] {
        assert!(
            repo().join(needed).exists(),
            "{needed} is missing: run functions/build.sh (scripts/test.sh does)"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("guest_build.md");
    let run = Command::new(common::release_harness())
        .current_dir(repo())
        .args(["guest-build", "--quick", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "guest-build failed: {}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let report = std::fs::read_to_string(&out).unwrap();
    let rows: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("| ") && l.contains("`-C "))
        .collect();
    assert_eq!(rows.len(), 2, "{report}");
    for (row, flag) in rows.iter().zip(["-zstack-size=65536", "+simd128"]) {
        assert!(row.contains(flag), "{row}");
        // The "faster" column: a positive ratio.
        let faster: f64 = row
            .split('|')
            .nth(4)
            .unwrap()
            .trim()
            .trim_end_matches('x')
            .parse()
            .unwrap();
        assert!(faster > 0.0, "{row}");
    }
}
