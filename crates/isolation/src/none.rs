//! `none`: no CPU limit at all. Chosen only explicitly (or by `auto` when
//! nothing else works), and announced loudly at startup.

use crate::{Isolation, IsolationError, Mode, Slot, Throttle};

/// The `none` mode: its slots do nothing.
pub struct NoIsolation;

impl Isolation for NoIsolation {
    fn mode(&self) -> Mode {
        Mode::None
    }
    fn describe(&self) -> String {
        "NO CPU ISOLATION: cpu_quota is validated but not enforced; one tenant can use whole cores"
            .into()
    }
    fn slot(&self, _worker: usize, _tid: i32) -> Result<Box<dyn Slot>, IsolationError> {
        Ok(Box::new(NoSlot))
    }
}

struct NoSlot;

impl Slot for NoSlot {
    fn apply(&mut self, _millicores: u64) -> Result<Option<Throttle>, IsolationError> {
        Ok(None)
    }
}
