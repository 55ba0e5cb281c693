//! `throttle`: CPU isolation without any privileges (an ordinary Kubernetes
//! pod). wasmtime calls the store's epoch-deadline callback on the guest's
//! own thread at every epoch tick; there we compare the thread's CPU time
//! (CLOCK_THREAD_CPUTIME_ID) with what its quota has earned it, and sleep
//! the thread until the budget catches up.
//!
//! The budget is continuous (quota x elapsed wall time, less what was used)
//! rather than reset per period, so oversleeping and tick granularity
//! correct themselves over the run; what a call saves by using less is
//! banked up to one period's quota. Host calls that block are not throttled
//! (they use no CPU). A guest runs ahead by what it does between two checks:
//! about one epoch tick of Wasm, or one operation that has no check inside
//! it (instantiation, a bulk memory instruction, a host call's own CPU).
//!
//! The cgroup modes use the same check, banking nothing, to move a call
//! into its slot cgroup at its first tick ([`Throttle::entering`]), and from
//! then on leave the holding to the kernel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::time::{clock_gettime, ClockId};

use crate::cgroup::Door;
use crate::{Isolation, IsolationConfig, IsolationError, Mode, Slot};

/// How far, in CPU seconds, a call may be ahead of its budget before it
/// sleeps: a sleep shorter than what it takes to go to sleep and wake up
/// holds nothing. The debt is carried, not forgiven.
const SLACK: f64 = 50e-6;

/// Longest a throttled guest sleeps before the stop signals are checked
/// again (at ordinary quotas; see [`Throttle::slice`]).
pub const SLICE: Duration = Duration::from_millis(10);

/// CPU seconds a sleep slice must earn at the call's quota: ten times a
/// wake-up's cost or more.
const SLICE_EARNS: f64 = 200e-6;

/// CPU time used by the calling thread.
pub fn thread_cpu_time() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// Uses `d` of the calling thread's CPU time (for this crate's tests).
#[cfg(test)]
pub(crate) fn burn(d: Duration) {
    let t = thread_cpu_time();
    while thread_cpu_time() - t < d {}
}

/// The budget of one invocation; lives in the store, checked at each tick.
///
/// A leaky bucket: the call earns its quota's rate of CPU time per wall
/// second and spends what it uses; it is ahead once it has spent more than
/// it earned. What it earns while using less (waiting in a host call, or
/// asleep here) is banked up to one period's quota, what a fresh CFS period
/// gives: a guest that waits a minute cannot then run at a whole core for
/// seconds.
#[derive(Debug, Clone)]
pub struct Throttle {
    /// CPU seconds allowed per wall second (millicores / 1000).
    rate: f64,
    /// The most credit the call can bank, in CPU seconds.
    cap: f64,
    /// The period, in seconds (the cap is one period's quota, or none while
    /// the call may still enter its slot).
    period: f64,
    /// CPU seconds the call may still use before it is ahead (negative:
    /// ahead by that much).
    credit: f64,
    last_wall: Instant,
    /// The thread's CPU time at the last look; `None` until the budget
    /// starts ([`Throttle::start`]).
    last_cpu: Option<Duration>,
    /// Time spent asleep so far (for reporting).
    pub slept: Duration,
    /// The slot cgroup to move into when the call runs ahead (cgroup
    /// modes); `None` once it has (or in the throttle mode).
    door: Option<Arc<Door>>,
    /// In its slot cgroup: the kernel holds it, nothing is checked here.
    entered: bool,
}

impl Throttle {
    /// Starts a budget of `millicores` for the calling thread, banking at
    /// most one `period`'s quota.
    pub fn new(millicores: u64, period: Duration) -> Self {
        let mut t = Throttle::unstarted(millicores, period);
        t.start(thread_cpu_time());
        t
    }

    /// [`Throttle::new`] that counts from its [`Throttle::start`]: what a
    /// slot's `apply` returns, started as the guest starts with the
    /// thread's CPU time the invocation reads then anyway (a read of the
    /// thread's CPU clock is a system call, 0.5 µs here and more under
    /// load). A check before `start` starts it.
    pub fn unstarted(millicores: u64, period: Duration) -> Self {
        let rate = millicores as f64 / 1000.0;
        Throttle {
            rate,
            cap: rate * period.as_secs_f64(),
            period: period.as_secs_f64(),
            credit: 0.0,
            last_wall: Instant::now(),
            last_cpu: None,
            slept: Duration::ZERO,
            door: None,
            entered: false,
        }
    }

