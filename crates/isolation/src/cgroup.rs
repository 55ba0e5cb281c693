//! What the two cgroup modes share: instance trees, and slots.
//!
//! Every [`Isolation`](crate::Isolation) opened in a cgroup mode gets a
//! random instance id (64 bits from /dev/urandom) and keeps all its cgroups
//! in one tree, `<root>/wasmbox-<id>/`, its workers' slots being
//! `wasmbox-<id>/slot-<n>`. Names are unique per server instance, not per
//! PID: every containerised server is PID 1, and several servers can share
//! one cgroup root (pods on one node, or tests in one process).
//!
//! A tree is live while any thread sits in any of its cgroups; the
//! [`sweep`](crate::sweep) removes the trees of servers that are gone by
//! that rule alone. Workers start lazily, so a live tree must hold a thread
//! from the moment it is made: in cgroup v1 a parked anchor thread in
//! `wasmbox-<id>/anchor`, in cgroup v2 the process itself.
//!
//! The creation race: another server's sweep may remove a tree in the moment
//! between its `mkdir` and the first thread moving in (it is empty then).
//! The creator then gets ENOENT on that move, and [`create_instance`] starts
//! over with a new id, so correctness does not depend on timing.
//!
//! A slot is a cgroup directory its worker thread sits in while its calls
//! are held to a quota, with the quota file kept open. A worker whose calls
//! ask for a whole core or more ([`LEAVE_AFTER_UNBOUNDED`] of them in a row,
//! and none with a limit on any worker for [`LEAVE_WHEN_NO_LIMIT_FOR`])
//! waits in the process's own cgroup instead, beside the HTTP threads, until
//! a call asks for less. It moves out between calls ([`Slot::tidy`]).

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{fs, quota_us, IsolationError, Slot, Throttle};

/// Prefix of every directory wasmbox makes in a cgroup root.
pub const PREFIX: &str = "wasmbox-";
/// The v1 anchor's cgroup inside an instance tree.
pub const ANCHOR: &str = "anchor";
/// Prefix of the slot cgroups inside an instance tree.
pub const SLOT: &str = "slot-";
/// How often [`create_instance`] starts over after its tree was swept away.
const ATTEMPTS: usize = 5;

/// How cgroup directories are made and removed: by the kernel's cgroup file
/// systems ([`KERNEL`]), where control files appear by themselves; or, in
/// this crate's unit tests, over plain directories standing in for them.
#[derive(Clone, Copy)]
pub struct Dirs {
    /// Makes one cgroup; fails with EEXIST if it is there already.
    pub mkdir: fn(&Path) -> Result<(), IsolationError>,
    /// Removes one (empty) cgroup, waiting out EBUSY for up to the duration.
    pub rmdir: fn(&Path, Duration) -> Result<(), IsolationError>,
}

/// The kernel's cgroup file systems: `mkdir`, and `rmdir` that waits out
/// EBUSY ([`fs::remove_cgroup_within`]).
pub const KERNEL: Dirs = Dirs {
    mkdir: fs::create_dir,
    rmdir: fs::remove_cgroup_within,
};

/// A fresh instance id: 64 random bits as 16 hex digits.
pub fn new_instance_id() -> Result<String, IsolationError> {
    let path = Path::new("/dev/urandom");
    let mut bytes = [0u8; 8];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| IsolationError::step("read", path, e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Which wasmbox layout a directory name in a cgroup root belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `wasmbox-<16 hex digits>`: an instance tree.
    Instance,
    /// `wasmbox-<pid>` or `wasmbox-<pid>-...`: made by earlier versions.
    PidNamed,
}

/// The layout of `name`, a directory name in a cgroup root; `None` when
/// wasmbox did not make it.
pub fn layout(name: &str) -> Option<Layout> {
    let rest = name.strip_prefix(PREFIX)?;
    if rest.len() == 16 && rest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(Layout::Instance);
    }
    let pid = rest.split('-').next()?;
    (!pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())).then_some(Layout::PidNamed)
}

