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
//! A slot is a cgroup directory its worker thread moves into once a call
//! with a limit reaches its first epoch tick (or the [`crate::watch`]
//! finds it running long without one), with the quota file kept open. The
//! thread waits, and starts each call, in the process's own cgroup, and
//! moves back there as the call ends ([`CgroupSlot`], [`Door`]).

use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::nudge;
use crate::watch::Watch;
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

/// What one instance's slots share: how often their threads have moved,
/// and the watch over calls running outside their slots.
#[derive(Debug, Default)]
pub struct SlotsShared {
    moves: AtomicU64,
    rescues: AtomicU64,
    watch: Watch,
}

impl SlotsShared {
    /// Threads moved into or out of a slot after it was made.
    pub fn moves(&self) -> u64 {
        self.moves.load(Ordering::Relaxed)
    }

    /// Calls moved into their slots by the watch's nudge (the signal's
    /// handler made the move) because they ran too long outside
    /// ([`crate::watch`]); a nudge that the call's own tick beat is not
    /// counted.
    pub fn rescues(&self) -> u64 {
        self.rescues.load(Ordering::Relaxed)
    }

    fn moved(&self) {
        self.moves.fetch_add(1, Ordering::Relaxed);
    }
}

/// Formats "<quota µs or unlimited (`None`)>, <period µs>" as one mode's
/// quota file wants it.
pub type QuotaText = fn(Option<u64>, u64) -> String;

/// One worker thread's cgroup.
///
/// The thread waits, and starts every call, in the process's own cgroup
/// (`home`), beside the HTTP threads that hand it work: a thread in a child
/// cgroup pays on every wake-up across the boundary (the scheduler walks
/// the hierarchy on each enqueue and switches about twice as often per
/// call; hello at c=16 and `cpu_quota: 500` ran at 0.55-0.60x the
/// throughput of `--cpu-isolation none` with every worker in its slot).
/// A call with a limit carries a [`Throttle`] holding its slot's [`Door`]
/// ([`Throttle::entering`]): at its first epoch tick (a check that finds it
/// has used CPU) the thread moves into the slot, under the quota written
/// before the call (which refilled the period's budget), and the kernel
/// holds it from there. It moves back out as soon as the call is over
/// ([`Slot::tidy`]), before its worker releases what the call held and
/// delivers its outcome (which take locks other calls need).
/// So a call that ends before the next tick (on average half of one, 2.5
/// ms) never crosses the boundary, and one that runs longer is held by the
/// kernel after at most what it ran before its first tick: about a tick of
/// Wasm. One operation with no check inside it (instantiation, a bulk
/// memory instruction, a host call's own CPU) can run longer than that;
/// the instance's [`crate::watch`] has such a call move itself in (a
/// signal, [`crate::nudge`]) once it has used [`crate::watch::OVERDUE`] of
/// CPU outside. The
/// [`crate::Ledger`] charges what a call ran ahead of its quota to the
/// function's next calls.
pub struct CgroupSlot {
    dir: PathBuf,
    door: Arc<Door>,
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
}

