//! wasmtime's pooling allocator.

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{gauge, GaugeValues};

pub(super) struct Pool {
    instances: Gauge,
    memories: Gauge,
    warm_memories: Gauge,
    resident_bytes: Gauge,
}

impl Pool {
    pub fn register(r: &mut Registry) -> Self {
        Pool {
            instances: gauge(
                r,
                "pool_core_instances",
                "Instances allocated in the pooling allocator",
            ),
            memories: gauge(
                r,
                "pool_memories",
                "Linear memories allocated in the pooling allocator",
            ),
            warm_memories: gauge(
                r,
                "pool_unused_warm_memories",
                "Unused memory slots kept warm",
            ),
            resident_bytes: gauge(
                r,
                "pool_unused_memory_bytes_resident",
                "Resident bytes in unused memory slots",
            ),
        }
    }

    pub fn set(&self, v: &GaugeValues) {
        if let Some(p) = &v.pool {
            self.instances.set(p.core_instances() as i64);
            self.memories.set(p.memories() as i64);
            self.warm_memories.set(p.unused_warm_memories() as i64);
            self.resident_bytes
                .set(p.unused_memory_bytes_resident() as i64);
        }
    }
}
