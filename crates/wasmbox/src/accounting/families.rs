//! The per-function usage families on `/-/metrics`. Their labels are
//! bounded by [`super::Accounting`]: a function it drops is removed from
//! every family here (and from `wasmbox_invocations_total`).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// One label: the function's file name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Function {
    pub function: String,
}

type Seconds = Family<Function, Counter<f64, AtomicU64>>;
type Hist = Family<Function, Histogram, fn() -> Histogram>;

/// One function's series in every family (see [`UsageFamilies::series`]).
/// A handle outliving its function's removal from the families counts
/// into nothing scraped: the accounting drops both together.
pub struct Series {
    pub cpu_seconds: Counter<f64, AtomicU64>,
    pub wall_seconds: Counter<f64, AtomicU64>,
    pub queue_seconds: Counter<f64, AtomicU64>,
    pub memory_mb_seconds: Counter<f64, AtomicU64>,
    pub compile_seconds: Counter<f64, AtomicU64>,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub cpu_hist: Histogram,
    pub wall_hist: Histogram,
    pub peak_memory_hist: Histogram,
}

/// The families (clones share their values).
#[derive(Clone)]
pub struct UsageFamilies {
    pub cpu_seconds: Seconds,
    pub wall_seconds: Seconds,
    pub queue_seconds: Seconds,
    pub memory_mb_seconds: Seconds,
    pub compile_seconds: Seconds,
    pub bytes_in: Family<Function, Counter>,
    pub bytes_out: Family<Function, Counter>,
    pub cpu_hist: Hist,
    pub wall_hist: Hist,
    pub peak_memory_hist: Hist,
    /// Access-log lines dropped (the writer fell behind).
    pub log_dropped: Counter,
}

fn cpu_buckets() -> Histogram {
    // 0.1 ms .. about 27 s.
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

fn peak_buckets() -> Histogram {
    // 1 MiB .. 4 GiB.
    Histogram::new(exponential_buckets(1.0, 4.0, 7))
}

impl UsageFamilies {
    /// Registers every family in `r` (prefix `wasmbox_`).
    pub fn register(r: &mut Registry) -> Self {
        let f = UsageFamilies {
            cpu_seconds: Seconds::default(),
            wall_seconds: Seconds::default(),
            queue_seconds: Seconds::default(),
            memory_mb_seconds: Seconds::default(),
            compile_seconds: Seconds::default(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            cpu_hist: Hist::new_with_constructor(cpu_buckets),
            wall_hist: Hist::new_with_constructor(cpu_buckets),
            peak_memory_hist: Hist::new_with_constructor(peak_buckets),
            log_dropped: Counter::default(),
        };
        r.register(
            "function_cpu_seconds",
            "CPU time of invocations' threads (store setup, instantiate and run), by function",
            f.cpu_seconds.clone(),
        );
        r.register(
            "function_wall_seconds",
            "Server-side time of requests from arrival to outcome, by function",
            f.wall_seconds.clone(),
        );
        r.register(
            "function_queue_seconds",
            "Time requests waited for admission and a worker, by function",
            f.queue_seconds.clone(),
        );
        r.register(
            "function_memory_mb_seconds",
            "Memory-Request MB x seconds reserved (admission to the guest's stop), by function",
            f.memory_mb_seconds.clone(),
        );
        r.register(
            "function_compile_seconds",
            "Wall time spent loading (compiling or reading from the AOT cache) each function",
            f.compile_seconds.clone(),
        );
        r.register(
            "function_request_bytes",
            "Request body bytes, by function",
            f.bytes_in.clone(),
        );
        r.register(
            "function_response_bytes",
            "Response body bytes, by function",
            f.bytes_out.clone(),
        );
        r.register(
            "function_invocation_cpu_seconds",
            "CPU time per invocation, by function",
            f.cpu_hist.clone(),
        );
        r.register(
            "function_request_duration_seconds",
            "Server-side time per request, by function",
            f.wall_hist.clone(),
        );
        r.register(
            "function_peak_memory_mb",
            "Peak linear memory per invocation in MiB, by function",
            f.peak_memory_hist.clone(),
        );
        r.register(
            "access_log_dropped",
            "Access-log lines dropped because the writer fell behind",
            f.log_dropped.clone(),
        );
        f
    }

    /// `function`'s series in every family, created if need be: handles
    /// that share their values with the families, so that recording into
    /// them needs no lookup (the label's hash and each family's lock).
    pub fn series(&self, function: &str) -> Series {
        let l = Function {
            function: function.to_string(),
        };
        Series {
            cpu_seconds: self.cpu_seconds.get_or_create_owned(&l),
            wall_seconds: self.wall_seconds.get_or_create_owned(&l),
            queue_seconds: self.queue_seconds.get_or_create_owned(&l),
            memory_mb_seconds: self.memory_mb_seconds.get_or_create_owned(&l),
            compile_seconds: self.compile_seconds.get_or_create_owned(&l),
            bytes_in: self.bytes_in.get_or_create_owned(&l),
            bytes_out: self.bytes_out.get_or_create_owned(&l),
            cpu_hist: self.cpu_hist.get_or_create_owned(&l),
            wall_hist: self.wall_hist.get_or_create_owned(&l),
            peak_memory_hist: self.peak_memory_hist.get_or_create_owned(&l),
        }
    }

    /// Removes `function` from every family.
    pub fn remove(&self, function: &str) {
        let l = Function {
            function: function.to_string(),
        };
        self.cpu_seconds.remove(&l);
        self.wall_seconds.remove(&l);
        self.queue_seconds.remove(&l);
        self.memory_mb_seconds.remove(&l);
        self.compile_seconds.remove(&l);
        self.bytes_in.remove(&l);
        self.bytes_out.remove(&l);
        self.cpu_hist.remove(&l);
        self.wall_hist.remove(&l);
        self.peak_memory_hist.remove(&l);
    }
}
