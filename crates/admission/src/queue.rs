//! The state under the admission lock: one FIFO queue per function, the
//! totals, and the pass that admits waiters in fair order. Every function
//! here runs with the lock held.

use std::collections::{HashMap, VecDeque};

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::Limits;
use crate::{FunctionKey, Resources, Start};

/// What a waiter is told; sent under the lock, so a waiter that finds
/// itself no longer queued can read it with `try_recv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Its reservation has been made on its behalf.
    Admitted,
    /// `close()` failed it.
    Closed,
}

pub(crate) struct Waiter {
    /// Arrival order over all functions (ties in the fair order).
    pub seq: u64,
    pub want: Resources,
    pub wake: oneshot::Sender<Outcome>,
    /// What to run with its permit once admitted, if the caller handed
    /// that over ([`crate::Admission::admit_then`]).
    pub start: Option<Start>,
    /// When it arrived (bounds how long it may be overtaken).
    pub since: Instant,
}

/// A request admitted with a start (from the queue, or at once), to be run
/// once the lock is released.
pub(crate) struct Ready {
    pub function: FunctionKey,
    pub want: Resources,
    pub waited: std::time::Duration,
    pub start: Start,
}

/// One function's queue and holdings. Dropped from the map when it has
/// nothing queued and nothing running.
#[derive(Default)]
pub(crate) struct Function {
    pub queue: VecDeque<Waiter>,
    pub queued_mb: u64,
    pub running: usize,
    pub reserved: Resources,
}

impl Function {
    fn idle(&self) -> bool {
        self.queue.is_empty() && self.running == 0
    }
}

pub(crate) struct State {
    pub limits: Limits,
    pub cpu_gate: Option<f64>,
    pub reserved: Resources,
    /// Calls admitted and not yet released, over all functions.
    pub running: usize,
    pub queued: usize,
    pub queued_mb: u64,
    /// Functions with a non-empty queue.
    pub waiting_functions: usize,
    pub cpu_utilization: f64,
    pub next_seq: u64,
    pub draining: bool,
    pub functions: HashMap<FunctionKey, Function>,
    /// Admitted with a start since the lock was taken: whoever holds the
    /// lock runs them after releasing it.
    pub ready: Vec<Ready>,
    /// Starts of waiters that left or were failed, dropped after the lock
    /// is released (what they hold may take locks of its own).
    pub discarded: Vec<Start>,
}

fn add(a: &mut Resources, b: Resources) {
    a.cpu_millis += b.cpu_millis;
    a.memory_mb += b.memory_mb;
}

fn sub(a: &mut Resources, b: Resources) {
    a.cpu_millis -= b.cpu_millis;
    a.memory_mb -= b.memory_mb;
}

/// Whether `want` fits in what is free (`reserved` and `running` over all
/// functions) for a function running `its_running` calls: the count of
/// calls and the memory limit always, the CPU limit plus the newcomer
/// overdraft when it runs nothing.
fn fits(
    limits: &Limits,
    (reserved, running): (Resources, usize),
    its_running: usize,
    want: Resources,
) -> bool {
    let overdraft = if its_running == 0 {
        limits.cpu_overdraft
    } else {
        0
    };
    running < limits.max_running
        && reserved.cpu_millis + want.cpu_millis <= limits.total.cpu_millis + overdraft
        && reserved.memory_mb + want.memory_mb <= limits.total.memory_mb
}

impl State {
    pub fn new(limits: Limits, cpu_gate: Option<f64>) -> Self {
        State {
            limits,
            cpu_gate,
            reserved: Resources::default(),
            running: 0,
            queued: 0,
            queued_mb: 0,
            waiting_functions: 0,
            cpu_utilization: 0.0,
            next_seq: 0,
            draining: false,
            functions: HashMap::new(),
            ready: Vec::new(),
            discarded: Vec::new(),
        }
    }

    pub fn gate_closed(&self) -> bool {
        self.cpu_gate.is_some_and(|t| self.cpu_utilization >= t)
    }

    fn fits(&self, its_running: usize, want: Resources) -> bool {
        fits(
            &self.limits,
            (self.reserved, self.running),
            its_running,
            want,
        )
    }

    /// A function over its ceiling waits for its own calls to end. A
    /// function with nothing running is never over it, so a request larger
    /// than the ceiling still runs (alone for its function).
    fn over_ceiling(&self, f: &Function, want: Resources) -> bool {
        let c = self.limits.per_function;
        f.running > 0
            && (f.reserved.cpu_millis + want.cpu_millis > c.cpu_millis
                || f.reserved.memory_mb + want.memory_mb > c.memory_mb
                || f.running + 1 > self.limits.function_running)
    }

