//! Admission and capacity gauges: what is queued and reserved, against what
//! limit, on what capacity, and how busy the container is.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{gauge, GaugeValues};

type FGauge = Gauge<f64, AtomicU64>;

pub(super) struct Admission {
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
}

impl Admission {
    pub fn register(r: &mut Registry) -> Self {
        let cpu_utilization = FGauge::default();
        r.register(
            "cpu_utilization_cores",
            "Container CPU use in cores (mean of the last samples)",
            cpu_utilization.clone(),
        );
        let memory_utilization = FGauge::default();
        r.register(
            "memory_utilization_ratio",
            "Container memory in use / memory capacity (readiness window mean)",
            memory_utilization.clone(),
        );
        Admission {
            queue_depth: gauge(r, "queue_depth", "Requests waiting for admission"),
            queue_mb: gauge(
                r,
                "queue_memory_mb",
                "Memory-Request MB of waiting requests",
            ),
            reserved_cpu: gauge(
                r,
                "reserved_cpu_millicores",
                "cpu_quota reserved by admitted requests",
            ),
            reserved_memory: gauge(
                r,
                "reserved_memory_mb",
                "Memory-Request reserved by admitted requests",
            ),
            capacity_cpu: gauge(
                r,
                "capacity_cpu_millicores",
                "Detected or configured CPU capacity",
            ),
            capacity_memory: gauge(
                r,
                "capacity_memory_mb",
                "Detected or configured memory capacity",
            ),
            limit_cpu: gauge(
                r,
                "admission_limit_cpu_millicores",
                "CPU capacity x overbooking",
            ),
            limit_memory: gauge(
                r,
                "admission_limit_memory_mb",
                "Memory capacity x overbooking",
            ),
            cpu_utilization,
            memory_utilization,
        }
    }

    pub fn set(&self, v: &GaugeValues) {
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
    }
}
