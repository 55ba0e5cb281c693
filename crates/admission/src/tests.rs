use super::*;

mod fair;
mod random;
mod sim;
mod start;

pub(crate) fn cfg(cpu: u64, mem: u64) -> AdmissionConfig {
    AdmissionConfig {
        max_queue: 100,
        max_queue_mb: 100_000,
        ..AdmissionConfig::new(r(cpu, mem))
    }
}

pub(crate) fn r(cpu: u64, mem: u64) -> Resources {
    Resources {
        cpu_millis: cpu,
        memory_mb: mem,
    }
}

pub(crate) fn key(name: &str) -> FunctionKey {
    Arc::from(name)
}

/// Lets spawned tasks run until `cond` holds; panics after a bounded
/// number of scheduler turns (a lost wake-up or a wrong decision).
pub(crate) async fn until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..20_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never happened: {what}");
}

/// Spawns `admit` on a task (the permit comes back through the handle).
pub(crate) fn spawn_admit(
    a: &Arc<Admission>,
    f: &FunctionKey,
    want: Resources,
) -> tokio::task::JoinHandle<Result<Permit, Rejected>> {
    let (a, f) = (a.clone(), f.clone());
    tokio::spawn(async move { a.admit(&f, want).await })
}

#[tokio::test]
async fn reserves_and_releases() {
    let a = Admission::new(cfg(2000, 1000));
    let f = key("f");
    let p1 = a.admit(&f, r(500, 400)).await.unwrap();
    let p2 = a.admit(&f, r(1000, 600)).await.unwrap();
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
    let f = key("f");
    assert_eq!(a.limit(), r(1000, 1400));
    let mut held = Vec::new();
    for _ in 0..14 {
        held.push(a.admit(&f, r(10, 100)).await.unwrap());
    }
    // The 15th would exceed 1400 MB: it waits.
    let waiting = spawn_admit(&a, &f, r(10, 100));
    until("the 15th queues", || a.snapshot().queued == 1).await;
    assert_eq!(a.snapshot().reserved.memory_mb, 1400);
    held.pop();
    assert!(waiting.await.unwrap().is_ok());
}

#[tokio::test]
async fn larger_than_the_whole_capacity_fails_at_once() {
    let a = Admission::new(cfg(1000, 1000));
    let e = a.admit(&key("f"), r(100, 1001)).await.err().unwrap();
    assert!(matches!(e, Rejected::TooLarge { .. }), "{e}");
    assert!(e.to_string().contains("1001 MB"));
    assert_eq!(a.snapshot().queued, 0);
}

/// Within one function admission order follows arrival, and a large request
/// at the head is not overtaken by small ones that would fit.
#[tokio::test]
async fn strict_fifo_without_starving_a_large_request() {
    let a = Admission::new(cfg(10_000, 1000));
    let f = key("f");
    let first = a.admit(&f, r(100, 600)).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    // big (needs 1000 MB: must wait for `first`), then small ones that fit now.
    for (name, mem) in [("big", 1000), ("s1", 100), ("s2", 100), ("s3", 100)] {
        let (a2, f2, order2) = (a.clone(), f.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let p = a2.admit(&f2, r(1, mem)).await.unwrap();
            order2.lock().unwrap().push(name);
            tokio::task::yield_now().await;
            drop(p);
        }));
        let n = tasks.len();
        until("the next one queues", || a.snapshot().queued == n).await;
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
    // This test is about the server's limits: let one function use them all.
    c.max_function_queue_share = 1.0;
    let a = Admission::new(c);
    let f = key("f");
    let _hold = a.admit(&f, r(1, 100)).await.unwrap();
    let _w1 = spawn_admit(&a, &f, r(1, 100));
    until("w1 queues", || a.snapshot().queued == 1).await;
    // 100 + 60 MB > 150 MB queued.
    let e = a.admit(&f, r(1, 60)).await.err().unwrap();
    assert!(matches!(e, Rejected::QueueFull { .. }));
    assert_eq!(
        e.to_string(),
        "the server's admission queue is full (1 requests, 100 MB waiting; \
         the server queues at most 2 requests, 150 MB)"
    );
    let _w2 = spawn_admit(&a, &f, r(1, 50));
    until("w2 queues", || a.snapshot().queued == 2).await;
    // Count limit.
    assert!(matches!(
        a.admit(&f, r(1, 1)).await,
        Err(Rejected::QueueFull {
            scope: QueueScope::Server,
            ..
        })
    ));
    assert!(a.queue_full());
}