    /// Dominant share: the largest of the function's CPU, memory and
    /// running-call fractions of the limits.
    fn share(&self, f: &Function) -> f64 {
        let part = |v: u64, of: u64| if of == 0 { 0.0 } else { v as f64 / of as f64 };
        let (r, l) = (f.reserved, self.limits.total);
        part(r.cpu_millis, l.cpu_millis)
            .max(part(r.memory_mb, l.memory_mb))
            .max(part(f.running as u64, self.limits.max_running as u64))
    }

    /// The uncontended path: nobody waits anywhere, the gate is open and
    /// `want` fits. Reserves and returns true, or changes nothing.
    pub fn try_admit_now(&mut self, function: &FunctionKey, want: Resources) -> bool {
        if self.queued > 0 || self.gate_closed() {
            return false;
        }
        let State {
            functions,
            reserved,
            running,
            limits,
            ..
        } = self;
        if let Some(f) = functions.get_mut(&**function) {
            if !fits(limits, (*reserved, *running), f.running, want) {
                return false;
            }
            f.running += 1;
            add(&mut f.reserved, want);
        } else {
            if !fits(limits, (*reserved, *running), 0, want) {
                return false;
            }
            let f = Function {
                running: 1,
                reserved: want,
                ..Function::default()
            };
            functions.insert(function.clone(), f);
        }
        add(reserved, want);
        *running += 1;
        true
    }

