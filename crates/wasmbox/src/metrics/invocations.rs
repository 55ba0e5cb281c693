//! Per-invocation metrics, updated on the request path: outcomes by
//! function, time waiting for admission, instantiate + run time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InvocationLabels {
    pub function: String,
    /// `ok`, or the `Wasmbox-Error` kind.
    pub outcome: String,
}

pub(super) struct Invocations {
    /// `wasmbox_invocations_total{function,outcome}`.
    pub invocations: Family<InvocationLabels, Counter>,
    /// `wasmbox_queue_wait_seconds`.
    pub queue_wait: Histogram,
    /// `wasmbox_execution_seconds`.
    pub execution: Histogram,
}

impl Invocations {
    pub fn register(registry: &mut Registry) -> Self {
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
        Invocations {
            invocations,
            queue_wait,
            execution,
        }
    }
}
