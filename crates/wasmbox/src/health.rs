//! Liveness and readiness. Not ready while draining, while invocations
//! cannot start (the admission queue is full, every worker is busy with
//! work waiting, or workers cannot set up CPU isolation), or while the
//! container's memory utilisation, averaged over a sliding window, is above
//! the threshold; in that last case load is shed
//! gradually, as the reference intends: the further above the threshold, the
//! more probes fail (and at the threshold almost none).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

pub struct Readiness {
    window: Mutex<VecDeque<f64>>,
    size: usize,
    threshold: f64,
    draining: AtomicBool,
}

impl Readiness {
    pub fn new(size: usize, threshold: f64) -> Self {
        Readiness {
            window: Mutex::new(VecDeque::new()),
            size: size.max(1),
            threshold,
            draining: AtomicBool::new(false),
        }
    }

    /// Adds one memory-utilisation sample (used / capacity).
    pub fn record(&self, utilization: f64) {
        let mut w = self.window.lock().unwrap();
        w.push_back(utilization);
        while w.len() > self.size {
            w.pop_front();
        }
    }

    /// Mean over the window (0 before the first sample).
    pub fn mean(&self) -> f64 {
        let w = self.window.lock().unwrap();
        if w.is_empty() {
            0.0
        } else {
            w.iter().sum::<f64>() / w.len() as f64
        }
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Ok when ready, else why not. `blocked` is why invocations cannot
    /// start now, if they cannot (the admission queue is full, every worker
    /// is busy with work waiting, workers cannot set up isolation): not
    /// ready until that clears, so the platform routes traffic elsewhere.
    pub fn check(&self, blocked: Option<&str>) -> Result<(), String> {
        if self.draining() {
            return Err("draining".into());
        }
        if let Some(why) = blocked {
            return Err(why.to_string());
        }
        let mean = self.mean();
        if mean > self.threshold {
            let over = ((mean - self.threshold) / (1.0 - self.threshold).max(1e-9)).clamp(0.0, 1.0);
            if fastrand::f64() < over.max(0.05) {
                return Err(format!(
                    "memory utilisation {:.0} % is above the readiness threshold of {:.0} %",
                    mean * 100.0,
                    self.threshold * 100.0
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_mean_and_shedding() {
        let r = Readiness::new(4, 0.5);
        assert!(r.check(None).is_ok());
        for u in [0.2, 0.4, 0.6, 0.8, 1.0] {
            r.record(u);
        }
        // Window keeps the last 4: (0.4 + 0.6 + 0.8 + 1.0) / 4 = 0.7.
        assert!((r.mean() - 0.7).abs() < 1e-9);
        let refused = (0..2000).filter(|_| r.check(None).is_err()).count();
        // 0.7 is 40 % of the way from 0.5 to 1.0: about 40 % of probes fail.
        assert!((600..1000).contains(&refused), "{refused}");
        for _ in 0..4 {
            r.record(1.0);
        }
        assert!((0..100).all(|_| r.check(None).is_err()));
        for _ in 0..4 {
            r.record(0.1);
        }
        assert!((0..100).all(|_| r.check(None).is_ok()));
        assert!(r
            .check(Some("the admission queue is full"))
            .unwrap_err()
            .contains("queue is full"));
        r.start_draining();
        assert_eq!(r.check(None).unwrap_err(), "draining");
    }
}
