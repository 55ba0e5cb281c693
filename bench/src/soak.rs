//! `wasmbox-bench soak`: holds a real `wasmbox serve` at saturation for a
//! bounded time with mixed, partly hostile traffic (good calls, bad names,
//! bad headers, large and over-limit bodies, half-sent headers, abandoned
//! requests, unread responses, exits, deadlines, connection floods), then
//! reports what the server held before, at peak and after: RSS, open
//! descriptors, threads, slot cgroups, and every response by status.
//! Writes bench/results/soak.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::containment::run_header;
use crate::{repo_root, server_ctl};

/// Statuses of the README's status table.
const TABLE: [u16; 14] = [
    200, 400, 403, 404, 405, 408, 413, 422, 424, 500, 502, 503, 504, 507,
];
/// Most worker threads of the server under test: threads and slot cgroups
/// may grow up to this many, and no further.
const WORKERS: usize = 16;
/// Concurrent clients.
const CLIENTS: usize = 96;

/// What the server process holds at one moment.
#[derive(Clone, Copy, Default)]
struct Held {
    rss_mb: f64,
    fds: usize,
    threads: usize,
    slots: usize,
}

fn held(pid: u32) -> Held {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    let slots =
        wasmbox_isolation::cgroup::v1_trees_of_process(pid, Path::new("/sys/fs/cgroup/cpu"))
            .iter()
            .flat_map(|t| std::fs::read_dir(t).into_iter().flatten().flatten())
            .filter(|e| e.file_name().to_string_lossy().starts_with("slot-"))
            .count();
    Held {
        rss_mb: field("VmRSS:") as f64 / 1024.0,
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0),
        threads: field("Threads:") as usize,
        slots,
    }
}

/// One kind of client behaviour and its share of the traffic (out of 100).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Hello,
    Echo,
    BadName,
    BadHeader,
    LargeBody,
    TooLargeBody,
    HalfHeaders,
    Abandoned,
    Exit,
    Deadline,
    Unread,
    Flood,
}

const MIX: [(Kind, u32); 12] = [
    (Kind::Hello, 40),
    (Kind::Echo, 12),
    (Kind::BadName, 6),
    (Kind::BadHeader, 6),
    (Kind::LargeBody, 4),
    (Kind::TooLargeBody, 3),
    (Kind::HalfHeaders, 4),
    (Kind::Abandoned, 6),
    (Kind::Exit, 6),
    (Kind::Deadline, 3),
    (Kind::Unread, 2),
    (Kind::Flood, 8),
];

fn pick(rng: &mut fastrand::Rng) -> Kind {
    let mut n = rng.u32(..MIX.iter().map(|(_, w)| w).sum::<u32>());
    for (k, w) in MIX {
        if n < w {
            return k;
        }
        n -= w;
    }
    Kind::Hello
}

/// The status of the first response in `bytes`, if there is one.
fn status_of(bytes: &[u8]) -> Option<u16> {
    let line = bytes.split(|&b| b == b'\n').next()?;
    std::str::from_utf8(line)
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

/// Sends `head` + `body` on a new connection and reads to close (or
/// `limit`); the outcome as a label.
async fn exchange(port: u16, head: String, body: &[u8], read: bool, limit: Duration) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
        return "connect failed".into();
    };
    if s.write_all(head.as_bytes()).await.is_err() || s.write_all(body).await.is_err() {
        // The server may answer (413) and close before reading the body.
    }
    if !read {
        // Abandoned or unread: hold the connection for a while, read nothing.
        tokio::time::sleep(limit).await;
        return "abandoned (no read)".into();
    }
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let r = tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    match (status_of(&got), r) {
        (Some(code), _) => code.to_string(),
        (None, Ok(())) => "closed without a response".into(),
        (None, Err(_)) => "no response within the client limit".into(),
    }
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n{extra}\r\n")
}

fn post(path: &str, len: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: soak\r\nConnection: close\r\nContent-Length: {len}\r\n\r\n"
    )
}

