//! How work scales from 1 thread to 2 in process: rates measured in
//! alternating rounds, and the loops that show the machine's own scaling
//! beside a workload's.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::stats::{base_first, Rounds};

/// Rounds of each 1-thread / 2-thread measurement: even, so each order (1
/// thread first, 2 threads first) comes up as often.
pub(crate) const ROUNDS: usize = 6;

/// Calls per second of one piece of work on 1 thread (the base) and on 2
/// (the other), measured in alternating rounds (see [`Rounds`]).
pub(crate) type Scaled = Rounds;

/// A piece of work to call back to back.
pub(crate) type Work = Arc<dyn Fn() + Send + Sync>;

/// The thread counts of round `round`, in the order they run: 1 then 2 in
/// even rounds, 2 then 1 in odd ones.
fn order(round: usize) -> [usize; 2] {
    if base_first(round) {
        [1, 2]
    } else {
        [2, 1]
    }
}

/// Each of `works` on 1 thread and on 2 for `secs` each, in `rounds`
/// rounds (at least one). The works take turns within each round, so a
/// slow spell of the machine shows in every work's round of that moment:
/// a control's rounds line up with the workload's.
pub(crate) fn interleaved(rounds: usize, secs: f64, works: &[Work]) -> Vec<Scaled> {
    let mut out = vec![Scaled::default(); works.len()];
    for round in 0..rounds.max(1) {
        for (work, s) in works.iter().zip(&mut out) {
            for threads in order(round) {
                let work = work.clone();
                let rate = throughput(threads, secs, move || work());
                if threads == 1 {
                    s.base.push(rate);
                } else {
                    s.other.push(rate);
                }
            }
        }
    }
    out
}

/// Runs `work` on `threads` threads for `secs`; returns calls per second.
pub(crate) fn throughput(
    threads: usize,
    secs: f64,
    work: impl Fn() + Send + Sync + Clone + 'static,
) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (count, stop, work) = (count.clone(), stop.clone(), work.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    work();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Work bound by memory bandwidth rather than by the ALU: each call fills
/// and sums a 256 KiB buffer of its thread's (much as resetting and
/// touching a guest's memory does). Two cores that share caches or
/// execution units (SMT siblings on the host) scale far less than 2x here
/// even when the pure CPU loop scales.
pub(crate) fn memory_loop() -> Work {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 256 << 10]);
    }
    Arc::new(|| {
        BUF.with_borrow_mut(|b| {
            let v = std::hint::black_box(b.len() as u8);
            b.fill(v);
            let sum: u64 = b.iter().step_by(64).map(|x| u64::from(*x)).sum();
            std::hint::black_box(sum);
        })
    })
}

/// One dependent chain of xorshift steps: bound by each step's latency,
/// so two threads on the two hardware threads of one core still scale
/// about 2x here.
pub(crate) fn cpu_loop() -> Work {
    Arc::new(|| {
        let mut x = 1u64;
        for _ in 0..2000 {
            x = xorshift(x);
        }
        std::hint::black_box(x);
    })
}

/// Eight independent chains of the same steps (which the compiler may
/// run two to a vector register): bound by how much a core executes per
/// cycle, not by one chain's latency. Two threads that the host runs on
/// the two hardware threads of one core share its execution units, so
/// this would scale well below 2x then where [`cpu_loop`] does not.
pub(crate) fn issue_loop() -> Work {
    Arc::new(|| {
        let mut x = std::hint::black_box([1u64, 2, 3, 4, 5, 6, 7, 8]);
        for _ in 0..500 {
            for v in x.iter_mut() {
                *v = xorshift(*v);
            }
        }
        std::hint::black_box(x);
    })
}

/// Both threads add to one shared counter, so each add moves its cache
/// line from the other core: the rate on 2 threads follows what moving a
/// line between the two vCPUs costs at that moment (where the host has put
/// them). hello writes shared lines too (wasmtime's engine-wide counts,
/// `profiles.md` section 4); this loop does nothing else.
pub(crate) fn shared_line_loop() -> Work {
    static LINE: AtomicU64 = AtomicU64::new(0);
    Arc::new(|| {
        for _ in 0..100 {
            LINE.fetch_add(1, Ordering::Relaxed);
        }
    })
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rounds alternate which thread count runs first, so over an even
    /// number of rounds each order comes up as often.
    #[test]
    fn rounds_alternate_the_order() {
        let orders: Vec<[usize; 2]> = (0..ROUNDS).map(order).collect();
        assert_eq!(orders[..2], [[1, 2], [2, 1]]);
        let first_one = orders.iter().filter(|o| o[0] == 1).count();
        assert_eq!(first_one * 2, ROUNDS);
    }

    /// Every work gets one rate on each thread count per round, and there
    /// is always at least one round.
    #[test]
    fn every_work_runs_every_round_on_both_counts() {
        let works: [Work; 2] = [Arc::new(|| ()), cpu_loop()];
        let s = interleaved(3, 0.01, &works);
        assert_eq!(s.len(), 2);
        for w in &s {
            assert_eq!((w.base.len(), w.other.len()), (3, 3));
            assert!(w.base.iter().chain(&w.other).all(|r| *r > 0.0));
        }
        let none = interleaved(0, 0.01, &works[..1]);
        assert_eq!((none[0].base.len(), none[0].other.len()), (1, 1));
    }
}
