//! Where jobs meet workers: jobs wait in one queue, first come, first
//! served; idle workers are woken last come, first served.
//!
//! The handoff also counts the workers that are free (not running a job),
//! under the same lock as the queue: a job queued while fewer workers are
//! free than jobs wait asks its sender to start one ([`Handoff::claim`]).
//! Counted anywhere else, two jobs sent together could both see the same
//! free worker and neither start another, and the second would wait for
//! the first to end.
//!
//! A job sent while workers are idle wakes the one that went idle most
//! recently, whose caches, and whose cgroup's scheduler state, are the
//! warmest; the others stay parked. So a load that keeps three workers busy
//! is served by three workers, however many have been started, instead of
//! going round every parked thread (and, with one cgroup per worker, every
//! cgroup) in turn as a first-in-first-out wake-up order does. The queue
//! stays shared: a worker that finishes takes the next job before it parks,
//! whoever was woken for it, so no job waits for one particular thread.
//!
//! Idle workers wait at home, in the process's own cgroup, unless a cgroup
//! mode's worker could not move back out of its slot. Where workers wait in
//! different places, a job wakes the most recently idle worker that waits
//! where the job runs, if any: one held to a quota below a core, a worker
//! inside its slot cgroup (already under a quota); one with no limit, a
//! worker at home. Only the choice of whom to wake follows the call: the
//! worker woken takes the job at the front of the queue, which may be
//! another one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How often an idle worker yields its core before it parks, where it
/// shares a run queue with the threads that send it jobs (at home,
/// [`Slot::at_home`](wasmbox_isolation::Slot::at_home)): a job sent
/// meanwhile (often by the thread it yielded to) then costs no wake-up.
/// `sched_yield` only gives way to threads of the caller's own cgroup, so a
/// worker alone in its cgroup would yield to nobody; hello at c=16 with
/// every worker in a cgroup-v1 slot served 14-15k req/s with no yields
/// against 12.6-13.3k with 4, and with isolation none 20.9-24.2k with 4
/// against 14.6-17.2k with none.
const YIELDS_BEFORE_PARKING: u32 = 4;

/// How long one idle worker at home (the lookout, one at a time) goes on
/// yielding before it parks: a request arriving meanwhile finds it awake.
/// On a virtual machine whose idle vCPUs halt, waking a parked worker on
/// one costs tens of microseconds, as much as a hello call; a fast lone
/// client's next request comes some 60 µs after the last answer. Yielding
/// gives the core to the threads of its cgroup queued on the same CPU (at
/// home, the HTTP threads and other workers). A watch that runs out turns
/// watching off until a worker is next asked for a job within this time of
/// going idle, so calls further apart cost no CPU beyond one watch: a
/// Python client calling hello 4,000-5,000 times a second on one
/// connection (about 200 µs apart) cost the server 107-115 µs of CPU per
/// call with this at 100 µs, as with no watch, and 200-203 µs with it at
/// 200 µs (`bench/results/idle_watch_cpu.md`).
const LOOKOUT_FOR: Duration = Duration::from_micros(100);

/// The queue of jobs (`T`) and the stack of idle workers.
pub(super) struct Handoff<T> {
    state: Mutex<State<T>>,
    max_queued: usize,
    /// Taken by the idle worker at home that yields for up to
    /// [`LOOKOUT_FOR`] before it parks.
    lookout: AtomicBool,
    /// Whether watching pays: no watch has run out since a worker was last
    /// asked for a job within [`LOOKOUT_FOR`] of going idle.
    watch_pays: AtomicBool,
}

struct State<T> {
    queue: VecDeque<T>,
    /// Workers not running a job: starting, between jobs, or parked (the
    /// idle stack holds the parked ones).
    free: usize,
    /// Idle workers, the most recently idle last.
    idle: Vec<Arc<Seat>>,
    /// How many of them wait inside their slots (so that a search for one
    /// that is not there is skipped).
    idle_inside: usize,
    closed: bool,
    /// Idle workers woken for a job so far (tests).
    #[cfg(test)]
    woken: usize,
}

