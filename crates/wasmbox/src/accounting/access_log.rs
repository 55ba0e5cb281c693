//! The access log (`--access-log PATH`, or `-` for stdout): one JSON object
//! per request, written by a thread of its own so that a slow disk never
//! holds up a request. At most [`QUEUE`] lines wait; past that lines are
//! dropped and counted (`wasmbox_access_log_dropped_total`).

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

/// Lines waiting to be written, at most.
pub const QUEUE: usize = 8192;

/// The writer's handle.
pub struct AccessLog {
    lines: SyncSender<String>,
    /// Lines dropped because the writer fell behind.
    pub dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Opens `target` (`-`: stdout; else a file, appended to, created with
    /// mode 0640) and starts the writer thread.
    pub fn open(target: &Path) -> std::io::Result<AccessLog> {
        let out: Box<dyn Write + Send> = if target == Path::new("-") {
            Box::new(std::io::stdout())
        } else {
            use std::os::unix::fs::OpenOptionsExt;
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o640)
                    .open(target)?,
            )
        };
        let (tx, rx) = sync_channel::<String>(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(out);
                while let Ok(line) = rx.recv() {
                    let _ = out.write_all(line.as_bytes());
                    // Write out whatever else is waiting, then flush once.
                    while let Ok(more) = rx.try_recv() {
                        let _ = out.write_all(more.as_bytes());
                    }
                    if let Err(e) = out.flush() {
                        tracing::warn!("access log: cannot write: {e}");
                    }
                }
            })?;
        Ok(AccessLog {
            lines: tx,
            dropped: Arc::default(),
        })
    }

    /// Queues one line (a JSON object; the newline is added).
    pub fn write(&self, mut line: String) {
        line.push('\n');
        match self.lines.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
