//! One HTTP call at a time, each with a deadline, for the tenant scenarios
//! (containment.rs, trace.rs). load.rs's closed loop has no per-request
//! deadline and counts failures only in total; here a server that never
//! answers costs a call its `limit`, and every answer is kept by status and
//! `Wasmbox-Error` kind.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use tokio::task::JoinHandle;

/// How one call ended.
#[derive(Debug)]
pub(crate) enum Answer {
    /// A complete response.
    Status {
        status: u16,
        /// The `Wasmbox-Error` header, if any.
        kind: Option<String>,
        body: Bytes,
    },
    /// No complete response within the limit; the connection was closed.
    TimedOut(Duration),
    /// Connecting or the exchange failed.
    Failed(String),
}

#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) answer: Answer,
    /// From sending (or connecting, for [`call_once`]) to the last byte.
    pub(crate) latency: Duration,
}

impl Call {
    /// `"200"` for a 200 that `accept`s its body, else a label saying what
    /// went wrong, e.g. `"503 queue_full"` or `"no answer within 5 s"`.
    pub(crate) fn outcome(&self, accept: &dyn Fn(&[u8]) -> bool) -> String {
        match &self.answer {
            Answer::Status {
                status: 200, body, ..
            } if accept(body) => "200".into(),
            Answer::Status { status: 200, .. } => "200 with a wrong body".into(),
            Answer::Status { status, kind, .. } => match kind {
                Some(k) => format!("{status} {k}"),
                None => status.to_string(),
            },
            Answer::TimedOut(limit) => format!("no answer within {}", secs(*limit)),
            Answer::Failed(_) => "connection error".into(),
        }
    }
}

fn secs(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// Longest wait for a TCP connection (a full accept backlog drops SYNs).
pub(crate) const CONNECT_LIMIT: Duration = Duration::from_secs(5);

/// A keep-alive HTTP/1.1 connection to the server on a loopback port.
/// Dropping it closes the socket (the server sees the client go).
pub(crate) struct Conn {
    send: SendRequest<Empty<Bytes>>,
    task: JoinHandle<()>,
    /// Set when a call failed or timed out: open a new connection.
    pub(crate) dead: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Conn {
    /// Connects within [`CONNECT_LIMIT`].
    pub(crate) async fn open(port: u16) -> anyhow::Result<Conn> {
        let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
        let stream = tokio::time::timeout(CONNECT_LIMIT, connect)
            .await
            .map_err(|_| anyhow::anyhow!("no connection to port {port} within {CONNECT_LIMIT:?}"))?
            .with_context(|| format!("connect to port {port}"))?;
        stream.set_nodelay(true)?;
        let (send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            send,
            task,
            dead: false,
        })
    }

    /// `GET path` with `cpu_quota` and `Memory-Request` headers; the whole
    /// response must arrive within `limit`, else the call is `TimedOut` and
    /// the connection is marked dead (drop it to hang up).
    pub(crate) async fn get(&mut self, path: &str, cpu: u64, mem: u64, limit: Duration) -> Call {
        let t = Instant::now();
        let exchange = async {
            let req = hyper::Request::get(path)
                .header("host", "bench")
                .header("cpu_quota", cpu)
                .header("Memory-Request", mem)
                .body(Empty::<Bytes>::new())?;
            self.send.ready().await?;
            let resp = self.send.send_request(req).await?;
            let status = resp.status().as_u16();
            let kind = resp
                .headers()
                .get("wasmbox-error")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok(Answer::Status { status, kind, body })
        };
        let answer = match tokio::time::timeout(limit, exchange).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => Answer::Failed(format!("{e:#}")),
            Err(_) => Answer::TimedOut(limit),
        };
        self.dead = !matches!(answer, Answer::Status { .. });
        Call {
            answer,
            latency: t.elapsed(),
        }
    }
}

/// One call on a fresh connection that is closed afterwards; `limit`
/// covers connecting too.
pub(crate) async fn call_once(port: u16, path: &str, cpu: u64, mem: u64, limit: Duration) -> Call {
    let t = Instant::now();
    let conn = match tokio::time::timeout(limit, Conn::open(port)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return Call {
                answer: Answer::Failed(format!("{e:#}")),
                latency: t.elapsed(),
            }
        }
        Err(_) => {
            return Call {
                answer: Answer::TimedOut(limit),
                latency: t.elapsed(),
            }
        }
    };
    let mut conn = conn;
    let left = limit.saturating_sub(t.elapsed());
    let mut call = conn.get(path, cpu, mem, left).await;
    if let Answer::TimedOut(_) = call.answer {
        call.answer = Answer::TimedOut(limit);
    }
    call.latency = t.elapsed();
    call
}

/// Calls counted by outcome, with a latency histogram (ns).
pub(crate) struct Tally {
    /// Latency of every call counted, whatever its outcome.
    pub(crate) latency: Histogram<u64>,
    pub(crate) outcomes: BTreeMap<String, u64>,
}

