//! Two wasmbox builds on the same hello rows, alternately (A, B, A, B, ..),
//! so that a change's effect is read from one run on a shared machine
//! rather than from two runs at different times. Each server serves a
//! directory holding only the two functions measured (`hello.wat` and the
//! wasi:http `hellohttp.wasm`), each called once before the first row, so
//! no compile runs during a row, for older builds too (they may not count
//! their prewarm scans).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::hello_http::{target, HELD_QUOTA};
use crate::load::{self, LoadResult};
use crate::stats::median;
use crate::{machine, repo_root, wait_http_ok, ServerProc};

/// One row: the server's options and the load it is measured under.
struct Spec {
    label: &'static str,
    extra: &'static [&'static str],
    path: &'static str,
    concurrency: usize,
    cpu_quota: u64,
}

const SPECS: &[Spec] = &[
    Spec {
        label: "hello, defaults",
        extra: &[],
        path: "/hello",
        concurrency: 1,
        cpu_quota: 1000,
    },
    Spec {
        label: "hello, defaults",
        extra: &[],
        path: "/hello",
        concurrency: 1,
        cpu_quota: 100,
    },
    Spec {
        label: "hello, defaults",
        extra: &[],
        path: "/hello",
        concurrency: 16,
        cpu_quota: 1000,
    },
    Spec {
        label: "hello, defaults",
        extra: &[],
        path: "/hello",
        concurrency: 16,
        cpu_quota: HELD_QUOTA,
    },
    Spec {
        label: "hellohttp (wasi:http component), defaults",
        extra: &[],
        path: "/hellohttp",
        concurrency: 16,
        cpu_quota: 1000,
    },
    Spec {
        label: "hello, --cpu-isolation none",
        extra: &["--cpu-isolation", "none"],
        path: "/hello",
        concurrency: 16,
        cpu_quota: 1000,
    },
];

/// One measured cell.
struct Cell {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    /// Server-Timing `total` p50 (the c=1 goal's figure).
    server_p50_us: f64,
}

impl From<&LoadResult> for Cell {
    fn from(r: &LoadResult) -> Self {
        Cell {
            rate: r.rate,
            p50_us: r.latency.value_at_quantile(0.5) as f64 / 1e3,
            p99_us: r.latency.value_at_quantile(0.99) as f64 / 1e3,
            server_p50_us: r.server_total.value_at_quantile(0.5) as f64 / 1e3,
        }
    }
}

pub(crate) struct Builds<'a> {
    pub(crate) a: &'a Path,
    pub(crate) b: &'a Path,
    pub(crate) rounds: usize,
    pub(crate) seconds: f64,
}

