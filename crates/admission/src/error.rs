//! Why a request was not admitted.

use std::time::Duration;

use crate::FunctionKey;

/// Which queue limit refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueScope {
    /// The whole server's `max_queue` / `max_queue_mb`.
    Server,
    /// One function's share of them (`max_function_queue_share`).
    Function(FunctionKey),
}

impl QueueScope {
    fn queue(&self) -> String {
        match self {
            QueueScope::Server => "the server's admission queue".into(),
            QueueScope::Function(f) => format!("the admission queue of function `{f}`"),
        }
    }

    fn limits(&self) -> &'static str {
        match self {
            QueueScope::Server => "the server queues at most",
            QueueScope::Function(_) => "one function may queue at most",
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejected {
    #[error("the request needs {want} but this server can admit at most {limit} in total; it can never run here")]
    TooLarge { want: String, limit: String },
    #[error("{} is full ({waiting} requests, {queued_mb} MB waiting; {} {max_queue} requests, {max_queue_mb} MB)", .scope.queue(), .scope.limits())]
    QueueFull {
        scope: QueueScope,
        waiting: usize,
        queued_mb: u64,
        max_queue: usize,
        max_queue_mb: u64,
    },
    #[error("waited {0:?} in the admission queue without being admitted")]
    Timeout(Duration),
    #[error("the server is draining and admits no new requests")]
    Draining,
}
