//! Connection tracking: the per-worker flow table that remembers Service NAT.
//!
//! Owns: which backend a client flow to a VIP was given, so later packets keep it and
//! replies (backend -> client) are reverse-NATed to come from the VIP. Bounded: a full
//! table first reclaims idle entries, then refuses new flows (a counted drop), never grows.
//!
//! Entries are fixed-layout values without heap pointers (ARCHITECTURE.md §6: a restarted
//! agent will adopt the table from shared memory). The Services issue extends this with
//! TCP state, per-state ageing and policy verdict caching.

use foldhash::HashMap;

use crate::addr::IpKey;
use crate::pipeline::Nanos;

/// Default number of flows per worker.
pub const DEFAULT_CAPACITY: usize = 1 << 20;
/// Idle time after which a flow is forgotten (a new packet picks a backend afresh).
pub const DEFAULT_IDLE_TIMEOUT_NS: Nanos = 120 * 1_000_000_000;

/// One direction of a flow, as seen on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct FlowKey {
    pub src: IpKey,
    pub dst: IpKey,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
}

/// The NAT a client flow to a Service got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct NatBinding {
    pub vip: IpKey,
    pub vip_port: u16,
    pub backend: IpKey,
    pub backend_port: u16,
}

#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct FlowEntry {
    nat: NatBinding,
    /// The reply direction's key (backend -> client), to remove both together.
    reply: FlowKey,
    last_seen: Nanos,
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowMatch {
    /// A client -> VIP packet of a known flow: DNAT to this backend.
    Original(NatBinding),
    /// A backend -> client reply: source becomes the VIP.
    Reply(NatBinding),
}

/// Why a flow could not be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

#[derive(Debug)]
pub struct Flows {
    capacity: usize,
    idle_timeout: Nanos,
    original: HashMap<FlowKey, FlowEntry>,
    /// reply key -> original key.
    reply: HashMap<FlowKey, FlowKey>,
    evictions: u64,
}

impl Default for Flows {
    fn default() -> Self {
        Flows::new(DEFAULT_CAPACITY, DEFAULT_IDLE_TIMEOUT_NS)
    }
}

impl Flows {
    pub fn new(capacity: usize, idle_timeout: Nanos) -> Flows {
        Flows {
            capacity: capacity.max(1),
            idle_timeout,
            original: HashMap::default(),
            reply: HashMap::default(),
            evictions: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.original.len()
    }

    pub fn is_empty(&self) -> bool {
        self.original.is_empty()
    }

    /// Idle entries removed to make room so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Finds the flow `key` belongs to in either direction and refreshes it.
    pub fn lookup(&mut self, key: &FlowKey, now: Nanos) -> Option<FlowMatch> {
        let timeout = self.idle_timeout;
        if let Some(entry) = self.original.get_mut(key) {
            if now.saturating_sub(entry.last_seen) <= timeout {
                entry.last_seen = now;
                return Some(FlowMatch::Original(entry.nat));
            }
            self.remove(key);
            return None;
        }
        let orig = *self.reply.get(key)?;
        match self.original.get_mut(&orig) {
            Some(entry) if now.saturating_sub(entry.last_seen) <= timeout => {
                entry.last_seen = now;
                Some(FlowMatch::Reply(entry.nat))
            }
            _ => {
                self.remove(&orig);
                self.reply.remove(key);
                None
            }
        }
    }

    /// Records a new client flow `original` (client -> VIP) translated per `nat`.
    pub fn insert(
        &mut self,
        original: FlowKey,
        nat: NatBinding,
        now: Nanos,
    ) -> Result<(), TableFull> {
        if self.original.len() >= self.capacity && !self.original.contains_key(&original) {
            self.reclaim_idle(now);
            if self.original.len() >= self.capacity {
                return Err(TableFull);
            }
        }
        let reply = FlowKey {
            src: nat.backend,
            dst: original.src,
            src_port: nat.backend_port,
            dst_port: original.src_port,
            proto: original.proto,
        };
        if let Some(old) = self.original.insert(
            original,
            FlowEntry {
                nat,
                reply,
                last_seen: now,
            },
        ) {
            self.reply.remove(&old.reply);
        }
        self.reply.insert(reply, original);
        Ok(())
    }

    fn remove(&mut self, key: &FlowKey) {
        if let Some(entry) = self.original.remove(key) {
            self.reply.remove(&entry.reply);
        }
    }

    /// Drops every idle entry. Runs only when the table is full, so its O(n) cost is paid
    /// at most once per `capacity` insertions of fresh flows.
    fn reclaim_idle(&mut self, now: Nanos) {
        let timeout = self.idle_timeout;
        let before = self.original.len();
        let reply = &mut self.reply;
        self.original.retain(|_, e| {
            let live = now.saturating_sub(e.last_seen) <= timeout;
            if !live {
                reply.remove(&e.reply);
            }
            live
        });
        self.evictions += (before - self.original.len()) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sport: u16) -> FlowKey {
        FlowKey {
            src: IpKey::v4([10, 244, 1, 5]),
            dst: IpKey::v4([10, 96, 0, 10]),
            src_port: sport,
            dst_port: 80,
            proto: 6,
        }
    }

    fn nat() -> NatBinding {
        NatBinding {
            vip: IpKey::v4([10, 96, 0, 10]),
            vip_port: 80,
            backend: IpKey::v4([10, 244, 2, 7]),
            backend_port: 8080,
        }
    }

    #[test]
    fn found_from_both_directions() {
        let mut flows = Flows::default();
        flows.insert(key(1000), nat(), 0).unwrap();
        assert_eq!(
            flows.lookup(&key(1000), 1),
            Some(FlowMatch::Original(nat()))
        );
        let reply = FlowKey {
            src: IpKey::v4([10, 244, 2, 7]),
            dst: IpKey::v4([10, 244, 1, 5]),
            src_port: 8080,
            dst_port: 1000,
            proto: 6,
        };
        assert_eq!(flows.lookup(&reply, 2), Some(FlowMatch::Reply(nat())));
        assert_eq!(flows.lookup(&key(1001), 2), None);
    }

    #[test]
    fn bounded_reclaims_idle_then_refuses() {
        let mut flows = Flows::new(2, 10);
        flows.insert(key(1), nat(), 0).unwrap();
        flows.insert(key(2), nat(), 5).unwrap();
        assert_eq!(flows.insert(key(3), nat(), 6), Err(TableFull));
        // key(1) is idle at t=11: reclaimed to make room.
        flows.insert(key(3), nat(), 11).unwrap();
        assert_eq!(flows.len(), 2);
        assert_eq!(flows.evictions(), 1);
        assert_eq!(flows.lookup(&key(1), 11), None);
    }

    #[test]
    fn idle_flow_expires_on_lookup() {
        let mut flows = Flows::new(8, 10);
        flows.insert(key(1), nat(), 0).unwrap();
        assert_eq!(flows.lookup(&key(1), 100), None);
        assert!(flows.is_empty());
    }
}
