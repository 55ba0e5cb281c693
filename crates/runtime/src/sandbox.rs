//! One invocation: a fresh `Store` with WASI p1, the memory cap, bounded
//! stdout/stderr and a wall-clock deadline; instantiate from the cached
//! `InstancePre`, call `_start`, classify what happened.
//!
//! The deadline and the stop signals (client gone, server shutdown) cover
//! the whole invocation, host calls included:
//! - while the guest executes Wasm, the epoch callback checks them at every
//!   tick and traps the guest;
//! - while it waits inside a host call (WASI is async here: a sleep is a
//!   timer, not a blocked thread), the call's future is raced against the
//!   deadline and the signals, and dropped when one of them wins; wasmtime
//!   then unwinds the guest's fiber.
//!
//! Runs on a dedicated worker thread (see [`crate::executor`]), never on a
//! tokio worker: each thread drives its invocations on its own
//! current-thread runtime (timers only; it starts no threads).

use std::cell::Cell;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{I32Exit, WasiCtxBuilder, WasiView};

use wasmbox_isolation::{thread_cpu_time, Throttle};

pub use crate::cancel::CancelToken;
use crate::capture::{Capture, Overflow};
use crate::component::guard::stop_failure;
use crate::engine::WasmEngine;
use crate::function::Function;
use crate::limits::MemoryCap;
use crate::store::{Host, Stop, Stopped};

/// Where the guest's stdio goes.
#[derive(Debug, Clone)]
pub enum Stdio {
    /// stdin from memory, stdout/stderr captured up to their caps (server).
    Captured {
        /// The guest's whole stdin.
        stdin: Bytes,
        /// Most stdout bytes; a write past it stops the guest
        /// ([`Failure::OutputLimit`]).
        stdout_cap: usize,
        /// Most stderr bytes kept (the last ones).
        stderr_cap: usize,
    },
    /// The process's own stdio (`wasmbox run`).
    Inherit,
    /// An HTTP request for a wasi:http handler component (its stdout and
    /// stderr are kept for the log only).
    Http(crate::component::http::HttpExchange),
}

/// Everything one invocation needs besides the function itself.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// argv, including `argv[0]` (the function name).
    pub argv: Vec<String>,
    /// Environment variables the guest sees (none by default).
    pub env: Vec<(String, String)>,
    /// Where stdio goes.
    pub stdio: Stdio,
    /// Linear-memory cap in bytes.
    pub memory_cap: usize,
    /// Wall-clock limit for instantiate + run.
    pub timeout: Duration,
    /// CPU time the invocation's thread may use (from the end of any
    /// hold: its store's setup, instantiate and run); past it the guest is
    /// stopped at its next epoch tick
    /// ([`Failure::CpuBudget`]). `None`: no budget.
    pub cpu_budget: Option<Duration>,
    /// The quota as held from inside the invocation, at its epoch ticks: by
    /// sleeping (throttle mode), or by moving into the worker's slot cgroup
    /// at the call's first tick (cgroup modes, after which the kernel
    /// holds it). `None`: no limit, or the kernel holds it already.
    pub throttle: Option<Throttle>,
}

/// How long each phase took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Wall-clock time to instantiate (zero if it did not finish).
    pub instantiate: Duration,
    /// Wall-clock time from instantiation to the end of the invocation
    /// (zero if instantiation did not finish).
    pub execute: Duration,
    /// CPU time the worker thread used for the invocation (setting up its
    /// store, instantiate, execute), from the end of any hold.
    pub cpu: Duration,
    /// Waiting before the start for the function's CPU debt to be repaid
    /// (`wasmbox_isolation::ledger`).
    pub held: Duration,
}

/// The result of one invocation: what came out, and how it ended.
#[derive(Debug)]
pub struct Outcome {
    /// `Ok` if `_start` returned or the guest called `exit(0)`.
    pub result: Result<(), Failure>,
    /// What the guest wrote to stdout (empty with [`Stdio::Inherit`]).
    pub stdout: Bytes,
    /// The last bytes of stderr (up to the stderr cap).
    pub stderr: Bytes,
    /// How long each phase took.
    pub timings: Timings,
    /// The largest size the guest's linear memory reached, in bytes.
    pub peak_memory: usize,
}

impl Outcome {
    /// An invocation that never started.
    pub fn not_run(failure: Failure) -> Self {
        Outcome {
            result: Err(failure),
            stdout: Bytes::new(),
            stderr: Bytes::new(),
            timings: Timings::default(),
            peak_memory: 0,
        }
    }
}

