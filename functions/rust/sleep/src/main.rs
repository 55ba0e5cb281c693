//! sleep [MS]: sleeps MS milliseconds (an hour without an argument) in one
//! WASI `poll_oneoff` call with a relative clock timeout, then prints
//! `slept MS ms`. A guest blocked in a host call, not executing Wasm: used
//! for the deadline, client-gone and drain tests of host-call blocking.
use std::time::Duration;

fn main() {
    let ms = std::env::args()
        .nth(1)
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(3_600_000);
    std::thread::sleep(Duration::from_millis(ms));
    println!("slept {ms} ms");
}