pub(crate) fn run(builds: &Builds, out: &Path) -> anyhow::Result<()> {
    for exe in [builds.a, builds.b] {
        if !exe.is_file() {
            bail!("{}: no such binary", exe.display());
        }
    }
    if builds.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let dir = functions_dir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let window = Duration::from_secs_f64(builds.seconds);
    // cells[spec][build][round]
    let mut cells: Vec<[Vec<Cell>; 2]> = SPECS.iter().map(|_| [vec![], vec![]]).collect();
    for round in 0..builds.rounds {
        // A, B, then B, A: a drift over the run favours neither.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let exe = [builds.a, builds.b][which];
            for (i, spec) in SPECS.iter().enumerate() {
                let server = start(exe, dir.path(), spec.extra)?;
                let t = target(server.port, spec.path, spec.cpu_quota);
                // Connections, worker threads and instance slots first.
                rt.block_on(load::http(&t, spec.concurrency, window / 4))?;
                let what = format!("{} c={} ({})", spec.label, spec.concurrency, exe.display());
                let r = rt
                    .block_on(load::http(&t, spec.concurrency, window))?
                    .all_ok(&what)?;
                let cell = Cell::from(&r);
                println!(
                    "round {} {}: {what} q{}: {:.0} req/s, p50 {:.1} µs (server {:.1} µs)",
                    round + 1,
                    ["A", "B"][which],
                    spec.cpu_quota,
                    cell.rate,
                    cell.p50_us,
                    cell.server_p50_us
                );
                cells[i][which].push(cell);
            }
        }
    }
    let report = report(builds, &cells)?;
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(out, report).with_context(|| format!("write {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

/// A directory with only the measured functions in it.
fn functions_dir() -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    for name in ["hello.wat", "hellohttp.wasm"] {
        let from = repo_root().join("functions").join(name);
        std::fs::copy(&from, dir.path().join(name)).with_context(|| {
            format!(
                "copy {} (build the guests first: ./functions/build.sh)",
                from.display()
            )
        })?;
    }
    Ok(dir)
}

/// `exe serve` over `dir`, once both functions have answered (so both are
/// compiled) and, for builds that count them, the prewarm's first scan is over.
fn start(exe: &Path, dir: &Path, extra: &[&str]) -> anyhow::Result<ServerProc> {
    let mut server = ServerProc::start_exe(exe, dir, extra, "/hello")?;
    let port = server.port;
    wait_http_ok(port, "/hellohttp", Duration::from_secs(120), || {
        server.exited()
    })
    .with_context(|| format!("{} did not serve /hellohttp", exe.display()))?;
    if server.counts_prewarm_scans()? {
        server.until_prewarmed()?;
    }
    Ok(server)
}

fn report(builds: &Builds, cells: &[[Vec<Cell>; 2]]) -> anyhow::Result<String> {
    let mut s = String::new();
    writeln!(s, "# A/B: two wasmbox builds, alternately\n")?;
    writeln!(s, "{}\n", machine())?;
    writeln!(
        s,
        "Command: `wasmbox-bench ab --a {} --b {} --rounds {} --seconds {}`. \
         Each round starts every row's server with both builds, A first in odd rounds \
         and B first in even ones; \
         a server serves only `hello.wat` and `hellohttp.wasm`, both called once before \
         the row; closed-loop hyper clients in the bench process (sharing the cores with \
         the server), {} s per cell after a warm-up of a quarter of that. \
         p50, p99: the client's latency; server p50: the server's `Server-Timing` `total` \
         (the median round of each).\n",
        builds.a.display(),
        builds.b.display(),
        builds.rounds,
        builds.seconds,
        builds.seconds,
    )?;
    writeln!(
        s,
        "| row | c | cpu_quota | A req/s (rounds) | B req/s (rounds) | B / A (medians) | A p50 µs | B p50 µs | A p99 µs | B p99 µs | A server p50 µs | B server p50 µs |"
    )?;
    writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|")?;
    let med = |c: &[Cell], f: fn(&Cell) -> f64| median(&mut c.iter().map(f).collect::<Vec<_>>());
    for (spec, [a, b]) in SPECS.iter().zip(cells) {
        let rates = |c: &[Cell]| {
            c.iter()
                .map(|c| format!("{:.0}", c.rate))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (ra, rb) = (med(a, |c| c.rate), med(b, |c| c.rate));
        writeln!(
            s,
            "| {} | {} | {} | {:.0} ({}) | {:.0} ({}) | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            spec.label,
            spec.concurrency,
            spec.cpu_quota,
            ra,
            rates(a),
            rb,
            rates(b),
            rb / ra,
            med(a, |c| c.p50_us),
            med(b, |c| c.p50_us),
            med(a, |c| c.p99_us),
            med(b, |c| c.p99_us),
            med(a, |c| c.server_p50_us),
            med(b, |c| c.server_p50_us),
        )?;
    }
    // The back-to-back goal: one connection's p99 at quota 100 over the
    // same at 1000 (compare's row), each build's median rounds.
    let at = |quota: u64| {
        SPECS
            .iter()
            .position(|p| {
                p.extra.is_empty()
                    && p.path == "/hello"
                    && p.concurrency == 1
                    && p.cpu_quota == quota
            })
            .map(|i| &cells[i])
    };
    if let (Some(slow), Some(fast)) = (at(100), at(1000)) {
        let p99 = |c: &[Cell]| med(c, |c| c.p99_us);
        writeln!(
            s,
            "\nhello c=1, defaults, client p99 at `cpu_quota: 100` / at 1000 (compare's back-to-back goal, <= 2x): A {:.2}x, B {:.2}x",
            p99(&slow[0]) / p99(&fast[0]),
            p99(&slow[1]) / p99(&fast[1]),
        )?;
    }
    Ok(s)
}
