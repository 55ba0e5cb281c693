//! The worker-thread pool and the per-function admission gauges.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{counter, gauge, raise_to, GaugeValues};

/// Label of the per-function admission gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionLabel {
    pub function: String,
}

pub(super) struct Workers {
    busy: Gauge,
    idle: Gauge,
    queued: Gauge,
    retrying: Gauge,
    /// `wasmbox_worker_slot_failures_total`.
    slot_failures: Counter,
    /// `wasmbox_worker_slot_moves_total`.
    slot_moves: Counter,
    /// `wasmbox_worker_slot_rescues_total`.
    slot_rescues: Counter,
    function_queued: Family<FunctionLabel, Gauge>,
    function_running: Family<FunctionLabel, Gauge>,
    function_reserved_cpu: Family<FunctionLabel, Gauge>,
}

fn family(r: &mut Registry, name: &str, help: &str) -> Family<FunctionLabel, Gauge> {
    let f = Family::<FunctionLabel, Gauge>::default();
    r.register(name, help, f.clone());
    f
}

impl Workers {
    pub fn register(r: &mut Registry) -> Self {
        Workers {
            busy: gauge(r, "workers_busy", "Worker threads running an invocation"),
            idle: gauge(r, "workers_idle", "Worker threads started and idle"),
            queued: gauge(
                r,
                "workers_queued",
                "Admitted invocations waiting for a worker thread",
            ),
            retrying: gauge(
                r,
                "workers_retrying",
                "Worker threads waiting to retry a failed CPU-isolation slot",
            ),
            slot_failures: counter(
                r,
                "worker_slot_failures",
                "CPU-isolation slot failures on worker threads",
            ),
            slot_moves: counter(
                r,
                "worker_slot_moves",
                "Worker threads moved into or out of their cgroup slots after the slots were made (two per call with a limit that reached an epoch tick)",
            ),
            slot_rescues: counter(
                r,
                "worker_slot_rescues",
                "Calls with a limit moved into their cgroup slot by the watch thread's nudge (a signal whose handler moves the thread) because they ran outside it past their first epoch tick (one long operation with no check: instantiation, bulk memory, a costly host call)",
            ),
            function_queued: family(
                r,
                "function_queued",
                "Requests of this function waiting for admission (functions with none are not listed)",
            ),
            function_running: family(
                r,
                "function_running",
                "Admitted requests of this function (running or waiting for a worker)",
            ),
            function_reserved_cpu: family(
                r,
                "function_reserved_cpu_millicores",
                "cpu_quota reserved by this function's admitted requests",
            ),
        }
    }

    pub fn set(&self, v: &GaugeValues) {
        let p = &v.pool_stats;
        self.busy.set(p.busy as i64);
        self.idle.set(p.idle as i64);
        self.queued.set(p.queued as i64);
        self.retrying.set(p.retrying as i64);
        raise_to(&self.slot_failures, p.slot_failures);
        raise_to(
            &self.slot_moves,
            usize::try_from(p.slot_moves).unwrap_or(usize::MAX),
        );
        raise_to(
            &self.slot_rescues,
            usize::try_from(p.slot_rescues).unwrap_or(usize::MAX),
        );
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
    }
}