    /// A budget of `millicores` that banks nothing and, at the first
    /// check that finds the call has used CPU (in practice its first epoch
    /// tick), moves the calling thread into its slot cgroup through `door`
    /// (whose quota is in place, with a fresh period's budget) instead of
    /// sleeping: the kernel holds it from there. If that move fails, the
    /// call is held here, by sleeping, as in the throttle mode (banking up
    /// to one `period`'s quota).
    pub fn entering(millicores: u64, period: Duration, door: Arc<Door>) -> Self {
        Throttle {
            door: Some(door),
            cap: 0.0,
            ..Throttle::unstarted(millicores, period)
        }
    }

    /// Whether the call has moved into its slot cgroup.
    pub fn entered(&self) -> bool {
        self.entered
    }

    /// Starts the budget from now, the calling thread's CPU time being
    /// `cpu` (again, after a wait before the guest starts: time spent
    /// waiting is not CPU the guest may then use at once).
    pub fn start(&mut self, cpu: Duration) {
        self.credit = 0.0;
        self.last_wall = Instant::now();
        self.last_cpu = Some(cpu);
    }

    /// [`Throttle::check_until`] with no stop signal.
    pub fn check(&mut self, deadline: Instant) {
        self.check_until(deadline, || false);
    }

    /// Called on the guest's thread at each epoch tick: once the call is
    /// ahead of its budget, moves it into its slot (see
    /// [`Throttle::entering`]) or sleeps until it is not. It sleeps in
    /// slices ([`Throttle::slice`]), asking `stopped` between them, and
    /// never past `deadline`.
    ///
    /// The CPU the thread spends going to sleep and waking up (17-35 µs
    /// here, more on a busy host) is its own and is charged like any
    /// other, but it never sends the call back to sleep within one check:
    /// once a sleep has covered the debt the guest runs again, and what
    /// the wake-up cost is owed at the next tick. (Sleeping again for it at
    /// once, as an earlier version did, cost about what each such sleep
    /// earned at a low quota: the guest barely ran while its quota went on
    /// sleeping and waking; an 8 ms spin at 100 millicores took up to 2 s.)
    pub fn check_until(&mut self, deadline: Instant, stopped: impl Fn() -> bool) {
        if self.rate >= 1.0 || self.entered {
            return; // a thread cannot use more than one core anyway
        }
        self.account();
        if self.credit >= 0.0 {
            return;
        }
        if let Some(door) = self.door.take() {
            if door.enter() {
                self.entered = true;
                return;
            }
            // Held here from now on, as in the throttle mode.
            self.cap = self.rate * self.period;
        }
        let slice = self.slice();
        while self.credit < -SLACK {
            let now = Instant::now();
            let debt = Duration::from_secs_f64(-self.credit / self.rate);
            let wait = debt.min(slice).min(deadline.saturating_duration_since(now));
            if wait.is_zero() {
                return;
            }
            std::thread::sleep(wait);
            self.slept += wait;
            if wait == debt || stopped() {
                return;
            }
            self.account();
        }
    }

    /// The longest sleep between two looks at the stop signals: 10 ms, or
    /// longer at a quota so small that 10 ms would earn less than
    /// [`SLICE_EARNS`] (a slice must earn far more than its wake-up costs).
    pub fn slice(&self) -> Duration {
        SLICE.max(Duration::from_secs_f64(SLICE_EARNS / self.rate.max(1e-6)))
    }

    /// Brings the credit up to now: what the quota earned since the last
    /// look, less the thread's CPU time meanwhile.
    fn account(&mut self) {
        let now = Instant::now();
        let cpu = thread_cpu_time();
        // A throttle from a slot's `apply` is started before the guest
        // runs (`invoke_until`); one that is not starts here, charging
        // nothing before (loud in debug builds, where tests run).
        debug_assert!(
            self.last_cpu.is_some(),
            "a throttle checked before it was started"
        );
        let Some(last_cpu) = self.last_cpu else {
            self.start(cpu);
            return;
        };
        // Banked credit never exceeds the cap: at its highest if all the
        // interval's CPU came at its end (so a busy interval longer than
        // the period, such as a tick with a 1 ms period, is not clipped).
        let earned = self.rate * (now - self.last_wall).as_secs_f64();
        let spent = cpu.saturating_sub(last_cpu).as_secs_f64();
        self.credit = (self.credit + earned).min(self.cap + self.rate * spent) - spent;
        self.last_wall = now;
        self.last_cpu = Some(cpu);
    }
}

/// The `throttle` mode: every [`Slot::apply`] starts a new [`Throttle`].
pub struct ThrottleMode {
    period: Duration,
}

