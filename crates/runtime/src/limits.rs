//! Per-instance resource limits. The memory cap comes from the request's
//! `Memory-Request`; when the guest tries to go past it we remember by how
//! much, so the response can say exactly which cap was hit.

use wasmtime::ResourceLimiter;

/// Caps the linear memories of a store's instances, all together, at
/// `cap_bytes` (a component has several) and records the growth it refused.
#[derive(Debug)]
pub struct MemoryCap {
    /// Linear-memory cap in bytes.
    pub cap_bytes: usize,
    /// Maximum number of table elements (guards against huge `table.grow`).
    pub max_table_elements: usize,
    /// Set when a memory growth (or the initial allocation) was refused:
    /// the size in bytes the guest asked for.
    pub refused: Option<usize>,
    /// Bytes of linear memory granted so far, over all memories.
    pub in_use: usize,
    /// The most linear memory held at once so far (all memories), in bytes.
    pub peak: usize,
}

impl MemoryCap {
    /// A cap of `cap_bytes`, with tables limited to 2^20 elements.
    pub fn new(cap_bytes: usize) -> Self {
        MemoryCap {
            cap_bytes,
            max_table_elements: 1 << 20,
            refused: None,
            in_use: 0,
            peak: 0,
        }
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // What all memories would hold together after this growth.
        let total = (self.in_use - current.min(self.in_use)).saturating_add(desired);
        if total > self.cap_bytes || maximum.is_some_and(|m| desired > m) {
            // Remember the largest refused request for the error message.
            self.refused = Some(self.refused.map_or(total, |r| r.max(total)));
            return Ok(false);
        }
        self.in_use = total;
        self.peak = self.peak.max(total);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_holds_for_all_memories_together() {
        let mut cap = MemoryCap::new(10);
        assert!(cap.memory_growing(0, 6, None).unwrap());
        // A second memory may only take what the first left.
        assert!(!cap.memory_growing(0, 5, None).unwrap());
        assert_eq!(cap.refused, Some(11));
        assert!(cap.memory_growing(0, 4, None).unwrap());
        // Growing the first memory counts only the growth.
        assert!(!cap.memory_growing(6, 7, None).unwrap());
        assert_eq!(cap.in_use, 10);
    }
}
