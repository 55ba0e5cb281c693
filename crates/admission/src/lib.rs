//! Resource-aware admission: every invocation reserves the CPU (millicores)
//! and memory (MB) it declares; it is admitted while the reservations fit in
//! capacity x overbooking and the CPU-utilisation gate is open, and otherwise
//! waits in one strictly first-in-first-out queue.
//!
//! What the reference's queue-proxy fork got wrong, and how this differs:
//! - only the head of the queue may be admitted, so a large request is never
//!   overtaken (starved) by smaller ones behind it;
//! - every change that can let the head in (a release, the CPU metric
//!   dropping, a waiter leaving) re-runs admission under the same lock, so
//!   no wake-up is lost;
//! - a request larger than the whole (overbooked) capacity fails at once;
//! - a waiter that times out or whose client leaves is removed, and a
//!   reservation is released on every path (the [`Permit`] is a guard).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Resources of a whole server or of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_mb: u64,
}

/// Plain-data admission settings.
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    pub capacity: Resources,
    /// Admit up to capacity x ratio (1.0 = no overbooking).
    pub cpu_overbook: f64,
    pub memory_overbook: f64,
    /// Most requests waiting.
    pub max_queue: usize,
    /// Most MB declared by running + waiting requests beyond what is
    /// admitted (the fork's queueDepthResourceUnits counts waiting MB).
    pub max_queue_mb: u64,
    /// Longest wait in the queue.
    pub queue_timeout: Duration,
    /// Hold admissions while CPU utilisation (cores) is at or above this.
    pub cpu_gate: Option<f64>,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejected {
    #[error("the request needs {want} but this server can admit at most {limit} in total; it can never run here")]
    TooLarge { want: String, limit: String },
    #[error("the admission queue is full ({waiting} requests, {queued_mb} MB waiting; limits {max_queue} requests, {max_queue_mb} MB)")]
    QueueFull {
        waiting: usize,
        queued_mb: u64,
        max_queue: usize,
        max_queue_mb: u64,
    },
    #[error("waited {0:?} in the admission queue without being admitted")]
    Timeout(Duration),
    #[error("the server is draining and admits no new requests")]
    Draining,
}

/// A snapshot for metrics and readiness.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub reserved: Resources,
    pub limit: Resources,
    pub queued: usize,
    pub queued_mb: u64,
    pub cpu_utilization: f64,
    pub gate_closed: bool,
}

struct Waiter {
    id: u64,
    want: Resources,
    wake: Option<oneshot::Sender<()>>,
}

struct State {
    reserved: Resources,
    queue: VecDeque<Waiter>,
    queued_mb: u64,
    cpu_utilization: f64,
    next_id: u64,
    draining: bool,
}

pub struct Admission {
    config: AdmissionConfig,
    limit: Resources,
    state: Mutex<State>,
}

/// An admitted request's reservation; released when dropped.
pub struct Permit {
    admission: Arc<Admission>,
    want: Resources,
    /// Time spent waiting in the queue.
    pub waited: Duration,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut st = self.admission.state.lock().unwrap();
        st.reserved.cpu_millis -= self.want.cpu_millis;
        st.reserved.memory_mb -= self.want.memory_mb;
        self.admission.admit_waiters(&mut st);
    }
}

impl Admission {
    pub fn new(config: AdmissionConfig) -> Arc<Self> {
        let limit = Resources {
            cpu_millis: (config.capacity.cpu_millis as f64 * config.cpu_overbook).floor() as u64,
            memory_mb: (config.capacity.memory_mb as f64 * config.memory_overbook).floor() as u64,
        };
        Arc::new(Admission {
            config,
            limit,
            state: Mutex::new(State {
                reserved: Resources::default(),
                queue: VecDeque::new(),
                queued_mb: 0,
                cpu_utilization: 0.0,
                next_id: 0,
                draining: false,
            }),
        })
    }

    pub fn config(&self) -> &AdmissionConfig {
        &self.config
    }

    /// Total that may be reserved at once (capacity x overbooking).
    pub fn limit(&self) -> Resources {
        self.limit
    }

