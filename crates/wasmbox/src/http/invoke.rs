//! One invocation: validate, admit, run on a worker, and turn the outcome
//! into a response (with its `Server-Timing`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response};
use wasmbox_admission::Resources;
use wasmbox_runtime::executor::Task;
use wasmbox_runtime::sandbox::{Stdio, Timings};
use wasmbox_runtime::{CancelToken, Failure, Function, FunctionName, Invocation};

use super::app::App;
use super::body::read_body;
use super::budget::Hold;
use super::compat::Phases;
use super::error::{ErrorKind, HttpError};
use super::handler;
use super::request::{parse_args, parse_resources};
use super::response::Body;

/// Counts a request in `in_flight` for as long as it lives.
struct InFlight<'a>(&'a AtomicUsize);
impl<'a> InFlight<'a> {
    fn enter(c: &'a AtomicUsize) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        InFlight(c)
    }
}
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Cancels the invocation if the request future is dropped (client gone).
struct CancelOnDrop(CancelToken);
impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Counts the request's outcome in the metrics exactly once: as
/// `client-gone` if the request future is dropped before it has one.
struct Outcome<'a> {
    app: &'a App,
    function: &'a str,
    counted: bool,
}
impl Outcome<'_> {
    fn count(mut self, outcome: &str) {
        self.app.metrics.count(self.function, outcome);
        self.counted = true;
    }
}
impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        if !self.counted {
            self.app
                .metrics
                .count(self.function, ErrorKind::ClientGone.as_str());
        }
    }
}

/// `GET|POST /{target}` (any method and `/{function}/sub/path` for a
/// wasi:http handler): checks the request, finds the function, runs it,
/// and counts the outcome in the metrics.
pub(super) async fn invoke(
    app: &Arc<App>,
    req: Request<Incoming>,
    target: &str,
) -> Result<Response<Body>, HttpError> {
    let received = Instant::now();
    let _in_flight = InFlight::enter(&app.in_flight);
    let get_or_post = matches!(*req.method(), Method::GET | Method::POST);
    if target.is_empty() && get_or_post {
        return Err(HttpError::new(
            ErrorKind::NoRoute,
            "no function in the path; /-/functions on the admin listener lists them",
        ));
    }
    // Only a wasi:http handler takes other methods and sub-paths: the
    // function is looked up first, and anything else gets what it gets
    // without handlers (405, or 400 for a path of several segments).
    let (name, function, sub_path, resources) = if get_or_post && !target.contains('/') {
        let name = FunctionName::parse(target)?;
        let resources = parse_resources(req.headers(), &app.limits)?;
        // The function first: its body is not held in memory while it is
        // looked up or compiled, and a request for a missing one is not
        // read at all.
        let function = app.registry.get(&name).await?;
        (name, function, "", resources)
    } else {
        let (name, function, sub_path) = handler::route(app, req.method(), target).await?;
        let resources = parse_resources(req.headers(), &app.limits)?;
        (name, function, sub_path, resources)
    };
    let outcome = Outcome {
        app,
        function: &function.file_name,
        counted: false,
    };
    let result = if function.is_http_handler() {
        handler::run(
            app,
            req,
            &name,
            function.clone(),
            sub_path,
            resources,
            received,
        )
        .await
    } else {
        let argv = parse_args(&name, req.uri().query());
        let method = req.method().clone();
        let (body, body_hold) = read_body(req, &app.body_rules, &app.body_budget).await?;
        let stdin = app.compat.stdin(&method, body)?;
        run(
            app,
            &name,
            function.clone(),
            resources,
            argv,
            (stdin, body_hold),
            received,
        )
        .await
    };
    outcome.count(match &result {
        Ok(_) => "ok",
        Err(e) => e.kind.as_str(),
    });
    result
}

/// Admits, runs on a worker, and turns the outcome into a response.
async fn run(
    app: &Arc<App>,
    name: &FunctionName,
    function: Arc<Function>,
    resources: Resources,
    argv: Vec<String>,
    (stdin, body_hold): (Bytes, Hold),
    received: Instant,
) -> Result<Response<Body>, HttpError> {
    // Reserve the declared cpu_quota and Memory-Request, or wait in this
    // function's queue (served fairly across functions). The reservation
    // travels with the task and is released on the worker once the guest
    // has stopped, whatever becomes of this request.
    let permit = app.admission.admit(&function.id, resources).await?;
    let waited = permit.waited;
    app.metrics.queue_wait.observe(waited.as_secs_f64());

    let limits = &app.limits;
    let cancel = CancelToken::default();
    let _cancel_on_drop = CancelOnDrop(cancel.clone());
    let task = Task {
        function,
        invocation: Invocation {
            argv,
            stdio: Stdio::Captured {
                stdin,
                stdout_cap: output_cap(limits.max_output_bytes, &resources),
                stderr_cap: limits.max_stderr_bytes,
            },
            memory_cap: (resources.memory_mb << 20) as usize,
            timeout: limits.timeout,
            throttle: None,
        },
        cpu_millis: resources.cpu_millis,
        cancel,
        // The reservation and the body's bytes (stdin) are released on the
        // worker once the guest has stopped.
        hold: Box::new((permit, body_hold)),
    };
    let ran = app.executor.run(task).await?;
    let (queued, isolation, outcome) = (ran.queued, ran.isolation, ran.outcome);

    if !outcome.stderr.is_empty() {
        tracing::info!(function = %name, stderr = %String::from_utf8_lossy(&outcome.stderr).trim_end(), "guest stderr");
    }
    let timing = PhaseTimes {
        queue: waited + queued,
        isolation,
        t: outcome.timings,
        total: received.elapsed(),
    };
    app.metrics
        .execution
        .observe((outcome.timings.instantiate + outcome.timings.execute).as_secs_f64());
    match outcome.result {
        Ok(()) => Ok(success(app, outcome.stdout, &timing)),
        Err(failure) => Err(failure_error(failure, &resources, &outcome.stderr, &timing)),
    }
}

