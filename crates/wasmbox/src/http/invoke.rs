//! One invocation: validate, admit, run on a worker, and turn the outcome
//! into a response (with its `Server-Timing`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response};
use wasmbox_admission::{FunctionKey, Permit, Resources};
use wasmbox_runtime::executor::{ExecError, Executor, Ran, Task};
use wasmbox_runtime::sandbox::{Stdio, Timings};
use wasmbox_runtime::{CancelToken, Failure, Function, FunctionName, Invocation};

use super::app::App;
use super::body::read_body;
use super::budget::Hold;
use super::compat::Phases;
use super::error::{ErrorKind, HttpError};
use super::function_config::{effective, Effective};
use super::handler;
use super::request::{parse_args, parse_resources};
use super::response::Body;
use crate::accounting::request_id::request_id;
use crate::accounting::Pending;

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

/// When a request arrived, and how long finding its function and its
/// settings took (the lookup, loading or compiling the function when it
/// was not loaded, and looking at its manifest): the `load` phase of its
/// `Server-Timing`.
#[derive(Clone, Copy)]
pub(super) struct Arrival {
    pub(super) at: Instant,
    pub(super) load: Duration,
}

impl Arrival {
    /// The `Server-Timing` phases of this request's invocation, its
    /// `total` counted up to now.
    pub(super) fn phases(self, queue: Duration, isolation: Duration, t: Timings) -> PhaseTimes {
        PhaseTimes {
            load: self.load,
            queue,
            isolation,
            t,
            total: self.at.elapsed(),
        }
    }
}

/// `GET|POST /{target}` (any method and `/{function}/sub/path` for a
/// wasi:http handler): checks the request, finds the function, runs it,
/// and records its usage (every request, whatever became of it: see
/// `crate::accounting`). The response carries `X-Request-Id`.
pub(super) async fn invoke(
    app: &Arc<App>,
    req: Request<Incoming>,
    target: &str,
) -> Result<Response<Body>, HttpError> {
    let received = Instant::now();
    let _in_flight = InFlight::enter(&app.in_flight);
    let request_id = request_id(req.headers());
    let usage = Pending::new(app.accounting.clone(), request_id.clone(), received);
    // Dropped before `finish` (the client went away): recorded as
    // client-gone, with the worker's figures once it has stopped.
    let _abandon = usage.guard();
    let (response, outcome) = match checked_run(app, req, target, (received, &usage)).await {
        Ok(r) => (r, "ok"),
        Err(e) => {
            let kind = e.kind.as_str();
            (super::response::error_response(app, e), kind)
        }
    };
    let status = response.status().as_u16();
    let bytes_out = response.body().size_hint().exact().unwrap_or(0);
    usage.finish(status, outcome, bytes_out);
    let mut response = response;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-request-id"), v);
    }
    Ok(response)
}