    /// Admits `want` now, or waits its turn in the queue.
    pub async fn admit(self: &Arc<Self>, want: Resources) -> Result<Permit, Rejected> {
        if want.cpu_millis > self.limit.cpu_millis || want.memory_mb > self.limit.memory_mb {
            return Err(Rejected::TooLarge {
                want: format!("{} millicores and {} MB", want.cpu_millis, want.memory_mb),
                limit: format!(
                    "{} millicores and {} MB (capacity x overbooking)",
                    self.limit.cpu_millis, self.limit.memory_mb
                ),
            });
        }
        let (id, rx) = {
            let mut st = self.state.lock().unwrap();
            if st.draining {
                return Err(Rejected::Draining);
            }
            // Only when nobody is waiting: otherwise this one queues behind them.
            if st.queue.is_empty() && self.fits(&st, want) {
                st.reserved.cpu_millis += want.cpu_millis;
                st.reserved.memory_mb += want.memory_mb;
                return Ok(Permit {
                    admission: self.clone(),
                    want,
                    waited: Duration::ZERO,
                });
            }
            if st.queue.len() >= self.config.max_queue
                || st.queued_mb + want.memory_mb > self.config.max_queue_mb
            {
                return Err(Rejected::QueueFull {
                    waiting: st.queue.len(),
                    queued_mb: st.queued_mb,
                    max_queue: self.config.max_queue,
                    max_queue_mb: self.config.max_queue_mb,
                });
            }
            let id = st.next_id;
            st.next_id += 1;
            let (tx, rx) = oneshot::channel();
            st.queue.push_back(Waiter {
                id,
                want,
                wake: Some(tx),
            });
            st.queued_mb += want.memory_mb;
            (id, rx)
        };
        let started = Instant::now();
        // If this future is dropped (client gone), leave the queue or give
        // back a reservation made for us in the meantime.
        let mut guard = WaitGuard {
            admission: self,
            id,
            want,
            armed: true,
        };
        let woke = tokio::time::timeout(self.config.queue_timeout, rx).await;
        guard.armed = false;
        let mut st = self.state.lock().unwrap();
        match woke {
            Ok(Ok(())) => Ok(Permit {
                admission: self.clone(),
                want,
                waited: started.elapsed(),
            }),
            _ => {
                if self.remove_waiter(&mut st, id) {
                    Err(Rejected::Timeout(self.config.queue_timeout))
                } else {
                    // Admitted just as the timer fired: it is ours.
                    Ok(Permit {
                        admission: self.clone(),
                        want,
                        waited: started.elapsed(),
                    })
                }
            }
        }
    }

    fn fits(&self, st: &State, want: Resources) -> bool {
        let gate_open = self.config.cpu_gate.is_none_or(|t| st.cpu_utilization < t);
        gate_open
            && st.reserved.cpu_millis + want.cpu_millis <= self.limit.cpu_millis
            && st.reserved.memory_mb + want.memory_mb <= self.limit.memory_mb
    }

    /// Admits waiters from the head while they fit. Strict FIFO: stops at the
    /// first that does not.
    fn admit_waiters(&self, st: &mut State) {
        while let Some(head) = st.queue.front() {
            if !self.fits(st, head.want) {
                break;
            }
            let mut w = st.queue.pop_front().unwrap();
            st.queued_mb -= w.want.memory_mb;
            st.reserved.cpu_millis += w.want.cpu_millis;
            st.reserved.memory_mb += w.want.memory_mb;
            // If the waiter is gone, its guard (or its timeout path) finds it
            // no longer queued and gives the reservation back: never here,
            // or it would be released twice.
            if let Some(tx) = w.wake.take() {
                let _ = tx.send(());
            }
        }
    }

    /// Removes a waiter; false if it was no longer queued (already admitted).
    fn remove_waiter(&self, st: &mut State, id: u64) -> bool {
        let Some(pos) = st.queue.iter().position(|w| w.id == id) else {
            return false;
        };
        let w = st.queue.remove(pos).unwrap();
        st.queued_mb -= w.want.memory_mb;
        // The head may have changed: let the next one in if it fits.
        self.admit_waiters(st);
        true
    }

    /// Feeds the latest CPU utilisation (cores); re-checks waiters when it
    /// drops, so the gate never stalls the queue until timeout.
    pub fn set_cpu_utilization(&self, cores: f64) {
        let mut st = self.state.lock().unwrap();
        st.cpu_utilization = cores;
        self.admit_waiters(&mut st);
    }

    /// Stops admitting new requests; those already waiting keep their place.
    pub fn start_draining(&self) {
        self.state.lock().unwrap().draining = true;
    }

    pub fn snapshot(&self) -> Snapshot {
        let st = self.state.lock().unwrap();
        Snapshot {
            reserved: st.reserved,
            limit: self.limit,
            queued: st.queue.len(),
            queued_mb: st.queued_mb,
            cpu_utilization: st.cpu_utilization,
            gate_closed: self
                .config
                .cpu_gate
                .is_some_and(|t| st.cpu_utilization >= t),
        }
    }

    /// True when a request of `want` would be refused with QueueFull now.
    pub fn queue_full(&self) -> bool {
        let st = self.state.lock().unwrap();
        st.queue.len() >= self.config.max_queue || st.queued_mb >= self.config.max_queue_mb
    }
}

struct WaitGuard<'a> {
    admission: &'a Arc<Admission>,
    id: u64,
    want: Resources,
    armed: bool,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut st = self.admission.state.lock().unwrap();
        if !self.admission.remove_waiter(&mut st, self.id) {
            // Admitted but never picked up: release.
            st.reserved.cpu_millis -= self.want.cpu_millis;
            st.reserved.memory_mb -= self.want.memory_mb;
            self.admission.admit_waiters(&mut st);
        }
    }
}

#[cfg(test)]
mod tests;