/// Every way an invocation can fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// `proc_exit` with a non-zero code.
    Exit(i32),
    /// A WebAssembly trap (or a host error raised as one).
    Trap(String),
    /// Linear memory growth (or initial size) refused by the cap.
    MemoryCap {
        /// The cap in bytes.
        cap: usize,
        /// The largest size the guest asked for, in bytes.
        wanted: usize,
    },
    /// The wall-clock deadline passed.
    Timeout(Duration),
    /// The invocation used up its CPU-time budget.
    CpuBudget(Duration),
    /// stdout went past its cap.
    OutputLimit {
        /// The stdout cap in bytes.
        cap: usize,
    },
    /// Stopped because the caller went away.
    Cancelled,
    /// Stopped (or never started) because the server is shutting down.
    Shutdown,
    /// The instance pool had no free slot (more concurrent instances than
    /// configured).
    PoolExhausted,
}

thread_local! {
    /// This thread's driver for async host calls: timers only.
    static DRIVER: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("cannot build a current-thread tokio runtime");
}

/// Runs `function` once with `inv`. Blocks the calling thread, which must
/// not be inside a tokio runtime.
pub fn invoke(
    engine: &WasmEngine,
    function: &Function,
    inv: Invocation,
    cancel: &CancelToken,
) -> Outcome {
    let signals = Signals {
        cancel,
        shutdown: &CancelToken::default(),
    };
    invoke_until(engine, function, inv, signals, Duration::ZERO)
}

/// What stops an invocation besides its deadline.
#[derive(Clone, Copy)]
pub struct Signals<'a> {
    /// Raised when the caller goes away ([`Failure::Cancelled`]).
    pub cancel: &'a CancelToken,
    /// Raised when the server shuts down ([`Failure::Shutdown`]).
    pub shutdown: &'a CancelToken,
}

/// [`invoke`], also stopped by `signals.shutdown`, and held back `hold_off`
/// before it starts (a function's CPU debt): the wait is at most the
/// timeout (then [`Failure::Timeout`]) and ends early on a stop signal.
pub fn invoke_until(
    engine: &WasmEngine,
    function: &Function,
    inv: Invocation,
    signals: Signals<'_>,
    hold_off: Duration,
) -> Outcome {
    DRIVER.with(|rt| {
        rt.block_on(async {
            let held = Instant::now();
            if let Err(stop) = hold(hold_off, inv.timeout, signals).await {
                return Outcome {
                    timings: Timings {
                        held: held.elapsed(),
                        ..Timings::default()
                    },
                    ..Outcome::not_run(stop_failure(stop, (inv.timeout, inv.cpu_budget)))
                };
            }
            let held = held.elapsed();
            // One read of the thread's CPU clock (a system call) starts both
            // the throttle and the call's own account.
            let cpu_start = thread_cpu_time();
            let mut inv = inv;
            if let Some(t) = &mut inv.throttle {
                t.start(cpu_start);
            }
            let mut outcome = dispatch(engine, function, inv, signals, cpu_start).await;
            outcome.timings.held = held;
            outcome
        })
    })
}

/// Debts shorter than this are waited out by sleeping the thread, to the
/// microsecond: tokio's timer fires on millisecond ticks and rounds every
/// sleep up to one, which turned a short call's 30 µs debt into a wait of
/// 1-2 ms (the tail of every tenant calling faster than its quota, and
/// less than its quota delivered). Such a wait sees a stop signal only at
/// its end: the invocation then does not start.
const SLEEP_THREAD_BELOW: Duration = Duration::from_millis(2);

/// Waits `hold_off` (a function's CPU debt, [`invoke_until`]), at most
/// `timeout`, ended early by a stop signal.
async fn hold(hold_off: Duration, timeout: Duration, signals: Signals<'_>) -> Result<(), Stop> {
    if hold_off.is_zero() {
        return Ok(());
    }
    if hold_off < SLEEP_THREAD_BELOW && hold_off < timeout {
        let stopped = || {
            if signals.shutdown.is_cancelled() {
                Err(Stop::Shutdown)
            } else if signals.cancel.is_cancelled() {
                Err(Stop::Cancelled)
            } else {
                Ok(())
            }
        };
        stopped()?;
        // This worker's own thread, with nothing else on its runtime.
        std::thread::sleep(hold_off);
        return stopped();
    }
    tokio::select! {
        biased;
        _ = signals.shutdown.cancelled() => Err(Stop::Shutdown),
        _ = signals.cancel.cancelled() => Err(Stop::Cancelled),
        _ = tokio::time::sleep(timeout) => Err(Stop::Timeout),
        _ = tokio::time::sleep(hold_off) => Ok(()),
    }
}

