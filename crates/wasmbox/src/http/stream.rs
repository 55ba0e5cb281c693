//! The response body type: a buffered body (everything wasmbox writes
//! itself, and a command's stdout), or the body a wasi:http handler streams
//! while it runs, cut off at the invocation's output cap and stopping the
//! guest when the client goes away before the end; where the client has
//! its whole answer before the body's end (a response that may carry no
//! body: HEAD, 1xx, 204, 304; on HTTP/1 a body of its declared length),
//! the rest is read on a task of its own and sent nowhere.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body as _, Frame, SizeHint};
use wasmbox_runtime::CancelToken;

use super::error::ErrorKind;
use crate::accounting::{Cut, Pending, CLIENT_GONE};

/// The body of every response wasmbox writes.
pub enum Body {
    /// All of it at once.
    Full(Full<Bytes>),
    /// Streamed from a handler.
    Stream(Box<Streamed>),
    /// None may be sent (HEAD, 1xx, 204, 304), and hyper never polls it:
    /// the handler's, whose size hint this keeps for the head, is drained
    /// apart ([`Streamed::drain`]).
    Unsent(SizeHint),
}

impl From<Full<Bytes>> for Body {
    fn from(b: Full<Bytes>) -> Self {
        Body::Full(b)
    }
}

/// Why a streamed body ended early.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The handler wrote more than the invocation's output cap.
    #[error("the handler's response body went past its limit of {0} bytes; it was stopped")]
    OverCap(usize),
    /// The handler's body failed (it trapped, was stopped, or its stream
    /// broke).
    #[error("the handler's response body failed: {0}")]
    Guest(String),
}

type GuestBody = wasmbox_runtime::component::http::HyperOutgoingBody;

/// A handler's body: counts bytes against `cap`, and stops the guest
/// (raises `cancel`) if dropped before its end: the client went away, or
/// the cap was hit. (Not when the client already has all it will get: see
/// [`Streamed::drain`] and its drop at a declared length.) Its end is only
/// sent once the guest has returned
/// without failing (`ended_well`): a guest that traps (or is stopped)
/// after its head leaves its body unfinished, and the client must see a
/// broken body, not a short complete one.
///
/// An error is held back for one poll: the connection flushes what came
/// before it (the head and the body so far) when the body is pending, and
/// closes at once on an error. A head held until the guest had written
/// past its cap would otherwise never reach the client.
///
/// The request's usage record waits for the body: it takes the bytes sent
/// and, if the body ended short, why (see [`Cut`]).
pub struct Streamed {
    inner: GuestBody,
    cap: usize,
    sent: usize,
    usage: Pending,
    /// Where a body read apart is counted (shutdown waits for them).
    apart: Option<Arc<AtomicUsize>>,
    /// Why the body is ending short, once known.
    cut: Option<Cut>,
    /// The length its head declared (`Content-Length`), if any.
    declared: Option<u64>,
    /// `Some(n)`: the client got `n` bytes and the rest is drained, not
    /// sent (its usage record counts `n` bytes out).
    unsent_after: Option<usize>,
    cancel: CancelToken,
    ended_well: tokio::sync::oneshot::Receiver<bool>,
    inner_done: bool,
    /// The error the body ends with, sent on the next poll.
    failed: Option<StreamError>,
    done: bool,
}

impl Streamed {
    /// Wraps the body of the handler's `answer`, for the request `usage`
    /// records.
    pub fn new(
        inner: GuestBody,
        (cap, usage): (usize, Pending),
        cancel: CancelToken,
        ended_well: tokio::sync::oneshot::Receiver<bool>,
    ) -> Self {
        usage.body_streamed();
        Streamed {
            inner,
            cap,
            sent: 0,
            usage,
            apart: None,
            cut: None,
            declared: None,
            unsent_after: None,
            cancel,
            ended_well,
            inner_done: false,
            failed: None,
            done: false,
        }
    }
}

impl Streamed {
    /// The length the response's head declares, on HTTP/1 (HTTP/2 reads a
    /// body to its end): hyper writes that many bytes and then drops the
    /// body without asking it for its end.
    pub fn declared(mut self, length: Option<u64>) -> Self {
        self.declared = length;
        self
    }

    /// Counts this body in `apart` while it is read apart from its
    /// connection.
    pub fn counted_in(mut self, apart: Arc<AtomicUsize>) -> Self {
        self.apart = Some(apart);
        self
    }