/// One worker's place in the idle stack.
pub(super) struct Seat {
    /// In the idle stack; cleared (under the state lock) by whoever takes
    /// it out to wake it.
    listed: AtomicBool,
    /// Its worker waits outside any slot cgroup of its own (written and
    /// read under the state lock).
    at_home: AtomicBool,
    thread: Thread,
}

/// Why [`Handoff::send`] did not take a job (which is dropped).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// `max_queued` jobs already wait.
    Full,
    /// The pool has closed.
    Closed,
}

impl Seat {
    /// The seat of the calling thread.
    pub(super) fn here() -> Arc<Seat> {
        Arc::new(Seat {
            listed: AtomicBool::new(false),
            at_home: AtomicBool::new(true),
            thread: std::thread::current(),
        })
    }

    fn wake(&self) {
        self.thread.unpark();
    }
}

/// The lookout's post, held by one idle worker at home until its time is
/// up (it parks) or it gets a job.
struct Lookout<'a> {
    post: Option<&'a AtomicBool>,
    since: Instant,
}

impl<'a> Lookout<'a> {
    /// The post if watching pays, the post is free, and the worker may
    /// watch: it waits at home (inside a slot, yielding gives way to
    /// nobody, and the spin would be charged to the slot's quota), and no
    /// other job runs (a busy server needs its cores).
    fn take(post: &'a AtomicBool, pays: &AtomicBool, may: bool) -> Self {
        let taken = may
            && several_cpus()
            && pays.load(Ordering::Relaxed)
            && post
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok();
        Lookout {
            post: taken.then_some(post),
            since: Instant::now(),
        }
    }

    /// Still on the post, within [`LOOKOUT_FOR`]; a watch that has run out
    /// leaves the post and turns watching off (`pays`).
    fn watching(&mut self, pays: &AtomicBool) -> bool {
        if self.post.is_none() {
            return false;
        }
        if self.since.elapsed() < LOOKOUT_FOR {
            return true;
        }
        pays.store(false, Ordering::Relaxed);
        self.leave();
        false
    }

    fn leave(&mut self) {
        if let Some(post) = self.post.take() {
            post.store(false, Ordering::Release);
        }
    }
}

impl Drop for Lookout<'_> {
    fn drop(&mut self) {
        self.leave();
    }
}