/// How a slot's thread moves in and out.
///
/// Moving a thread between cgroups by its TID takes the threadgroup lock
/// for writing, which waits for an RCU grace period unless another move
/// did so moments before: 6-19 ms (median 8 ms) on the 2-core machines
/// here. A thread that moves itself writes `0` (itself) instead, which the
/// kernel (since 6.0) does without that lock: 30-60 µs, p90 62 µs against
/// 7.3 ms by TID (200 moves each way, cgroup v1, this machine). Every move
/// is made by the slot's own thread and writes `0` (in stand-in slots of
/// unit tests, the TID), including the move in of a call that runs long
/// outside the slot without reaching a check: the watch nudges its thread
/// ([`crate::nudge`]), and the signal's handler makes the move there.
///
/// Its state says where the thread is and who may move it: [`HOME`],
/// [`ARMED`] (a limited call runs at home; its first tick moves it in),
/// [`NUDGED`] (the watch has signalled it: the handler or the first tick,
/// whichever runs first, moves it in), [`MOVING`], [`INSIDE`]. Only the
/// thread itself moves it (both compare-and-swap the state to `MOVING`,
/// and a handler interrupting the tick's move finds it taken), so the
/// thread never finds a move of another in progress. The call's end
/// disarms it (`Slot::used`).
pub struct Door {
    /// `<slot>/tasks` or `<slot>/cgroup.threads`.
    join: PathBuf,
    /// The same, for the nudge's handler (which may not allocate).
    join_c: CString,
    /// Where the thread goes back to (v1 `<base>/tasks`, v2
    /// `<domain>/cgroup.threads`).
    home: PathBuf,
    tid: i32,
    /// What a move writes: `0` when the slot's own thread makes it (the
    /// kernel's "this thread"), else the TID (stand-in slots in unit tests).
    who: String,
    /// Where the thread is, and whether a call may move it ([`HOME`],
    /// [`ARMED`], [`NUDGED`], [`MOVING`], [`INSIDE`]).
    state: AtomicU8,
    /// How often a call was armed (tells the watch one call from the next).
    armings: AtomicU64,
    /// Whether the watch looks after this door: a slot made on its own
    /// thread (every real one; not the stand-ins of unit tests, whose TID
    /// is made up).
    watched: bool,
    /// A move in during a call that failed; the slot's next `apply`
    /// returns it, which retires the worker.
    failed: Mutex<Option<IsolationError>>,
    /// The `errno` of this call's nudged move, if it failed (0: none); the
    /// watch then nudges this call no more (it moves itself in at its next
    /// tick, or fails there and retires the worker). Cleared as a call is
    /// armed.
    nudge_failed: AtomicI32,
    shared: Arc<SlotsShared>,
}

impl fmt::Debug for Door {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Door")
            .field("join", &self.join)
            .field("inside", &self.inside())
            .finish()
    }
}

/// [`Door`] states. The thread is at home, no call may move it.
const HOME: u8 = 0;
/// At home, running a call with a limit: its first tick moves it in.
const ARMED: u8 = 1;
/// Armed, and signalled by the watch: the signal's handler or the first
/// tick, whichever runs first, moves it in.
const NUDGED: u8 = 2;
/// Being moved in, by the thread itself; inside once the write ends.
const MOVING: u8 = 3;
/// In the slot.
const INSIDE: u8 = 4;

impl Door {
    fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    fn inside(&self) -> bool {
        self.state() == INSIDE
    }

    /// A call with a limit begins (on the slot's thread, at home).
    fn arm(&self) {
        self.armings.fetch_add(1, Ordering::AcqRel);
        self.nudge_failed.store(0, Ordering::Relaxed);
        self.state.store(ARMED, Ordering::SeqCst);
        if self.watched {
            self.shared.watch.armed();
        }
    }

