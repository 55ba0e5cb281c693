//! The byte budget for request and response bodies held in memory.
//!
//! A request reserves its body's bytes before they are read (all of them
//! when `Content-Length` says how many, else as they arrive) and keeps the
//! reservation until its invocation has stopped, since stdin holds the
//! bytes. A response's bytes are charged when it is built and released when
//! the last copy of them is dropped: once written to the client, or when a
//! client that does not read is disconnected. A response never waits (its
//! bytes already exist); it can take the budget past its limit, and then
//! new requests, with a body or without, wait until responses drain.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;

/// Bytes of bodies in memory, and the most allowed.
pub struct BodyBudget {
    max: usize,
    used: Mutex<usize>,
    freed: Notify,
}

/// Bytes taken from a [`BodyBudget`], given back on drop.
pub struct Hold {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl BodyBudget {
    pub fn new(max: usize) -> Arc<BodyBudget> {
        Arc::new(BodyBudget {
            max,
            used: Mutex::new(0),
            freed: Notify::new(),
        })
    }

    /// The limit in bytes.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        *self.used.lock().unwrap()
    }

    /// An empty hold, to [`Hold::grow`].
    pub fn none(self: &Arc<Self>) -> Hold {
        Hold {
            budget: self.clone(),
            bytes: 0,
        }
    }

    /// Takes `bytes` once they fit (or once nothing else is held, so one body
    /// larger than the whole budget still gets through alone). Zero bytes
    /// wait while more than the budget is held.
    pub async fn reserve(self: &Arc<Self>, bytes: usize) -> Hold {
        let mut hold = self.none();
        hold.grow(bytes).await;
        hold
    }

    /// Takes `bytes` now, whatever is held.
    pub fn force(self: &Arc<Self>, bytes: usize) -> Hold {
        *self.used.lock().unwrap() += bytes;
        Hold {
            budget: self.clone(),
            bytes,
        }
    }

    /// `bytes` whose budget is given back when the last clone of the
    /// returned `Bytes` is dropped.
    pub fn charge(self: &Arc<Self>, bytes: Bytes) -> Bytes {
        if bytes.is_empty() {
            return bytes;
        }
        let hold = self.force(bytes.len());
        Bytes::from_owner(Charged { bytes, _hold: hold })
    }

    /// Takes `more` if it fits besides what others hold.
    fn try_take(&self, held_by_caller: usize, more: usize) -> bool {
        let mut used = self.used.lock().unwrap();
        let others = *used - held_by_caller;
        if others == 0 || *used + more <= self.max {
            *used += more;
            true
        } else {
            false
        }
    }
}

impl Hold {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Holds `more` bytes besides these if they fit now.
    pub fn try_grow(&mut self, more: usize) -> bool {
        let ok = self.budget.try_take(self.bytes, more);
        if ok {
            self.bytes += more;
        }
        ok
    }

    /// Holds `more` bytes besides these, waiting until they fit.
    pub async fn grow(&mut self, more: usize) {
        if self.try_grow(more) {
            return;
        }
        loop {
            let freed = self.budget.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a release between the check
            // and the wait is not missed.
            freed.as_mut().enable();
            if self.budget.try_take(self.bytes, more) {
                self.bytes += more;
                return;
            }
            freed.await;
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.bytes > 0 {
            *self.budget.used.lock().unwrap() -= self.bytes;
            self.budget.freed.notify_waiters();
        }
    }
}

/// Response bytes and their share of the budget.
struct Charged {
    bytes: Bytes,
    _hold: Hold,
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reservation_waits_until_bytes_are_released() {
        let b = BodyBudget::new(100);
        let first = b.reserve(80).await;
        let waiter = b.reserve(30);
        tokio::pin!(waiter);
        // Polled once: it cannot fit while 80 are held.
        assert!(futures_util::poll!(waiter.as_mut()).is_pending());
        drop(first);
        let held = waiter.await;
        assert_eq!(held.bytes(), 30);
        assert_eq!(b.used(), 30);
        drop(held);
        assert_eq!(b.used(), 0);
    }

    #[tokio::test]
    async fn a_bodyless_request_waits_while_responses_overdraw_the_budget() {
        let b = BodyBudget::new(100);
        let response = b.charge(Bytes::from(vec![0u8; 150]));
        let waiter = b.reserve(0);
        tokio::pin!(waiter);
        assert!(futures_util::poll!(waiter.as_mut()).is_pending());
        drop(response);
        assert_eq!(waiter.await.bytes(), 0);
    }

    #[tokio::test]
    async fn one_body_larger_than_the_budget_passes_alone() {
        let b = BodyBudget::new(10);
        let h = b.reserve(1000).await;
        assert_eq!(b.used(), 1000);
        drop(h);
        assert_eq!(b.used(), 0);
    }

    #[tokio::test]
    async fn charged_response_bytes_are_released_with_the_last_copy() {
        let b = BodyBudget::new(10);
        let body = b.charge(Bytes::from(vec![7u8; 64]));
        let copy = body.clone();
        assert_eq!(b.used(), 64);
        drop(body);
        assert_eq!(b.used(), 64);
        assert_eq!(&copy[..2], &[7, 7]);
        drop(copy);
        assert_eq!(b.used(), 0);
    }
}
