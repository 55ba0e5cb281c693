//! A seeded, SYNTHETIC trace of many functions shaped after the published
//! Azure Functions characterisation (Shahrad et al., "Serverless in the
//! Wild", USENIX ATC 2020):
//! - invocation rates: log10 of each function's rate is normal with sd 1.5
//!   decades, so 200 functions span about 8 orders of magnitude and a small
//!   fraction of them makes most calls;
//! - mean execution time per function: log-normal with median 1 s and 75th
//!   percentile 10 s (sd 3.41 in ln s; the paper: ~50 % of functions average
//!   under 1 s, 75 % under 10 s), capped at 3 s here, at least 1 ms;
//!   each call varies around its function's mean (sd 0.3 in ln);
//! - rate and mean duration are correlated (-0.6 in the underlying
//!   normals: popular functions tend to be short). This is an assumption of
//!   ours, not from the paper: without it a window of seconds holds only a
//!   handful of calls at a given CPU load;
//! - Memory-Request: log-normal, median 64 MB, in steps of 16 between 16
//!   and 256 MB (the paper: most apps use 100-300 MB);
//! - 75 % of functions burn CPU (`spin MS`, cpu_quota 250/500/1000), 20 %
//!   wait (`sleep MS`, I/O-like, cpu_quota 100), 5 % are `hello`, dealt in
//!   order of popularity (15 : 4 : 1) so that most calls burn CPU.
//!
//! Arrivals are Poisson per function. Rates are scaled so that the calls'
//! reserved CPU (cpu_quota x duration) is the chosen fraction of capacity;
//! the realised trace is then stretched or squeezed in time to hit it.

use std::time::Duration;

/// splitmix64: small, seedable, good enough for workload generation.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub(crate) fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Poisson with this mean (normal approximation past 50).
    pub(crate) fn poisson(&mut self, mean: f64) -> u64 {
        if mean > 50.0 {
            return (mean + mean.sqrt() * self.normal()).round().max(0.0) as u64;
        }
        let limit = (-mean).exp();
        let (mut p, mut k) = (self.unit(), 0);
        while p > limit {
            p *= self.unit();
            k += 1;
        }
        k
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Spin,
    Sleep,
    Hello,
}

impl Kind {
    /// The bundled guest a function of this kind is a copy of.
    pub(crate) fn source(self) -> &'static str {
        match self {
            Kind::Spin => "spin.wasm",
            Kind::Sleep => "sleep.wasm",
            Kind::Hello => "hello.wat",
        }
    }

    /// Whether `body` is this guest's normal output.
    pub(crate) fn accepts(self, body: &[u8]) -> bool {
        match self {
            Kind::Spin => body.starts_with(b"spun "),
            Kind::Sleep => body.starts_with(b"slept "),
            Kind::Hello => body == b"Hello from wasmbox!\n",
        }
    }
}

pub(crate) struct Func {
    /// File stem, e.g. `f017-spin`.
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) cpu: u64,
    pub(crate) mem: u64,
    /// Relative invocation rate.
    pub(crate) weight: f64,
}

impl Func {
    pub(crate) fn file(&self) -> String {
        let ext = if self.kind == Kind::Hello {
            "wat"
        } else {
            "wasm"
        };
        format!("{}.{ext}", self.name)
    }
}

pub(crate) struct TraceCall {
    /// When to send it, from the start of the replay.
    pub(crate) at: Duration,
    pub(crate) func: usize,
    /// Requested duration (the guest's argument); 0 for hello.
    pub(crate) ms: u64,
}

pub(crate) struct Trace {
    pub(crate) funcs: Vec<Func>,
    /// Sorted by `at`.
    pub(crate) calls: Vec<TraceCall>,
    pub(crate) window: Duration,
    pub(crate) capacity_millis: u64,
}

/// sd of log10(rate) across functions: 200 functions span about 8 decades.
const RATE_SD_DECADES: f64 = 1.5;
/// Longest call, ms.
pub(crate) const MAX_MS: f64 = 3000.0;
/// hello's nominal duration for load and slowdown, ms.
pub(crate) const HELLO_MS: u64 = 1;

