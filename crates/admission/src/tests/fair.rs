//! Fairness between functions: order, ceiling, overdraft, queue shares,
//! close, and no starvation.

use super::*;

fn of(a: &Admission, name: &str) -> Option<FunctionSnapshot> {
    a.functions().into_iter().find(|f| &*f.function == name)
}

fn running(a: &Admission, name: &str) -> usize {
    of(a, name).map_or(0, |f| f.running)
}

fn queued(a: &Admission, name: &str) -> usize {
    of(a, name).map_or(0, |f| f.queued)
}

#[tokio::test]
async fn a_newcomer_is_admitted_ahead_of_a_hogs_queued_backlog() {
    let mut c = cfg(2000, 10_000);
    c.newcomer_cpu_overdraft = 0.0; // the order alone
    let a = Admission::new(c);
    let (hog, hello) = (key("hog"), key("hello"));
    let mut held = vec![
        a.admit(&hog, r(1000, 100)).await.unwrap(),
        a.admit(&hog, r(1000, 100)).await.unwrap(),
    ];
    let backlog: Vec<_> = (0..5)
        .map(|_| spawn_admit(&a, &hog, r(1000, 100)))
        .collect();
    until("the backlog queues", || a.snapshot().queued == 5).await;
    let newcomer = spawn_admit(&a, &hello, r(100, 10));
    until("the newcomer queues", || a.snapshot().queued == 6).await;

    held.pop(); // one hog call ends: the newcomer goes first
    let p = newcomer.await.unwrap().unwrap();
    assert!(p.waited > Duration::ZERO);
    assert_eq!(running(&a, "hello"), 1);
    assert_eq!((running(&a, "hog"), queued(&a, "hog")), (1, 5));
    assert_eq!(a.snapshot().reserved, r(1100, 110));

    // 900 millicores free: not enough for the hog's next until hello ends.
    drop(p);
    until("the hog's backlog moves", || queued(&a, "hog") == 4).await;
    drop(held);
    for t in backlog {
        drop(t.await.unwrap().unwrap());
    }
    assert_eq!(a.snapshot().reserved, r(0, 0));
    assert!(a.functions().is_empty());
}

#[tokio::test]
async fn a_lone_function_can_reserve_the_whole_limit() {
    let a = Admission::new(cfg(2000, 10_000));
    let hog = key("hog");
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(a.admit(&hog, r(500, 100)).await.unwrap());
    }
    assert_eq!(a.snapshot().reserved, r(2000, 400));
    // A running function gets no overdraft: its fifth call waits.
    let fifth = spawn_admit(&a, &hog, r(500, 100));
    until("the fifth queues", || a.snapshot().queued == 1).await;
    held.pop();
    assert!(fifth.await.unwrap().is_ok());
}

#[tokio::test]
async fn a_newcomers_first_call_starts_at_once_on_the_cpu_overdraft() {
    // Overdraft 10 % of 2000 = 200 millicores.
    let a = Admission::new(cfg(2000, 1000));
    let (hog, hello, other, third) = (key("hog"), key("hello"), key("other"), key("third"));
    let _held = [
        a.admit(&hog, r(1000, 100)).await.unwrap(),
        a.admit(&hog, r(1000, 100)).await.unwrap(),
    ];
    let _backlog: Vec<_> = (0..3)
        .map(|_| spawn_admit(&a, &hog, r(1000, 100)))
        .collect();
    until("the backlog queues", || a.snapshot().queued == 3).await;

    let p = a.admit(&hello, r(100, 10)).await.unwrap();
    assert_eq!(p.waited, Duration::ZERO);
    // Its second call is not a newcomer's: it waits (first in line).
    let _second = spawn_admit(&a, &hello, r(100, 10));
    until("hello's second call queues", || queued(&a, "hello") == 1).await;
    let q = a.admit(&other, r(100, 10)).await.unwrap();
    assert_eq!(a.snapshot().reserved, r(2200, 220));
    // The overdraft is used up.
    let _t = spawn_admit(&a, &third, r(100, 10));
    until("the third newcomer queues", || queued(&a, "third") == 1).await;
    // Memory never overdraws, even for a newcomer.
    let _m = spawn_admit(&a, &key("fat"), r(1, 781));
    until("the memory newcomer queues", || queued(&a, "fat") == 1).await;
    assert_eq!(running(&a, "fat"), 0);
    drop((p, q));
}

