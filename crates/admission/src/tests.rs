use super::*;

fn cfg(cpu: u64, mem: u64) -> AdmissionConfig {
    AdmissionConfig {
        capacity: Resources {
            cpu_millis: cpu,
            memory_mb: mem,
        },
        cpu_overbook: 1.0,
        memory_overbook: 1.0,
        max_queue: 100,
        max_queue_mb: 100_000,
        queue_timeout: Duration::from_secs(30),
        cpu_gate: None,
    }
}

fn r(cpu: u64, mem: u64) -> Resources {
    Resources {
        cpu_millis: cpu,
        memory_mb: mem,
    }
}

#[tokio::test]
async fn reserves_and_releases() {
    let a = Admission::new(cfg(2000, 1000));
    let p1 = a.admit(r(500, 400)).await.unwrap();
    let p2 = a.admit(r(1000, 600)).await.unwrap();
    assert_eq!(a.snapshot().reserved, r(1500, 1000));
    drop(p1);
    assert_eq!(a.snapshot().reserved, r(1000, 600));
    drop(p2);
    assert_eq!(a.snapshot().reserved, r(0, 0));
}

#[tokio::test]
async fn overbooking_admits_exactly_up_to_the_ratio() {
    let mut c = cfg(1000, 1000);
    c.memory_overbook = 1.4;
    let a = Admission::new(c);
    assert_eq!(a.limit(), r(1000, 1400));
    let mut held = Vec::new();
    for _ in 0..14 {
        held.push(a.admit(r(10, 100)).await.unwrap());
    }
    // The 15th would exceed 1400 MB: it waits.
    let a2 = a.clone();
    let waiting = tokio::spawn(async move { a2.admit(r(10, 100)).await.map(|p| p.waited) });
    while a.snapshot().queued == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(a.snapshot().reserved.memory_mb, 1400);
    held.pop();
    assert!(waiting.await.unwrap().is_ok());
}

#[tokio::test]
async fn larger_than_the_whole_capacity_fails_at_once() {
    let a = Admission::new(cfg(1000, 1000));
    let e = a.admit(r(100, 1001)).await.err().unwrap();
    assert!(matches!(e, Rejected::TooLarge { .. }), "{e}");
    assert!(e.to_string().contains("1001 MB"));
    assert_eq!(a.snapshot().queued, 0);
}

/// Admission order follows arrival, and a large request at the head is not
/// overtaken by small ones that would fit.
#[tokio::test]
async fn strict_fifo_without_starving_a_large_request() {
    let a = Admission::new(cfg(10_000, 1000));
    let first = a.admit(r(100, 600)).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    // big (needs 1000 MB: must wait for `first`), then small ones that fit now.
    for (name, mem) in [("big", 1000), ("s1", 100), ("s2", 100), ("s3", 100)] {
        let (a2, order2) = (a.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let p = a2.admit(r(1, mem)).await.unwrap();
            order2.lock().unwrap().push(name);
            tokio::task::yield_now().await;
            drop(p);
        }));
        while a.snapshot().queued < tasks.len() {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(
        a.snapshot().queued,
        4,
        "small ones queue behind the big one"
    );
    assert!(order.lock().unwrap().is_empty());
    drop(first);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec!["big", "s1", "s2", "s3"]);
    assert_eq!(a.snapshot().reserved, r(0, 0));
}

#[tokio::test]
async fn queue_bounds_by_count_and_by_megabytes() {
    let mut c = cfg(1000, 100);
    c.max_queue = 2;
    c.max_queue_mb = 150;
    let a = Admission::new(c);
    let _hold = a.admit(r(1, 100)).await.unwrap();
    let (a1, a2) = (a.clone(), a.clone());
    let _w1 = tokio::spawn(async move { a1.admit(r(1, 100)).await.is_ok() });
    while a.snapshot().queued < 1 {
        tokio::task::yield_now().await;
    }
    // 100 + 60 MB > 150 MB queued.
    assert!(matches!(
        a.admit(r(1, 60)).await,
        Err(Rejected::QueueFull { .. })
    ));
    let _w2 = tokio::spawn(async move { a2.admit(r(1, 50)).await.is_ok() });
    while a.snapshot().queued < 2 {
        tokio::task::yield_now().await;
    }
    // Count limit.
    assert!(matches!(
        a.admit(r(1, 1)).await,
        Err(Rejected::QueueFull { .. })
    ));
    assert!(a.queue_full());
}

#[tokio::test(start_paused = true)]
async fn a_wait_past_the_queue_timeout_fails_and_leaves_the_queue() {
    let mut c = cfg(1000, 100);
    c.queue_timeout = Duration::from_millis(200);
    let a = Admission::new(c);
    let hold = a.admit(r(1, 100)).await.unwrap();
    let e = a.admit(r(1, 10)).await.err().unwrap();
    assert_eq!(e, Rejected::Timeout(Duration::from_millis(200)));
    assert_eq!(a.snapshot().queued, 0);
    assert_eq!(a.snapshot().queued_mb, 0);
    drop(hold);
    assert_eq!(a.snapshot().reserved, r(0, 0));
}

#[tokio::test]
async fn a_waiter_that_goes_away_leaves_no_reservation_behind() {
    let a = Admission::new(cfg(1000, 100));
    let hold = a.admit(r(1, 100)).await.unwrap();
    let a2 = a.clone();
    let w = tokio::spawn(async move { a2.admit(r(1, 50)).await.map(|_| ()) });
    while a.snapshot().queued == 0 {
        tokio::task::yield_now().await;
    }
    w.abort();
    let _ = w.await;
    assert_eq!(a.snapshot().queued, 0);
    drop(hold);
    assert_eq!(a.snapshot().reserved, r(0, 0));
}

#[tokio::test]
async fn the_cpu_gate_holds_and_releases_on_the_metric_alone() {
    let mut c = cfg(10_000, 10_000);
    c.cpu_gate = Some(1.5);
    let a = Admission::new(c);
    a.set_cpu_utilization(1.8);
    assert!(a.snapshot().gate_closed);
    let a2 = a.clone();
    let w = tokio::spawn(async move { a2.admit(r(100, 10)).await.is_ok() });
    while a.snapshot().queued == 0 {
        tokio::task::yield_now().await;
    }
    // No request ends; only the metric drops.
    a.set_cpu_utilization(1.6);
    assert_eq!(a.snapshot().queued, 1);
    a.set_cpu_utilization(0.4);
    assert!(w.await.unwrap());
}

#[tokio::test]
async fn draining_refuses_new_requests() {
    let a = Admission::new(cfg(1000, 1000));
    a.start_draining();
    assert_eq!(a.admit(r(1, 1)).await.err(), Some(Rejected::Draining));
}
