//! A function's CPU credit across its invocations.
//!
//! The kernel (or the throttle) holds one invocation to its `cpu_quota`
//! while it runs, and each invocation starts with a fresh budget: the worker
//! refills its slot's period before a call, so what an earlier call (of any
//! function) spent on that worker never throttles the next one. A fresh
//! budget alone would let a tenant beat its quota by splitting work into
//! many short calls, each spending a period's budget at full speed. The
//! ledger closes that. Per function it keeps a credit of CPU time, at most
//! one period of the quota (what a fresh CFS budget allows at once):
//! - a finished invocation is charged what it used beyond its quota over
//!   its own run (`cpu - quota * wall`; a call that stayed under its quota
//!   earns the difference back, up to the cap);
//! - while none of the function's invocations runs, the credit refills at
//!   the quota's rate;
//! - an invocation that finds the credit below zero first waits until the
//!   debt is repaid at its quota's rate ([`Ledger::begin`] says how long),
//!   and starts from zero; what it waited beyond that (a late timer) is
//!   credit, up to the cap, and what it did not wait is owed again.
//!
//! So a function that runs its calls one after another uses at most
//! `quota * T + quota * period` CPU over any interval T, however it splits
//! its work; concurrent invocations are each held to their quota by the
//! kernel and each charged their own excess.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Functions remembered before idle ones (full credit, nothing running) are
/// forgotten: a forgotten function comes back with full credit, as it would
/// have anyway.
const PRUNE_AT: usize = 4096;

/// Per-function CPU credit. Cheap to share; one lock held for a few
/// arithmetic operations per invocation start and end.
#[derive(Debug)]
pub struct Ledger {
    period: Duration,
    accounts: Mutex<HashMap<Arc<str>, Account>>,
}

#[derive(Debug, Clone, Copy)]
struct Account {
    /// CPU nanoseconds the function may use beyond its quota; negative is
    /// debt.
    credit: f64,
    /// When the last invocation ended (idle refill runs from here).
    idle_since: Instant,
    /// The latest quota, millicores.
    millicores: u64,
    /// Invocations begun and not ended.
    running: u32,
}

impl Account {
    fn cap(&self, period: Duration) -> f64 {
        rate(self.millicores) * period.as_nanos() as f64
    }

    /// Refills the credit for the idle time up to `now` (nothing while an
    /// invocation runs: those are charged per invocation).
    fn refill(&mut self, now: Instant, period: Duration) {
        if self.running == 0 {
            let idle = now.saturating_duration_since(self.idle_since).as_nanos() as f64;
            self.credit = (self.credit + rate(self.millicores) * idle).min(self.cap(period));
            self.idle_since = now;
        }
    }
}

/// What an invocation did, for [`Ledger::end`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Spent {
    /// Its thread's CPU time, from the end of its wait to its end.
    pub cpu: Duration,
    /// Wall time from the end of its wait to its end.
    pub wall: Duration,
    /// The wait [`Ledger::begin`] asked for.
    pub asked: Duration,
    /// How long it waited: less than asked when stopped early, more when
    /// its timer woke it late.
    pub waited: Duration,
    /// The call's own quota (what its `begin` was given): concurrent calls
    /// of one function may carry different quotas.
    pub millicores: u64,
}

/// CPU seconds per wall second.
fn rate(millicores: u64) -> f64 {
    millicores as f64 / 1000.0
}

