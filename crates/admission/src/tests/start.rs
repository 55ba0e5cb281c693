//! `admit_then`: the permit goes to a start run on the thread that admits
//! the request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use super::*;

/// Spawns `admit_then` on a task; its start sends the permit and the
/// thread it ran on to `started`.
fn spawn_admit_then(
    a: &Arc<Admission>,
    f: &FunctionKey,
    want: Resources,
    started: &mpsc::Sender<(Permit, std::thread::ThreadId)>,
) -> tokio::task::JoinHandle<Result<(), Rejected>> {
    let (a, f, started) = (a.clone(), f.clone(), started.clone());
    tokio::spawn(async move {
        a.admit_then(&f, want, move |p| {
            started.send((p, std::thread::current().id())).unwrap();
        })
        .await
    })
}

/// Admitted at once, the start runs before `admit_then` resolves, on the
/// caller's thread.
#[tokio::test]
async fn admitted_at_once_the_start_runs_before_admit_then_resolves() {
    let a = Admission::new(cfg(1000, 1000));
    let (tx, rx) = mpsc::channel();
    a.admit_then(&key("f"), r(300, 100), move |p| tx.send(p).unwrap())
        .await
        .unwrap();
    let p = rx.try_recv().expect("started already");
    assert_eq!(p.waited, Duration::ZERO);
    assert_eq!(a.snapshot().reserved, r(300, 100));
    drop(p);
    assert_eq!(a.snapshot().reserved, r(0, 0));
}

/// A queued request's start runs inside the release that lets it in, on
/// the releasing thread (not the waiting task's), before that release
/// returns; the permit it gets holds the reservation.
#[tokio::test]
async fn a_queued_start_runs_on_the_thread_whose_release_lets_it_in() {
    let a = Admission::new(cfg(1000, 1000));
    let f = key("f");
    let hold = a.admit(&f, r(1000, 100)).await.unwrap();
    let (tx, rx) = mpsc::channel();
    let waiter = spawn_admit_then(&a, &f, r(600, 100), &tx);
    until("the request queues", || a.snapshot().queued == 1).await;
    assert!(rx.try_recv().is_err(), "not started while the CPU is held");

    let releaser = std::thread::spawn(move || {
        drop(hold);
        // The start has run by the time the release returns.
        rx.try_recv().expect("started within the release")
    });
    let releasing_thread = releaser.thread().id();
    let (permit, ran_on) = releaser.join().unwrap();
    assert_eq!(ran_on, releasing_thread);
    waiter.await.unwrap().unwrap();
    assert_eq!(a.snapshot().reserved, r(600, 100));
    assert_eq!(a.snapshot().queued, 0);
    drop(permit);
    assert_eq!(a.snapshot().reserved, r(0, 0));
    assert!(a.functions().is_empty());
}