    /// The call is over: a thread still at home stays there (a nudge
    /// that arrives later finds nothing to do).
    fn disarm(&self) {
        let _ = self
            .state
            .try_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                matches!(s, ARMED | NUDGED).then_some(HOME)
            });
    }

    /// For the watch: `Some(n)` while the `n`th call is armed.
    /// A nudged call counts (its signal may still be on its way, and a
    /// failed move sets it armed again without waking the watch).
    pub(crate) fn armed(&self) -> Option<u64> {
        (self.watched && matches!(self.state(), ARMED | NUDGED))
            .then(|| self.armings.load(Ordering::Relaxed))
    }

    pub(crate) fn tid(&self) -> i32 {
        self.tid
    }

    /// Moves the slot's thread in (called on that thread, from its call's
    /// epoch tick); true once it is in. A nudge on its way finds the move
    /// made. A failure is logged and kept for the slot's next `apply`; the
    /// caller then holds the call itself.
    pub fn enter(&self) -> bool {
        debug_assert!(
            self.who != "0" || crate::current_tid() == self.tid,
            "a slot's door is used on its own thread only: `0` moves the caller"
        );
        loop {
            let s = self.state();
            match s {
                INSIDE => return true,
                // The watch may nudge it meanwhile (armed to nudged): look
                // again.
                ARMED | NUDGED => {
                    if self
                        .state
                        .compare_exchange(s, MOVING, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        break;
                    }
                }
                _ => return false,
            }
        }
        match self.move_in() {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "a worker could not move into its slot cgroup; its call is throttled in userspace and the worker retires");
                *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                self.state.store(HOME, Ordering::Release);
                false
            }
        }
    }

    /// For the watch, on its own thread: nudges the thread of the
    /// `arming`th call to move itself in ([`crate::nudge`]), if that call
    /// is still armed. An error says why this call cannot be nudged (the
    /// signal could not be sent, or its handler's move failed); the call
    /// then moves itself in at its next tick.
    pub(crate) fn rescue(&self, arming: u64) -> Result<(), String> {
        if self
            .state
            .compare_exchange(ARMED, NUDGED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Ok(());
        }
        let unnudge = || {
            let _ = self
                .state
                .compare_exchange(NUDGED, ARMED, Ordering::AcqRel, Ordering::Acquire);
        };
        if self.armings.load(Ordering::Acquire) != arming {
            // A later call, armed since the watch looked: not overdue.
            unnudge();
            return Ok(());
        }
        let errno = self.nudge_failed.load(Ordering::Acquire);
        if errno != 0 {
            unnudge();
            return Err(format!(
                "its move in ({}) failed: {}",
                self.join.display(),
                io::Error::from_raw_os_error(errno)
            ));
        }
        nudge::send(self.tid).map_err(|e| {
            unnudge();
            format!("cannot signal its thread {}: {e}", self.tid)
        })
    }

    /// The nudge's handler, on the slot's own thread (async-signal-safe:
    /// atomics and [`nudge::move_self`] only): moves the thread in, unless
    /// its call ended or its tick got there first.
    pub(crate) fn nudged(&self) {
        if self
            .state
            .compare_exchange(NUDGED, MOVING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        match nudge::move_self(&self.join_c) {
            Ok(()) => {
                self.shared.moved();
                self.shared.rescues.fetch_add(1, Ordering::Relaxed);
                self.state.store(INSIDE, Ordering::Release);
            }
            Err(errno) => {
                self.nudge_failed.store(errno.max(1), Ordering::Release);
                self.state.store(ARMED, Ordering::Release);
            }
        }
    }

    /// The move in itself, once the thread has won it (state MOVING):
    /// writes to the slot, counts the move, and only then says the thread
    /// is inside, so whoever sees it inside sees the count.
    fn move_in(&self) -> Result<(), IsolationError> {
        fs::write(&self.join, &self.who)?;
        self.shared.moved();
        self.state.store(INSIDE, Ordering::Release);
        Ok(())
    }

    /// Moves the thread (in its slot) back home, on its own thread.
    fn leave(&self) -> Result<(), IsolationError> {
        fs::write(&self.home, &self.who)?;
        self.shared.moved();
        self.state.store(HOME, Ordering::Release);
        Ok(())
    }
}

/// How to make one slot.
pub struct SlotSpec<'a> {
    /// The slot's cgroup directory, `<tree>/slot-<n>`.
    pub dir: PathBuf,
    /// Where the thread moves back out to (v1 `<base>/tasks`, v2
    /// `<domain>/cgroup.threads`).
    pub home: PathBuf,
    /// The worker thread's OS thread id.
    pub tid: i32,
    /// CFS period in µs.
    pub period_us: u64,
    /// Mode-specific writes before the thread moves in.
    pub setup: &'a dyn Fn(&Path) -> Result<(), IsolationError>,
    /// Quota file name and how to format "<quota µs>, <period µs>" for it.
    pub quota_file: Option<(&'a str, QuotaText)>,
    /// File a move in is written to (`tasks` or `cgroup.threads`).
    pub join_file: &'a str,
    /// How the directory is made and removed.
    pub dirs: Dirs,
    /// What the instance's slots share (the count of moves).
    pub shared: Arc<SlotsShared>,
}

