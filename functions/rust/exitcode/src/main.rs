//! exitcode N: writes a line to stdout and one to stderr, then exits with
//! status N (default 1).
fn main() {
    let code: i32 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    println!("about to exit with {code}");
    eprintln!("exitcode: failing on purpose with status {code}");
    std::process::exit(code);
}
