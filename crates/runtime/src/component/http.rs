//! Running a wasi:http handler component: the HTTP request goes in as a
//! wasi:http `incoming-request`; the response head the guest sets comes
//! back through [`HttpCall::respond`] (with the timings so far), and its
//! body streams from the guest while it keeps running on its worker. The
//! invocation's [`Outcome`] (delivered when the guest has stopped) says how
//! it ended.
//!
//! The head is held back while the guest keeps executing without waiting:
//! it goes out when the guest returns (after [`HttpCall::ended`], so a
//! short answer reaches the client's connection in one wake-up of its
//! task, with its body and its end), when the guest first waits in a host
//! call (its body is full, it sleeps, it fetches), or at the second epoch
//! tick (5 ms apart) after it was set, of a guest that computes on: held a
//! whole tick at least, so a head set just before a tick does not go out
//! on it while the guest is microseconds from its end. A guest that fails
//! while its head is held gets its failure as the answer (a 500 with the
//! trap, a 504, ...) instead of a head and a broken body.

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
pub use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
/// Why a request body failed, as the guest's input stream reports it.
pub use wasmtime_wasi_http::Error as BodyError;
use wasmtime_wasi_http::WasiHttpView;

use wasmbox_isolation::thread_cpu_time;

use super::guard::{classify, stop_failure, Signals};
use super::host::ComponentHost;
use crate::capture::{Capture, Overflow};
use crate::engine::WasmEngine;
use crate::function::Function;
use crate::sandbox::{Failure, Invocation, Outcome, Stdio, Timings};

/// What the guest answered: its response (head, and a body that streams),
/// or the error code it set instead.
pub type Answer = Result<hyper::Response<HyperOutgoingBody>, ErrorCode>;

/// The response head, when the guest set it.
pub struct Head {
    /// The guest's answer.
    pub answer: Answer,
    /// Instantiation, and execution until the head was set (with the CPU
    /// time used until then).
    pub timings: Timings,
    /// How long the head was held after the guest set it.
    pub held: Duration,
}

/// A request body as the guest reads it: frames that may still be
/// arriving from the client while the guest runs.
pub type RequestBody = UnsyncBoxBody<Bytes, BodyError>;

/// One HTTP request for a handler, and where its response head goes.
pub struct HttpCall {
    /// The request as the guest sees it: method, path (after the function's
    /// own segment) and query, headers (the host header gives the
    /// authority), body.
    pub request: http::Request<RequestBody>,
    /// Gets the head once the guest sets it; dropped unsent if it never
    /// does (the outcome says why).
    pub respond: tokio::sync::oneshot::Sender<Head>,
    /// Told whether the guest returned without failing, as soon as it has
    /// stopped (before its store is torn down and its outcome delivered):
    /// a body may end cleanly only then.
    pub ended: tokio::sync::oneshot::Sender<bool>,
    /// Most bytes of the guest's stdout and of its stderr kept for the log.
    pub log_cap: usize,
}

/// An [`HttpCall`] travelling inside an [`Invocation`] (which is `Clone`;
/// only one clone gets the call).
#[derive(Clone)]
pub struct HttpExchange(Arc<Mutex<Option<HttpCall>>>);

impl HttpExchange {
    /// Wraps `call`.
    pub fn new(call: HttpCall) -> Self {
        HttpExchange(Arc::new(Mutex::new(Some(call))))
    }

    fn take(&self) -> Option<HttpCall> {
        self.0.lock().ok()?.take()
    }
}

impl std::fmt::Debug for HttpExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpExchange")
    }
}

/// The response head the guest set, held until [`HeadGate::release`].
struct HeadGate {
    held: Mutex<Held>,
}

/// The head, when the guest set it and whether an epoch tick has passed
/// since; where it goes.
type Held = (
    Option<(Head, Instant, bool)>,
    Option<tokio::sync::oneshot::Sender<Head>>,
);

impl HeadGate {
    fn new(respond: tokio::sync::oneshot::Sender<Head>) -> Arc<Self> {
        Arc::new(HeadGate {
            held: Mutex::new((None, Some(respond))),
        })
    }

    fn hold(&self, head: Head) {
        if let Ok(mut held) = self.held.lock() {
            held.0 = Some((head, Instant::now(), false));
        }
    }

    /// Drops a head not sent yet: the guest failed before it went out, so
    /// its failure is the answer.
    fn discard(&self) {
        if let Ok(mut held) = self.held.lock() {
            if held.0.take().is_some() {
                held.1 = None;
            }
        }
    }

