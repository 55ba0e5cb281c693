//! The wasi:http path: a request for a handler component reaches it as an
//! HTTP request (method, the path after `/<function>`, query, headers
//! without hop-by-hop ones and without wasmbox's own resource headers,
//! body), admitted and run on a worker like any invocation; the guest's
//! status, headers and body are the response, the body streamed while the
//! guest runs.
//!
//! The request body streams to the guest past its first 64 KiB
//! (handler_body.rs), under the same limits as a command's stdin
//! (`--max-body-bytes`, `--body-timeout`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, CONNECTION, HOST};
use hyper::{Request, Response};
use wasmbox_admission::Resources;
use wasmbox_runtime::component::http::{Head, HttpCall, HttpExchange};
use wasmbox_runtime::executor::{ExecError, Ran, Task};
use wasmbox_runtime::sandbox::Stdio;
use wasmbox_runtime::{CancelToken, Function, FunctionName, Invocation, LoadError};

use super::app::App;
use super::error::{ErrorKind, HttpError};
use super::function_config::Effective;
use super::handler_body::{self, BodyFault};
use super::invoke::{failure_error, output_cap, run_billed, PhaseTimes};
use super::response::Body;
use super::stream::Streamed;
use crate::accounting::Pending;

/// Headers never passed to a handler: hop-by-hop (RFC 9110 section 7.6.1)
/// and wasmbox's own resource headers.
const DROPPED: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "memory-request",
    "cpu_quota",
    "cpu-quota",
];

/// The headers a handler sees: `headers` without [`DROPPED`] and without
/// those the `Connection` header names; a host header always (the
/// request's authority).
fn guest_headers(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::with_capacity(headers.len());
    for (k, v) in headers {
        let n = k.as_str();
        if !DROPPED.contains(&n) && !named.iter().any(|t| t == n) {
            out.append(k.clone(), v.clone());
        }
    }
    if !out.contains_key(HOST) {
        out.insert(HOST, HeaderValue::from_static("localhost"));
    }
    out
}

/// Which handler a request reached, and the path it asked of it.
pub(super) struct Route<'a> {
    pub name: &'a FunctionName,
    pub function: Arc<Function>,
    /// What follows `/<function>` (no leading slash).
    pub sub_path: &'a str,
}

/// Runs the handler for `req` with the function's effective settings
/// (its manifest applied to the request's headers).
pub(super) async fn run(
    app: &Arc<App>,
    req: Request<Incoming>,
    route: Route<'_>,
    config: Effective,
    (received, usage): (Instant, &Pending),
) -> Result<Response<Body>, HttpError> {
    let Route {
        name,
        function,
        sub_path,
    } = route;
    let resources = config.resources;
    let mut target = format!("/{sub_path}");
    if let Some(q) = req.uri().query() {
        target.push('?');
        target.push_str(q);
    }
    let method = req.method().clone();
    let headers = guest_headers(req.headers());
    let fault = BodyFault::default();
    let rules = (&app.body_rules, &app.body_budget);
    let body = handler_body::read(req, rules, usage, &fault).await?;
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = target.parse().map_err(|e| {
        HttpError::new(
            ErrorKind::BadTarget,
            format!("request target '{target}': {e}"),
        )
    })?;
    *request.headers_mut() = headers;

    let admitting = Instant::now();
    let permit = app.admission.admit(&function.id, resources).await?;
    let waited = permit.waited;
    let admitted = Instant::now();
    usage.update(|u| u.queue = admitting.elapsed());
    app.metrics.queue_wait.observe(waited.as_secs_f64());

    let cancel = CancelToken::default();
    let armed = Armed(Some(cancel.clone()));
    let (respond, head) = tokio::sync::oneshot::channel();
    let (ended, ended_well) = tokio::sync::oneshot::channel();
    let task = Task {
        function,
        invocation: Invocation {
            argv: vec![name.to_string()],
            stdio: Stdio::Http(HttpExchange::new(HttpCall {
                request,
                respond,
                ended,
                log_cap: config.max_stderr_bytes,
            })),
            memory_cap: (resources.memory_mb << 20) as usize,
            timeout: config.timeout,
            throttle: None,
            env: config.env,
            cpu_budget: config.cpu_budget,
        },
        cpu_millis: resources.cpu_millis,
        cancel: cancel.clone(),
        hold: Box::new(permit),
    };
    let submitted = Instant::now();
    // Billed when the guest stops, after the answer has gone out.
    let rx = run_billed(app, task, usage, (resources, admitted));
    let mut ran = Box::pin(async move { rx.await.unwrap_or(Err(ExecError::Panicked)) });
    let head = tokio::select! {
        biased;
        head = head => head.ok(),
        ran = &mut ran => return answer_without_head(name, ran, &fault, &resources, (waited, received)),
    };
    let Some(Head {
        answer,
        timings,
        held,
    }) = head
    else {
        return answer_without_head(name, ran.await, &fault, &resources, (waited, received));
    };
    // The guest goes on writing its body; its outcome is logged when it
    // comes (after its store is torn down).
    let function_name = name.to_string();
    tokio::spawn(async move {
        if let Ok(ran) = ran.await {
            log_outcome(&function_name, &ran);
        }
    });
    let at_head = submitted.elapsed();
    let timing = PhaseTimes {
        // Waiting for admission and a worker, and applying the CPU quota
        // (not the guest's time with its head held after it set it).
        queue: waited + at_head.saturating_sub(timings.instantiate + timings.execute + held),
        isolation: Duration::ZERO,
        t: timings,
        total: received.elapsed(),
    };
    app.metrics
        .execution
        .observe((timings.instantiate + timings.execute).as_secs_f64());
    let response = answer.map_err(|code| {
        let mut e = HttpError::new(
            ErrorKind::Trap,
            format!("the handler answered with an error instead of a response: {code:?}"),
        );
        e.headers.extend(timing.header());
        e
    })?;
    // From here the body owns the cancel: dropped before its end (client
    // gone) or past the cap, it stops the guest.
    armed.disarm();
    let cap = output_cap(config.max_output_bytes, &resources);
    let (mut parts, body) = response.into_parts();
    if let Some((k, v)) = timing.header() {
        parts.headers.insert(k, v);
    }
    let body = Body::Stream(Box::new(Streamed::new(body, cap, cancel, ended_well)));
    Ok(Response::from_parts(parts, body))
}

