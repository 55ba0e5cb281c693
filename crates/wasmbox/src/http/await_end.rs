//! Waiting for an admitted invocation's end on the request's own thread.
//!
//! When a request is the only one the server is handling, its HTTP thread
//! has nothing else to do while the guest runs, and parking it costs the
//! reply a wake-up: on a virtual machine whose idle vCPUs halt, waking one
//! takes tens of microseconds, as long as a hello call itself. So a lone
//! request polls its result for a short while before it parks; a request
//! that has company (another one comes in meanwhile) parks at once, leaving
//! the thread to the others, and so does one where the process has a single
//! CPU to run on (the guest's worker would wait for the poller's core).
//! The poll is bounded, so a long call costs at most [`POLL_FOR`] of an
//! otherwise idle core, and it is tried only while calls end within that
//! time and come back to back ([`EndPoll`]): a server of long calls, or of
//! lone calls far apart, parks at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::oneshot::{self, error::TryRecvError};
use wasmbox_runtime::executor::several_cpus;

/// How long a lone request polls for its invocation's end before it parks:
/// longer than a small guest's call, worker wake-up included.
const POLL_FOR: Duration = Duration::from_micros(100);

/// How soon after the last lone call's end a request must start waiting
/// for it to poll: calls further apart find the worker parked anyway
/// (its watch has run out), and the poll would only hold a core while the
/// worker wakes.
const BACK_TO_BACK: Duration = Duration::from_millis(1);

/// When lone requests poll for their end: only while calls come back to
/// back (within [`BACK_TO_BACK`] of the last one's end) and end quickly
/// (the last one within [`POLL_FOR`]). A server whose calls are long, or
/// come far apart, parks at once and spends no CPU on polling.
pub struct EndPoll {
    /// The last call took longer than [`POLL_FOR`]: a poll would have run
    /// out.
    futile: AtomicBool,
    /// When the last call ended, in ns since `epoch`.
    last_end: AtomicU64,
    epoch: Instant,
}