pub(super) struct PhaseTimes {
    pub(super) queue: Duration,
    pub(super) isolation: Duration,
    pub(super) t: Timings,
    /// From the request's arrival in the handler to its outcome: the
    /// server-side time of the invocation, body read and lookup included.
    pub(super) total: Duration,
}

impl PhaseTimes {
    fn server_timing(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "queue;dur={:.4}, isolation;dur={:.4}, instantiate;dur={:.4}, execute;dur={:.4}, cpu;dur={:.4}, total;dur={:.4}",
            ms(self.queue),
            ms(self.isolation),
            ms(self.t.instantiate),
            ms(self.t.execute),
            ms(self.t.cpu),
            ms(self.total)
        )
    }

    /// The `Server-Timing` header, as (name, value).
    pub(super) fn header(&self) -> Option<(HeaderName, HeaderValue)> {
        let v = HeaderValue::from_str(&self.server_timing()).ok()?;
        Some((HeaderName::from_static("server-timing"), v))
    }
}

fn success(app: &App, stdout: Bytes, timing: &PhaseTimes) -> Response<Body> {
    let (body, content_type) = app.compat.success_body(stdout);
    // Charged until the last copy of the bytes hyper writes is dropped.
    let mut r = Response::new(Full::new(app.body_budget.charge(body)).into());
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some((k, v)) = timing.header() {
        h.insert(k, v);
    }
    let phases = Phases {
        isolation: timing.isolation,
        execution: timing.t.instantiate + timing.t.execute,
    };
    app.compat.add_headers(h, app, phases);
    r
}

/// The most stdout an invocation may write: `--max-output-bytes`, and no
/// more than its `Memory-Request`, so that the output held for responses
/// is bounded by what admission reserved.
pub(super) fn output_cap(max_output_bytes: usize, resources: &Resources) -> usize {
    max_output_bytes.min(usize::try_from(resources.memory_mb << 20).unwrap_or(usize::MAX))
}

/// The tail of stderr, for error messages.
fn stderr_tail(stderr: &[u8]) -> String {
    const TAIL: usize = 2048;
    let s = String::from_utf8_lossy(&stderr[stderr.len().saturating_sub(TAIL)..]);
    if s.trim().is_empty() {
        String::new()
    } else {
        format!("\n--- stderr (tail) ---\n{}", s.trim_end())
    }
}

pub(super) fn failure_error(
    f: Failure,
    res: &Resources,
    stderr: &[u8],
    timing: &PhaseTimes,
) -> HttpError {
    let mib = |b: usize| b.div_ceil(1 << 20);
    let e = match f {
        Failure::Exit(code) => {
            HttpError::new(ErrorKind::Exit, format!("function exited with status {code}{}", stderr_tail(stderr))).header("wasm-exit-code", code)
        }
        Failure::Trap(msg) => HttpError::new(ErrorKind::Trap, format!("function trapped: {msg}{}", stderr_tail(stderr))),
        Failure::MemoryCap { cap, wanted } => HttpError::new(
            ErrorKind::MemoryCap,
            format!(
                "function needed more memory than this request allows: it tried to grow its linear memory to {} MiB, above the cap of {} MiB set by Memory-Request: {}; send a larger Memory-Request{}",
                mib(wanted), mib(cap), res.memory_mb, stderr_tail(stderr)
            ),
        ),
        Failure::Timeout(after) => HttpError::new(ErrorKind::Timeout, format!("function did not finish within the {:.3} s time limit and was stopped", after.as_secs_f64())),
        Failure::OutputLimit { cap } => HttpError::new(ErrorKind::OutputLimit, format!("function wrote more than this request's output limit of {cap} bytes to stdout and was stopped (the limit is the smaller of --max-output-bytes and Memory-Request: {} MiB)", res.memory_mb)),
        Failure::Cancelled => HttpError::new(ErrorKind::ClientGone, "client went away; invocation stopped"),
        Failure::Shutdown => HttpError::new(ErrorKind::Draining, "the server is shutting down: its drain timeout passed and this invocation was stopped").header("retry-after", 1),
        Failure::PoolExhausted => HttpError::new(ErrorKind::Unavailable, "no free instance slot; retry").header("retry-after", 1),
    };
    let mut e = e;
    e.headers.extend(timing.header());
    e
}
