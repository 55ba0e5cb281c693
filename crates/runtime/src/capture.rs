//! Bounded capture of a guest's stdout and stderr.
//!
//! stdout is the response body: past its cap the guest is stopped (the write
//! traps) and the invocation fails with "output over cap". stderr only goes to
//! the log and into error messages: past its cap we keep the *tail*, dropping
//! the oldest bytes, and the guest goes on.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// What to do when the buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Refuse the write with a trap and remember that output overflowed.
    Trap,
    /// Keep only the last `cap` bytes.
    KeepTail,
}

#[derive(Debug)]
struct Inner {
    buf: Mutex<BytesMut>,
    overflowed: AtomicBool,
}

/// A cloneable handle on one capture buffer; hand one clone to WASI and keep
/// one to read the result.
#[derive(Debug, Clone)]
pub struct Capture {
    cap: usize,
    mode: Overflow,
    inner: Arc<Inner>,
}

/// Error placed inside the trap when stdout goes past its cap.
#[derive(Debug, thiserror::Error)]
#[error("output exceeded its cap of {cap} bytes")]
pub struct OutputLimitExceeded {
    /// The cap in bytes.
    pub cap: usize,
}

impl Capture {
    /// An empty buffer of at most `cap` bytes; `mode` says what a write past
    /// it does.
    pub fn new(cap: usize, mode: Overflow) -> Self {
        Capture {
            cap,
            mode,
            inner: Arc::new(Inner {
                buf: Mutex::new(BytesMut::new()),
                overflowed: AtomicBool::new(false),
            }),
        }
    }

    /// The cap in bytes.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// True once a write did not fit.
    pub fn overflowed(&self) -> bool {
        self.inner.overflowed.load(Ordering::Relaxed)
    }

    /// The captured bytes.
    pub fn contents(&self) -> Bytes {
        self.inner.buf.lock().unwrap().clone().freeze()
    }

    /// Takes the captured bytes out, leaving the buffer empty.
    pub fn take(&self) -> Bytes {
        std::mem::take(&mut *self.inner.buf.lock().unwrap()).freeze()
    }

    /// Appends `data`; returns how many bytes were accepted.
    fn append(&self, data: &[u8]) -> Result<usize, OutputLimitExceeded> {
        let mut buf = self.inner.buf.lock().unwrap();
        match self.mode {
            Overflow::Trap => {
                if data.len() > self.cap - buf.len() {
                    self.inner.overflowed.store(true, Ordering::Relaxed);
                    return Err(OutputLimitExceeded { cap: self.cap });
                }
                buf.extend_from_slice(data);
            }
            Overflow::KeepTail => {
                if buf.len() + data.len() > self.cap {
                    self.inner.overflowed.store(true, Ordering::Relaxed);
                }
                let data = &data[data.len().saturating_sub(self.cap)..];
                let excess = (buf.len() + data.len()).saturating_sub(self.cap);
                let _ = buf.split_to(excess);
                buf.extend_from_slice(data);
            }
        }
        Ok(data.len())
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.append(&bytes)
            .map(|_| ())
            .map_err(|e| StreamError::Trap(wasmtime::Error::new(e)))
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always admit a chunk: an over-cap write must reach `write` so the
        // overflow is recorded instead of the stream just looking closed.
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.append(data).map_err(io::Error::other))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trap_mode_refuses_past_cap_and_keeps_what_fit() {
        let c = Capture::new(5, Overflow::Trap);
        assert_eq!(c.append(b"abc").unwrap(), 3);
        assert!(c.append(b"def").is_err());
        assert!(c.overflowed());
        assert_eq!(&c.contents()[..], b"abc");
        assert_eq!(c.append(b"de").unwrap(), 2);
        assert_eq!(&c.contents()[..], b"abcde");
    }

    #[test]
    fn keep_tail_mode_keeps_the_last_bytes() {
        let c = Capture::new(4, Overflow::KeepTail);
        c.append(b"abc").unwrap();
        c.append(b"def").unwrap();
        assert_eq!(&c.contents()[..], b"cdef");
        c.append(b"0123456789").unwrap();
        assert_eq!(&c.contents()[..], b"6789");
        assert!(c.overflowed());
    }
}