    /// A response that may carry no body: its head goes out with
    /// [`Body::Unsent`], and the handler's body is read to its end apart
    /// ([`Streamed::finish_apart`]). Were it handed to hyper, hyper would
    /// drop it unpolled, which reads as the client gone: the guest stopped
    /// mid-work and the request recorded `client-gone`.
    pub fn drain(mut self) -> Body {
        let hint = self.inner.size_hint();
        self.unsent_after = Some(0);
        self.finish_apart();
        Body::Unsent(hint)
    }

    /// Reads the rest of the body to its end on a task of its own, under
    /// the same cap, and drops it: the client has all it will get, and the
    /// guest goes on to its own end (its deadline, and the server's drain
    /// timeout at shutdown, still hold it; its client leaving does not).
    fn finish_apart(mut self) {
        let counted = self.apart.take().map(Apart::enter);
        tokio::spawn(async move {
            let _counted = counted;
            let mut this = self;
            while let Some(Ok(_)) = std::future::poll_fn(|cx| this.poll(cx)).await {}
            // Recorded (its drop) before it stops being counted.
            drop(this);
        });
    }

    /// This body, moved out of `self` (left ended, recording nothing).
    fn take(&mut self) -> Streamed {
        let empty = http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        let rest = Streamed {
            inner: std::mem::replace(&mut self.inner, empty),
            cap: self.cap,
            sent: self.sent,
            usage: self.usage.clone(),
            apart: self.apart.take(),
            cut: self.cut.take(),
            declared: self.declared,
            unsent_after: self.unsent_after,
            cancel: self.cancel.clone(),
            ended_well: std::mem::replace(&mut self.ended_well, tokio::sync::oneshot::channel().1),
            inner_done: self.inner_done,
            failed: self.failed.take(),
            done: self.done,
        };
        self.done = true;
        rest
    }
}

/// One body read apart, counted while it lives.
struct Apart(Arc<AtomicUsize>);

impl Apart {
    fn enter(n: Arc<AtomicUsize>) -> Apart {
        n.fetch_add(1, Ordering::AcqRel);
        Apart(n)
    }
}

impl Drop for Apart {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        if self.done {
            let sent = self.unsent_after.unwrap_or(self.sent) as u64;
            self.usage.body_ended(sent, self.cut);
            return;
        }
        // hyper wrote the length the head declared and dropped the body
        // without asking for its end: the client has it all, and the
        // guest's end is awaited apart.
        if self.cut.is_none()
            && self.unsent_after.is_none()
            && self.declared == Some(self.sent as u64)
            && tokio::runtime::Handle::try_current().is_ok()
        {
            let mut rest = self.take();
            rest.unsent_after = Some(rest.sent);
            rest.finish_apart();
            return;
        }
        self.cancel.cancel();
        // Dropped before its end, with no reason of its own: the client
        // went away (or the connection broke).
        let cut = self.cut.or(Some(Cut::Because(CLIENT_GONE.0)));
        let sent = self.unsent_after.unwrap_or(self.sent) as u64;
        self.usage.body_ended(sent, cut);
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        match self.get_mut() {
            Body::Full(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(|never| match never {}))),
            Body::Stream(s) => s.poll(cx),
            Body::Unsent(_) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(b) => b.is_end_stream(),
            Body::Stream(s) => s.done,
            // As the handler's body would say: hyper writes the same head.
            Body::Unsent(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(b) => b.size_hint(),
            Body::Stream(s) => s.inner.size_hint(),
            Body::Unsent(hint) => *hint,
        }
    }
}

impl Streamed {
    /// Ends the body with `e`, after one more poll (see [`Streamed`]).
    fn fail(
        &mut self,
        e: StreamError,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        self.cut = Some(match e {
            StreamError::OverCap(_) => Cut::Because(ErrorKind::OutputLimit.as_str()),
            StreamError::Guest(_) => Cut::Guest,
        });
        self.failed = Some(e);
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(e) = self.failed.take() {
            self.done = true;
            return Poll::Ready(Some(Err(e)));
        }
        if self.inner_done {
            let ended_well = match Pin::new(&mut self.ended_well).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r.unwrap_or(false),
            };
            if ended_well {
                self.done = true;
                return Poll::Ready(None);
            }
            let e = StreamError::Guest("the handler failed before it finished its body".into());
            return self.fail(e, cx);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.inner_done = true;
                self.poll(cx)
            }
            Poll::Ready(Some(Err(e))) => {
                self.cancel.cancel();
                self.fail(StreamError::Guest(format!("{e:?}")), cx)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    // `sent` counts what goes out: not a frame past the cap.
                    if self.sent + data.len() > self.cap {
                        self.cancel.cancel();
                        return self.fail(StreamError::OverCap(self.cap), cx);
                    }
                    self.sent += data.len();
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }
}
