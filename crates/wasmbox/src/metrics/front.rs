//! The serving port's front door: open connections, and the body budget.

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{gauge, GaugeValues};

pub(super) struct Front {
    connections: Gauge,
    body_bytes: Gauge,
    body_budget: Gauge,
}

impl Front {
    pub fn register(r: &mut Registry) -> Self {
        Front {
            connections: gauge(
                r,
                "open_connections",
                "Open client connections on the serving port (at most --max-connections)",
            ),
            body_bytes: gauge(
                r,
                "body_bytes_held",
                "Request and unwritten response body bytes held in memory",
            ),
            body_budget: gauge(
                r,
                "body_budget_bytes",
                "The body budget (--max-buffered-mb) in bytes",
            ),
        }
    }

    pub fn set(&self, v: &GaugeValues) {
        let (connections, held, budget) = v.front;
        self.connections.set(connections as i64);
        self.body_bytes.set(held as i64);
        self.body_budget.set(budget as i64);
    }
}