impl Ledger {
    /// A ledger whose credits hold at most one `period` of each quota (the
    /// CFS period the slots use).
    pub fn new(period: Duration) -> Self {
        Ledger {
            period,
            accounts: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the ledger has anything to do at `millicores`: a thread
    /// cannot use more than a core, so a quota of a core or more needs no
    /// accounting.
    pub fn applies(millicores: u64) -> bool {
        millicores > 0 && crate::limits(millicores)
    }

    /// An invocation of `function` at `millicores` is about to start:
    /// returns how long it must wait first (zero unless its function is in
    /// debt; the wait repays the debt). Every `begin` must be followed by
    /// one [`Ledger::end`].
    pub fn begin(&self, function: &Arc<str>, millicores: u64, now: Instant) -> Duration {
        let period = self.period;
        let mut accounts = self.accounts.lock().unwrap();
        if accounts.len() >= PRUNE_AT && !accounts.contains_key(function) {
            accounts.retain(|_, a| {
                a.refill(now, period);
                a.running > 0 || a.credit < a.cap(period)
            });
        }
        let account = accounts.entry(function.clone()).or_insert_with(|| Account {
            credit: rate(millicores) * period.as_nanos() as f64,
            idle_since: now,
            millicores,
            running: 0,
        });
        account.refill(now, period);
        account.millicores = millicores;
        account.running += 1;
        if account.credit >= 0.0 {
            return Duration::ZERO;
        }
        let debt = -account.credit;
        account.credit = 0.0;
        Duration::from_nanos((debt / rate(millicores)) as u64)
    }

    /// The invocation begun with [`Ledger::begin`] stopped (see [`Spent`]).
    pub fn end(&self, function: &Arc<str>, spent: Spent, now: Instant) {
        let Spent {
            cpu,
            wall,
            asked,
            waited,
            millicores,
        } = spent;
        let mut accounts = self.accounts.lock().unwrap();
        if let Some(account) = accounts.get_mut(function) {
            let rate = rate(millicores);
            // `begin` cleared the debt against the wait it asked for. A
            // wait cut short (the client went away) repaid only part of
            // it: the rest is owed again, so hanging up cannot wipe a
            // debt. A wait longer than asked (a timer's lateness) repaid
            // more: the surplus is credit, so the function is not held
            // below its quota by how late its timers fire. It is capped
            // before the call's own use is charged, as idle refill is, so
            // a very late timer cannot buy a burst beyond one period.
            let cap = account.cap(self.period);
            let surplus = waited.as_nanos() as f64 - asked.as_nanos() as f64;
            if surplus > 0.0 {
                account.credit = (account.credit + rate * surplus).min(cap);
            }
            let unpaid = (-surplus).max(0.0);
            let excess = cpu.as_nanos() as f64 - rate * wall.as_nanos() as f64 + rate * unpaid;
            account.credit = (account.credit - excess).min(cap);
            account.running = account.running.saturating_sub(1);
            if account.running == 0 {
                account.idle_since = now;
            }
        }
    }

    /// Functions with an account (for tests and metrics).
    pub fn len(&self) -> usize {
        self.accounts.lock().unwrap().len()
    }

    /// Whether no function has an account.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_millis(100);
    const MS: Duration = Duration::from_millis(1);

    fn name(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    fn spent(cpu: Duration, wall: Duration) -> Spent {
        Spent {
            cpu,
            wall,
            millicores: 100,
            ..Spent::default()
        }
    }

    /// Runs `calls` back-to-back calls that each burn `cpu` at full speed
    /// (a fresh kernel budget lets them), at `millicores`, with `gap` of
    /// client time between them. Returns (CPU used, wall time until the
    /// function may run again, waited).
    fn run_calls(
        l: &Ledger,
        f: &Arc<str>,
        millicores: u64,
        calls: usize,
        cpu: Duration,
        gap: Duration,
    ) -> (Duration, Duration, Duration) {
        let start = Instant::now();
        let mut now = start;
        let (mut used, mut waited) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..calls {
            let wait = l.begin(f, millicores, now);
            waited += wait;
            now += wait + cpu;
            used += cpu;
            l.end(f, spent(cpu, cpu), now);
            now += gap;
        }
        // The last call's debt is repaid by whatever call comes next.
        let owed = l.begin(f, millicores, now);
        l.end(f, spent(Duration::ZERO, Duration::ZERO), now + owed);
        (used, now + owed - start, waited)
    }

    #[test]
    fn a_new_function_may_spend_one_period_of_its_quota_at_full_speed() {
        let l = Ledger::new(PERIOD);
        let f = name("f");
        let t0 = Instant::now();
        assert_eq!(l.begin(&f, 100, t0), Duration::ZERO);
        // 10 ms at 100 m would take 100 ms; done in 10 ms, it used 9 ms of
        // the 10 ms credit.
        l.end(&f, spent(10 * MS, 10 * MS), t0 + 10 * MS);
        assert_eq!(l.begin(&f, 100, t0 + 10 * MS), Duration::ZERO);
        l.end(&f, spent(10 * MS, 10 * MS), t0 + 20 * MS);
        // Now 8 ms in debt: 80 ms to repay at 100 m.
        let wait = l.begin(&f, 100, t0 + 20 * MS);
        assert!((79 * MS..=81 * MS).contains(&wait), "{wait:?}");
    }

    /// Back-to-back short calls that each burn most of a period's budget
    /// cannot together beat the quota.
    #[test]
    fn splitting_work_into_short_calls_does_not_beat_the_quota() {
        let l = Ledger::new(PERIOD);
        let (used, wall, waited) = run_calls(&l, &name("f"), 100, 50, 9 * MS, Duration::ZERO);
        let share = used.as_secs_f64() / wall.as_secs_f64();
        // The quota plus one period's burst over the whole run.
        let bound = (0.1 * wall.as_secs_f64() + 0.010) / wall.as_secs_f64();
        assert!(share <= bound + 1e-9, "share {share} > bound {bound}");
        assert!(
            share > 0.095,
            "share {share}: the ledger is stricter than the quota"
        );
        assert!(waited > Duration::from_secs(3), "waited {waited:?}");
    }

    /// Cheap calls separated by a client's round trips never wait.
    #[test]
    fn cheap_calls_with_gaps_never_wait() {
        let l = Ledger::new(PERIOD);
        let f = name("hello");
        let (_, _, waited) = run_calls(
            &l,
            &f,
            100,
            100_000,
            Duration::from_micros(5),
            Duration::from_micros(50),
        );
        assert_eq!(waited, Duration::ZERO);
    }

    /// A call that stays under its quota (it waited in host calls) is not
    /// charged, however long it is.
    #[test]
    fn a_call_under_its_quota_is_not_charged() {
        let l = Ledger::new(PERIOD);
        let f = name("f");
        let t0 = Instant::now();
        l.begin(&f, 100, t0);
        let t1 = t0 + Duration::from_secs(1);
        l.end(&f, spent(90 * MS, Duration::from_secs(1)), t1);
        assert_eq!(
            l.begin(&f, 100, t0 + Duration::from_secs(1)),
            Duration::ZERO
        );
    }

    /// What one function spent does not affect another.
    #[test]
    fn functions_have_separate_accounts() {
        let l = Ledger::new(PERIOD);
        let (f, g) = (name("f"), name("g"));
        let t0 = Instant::now();
        l.begin(&f, 100, t0);
        l.end(&f, spent(500 * MS, 500 * MS), t0 + 500 * MS);
        assert!(l.begin(&f, 100, t0 + 500 * MS) > Duration::from_secs(3));
        assert_eq!(l.begin(&g, 100, t0 + 500 * MS), Duration::ZERO);
    }

    /// Concurrent invocations each held to their quota owe nothing.
    #[test]
    fn concurrent_invocations_each_within_their_quota_owe_nothing() {
        let l = Ledger::new(PERIOD);
        let f = name("f");
        let t0 = Instant::now();
        for _ in 0..4 {
            assert_eq!(l.begin(&f, 250, t0), Duration::ZERO);
        }
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..4 {
            let s = Spent {
                millicores: 250,
                ..spent(250 * MS, Duration::from_secs(1))
            };
            l.end(&f, s, t1);
        }
        assert_eq!(l.begin(&f, 250, t1), Duration::ZERO);
    }

    /// A call is charged at its own quota, not at the quota of a call that
    /// began after it.
    #[test]
    fn each_call_is_charged_at_its_own_quota() {
        let l = Ledger::new(PERIOD);
        let f = name("f");
        let t0 = Instant::now();
        l.begin(&f, 900, t0);
        l.begin(&f, 10, t0);
        let t1 = t0 + Duration::from_secs(1);
        let s = Spent {
            millicores: 900,
            ..spent(900 * MS, Duration::from_secs(1))
        };
        l.end(&f, s, t1);
        l.end(&f, spent(Duration::ZERO, Duration::from_secs(1)), t1);
        assert_eq!(l.begin(&f, 900, t1), Duration::ZERO);
    }

    /// Hanging up during the wait does not wipe the debt.
    #[test]
    fn a_wait_cut_short_leaves_the_rest_of_the_debt_owed() {
        let l = Ledger::new(PERIOD);
        let f = name("f");
        let t0 = Instant::now();
        l.begin(&f, 100, t0);
        l.end(&f, spent(510 * MS, 10 * MS), t0 + 10 * MS);
        // 509 ms of excess, minus the 10 ms credit: 499 ms owed, 4.99 s.
        let wait = l.begin(&f, 100, t0 + 10 * MS);
        assert!(wait > Duration::from_secs(4), "{wait:?}");
        // Stopped after 1 s of it.
        let unpaid = wait - Duration::from_secs(1);
        let t1 = t0 + 10 * MS + Duration::from_secs(1);
        l.end(
            &f,
            Spent {
                asked: wait,
                waited: Duration::from_secs(1),
                millicores: 100,
                ..Spent::default()
            },
            t1,
        );
        let again = l.begin(&f, 100, t1);
        assert!(
            again + 2 * MS >= unpaid && again <= unpaid,
            "{again:?} vs {unpaid:?}"
        );
    }

    /// A new function at 100 m spends its 10 ms of credit and 1 ms more in
    /// a call ending at `t0` + 1 ms; the next call begins then. Its wait
    /// (10 ms, to repay the 1 ms).
    fn one_ms_in_debt(l: &Ledger, f: &Arc<str>, t0: Instant) -> Duration {
        l.begin(f, 100, t0);
        l.end(f, spent(11 * MS + MS / 10, MS), t0 + MS);
        let wait = l.begin(f, 100, t0 + MS);
        assert!((9 * MS..=11 * MS).contains(&wait), "{wait:?}");
        wait
    }

    /// A wait its timer ended late repaid more than the debt: the surplus
    /// is credit, so short calls whose waits each overshoot (a timer's
    /// granularity) still get their whole quota.
    #[test]
    fn a_wait_longer_than_asked_is_credited() {
        let l = Ledger::new(PERIOD);
        let f = name("f");
        let t0 = Instant::now();
        let wait = one_ms_in_debt(&l, &f, t0);
        // The timer fired 5 ms late: 0.5 ms of CPU repaid beyond the debt.
        let t1 = t0 + MS + wait + 5 * MS;
        l.end(
            &f,
            Spent {
                asked: wait,
                waited: wait + 5 * MS,
                millicores: 100,
                ..Spent::default()
            },
            t1,
        );
        // So a call right after spends 0.4 ms beyond its quota and leaves
        // the function in credit, where without the surplus the call after
        // it would wait 4 ms.
        assert_eq!(l.begin(&f, 100, t1), Duration::ZERO);
        l.end(&f, spent(MS / 10 * 4, Duration::ZERO), t1);
        // And one more 0.2 ms finds the 0.1 ms left used up: 1 ms owed.
        assert_eq!(l.begin(&f, 100, t1), Duration::ZERO);
        l.end(&f, spent(MS / 10 * 2, Duration::ZERO), t1);
        let owed = l.begin(&f, 100, t1);
        assert!((MS * 9 / 10..=MS * 11 / 10).contains(&owed), "{owed:?}");
    }

    /// However late a timer, its surplus fills the credit to one period's
    /// worth at most, before the call's own use is charged: a call after
    /// a wait 10 s late still ends in debt for what it used.
    #[test]
    fn a_late_timer_buys_no_more_than_one_period() {
        let l = Ledger::new(PERIOD);
        let f = name("f");
        let t0 = Instant::now();
        let wait = one_ms_in_debt(&l, &f, t0);
        let late = Duration::from_secs(10);
        // The call then burns a whole period's budget at full speed.
        let t1 = t0 + MS + wait + late + 10 * MS;
        l.end(
            &f,
            Spent {
                cpu: 10 * MS,
                wall: 10 * MS,
                asked: wait,
                waited: wait + late,
                millicores: 100,
            },
            t1,
        );
        // Credit 10 ms (capped), less 9 ms of excess: 1 ms left, so a
        // second such call owes 8 ms (80 ms of waiting).
        assert_eq!(l.begin(&f, 100, t1), Duration::ZERO);
        l.end(&f, spent(10 * MS, 10 * MS), t1 + 10 * MS);
        let owed = l.begin(&f, 100, t1 + 10 * MS);
        assert!((79 * MS..=81 * MS).contains(&owed), "{owed:?}");
    }

    #[test]
    fn idle_functions_are_forgotten_when_many() {
        let l = Ledger::new(PERIOD);
        let t0 = Instant::now();
        for i in 0..PRUNE_AT {
            let f = name(&format!("f{i}"));
            l.begin(&f, 100, t0);
            l.end(&f, spent(Duration::ZERO, Duration::ZERO), t0);
        }
        assert_eq!(l.len(), PRUNE_AT);
        // One in debt is kept.
        let owing = name("f0");
        l.begin(&owing, 100, t0);
        l.end(&owing, spent(Duration::from_secs(1), Duration::ZERO), t0);
        l.begin(&name("new"), 100, t0 + Duration::from_secs(1));
        assert_eq!(l.len(), 2);
    }
}