/// Makes a new instance tree `<root>/wasmbox-<id>` and makes it live with
/// `enter` (which moves a thread or the process into it). If a sweeper
/// removed the fresh, empty tree first, `enter` fails with ENOENT: what is
/// left of the tree is removed and it starts over with a new id.
pub fn create_instance(
    root: &Path,
    dirs: &Dirs,
    enter: impl Fn(&Path) -> Result<(), IsolationError>,
) -> Result<(String, PathBuf), IsolationError> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let id = new_instance_id()?;
        let tree = root.join(format!("{PREFIX}{id}"));
        match (dirs.mkdir)(&tree) {
            Ok(()) => {}
            Err(e) if e.is_already_there() => continue,
            Err(e) => return Err(e),
        }
        match enter(&tree) {
            Ok(()) => return Ok((id, tree)),
            Err(e) => {
                let _ = remove_tree(&tree, dirs, Duration::ZERO);
                if !e.is_not_found() {
                    return Err(e);
                }
                tracing::info!(tree = %tree.display(), "a new cgroup tree was swept away by another server before use; starting over with a new id");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        IsolationError::step(
            "create",
            root,
            io::Error::new(io::ErrorKind::AlreadyExists, "instance ids kept colliding"),
        )
    }))
}

/// Every cgroup in the tree at `dir`, children before their parents, `dir`
/// last.
pub fn post_order(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(post_order(&e.path()));
        }
    }
    out.push(dir.to_path_buf());
    out
}

/// Removes a whole tree, children first, waiting up to `patience` on each
/// cgroup; returns the first failure and carries on past it.
pub fn remove_tree(tree: &Path, dirs: &Dirs, patience: Duration) -> Result<(), IsolationError> {
    let mut first = Ok(());
    for dir in post_order(tree) {
        if let Err(e) = (dirs.rmdir)(&dir, patience) {
            if first.is_ok() {
                first = Err(e);
            }
        }
    }
    first
}

/// A slot refills its budget before an invocation once earlier ones have
/// spent this fraction (1/100) of it since the last refill.
pub const REFILL_AFTER_DIVISOR: u64 = 100;

/// After this many calls in a row with no limit (a whole core or more), a
/// worker leaves its slot for the process's own cgroup; the next call with a
/// limit moves it back in.
///
/// A thread in a child cgroup costs every wake-up across the boundary, from
/// an HTTP thread in the parent to the worker and back: the scheduler walks
/// the hierarchy on each enqueue and switches about twice as often per call
/// (hello at c=16: 0.70x the throughput of `--cpu-isolation none` with every
/// worker in a slot). A slot with no quota holds nothing, so there is no
/// reason to pay it.
///
/// Moving a thread between cgroups is dear, against about 1 µs for a quota
/// rewrite: cgroup v1 takes the threadgroup lock for writing, which waits
/// for an RCU grace period unless another move did so moments before. A
/// move on its own took 6-19 ms (median 8 ms) on the 2-core machines here,
/// one right after another about 20 µs. So a worker moves out only when its
/// calls keep asking for no limit (calls that alternate between quotas, as
/// a mixed load's do, keep it in its slot), and it moves out between calls
/// ([`Slot::tidy`]), not in a call's `apply`.
pub const LEAVE_AFTER_UNBOUNDED: u32 = 8;

/// Nor does a worker leave while any worker has had a call with a limit
/// within this long: under a mixed load, a worker that left would be moved
/// back in by the next call with a limit it takes. (hello at c=8 with no
/// limit beside c=1 at `cpu_quota: 500` moved threads about 1,900 times a
/// second without this rule.)
pub const LEAVE_WHEN_NO_LIMIT_FOR: Duration = Duration::from_secs(1);

/// What one instance's slots share: when any of them last had a call with
/// a limit, and how often their threads have moved.
#[derive(Debug)]
pub struct SlotsShared {
    start: Instant,
    /// Milliseconds after `start`, plus one (0: never).
    last_ms: AtomicU64,
    moves: AtomicU64,
}

impl Default for SlotsShared {
    fn default() -> Self {
        SlotsShared {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            moves: AtomicU64::new(0),
        }
    }
}

impl SlotsShared {
    /// Threads moved into or out of a slot after it was made.
    pub fn moves(&self) -> u64 {
        self.moves.load(Ordering::Relaxed)
    }

    fn moved(&self) {
        self.moves.fetch_add(1, Ordering::Relaxed);
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_millis()).unwrap_or(u64::MAX)
    }

    /// A call with a limit starts now.
    fn seen(&self) {
        self.last_ms
            .store(self.ms(Instant::now()) + 1, Ordering::Relaxed);
    }

    /// Whether no call with a limit has started within `quiet`.
    fn none_within(&self, quiet: Duration) -> bool {
        self.none_within_at(quiet, Instant::now())
    }

    fn none_within_at(&self, quiet: Duration, now: Instant) -> bool {
        match self.last_ms.load(Ordering::Relaxed) {
            0 => true,
            last => {
                let now = self.ms(now) + 1;
                now.saturating_sub(last) >= u64::try_from(quiet.as_millis()).unwrap_or(u64::MAX)
            }
        }
    }
}

