//! `wasmbox-runtime`: a thin facade over wasmtime for running many tenants'
//! WASI p1 command modules and WASI 0.2 components (wasi:cli commands,
//! wasi:http handlers; see [`component`]) in one process.
//!
//! One request, top to bottom:
//! 1. [`names::FunctionName::parse`] validates the name from the URL.
//! 2. [`registry::Registry::get`] finds the file in the functions directory and
//!    returns its compiled, cached [`function::Function`] (compiled once,
//!    single-flight; recompiled when the file changes).
//! 3. [`executor::Executor::run`] queues a [`executor::Task`] (the function,
//!    its invocation, the request's `cpu_quota`, its cancel signal and its
//!    admission reservation) for a dedicated OS worker thread, which holds
//!    itself to the quota (its `wasmbox-isolation` slot).
//! 4. On that thread [`sandbox::invoke_until`] builds a `Store` with the async
//!    WASI p1 host ([`store`]), the memory cap ([`limits`]), bounded
//!    stdout/stderr ([`capture`]), and calls `_start` under the wall-clock
//!    deadline and the stop signals ([`cancel`]), host calls included.
//! 5. The [`sandbox::Outcome`] carries stdout, the exit status and phase
//!    timings; the reservation is released once the guest has stopped.
//!
//! `unsafe` is denied everywhere but `registry::trusted`, the one place that
//! loads precompiled native code, and one system call in
//! `registry::background` (`sched_setscheduler`, which no safe crate here
//! wraps).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cancel;
pub mod capture;
pub mod component;
pub mod engine;
pub mod executor;
pub mod function;
pub mod limits;
pub mod names;
pub mod registry;
pub mod sandbox;
pub mod store;

pub use cancel::CancelToken;
pub use engine::{EngineConfig, EpochTicker, WasmEngine};
pub use executor::{Executor, ExecutorConfig};
pub use function::Function;
pub use names::FunctionName;
pub use registry::{LoadError, Registry, RegistryConfig};
pub use sandbox::{Failure, Invocation, Outcome};
