//! CPU isolation of wasmbox's worker threads.
//!
//! Every worker thread gets one [`Slot`] when it starts and keeps it for its
//! life. Before each invocation the worker calls [`Slot::apply`] with the
//! request's `cpu_quota` (millicores, 1000 = one core); a slot only touches
//! the kernel there when the quota differs from the one it already has. In
//! the cgroup modes the thread moves into its slot cgroup only once a call
//! with a limit reaches its first epoch tick, and back out as that call
//! ends ([`cgroup::CgroupSlot`]): a call shorter than that never crosses a
//! cgroup boundary.
//!
//! Modes, one file each:
//! - [`cgroup_v2`]: one threaded cgroup per worker, `cpu.max`;
//! - [`cgroup_v1`]: one cpu-controller cgroup per worker, `cpu.cfs_quota_us`;
//!   both keep all their cgroups in one tree per opened instance,
//!   `wasmbox-<random id>` ([`cgroup`]), and on open remove the trees of
//!   servers that are gone ([`sweep`]);
//! - [`throttle`]: no privileges; the guest's own thread sleeps at epoch ticks
//!   when its thread CPU time runs ahead of its budget;
//! - [`none`]: no limit.
//!
//! Each invocation starts with its own budget (what an earlier call spent on
//! the same worker does not throttle it); the [`ledger`] keeps a function
//! from beating its quota by splitting work into many short calls.
// Only `nudge` (a signal handler) may use unsafe code.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cgroup;
pub mod cgroup_v1;
pub mod cgroup_v2;
pub mod error;
pub mod fs;
pub mod ledger;
pub mod none;
mod nudge;
#[cfg(test)]
mod standin;
pub mod sweep;
pub mod throttle;
pub mod watch;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use error::IsolationError;
pub use ledger::Ledger;
pub use throttle::{thread_cpu_time, Throttle};

/// Which mechanism holds threads to their quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `cgroup-v2`: one threaded cgroup per worker thread, `cpu.max`
    /// ([`cgroup_v2`]).
    CgroupV2,
    /// `cgroup-v1`: one cpu-controller cgroup per worker thread,
    /// `cpu.cfs_quota_us` ([`cgroup_v1`]).
    CgroupV1,
    /// `throttle`: no privileges; guests sleep at epoch ticks ([`throttle`]).
    Throttle,
    /// `none`: no limit ([`none`]).
    None,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::CgroupV2 => "cgroup-v2",
            Mode::CgroupV1 => "cgroup-v1",
            Mode::Throttle => "throttle",
            Mode::None => "none",
        })
    }
}

/// What was asked for on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// `auto`: the strongest mode that works here: cgroup v2, cgroup v1,
    /// throttle, else none.
    Auto,
    /// This mode, or an error if it cannot work here.
    Exactly(Mode),
}

/// Plain-data isolation settings.
#[derive(Debug, Clone)]
pub struct IsolationConfig {
    /// The mode asked for (`--cpu-isolation`).
    pub requested: Requested,
    /// The cgroup under which slot cgroups are made; found from
    /// /proc/self/cgroup and /proc/self/mountinfo when `None`.
    pub cgroup_root: Option<PathBuf>,
    /// CFS / throttle period.
    pub period: Duration,
}

impl Default for IsolationConfig {
    fn default() -> Self {
        IsolationConfig {
            requested: Requested::Auto,
            cgroup_root: None,
            period: Duration::from_millis(100),
        }
    }
}

/// A mode, ready to hand out slots.
pub trait Isolation: Send + Sync {
    /// The mode this is.
    fn mode(&self) -> Mode;
    /// One line for the startup log: what is used, where.
    fn describe(&self) -> String;
    /// Creates the calling worker thread's slot (a cgroup mode moves the
    /// thread in and back out once, to prove it can). Called once, on the
    /// worker thread itself.
    fn slot(&self, worker: usize, tid: i32) -> Result<Box<dyn Slot>, IsolationError>;
    /// The period over which quotas are enforced, `None` when this mode
    /// enforces none (then no [`Ledger`] is kept either).
    fn period(&self) -> Option<Duration> {
        None
    }
    /// Worker threads moved into or out of their slots after the slots
    /// were made (cgroup modes: two per limited call that reached an epoch tick,
    /// see [`cgroup::Door`]).
    fn moves(&self) -> u64 {
        0
    }
    /// Calls moved into their slots by the watch's nudge after they ran
    /// too long outside (cgroup modes, [`watch`]).
    fn rescues(&self) -> u64 {
        0
    }
    /// Removes whatever this instance made (after the workers have exited):
    /// its whole cgroup tree. Idempotent; cgroup modes also do it on drop.
    fn shutdown(&self) {}
}

