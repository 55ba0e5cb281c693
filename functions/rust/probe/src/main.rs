//! probe: what a function sees and a fixed amount of work, for the
//! per-function configuration and usage-accounting tests.
//! - `probe` (or any args not below): prints `arg[i]=...` for every argv
//!   entry and `env:K=V` for every environment variable, sorted;
//! - `probe burn N`: N million rounds of xorshift (a fixed amount of CPU
//!   work, whatever the machine's load), prints the result.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "burn" {
        let n: u64 = args[2].parse().unwrap_or(1);
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..n * 1_000_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        println!("burned {n}M rounds ({})", x & 0xff);
        return;
    }
    for (i, a) in args.iter().enumerate() {
        println!("arg[{i}]={a}");
    }
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.sort();
    for (k, v) in env {
        println!("env:{k}={v}");
    }
}
