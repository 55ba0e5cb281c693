//! One request's usage record, and [`Pending`]: the record while the
//! request is in progress, shared by its handler and the task waiting for
//! its worker, so that it is recorded exactly once, with the worker's
//! figures, even when the client goes away first.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::Accounting;

/// The `Wasmbox-Error` kind and status of a request whose client went away.
pub const CLIENT_GONE: (&str, u16) = ("client-gone", 499);

/// What one request cost, and how it ended.
#[derive(Debug, Clone)]
pub struct Usage {
    pub request_id: String,
    /// The function's file name; `None` if the request named none that
    /// exists.
    pub function: Option<String>,
    pub status: u16,
    /// `ok`, or the `Wasmbox-Error` kind.
    pub outcome: &'static str,
    /// Whether an invocation ran (its CPU and peak memory are figures).
    pub ran: bool,
    /// CPU time of the invocation's thread.
    pub cpu: Duration,
    /// From arrival to outcome (server side).
    pub wall: Duration,
    /// Waiting for admission and for a worker.
    pub queue: Duration,
    /// Peak linear memory, bytes.
    pub peak_memory: usize,
    /// Memory-Request MB x seconds the reservation was held.
    pub memory_mb_seconds: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The `Wasmbox-Error` kind of the guest's failure, if it failed: the
    /// outcome of a request whose streamed body the guest broke off.
    pub failure: Option<&'static str>,
}

impl Usage {
    /// The access-log line (without its newline).
    pub fn json_line(&self) -> String {
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        serde_json::json!({
            "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "request_id": self.request_id,
            "function": self.function,
            "status": self.status,
            "error": if self.outcome == "ok" { None } else { Some(self.outcome) },
            "cpu_ms": ms(self.cpu),
            "wall_ms": ms(self.wall),
            "queue_ms": ms(self.queue),
            "peak_mb": (self.peak_memory as f64 / f64::from(1 << 20) * 1000.0).round() / 1000.0,
            "mb_seconds": (self.memory_mb_seconds * 1000.0).round() / 1000.0,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        })
        .to_string()
    }
}

struct State {
    usage: Usage,
    accounting: Arc<Accounting>,
    received: Instant,
    /// A task waits for a worker's result and will fill in its figures.
    worker_running: bool,
    /// The handler was dropped (client gone) before it finished.
    handler_gone: bool,
    /// Answered while the worker still ran, or with a streamed body still
    /// going: recorded by whichever of `worker_done` and `body_ended`
    /// comes last.
    answered: bool,
    /// Where the response's streamed body is (a wasi:http handler's).
    body: Streaming,
    /// Why the streamed body ended short, if it did.
    cut: Option<Cut>,
    /// Recorded.
    done: bool,
    /// The outcome is already counted (the client went away while the
    /// worker ran: counted at once, figures later).
    counted: bool,
}

/// Why a streamed body ended before its end: the request's outcome,
/// whatever the status its head carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// For this `Wasmbox-Error` kind (the client went away, the output
    /// limit).
    Because(&'static str),
    /// The guest failed or was stopped before it finished the body: its
    /// failure's kind.
    Guest,
}

/// Whether a request's response body is streamed, and if so whether it
/// has ended: its byte count and how it ended are known only then.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Streaming {
    /// Written at once (its length known when the handler finishes).
    No,
    /// Being sent.
    Open,
    /// Sent, cut off, or dropped.
    Ended,
}

impl State {
    /// Answered, the worker done, the body sent: nothing is left to come.
    fn settled(&self) -> bool {
        self.answered && !self.worker_running && self.body != Streaming::Open && !self.done
    }

    fn record(&mut self) {
        self.done = true;
        match self.cut {
            Some(Cut::Because(kind)) => self.usage.outcome = kind,
            // Stopped by the body's own cancel (its stream broke first):
            // the guest's failure reads `client-gone`, which it was not.
            Some(Cut::Guest) => {
                self.usage.outcome = match self.usage.failure {
                    Some(kind) if kind != CLIENT_GONE.0 => kind,
                    _ => "trap",
                }
            }
            None => {}
        }
        self.usage.wall = self.received.elapsed();
        if self.counted {
            self.accounting.record_counted(&self.usage);
        } else {
            self.accounting.record(&self.usage);
        }
    }