/// Formats "<quota µs or unlimited (`None`)>, <period µs>" as one mode's
/// quota file wants it.
pub type QuotaText = fn(Option<u64>, u64) -> String;

/// One worker thread's cgroup.
pub struct CgroupSlot {
    dir: PathBuf,
    /// Where the TID is written to move the thread in (`<dir>/tasks` or
    /// `<dir>/cgroup.threads`).
    join: PathBuf,
    /// Where the TID is written to move the thread back out (v1
    /// `<base>/tasks`, v2 `<domain>/cgroup.threads`).
    home: PathBuf,
    tid: i32,
    /// Whether the thread sits in the slot (else at `home`).
    inside: bool,
    /// Calls with no limit since the last one with a limit.
    unbounded: u32,
    /// False once leaving failed: the slot then keeps its thread.
    may_leave: bool,
    /// The kept-open quota file and the text a quota in µs becomes there;
    /// `None` when nothing is enforced (cgroup2 placement only).
    quota: Option<(File, PathBuf, QuotaText)>,
    period_us: u64,
    /// The quota last written (`Some(None)`: unlimited).
    current: Option<Option<u64>>,
    /// CPU used by invocations since the quota file was last written.
    spent: Duration,
    dirs: Dirs,
    /// Shared by the instance's slots.
    shared: Arc<SlotsShared>,
}

/// How to make one slot.
pub struct SlotSpec<'a> {
    /// The slot's cgroup directory, `<tree>/slot-<n>`.
    pub dir: PathBuf,
    /// Where the TID is written to move the thread back out when the slot
    /// is dropped (v1 `<base>/tasks`, v2 `<domain>/cgroup.threads`).
    pub home: PathBuf,
    /// The worker thread's OS thread id.
    pub tid: i32,
    /// CFS period in µs.
    pub period_us: u64,
    /// Mode-specific writes before the thread moves in.
    pub setup: &'a dyn Fn(&Path) -> Result<(), IsolationError>,
    /// Quota file name and how to format "<quota µs>, <period µs>" for it.
    pub quota_file: Option<(&'a str, QuotaText)>,
    /// File that takes the TID (`tasks` or `cgroup.threads`).
    pub join_file: &'a str,
    /// How the directory is made and removed.
    pub dirs: Dirs,
    /// What the instance's slots share (the last call with a limit, the
    /// count of moves).
    pub shared: Arc<SlotsShared>,
}

impl CgroupSlot {
    /// Creates (or reuses) the directory, sets it up, opens the quota file
    /// and moves the thread in; removes the directory again on failure.
    pub fn create(spec: SlotSpec<'_>) -> Result<Box<dyn Slot>, IsolationError> {
        let dir = spec.dir;
        match (spec.dirs.mkdir)(&dir) {
            Err(e) if !e.is_already_there() => return Err(e),
            _ => {}
        }
        let made = (|| {
            (spec.setup)(&dir)?;
            let quota = match spec.quota_file {
                Some((name, format)) => {
                    let p = dir.join(name);
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&p)
                        .map_err(|e| IsolationError::step("open", &p, e))?;
                    Some((f, p, format))
                }
                None => None,
            };
            fs::write(&dir.join(spec.join_file), &spec.tid.to_string())?;
            Ok(quota)
        })();
        match made {
            Ok(quota) => Ok(Box::new(CgroupSlot {
                join: dir.join(spec.join_file),
                dir,
                home: spec.home,
                tid: spec.tid,
                inside: true,
                unbounded: 0,
                may_leave: true,
                quota,
                period_us: spec.period_us,
                current: None,
                spent: Duration::ZERO,
                dirs: spec.dirs,
                shared: spec.shared,
            })),
            Err(e) => {
                let _ = (spec.dirs.rmdir)(&dir, fs::REMOVE_PATIENCE);
                Err(e)
            }
        }
    }
}