impl CgroupSlot {
    /// Creates (or reuses) the directory, sets it up, opens the quota file,
    /// and moves the thread in and back out once, so that a slot that
    /// cannot hold its thread fails here, before any call; removes the
    /// directory again on failure. Called on the slot's own thread.
    pub fn create(spec: SlotSpec<'_>) -> Result<Box<dyn Slot>, IsolationError> {
        Ok(Box::new(Self::make(spec)?))
    }

    fn make(spec: SlotSpec<'_>) -> Result<Self, IsolationError> {
        let dir = spec.dir;
        match (spec.dirs.mkdir)(&dir) {
            Err(e) if !e.is_already_there() => return Err(e),
            _ => {}
        }
        let own = crate::current_tid() == spec.tid;
        let join = dir.join(spec.join_file);
        let join_c = CString::new(join.as_os_str().as_bytes()).map_err(|e| {
            IsolationError::step(
                "open",
                &join,
                io::Error::new(io::ErrorKind::InvalidInput, e),
            )
        })?;
        let door = Door {
            join,
            join_c,
            home: spec.home,
            tid: spec.tid,
            who: if own {
                "0".into()
            } else {
                spec.tid.to_string()
            },
            state: AtomicU8::new(HOME),
            armings: AtomicU64::new(0),
            watched: own,
            failed: Mutex::new(None),
            nudge_failed: AtomicI32::new(0),
            shared: spec.shared,
        };
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
            fs::write(&door.join, &door.who)?;
            fs::write(&door.home, &door.who)?;
            Ok(quota)
        })();
        match made {
            Ok(quota) => Ok(CgroupSlot {
                dir,
                door: {
                    let door = Arc::new(door);
                    if door.watched {
                        // Posted before the watch can see it: a nudge of
                        // this thread finds this door.
                        nudge::post(&door);
                        door.shared.watch.register(&door);
                    }
                    door
                },
                may_leave: true,
                quota,
                period_us: spec.period_us,
                current: None,
                spent: Duration::ZERO,
                dirs: spec.dirs,
            }),
            Err(e) => {
                // Back out if the move in worked and the one out did not.
                let _ = fs::write(&door.home, &spec.tid.to_string());
                let _ = (spec.dirs.rmdir)(&dir, fs::REMOVE_PATIENCE);
                Err(e)
            }
        }
    }
}

