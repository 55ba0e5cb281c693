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
use super::invoke::{admit_and_run, failure_error, output_cap, Arrival};
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
    (arrival, usage): (Arrival, &Pending),
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
    let (method, version) = (req.method().clone(), req.version());
    let headers = guest_headers(req.headers());
    let fault = BodyFault::default();
    let rules = (&app.body_rules, &app.body_budget);
    let body = handler_body::read(req, rules, usage, &fault).await?;
    let mut request = Request::new(body);
    *request.method_mut() = method.clone();
    *request.uri_mut() = target.parse().map_err(|e| {
        HttpError::new(
            ErrorKind::BadTarget,
            format!("request target '{target}': {e}"),
        )
    })?;
    *request.headers_mut() = headers;

    let key = function.id.clone();
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
        // The reservation, once admitted.
        hold: Box::new(()),
    };
    let admitting = Instant::now();
    // Billed when the guest stops, after the answer has gone out.
    let rx = admit_and_run(app, (&key, resources), task, (), usage).await?;
    let mut ran = Box::pin(async move {
        rx.await
            .unwrap_or((Duration::ZERO, Err(ExecError::Panicked)))
    });
    let (head, ended) = match head_or_end(head, &mut ran).await {
        First::Head(head) => (head, None),
        First::End(Some(head), ended) => (Some(head), Some(ended)),
        First::End(None, ended) => {
            return answer_without_head(name, ended, &fault, &resources, arrival)
        }
    };
    let Some(Head {
        answer,
        timings,
        held,
    }) = head
    else {
        return answer_without_head(name, ran.await, &fault, &resources, arrival);
    };
    // The guest goes on writing its body; its outcome is logged when it
    // comes (after its store is torn down).
    let function_name = name.to_string();
    tokio::spawn(async move {
        let ended = match ended {
            Some(ended) => ended,
            None => ran.await,
        };
        if let (_, Ok(ran)) = ended {
            log_outcome(&function_name, &ran);
        }
    });
    let timing = arrival.phases(
        // Waiting for admission and a worker, and applying the CPU quota
        // (not the guest's time with its head held after it set it).
        admitting
            .elapsed()
            .saturating_sub(timings.instantiate + timings.execute + held),
        Duration::ZERO,
        timings,
    );
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
    // hyper stops an HTTP/1 body at its declared length; HTTP/2 reads on.
    let declared = (version < hyper::Version::HTTP_2)
        .then(|| parts.headers.get(hyper::header::CONTENT_LENGTH))
        .flatten()
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let body = Streamed::new(body, (cap, usage.clone()), cancel, ended_well)
        .declared(declared)
        .counted_in(app.apart.clone());
    let body = if bodyless(&method, parts.status) {
        body.drain()
    } else {
        Body::Stream(Box::new(body))
    };
    Ok(Response::from_parts(parts, body))
}

/// Whether a response to `method` with `status` may carry no body (RFC
/// 9110 sections 9.3.2, 15.2, 15.3.5 and 15.4.5).
fn bodyless(method: &hyper::Method, status: hyper::StatusCode) -> bool {
    method == hyper::Method::HEAD
        || status.is_informational()
        || status == hyper::StatusCode::NO_CONTENT
        || status == hyper::StatusCode::NOT_MODIFIED
}

/// What came first from a handler's invocation.
enum First<H, E> {
    /// Its response head (`None`: its sender was dropped without sending).
    Head(Option<H>),
    /// Its end, with the head if one had been sent by then.
    End(Option<H>, E),
}

/// Waits for the handler's response head or, if the guest stops without
/// one, its end. The worker sends the head before the end, but both can
/// land between this wait's look at the head (empty) and its look at the
/// end (there): 6 in 859k hello calls at c=16 were answered 500 "returned
/// without setting a response" that way. A head sent before the end is
/// there by the time the end is, so it is taken then.
async fn head_or_end<H, E>(
    mut head: tokio::sync::oneshot::Receiver<H>,
    end: &mut (impl std::future::Future<Output = E> + Unpin),
) -> First<H, E> {
    tokio::select! {
        biased;
        head = &mut head => First::Head(head.ok()),
        ended = end => First::End(head.try_recv().ok(), ended),
    }
}

/// The guest stopped without setting a response: what its request body
/// failed on (the guest could not read it), else its failure, or 500 if it
/// returned without answering.
fn answer_without_head(
    name: &FunctionName,
    (waited, ran): (Duration, Result<Ran, ExecError>),
    fault: &BodyFault,
    resources: &Resources,
    arrival: Arrival,
) -> Result<Response<Body>, HttpError> {
    let ran = ran?;
    log_outcome(name.as_str(), &ran);
    let timing = arrival.phases(waited + ran.queued, ran.isolation, ran.outcome.timings);
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
            // Quoted and escaped, as a module's stderr (`invoke`).
            tracing::info!(function, stream, output = ?String::from_utf8_lossy(bytes).trim_end(), "guest output");
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

#[cfg(test)]
mod tests {
    use super::{head_or_end, First};

    /// The race as it happened: the head is looked at while empty, then
    /// the worker sends the head and the end before the end is looked at.
    #[tokio::test]
    async fn a_head_sent_just_before_the_end_is_taken() {
        let (send_head, head) = tokio::sync::oneshot::channel();
        let mut end = Box::pin(async move {
            send_head.send("head").unwrap();
            "ended"
        });
        match head_or_end(head, &mut end).await {
            First::End(Some("head"), "ended") => {}
            First::End(h, e) => panic!("end {e:?} with head {h:?}"),
            First::Head(h) => panic!("head {h:?} first"),
        }
    }

    #[tokio::test]
    async fn a_head_comes_first_and_an_end_without_one_says_so() {
        let (send_head, head) = tokio::sync::oneshot::channel();
        send_head.send("head").unwrap();
        let mut end = Box::pin(std::future::pending::<&str>());
        assert!(matches!(
            head_or_end(head, &mut end).await,
            First::Head(Some("head"))
        ));
        let (send_head, head) = tokio::sync::oneshot::channel::<&str>();
        let mut end = Box::pin(async move {
            drop(send_head);
            "ended"
        });
        assert!(matches!(
            head_or_end(head, &mut end).await,
            First::End(None, "ended")
        ));
    }
}