impl ThrottleMode {
    /// [`IsolationError::Unusable`] only when CLOCK_THREAD_CPUTIME_ID
    /// cannot be read; only `config.period` is used (the ledger's burst).
    pub fn open(config: &IsolationConfig) -> Result<Self, IsolationError> {
        clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_err(|e| {
            IsolationError::unusable(
                Mode::Throttle,
                format!("CLOCK_THREAD_CPUTIME_ID is not available: {e}"),
            )
        })?;
        Ok(ThrottleMode {
            period: config.period,
        })
    }
}

impl Isolation for ThrottleMode {
    fn mode(&self) -> Mode {
        Mode::Throttle
    }
    fn describe(&self) -> String {
        "userspace throttle: guests sleep at epoch ticks when their thread CPU time runs ahead of cpu_quota (no cgroup privileges needed)".into()
    }
    fn slot(&self, _worker: usize, _tid: i32) -> Result<Box<dyn Slot>, IsolationError> {
        Ok(Box::new(ThrottleSlot {
            period: self.period,
        }))
    }
    /// Each invocation's [`Throttle`] is continuous, not periodic; the
    /// period sizes the [`crate::Ledger`]'s burst, as for the cgroup modes.
    fn period(&self) -> Option<Duration> {
        Some(self.period)
    }
}

struct ThrottleSlot {
    period: Duration,
}

impl Slot for ThrottleSlot {
    fn apply(&mut self, millicores: u64) -> Result<Option<Throttle>, IsolationError> {
        Ok(Some(Throttle::unstarted(millicores, self.period)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CPU-bound loop that checks its throttle every ~1 ms of work, the way
    /// epoch ticks would, holds close to its share.
    #[test]
    fn a_busy_thread_is_held_near_its_quota() {
        let mut t = Throttle::new(250, Duration::from_millis(100));
        let start = Instant::now();
        let cpu0 = thread_cpu_time();
        let deadline = start + Duration::from_secs(60);
        while start.elapsed() < Duration::from_millis(600) {
            burn(Duration::from_millis(1));
            t.check(deadline);
        }
        let share = (thread_cpu_time() - cpu0).as_secs_f64() / start.elapsed().as_secs_f64();
        assert!((0.15..0.35).contains(&share), "share {share}");
        assert!(t.slept > Duration::from_millis(300), "slept {:?}", t.slept);
    }

    /// What a call saves while it waits (in a host call, using no CPU) is
    /// banked up to one period's quota, not without end: after 200 ms of
    /// waiting at 250 millicores (50 ms earned), 60 ms of CPU at once finds
    /// at most 25 ms banked plus 15 ms earned as it ran: 20 ms ahead, 80 ms
    /// of sleep at its rate. Banking all it earned, it would not sleep.
    #[test]
    fn credit_banked_while_waiting_is_capped_at_one_period() {
        let mut t = Throttle::new(250, Duration::from_millis(100));
        std::thread::sleep(Duration::from_millis(200));
        burn(Duration::from_millis(60));
        t.check(Instant::now() + Duration::from_secs(60));
        assert!(t.slept >= Duration::from_millis(60), "slept {:?}", t.slept);
    }

    /// At a tiny quota a debt is still slept off in one check, in slices
    /// that each earn far more than their wake-up costs: 0.5 ms ahead at 1
    /// millicore is 500 ms of sleep, in slices of 200 ms. (In slices of 10
    /// ms, each earning 10 µs against a 17-35 µs wake-up charged to the
    /// call, the debt would only grow.)
    #[test]
    fn a_debt_at_a_tiny_quota_is_slept_off_in_slices_that_earn_more_than_they_cost() {
        let mut t = Throttle::new(1, Duration::from_millis(100));
        assert_eq!(t.slice(), Duration::from_millis(200));
        burn(Duration::from_micros(500));
        let looks = std::cell::Cell::new(0);
        t.check_until(Instant::now() + Duration::from_secs(60), || {
            looks.set(looks.get() + 1);
            false
        });
        assert!(
            (Duration::from_millis(400)..Duration::from_millis(1500)).contains(&t.slept),
            "slept {:?}",
            t.slept
        );
        assert!(looks.get() >= 2, "asked the stop signal between slices");
    }

    /// The stop signal is asked between slices and ends the sleep.
    #[test]
    fn a_stop_signal_ends_the_sleep_after_a_slice() {
        let mut t = Throttle::new(100, Duration::from_millis(100));
        burn(Duration::from_millis(20));
        t.check_until(Instant::now() + Duration::from_secs(60), || true);
        assert_eq!(t.slept, SLICE, "one slice, then stopped");
    }

    #[test]
    fn never_sleeps_past_the_deadline() {
        let mut t = Throttle::new(10, Duration::from_millis(100));
        burn(Duration::from_millis(20));
        let start = Instant::now();
        t.check(start + Duration::from_millis(50));
        assert!(start.elapsed() < Duration::from_millis(500));
    }
}
