//! The stop rules of a component invocation, as for modules: the epoch
//! callback stops (or throttles) the guest while it executes Wasm, and the
//! guest's future is raced against the deadline and the stop signals while
//! it waits in a host call. And the classification of what stopped it.

use std::future::Future;
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::I32Exit;

use wasmbox_isolation::thread_cpu_time;

use super::host::ComponentHost;
use crate::cancel::CancelToken;
use crate::capture::Capture;
use crate::sandbox::Failure;
use crate::store::{Stop, Stopped};

/// The three stop signals of one invocation.
#[derive(Clone)]
pub struct Signals {
    /// Past it the guest is stopped.
    pub deadline: Instant,
    /// The caller went away.
    pub cancel: CancelToken,
    /// The server stops everything.
    pub shutdown: CancelToken,
    /// Its thread's CPU time when the invocation started.
    pub cpu_start: Duration,
    /// CPU time the invocation may use (a manifest's `cpu_budget_ms`).
    pub cpu_budget: Option<Duration>,
}

impl Signals {
    fn now(&self) -> Option<Stop> {
        if self.shutdown.is_cancelled() {
            Some(Stop::Shutdown)
        } else if self.cancel.is_cancelled() {
            Some(Stop::Cancelled)
        } else if Instant::now() >= self.deadline {
            Some(Stop::Timeout)
        } else if self
            .cpu_budget
            .is_some_and(|budget| thread_cpu_time().saturating_sub(self.cpu_start) >= budget)
        {
            Some(Stop::CpuBudget)
        } else {
            None
        }
    }

    /// Installs the memory cap and the epoch callback on `store`.
    pub fn arm(&self, store: &mut Store<ComponentHost>) {
        store.limiter(|h| &mut h.limits);
        let signals = self.clone();
        store.epoch_deadline_callback(move |mut cx| {
            if let Some(tick) = &cx.data().on_tick {
                tick();
            }
            if let Some(t) = &mut cx.data_mut().throttle {
                t.check_until(signals.deadline, || signals.now().is_some());
            }
            let Some(stop) = signals.now() else {
                return Ok(UpdateDeadline::Continue(1));
            };
            cx.data_mut().stopped = Some(stop);
            Err(wasmtime::Error::new(Stopped(stop)))
        });
        store.set_epoch_deadline(1);
    }

    /// Runs `guest` until it finishes or a signal wins (only while the
    /// guest waits in a host call; executing Wasm, the epoch callback
    /// stops it). A guest future that loses is dropped by the caller,
    /// which unwinds the guest.
    pub async fn race<F: Future>(&self, guest: F) -> Result<F::Output, Stop> {
        tokio::pin!(guest);
        tokio::select! {
            biased;
            r = &mut guest => Ok(r),
            _ = self.shutdown.cancelled() => Err(Stop::Shutdown),
            _ = self.cancel.cancelled() => Err(Stop::Cancelled),
            _ = tokio::time::sleep_until(self.deadline.into()) => Err(Stop::Timeout),
        }
    }
}

/// The failure for a stop of ours, given the invocation's timeout and CPU
/// budget (modules and components alike).
pub fn stop_failure(stop: Stop, (timeout, cpu_budget): (Duration, Option<Duration>)) -> Failure {
    match stop {
        Stop::Timeout => Failure::Timeout(timeout),
        Stop::CpuBudget => Failure::CpuBudget(cpu_budget.unwrap_or_default()),
        Stop::Cancelled => Failure::Cancelled,
        Stop::Shutdown => Failure::Shutdown,
    }
}

/// Which [`Failure`] an error from instantiating or calling a component
/// is; our own reasons (stop, output cap, memory cap) first, as for
/// modules. `None`: `exit(0)`, a success.
pub fn classify(
    host: &ComponentHost,
    e: wasmtime::Error,
    stdout: Option<&Capture>,
    limits: (Duration, Option<Duration>),
) -> Option<Failure> {
    if let Some(stop) = host.stopped {
        return Some(stop_failure(stop, limits));
    }
    if let Some(out) = stdout.filter(|o| o.overflowed()) {
        return Some(Failure::OutputLimit { cap: out.cap() });
    }
    if let Some(wanted) = host.limits.refused {
        return Some(Failure::MemoryCap {
            cap: host.limits.cap_bytes,
            wanted,
        });
    }
    if let Some(I32Exit(code)) = e.downcast_ref::<I32Exit>() {
        return (*code != 0).then_some(Failure::Exit(*code));
    }
    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return Some(Failure::PoolExhausted);
    }
    let message = match e.downcast_ref::<Trap>() {
        Some(trap) => format!("{trap} ({e})"),
        None => format!("{e:#}"),
    };
    Some(Failure::Trap(message))
}
