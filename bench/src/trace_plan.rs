//! What the trace run sends and gets back: its constants (capacity, the
//! abuser's rate), the planned calls and each call's result.

use std::time::Duration;

use crate::workload::{Kind, Trace};

pub(crate) const CAPACITY: u64 = 2000;
/// The abusive function's calls: `spin 1000` at cpu_quota 1000.
pub(crate) const ABUSE_MS: u64 = 1000;
pub(crate) const ABUSE_X: f64 = 10.0;
pub(crate) const INFLIGHT_OTHERS: usize = 1024;
pub(crate) const INFLIGHT_ABUSER: usize = 256;

/// One call to send.
pub(crate) struct Planned {
    pub(crate) at: Duration,
    pub(crate) path: String,
    pub(crate) cpu: u64,
    pub(crate) mem: u64,
    pub(crate) kind: Kind,
    /// Index into the trace's functions; `None` for the abusive function.
    pub(crate) func: Option<usize>,
    /// Requested duration, ms (0 for hello).
    pub(crate) ms: u64,
}

pub(crate) struct Done {
    pub(crate) outcome: String,
    pub(crate) latency: Duration,
    /// How late it was sent.
    pub(crate) lag: Duration,
}

/// Every call of `trace`, plus the abuser's when `abusive`, in send order.
pub(crate) fn plan(trace: &Trace, abusive: bool) -> Vec<Planned> {
    let mut p: Vec<Planned> = trace
        .calls
        .iter()
        .map(|c| {
            let f = &trace.funcs[c.func];
            Planned {
                at: c.at,
                path: trace.path(c),
                cpu: f.cpu,
                mem: f.mem,
                kind: f.kind,
                func: Some(c.func),
                ms: c.ms,
            }
        })
        .collect();
    if abusive {
        // ABUSE_X x capacity of reserved CPU: each call reserves 1 core for
        // ABUSE_MS, so ABUSE_X x cores calls per second, evenly spaced.
        let per_sec = ABUSE_X * CAPACITY as f64 / 1000.0 * 1000.0 / ABUSE_MS as f64;
        let n = (trace.window.as_secs_f64() * per_sec) as usize;
        for i in 0..n {
            p.push(Planned {
                at: Duration::from_secs_f64(i as f64 / per_sec),
                path: format!("/abuser?arg={ABUSE_MS}"),
                cpu: 1000,
                mem: 64,
                kind: Kind::Spin,
                func: None,
                ms: ABUSE_MS,
            });
        }
        p.sort_by_key(|c| c.at);
    }
    p
}
