//! Per-function usage accounting: every request, whatever became of it,
//! is recorded once ([`Accounting::record`]) with the CPU time of its
//! invocation's thread, its server-side wall time, its queue wait, its
//! peak linear memory, the memory it reserved (MB x seconds), its bytes in
//! and out, and its outcome. The figures go to Prometheus families by
//! function ([`families`]), to the per-function totals the deploy API's
//! listing shows, and to the optional JSON-lines access log
//! ([`access_log`]).
//!
//! A function tracked has a series in every per-function family from its
//! first record on (zero where nothing of that kind has been recorded: a
//! function only compiled so far shows empty CPU and memory histograms).
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
pub use families::{Series, UsageFamilies};
pub use usage::{Abandon, Cut, Pending, Usage, CLIENT_GONE};

use crate::metrics::InvocationLabels;

/// Most functions tracked in the per-function families.
pub const MAX_FUNCTIONS: usize = 1000;
/// A function not seen for this long is dropped from the families.
pub const IDLE_DROP: Duration = Duration::from_secs(3600);

/// Totals of one function since it was first (or again) tracked.
#[derive(Debug, Clone, Default, serde::Serialize)]
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
}

/// One tracked function: its totals, when it was last recorded (any
/// record) and last invoked, and its series in every family, so that a
/// request's record finds them all by its name under one lock.
struct Tracked {
    stats: FunctionStats,
    last_seen: Instant,
    last_invoked: Option<Instant>,
    series: Series,
    /// Its series in `wasmbox_invocations_total`, by outcome.
    outcomes: Vec<(&'static str, Counter)>,
}

/// See the module docs.
pub struct Accounting {
    families: UsageFamilies,
    invocations: Family<InvocationLabels, Counter>,
    log: Option<AccessLog>,
    tracked: Mutex<HashMap<String, Tracked>>,
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
            tracked: Mutex::new(HashMap::new()),
            max_functions: MAX_FUNCTIONS,
            idle_drop: IDLE_DROP,
        }
    }

    /// Records one finished request: its outcome count and its figures.
    pub fn record(&self, u: &Usage) {
        self.write(u, true);
    }

    /// Counts the request's outcome in `wasmbox_invocations_total` only.
    pub fn count(&self, u: &Usage) {
        let Some(name) = &u.function else {
            self.count_unnamed(u);
            return;
        };
        let now = Instant::now();
        let mut tracked = self.tracked.lock().unwrap();
        self.track(&mut tracked, name, now)
            .count(&self.invocations, name, u.outcome);
        self.bound(&mut tracked);
    }

    /// Records everything but the outcome count, already made
    /// ([`Accounting::count`]).
    pub fn record_counted(&self, u: &Usage) {
        self.write(u, false);
    }

    fn write(&self, u: &Usage, count: bool) {
        if let Some(log) = &self.log {
            log.write(u.json_line());
        }
        let Some(name) = &u.function else {
            if count {
                self.count_unnamed(u);
            }
            return;
        };
        let now = Instant::now();
        let mut tracked = self.tracked.lock().unwrap();
        let t = self.track(&mut tracked, name, now);
        if count {
            t.count(&self.invocations, name, u.outcome);
        }
        let (cpu, wall) = (u.cpu.as_secs_f64(), u.wall.as_secs_f64());
        let f = &t.series;
        f.cpu_seconds.inc_by(cpu);
        f.wall_seconds.inc_by(wall);
        f.queue_seconds.inc_by(u.queue.as_secs_f64());
        f.memory_mb_seconds.inc_by(u.memory_mb_seconds);
        f.bytes_in.inc_by(u.bytes_in);
        f.bytes_out.inc_by(u.bytes_out);
        if u.ran {
            f.cpu_hist.observe(cpu);
            f.peak_memory_hist
                .observe(u.peak_memory as f64 / f64::from(1 << 20));
        }
        f.wall_hist.observe(wall);
        let s = &mut t.stats;
        s.invocations += 1;
        *s.outcomes.entry(u.outcome).or_default() += 1;
        s.cpu_seconds += cpu;
        t.last_invoked = Some(now);
        self.bound(&mut tracked);
    }

    /// Requests that named no existing function: counted only, under
    /// [`NO_FUNCTION`], a label never dropped.
    fn count_unnamed(&self, u: &Usage) {
        self.invocations
            .get_or_create(&InvocationLabels {
                function: NO_FUNCTION.into(),
                outcome: u.outcome.into(),
            })
            .inc();
    }

    /// Records the time `function` took to load (compile, or read from the
    /// AOT cache).
    pub fn record_compile(&self, function: &str, took: Duration) {
        let secs = took.as_secs_f64();
        let mut tracked = self.tracked.lock().unwrap();
        let t = self.track(&mut tracked, function, Instant::now());
        t.series.compile_seconds.inc_by(secs);
        t.stats.compile_seconds += secs;
        self.bound(&mut tracked);
    }

    /// `name`'s entry, created (with its series) if it is not tracked;
    /// seen at `now`. The caller bounds the map after its update, so that
    /// the entry it just touched, the newest, is never the one dropped.
    fn track<'m>(
        &self,
        tracked: &'m mut HashMap<String, Tracked>,
        name: &str,
        now: Instant,
    ) -> &'m mut Tracked {
        // Looked up by `&str` first: no allocation for a tracked function.
        if !tracked.contains_key(name) {
            tracked.insert(
                name.to_string(),
                Tracked {
                    stats: FunctionStats::default(),
                    last_seen: now,
                    last_invoked: None,
                    series: self.families.series(name),
                    outcomes: Vec::new(),
                },
            );
        }
        let t = tracked.get_mut(name).expect("inserted above");
        t.last_seen = now;
        t
    }

    /// The totals of `function`, if it is tracked.
    pub fn stats(&self, function: &str) -> Option<FunctionStats> {
        let tracked = self.tracked.lock().unwrap();
        let t = tracked.get(function)?;
        let mut s = t.stats.clone();
        s.last_invoked_unix = t
            .last_invoked
            .map(|at| unix_now() - at.elapsed().as_secs_f64());
        Some(s)
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
        let mut tracked = self.tracked.lock().unwrap();
        let idle: Vec<String> = tracked
            .iter()
            .filter(|(_, t)| t.last_seen.elapsed() >= self.idle_drop)
            .map(|(k, _)| k.clone())
            .collect();
        for name in idle {
            self.drop_function(&mut tracked, &name);
        }
    }

    /// Drops the least recently seen functions past the bound.
    fn bound(&self, tracked: &mut HashMap<String, Tracked>) {
        while tracked.len() > self.max_functions {
            let Some(oldest) = tracked
                .iter()
                .min_by_key(|(_, t)| t.last_seen)
                .map(|(k, _)| k.clone())
            else {
                return;
            };
            self.drop_function(tracked, &oldest);
        }
    }

    fn drop_function(&self, tracked: &mut HashMap<String, Tracked>, name: &str) {
        let Some(t) = tracked.remove(name) else {
            return;
        };
        self.families.remove(name);
        for (outcome, _) in &t.outcomes {
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

impl Tracked {
    /// Counts one request of this function with `outcome`.
    fn count(
        &mut self,
        invocations: &Family<InvocationLabels, Counter>,
        function: &str,
        outcome: &'static str,
    ) {
        if let Some((_, c)) = self.outcomes.iter().find(|(o, _)| *o == outcome) {
            c.inc();
            return;
        }
        let c = invocations.get_or_create_owned(&InvocationLabels {
            function: function.into(),
            outcome: outcome.into(),
        });
        c.inc();
        self.outcomes.push((outcome, c));
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