/// Runs the invocation by the kind of code it is; `cpu_start` is the
/// thread's CPU time as it starts.
async fn dispatch(
    engine: &WasmEngine,
    function: &Function,
    inv: Invocation,
    signals: Signals<'_>,
    cpu_start: Duration,
) -> Outcome {
    use crate::component::{command, guard, http};
    use crate::function::Code;
    let guard_signals = || guard::Signals {
        deadline: Instant::now() + inv.timeout,
        cancel: signals.cancel.clone(),
        shutdown: signals.shutdown.clone(),
        cpu_start,
        cpu_budget: inv.cpu_budget,
    };
    match &function.code {
        Code::Module(_) => run(engine, function, inv, signals, cpu_start).await,
        Code::Command(pre) => {
            let s = guard_signals();
            command::run(engine, function, pre, inv, s).await
        }
        Code::Http(pre) => {
            let s = guard_signals();
            http::run(engine, function, pre, inv, s).await
        }
    }
}

async fn run(
    engine: &WasmEngine,
    function: &Function,
    inv: Invocation,
    signals: Signals<'_>,
    cpu_start: Duration,
) -> Outcome {
    let Signals { cancel, shutdown } = signals;
    let (mut builder, stdout, stderr) = match wasi_builder(&inv, "a preview-1 module") {
        Ok(b) => b,
        Err(refused) => return Outcome::not_run(refused),
    };
    let mut wasi = builder.build_p1();
    WasiView::ctx(&mut wasi)
        .table
        .set_max_capacity(p1_table_capacity(inv.memory_cap));
    let host = Host {
        wasi,
        limits: MemoryCap::new(inv.memory_cap),
        throttle: inv.throttle,
        stopped: None,
    };

    let mut store = Store::new(&engine.engine, host);
    store.limiter(|h| &mut h.limits);
    let start = Instant::now();
    let deadline = start + inv.timeout;
    let (cancel2, shutdown2) = (cancel.clone(), shutdown.clone());
    let cpu_budget = inv.cpu_budget;
    let limits = (inv.timeout, inv.cpu_budget);
    // Checked at every epoch tick while the guest executes Wasm (a guest
    // waiting in a host call burns no CPU, so the budget needs no check
    // there).
    let stop_now = move || {
        if shutdown2.is_cancelled() {
            Some(Stop::Shutdown)
        } else if cancel2.is_cancelled() {
            Some(Stop::Cancelled)
        } else if Instant::now() >= deadline {
            Some(Stop::Timeout)
        } else if cpu_budget.is_some_and(|b| thread_cpu_time().saturating_sub(cpu_start) >= b) {
            Some(Stop::CpuBudget)
        } else {
            None
        }
    };
    store.epoch_deadline_callback(move |mut cx| {
        // A throttled guest sleeps off its CPU debt here, in slices, so a
        // stop signal or the deadline still ends it promptly.
        if let Some(t) = &mut cx.data_mut().throttle {
            t.check_until(deadline, || stop_now().is_some());
        }
        let Some(stop) = stop_now() else {
            return Ok(UpdateDeadline::Continue(1));
        };
        cx.data_mut().stopped = Some(stop);
        Err(wasmtime::Error::new(Stopped(stop)))
    });
    store.set_epoch_deadline(1);

    let mut timings = Timings::default();

    // When instantiation finished; the rest is execution.
    let instantiated: Cell<Option<Instant>> = Cell::new(None);
    let ran = {
        let guest = call_start(&mut store, function, &instantiated);
        tokio::pin!(guest);
        // Wins only while the guest waits in a host call: a guest executing
        // Wasm does not yield, and the epoch callback stops it instead.
        tokio::select! {
            biased;
            r = &mut guest => Ok(r),
            _ = shutdown.cancelled() => Err(Stop::Shutdown),
            _ = cancel.cancelled() => Err(Stop::Cancelled),
            _ = tokio::time::sleep_until(deadline.into()) => Err(Stop::Timeout),
        }
        // `guest` is dropped here: a suspended guest is unwound.
    };
    let end = Instant::now();
    if let Some(at) = instantiated.get() {
        timings.instantiate = at - start;
        timings.execute = end - at;
    }
    let result = match ran {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(classify(&store, e, stdout.as_ref(), limits)),
        Err(stop) => {
            store.data_mut().stopped = Some(stop);
            Err(stop_failure(stop, limits))
        }
    };
    timings.cpu = thread_cpu_time().saturating_sub(cpu_start);
    Outcome {
        result,
        stdout: stdout.map(|c| c.take()).unwrap_or_default(),
        stderr: stderr.map(|c| c.take()).unwrap_or_default(),
        timings,
        peak_memory: store.data().limits.peak,
    }
}