impl Slot for CgroupSlot {
    fn apply(&mut self, millicores: u64) -> Result<Option<Throttle>, IsolationError> {
        if let Some(e) = self
            .door
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            return Err(e);
        }
        // A slot holds one thread, which cannot use more than a core: a
        // quota of a whole period or more is no limit, and is written as
        // none (if the thread is in the slot at all). Bandwidth control
        // costs even when it never throttles: each sleep returns the
        // thread's unused runtime to the group's pool and each wake-up
        // takes some back, under the group's lock.
        let q = Some(quota_us(millicores, self.period_us)).filter(|&q| q < self.period_us);
        self.door.disarm();
        let inside = self.door.inside();
        // Writing the quota refills the group's budget for the current
        // period (the kernel's tg_set_cfs_bandwidth), so the invocation
        // gets all of it, whatever its predecessors spent. Cheap calls
        // skip the write until they have spent 1 % of a budget. No limit
        // needs no write while the thread is at home.
        let stale = q.is_some_and(|q| self.spent.as_micros() as u64 >= q / REFILL_AFTER_DIVISOR);
        if let Some((file, path, format)) = &self.quota {
            if (q.is_some() || inside) && (self.current != Some(q) || stale) {
                fs::rewrite(file, path, &format(q, self.period_us))?;
                self.current = Some(q);
                self.spent = Duration::ZERO;
            }
        }
        if inside || q.is_none() {
            // Held by the kernel already (a slot whose thread could not
            // leave), or not held at all.
            return Ok(None);
        }
        self.door.arm();
        Ok(Some(Throttle::entering(
            millicores,
            Duration::from_micros(self.period_us),
            self.door.clone(),
        )))
    }

    fn wants_tidy(&self) -> bool {
        match self.door.state() {
            HOME => false,
            INSIDE => self.may_leave,
            _ => true,
        }
    }

    fn tidy(&mut self) {
        self.door.disarm();
        if !self.wants_tidy() {
            return;
        }
        // A failure leaves the thread where it was (and no later call
        // tries again): its calls then run under their quotas from the
        // start.
        if let Err(e) = self.door.leave() {
            tracing::warn!(error = %e, "a worker could not leave its slot cgroup; it stays in it");
            self.may_leave = false;
        }
    }

    /// Also ends the call's arming: a thread still at home stays there.
    fn used(&mut self, cpu: Duration) {
        self.door.disarm();
        self.spent += cpu;
    }

    fn at_home(&self) -> bool {
        !self.door.inside()
    }
}

