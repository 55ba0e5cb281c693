//! HTTP routes and the mapping from every outcome to its status code.
//!
//! Routes:
//! - `GET|POST /{function}`: invoke (query `arg=` -> argv, body -> stdin,
//!   stdout -> response body);
//! - `GET /-/live`, `GET /-/ready`, `GET /-/functions`, `GET /-/metrics`:
//!   management. `/-/` can never be a function, because names may not start
//!   with `-`.
//!
//! One invocation, top to bottom: `invoke` validates the name, headers,
//! query and body and finds the compiled function; `run` reserves the
//! declared resources in admission (maybe waiting in its FIFO queue), hands
//! the job to a worker thread, which applies the CPU quota to its slot and
//! runs the sandbox; the outcome becomes the response, and every failure
//! maps to its status in [`ErrorKind::status`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use wasmbox_runtime::executor::ExecError;
use wasmbox_runtime::names::NameError;
use wasmbox_runtime::sandbox::{self, CancelToken, Stdio, Timings};
use wasmbox_runtime::{
    Executor, Failure, Function, FunctionName, Invocation, LoadError, Registry, WasmEngine,
};

use wasmbox_admission::{Admission, Rejected, Resources};

use crate::config::{Compat, RequestLimits};
use crate::health::Readiness;
use crate::metrics::{GaugeValues, Metrics};

/// Runtime handles shared by all requests.
pub struct App {
    pub engine: WasmEngine,
    pub registry: Arc<Registry>,
    pub executor: Arc<Executor>,
    pub limits: RequestLimits,
    pub compat: Compat,
    pub pod: String,
    /// Requests being handled right now (the reference's Num-Current-Requests).
    pub in_flight: AtomicUsize,
    pub admission: Arc<Admission>,
    pub readiness: Readiness,
    pub metrics: Metrics,
    /// Capacity admission works with (detected or configured).
    pub capacity: Resources,
}

pub type Body = Full<Bytes>;

/// Every way a request can end other than success. [`ErrorKind::status`] is
/// the status table of the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadName,
    BadHeader,
    BadBody,
    NoRoute,
    MethodNotAllowed,
    PrecompiledNotAllowed,
    NotFound,
    BodyTooLarge,
    MemoryCap,
    Exit,
    Trap,
    LoadFailed,
    Unavailable,
    Timeout,
    OutputLimit,
    ClientGone,
    Internal,
    ExceedsCapacity,
    QueueFull,
    QueueTimeout,
    Draining,
}

impl ErrorKind {
    pub fn status(self) -> StatusCode {
        use ErrorKind::*;
        match self {
            BadName | BadHeader | BadBody => StatusCode::BAD_REQUEST, // 400
            PrecompiledNotAllowed => StatusCode::FORBIDDEN,           // 403
            NotFound | NoRoute => StatusCode::NOT_FOUND,              // 404
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,       // 405
            BodyTooLarge | ExceedsCapacity => StatusCode::PAYLOAD_TOO_LARGE, // 413
            MemoryCap => StatusCode::UNPROCESSABLE_ENTITY,            // 422
            Exit => StatusCode::FAILED_DEPENDENCY,                    // 424
            Trap | Internal => StatusCode::INTERNAL_SERVER_ERROR,     // 500
            LoadFailed => StatusCode::BAD_GATEWAY,                    // 502
            Unavailable | QueueFull | QueueTimeout | Draining => StatusCode::SERVICE_UNAVAILABLE, // 503
            Timeout => StatusCode::GATEWAY_TIMEOUT, // 504
            OutputLimit => StatusCode::INSUFFICIENT_STORAGE, // 507
            ClientGone => StatusCode::from_u16(499).unwrap(), // (nginx's "client closed request")
        }
    }

    /// Machine-readable name, sent as the `Wasmbox-Error` header.
    pub fn as_str(self) -> &'static str {
        use ErrorKind::*;
        match self {
            BadName => "bad-name",
            BadHeader => "bad-header",
            BadBody => "bad-body",
            NoRoute => "no-route",
            MethodNotAllowed => "method-not-allowed",
            PrecompiledNotAllowed => "precompiled-not-allowed",
            NotFound => "not-found",
            BodyTooLarge => "body-too-large",
            MemoryCap => "memory-cap",
            Exit => "exit",
            Trap => "trap",
            LoadFailed => "load-failed",
            Unavailable => "unavailable",
            Timeout => "timeout",
            OutputLimit => "output-limit",
            ClientGone => "client-gone",
            Internal => "internal",
            ExceedsCapacity => "exceeds-capacity",
            QueueFull => "queue-full",
            QueueTimeout => "queue-timeout",
            Draining => "draining",
        }
    }
}

