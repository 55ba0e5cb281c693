//! Closed-loop load generators: every client sends its next request as soon
//! as the previous one answers, until the window is over (and at least once,
//! so slow workloads still give a sample per client).
//! - [`http`]: hyper HTTP/1.1 clients, one keep-alive connection each;
//! - [`processes`]: one OS thread per client, one child process per request.
//!
//! Latencies go into hdrhistogram (nanoseconds). For servers that send
//! `Server-Timing`, its `total` and `isolation` phases are collected too.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};

/// What an answer must look like to count as a success.
#[derive(Clone, Debug)]
pub(crate) enum Expect {
    /// A body of exactly this many bytes (hello: 20).
    Len(usize),
    /// A body (stdout) containing this text, e.g. a workload's `digest=...`.
    Contains(String),
}

impl Expect {
    pub(crate) fn accepts(&self, body: &[u8]) -> bool {
        match self {
            Expect::Len(n) => body.len() == *n,
            Expect::Contains(s) => body.windows(s.len().max(1)).any(|w| w == s.as_bytes()),
        }
    }
}

/// One HTTP endpoint under load.
#[derive(Clone)]
pub(crate) struct HttpTarget {
    pub(crate) port: u16,
    /// Path and query, e.g. `/hello` or `/genpdf?arg=500`.
    pub(crate) path: String,
    /// Request i carries `resources(i)` as (cpu_quota, Memory-Request).
    pub(crate) resources: Arc<dyn Fn(usize) -> (u64, u64) + Send + Sync>,
    pub(crate) expect: Expect,
}

pub(crate) struct LoadResult {
    /// Client-observed latency, ns.
    pub(crate) latency: Histogram<u64>,
    /// Server-Timing `total`, ns (empty when the server does not send it).
    pub(crate) server_total: Histogram<u64>,
    /// Server-Timing `isolation`, ns (empty when not sent).
    pub(crate) isolation: Histogram<u64>,
    /// Completed requests per second over the whole window.
    pub(crate) rate: f64,
    /// Answers that were not a success (wrong status or body).
    pub(crate) bad: u64,
    /// The first bad answer, for the error message.
    pub(crate) first_bad: Option<String>,
}

impl LoadResult {
    fn empty() -> anyhow::Result<Self> {
        Ok(LoadResult {
            latency: Histogram::new(3)?,
            server_total: Histogram::new(3)?,
            isolation: Histogram::new(3)?,
            rate: 0.0,
            bad: 0,
            first_bad: None,
        })
    }

    fn merge(&mut self, other: LoadResult) -> anyhow::Result<()> {
        self.latency.add(&other.latency)?;
        self.server_total.add(&other.server_total)?;
        self.isolation.add(&other.isolation)?;
        self.bad += other.bad;
        if self.first_bad.is_none() {
            self.first_bad = other.first_bad;
        }
        Ok(())
    }

    /// Fails if any answer was bad.
    pub(crate) fn all_ok(self, what: &str) -> anyhow::Result<Self> {
        if self.bad > 0 {
            bail!(
                "{what}: {} of {} answers were wrong; first: {}",
                self.bad,
                self.latency.len() + self.bad,
                self.first_bad.as_deref().unwrap_or("?")
            );
        }
        Ok(self)
    }
}

/// Windows of the same target, as one: every answer's figures, and the
/// rate over their time together.
pub(crate) fn combined(parts: Vec<LoadResult>) -> anyhow::Result<LoadResult> {
    let mut all = LoadResult::empty()?;
    let mut secs = 0.0;
    for p in parts {
        if p.rate > 0.0 {
            secs += p.latency.len() as f64 / p.rate;
        }
        all.merge(p)?;
    }
    if secs > 0.0 {
        all.rate = all.latency.len() as f64 / secs;
    }
    Ok(all)
}

/// Parses one phase (ms) of a `Server-Timing` header into ns.
pub(crate) fn phase_ns(header: &str, phase: &str) -> Option<u64> {
    header.split(',').find_map(|part| {
        let (name, rest) = part.trim().split_once(';')?;
        if name != phase {
            return None;
        }
        let ms: f64 = rest.trim().strip_prefix("dur=")?.parse().ok()?;
        Some((ms * 1e6) as u64)
    })
}

