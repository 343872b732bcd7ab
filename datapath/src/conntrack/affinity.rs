//! ClientIP session affinity: which backend a client last used for a Service.
//!
//! Owns: the bounded (client address, service) -> backend memory behind
//! `sessionAffinity: ClientIP`. Never: choose backends (the load balancer does, and asks
//! here first), or know timeouts by itself (each Service has its own; the caller passes it).
//!
//! A set-associative cache: the key hashes to a set of `WAYS` entries; a full set drops its
//! least recently used member. So the bound holds without any per-packet allocation, and a
//! client can lose its affinity early only when its set is crowded (kube-proxy's iptables
//! `recent` lists are bounded too). Memory is allocated on the first `record`: most nodes
//! and every test without ClientIP services never pay for it.

use std::fmt;

use super::Nanos;
use super::key::KeyHasher;
use crate::addr::IpKey;

/// Default number of remembered (client, service) pairs per worker.
pub const DEFAULT_AFFINITY_CAPACITY: usize = 1 << 16;
const WAYS: usize = 8;

#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct Slot {
    client: IpKey,
    backend: IpKey,
    last_used: Nanos,
    service: u32,
    backend_port: u16,
    used: bool,
}

const VACANT: Slot = Slot {
    client: IpKey([0; 16]),
    backend: IpKey([0; 16]),
    last_used: 0,
    service: 0,
    backend_port: 0,
    used: false,
};

/// Bounded ClientIP affinity memory. See the module docs.
pub struct Affinity {
    sets: Vec<[Slot; WAYS]>,
    set_count: usize,
    hasher: KeyHasher,
    len: usize,
}

impl Default for Affinity {
    fn default() -> Self {
        Affinity::new(DEFAULT_AFFINITY_CAPACITY)
    }
}

impl fmt::Debug for Affinity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Affinity")
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

