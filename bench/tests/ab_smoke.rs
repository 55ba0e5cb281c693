//! `wasmbox-bench ab` with the same build as A and B, for a fraction of a
//! second per cell: every row is written with a rate for both builds, the
//! back-to-back ratio is printed, and a binary that does not exist is
//! named in the error. No timing is asserted.

mod common;

use common::repo;
use std::process::Command;

fn ab(a: &std::path::Path, b: &std::path::Path, out: &std::path::Path) -> std::process::Output {
    Command::new(common::release_harness())
        .current_dir(repo())
        .args(["ab", "--rounds", "1", "--seconds", "0.2", "--a"])
        .arg(a)
        .arg("--b")
        .arg(b)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn every_row_gets_a_rate_for_both_builds() {
    for needed in ["functions/hello.wat", "functions/hellohttp.wasm"] {
        assert!(
            repo().join(needed).exists(),
            "{needed} is missing: run functions/build.sh (scripts/test.sh does)"
        );
    }
    let harness = common::release_harness();
    let wasmbox = harness.with_file_name("wasmbox");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ab.md");
    let run = ab(&wasmbox, &wasmbox, &out);
    assert!(
        run.status.success(),
        "ab failed: {}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let report = std::fs::read_to_string(&out).unwrap();
    let rows: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| row"))
        .collect();
    assert_eq!(rows.len(), 6, "{report}");
    assert!(
        report.contains("client p99 at `cpu_quota: 100` / at 1000"),
        "no back-to-back ratio: {report}"
    );
    for row in rows {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // A's and B's median rates, and their ratio: positive numbers.
        for i in [4, 5, 6] {
            let n: f64 = cells[i].split(' ').next().unwrap().parse().unwrap();
            assert!(n > 0.0, "{row}");
        }
    }
}

#[test]
fn a_missing_build_is_named() {
    let wasmbox = common::release_harness().with_file_name("wasmbox");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-wasmbox");
    let run = ab(&wasmbox, &missing, &dir.path().join("ab.md"));
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("no-such-wasmbox: no such binary"), "{err}");
}
