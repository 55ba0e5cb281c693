//! `wasmbox-bench containment`: does a hostile tenant hurt a well-behaved
//! one (issue #11)? A real `wasmbox serve` (release build, CPU isolation
//! on, `--timeout 2s`, `--capacity-cpu 2000`). The well-behaved tenant is
//! one closed-loop client calling `/hello` (cpu_quota 100, Memory-Request
//! 16). Phase A: alone. Phase B: while a hostile tenant runs abandoned
//! sleepers (`/sleep`, an hour, hung up after 200 ms, 64 at a time) and CPU
//! hogs (32 closed-loop clients calling `/hog?arg=400`, cpu_quota 1000).
//! The server's gauges are read at the end of B and 3 s after the hostile
//! tenant stops. Writes bench/results/containment.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::{self, ms, p50_p99_ms, Conn, Tally};
use crate::{machine, repo_root, server_ctl};

const WELL_LIMIT: Duration = Duration::from_secs(5);
const HOG_LIMIT: Duration = Duration::from_secs(10);
const HANG_UP: Duration = Duration::from_millis(200);
const SLEEPERS: usize = 64;
const HOGS: usize = 32;
const SETTLE: Duration = Duration::from_secs(3);
/// The gauges reported, by their exposition names.
const GAUGES: [&str; 7] = [
    "wasmbox_workers_busy",
    "wasmbox_workers_idle",
    "wasmbox_queue_depth",
    "wasmbox_queue_memory_mb",
    "wasmbox_reserved_cpu_millicores",
    "wasmbox_reserved_memory_mb",
    "wasmbox_cpu_utilization_cores",
];

fn hello_ok(body: &[u8]) -> bool {
    body == b"Hello from wasmbox!\n"
}

fn spin_ok(body: &[u8]) -> bool {
    body.starts_with(b"spun ")
}

/// The well-behaved tenant: one client, `/hello` back to back for `dur`.
/// Returns its tally (latency of every call, failures at their latency)
/// and the 200s per second.
async fn well_behaved(port: u16, dur: Duration) -> (Tally, f64) {
    let mut tally = Tally::new();
    let start = Instant::now();
    let mut conn: Option<Conn> = None;
    while start.elapsed() < dur {
        let c = match conn.as_mut() {
            Some(c) if !c.dead => c,
            _ => match Conn::open(port).await {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    tally.count("connection error".into(), Duration::ZERO);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let call = c.get("/hello", 100, 16, WELL_LIMIT).await;
        tally.count(call.outcome(&hello_ok), call.latency);
    }
    let rate = tally.ok() as f64 / start.elapsed().as_secs_f64();
    (tally, rate)
}

/// The hostile tenant's two kinds of client, counting into shared tallies;
/// runs until its tasks are aborted.
struct Hostile {
    sleepers: Arc<Mutex<Tally>>,
    hogs: Arc<Mutex<Tally>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Hostile {
    fn start(port: u16) -> Hostile {
        let sleepers = Arc::new(Mutex::new(Tally::new()));
        let hogs = Arc::new(Mutex::new(Tally::new()));
        let mut tasks = Vec::new();
        for _ in 0..SLEEPERS {
            let tally = sleepers.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let t = Instant::now();
                    let call = client::call_once(port, "/sleep", 100, 16, HANG_UP).await;
                    let outcome = match call.answer {
                        client::Answer::TimedOut(_) => "hung up after 200 ms".to_string(),
                        _ => call.outcome(&|b| b.starts_with(b"slept")),
                    };
                    tally.lock().unwrap().count(outcome, call.latency);
                    // At most one request per 200 ms per client, even when
                    // the server answers at once (e.g. refusals).
                    tokio::time::sleep(HANG_UP.saturating_sub(t.elapsed())).await;
                }
            }));
        }
        for _ in 0..HOGS {
            let tally = hogs.clone();
            tasks.push(tokio::spawn(async move {
                let mut conn: Option<Conn> = None;
                loop {
                    let c = match conn.as_mut() {
                        Some(c) if !c.dead => c,
                        _ => match Conn::open(port).await {
                            Ok(c) => conn.insert(c),
                            Err(_) => {
                                tally
                                    .lock()
                                    .unwrap()
                                    .count("connection error".into(), Duration::ZERO);
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                continue;
                            }
                        },
                    };
                    let call = c.get("/hog?arg=400", 1000, 16, HOG_LIMIT).await;
                    tally
                        .lock()
                        .unwrap()
                        .count(call.outcome(&spin_ok), call.latency);
                }
            }));
        }
        Hostile {
            sleepers,
            hogs,
            tasks,
        }
    }

    /// Aborts every client: their connections close (requests in flight
    /// are abandoned, as when the tenant goes away).
    async fn stop(self) -> (Tally, Tally) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        let take = |m: Arc<Mutex<Tally>>| std::mem::replace(&mut *m.lock().unwrap(), Tally::new());
        (take(self.sleepers), take(self.hogs))
    }
}