/// One client action; the outcome label for the tally.
async fn act(port: u16, kind: Kind, rng: &mut fastrand::Rng) -> String {
    let s = Duration::from_secs;
    match kind {
        Kind::Hello => exchange(port, get("/hello", ""), b"", true, s(30)).await,
        Kind::Echo => exchange(port, post("/echo?arg=x", 11), b"hello world", true, s(30)).await,
        Kind::BadName => {
            let path = ["/..%2fetc", "/missing", "/-x", "/%zz"][rng.usize(..4)];
            exchange(port, get(path, ""), b"", true, s(30)).await
        }
        Kind::BadHeader => {
            exchange(
                port,
                get("/hello", "Memory-Request: lots\r\n"),
                b"",
                true,
                s(30),
            )
            .await
        }
        Kind::LargeBody => {
            let body = vec![b'b'; 4 << 20];
            exchange(port, post("/echo", body.len()), &body, true, s(30)).await
        }
        Kind::TooLargeBody => {
            exchange(port, post("/echo", 100 << 20), b"a few bytes", true, s(30)).await
        }
        Kind::HalfHeaders => {
            let head = "GET /hello HTTP/1.1\r\nHost: soak\r\nX-Slow: ".to_string();
            exchange(port, head, b"", true, s(30)).await
        }
        Kind::Abandoned => {
            exchange(
                port,
                get("/sleep?arg=5000", ""),
                b"",
                false,
                Duration::from_millis(100),
            )
            .await
        }
        Kind::Exit => exchange(port, get("/exitcode?arg=3", ""), b"", true, s(30)).await,
        Kind::Deadline => {
            exchange(port, get("/spin", "cpu_quota: 100\r\n"), b"", true, s(30)).await
        }
        Kind::Unread => {
            exchange(
                port,
                get("/echo?arg=--bytes&arg=4000000", ""),
                b"",
                false,
                s(3),
            )
            .await
        }
        Kind::Flood => {
            for _ in 0..50 {
                let _ = TcpStream::connect(("127.0.0.1", port)).await;
            }
            "flood of 50 connections".into()
        }
    }
}