/// An error response: kind, human message, extra headers.
#[derive(Debug)]
pub struct HttpError {
    pub kind: ErrorKind,
    pub message: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl HttpError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        HttpError {
            kind,
            message: message.into(),
            headers: Vec::new(),
        }
    }
    fn header(mut self, name: &'static str, value: impl ToString) -> Self {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            self.headers.push((HeaderName::from_static(name), v));
        }
        self
    }
}

impl From<NameError> for HttpError {
    fn from(e: NameError) -> Self {
        HttpError::new(ErrorKind::BadName, format!("invalid function name: {e}"))
    }
}

impl From<LoadError> for HttpError {
    fn from(e: LoadError) -> Self {
        let kind = match &e {
            LoadError::NotFound(_) => ErrorKind::NotFound,
            LoadError::PrecompiledNotAllowed(_) => ErrorKind::PrecompiledNotAllowed,
            _ => ErrorKind::LoadFailed,
        };
        HttpError::new(kind, e.to_string())
    }
}

impl From<Rejected> for HttpError {
    fn from(r: Rejected) -> Self {
        let kind = match &r {
            Rejected::TooLarge { .. } => ErrorKind::ExceedsCapacity,
            Rejected::QueueFull { .. } => ErrorKind::QueueFull,
            Rejected::Timeout(_) => ErrorKind::QueueTimeout,
            Rejected::Draining => ErrorKind::Draining,
        };
        let e = HttpError::new(kind, r.to_string());
        if kind == ErrorKind::ExceedsCapacity {
            e
        } else {
            e.header("retry-after", 1)
        }
    }
}

impl From<ExecError> for HttpError {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::Closed => {
                HttpError::new(ErrorKind::Unavailable, "the server is shutting down")
                    .header("retry-after", 1)
            }
            ExecError::Panicked => HttpError::new(
                ErrorKind::Internal,
                "internal error: the worker running this invocation panicked",
            ),
        }
    }
}

/// Entry point for every request.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let result = if let Some(rest) = path.strip_prefix("/-/") {
        management(&app, req.method(), rest)
    } else {
        let name = &path[1..];
        match *req.method() {
            Method::GET | Method::POST => invoke(&app, req, name).await,
            _ => Err(HttpError::new(
                ErrorKind::MethodNotAllowed,
                format!("{} is not allowed; use GET or POST", req.method()),
            )
            .header("allow", "GET, POST")),
        }
    };
    result.unwrap_or_else(|e| error_response(&app, e))
}

fn management(app: &App, method: &Method, rest: &str) -> Result<Response<Body>, HttpError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(HttpError::new(
            ErrorKind::MethodNotAllowed,
            format!("{method} is not allowed on /-/{rest}"),
        )
        .header("allow", "GET, HEAD"));
    }
    match rest {
        "live" => Ok(text(StatusCode::OK, "live\n")),
        "ready" => Ok(ready(app)),
        "metrics" => {
            let body = app.metrics.render(&GaugeValues {
                admission: app.admission.snapshot(),
                capacity: app.capacity,
                memory_utilization: app.readiness.mean(),
                workers_busy: app.executor.busy(),
                workers_started: app.executor.workers(),
                pool: app.engine.engine.pooling_allocator_metrics(),
                functions: (
                    app.registry.held(),
                    app.registry.loads(),
                    app.registry.cache_hits(),
                    app.registry.evictions(),
                ),
            });
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            Ok(r)
        }
        "functions" => {
            let names = app.registry.list().map_err(|e| {
                HttpError::new(
                    ErrorKind::Internal,
                    format!("cannot list the functions directory: {e}"),
                )
            })?;
            let body = serde_json::json!({ "functions": names }).to_string();
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(r)
        }
        _ => Err(HttpError::new(
            ErrorKind::NoRoute,
            format!("no management endpoint /-/{rest}; there are /-/live, /-/ready, /-/functions"),
        )),
    }
}

