//! `wasmbox-bench isolation`: what holding an invocation to its cpu_quota
//! costs per invocation in each mode, against the reference's per-request
//! cgroup lifecycle re-enacted on this machine; and how accurately each mode
//! delivers the quota.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use wasmbox_isolation::{cgroup_v2::CgroupV2, IsolationConfig, Mode, Requested, Slot};

use crate::{lat, machine, Lat, ServerProc};

/// Times `f` `n` times on a fresh thread, sleeping `gap` before each.
fn timed(
    n: usize,
    gap: Duration,
    setup: impl FnOnce() -> Box<dyn FnMut(usize) + Send> + Send,
) -> Lat {
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut f = setup();
            let mut h = Histogram::<u64>::new(3).unwrap();
            for i in 0..n {
                if !gap.is_zero() {
                    std::thread::sleep(gap);
                }
                let t = Instant::now();
                f(i);
                h.record(t.elapsed().as_nanos().max(1) as u64).unwrap();
            }
            lat(&h)
        })
        .join()
        .unwrap()
    })
}

/// Per-invocation cost of one mode's `Slot::apply`, quota changing every
/// time (the worst case: every call writes).
fn slot_cost(mode: Mode, n: usize, gap: Duration) -> anyhow::Result<Lat> {
    slot_cost_with(mode, n, gap, |i| if i % 2 == 0 { 250 } else { 500 })
}

fn slot_cost_with(
    mode: Mode,
    n: usize,
    gap: Duration,
    quota: fn(usize) -> u64,
) -> anyhow::Result<Lat> {
    let cfg = IsolationConfig {
        requested: Requested::Exactly(mode),
        ..Default::default()
    };
    let iso = wasmbox_isolation::open(&cfg).map_err(anyhow::Error::msg)?;
    let l = timed(n, gap, || {
        let mut slot: Box<dyn Slot> = iso.slot(0, wasmbox_isolation::current_tid()).unwrap();
        Box::new(move |i| {
            std::hint::black_box(slot.apply(quota(i)).unwrap());
        })
    });
    iso.shutdown();
    Ok(l)
}

/// The reference's steps per request, on cgroup v1's cpu controller (the
/// one this machine can enforce with): mkdir a fresh cgroup, write the
/// quota, move the thread in, and after the run move it back and rmdir.
fn reference_v1(base: &Path, n: usize, gap: Duration) -> Lat {
    let base = base.to_path_buf();
    timed(n, gap, move || {
        let tid = wasmbox_isolation::current_tid().to_string();
        Box::new(move |i| {
            let name = format!("wasmbox-bench-ref-{}-{i}", std::process::id());
            let dir = reference_v1_enter(&base, &name, &tid, 50000);
            reference_v1_leave(&base, &tid, &dir);
        })
    })
}

/// The reference's steps before a run, on cgroup v1: mkdir `base/name`,
/// write the quota, move thread `tid` in. Returns the new cgroup.
pub(crate) fn reference_v1_enter(base: &Path, name: &str, tid: &str, quota_us: u64) -> PathBuf {
    let dir = base.join(name);
    std::fs::create_dir(&dir).unwrap();
    write(&dir.join("cpu.cfs_period_us"), "100000");
    write(&dir.join("cpu.cfs_quota_us"), &quota_us.to_string());
    write(&dir.join("tasks"), tid);
    dir
}

/// ...and after it: move the thread back to `base` and remove the cgroup.
pub(crate) fn reference_v1_leave(base: &Path, tid: &str, dir: &Path) {
    write(&base.join("tasks"), tid);
    rmdir_retry(dir);
}

/// The reference's own v2 steps (mkdir, `threaded`, TID into
/// cgroup.threads, back, rmdir) on this machine's real cgroup2 mount, minus
/// the `cpu.max` write its cpu controller cannot take here.
fn reference_v2(domain: &Path, n: usize, gap: Duration) -> Lat {
    let domain = domain.to_path_buf();
    timed(n, gap, move || {
        let tid = wasmbox_isolation::current_tid().to_string();
        Box::new(move |i| {
            let dir = domain.join(format!("ref-{i}"));
            std::fs::create_dir(&dir).unwrap();
            write(&dir.join("cgroup.type"), "threaded");
            write(&dir.join("cgroup.threads"), &tid);
            write(&domain.join("cgroup.threads"), &tid);
            rmdir_retry(&dir);
        })
    })
}

fn write(p: &Path, v: &str) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(p)
        .and_then(|mut f| f.write_all(v.as_bytes()))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
}

