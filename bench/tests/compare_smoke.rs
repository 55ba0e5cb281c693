//! A smoke run of the benchmark harness (`wasmbox-bench compare --smoke`:
//! tiny workloads, 150 ms per cell) with the real peers, checking that the
//! report is produced with every table filled and the plots drawn. No
//! timing is asserted. Needs the wasmtime CLI (scripts/setup-bench.sh) and
//! the native and wasi:http builds (functions/build.sh); without them it
//! says why it skips, and fails instead when WASMBOX_REQUIRE_PEERS=1 (CI).

mod common;

use std::path::{Path, PathBuf};

use common::repo;
use std::process::Command;

fn skip_or_fail(why: &str) {
    if std::env::var("WASMBOX_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("{why}; WASMBOX_REQUIRE_PEERS=1, so this is a failure");
    }
    eprintln!("SKIPPED compare smoke run: {why}");
}

fn wasmtime_found() -> bool {
    let home = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin/wasmtime"));
    std::env::var_os("WASMTIME")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::iter::once(PathBuf::from("wasmtime")))
        .chain(home)
        .any(|w| {
            Command::new(w)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// The rows of the markdown table that follows `heading`.
fn table_after<'a>(report: &'a str, heading: &str) -> Vec<&'a str> {
    let start = report
        .find(heading)
        .unwrap_or_else(|| panic!("no `{heading}` in the report:\n{report}"));
    report[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // header and separator
        .collect()
}

#[test]
fn smoke_run_fills_every_table() {
    if !wasmtime_found() {
        return skip_or_fail(
            "the wasmtime CLI is not installed (scripts/setup-bench.sh installs it)",
        );
    }
    for needed in [
        "functions/native/genpdf",
        "functions/peers/hellohttp.wasm",
        "functions/hellohttp.wasm",
        "functions/echo.wasm",
    ] {
        if !repo().join(needed).exists() {
            return skip_or_fail(&format!(
                "{needed} is missing (functions/build.sh builds it)"
            ));
        }
    }
    // The harness drives the release binaries.
    let harness = common::release_harness();

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results/compare.md");
    let run = Command::new(&harness)
        .current_dir(repo())
        .args(["compare", "--smoke", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "harness failed: {}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let report = std::fs::read_to_string(&out).unwrap();

    // Goals (issues 13 and 14): 5 workloads' own overhead, 7 HTTP/scaling
    // (one the wasi:http component against `wasmtime serve`), 4 density,
    // 1 component density. Every one gets a verdict (PASS or MISS), with one
    // exception: a workload whose epoch build runs no longer than the process
    // floor in a smoke run's few samples has no overhead to divide, and its
    // row says so instead of printing a ratio of noise.
    let goals = table_after(&report, "## Goals");
    assert_eq!(
        goals.len(),
        5 + 7 + 4 + 1,
        "goal rows:\n{}",
        goals.join("\n")
    );
    let mut below_floor = 0;
    for row in &goals {
        if row.contains("| PASS |") || row.contains("**MISS**") {
            continue;
        }
        below_floor += 1;
        assert!(
            row.contains("own overhead")
                && row.contains("at or below the process floor")
                && row.contains("| not measured |"),
            "a goal with neither a verdict nor the floor as its reason: {row}"
        );
    }
    // Earlier goals (issue 5): 4 + 5 workloads' Wasm / native.
    let earlier = table_after(&report, "### Earlier goals");
    assert_eq!(earlier.len(), 4 + 5, "{}", earlier.join("\n"));
    for row in &earlier {
        assert!(
            row.contains("| met |") || row.contains("**missed**"),
            "{row}"
        );
    }
    let goals_md = std::fs::read_to_string(dir.path().join("results/goals.md")).unwrap();
    assert_eq!(table_after(&goals_md, "Command:").len(), goals.len());
    // The deadline's price: a row per workload; hello against its ceilings.
    // A workload without a goal verdict is one without a verdict there too.
    let prices = table_after(&report, "## The deadline's price");
    assert_eq!(prices.len(), 5);
    assert_eq!(
        prices
            .iter()
            .filter(|r| r.contains("| not measured |"))
            .count(),
        below_floor,
        "{}",
        prices.join("\n")
    );
    let hello = table_after(&report, "## hello over HTTP");
    assert!(
        hello.iter().any(|r| r.contains("bare hyper")),
        "{}",
        hello.join("\n")
    );
    // Admission not binding at a quota that holds each worker in its cgroup
    // too, with isolation on and none, and their ratio.
    let held = hello
        .iter()
        .filter(|r| r.contains("--capacity-cpu 256000 | 16 | 500 |"))
        .count();
    assert_eq!(held, 2, "{}", hello.join("\n"));
    assert!(report.contains("`cpu_quota: 500` (each worker held in its cgroup"));
    // Side by side: every function has its systems, every cell a number.
    for (function, systems) in [
        (
            "### hello",
            &[
                "wasmbox",
                "wasmbox, wasi:http component",
                "wasmtime serve",
                "reference pipeline (re-enacted)",
                "wasmtime run per request",
                "wasmtime run, epoch build + timeout",
            ][..],
        ),
        (
            "### jsoncompress",
            &[
                "wasmbox",
                "reference pipeline (re-enacted)",
                "wasmtime run per request",
                "wasmtime run, epoch build + timeout",
                "native fork/exec per request",
            ][..],
        ),
        (
            "### scryptwork",
            &[
                "wasmbox",
                "reference pipeline (re-enacted)",
                "wasmtime run per request",
                "wasmtime run, epoch build + timeout",
                "native fork/exec per request",
            ][..],
        ),
        (
            "### rsakeygen",
            &[
                "wasmbox",
                "reference pipeline (re-enacted)",
                "wasmtime run per request",
                "wasmtime run, epoch build + timeout",
                "native fork/exec per request",
            ][..],
        ),
        (
            "### imageblur",
            &[
                "wasmbox",
                "reference pipeline (re-enacted)",
                "wasmtime run per request",
                "wasmtime run, epoch build + timeout",
                "native fork/exec per request",
            ][..],
        ),
        (
            "### genpdf",
            &[
                "wasmbox",
                "reference pipeline (re-enacted)",
                "wasmtime run per request",
                "wasmtime run, epoch build + timeout",
                "native fork/exec per request",
            ][..],
        ),
    ] {
        let rows = table_after(&report, function);
        let names: Vec<&str> = rows
            .iter()
            .map(|r| r.split('|').nth(1).unwrap().trim())
            .collect();
        assert_eq!(names, systems, "{function}");
        for row in rows {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            // 4 concurrencies x (latency, rate), c=1 latencies are numbers.
            for cell in &cells[2..10] {
                assert!(
                    cell.chars().next().is_some_and(|c| c.is_ascii_digit()),
                    "{function}: `{cell}` in {row}"
                );
            }
        }
    }
    // Density and Wasm vs native.
    let density = table_after(&report, "## Density");
    assert_eq!(density.len(), 3, "{}", density.join("\n"));
    assert!(
        density.iter().all(|r| !r.contains("skipped")),
        "{}",
        density.join("\n")
    );
    // Component density: a row per kind, each with its RSS per function.
    let components = table_after(&report, "wasi:http handler components vs");
    assert_eq!(components.len(), 2, "{}", components.join("\n"));
    assert!(components[0].contains("preview-1 module"));
    assert!(components[1].contains("wasi:http component"));
    assert!(
        report.contains("Per loaded function, a component takes"),
        "no component / module ratio"
    );
    let exec = table_after(&report, "## Wasm vs native");
    assert_eq!(exec.len(), 5);
    // Plots: drawn, and linked from the report.
    for plot in [
        "latency-cdf.svg",
        "throughput.svg",
        "memory-per-function.svg",
    ] {
        let svg = std::fs::read_to_string(dir.path().join("results/plots").join(plot)).unwrap();
        assert!(
            svg.contains("<svg") && (svg.contains("<polyline") || svg.contains("<rect")),
            "{plot}"
        );
        assert!(
            report.contains(&format!("(plots/{plot})")),
            "{plot} not linked"
        );
    }
}
