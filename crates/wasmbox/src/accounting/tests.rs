use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;

use super::*;

fn accounting(max: usize, idle: Duration) -> (Arc<Accounting>, Registry) {
    let mut r = Registry::default();
    let families = UsageFamilies::register(&mut r);
    let invocations = Family::<InvocationLabels, Counter>::default();
    r.register("invocations", "x", invocations.clone());
    let a = Accounting::new(families, invocations, None).with_bound(max, idle);
    (Arc::new(a), r)
}

fn render(r: &Registry) -> String {
    let mut s = String::new();
    prometheus_client::encoding::text::encode(&mut s, r).unwrap();
    s
}

fn served(a: &Arc<Accounting>, function: &str) {
    let p = Pending::new(a.clone(), "id".into(), Instant::now());
    p.update(|u| u.function = Some(function.into()));
    p.finish(200, "ok", 3);
}

#[test]
fn past_the_bound_the_least_recently_seen_function_is_dropped() {
    let (a, r) = accounting(2, Duration::from_secs(3600));
    served(&a, "one.wasm");
    served(&a, "two.wasm");
    served(&a, "three.wasm");
    let text = render(&r);
    assert!(!text.contains("one.wasm"), "{text}");
    assert!(text.contains("three.wasm") && text.contains("two.wasm"));
    assert!(a.stats("one.wasm").is_none());
    assert_eq!(a.stats("two.wasm").unwrap().invocations, 1);
}

