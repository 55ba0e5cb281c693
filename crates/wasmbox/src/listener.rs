//! The serving port's front door: accepts connections up to a limit, backs
//! off when accepting fails, and serves each connection with hyper under a
//! header-read timeout, an idle timeout and a write timeout. HTTP/1.1 only
//! unless HTTP/2 is enabled (then with bounded streams); no upgrades.
//!
//! Limits and what a client sees (README, "Limits"):
//! - `max_connections` open at once: past it the server stops accepting and
//!   new connections wait in the kernel's backlog;
//! - headers not complete within `header_read_timeout`: the connection is
//!   closed (hyper);
//! - no request in progress (a response's body counts until it is sent)
//!   for `idle_timeout`: closed. Bytes that carry no request do not count:
//!   an HTTP/2 client sending only PINGs, which hyper answers, is idle;
//! - a response whose writes have waited `write_timeout` in all for the
//!   client to read (one that does not read, or reads a little now and
//!   then): closed, and the response's memory freed.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::FrontConfig;
use crate::http::{self, App};

/// The serving port's connection builder and limit.
pub struct Front {
    config: FrontConfig,
    builder: auto::Builder<TokioExecutor>,
    slots: Arc<Semaphore>,
    /// Open connections (for metrics).
    open: Arc<AtomicUsize>,
}

impl Front {
    pub fn new(config: FrontConfig, open: Arc<AtomicUsize>) -> Front {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_buf_size(MAX_READ_BUFFER);
        if let Some(streams) = config.http2_max_streams {
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(streams);
        } else {
            builder = builder.http1_only();
        }
        let slots = Arc::new(Semaphore::new(config.max_connections));
        Front {
            config,
            builder,
            slots,
            open,
        }
    }

    /// Waits for a free connection slot, then for a connection.
    pub async fn accept(&self, listener: &TcpListener, backoff: &mut Backoff) -> Accepted {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed");
        let stream = accept(listener, backoff).await;
        Accepted { stream, slot }
    }

    /// Serves one accepted connection on its own task until it ends, one of
    /// its timeouts closes it, or `graceful` shuts it down.
    pub fn serve(&self, accepted: Accepted, app: Arc<App>, graceful: &GracefulShutdown) {
        let Accepted { stream, slot } = accepted;
        let _ = stream.set_nodelay(true);
        let watch = Arc::new(Watch::new());
        let io = TokioIo::new(Watched {
            inner: stream,
            watch: watch.clone(),
        });
        let active = watch.clone();
        let service = service_fn(move |req| {
            let app = app.clone();
            let request = Watch::request(&active);
            async move {
                let response = http::handle(app, req).await;
                Ok::<_, std::convert::Infallible>(request.until_sent(response))
            }
        });
        let conn = graceful.watch(self.builder.serve_connection(io, service).into_owned());
        let (idle, write) = (self.config.idle_timeout, self.config.write_timeout);
        let open = Open::count(self.open.clone());
        tokio::spawn(async move {
            let (_slot, _open) = (slot, open);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                },
                why = watch.expired(idle, write) => {
                    tracing::debug!(reason = why, "connection closed");
                }
            }
        });
    }
}

/// The timeouts of a side port (the probe port, the admin listener): few
/// connections, small requests, so short limits.
pub const SIDE_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// See [`SIDE_HEADER_TIMEOUT`].
pub const SIDE_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// See [`SIDE_HEADER_TIMEOUT`].
pub const SIDE_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections a side port serves at once.
pub const SIDE_MAX_CONNECTIONS: usize = 64;

/// Serves a side port (the probe port, the admin listener) with `handler`
/// until `stop` changes: at most [`SIDE_MAX_CONNECTIONS`] at once (past
/// that, new ones wait in the backlog), accept errors backed off.
pub async fn serve_side_port<F, Fut>(
    listener: &TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
    handler: F,
) where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = hyper::Response<crate::http::Body>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let slots = Arc::new(Semaphore::new(SIDE_MAX_CONNECTIONS));
    let mut backoff = Backoff::default();
    loop {
        let slot = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = stop.changed() => return,
        };
        let stream = tokio::select! {
            s = accept(listener, &mut backoff) => s,
            _ = stop.changed() => return,
        };
        tokio::spawn(serve_side_connection(stream, handler.clone(), slot));
    }
}

