//! A one-way stop signal an invocation can be interrupted by, from another
//! thread: checked at every epoch tick while the guest executes Wasm, and
//! awaited while it is blocked in a host call (a sleep, a read), so both
//! stop at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Set from another thread to stop an invocation. Cloning shares the signal.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    set: AtomicBool,
    notify: Notify,
}

impl CancelToken {
    /// Raises the signal; every current and future waiter sees it.
    pub fn cancel(&self) {
        self.0.set.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    /// Whether the signal has been raised.
    pub fn is_cancelled(&self) -> bool {
        self.0.set.load(Ordering::Relaxed)
    }

    /// Resolves once the signal is raised (at once if it already was).
    pub async fn cancelled(&self) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            // Register before checking the flag, so a `cancel` in between
            // is not lost.
            notified.as_mut().enable();
            if self.0.set.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_wakes_on_cancel_from_another_thread() {
        let t = CancelToken::default();
        let t2 = t.clone();
        let waiter = tokio::spawn(async move { t2.cancelled().await });
        std::thread::spawn(move || t.cancel()).join().unwrap();
        waiter.await.unwrap();
    }

    #[tokio::test]
    async fn cancelled_before_waiting_resolves_at_once() {
        let t = CancelToken::default();
        t.cancel();
        assert!(t.is_cancelled());
        t.cancelled().await;
    }
}
