//! Plain-data admission settings, their defaults, and the absolute limits
//! derived from them.

use std::time::Duration;

use crate::Resources;

/// Default most requests waiting, over all functions.
pub const DEFAULT_MAX_QUEUE: usize = 1000;
/// Default longest wait in the queue.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default fraction of the limit (in each of CPU, memory and running
/// calls) that one function may hold while another function is waiting.
pub const DEFAULT_MAX_FUNCTION_SHARE: f64 = 0.5;
/// Default fraction of the CPU limit that a function with nothing running
/// may reserve beyond the limit for its first call.
pub const DEFAULT_NEWCOMER_CPU_OVERDRAFT: f64 = 0.1;
/// Default fraction of the server's queue (both `max_queue` requests and
/// `max_queue_mb`) that one function's waiters may take.
pub const DEFAULT_MAX_FUNCTION_QUEUE_SHARE: f64 = 0.5;

/// Default longest a request that does not fit may be overtaken by
/// smaller ones that do (backfilling); after that nobody passes it. Off
/// (strict order) by default: in three full runs of the trace benchmark,
/// 1 s of backfilling lowered short calls' median latency (992 ms against
/// 1231 and 1256 ms strict) but not their p99 (6.1 s against 6.0 s), and
/// the runs with an abusive function varied as much between two strict
/// runs as against the backfilling one, so there is no case for it yet.
pub const DEFAULT_MAX_OVERTAKEN_WAIT: Duration = Duration::ZERO;

/// Plain-data admission settings. Build with [`AdmissionConfig::new`] and
/// override fields with struct update syntax.
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    /// What the server has: CPU in millicores, memory in MB.
    pub capacity: Resources,
    /// Admit up to capacity x ratio (1.0 = no overbooking).
    pub cpu_overbook: f64,
    /// The same for memory.
    pub memory_overbook: f64,
    /// Most requests waiting, over all functions.
    pub max_queue: usize,
    /// Most MB declared by waiting requests, over all functions (the
    /// fork's queueDepthResourceUnits counts waiting MB).
    pub max_queue_mb: u64,
    /// Longest wait in the queue.
    pub queue_timeout: Duration,
    /// Hold admissions while CPU utilisation (cores) is at or above this.
    pub cpu_gate: Option<f64>,
    /// While another function is waiting, a function that already holds a
    /// reservation may not grow past this fraction of the limit (in CPU,
    /// in memory, or in running calls of `max_running`). In (0, 1]; 1.0
    /// turns the ceiling off.
    /// [default: [`DEFAULT_MAX_FUNCTION_SHARE`]]
    pub max_function_share: f64,
    /// A function with nothing running may reserve up to this fraction of
    /// the CPU limit beyond the limit (memory never overdraws), so its first
    /// call starts at once even when others hold all the CPU. At least 0;
    /// 0 turns it off. [default: [`DEFAULT_NEWCOMER_CPU_OVERDRAFT`]]
    pub newcomer_cpu_overdraft: f64,
    /// Fraction of `max_queue` and of `max_queue_mb` that one function's
    /// waiters may take (a function may always queue one request). In
    /// (0, 1]; 1.0 lets one function fill the whole queue.
    /// [default: [`DEFAULT_MAX_FUNCTION_QUEUE_SHARE`]]
    pub max_function_queue_share: f64,
    /// Backfilling: when the request first in the fair order does not fit,
    /// requests after it that do fit are admitted past it, until it has
    /// waited this long; from then on nobody passes it until it runs.
    /// Zero turns backfilling off (strict order).
    /// [default: [`DEFAULT_MAX_OVERTAKEN_WAIT`]]
    pub max_overtaken_wait: Duration,
    /// Most calls admitted at once, over all functions, whatever they
    /// reserve: the server sets it to its worker count, so every admitted
    /// call has a worker and the rest wait here, in the fair order, not in
    /// the workers' first-come queue. A third resource beside CPU and
    /// memory: it counts in a function's dominant share and in its ceiling
    /// (`max_function_share` of it). At least 1. [default: unlimited]
    pub max_running: usize,
}