    /// Queues a waiter at the back of its function's queue (limits already
    /// checked). Returns its sequence number.
    pub fn enqueue(
        &mut self,
        function: &FunctionKey,
        want: Resources,
        wake: oneshot::Sender<Outcome>,
        start: Option<Start>,
    ) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let f = self.functions.entry(function.clone()).or_default();
        if f.queue.is_empty() {
            self.waiting_functions += 1;
        }
        f.queue.push_back(Waiter {
            seq,
            want,
            wake,
            start,
            since: Instant::now(),
        });
        f.queued_mb += want.memory_mb;
        self.queued += 1;
        self.queued_mb += want.memory_mb;
        seq
    }

    /// The function whose head is admitted next, if any: the first in the
    /// fair order if its head fits; else (backfilling) the first after it
    /// whose head fits, as long as the blocked first head has waited less
    /// than `max_overtaken_wait` and the one passing it is not over its
    /// ceiling.
    pub fn first_that_fits(&self) -> Option<FunctionKey> {
        if self.gate_closed() {
            return None;
        }
        let others_waiting = self.waiting_functions >= 2;
        // (over its ceiling, share, arrival of head, key, head)
        let mut order: Vec<(bool, f64, u64, &FunctionKey, &Waiter)> = self
            .functions
            .iter()
            .filter_map(|(key, f)| {
                let head = f.queue.front()?;
                let over = others_waiting && self.over_ceiling(f, head.want);
                Some((over, self.share(f), head.seq, key, head))
            })
            .collect();
        let first = order
            .iter()
            .enumerate()
            .min_by(|(_, a), (_, b)| {
                (a.0, a.1, a.2)
                    .partial_cmp(&(b.0, b.1, b.2))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .map(|(i, _)| i)?;
        let (_, _, _, key, head) = order[first];
        if self.fits(self.functions[key].running, head.want) {
            return Some(key.clone());
        }
        if head.since.elapsed() >= self.limits.max_overtaken_wait {
            return None;
        }
        order.swap_remove(first);
        order.retain(|c| !c.0);
        order.sort_by(|a, b| {
            (a.1, a.2)
                .partial_cmp(&(b.1, b.2))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        // Nobody passes a head that has waited its window, wherever it
        // stands in the order.
        for (_, _, _, key, head) in order {
            if self.fits(self.functions[key].running, head.want) {
                return Some(key.clone());
            }
            if head.since.elapsed() >= self.limits.max_overtaken_wait {
                return None;
            }
        }
        None
    }

    /// Admits waiters in fair order while the first in that order fits:
    /// among functions with waiters, the one holding the smallest dominant
    /// share, ties to the earliest head; while several functions wait, those
    /// over their ceiling come after all the others (if every waiting
    /// function is over its ceiling, the ceiling protects nobody and the
    /// plain order applies). If the first head does not fit, later heads
    /// that fit may pass it (backfilling) until it has waited
    /// `max_overtaken_wait`; then nobody is admitted until it fits, so it
    /// cannot be overtaken forever. Call after every change that could let
    /// one in.
    pub fn admit_waiters(&mut self) {
        while let Some(key) = self.first_that_fits() {
            let f = self
                .functions
                .get_mut(&key)
                .expect("chosen function exists");
            let w = f.queue.pop_front().expect("chosen function has a head");
            let want = w.want;
            f.queued_mb -= want.memory_mb;
            f.running += 1;
            add(&mut f.reserved, want);
            if f.queue.is_empty() {
                self.waiting_functions -= 1;
            }
            self.queued -= 1;
            self.queued_mb -= want.memory_mb;
            add(&mut self.reserved, want);
            self.running += 1;
            // A start takes the reservation with it (its permit is made
            // once the lock is released). Otherwise, if the waiter is gone,
            // its guard (or its timeout path) finds it no longer queued,
            // reads `Admitted` and gives the reservation back: never here,
            // or it would be released twice.
            if let Some(start) = w.start {
                self.ready.push(Ready {
                    function: key,
                    want,
                    waited: w.since.elapsed(),
                    start,
                });
            }
            let _ = w.wake.send(Outcome::Admitted);
        }
    }

    /// Gives back an admitted request's reservation and lets others in.
    pub fn release(&mut self, function: &str, want: Resources) {
        sub(&mut self.reserved, want);
        self.running -= 1;
        let f = self
            .functions
            .get_mut(function)
            .expect("a function holding a permit has an entry");
        sub(&mut f.reserved, want);
        f.running -= 1;
        if f.idle() {
            self.functions.remove(function);
        }
        self.admit_waiters();
    }

    /// Removes a waiter; false if it was no longer queued (admitted or
    /// closed: its receiver says which).
    pub fn remove_waiter(&mut self, function: &str, seq: u64) -> bool {
        let Some(f) = self.functions.get_mut(function) else {
            return false;
        };
        let Some(pos) = f.queue.iter().position(|w| w.seq == seq) else {
            return false;
        };
        let w = f.queue.remove(pos).expect("position is in range");
        f.queued_mb -= w.want.memory_mb;
        self.discarded.extend(w.start);
        if f.queue.is_empty() {
            self.waiting_functions -= 1;
        }
        if f.idle() {
            self.functions.remove(function);
        }
        self.queued -= 1;
        self.queued_mb -= w.want.memory_mb;
        // The order (and who is over a ceiling) may have changed.
        self.admit_waiters();
        true
    }

    /// Fails every waiter with `Closed`.
    pub fn close(&mut self) {
        for f in self.functions.values_mut() {
            for w in f.queue.drain(..) {
                let _ = w.wake.send(Outcome::Closed);
                self.discarded.extend(w.start);
            }
            f.queued_mb = 0;
        }
        self.functions.retain(|_, f| !f.idle());
        self.queued = 0;
        self.queued_mb = 0;
        self.waiting_functions = 0;
    }
}

#[cfg(test)]
impl State {
    /// Panics unless the totals match the functions, no entry is idle, and
    /// no waiter that the policy would admit is left waiting.
    pub fn check_invariants(&self) {
        let (mut reserved, mut queued, mut queued_mb, mut waiting) =
            (Resources::default(), 0, 0, 0);
        for (k, f) in &self.functions {
            assert!(!f.idle(), "idle entry {k}");
            add(&mut reserved, f.reserved);
            queued += f.queue.len();
            let mb: u64 = f.queue.iter().map(|w| w.want.memory_mb).sum();
            assert_eq!(mb, f.queued_mb, "{k}");
            queued_mb += mb;
            waiting += usize::from(!f.queue.is_empty());
        }
        assert_eq!(reserved, self.reserved);
        let running: usize = self.functions.values().map(|f| f.running).sum();
        assert_eq!(running, self.running);
        assert!(running <= self.limits.max_running);
        assert_eq!((queued, queued_mb), (self.queued, self.queued_mb));
        assert_eq!(waiting, self.waiting_functions);
        let limit = self.limits.total;
        assert!(self.reserved.memory_mb <= limit.memory_mb);
        assert!(self.reserved.cpu_millis <= limit.cpu_millis + self.limits.cpu_overdraft);
        assert_eq!(
            self.first_that_fits(),
            None,
            "a waiter that fits was left waiting"
        );
    }
}