/// Each function's series are held by its entry; a function dropped and
/// seen again records into new series, the ones scraped, from zero.
#[test]
fn a_function_dropped_and_back_records_into_the_scraped_series() {
    let (a, r) = accounting(1, Duration::from_secs(3600));
    served(&a, "one.wasm");
    served(&a, "one.wasm");
    let text = render(&r);
    assert!(
        text.contains("function_response_bytes_total{function=\"one.wasm\"} 6"),
        "{text}"
    );
    served(&a, "two.wasm");
    assert!(!render(&r).contains("one.wasm"));
    served(&a, "one.wasm");
    let text = render(&r);
    assert!(
        text.contains("function_response_bytes_total{function=\"one.wasm\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("invocations_total{function=\"one.wasm\",outcome=\"ok\"} 1"),
        "{text}"
    );
    assert!(!text.contains("two.wasm"), "{text}");
    assert_eq!(a.stats("one.wasm").unwrap().invocations, 1);
}

#[test]
fn a_compile_and_the_calls_after_it_share_one_entry() {
    let (a, r) = accounting(10, Duration::from_secs(3600));
    a.record_compile("c.wasm", Duration::from_millis(40));
    let s = a.stats("c.wasm").unwrap();
    assert_eq!((s.invocations, s.last_invoked_unix), (0, None));
    served(&a, "c.wasm");
    let s = a.stats("c.wasm").unwrap();
    assert_eq!(s.invocations, 1);
    assert!((s.compile_seconds - 0.04).abs() < 1e-9);
    let now = super::unix_now();
    let at = s.last_invoked_unix.unwrap();
    assert!(at <= now && now - at < 60.0, "last invoked {at}, now {now}");
    let text = render(&r);
    assert!(
        text.contains("function_compile_seconds_total{function=\"c.wasm\"} 0.04"),
        "{text}"
    );
}

#[test]
fn idle_functions_are_dropped_at_the_sweep() {
    let (a, r) = accounting(10, Duration::ZERO);
    served(&a, "idle.wasm");
    assert!(render(&r).contains("idle.wasm"));
    a.sweep();
    assert!(!render(&r).contains("idle.wasm"));
}

#[test]
fn a_client_gone_while_the_worker_runs_is_recorded_once_with_the_workers_figures() {
    let (a, r) = accounting(10, Duration::from_secs(3600));
    let p = Pending::new(a.clone(), "id".into(), Instant::now());
    p.update(|u| u.function = Some("f.wasm".into()));
    p.worker_started();
    drop(p.guard());
    // Counted (its series exists), not yet recorded.
    assert_eq!(
        a.stats("f.wasm").map(|s| s.invocations),
        Some(0),
        "recorded before the worker was done"
    );
    assert!(render(&r).contains("outcome=\"client-gone\"} 1"));
    p.worker_done(|u| {
        u.ran = true;
        u.cpu = Duration::from_millis(250);
    });
    let s = a.stats("f.wasm").unwrap();
    assert_eq!(s.invocations, 1);
    assert_eq!(s.outcomes.get("client-gone"), Some(&1));
    assert!((s.cpu_seconds - 0.25).abs() < 1e-9);
    p.finish(200, "ok", 0);
    assert_eq!(a.stats("f.wasm").unwrap().invocations, 1);
    assert!(
        render(&r).contains("outcome=\"client-gone\"} 1"),
        "counted twice"
    );
}

#[test]
fn a_handler_dropped_before_any_worker_is_recorded_at_once() {
    let (a, _r) = accounting(10, Duration::from_secs(3600));
    let p = Pending::new(a.clone(), "id".into(), Instant::now());
    p.update(|u| u.function = Some("g.wasm".into()));
    drop(p.guard());
    assert_eq!(
        a.stats("g.wasm").unwrap().outcomes.get("client-gone"),
        Some(&1)
    );
}

#[test]
fn the_access_log_line_has_every_field() {
    let u = Usage {
        request_id: "r1".into(),
        function: Some("f.wasm".into()),
        status: 508,
        outcome: "cpu-budget",
        ran: true,
        cpu: Duration::from_micros(1500),
        wall: Duration::from_millis(3),
        queue: Duration::ZERO,
        peak_memory: 3 << 20,
        memory_mb_seconds: 0.5,
        bytes_in: 1,
        bytes_out: 2,
        failure: None,
    };
    let v: serde_json::Value = serde_json::from_str(&u.json_line()).unwrap();
    for k in [
        "time",
        "request_id",
        "function",
        "status",
        "error",
        "cpu_ms",
        "wall_ms",
        "queue_ms",
        "peak_mb",
        "mb_seconds",
        "bytes_in",
        "bytes_out",
    ] {
        assert!(v.get(k).is_some(), "{k} missing from {v}");
    }
    assert_eq!(v["cpu_ms"], 1.5);
    assert_eq!(v["peak_mb"], 3.0);
    assert_eq!(v["error"], "cpu-budget");
}

/// A streamed body (a wasi:http handler's) outlives both the handler's
/// answer and, often, the guest: the record waits for whichever of the
/// worker and the body ends last, once, with the bytes the body sent.
#[test]
fn a_streamed_body_is_recorded_once_both_it_and_the_worker_have_ended() {
    let (a, _r) = accounting(10, Duration::from_secs(3600));
    let invocations = |a: &Accounting| a.stats("h.wasm").map_or(0, |s| s.invocations);
    for body_first in [false, true] {
        let before = invocations(&a);
        let p = Pending::new(a.clone(), "id".into(), Instant::now());
        p.update(|u| u.function = Some("h.wasm".into()));
        p.worker_started();
        p.body_streamed();
        p.finish(200, "ok", 0);
        if body_first {
            p.body_ended(300_000, None);
            assert_eq!(invocations(&a), before, "recorded before the worker");
            p.worker_done(|u| u.ran = true);
        } else {
            p.worker_done(|u| u.ran = true);
            assert_eq!(invocations(&a), before, "recorded before the body");
            p.body_ended(300_000, None);
        }
        drop(p.guard());
        let s = a.stats("h.wasm").unwrap();
        assert_eq!(s.invocations, before + 1);
        assert_eq!(s.outcomes.get("ok"), Some(&(before + 1)));
    }
}

/// A body cut short is recorded with why: its own reason (the client went
/// away, the output limit), or the guest's failure when the guest broke it
/// off; the head's status went out before and stays what was sent.
#[test]
fn a_body_cut_short_is_recorded_with_why() {
    let (a, _r) = accounting(10, Duration::from_secs(3600));
    let cases = [
        (Cut::Because("output-limit"), None, "output-limit"),
        (Cut::Because(CLIENT_GONE.0), None, "client-gone"),
        (Cut::Guest, Some("timeout"), "timeout"),
        (Cut::Guest, None, "trap"),
        // The body's own cancel stopped it: not the client's doing.
        (Cut::Guest, Some(CLIENT_GONE.0), "trap"),
    ];
    for (i, (cut, failure, outcome)) in cases.into_iter().enumerate() {
        let f = format!("c{i}.wasm");
        let p = Pending::new(a.clone(), "id".into(), Instant::now());
        p.update(|u| u.function = Some(f.clone()));
        p.worker_started();
        p.body_streamed();
        p.finish(200, "ok", 0);
        p.body_ended(8, Some(cut));
        p.worker_done(|u| u.failure = failure);
        let s = a.stats(&f).unwrap();
        assert_eq!(
            s.outcomes.get(outcome),
            Some(&1),
            "{cut:?}: {:?}",
            s.outcomes
        );
    }
}