fn ready(app: &App) -> Response<Body> {
    match app.readiness.check(app.admission.queue_full()) {
        Ok(()) => text(StatusCode::OK, "ready\n"),
        Err(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// The reference-compatible health port: `/live` and `/ready`.
pub fn health_probe(app: &App, path: &str) -> Response<Body> {
    match path {
        "/live" => text(StatusCode::OK, "live\n"),
        "/ready" => ready(app),
        _ => text(
            StatusCode::NOT_FOUND,
            "the health port serves /live and /ready\n",
        ),
    }
}

/// Reads `Memory-Request` and `cpu_quota` (also `cpu-quota`), applying
/// defaults and bounds.
pub fn parse_resources(
    headers: &HeaderMap,
    limits: &RequestLimits,
) -> Result<Resources, HttpError> {
    let memory_mb = header_number(
        headers,
        &["memory-request"],
        "Memory-Request",
        "MB",
        limits.max_memory_mb,
    )?
    .unwrap_or(limits.default_memory_mb);
    let cpu_millis = header_number(
        headers,
        &["cpu_quota", "cpu-quota"],
        "cpu_quota",
        "millicores",
        limits.max_cpu_quota,
    )?
    .unwrap_or(limits.default_cpu_quota);
    Ok(Resources {
        memory_mb,
        cpu_millis,
    })
}

/// One positive whole number from any of `names` (all values must agree),
/// at most `max`.
fn header_number(
    headers: &HeaderMap,
    names: &[&str],
    display: &str,
    unit: &str,
    max: u64,
) -> Result<Option<u64>, HttpError> {
    let bad = |reason: String| {
        HttpError::new(ErrorKind::BadHeader, format!("header {display}: {reason}"))
    };
    let mut found: Option<u64> = None;
    for name in names {
        for v in headers.get_all(*name) {
            let s = v
                .to_str()
                .map_err(|_| bad("value is not visible ASCII".into()))?
                .trim();
            let n = parse_positive(s).map_err(bad)?;
            if n > max {
                return Err(bad(format!(
                    "{n} {unit} is above this server's maximum of {max} {unit}"
                )));
            }
            match found {
                Some(prev) if prev != n => {
                    return Err(bad(format!(
                        "given more than once with different values ({prev} and {n})"
                    )))
                }
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

fn parse_positive(s: &str) -> Result<u64, String> {
    if s.is_empty() {
        return Err("value is empty".into());
    }
    if s.starts_with('-') {
        return Err(format!(
            "'{s}' is negative; it must be a positive whole number"
        ));
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{s}' is not a whole number"));
    }
    match s.parse::<u64>() {
        Ok(0) => Err("0 is not allowed; it must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{s}' is too large")),
    }
}

/// argv from the query: argv[0] is the function name, then every `arg=`
/// value in order. Other query parameters are ignored.
fn parse_args(name: &FunctionName, query: Option<&str>) -> Vec<String> {
    let mut argv = vec![name.to_string()];
    if let Some(q) = query {
        argv.extend(
            form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| k == "arg")
                .map(|(_, v)| v.into_owned()),
        );
    }
    argv
}

async fn read_body(req: Request<Incoming>, max: usize) -> Result<Bytes, HttpError> {
    let too_large = || {
        HttpError::new(
            ErrorKind::BodyTooLarge,
            format!("request body is larger than this server's limit of {max} bytes"),
        )
    };
    if let Some(len) = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    {
        if len > max as u64 {
            return Err(too_large());
        }
    }
    match Limited::new(req.into_body(), max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(too_large()),
        Err(e) => Err(HttpError::new(
            ErrorKind::BadBody,
            format!("cannot read request body: {e}"),
        )),
    }
}

/// The reference's POST body: `{"parameter": "<string>"}` -> stdin.
fn compat_stdin(body: &[u8]) -> Result<Bytes, HttpError> {
    #[derive(serde::Deserialize)]
    struct Param {
        parameter: String,
    }
    if body.is_empty() {
        return Ok(Bytes::new());
    }
    serde_json::from_slice::<Param>(body)
        .map(|p| Bytes::from(p.parameter))
        .map_err(|e| {
            HttpError::new(
                ErrorKind::BadBody,
                format!("body must be JSON {{\"parameter\": \"<string>\"}} in reference mode: {e}"),
            )
        })
}

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

async fn invoke(
    app: &Arc<App>,
    req: Request<Incoming>,
    raw_name: &str,
) -> Result<Response<Body>, HttpError> {
    let received = Instant::now();
    let _in_flight = InFlight::enter(&app.in_flight);
    if raw_name.is_empty() {
        return Err(HttpError::new(
            ErrorKind::NoRoute,
            "no function in the path; GET /-/functions lists them",
        ));
    }
    if raw_name.contains('/') {
        return Err(HttpError::new(
            ErrorKind::BadName,
            "invalid function name: it must be a single path segment (it contains '/')",
        ));
    }
    let name = FunctionName::parse(raw_name)?;
    let resources = parse_resources(req.headers(), &app.limits)?;
    let argv = parse_args(&name, req.uri().query());
    let is_post = req.method() == Method::POST;
    let body = read_body(req, app.limits.max_body_bytes).await?;
    let stdin = match app.compat {
        Compat::Reference if is_post => compat_stdin(&body)?,
        _ => body,
    };
    let function = app.registry.get(&name).await?;
    let result = run(
        app,
        &name,
        function.clone(),
        resources,
        argv,
        stdin,
        received,
    )
    .await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.kind.as_str(),
    };
    app.metrics.count(&function.file_name, outcome);
    result
}

/// Admits, runs on a worker, and turns the outcome into a response.
async fn run(
    app: &Arc<App>,
    name: &FunctionName,
    function: Arc<Function>,
    resources: Resources,
    argv: Vec<String>,
    stdin: Bytes,
    received: Instant,
) -> Result<Response<Body>, HttpError> {
    // Reserve the declared cpu_quota and Memory-Request, or wait in the
    // FIFO queue; released when `permit` drops, on every path.
    let permit = app.admission.admit(resources).await?;
    app.metrics.queue_wait.observe(permit.waited.as_secs_f64());

    let limits = &app.limits;
    let invocation = Invocation {
        argv,
        stdio: Stdio::Captured {
            stdin,
            stdout_cap: limits.max_output_bytes,
            stderr_cap: limits.max_stderr_bytes,
        },
        memory_cap: (resources.memory_mb << 20) as usize,
        timeout: limits.timeout,
        throttle: None,
    };
    let cancel = CancelToken::default();
    let _cancel_on_drop = CancelOnDrop(cancel.clone());
    let engine = app.engine.clone();
    let submitted = Instant::now();
    let cpu_millis = resources.cpu_millis;
    let (queued, isolation, outcome) = app
        .executor
        .submit(move |worker| {
            let queued = submitted.elapsed();
            // Hold this thread to the request's cpu_quota (a cgroup quota
            // rewrite, or a throttle budget the invocation carries).
            let t = Instant::now();
            let throttle = worker.isolate(cpu_millis)?;
            let isolation = t.elapsed();
            let invocation = Invocation {
                throttle,
                ..invocation
            };
            Ok((
                queued,
                isolation,
                sandbox::invoke(&engine, &function, invocation, &cancel),
            ))
        })
        .await?
        .map_err(|e: String| HttpError::new(ErrorKind::Unavailable, e).header("retry-after", 1))?;

    if !outcome.stderr.is_empty() {
        tracing::info!(function = %name, stderr = %String::from_utf8_lossy(&outcome.stderr).trim_end(), "guest stderr");
    }
    let timing = PhaseTimes {
        queue: permit.waited + queued,
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

struct PhaseTimes {
    queue: Duration,
    isolation: Duration,
    t: Timings,
    /// From the request's arrival in the handler to its outcome: the
    /// server-side time of the invocation, body read and lookup included.
    total: Duration,
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
}

fn success(app: &App, stdout: Bytes, timing: &PhaseTimes) -> Response<Body> {
    let (body, content_type) = match app.compat {
        Compat::Reference => {
            let mut b = b"WASM output: ".to_vec();
            b.extend_from_slice(&stdout);
            (Bytes::from(b), "text/plain; charset=utf-8")
        }
        Compat::None if std::str::from_utf8(&stdout).is_ok() => {
            (stdout, "text/plain; charset=utf-8")
        }
        Compat::None => (stdout, "application/octet-stream"),
    };
    let mut r = Response::new(Full::new(body));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    add_timing_headers(app, r.headers_mut(), Some(timing));
    r
}

fn add_timing_headers(app: &App, h: &mut HeaderMap, timing: Option<&PhaseTimes>) {
    if let Some(t) = timing {
        if let Ok(v) = HeaderValue::from_str(&t.server_timing()) {
            h.insert(HeaderName::from_static("server-timing"), v);
        }
    }
    if app.compat == Compat::Reference {
        let ms = |d: Duration| HeaderValue::from(d.as_millis() as u64);
        let (iso, exec) = timing.map_or((Duration::ZERO, Duration::ZERO), |t| {
            (t.isolation, t.t.instantiate + t.t.execute)
        });
        h.insert(
            HeaderName::from_static("cgroup-creation-time"),
            ms(Duration::ZERO),
        );
        h.insert(HeaderName::from_static("cgroup-assign-time"), ms(iso));
        h.insert(HeaderName::from_static("execution-time"), ms(exec));
        h.insert(
            HeaderName::from_static("num-current-requests"),
            HeaderValue::from(app.in_flight.load(Ordering::Relaxed)),
        );
        if let Ok(v) = HeaderValue::from_str(&app.pod) {
            h.insert(HeaderName::from_static("pod"), v);
        }
    }
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

fn failure_error(f: Failure, res: &Resources, stderr: &[u8], timing: &PhaseTimes) -> HttpError {
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
        Failure::OutputLimit { cap } => HttpError::new(ErrorKind::OutputLimit, format!("function wrote more than this server's output limit of {cap} bytes to stdout and was stopped")),
        Failure::Cancelled => HttpError::new(ErrorKind::ClientGone, "client went away; invocation stopped"),
        Failure::PoolExhausted => HttpError::new(ErrorKind::Unavailable, "no free instance slot; retry").header("retry-after", 1),
    };
    let mut e = e;
    if let Ok(v) = HeaderValue::from_str(&timing.server_timing()) {
        e.headers
            .push((HeaderName::from_static("server-timing"), v));
    }
    e
}

fn error_response(app: &App, e: HttpError) -> Response<Body> {
    let mut body = String::new();
    if app.compat == Compat::Reference {
        body.push_str("WASM output: Failed to run WASM module: ");
    }
    body.push_str(&e.message);
    body.push('\n');
    let mut r = text(e.kind.status(), body);
    let h = r.headers_mut();
    h.insert(
        HeaderName::from_static("wasmbox-error"),
        HeaderValue::from_static(e.kind.as_str()),
    );
    for (k, v) in e.headers {
        h.insert(k, v);
    }
    if app.compat == Compat::Reference {
        add_timing_headers(app, h, None);
    }
    r
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> RequestLimits {
        RequestLimits {
            default_memory_mb: 200,
            max_memory_mb: 4096,
            default_cpu_quota: 1000,
            max_cpu_quota: 1000,
            timeout: Duration::from_secs(1),
            max_body_bytes: 10,
            max_output_bytes: 10,
            max_stderr_bytes: 10,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn resources_defaults_and_both_spellings() {
        let l = limits();
        assert_eq!(
            parse_resources(&headers(&[]), &l).unwrap(),
            Resources {
                memory_mb: 200,
                cpu_millis: 1000
            }
        );
        let r = parse_resources(
            &headers(&[("memory-request", "64"), ("cpu-quota", "250")]),
            &l,
        )
        .unwrap();
        assert_eq!(
            r,
            Resources {
                memory_mb: 64,
                cpu_millis: 250
            }
        );
        let r =
            parse_resources(&headers(&[("cpu_quota", "300"), ("cpu-quota", "300")]), &l).unwrap();
        assert_eq!(r.cpu_millis, 300);
    }

    #[test]
    fn malformed_resources_name_header_and_reason() {
        let l = limits();
        let cases = [
            ("memory-request", "-5", "Memory-Request", "negative"),
            ("memory-request", "0", "Memory-Request", "at least 1"),
            (
                "memory-request",
                "abc",
                "Memory-Request",
                "not a whole number",
            ),
            (
                "memory-request",
                "1.5",
                "Memory-Request",
                "not a whole number",
            ),
            (
                "memory-request",
                "99999999999999999999999",
                "Memory-Request",
                "too large",
            ),
            (
                "memory-request",
                "8192",
                "Memory-Request",
                "above this server's maximum of 4096 MB",
            ),
            (
                "cpu_quota",
                "2000",
                "cpu_quota",
                "above this server's maximum of 1000 millicores",
            ),
            ("cpu-quota", "", "cpu_quota", "empty"),
        ];
        for (h, v, name, reason) in cases {
            let e = parse_resources(&headers(&[(h, v)]), &l).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadHeader);
            assert!(
                e.message.contains(name) && e.message.contains(reason),
                "{h}: {v} -> {}",
                e.message
            );
        }
        let e = parse_resources(&headers(&[("cpu_quota", "300"), ("cpu-quota", "400")]), &l)
            .unwrap_err();
        assert!(e.message.contains("different values"), "{}", e.message);
    }

    #[test]
    fn args_come_from_arg_parameters_in_order() {
        let n = FunctionName::parse("echo").unwrap();
        assert_eq!(
            parse_args(&n, Some("arg=a&x=1&arg=b%20c&arg=d+e")),
            vec!["echo", "a", "b c", "d e"]
        );
        assert_eq!(parse_args(&n, None), vec!["echo"]);
    }

    #[test]
    fn every_error_kind_has_a_distinct_status() {
        use ErrorKind::*;
        let outcomes = [
            NotFound,
            PrecompiledNotAllowed,
            BodyTooLarge,
            MemoryCap,
            Exit,
            Trap,
            LoadFailed,
            Unavailable,
            Timeout,
            OutputLimit,
            MethodNotAllowed,
            BadName,
        ];
        let mut codes: Vec<u16> = outcomes.iter().map(|k| k.status().as_u16()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), outcomes.len());
    }
}
