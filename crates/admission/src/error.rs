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
    /// The request needs more CPU or memory than the whole limit: it can
    /// never be admitted on this server, so do not retry it here.
    #[error("the request needs {want} but this server can admit at most {limit} in total; it can never run here")]
    TooLarge {
        /// What the request declared, as text (millicores and MB).
        want: String,
        /// The limit, as text (capacity x overbooking).
        limit: String,
    },
    /// The request did not fit now and the queue named by `scope` is full:
    /// refused at once without waiting; it may be admitted later.
    #[error("{} is full ({waiting} requests, {queued_mb} MB waiting; {} {max_queue} requests, {max_queue_mb} MB)", .scope.queue(), .scope.limits())]
    QueueFull {
        /// Which queue limit refused it.
        scope: QueueScope,
        /// Requests waiting in that queue.
        waiting: usize,
        /// MB declared by those requests.
        queued_mb: u64,
        /// That queue's limit in requests.
        max_queue: usize,
        /// That queue's limit in MB.
        max_queue_mb: u64,
    },
    /// It waited `queue_timeout` (the duration carried) without being
    /// admitted and has left the queue.
    #[error("waited {0:?} in the admission queue without being admitted")]
    Timeout(Duration),
    /// The server is draining and takes no new requests, or was closed
    /// while this one waited: send it elsewhere.
    #[error("the server is draining and admits no new requests")]
    Draining,
}