impl Trace {
    /// `n` functions, about `window` long, whose calls reserve `load` x
    /// `capacity_millis` of CPU on average.
    pub(crate) fn generate(
        seed: u64,
        n: usize,
        window: Duration,
        load: f64,
        capacity_millis: u64,
    ) -> Trace {
        let mut rng = Rng::new(seed);
        let rho: f64 = -0.6;
        let draws: Vec<[f64; 4]> = (0..n)
            .map(|_| [rng.normal(), rng.normal(), rng.normal(), rng.unit()])
            .collect();
        // Kinds are dealt in order of popularity, 15 spin : 4 sleep : 1
        // hello, so every popularity band (and most calls) burns CPU.
        let mut by_rate: Vec<usize> = (0..n).collect();
        by_rate.sort_by(|&a, &b| draws[b][0].total_cmp(&draws[a][0]));
        let mut rank = vec![0; n];
        for (r, &i) in by_rate.iter().enumerate() {
            rank[i] = r;
        }
        let mut funcs = Vec::with_capacity(n);
        let mut mean_ms = Vec::with_capacity(n);
        for (i, &[z1, z2, z3, q]) in draws.iter().enumerate() {
            let weight = 10f64.powf(RATE_SD_DECADES * z1);
            let ln_s = 3.41 * (rho * z1 + (1.0 - rho * rho).sqrt() * z2);
            let (kind, cpu) = match rank[i] % 20 {
                19 => (Kind::Hello, 100),
                15..=18 => (Kind::Sleep, 100),
                _ if q < 0.4 => (Kind::Spin, 250),
                _ if q < 0.75 => (Kind::Spin, 500),
                _ => (Kind::Spin, 1000),
            };
            let mem = ((64f64.ln() + 0.7 * z3).exp() / 16.0)
                .round()
                .clamp(1.0, 16.0) as u64
                * 16;
            let kind_name = match kind {
                Kind::Spin => "spin",
                Kind::Sleep => "sleep",
                Kind::Hello => "hello",
            };
            funcs.push(Func {
                name: format!("f{i:03}-{kind_name}"),
                kind,
                cpu,
                mem,
                weight,
            });
            mean_ms.push(if kind == Kind::Hello {
                HELLO_MS as f64
            } else {
                (ln_s.exp() * 1000.0).clamp(1.0, MAX_MS)
            });
        }
        // Rate scale: expected reserved CPU = load x capacity over the window.
        let secs = window.as_secs_f64();
        let per_scale: f64 = funcs
            .iter()
            .zip(&mean_ms)
            .map(|(f, m)| f.weight * secs * f.cpu as f64 * m)
            .sum();
        let target = load * capacity_millis as f64 * secs * 1000.0;
        let scale = target / per_scale;
        let mut calls = Vec::new();
        for (i, f) in funcs.iter().enumerate() {
            for _ in 0..rng.poisson(scale * f.weight * secs) {
                let at = rng.unit() * secs;
                let ms = if f.kind == Kind::Hello {
                    0
                } else {
                    (mean_ms[i] * (0.3 * rng.normal() - 0.045).exp())
                        .round()
                        .clamp(1.0, MAX_MS) as u64
                };
                calls.push((at, i, ms));
            }
        }
        let mut trace = Trace {
            funcs,
            calls: Vec::new(),
            window,
            capacity_millis,
        };
        // Stretch time so the realised reserved CPU is exactly `load`.
        let work: f64 = calls.iter().map(|&(_, i, ms)| trace.work(i, ms)).sum();
        let stretch = if work > 0.0 { work / target } else { 1.0 };
        calls.sort_by(|a, b| a.0.total_cmp(&b.0));
        trace.window = Duration::from_secs_f64(secs * stretch);
        trace.calls = calls
            .into_iter()
            .map(|(at, func, ms)| TraceCall {
                at: Duration::from_secs_f64(at * stretch),
                func,
                ms,
            })
            .collect();
        trace
    }

    /// Reserved CPU of one call, millicore-ms.
    pub(crate) fn work(&self, func: usize, ms: u64) -> f64 {
        self.funcs[func].cpu as f64 * ms.max(HELLO_MS) as f64
    }

    /// Reserved CPU of all calls / (capacity x window).
    pub(crate) fn reserved_load(&self) -> f64 {
        self.load_of(|_| true)
    }

    /// The same for the CPU-burning (`spin`) calls only: what the CPU does.
    pub(crate) fn cpu_load(&self) -> f64 {
        self.load_of(|f| f.kind == Kind::Spin)
    }

    fn load_of(&self, which: impl Fn(&Func) -> bool) -> f64 {
        let work: f64 = self
            .calls
            .iter()
            .filter(|c| which(&self.funcs[c.func]))
            .map(|c| self.work(c.func, c.ms))
            .sum();
        work / (self.capacity_millis as f64 * self.window.as_secs_f64() * 1000.0)
    }

    /// The request path of a call.
    pub(crate) fn path(&self, c: &TraceCall) -> String {
        let f = &self.funcs[c.func];
        match f.kind {
            Kind::Hello => format!("/{}", f.name),
            _ => format!("/{}?arg={}", f.name, c.ms),
        }
    }