/// Whether the process may run on more than one CPU (its affinity and its
/// cgroup's quota, as the standard library reads them), read once. On one,
/// neither a watching worker nor a request polling for its end may spin:
/// each would hold the core the other side needs.
pub fn several_cpus() -> bool {
    static SEVERAL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SEVERAL.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

impl<T> State<T> {
    /// Takes the most recently idle worker out of the idle stack if the
    /// queue holds more jobs than free workers that are awake (between
    /// jobs, starting, or woken already) will come for; the caller wakes
    /// it. So a job sent while its sender's own worker is between jobs (an
    /// admission start run as that worker releases a reservation) is taken
    /// by that worker, with no thread woken for it. The worker taken is the
    /// most recently idle one waiting inside its slot if `in_slot` (the job
    /// is held to a quota), at home if not; the most recently idle one if
    /// none waits there.
    fn wake_if_short(&mut self, in_slot: bool) -> Option<Arc<Seat>> {
        debug_assert!(self.idle.len() <= self.free, "idle workers are free");
        let awake = self.free.saturating_sub(self.idle.len());
        if self.queue.len() <= awake {
            return None;
        }
        debug_assert!(self.idle_inside <= self.idle.len());
        let last = self.idle.len().checked_sub(1)?;
        let there = if in_slot {
            self.idle_inside
        } else {
            self.idle.len() - self.idle_inside
        };
        let at = if there == 0 {
            last
        } else {
            self.idle
                .iter()
                .rposition(|s| s.at_home.load(Ordering::Relaxed) != in_slot)
                .unwrap_or(last)
        };
        let seat = self.idle.remove(at);
        if !seat.at_home.load(Ordering::Relaxed) {
            self.idle_inside -= 1;
        }
        seat.listed.store(false, Ordering::Release);
        #[cfg(test)]
        {
            self.woken += 1;
        }
        Some(seat)
    }
}

impl<T> Handoff<T> {
    /// A queue of at most `max_queued` jobs.
    pub(super) fn new(max_queued: usize) -> Self {
        Handoff {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                free: 0,
                idle: Vec::new(),
                idle_inside: 0,
                closed: false,
                #[cfg(test)]
                woken: 0,
            }),
            max_queued: max_queued.max(1),
            lookout: AtomicBool::new(false),
            watch_pays: AtomicBool::new(true),
        }
    }

    /// Queues `job` (a call with no limit, or none at all), waking the most
    /// recently idle worker, at home if one is, if no free worker that is
    /// awake is left to take it.
    pub(super) fn send(&self, job: T) -> Result<(), Refused> {
        self.send_with(false, || job)
    }

    /// [`Handoff::send`] of the job `make` returns, made only once there
    /// is room for it (a worker putting back a task it could not isolate
    /// keeps the task when there is none). `in_slot`: the job's call is
    /// held to a quota below a core, so a worker waiting inside its slot
    /// cgroup is woken for it rather than one at home (and the other way
    /// round without).
    pub(super) fn send_with(&self, in_slot: bool, make: impl FnOnce() -> T) -> Result<(), Refused> {
        let woken = {
            let mut st = self.state.lock().unwrap();
            if st.closed {
                return Err(Refused::Closed);
            }
            if st.queue.len() >= self.max_queued {
                return Err(Refused::Full);
            }
            st.queue.push_back(make());
            st.wake_if_short(in_slot)
        };
        if let Some(seat) = woken {
            seat.wake();
        }
        Ok(())
    }

    /// If fewer workers are free than jobs wait, counts one more free (the
    /// caller starts it, or calls [`Handoff::unclaim`] when it cannot).
    pub(super) fn claim(&self) -> bool {
        let mut st = self.state.lock().unwrap();
        let short = st.queue.len() > st.free;
        if short {
            st.free += 1;
        }
        short
    }

    /// A claimed worker that could not be started, or one whose isolation
    /// slot could not be made (it backs off, then is [`Handoff::freed`]):
    /// one fewer free.
    pub(super) fn unclaim(&self) {
        let woken = {
            let mut st = self.state.lock().unwrap();
            st.free = st.free.checked_sub(1).expect("a free worker to unclaim");
            // A job may have counted on this one instead of waking another
            // (which one is not known: the most recently idle at home).
            st.wake_if_short(false)
        };
        if let Some(seat) = woken {
            seat.wake();
        }
    }

    /// A worker is free again (its job is done, or it is back from a
    /// retry) or about to start with no job waiting (prestart), and will
    /// ask for the next job.
    pub(super) fn freed(&self) {
        self.state.lock().unwrap().free += 1;
    }

    /// Jobs waiting and workers not running one (a starting one counts),
    /// read together.
    pub(super) fn counts(&self) -> (usize, usize) {
        let st = self.state.lock().unwrap();
        (st.queue.len(), st.free)
    }

    /// The next job for the worker at `seat`, waiting for one (at home, it
    /// yields its core a few times before it parks, and if `alone`, with no
    /// other job running, it may keep watch: [`LOOKOUT_FOR`]); the worker
    /// is no longer free once it has it. `None` once the pool has closed
    /// and no job is queued: the worker leaves, no longer counted.
    pub(super) fn recv(&self, seat: &Arc<Seat>, at_home: bool, alone: bool) -> Option<T> {
        // A worker in a cgroup of its own would yield to nobody.
        let yields = if at_home { YIELDS_BEFORE_PARKING } else { 0 };
        loop {
            {
                let mut st = self.state.lock().unwrap();
                // Not listed here: a seat is unlisted by whoever wakes it,
                // and the wait below ends only then.
                debug_assert!(!seat.listed.load(Ordering::Acquire));
                if let Some(job) = st.queue.pop_front() {
                    st.free = st.free.checked_sub(1).expect("a free worker takes a job");
                    return Some(job);
                }
                if st.closed {
                    st.free = st.free.checked_sub(1).expect("a free worker leaves");
                    return None;
                }
                seat.listed.store(true, Ordering::Release);
                seat.at_home.store(at_home, Ordering::Relaxed);
                if !at_home {
                    st.idle_inside += 1;
                }
                st.idle.push(seat.clone());
            }
            let mut lookout = Lookout::take(&self.lookout, &self.watch_pays, at_home && alone);
            let mut yielded = 0;
            while seat.listed.load(Ordering::Acquire) {
                if yielded < yields || lookout.watching(&self.watch_pays) {
                    yielded += 1;
                    std::thread::yield_now();
                } else {
                    // A `wake` before this makes it return at once; a
                    // spurious return finds the seat still listed.
                    std::thread::park();
                }
            }
            if at_home
                && lookout.since.elapsed() < LOOKOUT_FOR
                && !self.watch_pays.load(Ordering::Relaxed)
            {
                // A watch would have caught this job.
                self.watch_pays.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Waits (tests; with a deadline) until `n` workers are parked or
    /// about to park.
    #[cfg(test)]
    pub(super) fn until_idle(&self, n: usize) {
        let idle = || self.state.lock().unwrap().idle.len();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while idle() != n {
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {n} workers idle",
                idle()
            );
            std::thread::yield_now();
        }
    }

    /// Whether idle workers at home keep watch before they park (tests).
    #[cfg(test)]
    pub(super) fn watch_pays(&self) -> bool {
        self.watch_pays.load(Ordering::Relaxed)
    }

    /// Idle workers woken for a job so far.
    #[cfg(test)]
    pub(super) fn woken(&self) -> usize {
        self.state.lock().unwrap().woken
    }

    /// Jobs waiting for a worker.
    pub(super) fn len(&self) -> usize {
        self.state.lock().unwrap().queue.len()
    }

    /// Takes no more jobs and wakes every idle worker to exit; workers
    /// still busy take what is queued first (what none takes is left for
    /// [`Handoff::drain`]). True the first time.
    pub(super) fn close(&self) -> bool {
        let (was_open, idle) = {
            let mut st = self.state.lock().unwrap();
            let was_open = !std::mem::replace(&mut st.closed, true);
            for seat in &st.idle {
                seat.listed.store(false, Ordering::Release);
            }
            st.idle_inside = 0;
            (was_open, std::mem::take(&mut st.idle))
        };
        for seat in idle {
            seat.wake();
        }
        was_open
    }

    /// Takes every queued job (after [`Handoff::close`], the ones no worker
    /// took).
    pub(super) fn drain(&self) -> Vec<T> {
        self.state.lock().unwrap().queue.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// Starts a worker thread named `name` that waits (at home or inside
    /// its slot) for one job from `h` and reports `(name, job)`.
    fn worker(
        h: &Arc<Handoff<u32>>,
        name: &'static str,
        at_home: bool,
        took: &mpsc::Sender<(&'static str, Option<u32>)>,
    ) -> std::thread::JoinHandle<()> {
        let (h, took) = (h.clone(), took.clone());
        std::thread::spawn(move || {
            h.freed();
            let job = h.recv(&Seat::here(), at_home, false);
            took.send((name, job)).unwrap();
        })
    }

    #[test]
    fn the_worker_idle_last_takes_the_next_job() {
        let h = Arc::new(Handoff::new(8));
        let (tx, rx) = mpsc::channel();
        let mut threads = Vec::new();
        for (n, name) in ["first", "second", "third"].into_iter().enumerate() {
            threads.push(worker(&h, name, true, &tx));
            h.until_idle(n + 1);
        }
        h.send(7).unwrap();
        assert_eq!(rx.recv().unwrap(), ("third", Some(7)));
        h.send(8).unwrap();
        assert_eq!(rx.recv().unwrap(), ("second", Some(8)));
        assert!(h.close());
        assert_eq!(rx.recv().unwrap(), ("first", None));
        for t in threads {
            t.join().unwrap();
        }
    }

    /// A job held to a quota wakes the worker idle last among those waiting
    /// inside their slots (no cgroup move before it runs), one with no
    /// limit the worker idle last among those at home (the ones inside stay
    /// there); with none waiting where a job runs, it wakes the worker idle
    /// last.
    #[test]
    fn a_job_wakes_a_worker_waiting_where_it_runs() {
        let h = Arc::new(Handoff::new(8));
        let (tx, rx) = mpsc::channel();
        let mut threads = Vec::new();
        let workers = [
            ("home-a", true),
            ("inside-a", false),
            ("home-b", true),
            ("inside-b", false),
        ];
        for (n, (name, at_home)) in workers.into_iter().enumerate() {
            threads.push(worker(&h, name, at_home, &tx));
            h.until_idle(n + 1);
        }
        h.send_with(false, || 1).unwrap();
        assert_eq!(rx.recv().unwrap(), ("home-b", Some(1)));
        h.send_with(true, || 2).unwrap();
        assert_eq!(rx.recv().unwrap(), ("inside-b", Some(2)));
        h.send_with(true, || 3).unwrap();
        assert_eq!(rx.recv().unwrap(), ("inside-a", Some(3)));
        h.send_with(true, || 4).unwrap();
        assert_eq!(rx.recv().unwrap(), ("home-a", Some(4)));
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn queued_jobs_go_first_come_first_served_to_whoever_asks() {
        let h: Handoff<u32> = Handoff::new(8);
        for j in 1..=3 {
            h.send(j).unwrap();
        }
        let seat = Seat::here();
        let next = || {
            h.freed();
            h.recv(&seat, true, false)
        };
        assert_eq!(next(), Some(1));
        assert_eq!(next(), Some(2));
        assert_eq!(h.len(), 1);
        assert!(h.close());
        assert!(!h.close(), "closing twice reports the first only");
        // What was queued before the close is still handed out.
        assert_eq!(next(), Some(3));
        assert_eq!(next(), None);
    }

    #[test]
    fn a_sender_is_asked_for_a_worker_only_while_jobs_outnumber_free_ones() {
        let h: Handoff<u32> = Handoff::new(8);
        assert!(!h.claim(), "no job waits");
        h.send(1).unwrap();
        assert!(h.claim());
        assert!(!h.claim(), "the job has its worker (claimed, starting)");
        h.send(2).unwrap();
        assert!(h.claim());
        // A worker takes a job: one fewer free, one fewer waiting.
        assert_eq!(h.recv(&Seat::here(), false, false), Some(1));
        assert_eq!(h.counts(), (1, 1));
        assert!(!h.claim());
        // The claimed worker could not be started: the job needs another.
        h.unclaim();
        assert!(h.claim());
        assert_eq!(h.counts(), (1, 1));
        // A worker told the pool has closed leaves the count.
        assert!(h.close());
        h.freed();
        assert_eq!(h.recv(&Seat::here(), false, false), Some(2));
        h.freed();
        assert_eq!(h.recv(&Seat::here(), false, false), None);
        assert_eq!(h.counts(), (0, 1), "the claimed worker that never came");
    }

    #[test]
    fn a_full_queue_refuses_and_makes_nothing() {
        let h: Handoff<u32> = Handoff::new(2);
        h.send(1).unwrap();
        h.send(2).unwrap();
        assert_eq!(h.send(3), Err(Refused::Full));
        let mut made = false;
        assert_eq!(
            h.send_with(false, || {
                made = true;
                4
            }),
            Err(Refused::Full)
        );
        assert!(!made, "the job was made although there was no room");
        assert!(h.close());
        assert_eq!(h.send(5), Err(Refused::Closed));
        assert_eq!(h.drain(), vec![1, 2]);
    }

    #[test]
    fn every_job_is_taken_once_by_many_workers() {
        let h = Arc::new(Handoff::new(1 << 16));
        let (tx, rx) = mpsc::channel();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (h, tx) = (h.clone(), tx.clone());
                std::thread::spawn(move || {
                    let seat = Seat::here();
                    h.freed();
                    while let Some(j) = h.recv(&seat, true, false) {
                        tx.send(j).unwrap();
                        h.freed();
                    }
                })
            })
            .collect();
        drop(tx);
        for j in 0..20_000u32 {
            h.send(j).unwrap();
        }
        let mut seen: Vec<u32> = (0..20_000).map(|_| rx.recv().unwrap()).collect();
        h.close();
        for t in threads {
            t.join().unwrap();
        }
        assert!(rx.recv().is_err(), "a job was taken twice");
        seen.sort_unstable();
        assert!(seen.iter().copied().eq(0..20_000), "a job was lost");
    }
}