async fn checked_run(
    app: &Arc<App>,
    req: Request<Incoming>,
    target: &str,
    (received, usage): (Instant, &Pending),
) -> Result<Response<Body>, HttpError> {
    let looking = Instant::now();
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
    let (name, function, sub_path, server_resources) = if get_or_post && !target.contains('/') {
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
    usage.update(|u| u.function = Some(function.file_name.clone()));
    if let Some(took) = function.take_load_time() {
        app.accounting.record_compile(&function.file_name, took);
    }
    let config = effective(
        &app.manifests,
        &function,
        req.headers(),
        &app.limits,
        server_resources,
    )
    .await?;
    let arrival = Arrival {
        at: received,
        load: looking.elapsed(),
    };
    if function.is_http_handler() {
        let route = handler::Route {
            name: &name,
            function,
            sub_path,
        };
        return handler::run(app, req, route, config, (arrival, usage)).await;
    }
    let query_args = parse_args(&name, req.uri().query());
    let method = req.method().clone();
    let (body, body_hold) = read_body(req, &app.body_rules, &app.body_budget).await?;
    usage.update(|u| u.bytes_in = body.len() as u64);
    let stdin = app.compat.stdin(&method, body)?;
    // argv[0], the manifest's fixed args, then the query's.
    let mut argv = Vec::with_capacity(query_args.len() + config.args.len());
    let mut query_args = query_args.into_iter();
    argv.extend(query_args.next());
    argv.extend(config.args.iter().cloned());
    argv.extend(query_args);
    run(
        app,
        &name,
        function,
        config,
        argv,
        (stdin, body_hold),
        (arrival, usage),
    )
    .await
}

/// Admits, runs on a worker, and turns the outcome into a response.
async fn run(
    app: &Arc<App>,
    name: &FunctionName,
    function: Arc<Function>,
    config: Effective,
    argv: Vec<String>,
    (stdin, body_hold): (Bytes, Hold),
    (arrival, usage): (Arrival, &Pending),
) -> Result<Response<Body>, HttpError> {
    let resources = config.resources;
    let key = function.id.clone();
    let cancel = CancelToken::default();
    let _cancel_on_drop = CancelOnDrop(cancel.clone());
    let task = Task {
        function,
        invocation: Invocation {
            argv,
            env: config.env,
            stdio: Stdio::Captured {
                stdin,
                stdout_cap: output_cap(config.max_output_bytes, &resources),
                stderr_cap: config.max_stderr_bytes,
            },
            memory_cap: (resources.memory_mb << 20) as usize,
            timeout: config.timeout,
            cpu_budget: config.cpu_budget,
            throttle: None,
        },
        cpu_millis: resources.cpu_millis,
        cancel,
        // The reservation, once admitted, and the body's bytes.
        hold: Box::new(()),
    };
    let rx = admit_and_run(app, (&key, resources), task, body_hold, usage).await?;
    let (waited, ran) = app.end_poll.wait(rx, &app.in_flight).await.ok_or_else(|| {
        HttpError::new(
            ErrorKind::Internal,
            "internal error: the invocation's result was lost",
        )
    })?;
    let Ran {
        queued,
        isolation,
        outcome,
    } = ran?;

    if !outcome.stderr.is_empty() {
        // Quoted and escaped (`?`): the guest's newlines cannot start lines
        // of the server's own in its log.
        tracing::info!(function = %name, stderr = ?String::from_utf8_lossy(&outcome.stderr).trim_end(), "guest stderr");
    }
    let timing = arrival.phases(
        waited + queued,
        // Applying the quota, and any wait for the function's CPU debt.
        isolation + outcome.timings.held,
        outcome.timings,
    );
    app.metrics
        .execution
        .observe((outcome.timings.instantiate + outcome.timings.execute).as_secs_f64());
    match outcome.result {
        Ok(()) => Ok(success(app, outcome.stdout, &timing)),
        Err(failure) => Err(failure_error(failure, &resources, &outcome.stderr, &timing)),
    }
}

/// Reserves the declared cpu_quota and Memory-Request for `key`, or waits
/// in that function's queue (served fairly across functions); resolves once
/// admitted. The task then goes to the workers from the thread that let it
/// in: a queued call starts from the worker whose call ended, which takes
/// it next, with no round trip through the request's task. The reservation
/// and `hold` (the body's bytes) travel with the task and are released on
/// the worker once the guest has stopped, whatever becomes of the request.
/// The receiver gets the time waited for admission and the result, sent
/// from the worker (see [`run_billed`]).
pub(super) async fn admit_and_run(
    app: &Arc<App>,
    (key, resources): (&FunctionKey, Resources),
    mut task: Task,
    hold: impl Send + 'static,
    usage: &Pending,
) -> Result<Ended, HttpError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let start = {
        let (app, usage) = (app.clone(), usage.clone());
        move |permit: Permit| {
            let (waited, admitted) = (permit.waited, Instant::now());
            // Before the worker adds its own queue time to it.
            usage.update(|u| u.queue = waited);
            app.metrics.queue_wait.observe(waited.as_secs_f64());
            task.hold = Box::new((permit, hold));
            let reply = move |ran| {
                let _ = tx.send((waited, ran));
            };
            run_billed(&app.executor, task, &usage, (resources, admitted), reply);
        }
    };
    app.admission.admit_then(key, resources, start).await?;
    Ok(rx)
}

/// Where an admitted invocation's end arrives: the time it waited for
/// admission, and what became of it.
pub(super) type Ended = tokio::sync::oneshot::Receiver<(Duration, Result<Ran, ExecError>)>;

/// Runs `task` on a worker and hands its result to `reply` there, once the
/// request's usage figures are filled in from it: they are billed when the
/// guest stops, even if the request is dropped meanwhile (client gone: the
/// guest is stopped by its cancel, and its CPU is still counted) or has
/// answered already (a wasi:http handler streaming its body). `admitted`
/// is when its reservation was granted.
fn run_billed(
    executor: &Executor,
    task: Task,
    usage: &Pending,
    (resources, admitted): (Resources, Instant),
    reply: impl FnOnce(Result<Ran, ExecError>) + Send + 'static,
) {
    let pending = usage.clone();
    pending.worker_started();
    executor.run_then(task, move |ran| {
        pending.worker_done(|u| {
            u.memory_mb_seconds = resources.memory_mb as f64 * admitted.elapsed().as_secs_f64();
            if let Ok(ran) = &ran {
                u.ran = true;
                u.cpu = ran.outcome.timings.cpu;
                u.peak_memory = ran.outcome.peak_memory;
                u.queue += ran.queued;
                u.failure = ran
                    .outcome
                    .result
                    .as_ref()
                    .err()
                    .map(|f| failure_kind(f).as_str());
            }
        });
        reply(ran);
    });
}

/// A duration written as milliseconds with four decimals, in integer
/// arithmetic: float formatting at a fixed precision (Grisu, falling back
/// to Dragon4) showed up at about 1 % of a hello request's server CPU.
struct Ms(Duration);

