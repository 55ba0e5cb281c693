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
//! time ([`EndPoll`]): a server of long calls, or of lone calls far apart
//! whose poll keeps running out, parks at once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::oneshot::{self, error::TryRecvError};

/// How long a lone request polls for its invocation's end before it parks:
/// longer than a small guest's call, worker wake-up included.
const POLL_FOR: Duration = Duration::from_micros(100);

/// Whether polling has paid off lately: the last invocation to end took
/// longer than [`POLL_FOR`] (a poll would have run out), so the next lone
/// request parks at once; one that ends sooner turns polling back on. So
/// a server whose calls are long, or one where the poll keeps losing the
/// race, spends no CPU on it.
#[derive(Default)]
pub struct EndPoll {
    futile: AtomicBool,
}

impl EndPoll {
    /// The value `rx` delivers: polled for while `in_flight` stays at one
    /// (this request alone) for up to [`POLL_FOR`] if polling paid off
    /// lately, then awaited; `None` if its sender was dropped unsent.
    pub(super) async fn wait<T>(
        &self,
        rx: oneshot::Receiver<T>,
        in_flight: &AtomicUsize,
    ) -> Option<T> {
        let since = Instant::now();
        let end = self.poll(rx, in_flight, since).await;
        self.futile
            .store(since.elapsed() > POLL_FOR, Ordering::Relaxed);
        end
    }

    async fn poll<T>(
        &self,
        mut rx: oneshot::Receiver<T>,
        in_flight: &AtomicUsize,
        since: Instant,
    ) -> Option<T> {
        if several_cpus() && !self.futile.load(Ordering::Relaxed) {
            while in_flight.load(Ordering::Relaxed) == 1 && since.elapsed() < POLL_FOR {
                match rx.try_recv() {
                    Ok(v) => return Some(v),
                    // The receiver is spent: it must not be awaited now.
                    Err(TryRecvError::Closed) => return None,
                    Err(TryRecvError::Empty) => {
                        // Whatever else this thread has (a request that came
                        // in meanwhile ends the poll) and I/O, then the
                        // core to any other thread of the cgroup (the
                        // guest's worker, at home, if it shares the core).
                        tokio::task::yield_now().await;
                        std::thread::yield_now();
                    }
                }
            }
        }
        rx.await.ok()
    }
}

/// Whether the process may run on more than one CPU (its affinity and its
/// cgroup's quota, as the standard library reads them), read once.
fn several_cpus() -> bool {
    static SEVERAL: OnceLock<bool> = OnceLock::new();
    *SEVERAL.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
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
    /// the thread would keep from running until the poll ended.
    #[tokio::test(flavor = "current_thread")]
    async fn the_poll_lets_the_threads_other_tasks_run() {
        let in_flight = AtomicUsize::new(1);
        let (tx, rx) = oneshot::channel();
        let (polled_tx, polled_rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            // Runs only once the wait has given the thread up.
            let _ = polled_tx.send(());
            tx.send("end").unwrap();
        });
        assert_eq!(
            EndPoll::default().wait(rx, &in_flight).await.unwrap(),
            "end"
        );
        polled_rx.await.unwrap();
    }

    /// An end that comes later than a poll would wait turns polling off
    /// for the next lone request; one that comes in time turns it back on.
    #[tokio::test(flavor = "current_thread")]
    async fn polling_stays_off_while_calls_outlast_it() {
        let poll = EndPoll::default();
        let in_flight = AtomicUsize::new(1);
        let (tx, rx) = oneshot::channel();
        let late = std::thread::spawn(move || {
            std::thread::sleep(POLL_FOR * 20);
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
}
