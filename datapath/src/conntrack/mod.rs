//! Connection tracking: the per-worker flow table.

/// The flow state `process` reads and updates.
#[derive(Debug, Default)]
pub struct Flows {}