/// A hog first in the fair order stops at its ceiling (half) while another
/// function waits; the ceiling lifts when nobody else waits.
#[tokio::test]
async fn the_per_function_ceiling_holds_while_others_wait() {
    let mut c = cfg(1000, 1000);
    c.newcomer_cpu_overdraft = 0.0;
    let a = Admission::new(c);
    let (b, hog) = (key("b"), key("hog"));
    let _b1 = a.admit(&b, r(300, 10)).await.unwrap();
    // B's next is over B's own ceiling (300 + 800 > 500): it waits for b1.
    let b2 = spawn_admit(&a, &b, r(800, 10));
    until("b2 queues", || queued(&a, "b") == 1).await;
    let mut hogs = Vec::new();
    for i in 1..=7 {
        hogs.push(spawn_admit(&a, &hog, r(100, 10)));
        until("the hog request settles", || {
            running(&a, "hog") + queued(&a, "hog") == i
        })
        .await;
    }
    assert_eq!((running(&a, "hog"), queued(&a, "hog")), (5, 2));
    assert_eq!(
        a.snapshot().reserved,
        r(800, 60),
        "200 millicores left free"
    );

    b2.abort();
    let _ = b2.await;
    until("the ceiling lifts", || running(&a, "hog") == 7).await;
    assert_eq!(a.snapshot().reserved, r(1000, 80));
}

#[tokio::test]
async fn a_request_larger_than_the_ceiling_but_within_the_limit_runs() {
    let mut c = cfg(1000, 1000);
    c.newcomer_cpu_overdraft = 0.0;
    let a = Admission::new(c);
    let (b, x) = (key("b"), key("x"));
    let b1 = a.admit(&b, r(200, 10)).await.unwrap();
    let b2 = spawn_admit(&a, &b, r(900, 10));
    until("b2 queues", || queued(&a, "b") == 1).await;
    // 700 > the ceiling of 500, but x runs nothing: it goes in now.
    let px = a.admit(&x, r(700, 10)).await.unwrap();
    assert_eq!(px.waited, Duration::ZERO);
    drop(b1);
    // b runs nothing now: its 900 is first in line, waiting for room.
    assert_eq!((running(&a, "b"), queued(&a, "b")), (0, 1));
    drop(px);
    let p2 = b2.await.unwrap().unwrap();
    assert_eq!(a.snapshot().reserved, r(900, 10));
    drop(p2);
    assert!(a.functions().is_empty());
}

#[tokio::test]
async fn the_per_function_queue_share_refuses_the_hog_but_not_others() {
    let mut c = cfg(1000, 1000);
    c.max_queue = 10;
    c.max_queue_mb = 1000; // one function: 5 requests, 500 MB
    c.newcomer_cpu_overdraft = 0.0;
    let a = Admission::new(c);
    let (hog, other, fat) = (key("hog"), key("other"), key("fat"));
    let _hold = a.admit(&hog, r(1000, 10)).await.unwrap();
    let _w: Vec<_> = (0..5).map(|_| spawn_admit(&a, &hog, r(100, 10))).collect();
    until("the hog's five queue", || a.snapshot().queued == 5).await;

    let e = a.admit(&hog, r(100, 10)).await.err().unwrap();
    assert_eq!(
        e.to_string(),
        "the admission queue of function `hog` is full (5 requests, 50 MB waiting; \
         one function may queue at most 5 requests, 500 MB)"
    );
    assert!(matches!(
        e,
        Rejected::QueueFull { scope: QueueScope::Function(ref f), .. } if **f == *"hog"
    ));
    assert!(
        !a.queue_full(),
        "one function's share is not the server's queue"
    );

    let _o = spawn_admit(&a, &other, r(100, 10));
    until("another function still queues", || queued(&a, "other") == 1).await;
    // By megabytes: one request always queues, even above the share...
    let _f1 = spawn_admit(&a, &fat, r(1, 600));
    until("fat's first queues", || queued(&a, "fat") == 1).await;
    // ...but not a second one.
    let e = a.admit(&fat, r(1, 10)).await.err().unwrap();
    assert!(
        e.to_string()
            .contains("function `fat` is full (1 requests, 600 MB"),
        "{e}"
    );
    assert_eq!(a.snapshot().queued, 7);
}

