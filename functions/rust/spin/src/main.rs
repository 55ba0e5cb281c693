//! spin [MS]: burns CPU for MS milliseconds of wall time (forever without an
//! argument; fractions such as 0.05 allowed) and prints how many rounds of
//! work it did. Used for timeout and CPU-quota tests.
use std::time::{Duration, Instant};

fn main() {
    let limit = std::env::args()
        .nth(1)
        .and_then(|s| s.parse::<f64>().ok())
        .and_then(|ms| Duration::try_from_secs_f64(ms / 1e3).ok());
    let start = Instant::now();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut rounds: u64 = 0;
    loop {
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        rounds += 1;
        if let Some(l) = limit {
            if start.elapsed() >= l {
                break;
            }
        }
    }
    println!("spun {rounds} rounds ({})", x & 1);
}