impl AdmissionConfig {
    /// Settings for `capacity` with every other field at its default: no
    /// overbooking, no CPU gate, `max_queue_mb` = the memory capacity.
    pub fn new(capacity: Resources) -> Self {
        AdmissionConfig {
            capacity,
            cpu_overbook: 1.0,
            memory_overbook: 1.0,
            max_queue: DEFAULT_MAX_QUEUE,
            max_queue_mb: capacity.memory_mb,
            queue_timeout: DEFAULT_QUEUE_TIMEOUT,
            cpu_gate: None,
            max_function_share: DEFAULT_MAX_FUNCTION_SHARE,
            newcomer_cpu_overdraft: DEFAULT_NEWCOMER_CPU_OVERDRAFT,
            max_function_queue_share: DEFAULT_MAX_FUNCTION_QUEUE_SHARE,
            max_overtaken_wait: DEFAULT_MAX_OVERTAKEN_WAIT,
            max_running: usize::MAX,
        }
    }

    /// Checks the ratios; the message names the field and the valid range.
    /// [`Admission::new`](crate::Admission::new) clamps out-of-range values
    /// instead, so call this where the settings are read.
    pub fn validate(&self) -> Result<(), String> {
        let share = |name: &str, v: f64| {
            if v > 0.0 && v <= 1.0 {
                Ok(())
            } else {
                Err(format!("{name} must be above 0 and at most 1, not {v}"))
            }
        };
        share("max_function_share", self.max_function_share)?;
        share("max_function_queue_share", self.max_function_queue_share)?;
        for (name, v) in [
            ("cpu_overbook", self.cpu_overbook),
            ("memory_overbook", self.memory_overbook),
            ("newcomer_cpu_overdraft", self.newcomer_cpu_overdraft),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!(
                    "{name} must be a finite number of at least 0, not {v}"
                ));
            }
        }
        if self.max_running == 0 {
            return Err("max_running must be at least 1".into());
        }
        Ok(())
    }
}

/// Absolute numbers derived once from the config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// capacity x overbooking.
    pub total: Resources,
    /// What one function may hold while another waits.
    pub per_function: Resources,
    /// Extra CPU a function with nothing running may reserve.
    pub cpu_overdraft: u64,
    pub function_queue: usize,
    pub function_queue_mb: u64,
    pub max_overtaken_wait: Duration,
    /// Most calls admitted at once.
    pub max_running: usize,
    /// What one function may run while another waits (at least 1).
    pub function_running: usize,
}

fn frac(v: u64, f: f64) -> u64 {
    (v as f64 * f).floor() as u64
}

impl Limits {
    pub fn new(c: &AdmissionConfig) -> Self {
        let ratio = |v: f64| if v.is_finite() { v.max(0.0) } else { 1.0 };
        let share = |v: f64| if v > 0.0 { v.min(1.0) } else { 1.0 };
        let total = Resources {
            cpu_millis: frac(c.capacity.cpu_millis, ratio(c.cpu_overbook)),
            memory_mb: frac(c.capacity.memory_mb, ratio(c.memory_overbook)),
        };
        let fs = share(c.max_function_share);
        let qs = share(c.max_function_queue_share);
        Limits {
            total,
            per_function: Resources {
                cpu_millis: frac(total.cpu_millis, fs),
                memory_mb: frac(total.memory_mb, fs),
            },
            cpu_overdraft: frac(total.cpu_millis, ratio(c.newcomer_cpu_overdraft)),
            function_queue: (c.max_queue as f64 * qs).floor() as usize,
            function_queue_mb: frac(c.max_queue_mb, qs),
            max_overtaken_wait: c.max_overtaken_wait,
            max_running: c.max_running.max(1),
            function_running: ((c.max_running as f64 * fs).floor() as usize).max(1),
        }
    }
}