impl Tally {
    pub(crate) fn new() -> Self {
        Tally {
            latency: Histogram::new(3).expect("3 significant digits is valid"),
            outcomes: BTreeMap::new(),
        }
    }

    pub(crate) fn count(&mut self, outcome: String, latency: Duration) {
        // Saturates rather than fails: hdrhistogram grows on demand.
        let _ = self.latency.record(latency.as_nanos().max(1) as u64);
        *self.outcomes.entry(outcome).or_default() += 1;
    }

    pub(crate) fn total(&self) -> u64 {
        self.outcomes.values().sum()
    }

    pub(crate) fn ok(&self) -> u64 {
        self.outcomes.get("200").copied().unwrap_or(0)
    }

    pub(crate) fn errors(&self) -> u64 {
        self.total() - self.ok()
    }

    /// `"200: 12, 503 queue_full: 3"`, or `"none"`.
    pub(crate) fn describe(&self) -> String {
        describe(&self.outcomes)
    }

    /// The non-200 outcomes only.
    pub(crate) fn describe_errors(&self) -> String {
        let errs: BTreeMap<String, u64> = self
            .outcomes
            .iter()
            .filter(|(k, _)| k.as_str() != "200")
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        describe(&errs)
    }
}

pub(crate) fn describe(outcomes: &BTreeMap<String, u64>) -> String {
    if outcomes.is_empty() {
        return "none".into();
    }
    outcomes
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The unlabelled samples of `GET /-/metrics` on the admin listener's
/// `admin_port` (gauges and counters without labels), by name.
pub(crate) async fn scrape(
    admin_port: u16,
    limit: Duration,
) -> anyhow::Result<BTreeMap<String, f64>> {
    let call = call_once(admin_port, "/-/metrics", 0, 0, limit).await;
    let body = match call.answer {
        Answer::Status {
            status: 200, body, ..
        } => body,
        Answer::Failed(e) => anyhow::bail!("GET /-/metrics: {e}"),
        other => anyhow::bail!("GET /-/metrics: {other:?}"),
    };
    Ok(parse_metrics(&String::from_utf8_lossy(&body)))
}

/// The unlabelled samples of a Prometheus text exposition.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.contains('{'))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// p50 and p99 of a histogram of ns, in ms.
pub(crate) fn p50_p99_ms(h: &Histogram<u64>) -> (f64, f64) {
    if h.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    (
        h.value_at_quantile(0.5) as f64 / 1e6,
        h.value_at_quantile(0.99) as f64 / 1e6,
    )
}

/// A latency for a report: `"—"` when there were none.
pub(crate) fn ms(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else if v >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.2} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(answer: Answer) -> Call {
        Call {
            answer,
            latency: Duration::from_millis(3),
        }
    }

    #[test]
    fn outcomes_are_labelled_by_status_and_kind() {
        let ok = |b: &[u8]| b == b"fine";
        let status = |status, kind: Option<&str>, body: &'static [u8]| {
            call(Answer::Status {
                status,
                kind: kind.map(str::to_owned),
                body: Bytes::from_static(body),
            })
        };
        assert_eq!(status(200, None, b"fine").outcome(&ok), "200");
        assert_eq!(
            status(200, None, b"odd").outcome(&ok),
            "200 with a wrong body"
        );
        assert_eq!(
            status(503, Some("queue-full"), b"").outcome(&ok),
            "503 queue-full"
        );
        assert_eq!(status(504, None, b"").outcome(&ok), "504");
        assert_eq!(
            call(Answer::TimedOut(Duration::from_millis(200))).outcome(&ok),
            "no answer within 200 ms"
        );
        assert_eq!(
            call(Answer::TimedOut(Duration::from_secs(5))).outcome(&ok),
            "no answer within 5 s"
        );
        let mut t = Tally::new();
        t.count("200".into(), Duration::from_millis(1));
        t.count("503 queue-full".into(), Duration::from_millis(2));
        t.count("503 queue-full".into(), Duration::from_millis(2));
        assert_eq!((t.total(), t.ok(), t.errors()), (3, 1, 2));
        assert_eq!(t.describe_errors(), "503 queue-full: 2");
    }

    #[test]
    fn metrics_keep_unlabelled_samples() {
        let m = parse_metrics(
            "# HELP wasmbox_workers_busy x\n# TYPE wasmbox_workers_busy gauge\n\
             wasmbox_workers_busy 3\n\
             wasmbox_invocations_total{function=\"a\",outcome=\"ok\"} 9\n\
             wasmbox_queue_wait_seconds_sum 1.5\n# EOF\n",
        );
        assert_eq!(m.get("wasmbox_workers_busy"), Some(&3.0));
        assert_eq!(m.get("wasmbox_queue_wait_seconds_sum"), Some(&1.5));
        assert_eq!(m.len(), 2, "{m:?}");
    }
}