/// Counts its drops: what a start captured, to see that a start is dropped.
struct Dropped(Arc<AtomicUsize>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A request that times out, whose client leaves, or that `close` fails
/// never starts: its start is dropped and nothing stays reserved.
#[tokio::test(start_paused = true)]
async fn a_start_that_never_gets_in_is_dropped_unrun() {
    let mut c = cfg(1000, 1000);
    c.queue_timeout = Duration::from_millis(200);
    let a = Admission::new(c);
    let f = key("f");
    let hold = a.admit(&f, r(1000, 100)).await.unwrap();
    let (dropped, ran) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let start = || {
        let (d, ran) = (Dropped(dropped.clone()), ran.clone());
        move |_p: Permit| {
            let _d = d;
            ran.fetch_add(1, Ordering::SeqCst);
        }
    };

    // Timed out.
    let e = a.admit_then(&f, r(10, 10), start()).await.unwrap_err();
    assert_eq!(e, Rejected::Timeout(Duration::from_millis(200)));
    assert_eq!(dropped.load(Ordering::SeqCst), 1);

    // Its client left.
    let (a2, f2, s) = (a.clone(), f.clone(), start());
    let gone = tokio::spawn(async move { a2.admit_then(&f2, r(10, 10), s).await });
    until("the request queues", || a.snapshot().queued == 1).await;
    gone.abort();
    let _ = gone.await;
    assert_eq!(dropped.load(Ordering::SeqCst), 2);

    // Failed by close.
    let (a2, f2, s) = (a.clone(), f.clone(), start());
    let closed = tokio::spawn(async move { a2.admit_then(&f2, r(10, 10), s).await });
    until("the request queues", || a.snapshot().queued == 1).await;
    a.close();
    assert_eq!(closed.await.unwrap(), Err(Rejected::Draining));
    assert_eq!(dropped.load(Ordering::SeqCst), 3);

    drop(hold);
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(a.snapshot().reserved, r(0, 0));
    assert!(a.functions().is_empty());
}

thread_local! {
    static DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Starts whose work is refused drop their permits at once, which admits
/// the next waiter: each of a long queue then starts after the one before
/// has returned (never nested inside it, which would grow the releasing
/// thread's stack with the queue), in arrival order, and nothing stays
/// reserved.
#[tokio::test]
async fn starts_that_release_at_once_run_one_after_another_not_nested() {
    const WAITERS: usize = 2000;
    let mut c = cfg(1000, 100_000);
    c.max_queue = WAITERS;
    c.max_function_queue_share = 1.0;
    let a = Admission::new(c);
    let f = key("f");
    let hold = a.admit(&f, r(1000, 1)).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let deepest = Arc::new(AtomicUsize::new(0));
    let mut waiters = Vec::new();
    for i in 0..WAITERS {
        let (a2, f2, order, deepest) = (a.clone(), f.clone(), order.clone(), deepest.clone());
        waiters.push(tokio::spawn(async move {
            a2.admit_then(&f2, r(1000, 1), move |p| {
                let depth = DEPTH.with(|d| {
                    d.set(d.get() + 1);
                    d.get()
                });
                deepest.fetch_max(depth, Ordering::SeqCst);
                order.lock().unwrap().push(i);
                drop(p);
                DEPTH.with(|d| d.set(d.get() - 1));
            })
            .await
        }));
        until("it queues", || a.snapshot().queued == i + 1).await;
    }
    // Released on a thread with a small stack: nested starts would need
    // one frame per waiter.
    std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(move || drop(hold))
        .unwrap()
        .join()
        .unwrap();
    for w in waiters {
        w.await.unwrap().unwrap();
    }
    assert_eq!(deepest.load(Ordering::SeqCst), 1);
    assert_eq!(*order.lock().unwrap(), (0..WAITERS).collect::<Vec<_>>());
    assert_eq!(a.snapshot().reserved, r(0, 0));
    assert!(a.functions().is_empty());
}

/// A start that panics is logged; its permit is released as it unwinds,
/// and the next waiter still starts.
#[tokio::test]
async fn a_panicking_start_releases_its_permit_and_the_next_one_starts() {
    let a = Admission::new(cfg(1000, 1000));
    let f = key("f");
    let hold = a.admit(&f, r(1000, 1)).await.unwrap();
    let (a2, f2) = (a.clone(), f.clone());
    let panics = tokio::spawn(async move {
        a2.admit_then(&f2, r(1000, 1), |_p| panic!("a start that panics"))
            .await
    });
    until("it queues", || a.snapshot().queued == 1).await;
    let (tx, rx) = mpsc::channel();
    let next = spawn_admit_then(&a, &f, r(1000, 1), &tx);
    until("the next queues", || a.snapshot().queued == 2).await;
    std::thread::spawn(move || drop(hold)).join().unwrap();
    panics.await.unwrap().unwrap();
    next.await.unwrap().unwrap();
    let (p, _) = rx.try_recv().expect("the next one started");
    assert_eq!(a.snapshot().reserved, r(1000, 1));
    drop(p);
    assert_eq!(a.snapshot().reserved, r(0, 0));
}

/// Admitted at once, a start that panics is caught as a queued one's is:
/// `admit_then` resolves, and the permit is released as the start unwinds.
#[tokio::test]
async fn a_start_admitted_at_once_that_panics_releases_its_permit() {
    let a = Admission::new(cfg(1000, 1000));
    a.admit_then(&key("f"), r(300, 100), |_p| panic!("a start that panics"))
        .await
        .unwrap();
    assert_eq!(a.snapshot().reserved, r(0, 0));
    assert!(a.functions().is_empty());
}
