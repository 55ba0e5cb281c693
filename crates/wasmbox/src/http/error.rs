//! Every way a request can fail, its status and `Wasmbox-Error` name, the
//! conversions from the runtime's and admission's errors, and the error
//! response itself.

use hyper::header::{HeaderName, HeaderValue};
use hyper::StatusCode;
use wasmbox_admission::Rejected;
use wasmbox_runtime::executor::ExecError;
use wasmbox_runtime::names::NameError;
use wasmbox_runtime::LoadError;

/// Every way a request can end other than success. [`ErrorKind::status`] is
/// the status table of the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadName,
    BadHeader,
    BadBody,
    /// A request target that is not a path (authority-form or `*`) on a
    /// GET or POST.
    BadTarget,
    NoRoute,
    MethodNotAllowed,
    PrecompiledNotAllowed,
    NotFound,
    BodyTooLarge,
    /// The client did not send its body within `--body-timeout`.
    BodyTimeout,
    /// The body budget stayed full for `--queue-timeout`.
    Overloaded,
    MemoryCap,
    Exit,
    Trap,
    LoadFailed,
    /// The function file (or the functions directory) could not be read:
    /// EIO, ESTALE, EACCES, a hung mount. Transient, unlike `NotFound`.
    Unreadable,
    Unavailable,
    Timeout,
    OutputLimit,
    ClientGone,
    Internal,
    ExceedsCapacity,
    QueueFull,
    QueueTimeout,
    Draining,
    /// `/-/metrics` or `/-/functions` asked of the serving port: they are
    /// on the admin listener only.
    MovedToAdmin,
    /// The admin listener: no, a malformed or a wrong bearer token.
    Unauthorized,
    /// The admin listener: an endpoint that needs the admin token, and none
    /// is configured.
    AdminTokenNotConfigured,
    /// The function's manifest (`NAME.toml`) is invalid.
    BadManifest,
    /// The invocation used up its manifest's CPU-time budget.
    CpuBudget,
    /// Deploy API: the module was refused by the compiler or the checks.
    InvalidModule,
    /// Deploy API: the manifest sent is invalid.
    InvalidManifest,
    /// Deploy API: `If-Match` / `If-None-Match` did not hold.
    PreconditionFailed,
    /// Deploy API: the functions directory cannot be written.
    ReadOnly,
}

impl ErrorKind {
    pub fn status(self) -> StatusCode {
        use ErrorKind::*;
        match self {
            BadName | BadHeader | BadBody | BadTarget => StatusCode::BAD_REQUEST, // 400
            Unauthorized => StatusCode::UNAUTHORIZED,                             // 401
            ReadOnly => StatusCode::CONFLICT,                                     // 409
            PreconditionFailed => StatusCode::PRECONDITION_FAILED,                // 412
            InvalidModule | InvalidManifest => StatusCode::UNPROCESSABLE_ENTITY,  // 422
            CpuBudget => StatusCode::LOOP_DETECTED,                               // 508
            PrecompiledNotAllowed | AdminTokenNotConfigured => StatusCode::FORBIDDEN, // 403
            NotFound | NoRoute | MovedToAdmin => StatusCode::NOT_FOUND,           // 404
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,                   // 405
            BodyTimeout => StatusCode::REQUEST_TIMEOUT,                           // 408
            BodyTooLarge | ExceedsCapacity => StatusCode::PAYLOAD_TOO_LARGE,      // 413
            MemoryCap => StatusCode::UNPROCESSABLE_ENTITY,                        // 422
            Exit => StatusCode::FAILED_DEPENDENCY,                                // 424
            Trap | Internal => StatusCode::INTERNAL_SERVER_ERROR,                 // 500
            LoadFailed | BadManifest => StatusCode::BAD_GATEWAY,                  // 502
            Unreadable | Unavailable | QueueFull | QueueTimeout | Draining | Overloaded => {
                StatusCode::SERVICE_UNAVAILABLE
            } // 503
            Timeout => StatusCode::GATEWAY_TIMEOUT,                               // 504
            OutputLimit => StatusCode::INSUFFICIENT_STORAGE,                      // 507
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
            BadTarget => "bad-target",
            NoRoute => "no-route",
            MethodNotAllowed => "method-not-allowed",
            PrecompiledNotAllowed => "precompiled-not-allowed",
            NotFound => "not-found",
            BodyTooLarge => "body-too-large",
            BodyTimeout => "body-timeout",
            Overloaded => "overloaded",
            MemoryCap => "memory-cap",
            Exit => "exit",
            Trap => "trap",
            LoadFailed => "load-failed",
            Unreadable => "unreadable",
            Unavailable => "unavailable",
            Timeout => "timeout",
            OutputLimit => "output-limit",
            ClientGone => "client-gone",
            Internal => "internal",
            ExceedsCapacity => "exceeds-capacity",
            QueueFull => "queue-full",
            QueueTimeout => "queue-timeout",
            Draining => "draining",
            MovedToAdmin => "moved-to-admin",
            Unauthorized => "unauthorized",
            AdminTokenNotConfigured => "admin-token-not-configured",
            BadManifest => "bad-manifest",
            CpuBudget => "cpu-budget",
            InvalidModule => "invalid-module",
            InvalidManifest => "invalid-manifest",
            PreconditionFailed => "precondition-failed",
            ReadOnly => "read-only",
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
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        HttpError {
            kind,
            message: message.into(),
            headers: Vec::new(),
        }
    }
    pub(crate) fn header(mut self, name: &'static str, value: impl ToString) -> Self {
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
            LoadError::Io { .. } => ErrorKind::Unreadable,
            LoadError::Incompatible { .. }
            | LoadError::Invalid { .. }
            | LoadError::NotACommand { .. }
            | LoadError::Link { .. }
            | LoadError::OverBudget { .. } => ErrorKind::LoadFailed,
        };
        let error = HttpError::new(kind, e.to_string());
        if kind == ErrorKind::Unreadable {
            error.header("retry-after", 1)
        } else {
            error
        }
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
            e @ (ExecError::Busy { .. } | ExecError::Isolation(_)) => {
                HttpError::new(ErrorKind::Unavailable, e.to_string()).header("retry-after", 1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Unauthorized,
            CpuBudget,
            PreconditionFailed,
            ReadOnly,
        ];
        let mut codes: Vec<u16> = outcomes.iter().map(|k| k.status().as_u16()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), outcomes.len());
    }
}
