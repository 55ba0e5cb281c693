//! Many tasks on a multi-threaded runtime, random sizes, functions, holding
//! times, cancellations, gate flips and (in one run) short queue timeouts:
//! every admit that was not cancelled resolves, and nothing is left behind.

use super::*;

/// xorshift64*: deterministic per seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

async fn run(seed: u64, queue_timeout: Duration) {
    let mut c = cfg(4000, 4000);
    c.max_queue = 100_000;
    c.max_queue_mb = u64::MAX / 2;
    c.max_function_queue_share = 1.0;
    c.cpu_gate = Some(1.0);
    c.queue_timeout = queue_timeout;
    // Every other seed also limits the calls admitted at once.
    if seed.is_multiple_of(2) {
        c.max_running = 8;
    }
    let a = Admission::new(c);
    let functions: Vec<FunctionKey> = (0..6).map(|i| key(&format!("f{i}"))).collect();
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut tasks = Vec::new();
    for _ in 0..400 {
        let f = functions[rng.below(6) as usize].clone();
        let want = if rng.below(10) == 0 {
            r(2000 + rng.below(2001), 1000 + rng.below(3001)) // large
        } else {
            r(1 + rng.below(800), 1 + rng.below(500))
        };
        let hold = rng.below(20);
        let a2 = a.clone();
        let task = tokio::spawn(async move {
            let p = a2.admit(&f, want).await?;
            for _ in 0..hold {
                tokio::task::yield_now().await;
            }
            let waited = p.waited > Duration::ZERO;
            drop(p);
            a2.check_invariants();
            Ok::<_, Rejected>(waited)
        });
        tasks.push((task, rng.below(5) == 0));
        if rng.below(3) == 0 {
            tokio::task::yield_now().await;
        }
        if rng.below(40) == 0 {
            a.set_cpu_utilization(if rng.below(2) == 0 { 2.0 } else { 0.0 });
        }
        if rng.below(3) == 0 {
            let (t, cancellable) = &tasks[rng.below(tasks.len() as u64) as usize];
            if *cancellable {
                t.abort();
            }
        }
        a.check_invariants();
    }
    a.set_cpu_utilization(0.0);
    let (mut timeouts, mut waited, mut cancelled) = (0, 0, 0);
    for (task, cancellable) in tasks {
        let done = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .unwrap_or_else(|_| panic!("seed {seed}: an admit never resolved (lost wake-up)"));
        match done {
            Ok(Ok(w)) => waited += usize::from(w),
            Ok(Err(Rejected::Timeout(_))) if queue_timeout < Duration::from_secs(1) => {
                timeouts += 1
            }
            Ok(Err(e)) => panic!("seed {seed}: {e}"),
            Err(e) => {
                assert!(e.is_cancelled() && cancellable, "seed {seed}: {e}");
                cancelled += 1;
            }
        }
    }
    a.check_invariants();
    let s = a.snapshot();
    assert_eq!(s.reserved, r(0, 0), "seed {seed}");
    assert_eq!((s.queued, s.queued_mb), (0, 0), "seed {seed}");
    assert!(a.functions().is_empty(), "seed {seed}: {:?}", a.functions());
    eprintln!(
        "seed {seed}: {waited} admitted after waiting, {timeouts} timed out, {cancelled} cancelled"
    );
    assert!(
        waited + timeouts > 50,
        "seed {seed}: too little contention to test anything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_lost_wake_ups_under_random_interleavings() {
    for seed in 1..=8 {
        run(seed, Duration::from_secs(30)).await;
    }
}

/// Waiters time out while others are admitted and released around them:
/// the timeout path must neither leak nor double-release a reservation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_interleavings_with_short_queue_timeouts_leave_nothing_behind() {
    for seed in 11..=16 {
        run(seed, Duration::from_millis(2)).await;
    }
}