impl std::fmt::Display for Ms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tenths of a microsecond, rounded to nearest.
        let tenths = (self.0.as_nanos() + 50) / 100;
        write!(f, "{}.{:04}", tenths / 10_000, tenths % 10_000)
    }
}

pub(super) struct PhaseTimes {
    /// Finding the function: [`Arrival::load`].
    pub(super) load: Duration,
    pub(super) queue: Duration,
    pub(super) isolation: Duration,
    pub(super) t: Timings,
    /// From the request's arrival in the handler to its outcome: the
    /// server-side time of the invocation, body read and lookup included.
    pub(super) total: Duration,
}

impl PhaseTimes {
    /// The `Server-Timing` header, as (name, value). Written straight into
    /// the value's own buffer (one allocation, no copy).
    pub(super) fn header(&self) -> Option<(HeaderName, HeaderValue)> {
        use std::fmt::Write as _;
        let mut v = bytes::BytesMut::with_capacity(160);
        write!(
            v,
            "load;dur={}, queue;dur={}, isolation;dur={}, instantiate;dur={}, execute;dur={}, cpu;dur={}, total;dur={}",
            Ms(self.load),
            Ms(self.queue),
            Ms(self.isolation),
            Ms(self.t.instantiate),
            Ms(self.t.execute),
            Ms(self.t.cpu),
            Ms(self.total)
        )
        .ok()?;
        let v = HeaderValue::from_maybe_shared(v.freeze()).ok()?;
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

/// The `Wasmbox-Error` kind of a guest's failure.
pub(super) fn failure_kind(f: &Failure) -> ErrorKind {
    match f {
        Failure::Exit(_) => ErrorKind::Exit,
        Failure::Trap(_) => ErrorKind::Trap,
        Failure::MemoryCap { .. } => ErrorKind::MemoryCap,
        Failure::Timeout(_) => ErrorKind::Timeout,
        Failure::CpuBudget(_) => ErrorKind::CpuBudget,
        Failure::OutputLimit { .. } => ErrorKind::OutputLimit,
        Failure::Cancelled => ErrorKind::ClientGone,
        Failure::Shutdown => ErrorKind::Draining,
        Failure::PoolExhausted => ErrorKind::Unavailable,
    }
}

pub(super) fn failure_error(
    f: Failure,
    res: &Resources,
    stderr: &[u8],
    timing: &PhaseTimes,
) -> HttpError {
    let mib = |b: usize| b.div_ceil(1 << 20);
    let kind = failure_kind(&f);
    let message = match &f {
        Failure::Exit(code) => format!("function exited with status {code}{}", stderr_tail(stderr)),
        Failure::Trap(msg) => format!("function trapped: {msg}{}", stderr_tail(stderr)),
        Failure::MemoryCap { cap, wanted } => format!(
            "function needed more memory than this request allows: it tried to grow its linear memory to {} MiB, above the cap of {} MiB set by Memory-Request: {}; send a larger Memory-Request{}",
            mib(*wanted), mib(*cap), res.memory_mb, stderr_tail(stderr)
        ),
        Failure::Timeout(after) => format!("function did not finish within the {:.3} s time limit and was stopped", after.as_secs_f64()),
        Failure::CpuBudget(budget) => format!("function used up its CPU-time budget of {} ms (limits.cpu_budget_ms in its manifest) and was stopped{}", budget.as_millis(), stderr_tail(stderr)),
        Failure::OutputLimit { cap } => format!("function wrote more than this request's output limit of {cap} bytes to stdout and was stopped (the limit is the smaller of --max-output-bytes and Memory-Request: {} MiB)", res.memory_mb),
        Failure::Cancelled => "client went away; invocation stopped".into(),
        Failure::Shutdown => "the server is shutting down: its drain timeout passed and this invocation was stopped".into(),
        Failure::PoolExhausted => "no free instance slot; retry".into(),
    };
    let e = HttpError::new(kind, message);
    let mut e = match f {
        Failure::Exit(code) => e.header("wasm-exit-code", code),
        Failure::Shutdown | Failure::PoolExhausted => e.header("retry-after", 1),
        _ => e,
    };
    e.headers.extend(timing.header());
    e
}

#[cfg(test)]
mod tests {
    use super::Ms;
    use std::time::Duration;

    #[test]
    fn milliseconds_have_four_decimals_rounded() {
        let ms = |ns: u64| Ms(Duration::from_nanos(ns)).to_string();
        assert_eq!(ms(0), "0.0000");
        assert_eq!(ms(1_234_560), "1.2346");
        assert_eq!(ms(49), "0.0000");
        assert_eq!(ms(50), "0.0001");
        assert_eq!(ms(68_000), "0.0680");
        assert_eq!(ms(12_345_678_901), "12345.6789");
    }
}