/// Serves one connection of a side port until it ends or one of the side
/// timeouts (header read, idle, write) closes it: HTTP/1.1, the same
/// watchdog as the serving port, so a client that sends nothing or reads
/// nothing cannot hold a side port's connection slot.
async fn serve_side_connection<F, Fut>(
    stream: TcpStream,
    handler: Arc<F>,
    _slot: OwnedSemaphorePermit,
) where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = hyper::Response<crate::http::Body>> + Send + 'static,
{
    let watch = Arc::new(Watch::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        watch: watch.clone(),
    });
    let active = watch.clone();
    let service = service_fn(move |req| {
        let handler = handler.clone();
        let request = Watch::request(&active);
        async move { Ok::<_, std::convert::Infallible>(request.until_sent(handler(req).await)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(SIDE_HEADER_TIMEOUT)
        .max_buf_size(MAX_READ_BUFFER)
        .serve_connection(io, service);
    tokio::select! {
        _ = conn => {}
        _ = watch.expired(SIDE_IDLE_TIMEOUT, SIDE_WRITE_TIMEOUT) => {}
    }
}

/// Counts a connection as open while it lives.
struct Open(Arc<AtomicUsize>);
impl Open {
    fn count(n: Arc<AtomicUsize>) -> Open {
        n.fetch_add(1, Ordering::Relaxed);
        Open(n)
    }
}
impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// hyper's per-connection read buffer, and so the largest request head
/// (431 past it): 64 KiB instead of hyper's default of about 400 KiB, which
/// times 16,384 connections would be 6.5 GiB outside any budget.
const MAX_READ_BUFFER: usize = 64 << 10;

/// A connection and the slot it holds until it closes.
pub struct Accepted {
    stream: TcpStream,
    slot: OwnedSemaphorePermit,
}

/// The wait after a failed `accept` (EMFILE, ENFILE, ENOBUFS...): 5 ms,
/// doubling to 1 s, back to nothing after a success. Without it a
/// descriptor shortage spins a core on a listener that is always readable.
#[derive(Default)]
pub struct Backoff(Option<Duration>);

const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts the next connection, waiting out errors with `backoff`.
pub async fn accept(listener: &TcpListener, backoff: &mut Backoff) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff.0 = None;
                return stream;
            }
            Err(e) => {
                let wait = backoff
                    .0
                    .map_or(FIRST_BACKOFF, |w| (w * 2).min(MAX_BACKOFF));
                backoff.0 = Some(wait);
                tracing::warn!(error = %e, retry_in = ?wait, "accept failed");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// What a connection's requests and writes last did, for its timeouts.
struct Watch {
    start: Instant,
    /// Milliseconds since `start` at which the last request began or its
    /// response was sent (or dropped).
    last_request: AtomicU64,
    /// Milliseconds since `start` + 1 at which a write started waiting for
    /// the client to read; 0 when no write waits.
    write_blocked: AtomicU64,
    /// Milliseconds writes have waited for the client since the current
    /// request began (earlier waits, not counting one in progress): a
    /// client that reads a little now and then cannot reset the clock.
    write_waited: AtomicU64,
    /// Requests being handled.
    requests: AtomicUsize,
    /// Response frames handed to hyper and not yet followed by its asking
    /// for the next: HTTP/2 holds a frame until the client grants window,
    /// with no socket write waiting meanwhile.
    frames_out: AtomicUsize,
    /// Milliseconds since `start` + 1 at which `frames_out` left 0; 0 when
    /// none is out.
    frames_out_since: AtomicU64,
}

/// Counts a request as in progress while it lives: from its head until its
/// response's body is sent or dropped ([`Request::until_sent`]).
struct Request(Arc<Watch>);
impl Drop for Request {
    fn drop(&mut self) {
        let w = &self.0;
        w.last_request.store(w.now_ms(), Ordering::Relaxed);
        w.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Request {
    /// `response`, its body holding this request in progress until it is
    /// sent or dropped: a long streamed body is not an idle connection.
    fn until_sent(self, response: hyper::Response<http::Body>) -> hyper::Response<Sending> {
        response.map(|body| Sending {
            body,
            request: self,
            out: false,
        })
    }
}

/// A response body, with its request counted in progress while it lives,
/// and each frame it hands hyper counted as waiting to be written until
/// hyper asks for the next: a client that grants no HTTP/2 window holds
/// its response there, and meets the write timeout (one that grants a
/// little now and then restarts that wait each time).
struct Sending {
    body: http::Body,
    request: Request,
    /// A frame is out, not yet followed by a request for the next.
    out: bool,
}

impl Drop for Sending {
    fn drop(&mut self) {
        if self.out {
            self.request.0.frame_taken();
        }
    }
}

impl hyper::body::Body for Sending {
    type Data = bytes::Bytes;
    type Error = <http::Body as hyper::body::Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if std::mem::take(&mut this.out) {
            this.request.0.frame_taken();
        }
        let r = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &r {
            if frame.is_data() {
                this.out = true;
                this.request.0.frame_out();
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Watch {
    fn new() -> Watch {
        Watch {
            start: Instant::now(),
            last_request: AtomicU64::new(0),
            write_blocked: AtomicU64::new(0),
            write_waited: AtomicU64::new(0),
            requests: AtomicUsize::new(0),
            frames_out: AtomicUsize::new(0),
            frames_out_since: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn request(this: &Arc<Watch>) -> Request {
        this.requests.fetch_add(1, Ordering::Relaxed);
        this.last_request.store(this.now_ms(), Ordering::Relaxed);
        // Each response gets the whole write timeout.
        this.write_waited.store(0, Ordering::Relaxed);
        Request(this.clone())
    }

    fn write_waits(&self) {
        if self.write_blocked.load(Ordering::Relaxed) == 0 {
            self.write_blocked
                .store(self.now_ms() + 1, Ordering::Relaxed);
        }
    }

    fn write_done(&self) {
        let since = self.write_blocked.swap(0, Ordering::Relaxed);
        if since != 0 {
            let waited = (self.now_ms() + 1).saturating_sub(since);
            self.write_waited.fetch_add(waited, Ordering::Relaxed);
        }
    }

    /// A response frame went to hyper.
    fn frame_out(&self) {
        if self.frames_out.fetch_add(1, Ordering::Relaxed) == 0 {
            self.frames_out_since
                .store(self.now_ms() + 1, Ordering::Relaxed);
        }
    }

    /// hyper asked for the frame after one it was handed (or dropped the
    /// body). The wait is not added to `write_waited`: on HTTP/1 the same
    /// wait is a socket write's, counted there already.
    fn frame_taken(&self) {
        if self.frames_out.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.frames_out_since.store(0, Ordering::Relaxed);
        }
    }

    /// Resolves when the connection has been idle for `idle` or a write has
    /// waited for `write`; says which.
    async fn expired(&self, idle: Duration, write: Duration) -> &'static str {
        let tick = (idle.min(write) / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let (idle, write) = (idle.as_millis() as u64, write.as_millis() as u64);
        loop {
            tokio::time::sleep(tick).await;
            let now = self.now_ms();
            let blocked = self.write_blocked.load(Ordering::Relaxed);
            let since = |at: u64| {
                if at == 0 {
                    0
                } else {
                    (now + 1).saturating_sub(at)
                }
            };
            // A socket write waiting, or a frame the client has not made
            // room for: the same wait seen twice counts once.
            let waiting = since(blocked).max(since(self.frames_out_since.load(Ordering::Relaxed)));
            if self.write_waited.load(Ordering::Relaxed) + waiting >= write {
                return "write timeout: the client is not reading its response";
            }
            if self.requests.load(Ordering::Relaxed) == 0
                && blocked == 0
                && now.saturating_sub(self.last_request.load(Ordering::Relaxed)) >= idle
            {
                return "idle timeout";
            }
        }
    }
}

/// A connection's stream, reporting its writes' waits to its [`Watch`].
struct Watched {
    inner: TcpStream,
    watch: Arc<Watch>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.written(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.written(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.written(&r);
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Watched {
    fn written<T>(&self, r: &Poll<io::Result<T>>) {
        match r {
            Poll::Pending => self.watch.write_waits(),
            Poll::Ready(_) => self.watch.write_done(),
        }
    }
}
