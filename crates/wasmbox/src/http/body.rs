//! Reading a request body: within `--max-body-bytes`, within the body
//! budget (bytes are reserved before they are read), and within
//! `--body-timeout` of client time.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::Request;
use tokio::time::Instant;

use super::budget::{BodyBudget, Hold};
use super::error::{ErrorKind, HttpError};

/// How a body is read.
#[derive(Debug, Clone)]
pub struct BodyRules {
    /// Largest body, in bytes.
    pub max: usize,
    /// Longest the client may take to send it (time waiting for the budget
    /// not counted).
    pub timeout: Duration,
    /// Longest wait for the budget.
    pub budget_wait: Duration,
}

/// A chunked body reserves budget in steps of at least this.
const RESERVE_STEP: usize = 64 << 10;

/// The whole body, and its hold on the budget (keep it as long as the bytes
/// live). Refused as soon as it is known to be above `rules.max` bytes
/// (from Content-Length, or while reading).
pub(super) async fn read_body(
    req: Request<Incoming>,
    rules: &BodyRules,
    budget: &Arc<BodyBudget>,
) -> Result<(Bytes, Hold), HttpError> {
    let start = read_start(req, usize::MAX, rules, budget).await?;
    debug_assert!(start.rest.is_none());
    Ok((start.bytes, start.hold))
}

/// The start of a body ([`read_start`]).
pub(super) struct BodyStart {
    /// What was read.
    pub bytes: Bytes,
    /// Its hold on the budget.
    pub hold: Hold,
    /// The rest of the body, unread, if it did not end within the bytes
    /// asked for.
    pub rest: Option<Incoming>,
    /// When the client's time to send the whole body runs out.
    pub deadline: Instant,
}

/// The body up to its end or at least `upto` bytes (whichever comes
/// first), under the rules of [`read_body`]: the whole body must arrive by
/// the returned deadline.
pub(super) async fn read_start(
    req: Request<Incoming>,
    upto: usize,
    rules: &BodyRules,
    budget: &Arc<BodyBudget>,
) -> Result<BodyStart, HttpError> {
    let max = rules.max;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large(max));
    }
    let mut body = req.into_body();
    let mut hold = budget.none();
    let mut deadline = Instant::now() + rules.timeout;
    let mut buf = BytesMut::new();
    // Even a request without a body waits while responses hold more than
    // the budget (they may: their bytes exist), since its own response will
    // need memory too; this bounds what clients that do not read can pin.
    let len = (declared.unwrap_or(0) as usize).min(upto);
    deadline += reserve(&mut hold, len, rules, budget).await?;
    buf.reserve(len);
    loop {
        if buf.len() >= upto {
            return Ok(BodyStart {
                bytes: buf.freeze(),
                hold,
                rest: Some(body),
                deadline,
            });
        }
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(timed_out(rules.timeout, buf.len())),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(HttpError::new(
                    ErrorKind::BadBody,
                    format!("cannot read request body: {e}"),
                ))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let total = buf.len() + data.len();
        if total > max {
            return Err(too_large(max));
        }
        if total > hold.bytes() {
            // A body without a length grows its hold as it arrives, and does
            // not wait while holding: bodies that each hold part of the
            // budget and wait for more would wait for each other.
            let step = (total - hold.bytes())
                .max(RESERVE_STEP)
                .min(max - hold.bytes());
            if !hold.try_grow(step) {
                return Err(overloaded(budget, rules, step));
            }
        }
        buf.extend_from_slice(&data);
    }
    Ok(BodyStart {
        bytes: buf.freeze(),
        hold,
        rest: None,
        deadline,
    })
}

/// 413: the body is above `max` bytes.
pub(super) fn too_large(max: usize) -> HttpError {
    HttpError::new(
        ErrorKind::BodyTooLarge,
        format!("request body is larger than this server's limit of {max} bytes"),
    )
}

/// 408: the body did not arrive within `timeout`; `received` bytes did.
pub(super) fn timed_out(timeout: Duration, received: usize) -> HttpError {
    HttpError::new(
        ErrorKind::BodyTimeout,
        format!(
            "the request body did not arrive within {timeout:?} (--body-timeout); {received} bytes received"
        ),
    )
}

/// Grows `hold` by `bytes` within `rules.budget_wait`; returns how long
/// that took (client time it does not count against).
async fn reserve(
    hold: &mut Hold,
    bytes: usize,
    rules: &BodyRules,
    budget: &Arc<BodyBudget>,
) -> Result<Duration, HttpError> {
    let start = Instant::now();
    match tokio::time::timeout(rules.budget_wait, hold.grow(bytes)).await {
        Ok(()) => Ok(start.elapsed()),
        Err(_) => Err(overloaded(budget, rules, bytes)),
    }
}

/// 503: the budget had no room for `bytes`.
fn overloaded(budget: &BodyBudget, rules: &BodyRules, bytes: usize) -> HttpError {
    HttpError::new(
        ErrorKind::Overloaded,
        format!(
            "request bodies and responses already hold this server's body budget of {} MiB (--max-buffered-mb); no room for {bytes} more bytes within {:?}",
            budget.max() >> 20,
            rules.budget_wait,
        ),
    )
    .header("retry-after", 1)
}