    /// Calls per function.
    pub(crate) fn counts(&self) -> Vec<u64> {
        let mut n = vec![0; self.funcs.len()];
        for c in &self.calls {
            n[c.func] += 1;
        }
        n
    }
}

/// The waits (s) an ideal server would give this trace: each call reserves
/// its cpu_quota for exactly its duration, admitted in strict FIFO order
/// when capacity frees, with no overhead. A yardstick for the measured
/// queueing: what the admission policy alone costs at this load.
pub(crate) fn ideal_fifo_waits(trace: &Trace) -> Vec<f64> {
    use std::cmp::Reverse;
    use std::collections::{BinaryHeap, VecDeque};
    // Completion times in µs, with the cpu they free.
    let mut running: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
    let mut queue: VecDeque<(u64, u64, u64)> = VecDeque::new();
    let mut free = trace.capacity_millis;
    let mut waits = Vec::with_capacity(trace.calls.len());
    let mut next = trace.calls.iter().peekable();
    loop {
        let arrival = next.peek().map(|c| c.at.as_micros() as u64);
        let done = running.peek().map(|r| r.0 .0);
        let now = match (arrival, done) {
            (None, None) => break,
            (Some(a), Some(d)) if d < a => {
                let Reverse((t, cpu)) = running.pop().expect("peeked");
                free += cpu;
                t
            }
            (Some(a), _) => {
                let c = next.next().expect("peeked");
                let cpu = trace.funcs[c.func].cpu.min(trace.capacity_millis);
                queue.push_back((a, cpu, c.ms.max(HELLO_MS) * 1000));
                a
            }
            (None, Some(_)) => {
                let Reverse((t, cpu)) = running.pop().expect("peeked");
                free += cpu;
                t
            }
        };
        while let Some(&(at, cpu, us)) = queue.front() {
            if cpu > free {
                break;
            }
            queue.pop_front();
            free -= cpu;
            waits.push((now - at) as f64 / 1e6);
            running.push(Reverse((now + us, cpu)));
        }
    }
    waits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_trace_and_load_is_hit() {
        let w = Duration::from_secs(30);
        let (a, b) = (
            Trace::generate(7, 200, w, 0.7, 2000),
            Trace::generate(7, 200, w, 0.7, 2000),
        );
        assert_eq!(a.calls.len(), b.calls.len());
        assert!(a
            .calls
            .iter()
            .zip(&b.calls)
            .all(|(x, y)| x.at == y.at && x.func == y.func && x.ms == y.ms));
        assert!(
            (a.reserved_load() - 0.7).abs() < 1e-6,
            "{}",
            a.reserved_load()
        );
        assert!(a.calls.windows(2).all(|p| p[0].at <= p[1].at));
        assert!(a.calls.iter().all(|c| c.ms as f64 <= MAX_MS));
        let c = Trace::generate(8, 200, w, 0.7, 2000);
        assert_ne!(a.calls.len(), c.calls.len());
    }

    #[test]
    fn rates_are_skewed_over_many_orders_of_magnitude() {
        let t = Trace::generate(1, 200, Duration::from_secs(30), 0.7, 2000);
        let w: Vec<f64> = t.funcs.iter().map(|f| f.weight).collect();
        let span =
            w.iter().cloned().fold(f64::MIN, f64::max) / w.iter().cloned().fold(f64::MAX, f64::min);
        assert!(span > 1e6, "span {span:e}");
        let mut counts = t.counts();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top: u64 = counts[..20].iter().sum();
        let all: u64 = counts.iter().sum();
        assert!(
            top as f64 > 0.8 * all as f64,
            "top 10 % make {top} of {all}"
        );
    }

    #[test]
    fn ideal_fifo_queues_only_past_capacity() {
        let mut t = Trace::generate(1, 20, Duration::from_secs(10), 0.7, 2000);
        // Three 1000 m calls of 1 s at once on 2000 m: the third waits 1 s.
        t.funcs[0].cpu = 1000;
        t.calls = (0..3)
            .map(|_| TraceCall {
                at: Duration::ZERO,
                func: 0,
                ms: 1000,
            })
            .collect();
        assert_eq!(ideal_fifo_waits(&t), vec![0.0, 0.0, 1.0]);
        // Strict FIFO: a small call behind a blocked big one waits too.
        t.funcs[1].cpu = 250;
        t.calls.push(TraceCall {
            at: Duration::from_millis(10),
            func: 1,
            ms: 5,
        });
        let w = ideal_fifo_waits(&t);
        assert_eq!(w.len(), 4);
        assert!((w[3] - 0.99).abs() < 1e-9, "{w:?}");
    }
}