impl Drop for CgroupSlot {
    /// Runs as the worker thread exits: move it back, remove the slot.
    fn drop(&mut self) {
        // On its own thread (as workers drop their slots), the fast move
        // home, and the door unposted before it can go.
        let own = self.door.watched && crate::current_tid() == self.door.tid;
        if own {
            nudge::unpost(&self.door);
        } else if self.door.watched {
            // Its thread may still take a nudge that reads this door: kept
            // for the process's life (and with it the instance's watch).
            // Never on a worker, which drops its slot on its own thread.
            std::mem::forget(self.door.clone());
        }
        self.door.disarm();
        if self.door.state() != HOME {
            let who = if own {
                self.door.who.clone()
            } else {
                self.door.tid.to_string()
            };
            let _ = fs::write(&self.door.home, &who);
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
        if let Some(path) = fs::v1_path_of(&cg, "cpu") {
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
    use crate::throttle::burn;

    /// A slot over STAND-IN directories (crate::standin) whose thread goes
    /// home to `<tmp>/tasks`; no thread really moves (the slot's TID, 4242,
    /// is not the test's thread, so the "moves" write it). The files the
    /// slot's creation wrote are emptied.
    fn standin_slot(tmp: &Path, shared: Arc<SlotsShared>) -> (CgroupSlot, PathBuf, PathBuf) {
        standin_slot_of(tmp, shared, 4242)
    }

    /// [`standin_slot`] for thread `tid`: the calling thread's makes a slot
    /// as a worker does (moves write `0`, the watch looks after it).
    fn standin_slot_of(
        tmp: &Path,
        shared: Arc<SlotsShared>,
        tid: i32,
    ) -> (CgroupSlot, PathBuf, PathBuf) {
        let who = if tid == crate::current_tid() {
            "0".to_string()
        } else {
            tid.to_string()
        };
        let dir = tmp.join("slot-0");
        let home = tmp.join("tasks");
        std::fs::write(&home, "").unwrap();
        let slot = CgroupSlot::make(SlotSpec {
            dir: dir.clone(),
            home: home.clone(),
            tid,
            period_us: 100_000,
            setup: &|_| Ok(()),
            quota_file: Some(("cpu.cfs_quota_us", |q, _| {
                q.map_or("-1".into(), |q| q.to_string())
            })),
            join_file: "tasks",
            dirs: crate::standin::STANDIN,
            shared,
        })
        .unwrap();
        let join = dir.join("tasks");
        assert_eq!(read(&join), who, "creation tried the move in");
        assert_eq!(read(&home), who, "and back out");
        std::fs::write(&join, "").unwrap();
        std::fs::write(&home, "").unwrap();
        (slot, join, home)
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    /// A throttle from `apply`, started as an invocation starts it.
    fn started(t: Result<Option<Throttle>, IsolationError>) -> Throttle {
        let mut t = t.unwrap().expect("a limit is held");
        t.start(crate::thread_cpu_time());
        t
    }

    fn far() -> std::time::Instant {
        std::time::Instant::now() + Duration::from_secs(60)
    }

    /// A call with a limit starts at home; its throttle moves the thread
    /// into the slot (under the quota written before the call) at its first
    /// tick, and the worker moves it back out after the call. Calls with no
    /// limit never go in.
    #[test]
    fn a_call_with_a_limit_enters_its_slot_at_its_first_tick() {
        let tmp = tempfile::tempdir().unwrap();
        let shared = Arc::new(SlotsShared::default());
        let (mut slot, join, home) = standin_slot(tmp.path(), shared.clone());
        let quota = tmp.path().join("slot-0/cpu.cfs_quota_us");

        assert!(
            slot.apply(1000).unwrap().is_none(),
            "no limit, nothing held"
        );
        assert!(slot.at_home() && !slot.wants_tidy());

        let mut t = started(slot.apply(250));
        assert_eq!(read(&quota), "25000", "the quota is in place first");
        assert_eq!(read(&join), "", "the call starts at home");
        // Its first tick: in, with nothing slept (the kernel holds it now).
        burn(Duration::from_millis(1));
        t.check(far());
        assert!(t.entered() && t.slept.is_zero());
        assert_eq!(read(&join), "4242");
        assert!(!slot.at_home() && slot.wants_tidy());
        assert_eq!(shared.moves(), 1);
        burn(Duration::from_millis(30));
        t.check(far());
        assert_eq!(shared.moves(), 1, "moved once");

        slot.tidy();
        assert_eq!(read(&home), "4242");
        assert!(slot.at_home() && !slot.wants_tidy());
        assert_eq!(shared.moves(), 2);
    }

    /// A call that waited a long time (in a host call) banks nothing
    /// towards running outside its slot: its first tick after the wait
    /// moves it in all the same.
    #[test]
    fn a_call_that_waited_still_enters_at_its_first_tick() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut slot, join, _home) = standin_slot(tmp.path(), Arc::default());
        let mut t = started(slot.apply(250));
        // 200 ms at 250 millicores would earn 50 ms of CPU.
        std::thread::sleep(Duration::from_millis(200));
        burn(Duration::from_millis(1));
        t.check(far());
        assert!(t.entered(), "a wait earned it time outside its slot");
        assert_eq!(read(&join), "4242");
    }

    /// Leaving the slot only saves time: where the move out fails, the
    /// thread stays in its slot (no later call tries again), and its calls
    /// run under their quotas from the start, with no throttle.
    #[test]
    fn a_worker_that_cannot_leave_its_slot_stays_in_it_and_its_calls_run() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut slot, _join, home) = standin_slot(tmp.path(), Arc::default());
        let mut t = started(slot.apply(250));
        burn(Duration::from_millis(1));
        t.check(far());
        assert!(t.entered());
        std::fs::remove_file(&home).unwrap();
        slot.tidy();
        assert!(!slot.at_home());
        assert!(!slot.wants_tidy(), "tries to leave once");
        assert!(slot.apply(500).unwrap().is_none(), "the kernel holds it");
        let quota = tmp.path().join("slot-0/cpu.cfs_quota_us");
        assert_eq!(read(&quota), "50000");
        std::fs::write(&quota, "").unwrap();
        assert!(slot.apply(1000).unwrap().is_none());
        assert_eq!(read(&quota), "-1", "no limit, written as none");
    }

