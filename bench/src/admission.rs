//! `wasmbox-bench admission`: what admission costs per invocation when
//! nothing waits, and a mixed load through the queue over HTTP.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use wasmbox_admission::{Admission, AdmissionConfig, Resources};

use crate::{http_load_with, machine, ServerProc};

fn config() -> AdmissionConfig {
    AdmissionConfig {
        cpu_overbook: 1.0,
        memory_overbook: 1.4,
        max_queue: 1000,
        max_queue_mb: 100_000,
        queue_timeout: Duration::from_secs(30),
        cpu_gate: Some(1.8),
        ..AdmissionConfig::new(Resources {
            cpu_millis: 2000,
            memory_mb: 4096,
        })
    }
}

/// Mean ns per admit + release, uncontended, over `n` rounds.
async fn uncontended(n: u64) -> f64 {
    let a = Admission::new(config());
    let want = Resources {
        cpu_millis: 250,
        memory_mb: 64,
    };
    let function: wasmbox_admission::FunctionKey = std::sync::Arc::from("hello.wat");
    let t = Instant::now();
    for _ in 0..n {
        let p = a.admit(&function, want).await.unwrap();
        drop(std::hint::black_box(p));
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

/// The mixed load: cpu_quota 250/500/1000 and Memory-Request 32/64/128 in
/// rotation.
fn mixed(i: usize) -> (u64, u64) {
    ([250, 500, 1000][i % 3], [32, 64, 128][(i / 3) % 3])
}

pub fn run(quick: bool, out: &Path) -> anyhow::Result<()> {
    let secs = if quick { 1.0 } else { 5.0 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut r = String::new();
    writeln!(r, "# Admission benchmark\n\n{}\n", machine())?;
    writeln!(
        r,
        "Command: `cargo run --release -p wasmbox-bench -- admission{}`\n",
        if quick { " --quick" } else { "" }
    )?;
    let ns = rt.block_on(uncontended(if quick { 200_000 } else { 2_000_000 }));
    println!("admission uncontended: {ns:.0} ns per admit + release");
    writeln!(
        r,
        "## Overhead\n\n| measure | result | goal |\n|---|---|---|"
    )?;
    writeln!(
        r,
        "| admit + release, uncontended (in process, mean) | {:.3} µs | <= 2 µs |\n",
        ns / 1e3
    )?;

    writeln!(r, "## Mixed load over HTTP\n")?;
    writeln!(
        r,
        "`hello` at concurrency 16 with cpu_quota 250/500/1000 and Memory-Request 32/64/128 in rotation. \
         \"through the queue\": capacity 2000 millicores, so at most a few run at once and the rest wait in \
         the FIFO queue; \"admission never binds\": capacity 1,000,000 millicores. cgroup-v1 isolation on.\n"
    )?;
    writeln!(
        r,
        "| setting | p50 | p99 | req/s | non-200 |\n|---|---|---|---|---|"
    )?;
    for (label, cap) in [
        ("through the queue (capacity 2000 m)", "2000"),
        ("admission never binds", "1000000"),
    ] {
        let server = ServerProc::start_with(&["--capacity-cpu", cap, "--cpu-isolation", "auto"])?;
        let (l, rate, bad) = rt.block_on(http_load_with(
            server.port,
            16,
            Duration::from_secs_f64(secs),
            mixed,
        ))?;
        println!(
            "{label}: p50 {:.1} µs p99 {:.1} µs {rate:.0} req/s ({bad} non-200)",
            l.p50_us, l.p99_us
        );
        writeln!(
            r,
            "| {label} | {:.1} µs | {:.1} µs | {rate:.0} | {bad} |",
            l.p50_us, l.p99_us
        )?;
    }
    std::fs::create_dir_all(out.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(out, &r)?;
    println!("wrote {}", out.display());
    Ok(())
}
