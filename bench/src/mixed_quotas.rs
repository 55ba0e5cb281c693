//! Two tenants on one cgroup-v1 server: hello with no limit (`cpu_quota:
//! 1000`, a whole core) beside hello held to half a core, and how often
//! worker threads moved between cgroups meanwhile. Workers wait outside
//! their slots and enter one only for a call with a limit that reaches an
//! epoch tick (two moves per such call, tens of µs each).

use std::fmt::Write as _;
use std::time::Duration;

use crate::client::{p50_p99_ms, scrape};
use crate::hello_http::target;
use crate::{load, ServerProc};

const UNLIMITED_CLIENTS: usize = 8;
const LIMITED_QUOTA: u64 = 500;

/// The section's markdown: one table row, measured over `dur`.
pub(crate) fn section(dur: Duration) -> anyhow::Result<String> {
    let server =
        ServerProc::start_with(&["--cpu-isolation", "cgroup-v1", "--capacity-cpu", "256000"])?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let port = server.port;
    let (unlimited, limited, moves) = rt.block_on(async {
        let limit = Duration::from_secs(10);
        let moves = || async {
            let m = scrape(server.admin_port, limit).await?;
            m.get("wasmbox_worker_slot_moves_total")
                .copied()
                .ok_or_else(|| anyhow::anyhow!("no wasmbox_worker_slot_moves_total"))
        };
        // Workers started and in place before the window.
        load::http(
            &target(port, "/hello", 1000),
            UNLIMITED_CLIENTS,
            Duration::from_secs(1),
        )
        .await?
        .all_ok("warm-up")?;
        let before = moves().await?;
        let (free, held) = (
            target(port, "/hello", 1000),
            target(port, "/hello", LIMITED_QUOTA),
        );
        let (unlimited, limited) = tokio::join!(
            load::http(&free, UNLIMITED_CLIENTS, dur),
            load::http(&held, 1, dur),
        );
        let (unlimited, limited) = (
            unlimited?.all_ok("hello, no limit")?,
            limited?.all_ok("hello, cpu_quota 500")?,
        );
        let after = moves().await?;
        anyhow::Ok((unlimited, limited, after - before))
    })?;
    drop(server);
    let (p50, p99) = p50_p99_ms(&limited.latency);
    let max_ms = limited.latency.max() as f64 / 1e6;
    let per_s = moves / dur.as_secs_f64();
    println!(
        "mixed quotas: unlimited {:.0}/s; limited {:.0}/s p50 {p50:.2} ms p99 {p99:.2} ms max {max_ms:.2} ms; {moves} moves ({per_s:.1}/s)",
        unlimited.rate, limited.rate
    );
    let mut r = String::new();
    writeln!(r, "\n## Mixed quotas on one server\n")?;
    writeln!(
        r,
        "One `--cpu-isolation cgroup-v1` server (`--capacity-cpu 256000`: admission not binding), {:.0} s: \
         {UNLIMITED_CLIENTS} clients calling hello with `cpu_quota: 1000` (no limit: one thread cannot use more \
         than a core) beside one client calling it with `cpu_quota: {LIMITED_QUOTA}`, each on its own keep-alive \
         connection. Moves: worker threads moved into or out of their slot cgroups in the window \
         (`wasmbox_worker_slot_moves_total`): two per call with a limit that reached an epoch tick.\n",
        dur.as_secs_f64()
    )?;
    writeln!(
        r,
        "| no limit: req/s | limited: req/s | limited p50 | limited p99 | limited max | moves (per s) |\n|---|---|---|---|---|---|"
    )?;
    writeln!(
        r,
        "| {:.0} | {:.0} | {p50:.2} ms | {p99:.2} ms | {max_ms:.2} ms | {moves} ({per_s:.1}) |",
        unlimited.rate, limited.rate
    )?;
    Ok(r)
}