impl Affinity {
    /// Room for `capacity` pairs, rounded up to a power of two and at least `WAYS` (8).
    pub fn new(capacity: usize) -> Affinity {
        let set_count = (capacity.next_power_of_two() / WAYS).max(1);
        Affinity {
            sets: Vec::new(),
            set_count,
            hasher: KeyHasher::new(KeyHasher::random_seed()),
            len: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.set_count * WAYS
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The backend `client` last used for `service`, if that was at most `timeout` ago;
    /// refreshes the time (the affinity lasts `timeout` from the last use, as kube-proxy's).
    pub fn lookup(
        &mut self,
        client: IpKey,
        service: u32,
        timeout: Nanos,
        now: Nanos,
    ) -> Option<(IpKey, u16)> {
        if self.sets.is_empty() {
            return None;
        }
        let set = self.set_of(client, service);
        let slot = self.sets[set]
            .iter_mut()
            .find(|s| s.used && s.client == client && s.service == service)?;
        if now.saturating_sub(slot.last_used) > timeout {
            *slot = VACANT;
            self.len -= 1;
            return None;
        }
        slot.last_used = slot.last_used.max(now);
        Some((slot.backend, slot.backend_port))
    }

    /// Remembers that `client` uses `backend` for `service`, from `now`.
    pub fn record(&mut self, client: IpKey, service: u32, backend: (IpKey, u16), now: Nanos) {
        if self.sets.is_empty() {
            self.sets = vec![[VACANT; WAYS]; self.set_count];
        }
        let set = self.set_of(client, service);
        let ways = &mut self.sets[set];
        let pos = match ways
            .iter()
            .position(|s| s.used && s.client == client && s.service == service)
        {
            Some(p) => p,
            None => match ways.iter().position(|s| !s.used) {
                Some(p) => {
                    self.len += 1;
                    p
                }
                // Full set: replace its least recently used member.
                None => (0..WAYS).min_by_key(|&p| ways[p].last_used).unwrap_or(0),
            },
        };
        ways[pos] = Slot {
            client,
            backend: backend.0,
            last_used: now,
            service,
            backend_port: backend.1,
            used: true,
        };
    }

    /// Forgets every client of `service` pinned to `backend` (the endpoint was deleted);
    /// returns how many. Scans the whole cache: a control-path operation.
    pub fn forget_backend(&mut self, service: u32, backend: (IpKey, u16)) -> usize {
        let mut removed = 0;
        for slot in self.sets.iter_mut().flatten() {
            if slot.used
                && slot.service == service
                && slot.backend == backend.0
                && slot.backend_port == backend.1
            {
                *slot = VACANT;
                removed += 1;
            }
        }
        self.len -= removed;
        removed
    }

    /// Forgets everything remembered for `service` (the Service was deleted or its
    /// affinity turned off); returns how many.
    pub fn forget_service(&mut self, service: u32) -> usize {
        let mut removed = 0;
        for slot in self.sets.iter_mut().flatten() {
            if slot.used && slot.service == service {
                *slot = VACANT;
                removed += 1;
            }
        }
        self.len -= removed;
        removed
    }

    fn set_of(&self, client: IpKey, service: u32) -> usize {
        self.hasher.client_service(client, service) as usize & (self.set_count - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Nanos = 1_000_000_000;

    fn client(i: u32) -> IpKey {
        let b = i.to_be_bytes();
        IpKey::v4([10, b[1], b[2], b[3]])
    }

    fn web(i: u8) -> (IpKey, u16) {
        (IpKey::v4([10, 244, 2, i]), 8080)
    }

    #[test]
    fn remembers_within_timeout_and_refreshes() {
        let mut a = Affinity::new(64);
        assert_eq!(a.lookup(client(1), 7, 10 * S, 0), None);
        a.record(client(1), 7, web(1), 0);
        assert_eq!(a.lookup(client(1), 7, 10 * S, 10 * S), Some(web(1)));
        // The lookup at 10 s refreshed it: still there at 19 s, not at 31 s.
        assert_eq!(a.lookup(client(1), 7, 10 * S, 19 * S), Some(web(1)));
        assert_eq!(a.lookup(client(1), 7, 10 * S, 30 * S), None);
        assert!(a.is_empty());
        // Other services and other clients are separate.
        a.record(client(1), 7, web(1), 0);
        assert_eq!(a.lookup(client(1), 8, 10 * S, 0), None);
        assert_eq!(a.lookup(client(2), 7, 10 * S, 0), None);
        // Recording again moves the client.
        a.record(client(1), 7, web(2), 1);
        assert_eq!(a.lookup(client(1), 7, 10 * S, 2), Some(web(2)));
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn bounded_and_drops_least_recently_used() {
        let mut a = Affinity::new(64);
        assert_eq!(a.capacity(), 64);
        for i in 0..10_000 {
            a.record(client(i), 1, web(1), Nanos::from(i));
            assert!(a.len() <= 64);
        }
        assert_eq!(a.len(), 64);
        // The most recent client of each set survives; the oldest ones are gone.
        assert_eq!(a.lookup(client(9_999), 1, S, 10_000), Some(web(1)));
        assert_eq!(a.lookup(client(0), 1, S, 10_000), None);
        let survivors = (0..10_000)
            .filter(|&i| a.lookup(client(i), 1, S, 10_000).is_some())
            .count();
        assert_eq!(survivors, 64);
    }

    #[test]
    fn forget_backend_only_that_backend_of_that_service() {
        let mut a = Affinity::default();
        for i in 0..30 {
            a.record(client(i), 1, web((i % 3) as u8), 0);
            a.record(client(i), 2, web((i % 3) as u8), 0);
        }
        assert_eq!(a.forget_backend(1, web(1)), 10);
        assert_eq!(a.len(), 50);
        assert_eq!(a.lookup(client(1), 1, S, 0), None);
        assert_eq!(a.lookup(client(1), 2, S, 0), Some(web(1)));
        assert_eq!(a.lookup(client(2), 1, S, 0), Some(web(2)));
        assert_eq!(a.forget_backend(1, (web(2).0, 9090)), 0);
        assert_eq!(a.forget_service(2), 30);
        assert_eq!(a.len(), 20);
    }
}
