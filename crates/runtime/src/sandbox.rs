//! One invocation: a fresh `Store` with WASI p1, the memory cap, bounded
//! stdout/stderr and a wall-clock deadline; instantiate from the cached
//! `InstancePre`, call `_start`, classify what happened.
//!
//! Runs on a dedicated worker thread (see [`crate::executor`]), never on a
//! tokio worker: the sync WASI p1 host calls `block_on` internally.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use wasmbox_isolation::{thread_cpu_time, Throttle};

use crate::capture::{Capture, Overflow};
use crate::engine::WasmEngine;
use crate::limits::MemoryCap;
use crate::registry::Function;

/// The store's data: WASI state, the memory cap, and why we stopped the guest
/// (if we did).
pub struct Host {
    pub wasi: WasiP1Ctx,
    pub limits: MemoryCap,
    /// Userspace CPU budget (throttle mode), checked at every epoch tick.
    throttle: Option<Throttle>,
    stopped: Option<Stop>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Timeout,
    Cancelled,
}

#[derive(Debug, thiserror::Error)]
#[error("invocation stopped by the host: {0:?}")]
struct Stopped(Stop);

/// Where the guest's stdio goes.
#[derive(Debug, Clone)]
pub enum Stdio {
    /// stdin from memory, stdout/stderr captured up to their caps (server).
    Captured {
        stdin: Bytes,
        stdout_cap: usize,
        stderr_cap: usize,
    },
    /// The process's own stdio (`wasmbox run`).
    Inherit,
}

/// Everything one invocation needs besides the function itself.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// argv, including `argv[0]` (the function name).
    pub argv: Vec<String>,
    pub stdio: Stdio,
    /// Linear-memory cap in bytes.
    pub memory_cap: usize,
    /// Wall-clock limit for instantiate + run.
    pub timeout: Duration,
    /// CPU budget enforced from inside the invocation (throttle mode); cgroup
    /// modes enforce the quota in the kernel and pass `None`.
    pub throttle: Option<Throttle>,
}

/// Set from another thread to stop a running invocation at the next epoch
/// tick (the HTTP client went away).
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed)
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// How long each phase took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    pub instantiate: Duration,
    pub execute: Duration,
    /// CPU time the worker thread used for instantiate + execute.
    pub cpu: Duration,
}

/// The result of one invocation: what came out, and how it ended.
#[derive(Debug)]
pub struct Outcome {
    pub result: Result<(), Failure>,
    pub stdout: Bytes,
    /// The last bytes of stderr (up to the stderr cap).
    pub stderr: Bytes,
    pub timings: Timings,
}

/// Every way an invocation can fail. The server maps each to its own status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// `proc_exit` with a non-zero code.
    Exit(i32),
    /// A WebAssembly trap (or a host error raised as one).
    Trap(String),
    /// Linear memory growth (or initial size) refused by the cap.
    MemoryCap { cap: usize, wanted: usize },
    /// The wall-clock deadline passed.
    Timeout(Duration),
    /// stdout went past its cap.
    OutputLimit { cap: usize },
    /// Stopped because the caller went away.
    Cancelled,
    /// The instance pool had no free slot (more concurrent instances than
    /// configured).
    PoolExhausted,
}

/// Runs `function` once with `inv`. Blocks the calling thread.
pub fn invoke(
    engine: &WasmEngine,
    function: &Function,
    inv: Invocation,
    cancel: &CancelToken,
) -> Outcome {
    let mut builder = WasiCtxBuilder::new();
    builder.args(&inv.argv);
    let (stdout, stderr) = match inv.stdio {
        Stdio::Captured {
            stdin,
            stdout_cap,
            stderr_cap,
        } => {
            let out = Capture::new(stdout_cap, Overflow::Trap);
            let err = Capture::new(stderr_cap, Overflow::KeepTail);
            builder
                .stdin(MemoryInputPipe::new(stdin))
                .stdout(out.clone())
                .stderr(err.clone());
            (Some(out), Some(err))
        }
        Stdio::Inherit => {
            builder.inherit_stdio();
            (None, None)
        }
    };
    let host = Host {
        wasi: builder.build_p1(),
        limits: MemoryCap::new(inv.memory_cap),
        throttle: inv.throttle,
        stopped: None,
    };

    let mut store = Store::new(&engine.engine, host);
    store.limiter(|h| &mut h.limits);
    let start = Instant::now();
    let cpu_start = thread_cpu_time();
    let deadline = start + inv.timeout;
    let cancel = cancel.clone();
    // Checked at every epoch tick, on this thread.
    store.epoch_deadline_callback(move |mut cx| {
        if let Some(t) = &mut cx.data_mut().throttle {
            t.check(deadline);
        }
        let stop = if cancel.is_cancelled() {
            Stop::Cancelled
        } else if Instant::now() >= deadline {
            Stop::Timeout
        } else {
            return Ok(UpdateDeadline::Continue(1));
        };
        cx.data_mut().stopped = Some(stop);
        Err(wasmtime::Error::new(Stopped(stop)))
    });
    store.set_epoch_deadline(1);

    let mut timings = Timings::default();
    let result = match function.pre.instantiate(&mut store) {
        Err(e) => Err(classify(&store, e, stdout.as_ref(), inv.timeout)),
        Ok(instance) => {
            timings.instantiate = start.elapsed();
            let run_start = Instant::now();
            let r = match instance.get_typed_func::<(), ()>(&mut store, "_start") {
                Ok(f) => f.call(&mut store, ()),
                Err(e) => Err(e),
            };
            timings.execute = run_start.elapsed();
            r.or_else(|e| match e.downcast_ref::<I32Exit>() {
                Some(I32Exit(0)) => Ok(()),
                _ => Err(e),
            })
            .map_err(|e| classify(&store, e, stdout.as_ref(), inv.timeout))
        }
    };
    timings.cpu = thread_cpu_time().saturating_sub(cpu_start);
    Outcome {
        result,
        stdout: stdout.map(|c| c.take()).unwrap_or_default(),
        stderr: stderr.map(|c| c.take()).unwrap_or_default(),
        timings,
    }
}

/// Decides which [`Failure`] an error from instantiate or `_start` is. Our
/// own reasons (deadline, cancel, output cap, memory cap) come first: the
/// error the guest surfaces after them (a trap, `exit(1)` from a failed
/// malloc) is a consequence.
fn classify(
    store: &Store<Host>,
    e: wasmtime::Error,
    stdout: Option<&Capture>,
    timeout: Duration,
) -> Failure {
    let host = store.data();
    match host.stopped {
        Some(Stop::Timeout) => return Failure::Timeout(timeout),
        Some(Stop::Cancelled) => return Failure::Cancelled,
        None => {}
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
