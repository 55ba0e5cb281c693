//! Per-function usage accounting: every request, whatever became of it,
//! is recorded once ([`Accounting::record`]) with the CPU time of its
//! invocation's thread, its server-side wall time, its queue wait, its
//! peak linear memory, the memory it reserved (MB x seconds), its bytes in
//! and out, and its outcome. The figures go to Prometheus families by
//! function ([`families`]), to the per-function totals the deploy API's
//! listing shows, and to the optional JSON-lines access log
//! ([`access_log`]).
//!
//! Label cardinality is bounded: at most [`MAX_FUNCTIONS`] functions are
//! tracked; a function not seen for [`IDLE_DROP`] is dropped at the next
//! scrape, and past the bound the one seen least recently is dropped at
//! once. Dropping removes its series from every per-function family and
//! from `wasmbox_invocations_total`; its totals start again from zero if
//! it comes back (Prometheus' `rate()` handles the reset). Requests that
//! never named an existing function (bad names, 404s) are counted under
//! `function="-"`.

pub mod access_log;
pub mod families;
pub mod request_id;
mod usage;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

pub use access_log::AccessLog;
pub use families::UsageFamilies;
pub use usage::{Abandon, Pending, Usage, CLIENT_GONE};

use crate::metrics::InvocationLabels;

/// Most functions tracked in the per-function families.
pub const MAX_FUNCTIONS: usize = 1000;
/// A function not seen for this long is dropped from the families.
pub const IDLE_DROP: Duration = Duration::from_secs(3600);

/// Totals of one function since it was first (or again) tracked.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FunctionStats {
    /// Requests recorded.
    pub invocations: u64,
    /// Requests by outcome (`ok` or the `Wasmbox-Error` kind).
    pub outcomes: BTreeMap<&'static str, u64>,
    /// When the last request for it was recorded (Unix seconds).
    pub last_invoked_unix: Option<f64>,
    /// CPU seconds of its invocations.
    pub cpu_seconds: f64,
    /// Load (compile) seconds.
    pub compile_seconds: f64,
    #[serde(skip)]
    last_seen: Option<Instant>,
}

impl FunctionStats {
    fn new() -> Self {
        FunctionStats {
            invocations: 0,
            outcomes: BTreeMap::new(),
            last_invoked_unix: None,
            cpu_seconds: 0.0,
            compile_seconds: 0.0,
            last_seen: None,
        }
    }
}

/// See the module docs.
pub struct Accounting {
    families: UsageFamilies,
    invocations: Family<InvocationLabels, Counter>,
    log: Option<AccessLog>,
    stats: Mutex<HashMap<String, FunctionStats>>,
    max_functions: usize,
    idle_drop: Duration,
}

/// The function label of requests that named no existing function.
pub const NO_FUNCTION: &str = "-";

impl Accounting {
    /// Accounting into `families` and `invocations` (registered by
    /// [`crate::metrics::Metrics`]), with an access log if given.
    pub fn new(
        families: UsageFamilies,
        invocations: Family<InvocationLabels, Counter>,
        log: Option<AccessLog>,
    ) -> Self {
        Accounting {
            families,
            invocations,
            log,
            stats: Mutex::new(HashMap::new()),
            max_functions: MAX_FUNCTIONS,
            idle_drop: IDLE_DROP,
        }
    }

    /// Records one finished request.
    pub fn record(&self, u: &Usage) {
        self.count(u);
        self.record_usage(u);
    }

    /// Counts the request's outcome in `wasmbox_invocations_total` only.
    pub fn count(&self, u: &Usage) {
        let function = u.function.as_deref().unwrap_or(NO_FUNCTION);
        self.invocations
            .get_or_create(&InvocationLabels {
                function: function.into(),
                outcome: u.outcome.into(),
            })
            .inc();
    }

