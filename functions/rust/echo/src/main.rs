//! echo: prints its arguments (space separated) on the first line, then its
//! stdin. Options, all before the words:
//!   --upper        uppercase stdin
//!   --stderr TEXT  also write TEXT to stderr
//!   --bytes N      instead, write N bytes of 'x' (for output-cap tests)
use std::io::{Read, Write};

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let mut upper = false;
    while let Some(a) = args.peek() {
        match a.as_str() {
            "--upper" => upper = true,
            "--stderr" => {
                args.next();
                let text = args.peek().cloned().unwrap_or_default();
                eprint!("{text}");
            }
            "--bytes" => {
                args.next();
                let n: usize = args.peek().and_then(|s| s.parse().ok()).unwrap_or(0);
                let chunk = [b'x'; 4096];
                let mut out = std::io::stdout().lock();
                let mut left = n;
                while left > 0 {
                    let k = left.min(chunk.len());
                    out.write_all(&chunk[..k]).unwrap();
                    left -= k;
                }
                return;
            }
            _ => break,
        }
        args.next();
    }
    let words: Vec<String> = args.collect();
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input).unwrap();
    if upper {
        input.make_ascii_uppercase();
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", words.join(" ")).unwrap();
    out.write_all(&input).unwrap();
}