/// One worker thread's place in the isolation mechanism.
pub trait Slot: Send {
    /// Holds the thread to `millicores` for its next invocation. Returns a
    /// [`Throttle`] when the limit is enforced from inside the invocation,
    /// checked at its epoch ticks (throttle mode: by sleeping; cgroup modes:
    /// by moving into the slot cgroup at the call's first tick), `None` when
    /// nothing is to be held or the kernel holds it already.
    fn apply(&mut self, millicores: u64) -> Result<Option<Throttle>, IsolationError>;
    /// The invocation run after the last `apply` used `cpu` of this
    /// thread's time. A kernel slot refills its period's budget at the next
    /// `apply` once what was used would otherwise eat into the next
    /// invocation's budget.
    fn used(&mut self, _cpu: Duration) {}
    /// Whether the thread now sits in the process's own cgroup, sharing its
    /// run queue with the threads that send it work (always, except in a
    /// cgroup of its own).
    fn at_home(&self) -> bool {
        true
    }
    /// Whether the slot has work to do once a call is over
    /// ([`Slot::tidy`]).
    fn wants_tidy(&self) -> bool {
        false
    }
    /// Does that work: a cgroup slot whose thread moved in during the last
    /// call moves it back out to the process's own cgroup. A worker calls
    /// it as an invocation ends (its store torn down), before it releases
    /// what the call held and delivers the outcome, and also when the call
    /// panics: the kernel may throttle a thread in its slot at any
    /// instruction, and one throttled while it holds a lock every other
    /// call needs (admission's as a reservation is released, the hand-off's,
    /// the ledger's) would stall them all for the rest of its period (up to
    /// 90 ms at 100 millicores). Other jobs (tests, tools) are tidied after
    /// their result is delivered, not counted free meanwhile.
    fn tidy(&mut self) {}
}

/// Opens the requested mode. `auto` tries cgroup v2, then cgroup v1, then
/// throttle, logging why each stronger one was passed over. An explicit mode
/// that cannot work is an error naming what is missing
/// ([`IsolationError::Unusable`]) or which cgroup operation failed
/// ([`IsolationError::Step`]).
pub fn open(config: &IsolationConfig) -> Result<Arc<dyn Isolation>, IsolationError> {
    let try_mode = |mode: Mode| -> Result<Arc<dyn Isolation>, IsolationError> {
        Ok(match mode {
            Mode::CgroupV2 => Arc::new(cgroup_v2::CgroupV2::open(config)?),
            Mode::CgroupV1 => Arc::new(cgroup_v1::CgroupV1::open(config)?),
            Mode::Throttle => Arc::new(throttle::ThrottleMode::open(config)?),
            Mode::None => Arc::new(none::NoIsolation),
        })
    };
    match config.requested {
        Requested::Exactly(mode) => try_mode(mode),
        Requested::Auto => {
            for mode in [Mode::CgroupV2, Mode::CgroupV1, Mode::Throttle] {
                match try_mode(mode) {
                    // The caller logs the mode it got.
                    Ok(iso) => return Ok(iso),
                    Err(e) => tracing::info!(mode = %mode, "cpu isolation (auto): not usable: {e}"),
                }
            }
            Ok(Arc::new(none::NoIsolation))
        }
    }
}

/// The calling thread's OS thread id (what `tasks` and `cgroup.threads`
/// take). `/proc/thread-self` links to `/proc/<pid>/task/<tid>`.
pub fn current_tid() -> i32 {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok())
        .unwrap_or(0)
}

/// Whether a call at `millicores` is held to a quota at all: a thread
/// cannot use more than a core, so a quota of a core or more is no limit.
/// (At a 1 ms period every quota is the kernel's 1 ms minimum, a whole
/// period, and a cgroup slot writes none; such calls are still counted as
/// held here, which only decides where a worker is woken.)
pub fn limits(millicores: u64) -> bool {
    millicores < 1000
}

/// cpu_quota in millicores -> CFS quota in µs for `period_us` (the
/// reference's mapping: 1000 millicores = one full period). At least 1000 µs,
/// the kernel's minimum.
pub fn quota_us(millicores: u64, period_us: u64) -> u64 {
    (millicores * period_us / 1000).max(1000)
}
