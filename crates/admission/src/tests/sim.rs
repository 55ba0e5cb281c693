//! The measured starvation case in virtual time (`start_paused`): one
//! client calls a small function one call at a time while N clients keep a
//! CPU-bound function busy. Call durations are simulated with sleeps; the
//! admission decisions are real. Prints the small function's queue waits.

use super::*;

const HOG_CALL: Duration = Duration::from_millis(300);
const HELLO_CALL: Duration = Duration::from_millis(2);
const RUN: Duration = Duration::from_secs(30);

struct Waits {
    p50: Duration,
    max: Duration,
    calls: usize,
    hog_calls: usize,
}

/// `hello_as` is the key the small function's calls use: "hog" puts them
/// in the hog's queue, which is the old single FIFO queue.
async fn scenario(c: AdmissionConfig, hog_clients: usize, hello_as: &str) -> Waits {
    let a = Admission::new(c);
    let end = tokio::time::Instant::now() + RUN;
    let hog = key("hog");
    let hog_calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..hog_clients {
        let (a, hog, n) = (a.clone(), hog.clone(), hog_calls.clone());
        tokio::spawn(async move {
            while tokio::time::Instant::now() < end {
                let p = a.admit(&hog, r(1000, 200)).await.unwrap();
                tokio::time::sleep(HOG_CALL).await;
                drop(p);
                n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    let hello = key(hello_as);
    let mut waits = Vec::new();
    while tokio::time::Instant::now() < end {
        let p = a.admit(&hello, r(100, 64)).await.unwrap();
        waits.push(p.waited);
        tokio::time::sleep(HELLO_CALL).await;
        drop(p);
    }
    waits.sort();
    Waits {
        p50: waits[waits.len() / 2],
        max: *waits.last().unwrap(),
        calls: waits.len(),
        hog_calls: hog_calls.load(std::sync::atomic::Ordering::Relaxed),
    }
}

#[tokio::test(start_paused = true)]
async fn a_small_function_next_to_a_cpu_bound_hog() {
    let fifo = AdmissionConfig {
        newcomer_cpu_overdraft: 0.0,
        ..cfg(2000, 8192)
    };
    let no_overdraft = fifo.clone();
    for clients in [4, 32] {
        let old = scenario(fifo.clone(), clients, "hog").await;
        let fair = scenario(no_overdraft.clone(), clients, "hello").await;
        let default = scenario(cfg(2000, 8192), clients, "hello").await;
        for (name, w) in [
            ("one FIFO", &old),
            ("fair, no overdraft", &fair),
            ("fair, default", &default),
        ] {
            eprintln!(
                "{clients} hog clients, {name}: hello wait p50 {:?}, max {:?}, {} hello calls, {} hog calls",
                w.p50, w.max, w.calls, w.hog_calls
            );
        }
        // The scenario reproduces the starvation...
        assert!(old.p50 >= HOG_CALL, "{:?}", old.p50);
        // ...fair order bounds the wait by one hog call...
        assert!(fair.max <= HOG_CALL, "{:?}", fair.max);
        // ...and the overdraft removes it.
        assert_eq!(default.max, Duration::ZERO);
        // The hog keeps both cores meanwhile: two calls at a time, all along.
        assert!(default.hog_calls >= 2 * (RUN.as_millis() / HOG_CALL.as_millis()) as usize - 2);
    }
}