impl Slot for CgroupSlot {
    fn apply(&mut self, millicores: u64) -> Result<Option<Throttle>, IsolationError> {
        // A slot holds one thread, which cannot use more than a core: a
        // quota of a whole period or more is no limit, and is written as
        // none. Bandwidth control costs even when it never throttles: each
        // sleep returns the thread's unused runtime to the group's pool and
        // each wake-up takes some back, under the group's lock.
        let q = Some(quota_us(millicores, self.period_us)).filter(|&q| q < self.period_us);
        let Some((file, path, format)) = &self.quota else {
            return Ok(None);
        };
        if q.is_none() {
            self.unbounded = self.unbounded.saturating_add(1);
        } else {
            self.unbounded = 0;
            self.shared.seen();
        }
        if !self.inside && q.is_none() {
            return Ok(None);
        }
        // Writing the quota refills the group's budget for the current
        // period (the kernel's tg_set_cfs_bandwidth), so the invocation
        // starts with all of it, whatever its predecessors spent. Cheap
        // calls skip the write until they have spent 1 % of a budget.
        let stale = q.is_some_and(|q| self.spent.as_micros() as u64 >= q / REFILL_AFTER_DIVISOR);
        if self.current != Some(q) || stale {
            fs::rewrite(file, path, &format(q, self.period_us))?;
            self.current = Some(q);
            self.spent = Duration::ZERO;
        }
        if !self.inside {
            // The quota is in place before the thread is under it.
            fs::write(&self.join, &self.tid.to_string())?;
            self.inside = true;
            self.shared.moved();
        }
        Ok(None)
    }

    fn wants_tidy(&self) -> bool {
        self.inside
            && self.may_leave
            && self.unbounded >= LEAVE_AFTER_UNBOUNDED
            && self.shared.none_within(LEAVE_WHEN_NO_LIMIT_FOR)
    }

    fn tidy(&mut self) {
        if !self.wants_tidy() {
            return;
        }
        // Only a saving: a failure leaves the thread where it was (and no
        // later call tries again).
        match fs::write(&self.home, &self.tid.to_string()) {
            Ok(()) => {
                self.inside = false;
                self.shared.moved();
            }
            Err(e) => {
                tracing::warn!(error = %e, "a worker could not leave its slot cgroup; it stays in it");
                self.may_leave = false;
            }
        }
    }

    fn used(&mut self, cpu: Duration) {
        self.spent += cpu;
    }

    fn at_home(&self) -> bool {
        !self.inside
    }
}

impl Drop for CgroupSlot {
    /// Runs on the worker thread as it exits: move it back, remove the slot.
    fn drop(&mut self) {
        if self.inside {
            let _ = fs::write(&self.home, &self.tid.to_string());
        }
        if let Err(e) = (self.dirs.rmdir)(&self.dir, fs::REMOVE_PATIENCE) {
            tracing::warn!(error = %e, "slot cgroup not removed; shutdown removes it");
        }
    }
}