pub(crate) fn verdict(pass: bool) -> &'static str {
    if pass {
        "**PASS**"
    } else {
        "**FAIL**"
    }
}

pub(crate) fn run(quick: bool, out: &Path) -> anyhow::Result<()> {
    let (a_dur, b_dur) = if quick {
        (Duration::from_secs(10), Duration::from_secs(15))
    } else {
        (Duration::from_secs(30), Duration::from_secs(30))
    };
    let functions = repo_root().join("functions");
    let dir = tempfile::tempdir()?;
    for (from, to) in [
        ("hello.wat", "hello.wat"),
        ("sleep.wasm", "sleep.wasm"),
        ("spin.wasm", "hog.wasm"),
    ] {
        std::fs::copy(functions.join(from), dir.path().join(to))
            .map_err(|e| anyhow::anyhow!("functions/{from} (run functions/build.sh): {e}"))?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let server_args = ["--timeout", "2s", "--capacity-cpu", "2000"];
    let server = server_ctl::start(dir.path(), &server_args, "/hello")?;
    let port = server.port;
    let admin_port = server.admin_port;
    println!(
        "containment: wasmbox on port {port}, --cpu-isolation {}",
        server.mode
    );
    // Compile the hostile functions before measuring (and check they run).
    for path in ["/hog?arg=1", "/sleep?arg=1"] {
        let c = rt.block_on(client::call_once(
            port,
            path,
            1000,
            16,
            Duration::from_secs(30),
        ));
        if c.outcome(&|_| true) != "200" {
            anyhow::bail!("warm-up {path}: {:?}", c.answer);
        }
    }

    let (a, a_rate) = rt.block_on(well_behaved(port, a_dur));
    let (a50, a99) = p50_p99_ms(&a.latency);
    println!(
        "A (alone): p50 {} p99 {} {a_rate:.0} req/s; errors {}",
        ms(a50),
        ms(a99),
        a.describe_errors()
    );

    let (b, b_rate, at_end, after, sleepers, hogs) = rt.block_on(async {
        let hostile = Hostile::start(port);
        // Let the hostile tenant reach its steady state first.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (b, b_rate) = well_behaved(port, b_dur).await;
        let at_end = client::scrape(admin_port, Duration::from_secs(5)).await;
        let (sleepers, hogs) = hostile.stop().await;
        tokio::time::sleep(SETTLE).await;
        let after = client::scrape(admin_port, Duration::from_secs(5)).await;
        (b, b_rate, at_end, after, sleepers, hogs)
    });
    let (b50, b99) = p50_p99_ms(&b.latency);
    println!(
        "B (hostile tenant): p50 {} p99 {} {b_rate:.0} req/s; errors {}",
        ms(b50),
        ms(b99),
        b.describe_errors()
    );
    println!("hostile sleepers: {}", sleepers.describe());
    println!("hostile hogs: {}", hogs.describe());
    let at_end = at_end.unwrap_or_else(|e| {
        eprintln!("metrics at the end of B: {e:#}");
        BTreeMap::new()
    });
    let after = after.unwrap_or_else(|e| {
        eprintln!("metrics after the hostile tenant stopped: {e:#}");
        BTreeMap::new()
    });
    let mode = server.mode;
    let stopped = server.stop();
    println!("server: {}", stopped.describe());

    // The report.
    let ratio = b99 / a99;
    let mut r = String::new();
    writeln!(r, "# Tenant containment benchmark\n")?;
    writeln!(r, "{}\n", run_header(mode))?;
    writeln!(
        r,
        "Command: `target/release/wasmbox-bench containment{}` (release build of the server and this harness). \
         Server: `wasmbox serve --cpu-isolation {mode} {}`. Phase A {} s, phase B {} s.\n",
        if quick { " --quick" } else { "" },
        server_args.join(" "),
        a_dur.as_secs(),
        b_dur.as_secs()
    )?;
    writeln!(
        r,
        "**Well-behaved tenant**: one closed-loop client (keep-alive) calling `/hello` with cpu_quota 100 and \
         Memory-Request 16, each call allowed {} s. Latency is over every call, failures included (a call with \
         no answer counts at its {} s limit). \
         **Hostile tenant** (phase B only, started 1 s before the measurement, different functions): \
         (i) {SLEEPERS} clients each requesting `/sleep` (no argument: an hour in one poll_oneoff host call; \
         cpu_quota 100) and hanging up after 200 ms, then again, at most once per 200 ms each; \
         (ii) {HOGS} closed-loop clients calling `/hog?arg=400` (a copy of `spin`: 400 ms of CPU) with cpu_quota 1000, \
         each call allowed {} s. When B ends every hostile client hangs up.\n",
        WELL_LIMIT.as_secs(),
        WELL_LIMIT.as_secs(),
        HOG_LIMIT.as_secs()
    )?;
    writeln!(r, "## Well-behaved tenant\n")?;
    writeln!(
        r,
        "| | A: alone | B: with the hostile tenant |\n|---|---|---|"
    )?;
    writeln!(r, "| p50 | {} | {} |", ms(a50), ms(b50))?;
    writeln!(r, "| p99 | {} | {} |", ms(a99), ms(b99))?;
    writeln!(r, "| 200s per second | {a_rate:.0} | {b_rate:.0} |")?;
    writeln!(r, "| calls | {} | {} |", a.total(), b.total())?;
    writeln!(
        r,
        "| error rate | {:.2} % | {:.2} % |",
        100.0 * a.errors() as f64 / a.total().max(1) as f64,
        100.0 * b.errors() as f64 / b.total().max(1) as f64
    )?;
    writeln!(
        r,
        "| non-200 by status | {} | {} |",
        a.describe_errors(),
        b.describe_errors()
    )?;
    writeln!(r, "\np99(B) / p99(A) = **{ratio:.2}x**.\n")?;

    writeln!(r, "## Hostile tenant's outcomes (phase B)\n")?;
    writeln!(r, "| client | calls | outcomes |\n|---|---|---|")?;
    writeln!(
        r,
        "| abandoned sleepers (`/sleep`, hang up after 200 ms) | {} | {} |",
        sleepers.total(),
        sleepers.describe()
    )?;
    let (h50, h99) = p50_p99_ms(&hogs.latency);
    writeln!(
        r,
        "| CPU hogs (`/hog?arg=400`, cpu_quota 1000) | {} | {} (latency p50 {}, p99 {}) |\n",
        hogs.total(),
        hogs.describe(),
        ms(h50),
        ms(h99)
    )?;

    writeln!(
        r,
        "## Server gauges (`GET /-/metrics` on the admin listener)\n"
    )?;
    writeln!(
        r,
        "| gauge | end of B (hostile running) | {} s after the hostile tenant hung up |\n|---|---|---|",
        SETTLE.as_secs()
    )?;
    let show = |m: &BTreeMap<String, f64>, g: &str| {
        m.get(g)
            .map(|v| {
                if v.fract() == 0.0 {
                    format!("{v}")
                } else {
                    format!("{v:.2}")
                }
            })
            .unwrap_or_else(|| "not read".into())
    };
    for g in GAUGES {
        writeln!(r, "| `{g}` | {} | {} |", show(&at_end, g), show(&after, g))?;
    }
    writeln!(
        r,
        "\n`wasmbox_cpu_utilization_cores` is the whole container's CPU use, which on this shared machine \
         includes the load generator and anything else running.\n"
    )?;

    let busy_after = after.get("wasmbox_workers_busy").copied();
    let reserved_after = after.get("wasmbox_reserved_cpu_millicores").copied();
    let released = busy_after == Some(0.0) && reserved_after == Some(0.0);
    let goals = [
        (
            "p99 rises by less than 2x".to_string(),
            format!("{ratio:.2}x ({} -> {})", ms(a99), ms(b99)),
            ratio < 2.0,
        ),
        (
            "no errors for the well-behaved tenant".to_string(),
            format!("A: {}, B: {}", a.errors(), b.errors()),
            a.errors() == 0 && b.errors() == 0,
        ),
        (
            format!(
                "abandoned sleepers hold no workers or reservations {} s after the tenant left",
                SETTLE.as_secs()
            ),
            format!(
                "workers busy {}, reserved cpu {}",
                busy_after.map_or("not read".into(), |v| v.to_string()),
                reserved_after.map_or("not read".into(), |v| v.to_string())
            ),
            released,
        ),
    ];
    writeln!(r, "## Goals\n")?;
    writeln!(r, "| goal | measured | verdict |\n|---|---|---|")?;
    for (g, m, pass) in &goals {
        println!("goal: {g}: {m}: {}", if *pass { "PASS" } else { "FAIL" });
        writeln!(r, "| {g} | {m} | {} |", verdict(*pass))?;
    }
    writeln!(
        r,
        "\nServer shutdown after the run: {}.",
        stopped.describe()
    )?;
    std::fs::create_dir_all(out.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(out, &r)?;
    println!("wrote {}", out.display());
    Ok(())
}

/// The line every scenario report starts with: machine, date, commit and
/// CPU-isolation mode of the run.
pub(crate) fn run_header(mode: &str) -> String {
    format!(
        "{} Date: {}. Checkout: commit {}. CPU isolation: `{mode}`.",
        machine(),
        date(),
        commit()
    )
}

/// The checkout's commit (`git rev-parse --short HEAD`), for the report.
fn commit() -> String {
    std::process::Command::new("git")
        .arg("-C")
        .arg(repo_root())
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Today's date and time (UTC), from `date`.
fn date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}