#[tokio::test]
async fn close_fails_every_waiter_with_draining() {
    let a = Admission::new(cfg(1000, 1000));
    let (hog, other) = (key("hog"), key("other"));
    let hold = a.admit(&hog, r(1000, 1000)).await.unwrap();
    let waiters = [
        spawn_admit(&a, &hog, r(100, 10)),
        spawn_admit(&a, &other, r(100, 10)),
        spawn_admit(&a, &other, r(900, 900)),
    ];
    until("three wait", || a.snapshot().queued == 3).await;
    a.close();
    for w in waiters {
        assert_eq!(w.await.unwrap().err(), Some(Rejected::Draining));
    }
    let s = a.snapshot();
    assert_eq!((s.queued, s.queued_mb), (0, 0));
    assert_eq!(
        a.functions(),
        vec![FunctionSnapshot {
            function: hog.clone(),
            queued: 0,
            queued_mb: 0,
            running: 1,
            reserved: r(1000, 1000),
        }]
    );
    assert_eq!(
        a.admit(&other, r(1, 1)).await.err(),
        Some(Rejected::Draining)
    );
    drop(hold);
    assert_eq!(a.snapshot().reserved, r(0, 0));
    assert!(a.functions().is_empty());
}

/// A busy function's large request behind a steady stream of small calls
/// from new functions (which hold less, so they may pass it while it runs
/// something): once its own call ends it is first, and the stream waits
/// until it fits.
#[tokio::test]
async fn a_large_request_is_not_starved_by_a_stream_of_small_ones() {
    // Strict order (no backfilling), so the steps below are exact; with
    // backfilling the same holds once the large one has waited its window
    // (`after_its_window_nobody_passes_a_blocked_request`).
    let mut c = cfg(10_000, 1000);
    c.max_overtaken_wait = Duration::ZERO;
    let a = Admission::new(c);
    let big = key("big");
    let mut held = std::collections::VecDeque::new();
    for _ in 0..8 {
        held.push_back(a.admit(&key("small"), r(10, 100)).await.unwrap());
    }
    let b0 = a.admit(&big, r(10, 100)).await.unwrap();
    let large = spawn_admit(&a, &big, r(10, 900));
    until("the large request queues", || queued(&a, "big") == 1).await;
    // While b0 runs, the large one is over big's ceiling (100 + 900 > 500)
    // and others wait: it waits for b0, and the stream flows.
    let mut n = 0;
    for _ in 0..3 {
        held.pop_front();
        n += 1;
        let f = key(&format!("new{n}"));
        held.push_back(spawn_admit(&a, &f, r(10, 100)).await.unwrap().unwrap());
    }
    drop(b0);
    // From here no small call starts until the large one has run: it needs
    // the memory of all but one of the eight small calls.
    let mut stream = Vec::new();
    for round in 1..=7 {
        held.pop_front();
        n += 1;
        stream.push(spawn_admit(&a, &key(&format!("new{n}")), r(10, 100)));
        let large_waits = usize::from(round < 7);
        until("the stream call queues", || {
            a.snapshot().queued == round + large_waits
        })
        .await;
        let reserved = if round < 7 { 100 * (8 - round) } else { 1000 };
        assert_eq!(
            a.snapshot().reserved.memory_mb,
            reserved as u64,
            "round {round}"
        );
        assert_eq!(running(&a, "big"), 1 - large_waits, "round {round}");
    }
    let p = large.await.unwrap().unwrap();
    assert_eq!(p.resources(), r(10, 900));
    drop(p);
    drop(held);
    for t in stream {
        drop(t.await.unwrap().unwrap());
    }
    assert!(a.functions().is_empty());
}

