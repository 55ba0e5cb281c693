//! spin [MS]: burns CPU for MS milliseconds of wall time (forever without an
//! argument) and prints how many rounds of work it did. Used for timeout and
//! CPU-quota tests.
use std::time::{Duration, Instant};

fn main() {
    let limit = std::env::args().nth(1).and_then(|s| s.parse::<u64>().ok()).map(Duration::from_millis);
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