/// Instantiates and calls `_start`; `exit(0)` counts as success.
async fn call_start(
    store: &mut Store<Host>,
    function: &Function,
    instantiated: &Cell<Option<Instant>>,
) -> wasmtime::Result<()> {
    let crate::function::Code::Module(pre) = &function.code else {
        unreachable!("invoke_until runs only modules here");
    };
    let instance = pre.instantiate_async(&mut *store).await?;
    instantiated.set(Some(Instant::now()));
    let start = instance.get_typed_func::<(), ()>(&mut *store, "_start")?;
    match start.call_async(&mut *store, ()).await {
        Err(e) if matches!(e.downcast_ref::<I32Exit>(), Some(I32Exit(0))) => Ok(()),
        r => r,
    }
}

/// A preview-1 module's resources (its stdio and the pollables of a
/// `poll_oneoff`: a few hundred bytes of host memory each) are held in a
/// table that wasmtime lets grow to a million entries: a guest polling a
/// million clock subscriptions from a few MiB of its own memory would hold
/// hundreds of MiB of the host's. This many per byte of its Memory-Request
/// (generously: a pollable holds far less) keeps it within that.
const P1_HOST_BYTES_PER_ENTRY: usize = 4 << 10;

/// Fewest entries a preview-1 module's table may hold, however small its
/// Memory-Request (about 500 clock subscriptions in one poll).
const P1_MIN_TABLE_ENTRIES: usize = 1024;

/// How many resources a preview-1 invocation capped at `memory_cap` bytes
/// may hold at once; past it the host call traps ("resource table has no
/// free keys").
fn p1_table_capacity(memory_cap: usize) -> usize {
    (memory_cap / P1_HOST_BYTES_PER_ENTRY).max(P1_MIN_TABLE_ENTRIES)
}

/// A WASI builder with `inv`'s argv, environment and stdio: stdin from
/// its bytes, stdout captured up to its cap (past it the guest traps),
/// stderr keeping its tail. What modules and command components share;
/// `code` names the kind of code in the refusal of an HTTP request.
pub(crate) fn wasi_builder(
    inv: &Invocation,
    code: &str,
) -> Result<(WasiCtxBuilder, Option<Capture>, Option<Capture>), Failure> {
    let mut builder = WasiCtxBuilder::new();
    builder.args(&inv.argv);
    builder.envs(&inv.env);
    builder.max_random_size(random_cap(inv.memory_cap));
    let (stdout, stderr) = match &inv.stdio {
        Stdio::Captured {
            stdin,
            stdout_cap,
            stderr_cap,
        } => {
            let out = Capture::new(*stdout_cap, Overflow::Trap);
            let err = Capture::new(*stderr_cap, Overflow::KeepTail);
            builder
                .stdin(MemoryInputPipe::new(stdin.clone()))
                .stdout(out.clone())
                .stderr(err.clone());
            (Some(out), Some(err))
        }
        Stdio::Inherit => {
            builder.inherit_stdio();
            (None, None)
        }
        Stdio::Http(_) => return Err(Failure::Trap(format!("{code} takes no HTTP request"))),
    };
    Ok((builder, stdout, stderr))
}

/// The most random bytes one call may ask for: the host fills a buffer of
/// that size before it writes it into the guest (and before it looks at
/// whether the guest's memory holds it), and wasmtime's default is 64 MiB
/// a call. Held to the Memory-Request, a 1 MiB request cannot make the
/// host hold 64 MiB for it; past it the call traps ("requested len ...
/// exceeds limit ...").
pub(crate) fn random_cap(memory_cap: usize) -> u64 {
    memory_cap as u64
}

/// Decides which [`Failure`] an error from instantiate or `_start` is. Our
/// own reasons (deadline, cancel, output cap, memory cap) come first: the
/// error the guest surfaces after them (a trap, `exit(1)` from a failed
/// malloc) is a consequence.
fn classify(
    store: &Store<Host>,
    e: wasmtime::Error,
    stdout: Option<&Capture>,
    limits: (Duration, Option<Duration>),
) -> Failure {
    let host = store.data();
    if let Some(stop) = host.stopped {
        return stop_failure(stop, limits);
    }
    if let Some(out) = stdout.filter(|o| o.overflowed()) {
        return Failure::OutputLimit { cap: out.cap() };
    }
    if let Some(wanted) = host.limits.refused {
        return Failure::MemoryCap {
            cap: host.limits.cap_bytes,
            wanted,
        };
    }
    if let Some(I32Exit(code)) = e.downcast_ref::<I32Exit>() {
        return Failure::Exit(*code);
    }
    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return Failure::PoolExhausted;
    }
    let message = match e.downcast_ref::<Trap>() {
        Some(trap) => format!("{trap} ({e})"),
        None => format!("{e:#}"),
    };
    Failure::Trap(message)
}
