//! The state every request handler shares: the runtime, admission,
//! readiness, metrics and the limits requests are checked against.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use wasmbox_admission::{Admission, Resources};
use wasmbox_runtime::registry::Manifests;
use wasmbox_runtime::{Executor, Registry, WasmEngine};

use super::await_end::EndPoll;
use super::body::BodyRules;
use super::budget::BodyBudget;
use crate::accounting::Accounting;
use crate::config::{Compat, RequestLimits};
use crate::health::Readiness;
use crate::metrics::Metrics;

/// Runtime handles shared by all requests.
pub struct App {
    pub engine: WasmEngine,
    pub registry: Arc<Registry>,
    pub executor: Arc<Executor>,
    pub limits: RequestLimits,
    pub compat: Compat,
    pub pod: String,
    /// Requests being handled right now (the reference's Num-Current-Requests).
    pub in_flight: AtomicUsize,
    /// Handler bodies read to their end apart from their connections (the
    /// client has its whole answer; `stream::Streamed::finish_apart`):
    /// shutdown waits for them within the drain timeout.
    pub apart: Arc<AtomicUsize>,
    /// Whether a lone request polls for its invocation's end.
    pub end_poll: EndPoll,
    pub admission: Arc<Admission>,
    pub readiness: Readiness,
    pub metrics: Metrics,
    /// Capacity admission works with (detected or configured).
    pub capacity: Resources,
    /// How request bodies are read.
    pub body_rules: BodyRules,
    /// Request and response bytes held in memory.
    pub body_budget: Arc<BodyBudget>,
    /// Open connections on the serving port.
    pub connections: Arc<AtomicUsize>,
    /// Functions' manifests (`NAME.toml`).
    pub manifests: Arc<Manifests>,
    /// Per-function usage: metrics, totals, access log.
    pub accounting: Arc<Accounting>,
}
