//! What the workload guests share: numeric arguments with defaults, and a
//! digest of their output that tests can check (FNV-1a, 64 bit).

/// The `n`th argument (1-based) parsed as a number, or `default`.
pub fn arg<T: std::str::FromStr>(n: usize, default: T) -> T {
    std::env::args().nth(n).and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// FNV-1a over `data`, continuing from `h` (start with [`FNV_START`]).
pub fn fnv1a(mut h: u64, data: &[u8]) -> u64 {
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

pub const FNV_START: u64 = 0xcbf29ce484222325;

/// A small deterministic generator (xorshift64*) for synthetic inputs.
pub struct Gen(pub u64);

impl Gen {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545f4914f6cdd1d)
    }
}
