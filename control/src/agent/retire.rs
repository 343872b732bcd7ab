//! Publishing a generation without ever freeing one on a worker thread.
//!
//! Workers take an `Arc` of the current tables per batch. If the control thread simply
//! swapped in the next generation, whichever thread dropped the last reference to the old
//! one would free it, usually a worker, in the middle of its packet loop: with 10k Services
//! that is tens of thousands of deallocations on the fast path. So the control thread keeps
//! every replaced generation until it holds the only reference, and drops it then.

use std::sync::Arc;

use arc_swap::ArcSwap;
use datapath::tables::Tables;

#[derive(Debug, Default)]
pub struct Retired {
    waiting: Vec<Arc<Tables>>,
}

impl Retired {
    /// Makes `next` the current generation; the replaced one waits here.
    pub fn publish(&mut self, store: &ArcSwap<Tables>, next: Tables) {
        let old = store.swap(Arc::new(next));
        self.waiting.push(old);
        self.collect();
    }

    /// Frees the generations no worker holds any more (on this thread); returns how many
    /// are still held.
    pub fn collect(&mut self) -> usize {
        // `swap` pays arc-swap's outstanding borrows into the reference count before it
        // returns, so a count of 1 means only this list holds it.
        self.waiting.retain(|t| Arc::strong_count(t) > 1);
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(generation: u64) -> Tables {
        let node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n", "annotations": {"kxdp.io/underlay-mac": "02:00:00:00:00:01"}},
            "spec": {"podCIDR": "10.244.1.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.1"}]},
        }))
        .unwrap();
        let cluster = model::state::ClusterState {
            nodes: vec![node],
            ..Default::default()
        };
        let config = model::config::AgentConfig::default();
        model::translate::translate(&cluster, &config, "n", generation)
            .unwrap()
            .tables
    }

    #[test]
    fn a_held_generation_waits_and_is_freed_here_once_released() {
        let store = ArcSwap::from_pointee(tables(1));
        let mut retired = Retired::default();
        let held = store.load_full(); // a worker mid-batch
        let guard = store.load(); // a borrowed read, paid on swap
        retired.publish(&store, tables(2));
        assert_eq!(retired.collect(), 1);
        drop(guard);
        assert_eq!(retired.collect(), 1, "the worker still holds generation 1");
        let weak = Arc::downgrade(&held);
        drop(held);
        assert!(weak.upgrade().is_some(), "not freed by the worker's drop");
        assert_eq!(retired.collect(), 0);
        assert!(weak.upgrade().is_none(), "freed by collect");
        retired.publish(&store, tables(3));
        assert_eq!(retired.collect(), 0, "nobody held generation 2");
        assert_eq!(store.load().generation, 3);
    }
}