/// Among functions holding nothing, arrival decides: with backfilling off,
/// a later small request does not pass an earlier large one.
#[tokio::test]
async fn a_later_newcomer_does_not_pass_an_earlier_large_request() {
    let mut c = cfg(1000, 1000);
    c.newcomer_cpu_overdraft = 0.0;
    c.max_overtaken_wait = Duration::ZERO;
    let a = Admission::new(c);
    let hold = a.admit(&key("hog"), r(500, 10)).await.unwrap();
    let large = spawn_admit(&a, &key("large"), r(1000, 10));
    until("the large one queues", || a.snapshot().queued == 1).await;
    let small = spawn_admit(&a, &key("small"), r(100, 10));
    until("the small one queues", || a.snapshot().queued == 2).await;
    drop(hold);
    let pl = large.await.unwrap().unwrap();
    assert_eq!(queued(&a, "small"), 1);
    drop(pl);
    assert!(small.await.unwrap().is_ok());
}

/// Backfilling: a request that fits is admitted past an earlier one that
/// does not, while that one has waited less than `max_overtaken_wait`.
#[tokio::test(start_paused = true)]
async fn a_small_request_backfills_past_a_blocked_large_one_within_its_window() {
    let mut c = cfg(1000, 1000);
    c.newcomer_cpu_overdraft = 0.0;
    c.max_overtaken_wait = Duration::from_secs(1);
    let a = Admission::new(c);
    let hold = a.admit(&key("hog"), r(500, 10)).await.unwrap();
    let large = spawn_admit(&a, &key("large"), r(1000, 10));
    until("the large one queues", || a.snapshot().queued == 1).await;
    // Fits in the free 500: admitted at once, past the large one.
    let small = a.admit(&key("small"), r(100, 10)).await.unwrap();
    assert_eq!(queued(&a, "large"), 1);
    drop(small);
    drop(hold);
    drop(large.await.unwrap().unwrap());
}

/// Once the blocked request has waited its window, nobody passes it: a
/// request that would fit queues, and the blocked one runs first.
#[tokio::test(start_paused = true)]
async fn after_its_window_nobody_passes_a_blocked_request() {
    let mut c = cfg(1000, 1000);
    c.newcomer_cpu_overdraft = 0.0;
    c.max_overtaken_wait = Duration::from_millis(300);
    let a = Admission::new(c);
    let hold = a.admit(&key("hog"), r(500, 10)).await.unwrap();
    let large = spawn_admit(&a, &key("large"), r(1000, 10));
    until("the large one queues", || a.snapshot().queued == 1).await;
    tokio::time::advance(Duration::from_millis(300)).await;
    let small = spawn_admit(&a, &key("small"), r(100, 10));
    until("the small one queues", || a.snapshot().queued == 2).await;
    drop(hold);
    let pl = large.await.unwrap().unwrap();
    assert_eq!(queued(&a, "small"), 1);
    drop(pl);
    assert!(small.await.unwrap().is_ok());
}

