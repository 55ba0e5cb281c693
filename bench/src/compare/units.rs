//! Units and formatting of the report's numbers.

/// Nanoseconds (as hdrhistogram records them) in µs.
pub(crate) fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

pub(crate) fn fmt_us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} ms", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.0} µs")
    } else if v >= 0.1 {
        format!("{v:.1} µs")
    } else {
        // Server-Timing carries 0.1 µs resolution.
        "< 0.1 µs".to_string()
    }
}
