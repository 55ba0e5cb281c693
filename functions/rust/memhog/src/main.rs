//! memhog N: allocates N MiB, touches every page, prints "allocated N MiB".
//! Used to test per-request memory caps.
fn main() {
    let mib: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut v: Vec<u8> = Vec::with_capacity(mib << 20);
    for i in 0..(mib << 20) {
        // Touch one byte per 4 KiB page, keep the rest zero.
        v.push(if i % 4096 == 0 { 1 } else { 0 });
    }
    let touched: usize = v.iter().step_by(4096).map(|b| *b as usize).sum();
    println!("allocated {mib} MiB ({touched} pages)");
}
