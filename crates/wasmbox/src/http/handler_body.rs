//! A wasi:http handler's request body. Its start is read before the
//! request is admitted: all of it when it ends within [`PREFETCH`] bytes,
//! so a small body never holds a worker waiting for a slow client. A
//! longer body then reaches the guest as the client sends it, so an upload
//! need not fit in the body budget: within `--max-body-bytes`, and all of
//! it within `--body-timeout` of client time, as a command's stdin.
//!
//! When either limit is hit (or the client breaks the body), the guest's
//! read fails. If the guest then fails or returns without answering, the
//! client gets the status the limit has for commands (413, 408, 400): the
//! [`BodyFault`] keeps it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::Request;
use tokio::time::{Instant, Sleep};
use wasmbox_runtime::component::http::{BodyError, RequestBody};

use super::body::{read_start, timed_out, too_large, BodyRules};
use super::budget::{BodyBudget, Hold};
use super::error::{ErrorKind, HttpError};
use crate::accounting::Pending;

/// Bytes of a body read before the request is admitted.
pub(super) const PREFETCH: usize = 64 << 10;

/// Why a handler's request body failed, if it did.
#[derive(Clone, Default)]
pub(super) struct BodyFault(Arc<Mutex<Option<HttpError>>>);

impl BodyFault {
    /// The error for the client, if the body failed.
    pub(super) fn take(&self) -> Option<HttpError> {
        self.0.lock().ok()?.take()
    }

    fn set(&self, e: HttpError) {
        if let Ok(mut slot) = self.0.lock() {
            slot.get_or_insert(e);
        }
    }
}

/// Reads the start of `req`'s body ([`PREFETCH`] bytes or all of it) and
/// returns the body for the guest: that start, then the rest as it comes.
/// Bytes received are counted in `usage` as they pass; a limit hit while
/// streaming is recorded in `fault`.
pub(super) async fn read(
    req: Request<Incoming>,
    (rules, budget): (&BodyRules, &Arc<BodyBudget>),
    usage: &Pending,
    fault: &BodyFault,
) -> Result<RequestBody, HttpError> {
    let start = read_start(req, PREFETCH, rules, budget).await?;
    let received = start.bytes.len();
    usage.update(|u| u.bytes_in = received as u64);
    Ok(Streaming {
        first: (!start.bytes.is_empty()).then_some(start.bytes),
        rest: start.rest,
        received,
        max: rules.max,
        timeout: rules.timeout,
        deadline: start.deadline,
        sleep: None,
        usage: usage.clone(),
        fault: fault.clone(),
        _hold: start.hold,
    }
    .boxed_unsync())
}

/// The body the guest reads ([`read`]).
struct Streaming {
    /// What was read before admission, not yet given to the guest.
    first: Option<Bytes>,
    /// The rest, from the client; `None` once it ended or failed.
    rest: Option<Incoming>,
    received: usize,
    max: usize,
    timeout: Duration,
    /// When the whole body must have arrived.
    deadline: Instant,
    /// Waits for the deadline; made on the first wait for the client.
    sleep: Option<Pin<Box<Sleep>>>,
    usage: Pending,
    fault: BodyFault,
    /// The prefetched bytes' share of the body budget.
    _hold: Hold,
}

impl Streaming {
    /// Ends the body with `guest` for the guest and `client` for the client.
    fn fail(
        &mut self,
        client: HttpError,
        guest: BodyError,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.rest = None;
        self.fault.set(client);
        Poll::Ready(Some(Err(guest)))
    }
}

impl Body for Streaming {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        let Some(rest) = this.rest.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(rest).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len();
                    this.received += n;
                    if this.received > this.max {
                        let max = this.max;
                        return this.fail(
                            too_large(max),
                            BodyError::HttpRequestBodySize(Some(max as u64)),
                        );
                    }
                    this.usage.update(|u| u.bytes_in += n as u64);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => this.fail(
                HttpError::new(ErrorKind::BadBody, format!("cannot read request body: {e}")),
                BodyError::Hyper(e),
            ),
            Poll::Ready(None) => {
                this.rest = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let deadline = this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match sleep.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => {
                        let client = timed_out(this.timeout, this.received);
                        this.fail(client, BodyError::ConnectionReadTimeout)
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let first = self.first.as_ref().map_or(0, |b| b.len() as u64);
        match &self.rest {
            None => SizeHint::with_exact(first),
            Some(rest) => {
                let r = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(first + r.lower());
                if let Some(upper) = r.upper() {
                    hint.set_upper(first + upper);
                }
                hint
            }
        }
    }
}