impl Default for EndPoll {
    fn default() -> Self {
        EndPoll {
            futile: AtomicBool::new(false),
            last_end: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl EndPoll {
    /// The value `rx` delivers: polled for while `in_flight` stays at one
    /// (this request alone) for up to [`POLL_FOR`] if polling pays (see
    /// [`EndPoll`]), then awaited; `None` if its sender was dropped unsent.
    pub(super) async fn wait<T>(
        &self,
        rx: oneshot::Receiver<T>,
        in_flight: &AtomicUsize,
    ) -> Option<T> {
        let since = Instant::now();
        let end = if self.pays(since) {
            self.poll(rx, in_flight, since).await
        } else {
            rx.await.ok()
        };
        // One clock read for both: this runs on every request.
        let ended = Instant::now();
        self.futile
            .store(ended - since > POLL_FOR, Ordering::Relaxed);
        let ns = u64::try_from((ended - self.epoch).as_nanos()).unwrap_or(u64::MAX);
        self.last_end.store(ns, Ordering::Relaxed);
        end
    }

    fn pays(&self, since: Instant) -> bool {
        let last = Duration::from_nanos(self.last_end.load(Ordering::Relaxed));
        let apart = since.saturating_duration_since(self.epoch + last);
        several_cpus() && !self.futile.load(Ordering::Relaxed) && apart < BACK_TO_BACK
    }

    async fn poll<T>(
        &self,
        mut rx: oneshot::Receiver<T>,
        in_flight: &AtomicUsize,
        since: Instant,
    ) -> Option<T> {
        while in_flight.load(Ordering::Relaxed) == 1 && since.elapsed() < POLL_FOR {
            match rx.try_recv() {
                Ok(v) => return Some(v),
                // The receiver is spent: it must not be awaited now.
                Err(TryRecvError::Closed) => return None,
                Err(TryRecvError::Empty) => {
                    // Whatever else this thread has queued runs first (a
                    // request that came in meanwhile ends the poll), then
                    // the core goes to any thread of the cgroup queued on
                    // it (the guest's worker, at home, if it is there).
                    Reschedule(false).await;
                    std::thread::yield_now();
                }
            }
        }
        rx.await.ok()
    }
}

/// Ready on its second poll, waking its task at once on the first: the
/// task goes to the back of its thread's run queue. Not tokio's
/// `yield_now`, which defers the wake-up until the thread has looked for
/// other work, so that each poll has the thread search other threads'
/// queues and, leaving the search, wake a parked one (on a VM, a halted
/// vCPU: what the poll is there to avoid).
struct Reschedule(bool);

impl Future for Reschedule {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_lone_request_gets_a_value_sent_from_another_thread() {
        let in_flight = AtomicUsize::new(1);
        let (tx, rx) = oneshot::channel();
        let sender = std::thread::spawn(move || tx.send(7).unwrap());
        assert_eq!(EndPoll::default().wait(rx, &in_flight).await.unwrap(), 7);
        sender.join().unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_lost_result_is_an_error_not_a_hang() {
        for alone in [1, 2] {
            let in_flight = AtomicUsize::new(alone);
            let (tx, rx) = oneshot::channel::<u8>();
            drop(tx);
            assert!(EndPoll::default().wait(rx, &in_flight).await.is_none());
        }
    }

    /// The poll gives the thread to its other tasks: the value comes from
    /// a task on the same single-threaded runtime, which a poll that held
    /// the thread would keep from running until the poll ran out, and the
    /// call then counts as longer than a poll (`futile`). A few tries, as
    /// a loaded machine may preempt this thread for longer than a poll.
    #[tokio::test(flavor = "current_thread")]
    async fn the_poll_lets_the_threads_other_tasks_run() {
        let in_flight = AtomicUsize::new(1);
        let poll = EndPoll::default();
        let mut within_a_poll = false;
        for _ in 0..50 {
            // Polling on (a try that ran out turned it off).
            poll.futile.store(false, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            tokio::spawn(async move { tx.send("end").unwrap() });
            assert_eq!(poll.wait(rx, &in_flight).await.unwrap(), "end");
            if !poll.futile.load(Ordering::Relaxed) {
                within_a_poll = true;
                break;
            }
        }
        assert!(
            within_a_poll,
            "the task sending the end ran only after the poll"
        );
    }

    /// An end that comes later than a poll would wait turns polling off
    /// for the next lone request; one that comes in time turns it back on.
    #[tokio::test(flavor = "current_thread")]
    async fn polling_stays_off_while_calls_outlast_it() {
        let poll = EndPoll::default();
        let in_flight = AtomicUsize::new(1);
        let (tx, rx) = oneshot::channel();
        let late = std::thread::spawn(move || {
            std::thread::sleep(POLL_FOR * 200);
            tx.send(()).unwrap();
        });
        poll.wait(rx, &in_flight).await.unwrap();
        late.join().unwrap();
        assert!(poll.futile.load(Ordering::Relaxed));
        // An end sent already comes at once, unless this thread is
        // preempted for longer than a poll (a loaded machine): a few tries.
        let mut back_on = false;
        for _ in 0..50 {
            let (tx, rx) = oneshot::channel();
            tx.send(()).unwrap();
            poll.wait(rx, &in_flight).await.unwrap();
            if !poll.futile.load(Ordering::Relaxed) {
                back_on = true;
                break;
            }
        }
        assert!(back_on, "a call that ended at once left polling off");
    }

    /// A request that comes long after the last call's end does not poll
    /// (the worker has parked by then); one right after it does, where the
    /// process has several CPUs.
    #[tokio::test(flavor = "current_thread")]
    async fn only_calls_back_to_back_poll() {
        let poll = EndPoll {
            epoch: Instant::now() - BACK_TO_BACK * 10,
            ..EndPoll::default()
        };
        // The last end was at the epoch, ten times the window ago.
        assert!(!poll.pays(Instant::now()));
        // An end sent already comes at once, unless this thread is
        // preempted for longer than a poll (a loaded machine): a few tries.
        let mut pays = false;
        for _ in 0..50 {
            let (tx, rx) = oneshot::channel();
            tx.send(()).unwrap();
            poll.wait(rx, &AtomicUsize::new(1)).await.unwrap();
            pays = poll.pays(Instant::now());
            if pays {
                break;
            }
        }
        assert_eq!(pays, several_cpus());
    }
}