pub(crate) fn run(seconds: u64, out: &Path) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let functions = repo_root().join("functions");
    for f in [
        "hello.wat",
        "echo.wasm",
        "sleep.wasm",
        "exitcode.wasm",
        "spin.wasm",
    ] {
        std::fs::copy(functions.join(f), dir.path().join(f))?;
    }
    let workers = WORKERS.to_string();
    let served = server_ctl::start(
        dir.path(),
        &[
            "--workers",
            &workers,
            "--timeout",
            "1s",
            "--header-read-timeout",
            "1s",
            "--body-timeout",
            "2s",
            "--write-timeout",
            "2s",
            "--idle-timeout",
            "5s",
            "--max-buffered-mb",
            "64",
            "--queue-timeout",
            "2s",
            "--max-body-bytes",
            "8388608",
        ],
        "/hello",
    )?;
    let (port, mode) = (served.port, served.mode);
    let pid = served.pid();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Warm up: every function compiled once, so compiled code is in the
    // baseline.
    rt.block_on(async {
        for path in [
            "/hello",
            "/echo",
            "/sleep?arg=1",
            "/exitcode?arg=0",
            "/spin?arg=1",
        ] {
            exchange(port, get(path, ""), b"", true, Duration::from_secs(60)).await;
        }
    });
    let before = held(pid);
    let tally: Arc<Mutex<BTreeMap<(Kind, String), u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(Mutex::new(before));
    let started = Instant::now();
    rt.block_on(async {
        let sampler = {
            let (stop, peak) = (stop.clone(), peak.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let h = held(pid);
                    {
                        let mut p = peak.lock().unwrap();
                        p.rss_mb = p.rss_mb.max(h.rss_mb);
                        p.fds = p.fds.max(h.fds);
                        p.threads = p.threads.max(h.threads);
                        p.slots = p.slots.max(h.slots);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (stop, tally) = (stop.clone(), tally.clone());
                tokio::spawn(async move {
                    let mut rng = fastrand::Rng::with_seed(i as u64);
                    while !stop.load(Ordering::Relaxed) {
                        let kind = pick(&mut rng);
                        let outcome = act(port, kind, &mut rng).await;
                        *tally.lock().unwrap().entry((kind, outcome)).or_default() += 1;
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            let _ = c.await;
        }
        let _ = sampler.await;
    });
    let ran = started.elapsed();
    // Settle: what should go back down gets up to 15 s (the write, idle and
    // header timeouts are all shorter).
    let settle = Instant::now();
    let mut after = held(pid);
    while settle.elapsed() < Duration::from_secs(15)
        && after.fds > before.fds + 2 * after.slots.saturating_sub(before.slots) + 4
    {
        std::thread::sleep(Duration::from_millis(250));
        after = held(pid);
    }
    std::thread::sleep(Duration::from_secs(5));
    let after = held(pid);
    let still_serves = rt.block_on(exchange(
        port,
        get("/hello", ""),
        b"",
        true,
        Duration::from_secs(10),
    ));
    let stopped = served.stop();
    let peak = *peak.lock().unwrap();
    let tally = tally.lock().unwrap().clone();
    write_report(
        out,
        seconds,
        ran,
        mode,
        &tally,
        [before, peak, after],
        &still_serves,
        &stopped.describe(),
    )
}

#[allow(clippy::too_many_arguments)]
fn write_report(
    out: &Path,
    seconds: u64,
    ran: Duration,
    mode: &str,
    tally: &BTreeMap<(Kind, String), u64>,
    [before, peak, after]: [Held; 3],
    still_serves: &str,
    stopped: &str,
) -> anyhow::Result<()> {
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    for ((_, outcome), n) in tally {
        *by_status.entry(outcome.clone()).or_default() += n;
    }
    let outside: u64 = tally
        .iter()
        .filter(|((_, o), _)| o.parse::<u16>().is_ok_and(|c| !TABLE.contains(&c)))
        .map(|(_, n)| n)
        .sum();
    let internal: u64 = by_status.get("500").copied().unwrap_or(0);
    let total: u64 = tally.values().sum();
    let mut r = String::new();
    writeln!(r, "# Soak run\n")?;
    writeln!(r, "{}\n", run_header(mode))?;
    writeln!(
        r,
        "{CLIENTS} clients for {seconds} s ({:.1} s with the last ones finishing), {total} actions; server with `--workers {WORKERS} --timeout 1s --header-read-timeout 1s --body-timeout 2s --write-timeout 2s --idle-timeout 5s --max-buffered-mb 64 --max-body-bytes 8388608`. Generated by `wasmbox-bench soak`; every figure is from this run.\n",
        ran.as_secs_f64()
    )?;
    writeln!(r, "## What the server held\n")?;
    writeln!(r, "| | before (warm) | peak | after (settled) |")?;
    writeln!(r, "|---|---|---|---|")?;
    writeln!(
        r,
        "| RSS (MiB) | {:.0} | {:.0} | {:.0} |",
        before.rss_mb, peak.rss_mb, after.rss_mb
    )?;
    writeln!(
        r,
        "| open descriptors | {} | {} | {} |",
        before.fds, peak.fds, after.fds
    )?;
    writeln!(
        r,
        "| threads | {} | {} | {} |",
        before.threads, peak.threads, after.threads
    )?;
    writeln!(
        r,
        "| slot cgroups | {} | {} | {} |\n",
        before.slots, peak.slots, after.slots
    )?;
    let new_slots = after.slots.saturating_sub(before.slots);
    let new_workers = after.threads.saturating_sub(before.threads);
    let verdicts = [
        ("no status outside the status table", outside == 0),
        (
            "no 500 (no client input is an internal error)",
            internal == 0,
        ),
        (
            "descriptors back to the baseline, plus at most 2 per new worker slot (its kept cgroup files) and 4",
            after.fds <= before.fds + 2 * new_slots + 4,
        ),
        (
            "RSS back to the baseline, plus at most 4 MiB per new worker (stack, kept-resident instance slot) and 64 MiB",
            after.rss_mb <= before.rss_mb + 4.0 * new_workers as f64 + 64.0,
        ),
        (
            "threads bounded (baseline + workers + the registry's 16 file-system and 2 compile threads, which idle out after 10 s)",
            after.threads <= before.threads + WORKERS + 18,
        ),
        (
            "slot cgroups bounded by the worker limit",
            after.slots <= WORKERS,
        ),
        ("the server still serves afterwards", still_serves == "200"),
    ];
    writeln!(r, "## Verdicts\n")?;
    for (what, ok) in verdicts {
        writeln!(r, "- {}: {what}", if ok { "PASS" } else { "FAIL" })?;
    }
    writeln!(r, "\nShutdown: {stopped}.\n")?;
    writeln!(r, "## Responses by status\n")?;
    writeln!(r, "| outcome | count |")?;
    writeln!(r, "|---|---|")?;
    for (o, n) in &by_status {
        writeln!(r, "| {o} | {n} |")?;
    }
    writeln!(r, "\n## By behaviour\n")?;
    writeln!(r, "| behaviour | outcome | count |")?;
    writeln!(r, "|---|---|---|")?;
    for ((k, o), n) in tally {
        writeln!(r, "| {k:?} | {o} | {n} |")?;
    }
    std::fs::create_dir_all(out.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(out, &r)?;
    println!("{r}\nwrote {}", out.display());
    Ok(())
}