    fn record_client_gone(&mut self) {
        (self.usage.outcome, self.usage.status) = CLIENT_GONE;
        self.record();
    }
}

/// A request's record in progress (clones share it).
#[derive(Clone)]
pub struct Pending(Arc<Mutex<State>>);

impl Pending {
    /// The record, even if a panic poisoned it: [`Pending::worker_done`]
    /// may run while a worker unwinds, where a second panic would abort.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A record for a request that arrived at `received`.
    pub fn new(accounting: Arc<Accounting>, request_id: String, received: Instant) -> Self {
        Pending(Arc::new(Mutex::new(State {
            usage: Usage {
                request_id,
                function: None,
                status: 0,
                outcome: "ok",
                ran: false,
                cpu: Duration::ZERO,
                wall: Duration::ZERO,
                queue: Duration::ZERO,
                peak_memory: 0,
                memory_mb_seconds: 0.0,
                bytes_in: 0,
                bytes_out: 0,
                failure: None,
            },
            accounting,
            received,
            worker_running: false,
            handler_gone: false,
            answered: false,
            body: Streaming::No,
            cut: None,
            done: false,
            counted: false,
        })))
    }

    /// Changes the record (the function once known, bytes in, ...).
    pub fn update(&self, f: impl FnOnce(&mut Usage)) {
        f(&mut self.lock().usage);
    }

    /// A task now waits for the worker; it calls [`Pending::worker_done`].
    pub fn worker_started(&self) {
        self.lock().worker_running = true;
    }

    /// The worker's figures are in; if the handler has gone, this records
    /// the request (as client-gone).
    pub fn worker_done(&self, f: impl FnOnce(&mut Usage)) {
        let mut s = self.lock();
        f(&mut s.usage);
        s.worker_running = false;
        if s.settled() {
            s.record();
        } else if s.handler_gone && !s.done {
            s.record_client_gone();
        }
    }

    /// Records the request's outcome (the handler's normal end).
    pub fn finish(&self, status: u16, outcome: &'static str, bytes_out: u64) {
        let mut s = self.lock();
        if s.done {
            return;
        }
        s.usage.status = status;
        s.usage.outcome = outcome;
        if s.body == Streaming::No {
            s.usage.bytes_out = bytes_out;
        }
        // Answered while the guest still runs or its body is still being
        // sent (a wasi:http handler streaming it): recorded when both
        // have ended, with the guest's figures and the bytes sent.
        s.answered = true;
        if s.settled() {
            s.record();
        }
    }

    /// The response's body is streamed: the record waits for
    /// [`Pending::body_ended`], and takes its byte count from there.
    pub fn body_streamed(&self) {
        self.lock().body = Streaming::Open;
    }

    /// The streamed body has ended after `sent` bytes: in full (`cut` is
    /// `None`), or cut short (its head, and the status, went out before).
    pub fn body_ended(&self, sent: u64, cut: Option<Cut>) {
        let mut s = self.lock();
        s.body = Streaming::Ended;
        s.usage.bytes_out = sent;
        s.cut = cut;
        if s.settled() {
            s.record();
        }
    }

    /// A guard that, dropped before [`Pending::finish`], marks the client
    /// gone (recorded now, or by the worker's task when it has figures).
    pub fn guard(&self) -> Abandon {
        Abandon(self.clone())
    }
}

/// See [`Pending::guard`].
pub struct Abandon(Pending);

impl Drop for Abandon {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        if s.done || s.answered {
            return;
        }
        s.handler_gone = true;
        if s.worker_running {
            // Counted now, as the outcome is known; the figures (the CPU
            // its guest burns until it stops) follow from the worker.
            (s.usage.outcome, s.usage.status) = CLIENT_GONE;
            s.accounting.count(&s.usage);
            s.counted = true;
        } else {
            s.record_client_gone();
        }
    }
}