/// The instance trees (`<root>/.../wasmbox-<id>`) in the cgroup v1 cpu
/// hierarchy mounted at `v1_cpu_root` that the threads of process `pid` sit
/// in, read from `/proc/<pid>/task/*/cgroup`. For tools and tests that must
/// find a server's cgroups from outside it (the names carry no PID).
pub fn v1_trees_of_process(pid: u32, v1_cpu_root: &Path) -> Vec<PathBuf> {
    let mut trees = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"));
    for task in tasks.into_iter().flatten().flatten() {
        let Ok(cg) = std::fs::read_to_string(task.path().join("cgroup")) else {
            continue;
        };
        for line in cg.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
            let (Some(controllers), Some(path)) = (controllers, path) else {
                continue;
            };
            if !controllers.split(',').any(|c| c == "cpu") {
                continue;
            }
            let mut tree = v1_cpu_root.to_path_buf();
            for comp in path.trim_start_matches('/').split('/') {
                tree.push(comp);
                if comp.starts_with(PREFIX) {
                    if !trees.contains(&tree) {
                        trees.push(tree.clone());
                    }
                    break;
                }
            }
        }
    }
    trees
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slot over STAND-IN directories (crate::standin) whose thread goes
    /// home to `home`; no thread really moves.
    fn standin_slot(dir: &Path, home: PathBuf) -> Box<dyn Slot> {
        standin_slot_sharing(dir, home, Arc::default())
    }

    /// [`standin_slot`] sharing `shared` with other slots of one instance.
    fn standin_slot_sharing(dir: &Path, home: PathBuf, shared: Arc<SlotsShared>) -> Box<dyn Slot> {
        CgroupSlot::create(SlotSpec {
            dir: dir.to_path_buf(),
            home,
            tid: 4242,
            period_us: 100_000,
            setup: &|_| Ok(()),
            quota_file: Some(("cpu.cfs_quota_us", |q, _| {
                q.map_or("-1".into(), |q| q.to_string())
            })),
            join_file: "tasks",
            dirs: crate::standin::STANDIN,
            shared,
        })
        .unwrap()
    }

    /// Leaving the slot only saves time: where the move out fails, the
    /// call still runs and the thread stays in its slot (and no later call
    /// tries again).
    #[test]
    fn a_worker_that_cannot_leave_its_slot_stays_in_it_and_its_calls_run() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("gone/tasks");
        let mut slot = standin_slot(&tmp.path().join("slot-0"), home.clone());
        for _ in 0..3 * LEAVE_AFTER_UNBOUNDED {
            slot.apply(1000).unwrap();
            slot.tidy();
            assert!(!slot.at_home());
        }
        assert!(!home.exists());
        assert!(!slot.wants_tidy(), "tries to leave once");
        slot.apply(250).unwrap();
        assert!(!slot.at_home());

        // Where home can be written, the same calls take it there and a
        // call with a limit back (its TID written to the slot's `tasks`).
        std::fs::write(tmp.path().join("tasks"), "").unwrap();
        let dir = tmp.path().join("slot-1");
        let mut slot = standin_slot(&dir, tmp.path().join("tasks"));
        for _ in 0..LEAVE_AFTER_UNBOUNDED {
            assert!(!slot.wants_tidy());
            slot.apply(1000).unwrap();
        }
        // The last call ran in the slot; the move waits for `tidy`.
        assert!(!slot.at_home() && slot.wants_tidy());
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("tasks")).unwrap(),
            ""
        );
        slot.tidy();
        assert!(slot.at_home() && !slot.wants_tidy());
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("tasks")).unwrap(),
            "4242"
        );
        slot.apply(250).unwrap();
        assert!(!slot.at_home());
        assert_eq!(std::fs::read_to_string(dir.join("tasks")).unwrap(), "4242");
        assert_eq!(
            std::fs::read_to_string(dir.join("cpu.cfs_quota_us")).unwrap(),
            "25000"
        );
    }

    #[test]
    fn workers_stay_in_their_slots_while_any_call_has_had_a_limit_lately() {
        let seen = SlotsShared::default();
        let quiet = Duration::from_secs(1);
        let now = Instant::now();
        assert!(seen.none_within_at(quiet, now), "no limit yet");
        seen.seen();
        let at = Instant::now();
        assert!(!seen.none_within_at(quiet, at));
        assert!(!seen.none_within_at(quiet, at + quiet / 2));
        assert!(seen.none_within_at(quiet, at + quiet + Duration::from_millis(2)));

        // A slot whose instance saw a limit lately keeps its thread.
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("tasks"), "").unwrap();
        let shared = Arc::new(SlotsShared::default());
        let slot = |n: usize| {
            let dir = tmp.path().join(format!("slot-{n}"));
            standin_slot_sharing(&dir, tmp.path().join("tasks"), shared.clone())
        };
        let (mut a, mut b) = (slot(0), slot(1));
        b.apply(500).unwrap();
        for _ in 0..3 * LEAVE_AFTER_UNBOUNDED {
            a.apply(1000).unwrap();
            assert!(!a.wants_tidy(), "another slot had a limit lately");
            a.tidy();
        }
        assert_eq!(shared.moves(), 0, "no thread moved");
    }

    #[test]
    fn instance_ids_are_random_hex_and_names_are_classified() {
        let a = new_instance_id().unwrap();
        let b = new_instance_id().unwrap();
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
        assert_eq!(layout(&format!("wasmbox-{a}")), Some(Layout::Instance));
        assert_eq!(layout("wasmbox-123-0-slot-3"), Some(Layout::PidNamed));
        assert_eq!(layout("wasmbox-77"), Some(Layout::PidNamed));
        assert_eq!(layout("wasmbox-77-probe"), Some(Layout::PidNamed));
        for other in [
            "wasmbox-",
            "wasmbox-test",
            "wasmbox-0123abcd",
            "other-0123456789abcdef",
            "wasmbox--1",
        ] {
            assert_eq!(layout(other), None, "{other}");
        }
    }
}