    /// A move in that fails during a call: the call is held in userspace
    /// instead (it sleeps at its ticks), and the slot's next `apply` fails,
    /// which retires the worker.
    #[test]
    fn a_failed_move_in_is_throttled_in_userspace_and_fails_the_next_apply() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut slot, join, _home) = standin_slot(tmp.path(), Arc::default());
        std::fs::remove_file(&join).unwrap();
        let mut t = started(slot.apply(100));
        // Held here instead: 30 ms of CPU, earning at most 3 ms as it ran,
        // is 27 ms ahead, 270 ms of sleep at 100 millicores.
        burn(Duration::from_millis(30));
        t.check(far());
        assert!(!t.entered() && slot.at_home());
        assert!(t.slept >= Duration::from_millis(100), "slept {:?}", t.slept);
        let e = slot.apply(100).expect_err("the failed move is reported");
        assert!(e.to_string().contains("tasks"), "{e}");
    }

    /// A call that uses CPU at home and never reaches a check (one long
    /// operation with no epoch check inside) is nudged by the watch thread,
    /// and the signal's handler moves it in (itself, `0`, between two
    /// instructions of its loop); a check after that finds it in; the
    /// worker moves it back out after the call.
    #[test]
    fn a_call_that_runs_long_without_a_check_is_moved_in_by_the_watch() {
        let tmp = tempfile::tempdir().unwrap();
        let shared = Arc::new(SlotsShared::default());
        let tid = crate::current_tid();
        let (mut slot, join, home) = standin_slot_of(tmp.path(), shared.clone(), tid);
        let mut t = started(slot.apply(100));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while slot.at_home() {
            assert!(std::time::Instant::now() < deadline, "never moved in");
            burn(Duration::from_millis(1));
        }
        assert_eq!(read(&join), "0", "moved by itself, nudged by the watch");
        assert_eq!((shared.rescues(), shared.moves()), (1, 1));
        t.check(far());
        assert!(
            t.entered() && t.slept.is_zero(),
            "in already: nothing to hold here"
        );
        assert_eq!(shared.moves(), 1);
        slot.used(Duration::from_millis(20));
        assert!(slot.wants_tidy());
        slot.tidy();
        assert_eq!(read(&home), "0");
        assert!(slot.at_home() && !slot.wants_tidy());
        assert_eq!(shared.moves(), 2);
    }

    /// A call that ends (`used`) is no longer watched: its thread stays at
    /// home, however much CPU it uses afterwards, and has nothing to tidy.
    #[test]
    fn a_call_that_ended_is_not_moved_in() {
        let tmp = tempfile::tempdir().unwrap();
        let shared = Arc::new(SlotsShared::default());
        let tid = crate::current_tid();
        let (mut slot, join, _home) = standin_slot_of(tmp.path(), shared.clone(), tid);
        let _t = slot.apply(100).unwrap().unwrap();
        assert!(slot.wants_tidy(), "armed");
        slot.used(Duration::from_micros(500));
        assert!(!slot.wants_tidy());
        // Well past what an armed call may use outside its slot.
        burn(crate::watch::OVERDUE * 4);
        assert!(slot.at_home());
        assert_eq!(read(&join), "");
        assert_eq!(shared.rescues(), 0);
    }

    /// The first half of what the watch does to an overdue call (armed to
    /// nudged), by hand; the signal is `nudge::send` to this thread, whose
    /// handler runs before `send` returns.
    fn mark_nudged(slot: &CgroupSlot) {
        assert!(slot
            .door
            .state
            .compare_exchange(ARMED, NUDGED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok());
    }

    /// A call whose first tick comes before the nudge's signal moves
    /// itself in, and the late signal finds nothing to do; a signal that
    /// comes after the call ended leaves the thread at home.
    #[test]
    fn a_late_nudge_moves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let shared = Arc::new(SlotsShared::default());
        let (mut slot, join, _home) =
            standin_slot_of(tmp.path(), shared.clone(), crate::current_tid());
        let mut t = started(slot.apply(100));
        mark_nudged(&slot);
        burn(Duration::from_millis(1));
        t.check(far());
        assert!(t.entered(), "the tick moved a nudged call in");
        assert_eq!(read(&join), "0");
        assert_eq!((shared.moves(), shared.rescues()), (1, 0));
        nudge::send(crate::current_tid()).unwrap();
        assert_eq!((shared.moves(), shared.rescues()), (1, 0), "moved once");

        slot.used(Duration::from_millis(1));
        slot.tidy();
        std::fs::write(&join, "").unwrap();
        let _t = slot.apply(100).unwrap().unwrap();
        mark_nudged(&slot);
        slot.used(Duration::from_micros(100));
        nudge::send(crate::current_tid()).unwrap();
        assert!(slot.at_home() && !slot.wants_tidy());
        assert_eq!(read(&join), "");
        assert_eq!(shared.rescues(), 0);

        // Late for the call before, it finds the next one armed (not
        // nudged): that call is not moved in by it.
        let _t = slot.apply(100).unwrap().unwrap();
        nudge::send(crate::current_tid()).unwrap();
        assert!(slot.door.armed().is_some() && slot.at_home());
        // Nor while the thread moves itself (the handler interrupting the
        // tick's move finds it taken).
        slot.door.state.store(MOVING, Ordering::Release);
        nudge::send(crate::current_tid()).unwrap();
        assert_eq!(slot.door.state(), MOVING);
        assert_eq!(read(&join), "");
        assert_eq!((shared.moves(), shared.rescues()), (2, 0));
        slot.door.state.store(ARMED, Ordering::Release);
        slot.used(Duration::from_micros(100));
    }

    /// A nudged move that fails (the handler cannot log): the call runs
    /// on at home, and the watch, told why, nudges it no more (the call
    /// moves itself in at its next tick); the next call may be nudged
    /// again.
    #[test]
    fn a_failed_nudge_is_not_tried_again_for_that_call() {
        let tmp = tempfile::tempdir().unwrap();
        let shared = Arc::new(SlotsShared::default());
        let (mut slot, join, _home) =
            standin_slot_of(tmp.path(), shared.clone(), crate::current_tid());
        std::fs::remove_file(&join).unwrap();
        let _t = started(slot.apply(100));
        let arming = slot.door.armings.load(Ordering::Acquire);
        mark_nudged(&slot);
        nudge::send(crate::current_tid()).unwrap();
        assert!(slot.at_home());
        assert_eq!(slot.door.armed(), Some(arming), "armed again");
        let why = slot.door.rescue(arming).expect_err("the watch is told");
        assert!(
            why.contains("tasks") && why.contains("No such file"),
            "{why}"
        );
        assert_eq!(slot.door.armed(), Some(arming), "and not nudged");
        slot.used(Duration::from_millis(1));
        assert_eq!(shared.rescues(), 0);

        std::fs::write(&join, "").unwrap();
        let _t = started(slot.apply(100));
        let arming = slot.door.armings.load(Ordering::Acquire);
        // The watch's own rescue: the signal, and the handler's move.
        assert_eq!(slot.door.rescue(arming), Ok(()));
        assert!(!slot.at_home(), "the next call was nudged in");
        assert_eq!(read(&join), "0");
        assert_eq!(shared.rescues(), 1);
        slot.used(Duration::from_millis(1));
        slot.tidy();
    }

    /// A slot unposts its door before the door goes, so a nudge that
    /// comes after finds none.
    #[test]
    fn a_slot_that_is_gone_leaves_no_door_to_nudge() {
        let tmp = tempfile::tempdir().unwrap();
        let (slot, _join, _home) =
            standin_slot_of(tmp.path(), Arc::default(), crate::current_tid());
        assert!(nudge::posted(&slot.door));
        drop(slot);
        assert!(!nudge::posted_any());
        nudge::send(crate::current_tid()).unwrap();
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