    /// An epoch tick: sends the head if a tick has passed since the guest
    /// set it (so it has been held a whole tick), else marks that one has.
    fn tick(&self) {
        if let Ok(mut held) = self.held.lock() {
            match &mut held.0 {
                Some((_, _, ticked)) if !*ticked => *ticked = true,
                _ => send(&mut held),
            }
        }
    }

    /// Sends the head if the guest has set it (once).
    fn release(&self) {
        if let Ok(mut held) = self.held.lock() {
            send(&mut held);
        }
    }
}

/// Sends the held head, if there is one, where it goes (once).
fn send(held: &mut Held) {
    if held.0.is_some() {
        if let (Some((mut head, set, _)), Some(respond)) = (held.0.take(), held.1.take()) {
            head.held = set.elapsed();
            let _ = respond.send(head);
        }
    }
}

/// Runs the handler once with the request in `inv`'s [`Stdio::Http`].
pub(crate) async fn run(
    engine: &WasmEngine,
    function: &Function,
    pre: &ProxyPre<ComponentHost>,
    inv: Invocation,
    signals: Signals,
) -> Outcome {
    let call = match &inv.stdio {
        Stdio::Http(exchange) => exchange.take(),
        _ => None,
    };
    let Some(call) = call else {
        return Outcome::not_run(Failure::Trap(
            "a wasi:http handler runs only for an HTTP request (serve it with `wasmbox serve`)"
                .into(),
        ));
    };
    let stdout = Capture::new(call.log_cap, Overflow::KeepTail);
    let stderr = Capture::new(call.log_cap, Overflow::KeepTail);
    let wasi = WasiCtxBuilder::new()
        .args(&inv.argv[..inv.argv.len().min(1)])
        .envs(&inv.env)
        .stdin(MemoryInputPipe::new(Bytes::new()))
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .max_random_size(crate::sandbox::random_cap(inv.memory_cap))
        .build();
    let mut store = ComponentHost::store(engine, function, wasi, &inv, signals.deadline);
    signals.arm(&mut store);

    let start = Instant::now();
    let cpu_start = signals.cpu_start;
    let instantiated: Arc<OnceLock<Instant>> = Arc::default();
    let req = match store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, call.request)
    {
        Ok(r) => r,
        Err(e) => {
            return Outcome::not_run(Failure::Trap(format!("bad request for the guest: {e:#}")))
        }
    };
    let gate = HeadGate::new(call.respond);
    let (held, at) = (gate.clone(), instantiated.clone());
    let out = store
        .data_mut()
        .http()
        .new_response_outparam_from_callback(move |answer| {
            let timings = timings(start, at.get().copied(), cpu_start);
            held.hold(Head {
                answer,
                timings,
                held: Duration::ZERO,
            });
        });
    let ticked = gate.clone();
    store.data_mut().on_tick = Some(Box::new(move || ticked.tick()));
    let out = match out {
        Ok(o) => o,
        Err(e) => return Outcome::not_run(Failure::Trap(format!("{e:#}"))),
    };
    let ran = {
        let store = &mut store;
        let at = instantiated.clone();
        let mut guest = std::pin::pin!(async move {
            let proxy = pre.instantiate_async(&mut *store).await?;
            let _ = at.set(Instant::now());
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut *store, req, out)
                .await
        });
        // The guest waits in a host call: the head goes out now.
        let waiting = std::future::poll_fn(|cx| {
            let polled = guest.as_mut().poll(cx);
            if polled.is_pending() {
                gate.release();
            }
            polled
        });
        signals.race(waiting).await
    };
    let t = timings(start, instantiated.get().copied(), cpu_start);
    let result = match ran {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => match classify(store.data(), e, None, (inv.timeout, inv.cpu_budget)) {
            None => Ok(()),
            Some(f) => Err(f),
        },
        Err(stop) => {
            store.data_mut().stopped = Some(stop);
            Err(stop_failure(stop, (inv.timeout, inv.cpu_budget)))
        }
    };
    // The end first: the head's wake-up finds the body complete.
    let _ = call.ended.send(result.is_ok());
    match result {
        Ok(()) => gate.release(),
        Err(_) => gate.discard(),
    }
    // The store (and with it the response outparam, if the guest never set
    // it) goes before the outcome is delivered.
    let peak_memory = store.data().limits.peak;
    drop(store);
    Outcome {
        result,
        stdout: stdout.take(),
        stderr: stderr.take(),
        timings: t,
        peak_memory,
    }
}

fn timings(start: Instant, instantiated: Option<Instant>, cpu_start: Duration) -> Timings {
    let mut t = Timings {
        cpu: thread_cpu_time().saturating_sub(cpu_start),
        ..Timings::default()
    };
    if let Some(at) = instantiated {
        t.instantiate = at - start;
        t.execute = at.elapsed();
    }
    t
}