/// `concurrency` HTTP clients against `target` for `dur`.
pub(crate) async fn http(
    target: &HttpTarget,
    concurrency: usize,
    dur: Duration,
) -> anyhow::Result<LoadResult> {
    let uri: hyper::Uri = format!("http://127.0.0.1:{}{}", target.port, target.path).parse()?;
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = Vec::new();
    for c in 0..concurrency {
        let (uri, target) = (uri.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", target.port)).await?;
            stream.set_nodelay(true)?;
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut r = LoadResult::empty()?;
            let mut i = c;
            loop {
                let (cpu, mem) = (target.resources)(i);
                i += concurrency;
                let req = hyper::Request::get(uri.clone())
                    .header("host", "bench")
                    .header("cpu_quota", cpu)
                    .header("Memory-Request", mem)
                    .body(Empty::<Bytes>::new())?;
                send.ready().await?;
                let t = Instant::now();
                let resp = send.send_request(req).await?;
                let status = resp.status();
                let timing = resp
                    .headers()
                    .get("server-timing")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = resp.into_body().collect().await?.to_bytes();
                r.latency.record(t.elapsed().as_nanos().max(1) as u64)?;
                if status != 200 || !target.expect.accepts(&body) {
                    r.bad += 1;
                    r.first_bad.get_or_insert_with(|| {
                        format!(
                            "{status}: {}",
                            String::from_utf8_lossy(&body[..body.len().min(300)])
                        )
                    });
                }
                if let Some(t) = timing {
                    if let Some(ns) = phase_ns(&t, "total") {
                        r.server_total.record(ns.max(1))?;
                    }
                    if let Some(ns) = phase_ns(&t, "isolation") {
                        r.isolation.record(ns.max(1))?;
                    }
                }
                if Instant::now() >= deadline {
                    break;
                }
            }
            anyhow::Ok(r)
        }));
    }
    let mut all = LoadResult::empty()?;
    for t in tasks {
        all.merge(t.await??)?;
    }
    all.rate = all.latency.len() as f64 / start.elapsed().as_secs_f64();
    Ok(all)
}

/// A workload's execution alone, from whole processes: `work` and `floor`
/// (hello under the same build) run one after the other, one process at a
/// time, in pairs whose order alternates, for `dur` and at least
/// [`MIN_PAIRS`] pairs. Returns the median over pairs of `work`'s wall time
/// less `floor`'s, in µs, and the number of pairs. A floor measured apart
/// from its workload (another window, another moment of a shared machine)
/// moved a 2 ms workload's execution between 0.9 and 4.9 ms from run to
/// run; both halves of a pair see the same machine.
pub(crate) fn paired_processes(
    work: (&dyn Fn() -> Command, &Expect),
    floor: (&dyn Fn() -> Command, &Expect),
    dur: Duration,
) -> anyhow::Result<(f64, usize)> {
    let timed = |(command, expect): (&dyn Fn() -> Command, &Expect)| -> anyhow::Result<f64> {
        let (took, out) = run_timed(command())?;
        if !out.status.success() || !expect.accepts(&out.stdout) {
            bail!(
                "{:?}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr[..out.stderr.len().min(300)])
            );
        }
        Ok(took.as_secs_f64() * 1e6)
    };
    let deadline = Instant::now() + dur;
    let mut diffs = Vec::new();
    while diffs.len() < MIN_PAIRS || Instant::now() < deadline {
        let (w, f) = if diffs.len() % 2 == 0 {
            let w = timed(work)?;
            (w, timed(floor)?)
        } else {
            let f = timed(floor)?;
            (timed(work)?, f)
        };
        diffs.push(w - f);
    }
    diffs.sort_by(f64::total_cmp);
    Ok((diffs[diffs.len() / 2], diffs.len()))
}

/// Runs `cmd` to its end with no stdin and its output captured: how long
/// it took and what it wrote.
fn run_timed(mut cmd: Command) -> anyhow::Result<(Duration, std::process::Output)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let out = cmd.output().with_context(|| format!("spawn {cmd:?}"))?;
    Ok((t.elapsed(), out))
}

/// The fewest pairs [`paired_processes`] takes, however long they run.
pub(crate) const MIN_PAIRS: usize = 5;

/// `concurrency` clients, each running `command()` as a child process per
/// request (stdin closed, stdout captured and checked), for `dur`.
pub(crate) fn processes(
    command: Arc<dyn Fn() -> Command + Send + Sync>,
    expect: &Expect,
    concurrency: usize,
    dur: Duration,
) -> anyhow::Result<LoadResult> {
    let start = Instant::now();
    let deadline = start + dur;
    let handles: Vec<_> = (0..concurrency)
        .map(|_| {
            let (command, expect) = (command.clone(), expect.clone());
            std::thread::spawn(move || -> anyhow::Result<LoadResult> {
                let mut r = LoadResult::empty()?;
                loop {
                    let (took, out) = run_timed(command())?;
                    r.latency.record(took.as_nanos().max(1) as u64)?;
                    if !out.status.success() || !expect.accepts(&out.stdout) {
                        r.bad += 1;
                        r.first_bad.get_or_insert_with(|| {
                            format!(
                                "{:?}: {} {}",
                                out.status,
                                String::from_utf8_lossy(&out.stdout),
                                String::from_utf8_lossy(&out.stderr[..out.stderr.len().min(300)])
                            )
                        });
                    }
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                Ok(r)
            })
        })
        .collect();
    let mut all = LoadResult::empty()?;
    for h in handles {
        all.merge(h.join().expect("load thread panicked")?)?;
    }
    all.rate = all.latency.len() as f64 / start.elapsed().as_secs_f64();
    Ok(all)
}
