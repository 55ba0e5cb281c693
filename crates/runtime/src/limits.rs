//! Per-instance resource limits. The memory cap comes from the request's
//! `Memory-Request`; when the guest tries to go past it we remember by how
//! much, so the response can say exactly which cap was hit.

use wasmtime::ResourceLimiter;

/// Caps an instance's linear memory at `cap_bytes` and records the first
/// growth it refused.
#[derive(Debug)]
pub struct MemoryCap {
    /// Linear-memory cap in bytes.
    pub cap_bytes: usize,
    /// Maximum number of table elements (guards against huge `table.grow`).
    pub max_table_elements: usize,
    /// Set when a memory growth (or the initial allocation) was refused:
    /// the size in bytes the guest asked for.
    pub refused: Option<usize>,
    /// The largest linear memory granted so far, in bytes.
    pub peak: usize,
}

impl MemoryCap {
    /// A cap of `cap_bytes`, with tables limited to 2^20 elements.
    pub fn new(cap_bytes: usize) -> Self {
        MemoryCap {
            cap_bytes,
            max_table_elements: 1 << 20,
            refused: None,
            peak: 0,
        }
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap_bytes || maximum.is_some_and(|m| desired > m) {
            // Remember the largest refused request for the error message.
            self.refused = Some(self.refused.map_or(desired, |r| r.max(desired)));
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.max_table_elements && maximum.is_none_or(|m| desired <= m))
    }
}
