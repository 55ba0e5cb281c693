//! Prometheus metrics at `/-/metrics` (admin listener), one module per family group:
//! [`invocations`] (updated on the request path), and [`admission`],
//! [`workers`], [`registry`], [`pool`] and [`front`], read from their sources at scrape
//! time by [`Metrics::render`].
//!
//! Totals kept elsewhere as running counts (the registry's loads, cache hits
//! and unloads, the executor's slot failures) are exposed as counters
//! (`_total`), not gauges: at each scrape the counter is raised to the
//! source's total with `fetch_max` on its atomic. A counter so never goes
//! down, and two scrapes at once cannot add the same increment twice (as
//! `inc_by` of a difference could).

use std::sync::atomic::Ordering;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

mod admission;
mod front;
mod invocations;
mod pool;
mod registry;
mod workers;

pub use invocations::InvocationLabels;
pub use workers::FunctionLabel;

pub struct Metrics {
    registry: Registry,
    pub invocations: Family<InvocationLabels, Counter>,
    pub queue_wait: Histogram,
    pub execution: Histogram,
    admission: admission::Admission,
    workers: workers::Workers,
    functions: registry::Functions,
    pool: pool::Pool,
    front: front::Front,
    /// The per-function usage families (see [`crate::accounting`]).
    pub usage: crate::accounting::UsageFamilies,
}

/// Everything the gauges show, gathered at scrape time.
pub struct GaugeValues {
    pub admission: wasmbox_admission::Snapshot,
    pub capacity: wasmbox_admission::Resources,
    pub memory_utilization: f64,
    pub pool_stats: wasmbox_runtime::executor::PoolStats,
    /// Functions with requests waiting or running.
    pub per_function: Vec<wasmbox_admission::FunctionSnapshot>,
    pub pool: Option<wasmtime::PoolingAllocatorMetrics>,
    /// The registry: (held, loads, cache hits, unloads).
    pub functions: (usize, usize, usize, usize),
    /// The serving port: (open connections, body bytes held, body budget).
    pub front: (usize, usize, usize),
    /// Heavy compiles running now (in compile children).
    pub heavy_compiles: usize,
    /// Scans of the functions directory the prewarm has finished.
    pub prewarm_scans: usize,
}

/// Registers a gauge named `wasmbox_{name}`.
fn gauge(registry: &mut Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::default();
    registry.register(name, help, g.clone());
    g
}

/// Registers a counter, rendered as `wasmbox_{name}_total`.
fn counter(registry: &mut Registry, name: &str, help: &str) -> Counter {
    let c = Counter::default();
    registry.register(name, help, c.clone());
    c
}

/// Raises `counter` to `total`, a running count read from its source.
fn raise_to(counter: &Counter, total: usize) {
    counter.inner().fetch_max(total as u64, Ordering::Relaxed);
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("wasmbox");
        let inv = invocations::Invocations::register(&mut r);
        let admission = admission::Admission::register(&mut r);
        let workers = workers::Workers::register(&mut r);
        let pool = pool::Pool::register(&mut r);
        let functions = registry::Functions::register(&mut r);
        let front = front::Front::register(&mut r);
        let usage = crate::accounting::UsageFamilies::register(&mut r);
        Metrics {
            usage,
            registry: r,
            invocations: inv.invocations,
            queue_wait: inv.queue_wait,
            execution: inv.execution,
            admission,
            workers,
            functions,
            pool,
            front,
        }
    }

    pub fn count(&self, function: &str, outcome: &str) {
        self.invocations
            .get_or_create(&InvocationLabels {
                function: function.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Sets the gauges and counters read at scrape time and renders the text
    /// exposition format.
    pub fn render(&self, v: &GaugeValues) -> String {
        self.admission.set(v);
        self.workers.set(v);
        self.pool.set(v);
        self.functions.set(v);
        self.front.set(v);
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests;