/// With `max_running` (the server's worker count), calls past it wait here
/// even when CPU and memory are nearly all free, and in the fair order,
/// where running calls count in a function's share: newcomers go before a
/// hog's backlog as its calls end.
#[tokio::test]
async fn calls_past_max_running_wait_in_the_fair_order() {
    let mut c = cfg(100_000, 100_000);
    c.max_running = 4;
    let a = Admission::new(c);
    let (hog, hello, other) = (key("hog"), key("hello"), key("other"));
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(a.admit(&hog, r(10, 10)).await.unwrap());
    }
    let backlog: Vec<_> = (0..3).map(|_| spawn_admit(&a, &hog, r(10, 10))).collect();
    until("the backlog queues", || queued(&a, "hog") == 3).await;
    assert_eq!(running(&a, "hog"), 4);
    let newcomers = [
        spawn_admit(&a, &hello, r(10, 10)),
        spawn_admit(&a, &other, r(10, 10)),
    ];
    until("the newcomers queue", || a.snapshot().queued == 5).await;

    // Two hog calls end: each newcomer takes a freed place.
    held.truncate(2);
    let mut started = Vec::new();
    for n in newcomers {
        started.push(n.await.unwrap().unwrap());
    }
    assert_eq!((running(&a, "hog"), queued(&a, "hog")), (2, 3));
    a.check_invariants();
    // With nobody else waiting, the hog's backlog takes what frees.
    drop(started);
    until("the hog's backlog moves", || queued(&a, "hog") == 1).await;
    assert_eq!(running(&a, "hog"), 4);
    drop(held);
    for t in backlog {
        drop(t.await.unwrap().unwrap());
    }
    assert!(a.functions().is_empty());
}

/// Running calls count in the dominant share: a hog of many tiny calls
/// holds most of the running places, so a function holding more CPU but
/// fewer places goes before it.
#[tokio::test]
async fn running_calls_count_in_the_dominant_share() {
    let mut c = cfg(100_000, 100_000);
    c.max_running = 4;
    c.max_function_share = 1.0; // the order alone, no ceiling
    let a = Admission::new(c);
    let (hog, big) = (key("hog"), key("big"));
    let _big_running = a.admit(&big, r(40_000, 10)).await.unwrap();
    let mut hogs = Vec::new();
    for _ in 0..3 {
        hogs.push(a.admit(&hog, r(10, 10)).await.unwrap());
    }
    // All four places taken; the hog's waiter arrives first.
    let hog_next = spawn_admit(&a, &hog, r(10, 10));
    until("the hog waits", || queued(&a, "hog") == 1).await;
    let big_next = spawn_admit(&a, &big, r(10_000, 10));
    until("big waits", || queued(&a, "big") == 1).await;

    // A hog call ends: 2 of 4 places (0.5) outweigh big's 40 % of the CPU.
    hogs.pop();
    let p = big_next.await.unwrap().unwrap();
    assert_eq!((running(&a, "hog"), queued(&a, "hog")), (2, 1));
    drop(p);
    drop(hog_next.await.unwrap().unwrap());
    drop(hogs);
}

/// The ceiling applies to running calls: while another function waits, a
/// function already running `max_function_share` of the places waits for
/// its own calls to end, though it holds a smaller share than the waiter
/// before it.
#[tokio::test]
async fn the_ceiling_holds_on_running_calls_while_others_wait() {
    let mut c = cfg(100_000, 100_000);
    c.max_running = 5; // a ceiling of 2 places
    c.newcomer_cpu_overdraft = 0.0;
    let a = Admission::new(c);
    let (hog, big) = (key("hog"), key("big"));
    let _big_running = a.admit(&big, r(45_000, 10)).await.unwrap();
    let third = a.admit(&key("third"), r(54_000, 10)).await.unwrap();
    let _hogs = [
        a.admit(&hog, r(10, 10)).await.unwrap(),
        a.admit(&hog, r(10, 10)).await.unwrap(),
    ];
    // One place is free, but not the CPU for big's next (under its own
    // ceiling): it waits.
    let big_next = spawn_admit(&a, &big, r(5_000, 10));
    until("big waits", || queued(&a, "big") == 1).await;
    // The hog's share (2 of 5 places, 0.4) is below big's (0.45), and its
    // next call fits; but it is at its ceiling, so it goes after big,
    // which does not fit: it waits too.
    let hog_next = spawn_admit(&a, &hog, r(10, 10));
    until("the hog waits", || queued(&a, "hog") == 1).await;
    assert_eq!(running(&a, "hog"), 2);
    a.check_invariants();

    drop(third);
    drop(big_next.await.unwrap().unwrap());
    drop(hog_next.await.unwrap().unwrap());
}