fn rmdir_retry(p: &Path) {
    wasmbox_isolation::fs::remove_cgroup(p).unwrap();
}

pub(crate) fn v1_base() -> Option<PathBuf> {
    let p = PathBuf::from("/sys/fs/cgroup/cpu");
    p.join("tasks").exists().then_some(p)
}

/// The CPU share one `spin` call of `ms` received (Server-Timing `cpu` /
/// `execute`), and the work the guest did: its rounds per second of
/// execution.
fn measured_share(port: u16, quota: u64, ms: u64) -> anyhow::Result<(f64, f64)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(
        s,
        "GET /spin?arg={ms} HTTP/1.1\r\nhost: b\r\ncpu_quota: {quota}\r\nconnection: close\r\n\r\n"
    )?;
    let mut r = String::new();
    s.read_to_string(&mut r)?;
    let timing = r
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("server-timing: ")
                .map(String::from)
        })
        .context("no Server-Timing")?;
    let phase = |n: &str| -> f64 {
        timing
            .split(", ")
            .find_map(|p| p.strip_prefix(&format!("{n};dur=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    if !r.starts_with("HTTP/1.1 200") {
        bail!("spin failed: {r}");
    }
    let rounds: f64 = r
        .split_once("spun ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("spin printed no round count")?;
    Ok((
        phase("cpu") / phase("execute"),
        rounds / phase("execute") * 1e3,
    ))
}

pub fn run(quick: bool, out: &Path) -> anyhow::Result<()> {
    let (n, n_idle) = if quick { (2000, 10) } else { (20000, 60) };
    let gap = Duration::from_millis(50);
    let mut r = String::new();
    writeln!(r, "# CPU isolation benchmark\n\n{}\n", machine())?;
    writeln!(
        r,
        "Command: `cargo run --release -p wasmbox-bench -- isolation{}`\n",
        if quick { " --quick" } else { "" }
    )?;
    writeln!(r, "## Per-invocation isolation cost\n")?;
    writeln!(
        r,
        "wasmbox: `Slot::apply` on a worker thread, quota alternating 250/500 so every call \
         writes (the worst case; an unchanged quota writes nothing); a call that reaches an epoch tick also \
         moves its thread into the slot and back, not measured here. Reference: its per-request cgroup lifecycle \
         re-enacted (mkdir, quota, move thread in, move back, rmdir). Back to back: {n} invocations; after idle: \
         {n_idle} invocations each after 50 ms of sleep.\n"
    )?;
    writeln!(
        r,
        "| what | back-to-back p50 | p99 | after 50 ms idle p50 | p99 |\n|---|---|---|---|---|"
    )?;
    let mut rows: Vec<(String, Lat, Lat)> = Vec::new();
    let mut v1_apply = None;
    let mut v1_same = None;
    for mode in [Mode::CgroupV1, Mode::Throttle, Mode::None] {
        match (
            slot_cost(mode, n, Duration::ZERO),
            slot_cost(mode, n_idle, gap),
        ) {
            (Ok(a), Ok(b)) => {
                if mode == Mode::CgroupV1 {
                    v1_apply = Some((a.p50_us, b.p50_us));
                }
                rows.push((format!("wasmbox {mode}"), a, b));
            }
            (Err(e), _) | (_, Err(e)) => {
                writeln!(r, "| wasmbox {mode} | not available: {e} | | | |")?
            }
        }
    }
    if let (Ok(a), Ok(b)) = (
        slot_cost_with(Mode::CgroupV1, n, Duration::ZERO, |_| 250),
        slot_cost_with(Mode::CgroupV1, n_idle, gap, |_| 250),
    ) {
        v1_same = Some((a.p50_us, b.p50_us));
        rows.push(("wasmbox cgroup-v1, quota unchanged (no write)".into(), a, b));
    }
    writeln!(r, "| wasmbox cgroup-v2 | not measurable here: this machine's cgroup2 has no cpu controller; per invocation it is the same single kept-fd write as cgroup-v1 (`cpu.max` instead of `cpu.cfs_quota_us`) | | | |")?;
    let mut ref_v1 = None;
    if let Some(base) = v1_base() {
        let a = reference_v1(&base, n / 4, Duration::ZERO);
        let b = reference_v1(&base, n_idle, gap);
        ref_v1 = Some((a.p50_us, b.p50_us));
        rows.push(("reference lifecycle, cgroup v1 cpu".into(), a, b));
    }
    if let Ok(parent) = wasmbox_isolation::fs::own_cgroup(wasmbox_isolation::fs::Hierarchy::V2) {
        match CgroupV2::open_placement_only(parent) {
            Ok(v2) => {
                let a = reference_v2(v2.domain(), n / 4, Duration::ZERO);
                let b = reference_v2(v2.domain(), n_idle, gap);
                rows.push((
                    "reference lifecycle, cgroup v2 threaded (no cpu.max)".into(),
                    a,
                    b,
                ));
                use wasmbox_isolation::Isolation;
                v2.shutdown();
            }
            Err(e) => writeln!(
                r,
                "| reference lifecycle, cgroup v2 | not available: {e} | | | |"
            )?,
        }
    }
    for (name, a, b) in &rows {
        println!(
            "{name}: {:.2} µs / {:.2} µs; idle {:.2} µs / {:.2} µs",
            a.p50_us, a.p99_us, b.p50_us, b.p99_us
        );
        writeln!(
            r,
            "| {name} | {:.2} µs | {:.2} µs | {:.2} µs | {:.2} µs |",
            a.p50_us, a.p99_us, b.p50_us, b.p99_us
        )?;
    }
    if let (Some((w, wi)), Some((f, fi))) = (v1_apply, ref_v1) {
        writeln!(r, "\n| goal | achieved |\n|---|---|")?;
        writeln!(r, "| wasmbox cgroup-v1 per invocation p50 <= 5 µs | {w:.2} µs (quota changing every call) |")?;
        writeln!(
            r,
            "| >= 10x cheaper than the reference lifecycle at p50, back to back | {:.0}x |",
            f / w
        )?;
        writeln!(r, "| >= 1000x cheaper after 50 ms idle gaps | {:.0}x with the quota changing every call; {} with an unchanged quota |", fi / wi,
            v1_same.map_or("n/a".to_string(), |(_, si)| format!("{:.0}x", fi / si)))?;
    }

    writeln!(r, "\n## Quota accuracy\n")?;
    writeln!(r, "CPU share received by `spin` running 2 s of wall time over HTTP, thread CPU time / wall time (Server-Timing `cpu` / `execute`), and in brackets the work it did: its rounds per second as a share of the same call's with no limit (the median of the `none` row's four cells, this run). A share of CPU the guest did not get to use for its work (spent by the throttle sleeping and waking, for example) shows as less work than CPU.\n")?;
    writeln!(
        r,
        "| mode | 100 | 250 | 500 | 1000 |\n|---|---|---|---|---|"
    )?;
    let mut rows = Vec::new();
    for mode in ["cgroup-v1", "throttle", "none"] {
        let server = match ServerProc::start_with(&["--cpu-isolation", mode]) {
            Ok(s) => s,
            Err(e) => {
                rows.push((mode, Err(e.to_string())));
                continue;
            }
        };
        let mut cells = Vec::new();
        for q in [100, 250, 500, 1000] {
            let (share, rounds) = measured_share(server.port, q, if quick { 500 } else { 2000 })?;
            println!(
                "{mode} quota {q}: {:.1} %, {rounds:.0} rounds/s",
                share * 100.0
            );
            cells.push((share, rounds));
        }
        rows.push((mode, Ok(cells)));
    }
    // Every `none` cell runs unlimited (the quota is not enforced): their
    // median is the reference, steadier than any one 2 s call.
    let full = rows.iter().find_map(|(mode, cells)| match (mode, cells) {
        (&"none", Ok(c)) => {
            let mut r: Vec<f64> = c.iter().map(|&(_, rounds)| rounds).collect();
            r.sort_by(f64::total_cmp);
            Some((r[1] + r[2]) / 2.0)
        }
        _ => None,
    });
    for (mode, cells) in rows {
        match cells {
            Err(e) => writeln!(r, "| {mode} | not available: {e} | | | |")?,
            Ok(cells) => {
                let cells: Vec<String> = cells
                    .iter()
                    .map(|(share, rounds)| match full {
                        Some(f) => format!("{:.1} % ({:.1} %)", share * 100.0, rounds / f * 100.0),
                        None => format!("{:.1} %", share * 100.0),
                    })
                    .collect();
                writeln!(r, "| {mode} | {} |", cells.join(" | "))?;
            }
        }
    }
    if v1_base().is_some() {
        let dur = Duration::from_secs(if quick { 3 } else { 10 });
        r.push_str(&crate::mixed_quotas::section(dur)?);
    }
    std::fs::create_dir_all(out.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(out, &r)?;
    println!("wrote {}", out.display());
    Ok(())
}
