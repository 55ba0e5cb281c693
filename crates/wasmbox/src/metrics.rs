//! Prometheus metrics at `/-/metrics`. Counters and histograms are updated
//! on the request path; gauges are read from their sources at scrape time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Label of the per-function admission gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionLabel {
    pub function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InvocationLabels {
    pub function: String,
    /// `ok`, or the `Wasmbox-Error` kind.
    pub outcome: String,
}

type FGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    pub invocations: Family<InvocationLabels, Counter>,
    pub queue_wait: Histogram,
    pub execution: Histogram,
    queue_depth: Gauge,
    queue_mb: Gauge,
    reserved_cpu: Gauge,
    reserved_memory: Gauge,
    capacity_cpu: Gauge,
    capacity_memory: Gauge,
    limit_cpu: Gauge,
    limit_memory: Gauge,
    cpu_utilization: FGauge,
    memory_utilization: FGauge,
    workers_busy: Gauge,
    workers_idle: Gauge,
    workers_queued: Gauge,
    workers_retrying: Gauge,
    worker_slot_failures: Gauge,
    function_queued: Family<FunctionLabel, Gauge>,
    function_running: Family<FunctionLabel, Gauge>,
    function_reserved_cpu: Family<FunctionLabel, Gauge>,
    pool_instances: Gauge,
    pool_memories: Gauge,
    pool_warm_memories: Gauge,
    pool_resident_bytes: Gauge,
    functions_loaded: Gauge,
    function_loads: Gauge,
    function_cache_hits: Gauge,
    function_unloads: Gauge,
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
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wasmbox");
        let invocations = Family::<InvocationLabels, Counter>::default();
        registry.register(
            "invocations",
            "Invocations by function and outcome",
            invocations.clone(),
        );
        let queue_wait = Histogram::new(exponential_buckets(0.0001, 4.0, 10));
        registry.register(
            "queue_wait_seconds",
            "Time waiting for admission",
            queue_wait.clone(),
        );
        let execution = Histogram::new(exponential_buckets(0.00001, 4.0, 12));
        registry.register(
            "execution_seconds",
            "Instantiate + run time of invocations",
            execution.clone(),
        );
        let mut g = |name: &str, help: &str| {
            let m = Gauge::default();
            registry.register(name, help, m.clone());
            m
        };
        let queue_depth = g("queue_depth", "Requests waiting for admission");
        let queue_mb = g("queue_memory_mb", "Memory-Request MB of waiting requests");
        let reserved_cpu = g(
            "reserved_cpu_millicores",
            "cpu_quota reserved by admitted requests",
        );
        let reserved_memory = g(
            "reserved_memory_mb",
            "Memory-Request reserved by admitted requests",
        );
        let capacity_cpu = g(
            "capacity_cpu_millicores",
            "Detected or configured CPU capacity",
        );
        let capacity_memory = g(
            "capacity_memory_mb",
            "Detected or configured memory capacity",
        );
        let limit_cpu = g(
            "admission_limit_cpu_millicores",
            "CPU capacity x overbooking",
        );
        let limit_memory = g("admission_limit_memory_mb", "Memory capacity x overbooking");
        let workers_busy = g("workers_busy", "Worker threads running an invocation");
        let workers_idle = g("workers_idle", "Worker threads started and idle");
        let workers_queued = g(
            "workers_queued",
            "Admitted invocations waiting for a worker thread",
        );
        let workers_retrying = g(
            "workers_retrying",
            "Worker threads waiting to retry a failed CPU-isolation slot",
        );
        let worker_slot_failures = g(
            "worker_slot_failures",
            "CPU-isolation slot failures on worker threads since start",
        );
        let pool_instances = g(
            "pool_core_instances",
            "Instances allocated in the pooling allocator",
        );
        let pool_memories = g(
            "pool_memories",
            "Linear memories allocated in the pooling allocator",
        );
        let pool_warm_memories = g("pool_unused_warm_memories", "Unused memory slots kept warm");
        let pool_resident_bytes = g(
            "pool_unused_memory_bytes_resident",
            "Resident bytes in unused memory slots",
        );
        let functions_loaded = g(
            "functions_loaded",
            "Functions held by the registry: compiled, compiling or failed (at most --max-loaded-functions)",
        );
        let function_loads = g(
            "function_loads",
            "Compilations or cache loads of functions since start",
        );
        let function_cache_hits = g(
            "function_cache_hits",
            "Function loads served from the AOT cache since start",
        );
        let function_unloads = g(
            "function_unloads",
            "Functions unloaded (least recently used) since start",
        );
        let mut family = |name: &str, help: &str| {
            let f = Family::<FunctionLabel, Gauge>::default();
            registry.register(name, help, f.clone());
            f
        };
        let function_queued = family(
            "function_queued",
            "Requests of this function waiting for admission (functions with none are not listed)",
        );
        let function_running = family(
            "function_running",
            "Admitted requests of this function (running or waiting for a worker)",
        );
        let function_reserved_cpu = family(
            "function_reserved_cpu_millicores",
            "cpu_quota reserved by this function's admitted requests",
        );
        let cpu_utilization = FGauge::default();
        registry.register(
            "cpu_utilization_cores",
            "Container CPU use in cores (mean of the last samples)",
            cpu_utilization.clone(),
        );
        let memory_utilization = FGauge::default();
        registry.register(
            "memory_utilization_ratio",
            "Container memory in use / memory capacity (readiness window mean)",
            memory_utilization.clone(),
        );
        Metrics {
            registry,
            invocations,
            queue_wait,
            execution,
            queue_depth,
            queue_mb,
            reserved_cpu,
            reserved_memory,
            capacity_cpu,
            capacity_memory,
            limit_cpu,
            limit_memory,
            cpu_utilization,
            memory_utilization,
            workers_busy,
            workers_idle,
            workers_queued,
            workers_retrying,
            worker_slot_failures,
            function_queued,
            function_running,
            function_reserved_cpu,
            pool_instances,
            pool_memories,
            pool_warm_memories,
            pool_resident_bytes,
            functions_loaded,
            function_loads,
            function_cache_hits,
            function_unloads,
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

    /// Sets the gauges and renders the text exposition format.
    pub fn render(&self, v: &GaugeValues) -> String {
        let a = &v.admission;
        self.queue_depth.set(a.queued as i64);
        self.queue_mb.set(a.queued_mb as i64);
        self.reserved_cpu.set(a.reserved.cpu_millis as i64);
        self.reserved_memory.set(a.reserved.memory_mb as i64);
        self.limit_cpu.set(a.limit.cpu_millis as i64);
        self.limit_memory.set(a.limit.memory_mb as i64);
        self.capacity_cpu.set(v.capacity.cpu_millis as i64);
        self.capacity_memory.set(v.capacity.memory_mb as i64);
        self.cpu_utilization.set(a.cpu_utilization);
        self.memory_utilization.set(v.memory_utilization);
        let p = &v.pool_stats;
        self.workers_busy.set(p.busy as i64);
        self.workers_idle.set(p.idle as i64);
        self.workers_queued.set(p.queued as i64);
        self.workers_retrying.set(p.retrying as i64);
        self.worker_slot_failures.set(p.slot_failures as i64);
        // Only functions with something queued or running are listed, so
        // the label set stays bounded by the work in flight.
        self.function_queued.clear();
        self.function_running.clear();
        self.function_reserved_cpu.clear();
        for f in &v.per_function {
            let label = FunctionLabel {
                function: f.function.to_string(),
            };
            self.function_queued
                .get_or_create(&label)
                .set(f.queued as i64);
            self.function_running
                .get_or_create(&label)
                .set(f.running as i64);
            self.function_reserved_cpu
                .get_or_create(&label)
                .set(f.reserved.cpu_millis as i64);
        }
        if let Some(p) = &v.pool {
            self.pool_instances.set(p.core_instances() as i64);
            self.pool_memories.set(p.memories() as i64);
            self.pool_warm_memories.set(p.unused_warm_memories() as i64);
            self.pool_resident_bytes
                .set(p.unused_memory_bytes_resident() as i64);
        }
        let (held, loads, hits, unloads) = v.functions;
        self.functions_loaded.set(held as i64);
        self.function_loads.set(loads as i64);
        self.function_cache_hits.set(hits as i64);
        self.function_unloads.set(unloads as i64);
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