/// The guest stopped without setting a response: what its request body
/// failed on (the guest could not read it), else its failure, or 500 if it
/// returned without answering.
fn answer_without_head(
    name: &FunctionName,
    ran: Result<Ran, ExecError>,
    fault: &BodyFault,
    resources: &Resources,
    (waited, received): (Duration, Instant),
) -> Result<Response<Body>, HttpError> {
    let ran = ran?;
    log_outcome(name.as_str(), &ran);
    let timing = PhaseTimes {
        queue: waited + ran.queued,
        isolation: ran.isolation,
        t: ran.outcome.timings,
        total: received.elapsed(),
    };
    if let Some(mut e) = fault.take() {
        e.headers.extend(timing.header());
        return Err(e);
    }
    let failure = match ran.outcome.result {
        Err(f) => f,
        Ok(()) => {
            let mut e = HttpError::new(
                ErrorKind::Trap,
                "the handler returned without setting a response (response-outparam.set was never called)",
            );
            e.headers.extend(timing.header());
            return Err(e);
        }
    };
    Err(failure_error(
        failure,
        resources,
        &ran.outcome.stderr,
        &timing,
    ))
}

fn log_outcome(function: &str, ran: &Ran) {
    let o = &ran.outcome;
    for (stream, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        if !bytes.is_empty() {
            tracing::info!(function, stream, output = %String::from_utf8_lossy(bytes).trim_end(), "guest output");
        }
    }
    if let Err(f) = &o.result {
        tracing::info!(function, failure = ?f, "handler invocation failed");
    }
}

/// Stops the invocation if dropped while armed: the request future was
/// dropped (client gone) before the response head.
struct Armed(Option<CancelToken>);

impl Armed {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.cancel();
        }
    }
}

/// A request that only a handler can take (a method other than GET and
/// POST, or a path of several segments): the handler `target` names and
/// the path after its segment. Anything else is refused as it would be
/// without handlers: 405 for the method, else 400 `bad-name`.
pub(super) async fn route<'t>(
    app: &Arc<App>,
    method: &hyper::Method,
    target: &'t str,
) -> Result<(FunctionName, Arc<Function>, &'t str), HttpError> {
    let (raw, sub_path) = target.split_once('/').unwrap_or((target, ""));
    let handler = match FunctionName::parse(raw) {
        Ok(name) => match app.registry.get(&name).await {
            Ok(f) if f.is_http_handler() => Some((name, f)),
            // A file that is there but does not load says why.
            Err(e) if !matches!(e, LoadError::NotFound(_)) => return Err(e.into()),
            _ => None,
        },
        Err(_) => None,
    };
    match handler {
        Some((name, f)) => Ok((name, f, sub_path)),
        None if !matches!(*method, hyper::Method::GET | hyper::Method::POST) => {
            Err(super::method_not_allowed(method))
        }
        None => Err(HttpError::new(
            ErrorKind::BadName,
            "invalid function name: it must be a single path segment (it contains '/'); only wasi:http handler components take sub-paths",
        )),
    }
}