    /// Records everything but the outcome count ([`Accounting::count`]).
    pub fn record_usage(&self, u: &Usage) {
        if let Some(log) = &self.log {
            log.write(u.json_line());
        }
        let Some(name) = &u.function else { return };
        let l = families::Function {
            function: name.clone(),
        };
        let f = &self.families;
        let (cpu, wall) = (u.cpu.as_secs_f64(), u.wall.as_secs_f64());
        f.cpu_seconds.get_or_create(&l).inc_by(cpu);
        f.wall_seconds.get_or_create(&l).inc_by(wall);
        f.queue_seconds
            .get_or_create(&l)
            .inc_by(u.queue.as_secs_f64());
        f.memory_mb_seconds
            .get_or_create(&l)
            .inc_by(u.memory_mb_seconds);
        f.bytes_in.get_or_create(&l).inc_by(u.bytes_in);
        f.bytes_out.get_or_create(&l).inc_by(u.bytes_out);
        if u.ran {
            f.cpu_hist.get_or_create(&l).observe(cpu);
            f.peak_memory_hist
                .get_or_create(&l)
                .observe(u.peak_memory as f64 / f64::from(1 << 20));
        }
        f.wall_hist.get_or_create(&l).observe(wall);
        let mut stats = self.stats.lock().unwrap();
        let s = stats.entry(name.clone()).or_insert_with(FunctionStats::new);
        s.invocations += 1;
        *s.outcomes.entry(u.outcome).or_default() += 1;
        s.last_invoked_unix = Some(unix_now());
        s.cpu_seconds += cpu;
        s.last_seen = Some(Instant::now());
        self.bound(&mut stats);
    }

    /// Records the time `function` took to load (compile, or read from the
    /// AOT cache).
    pub fn record_compile(&self, function: &str, took: Duration) {
        let secs = took.as_secs_f64();
        self.families
            .compile_seconds
            .get_or_create(&families::Function {
                function: function.to_string(),
            })
            .inc_by(secs);
        let mut stats = self.stats.lock().unwrap();
        let s = stats
            .entry(function.to_string())
            .or_insert_with(FunctionStats::new);
        s.compile_seconds += secs;
        s.last_seen = Some(Instant::now());
        self.bound(&mut stats);
    }

    /// The totals of `function`, if it is tracked.
    pub fn stats(&self, function: &str) -> Option<FunctionStats> {
        self.stats.lock().unwrap().get(function).cloned()
    }

    /// Drops functions not seen for the idle period; brings the dropped
    /// access-log lines counter up to date. Called at each scrape.
    pub fn sweep(&self) {
        if let Some(log) = &self.log {
            self.families
                .log_dropped
                .inner()
                .fetch_max(log.dropped.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        let mut stats = self.stats.lock().unwrap();
        let idle: Vec<String> = stats
            .iter()
            .filter(|(_, s)| s.last_seen.is_some_and(|t| t.elapsed() >= self.idle_drop))
            .map(|(k, _)| k.clone())
            .collect();
        for name in idle {
            self.drop_function(&mut stats, &name);
        }
    }

    /// Drops the least recently seen functions past the bound.
    fn bound(&self, stats: &mut HashMap<String, FunctionStats>) {
        while stats.len() > self.max_functions {
            let Some(oldest) = stats
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone())
            else {
                return;
            };
            self.drop_function(stats, &oldest);
        }
    }

    fn drop_function(&self, stats: &mut HashMap<String, FunctionStats>, name: &str) {
        let Some(s) = stats.remove(name) else { return };
        self.families.remove(name);
        for outcome in s.outcomes.keys() {
            self.invocations.remove(&InvocationLabels {
                function: name.to_string(),
                outcome: (*outcome).to_string(),
            });
        }
        tracing::debug!(function = %name, "dropped from the usage metrics (idle or over the bound)");
    }

    #[cfg(test)]
    fn with_bound(mut self, max: usize, idle: Duration) -> Self {
        self.max_functions = max;
        self.idle_drop = idle;
        self
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests;