#[tokio::test(start_paused = true)]
async fn a_wait_past_the_queue_timeout_fails_and_leaves_the_queue() {
    let mut c = cfg(1000, 100);
    c.queue_timeout = Duration::from_millis(200);
    let a = Admission::new(c);
    let f = key("f");
    let hold = a.admit(&f, r(1, 100)).await.unwrap();
    let e = a.admit(&f, r(1, 10)).await.err().unwrap();
    assert_eq!(e, Rejected::Timeout(Duration::from_millis(200)));
    assert_eq!(a.snapshot().queued, 0);
    assert_eq!(a.snapshot().queued_mb, 0);
    drop(hold);
    assert_eq!(a.snapshot().reserved, r(0, 0));
    assert!(a.functions().is_empty());
}

#[tokio::test]
async fn a_waiter_that_goes_away_leaves_no_reservation_behind() {
    let a = Admission::new(cfg(1000, 100));
    let f = key("f");
    let hold = a.admit(&f, r(1, 100)).await.unwrap();
    let w = spawn_admit(&a, &f, r(1, 50));
    until("the waiter queues", || a.snapshot().queued == 1).await;
    w.abort();
    let _ = w.await;
    assert_eq!(a.snapshot().queued, 0);
    drop(hold);
    assert_eq!(a.snapshot().reserved, r(0, 0));
    assert!(a.functions().is_empty());
}

#[tokio::test]
async fn the_cpu_gate_holds_and_releases_on_the_metric_alone() {
    let mut c = cfg(10_000, 10_000);
    c.cpu_gate = Some(1.5);
    let a = Admission::new(c);
    a.set_cpu_utilization(1.8);
    assert!(a.snapshot().gate_closed);
    let w = spawn_admit(&a, &key("f"), r(100, 10));
    until("the request queues", || a.snapshot().queued == 1).await;
    // No request ends; only the metric drops.
    a.set_cpu_utilization(1.6);
    assert_eq!(a.snapshot().queued, 1);
    a.set_cpu_utilization(0.4);
    assert!(w.await.unwrap().is_ok());
}

#[tokio::test]
async fn draining_refuses_new_requests() {
    let a = Admission::new(cfg(1000, 1000));
    a.start_draining();
    assert_eq!(
        a.admit(&key("f"), r(1, 1)).await.err(),
        Some(Rejected::Draining)
    );
}

#[test]
fn a_permit_can_be_sent_and_released_on_another_thread() {
    fn send_static<T: Send + 'static>() {}
    send_static::<Permit>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let a = Admission::new(cfg(1000, 1000));
    let p = rt.block_on(a.admit(&key("f"), r(300, 300))).unwrap();
    assert_eq!(p.resources(), r(300, 300));
    assert_eq!(&**p.function(), "f");
    std::thread::spawn(move || drop(p)).join().unwrap();
    assert_eq!(a.snapshot().reserved, r(0, 0));
    assert!(a.functions().is_empty());
}

#[test]
fn config_defaults_and_validation() {
    let c = AdmissionConfig::new(r(2000, 4096));
    assert_eq!(c.max_queue, DEFAULT_MAX_QUEUE);
    assert_eq!(c.max_queue_mb, 4096);
    assert_eq!(c.max_function_share, DEFAULT_MAX_FUNCTION_SHARE);
    assert_eq!(c.newcomer_cpu_overdraft, DEFAULT_NEWCOMER_CPU_OVERDRAFT);
    assert_eq!(c.max_function_queue_share, DEFAULT_MAX_FUNCTION_QUEUE_SHARE);
    assert_eq!(c.validate(), Ok(()));
    let bad = AdmissionConfig {
        max_function_share: 0.0,
        ..c.clone()
    };
    assert_eq!(
        bad.validate(),
        Err("max_function_share must be above 0 and at most 1, not 0".into())
    );
    let bad = AdmissionConfig {
        newcomer_cpu_overdraft: -0.5,
        ..c.clone()
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .contains("newcomer_cpu_overdraft"));
    assert_eq!(c.max_running, usize::MAX);
    let bad = AdmissionConfig {
        max_running: 0,
        ..c
    };
    assert_eq!(bad.validate(), Err("max_running must be at least 1".into()));
}
