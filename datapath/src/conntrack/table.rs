//! `Flows`: the slab of entries and its open-addressing index.
//!
//! Owns: where entries live, how keys find them, ageing and eviction. Never: interpret the
//! caller-defined fields, or allocate outside growth steps (the slab and the index double
//! up to `capacity`, a logarithmic number of times in a table's life).
//!
//! Index: `u32` slots, linear probing, power-of-two sized at four slots per slab entry (two
//! keys per entry, so load <= 0.5 and short probes). A slot holds `v + 1` in its low
//! `ref_bits` (v = entry number * 2 + direction; 0 = empty) and a tag of hash bits above it,
//! so a probe rarely touches an entry whose key is not the one sought. Deletion shifts later
//! cluster members back (no tombstones), so probe lengths never degrade with churn.
//!
//! Why lazy growth: `Flows::default()` is built per test and per replay run, and 128 MB
//! up front each time would hurt; a live worker calls `preallocate` once at start so growth
//! (an O(n) re-index) never stalls the packet path.

use std::fmt;

use super::affinity::Affinity;
use super::entry::{FLOW_ENTRY_LAYOUT, FlowEntry, NewFlow, TcpState, secs, status};
use super::key::{Direction, FlowKey, KeyHasher};
use super::tcp;
use super::{ConntrackConfig, InsertError, Nanos, Timeouts};
use crate::tables::proto;

/// Largest supported capacity: entry numbers and direction must leave tag bits in a slot.
pub const MAX_CAPACITY: usize = 1 << 29;

/// Slab entries allocated by the first insert (a test or a small replay stays small).
const INITIAL_SLAB: usize = 256;
/// Slots the under-pressure reclaim sweep examines before evicting anything.
const RECLAIM_SWEEP: usize = 64;
/// Random slots sampled to choose an eviction victim (Redis-style approximated LRU).
const EVICTION_SAMPLE: usize = 8;
const EMPTY: u32 = 0;
const NO_FREE: u32 = u32::MAX;

/// Handle of a tracked flow: stable while the entry lives. After `remove` (or expiry or
/// eviction) the number may be reused for another flow: do not keep one across packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId(u32);

impl FlowId {
    /// The slab index (for flow records and debugging).
    pub fn index(self) -> u32 {
        self.0
    }
}

/// The per-worker flow table. See the module docs for the layout.
pub struct Flows {
    config: ConntrackConfig,
    hasher: KeyHasher,
    /// Entries; `slab.len()` is the high-water mark, `slab_cap` the allocated size.
    slab: Vec<FlowEntry>,
    slab_cap: usize,
    index: Vec<u32>,
    index_mask: usize,
    /// Low bits of a slot holding the entry reference; the tag sits above.
    ref_bits: u32,
    free_head: u32,
    len: usize,
    expire_cursor: usize,
    /// xorshift state for eviction sampling: fixed seed, so replays are deterministic.
    rng: u64,
    evictions: u64,
    expirations: u64,
    /// ClientIP session affinity lives beside the flows it steers: same owner, same
    /// lifetime, and `process` reaches both through one `&mut Flows`.
    affinity: Affinity,
}

impl Default for Flows {
    fn default() -> Self {
        Flows::new(ConntrackConfig::default())
    }
}

impl fmt::Debug for Flows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flows")
            .field("len", &self.len)
            .field("capacity", &self.config.capacity)
            .field("allocated", &self.slab_cap)
            .field("index_slots", &self.index.len())
            .field("evictions", &self.evictions)
            .field("expirations", &self.expirations)
            .finish_non_exhaustive()
    }
}

impl Flows {
    /// An empty table; memory is allocated by the first insert and grows by doubling.
    pub fn new(mut config: ConntrackConfig) -> Flows {
        config.capacity = config.capacity.clamp(1, MAX_CAPACITY);
        Flows::with_seed(config, KeyHasher::random_seed())
    }

    /// As `new`, with a chosen index hash seed (a table's behaviour never depends on the
    /// seed, only its memory placement does; tests and benches use this for repeatability).
    pub fn with_seed(mut config: ConntrackConfig, seed: u64) -> Flows {
        config.capacity = config.capacity.clamp(1, MAX_CAPACITY);
        let max_ref = 2 * config.capacity as u64;
        Flows {
            config,
            hasher: KeyHasher::new(seed),
            slab: Vec::new(),
            slab_cap: 0,
            index: Vec::new(),
            index_mask: 0,
            ref_bits: 64 - max_ref.leading_zeros(),
            free_head: NO_FREE,
            len: 0,
            expire_cursor: 0,
            rng: 0x2545_f491_4f6c_dd1d,
            evictions: 0,
            expirations: 0,
            affinity: Affinity::default(),
        }
    }

    /// Allocates the full capacity now, so the table never grows (nor re-indexes) later.
    pub fn preallocate(&mut self) {
        if self.slab_cap < self.config.capacity {
            self.grow_to(self.config.capacity);
        }
    }

    pub fn config(&self) -> &ConntrackConfig {
        &self.config
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.config.capacity
    }

    /// Live entries removed to make room for new flows.
    /// The ClientIP session-affinity table of this worker.
    pub fn affinity_mut(&mut self) -> &mut Affinity {
        &mut self.affinity
    }

    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Entries removed because they outlived their state's timeout.
    pub fn expirations(&self) -> u64 {
        self.expirations
    }

    /// Bytes of memory per entry at full capacity, index included.
    pub fn bytes_per_entry(&self) -> usize {
        bytes_per_entry_at(self.config.capacity)
    }

    /// Bytes currently allocated for entries and index.
    pub fn allocated_bytes(&self) -> usize {
        self.slab_cap * size_of::<FlowEntry>() + self.index.len() * size_of::<u32>()
    }

    /// Finds the entry `key` belongs to, in either direction. An entry past its state's
    /// timeout is removed and `None` returned (a new flow starts). Does not refresh
    /// `last_seen`: `observe` does.
    pub fn lookup(&mut self, key: &FlowKey, now: Nanos) -> Option<(FlowId, Direction)> {
        self.lookup_with_flags(key, 0, now)
    }

    /// `lookup` for a packet whose TCP flags are known (0 for non-TCP): an opening SYN
    /// (SYN without ACK) that matches a Closed or Closing TCP entry means the client reuses
    /// the port for a new connection, so the old entry is removed and `None` returned,
    /// as if it had expired (the new connection gets a fresh backend choice).
    pub fn lookup_with_flags(
        &mut self,
        key: &FlowKey,
        tcp_flags: u8,
        now: Nanos,
    ) -> Option<(FlowId, Direction)> {
        let (e, dir) = self.find(key)?;
        let entry = &self.slab[e as usize];
        let reused = entry.original.proto == proto::TCP
            && matches!(entry.tcp, TcpState::Closed | TcpState::Closing)
            && tcp::is_opening_syn(tcp_flags);
        if reused || is_expired(&self.config.timeouts, entry, now) {
            self.remove_entry(e);
            self.expirations += 1;
            return None;
        }
        Some((FlowId(e), dir))
    }

    pub fn get(&self, id: FlowId) -> Option<&FlowEntry> {
        self.slab.get(id.0 as usize).filter(|e| e.is_live())
    }

    /// The entry, for the caller-defined fields (`flags`, `policy_verdict`, ...). Do not
    /// change `original` or `reply`: the index is keyed by them.
    pub fn get_mut(&mut self, id: FlowId) -> Option<&mut FlowEntry> {
        self.slab.get_mut(id.0 as usize).filter(|e| e.is_live())
    }

    /// Is this tuple a key of a live entry (either direction)? For SNAT port selection.
    pub fn tuple_in_use(&self, key: &FlowKey, now: Nanos) -> bool {
        self.find(key)
            .is_some_and(|(e, _)| !is_expired(&self.config.timeouts, &self.slab[e as usize], now))
    }

    /// Records a new flow, indexed by both `original` and `reply`, with `last_seen = now`
    /// and TCP state `None` (pass the first packet to `observe` next). When full: reclaims
    /// expired entries, then evicts (see `make_room`), counted in `evictions`.
    pub fn insert(&mut self, flow: NewFlow, now: Nanos) -> Result<FlowId, InsertError> {
        // Expired holders of either tuple are dead flows: clear them out first.
        if let Some((e, _)) = self.find(&flow.original)
            && !self.reap_if_expired(e, now)
        {
            return Err(InsertError::OriginalTupleTaken);
        }
        if let Some((e, _)) = self.find(&flow.reply)
            && !self.reap_if_expired(e, now)
        {
            return Err(InsertError::ReplyTupleTaken);
        }
        let e = match self.alloc() {
            Some(e) => e,
            None => self.make_room(now).ok_or(InsertError::Full)?,
        };
        self.slab[e as usize] = FlowEntry {
            original: flow.original,
            reply: flow.reply,
            service: flow.service,
            return_port: flow.return_port,
            policy_generation: 0,
            created_secs: secs(now),
            return_mac: flow.return_mac,
            flags: flow.flags,
            tcp: TcpState::None,
            policy_verdict: 0,
            layout: FLOW_ENTRY_LAYOUT,
            status: 0,
            reserved: 0,
            last_seen: now,
        };
        self.index_insert(&flow.original, e, Direction::Original);
        self.index_insert(&flow.reply, e, Direction::Reply);
        self.len += 1;
        Ok(FlowId(e))
    }

    /// A packet of the flow was forwarded in `dir`: refreshes `last_seen`, notes replies,
    /// and advances the TCP state from `tcp_flags` (see `tcp.rs` for the table). For a
    /// fresh TCP entry, a first packet without SYN is a mid-stream pickup (e.g. after an
    /// agent restart) and makes the flow Established.
    pub fn observe(&mut self, id: FlowId, dir: Direction, tcp_flags: u8, now: Nanos) {
        let Some(entry) = self.get_mut(id) else {
            return;
        };
        // Merged inputs may step back in time: never move last_seen backwards.
        entry.last_seen = entry.last_seen.max(now);
        if dir == Direction::Reply {
            entry.status |= status::SEEN_REPLY;
        }
        if entry.original.proto == proto::TCP {
            let (state, st) = tcp::step(entry.tcp, entry.status, dir, tcp_flags);
            entry.tcp = state;
            entry.status = st;
        }
    }

    pub fn remove(&mut self, id: FlowId) {
        if self.get(id).is_some() {
            self.remove_entry(id.0);
        }
    }

    /// Removes every entry for which `keep` is false (e.g. when Service endpoints are
    /// deleted); returns how many. O(slab high-water mark): a control-path operation.
    pub fn retain(&mut self, mut keep: impl FnMut(&FlowEntry) -> bool) -> usize {
        let mut removed = 0;
        for e in 0..self.slab.len() {
            let entry = &self.slab[e];
            if entry.is_live() && !keep(entry) {
                self.remove_entry(e as u32);
                removed += 1;
            }
        }
        removed
    }

    /// Incremental ageing: examines at most `budget` slots from a cursor that wraps around
    /// the slab, removes expired entries; returns how many. Call it between batches with a
    /// budget that covers the table well within the shortest timeout.
    pub fn expire(&mut self, now: Nanos, budget: usize) -> usize {
        let high = self.slab.len();
        if high == 0 {
            return 0;
        }
        let mut removed = 0;
        for _ in 0..budget.min(high) {
            if self.expire_cursor >= high {
                self.expire_cursor = 0;
            }
            let e = self.expire_cursor;
            self.expire_cursor += 1;
            let entry = &self.slab[e];
            if entry.is_live() && is_expired(&self.config.timeouts, entry, now) {
                self.remove_entry(e as u32);
                self.expirations += 1;
                removed += 1;
            }
        }
        removed
    }

    /// Live entries in slab order (deterministic for a given operation sequence).
    pub fn iter(&self) -> impl Iterator<Item = (FlowId, &FlowEntry)> {
        self.slab
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_live())
            .map(|(i, e)| (FlowId(i as u32), e))
    }

    /// How long `entry` may stay idle in its current state.
    pub fn timeout_of(&self, entry: &FlowEntry) -> Nanos {
        timeout_of(&self.config.timeouts, entry)
    }

    // ---- internals -------------------------------------------------------------------

    fn reap_if_expired(&mut self, e: u32, now: Nanos) -> bool {
        if is_expired(&self.config.timeouts, &self.slab[e as usize], now) {
            self.remove_entry(e);
            self.expirations += 1;
            true
        } else {
            false
        }
    }

    /// A vacant slot without evicting: the free list, then the slab's unused tail, then a
    /// growth step. `None` when the table holds `capacity` entries.
    fn alloc(&mut self) -> Option<u32> {
        if self.free_head != NO_FREE {
            let e = self.free_head;
            self.free_head = self.slab[e as usize].return_port;
            return Some(e);
        }
        if self.slab.len() == self.slab_cap {
            if self.slab_cap >= self.config.capacity {
                return None;
            }
            let next = (self.slab_cap * 2)
                .max(INITIAL_SLAB)
                .min(self.config.capacity);
            self.grow_to(next);
        }
        self.slab.push(FlowEntry::VACANT);
        Some((self.slab.len() - 1) as u32)
    }

    /// Frees one slot in a full table. First a short sweep for expired entries (cheap, and
    /// they are dead anyway); then samples `EVICTION_SAMPLE` random entries and evicts the
    /// least valuable: expired < Closed < Closing < handshake (SynSent, SynReceived, never
    /// observed) < unreplied UDP/other < the rest (Established, FinWait, replied), the least
    /// recently seen within a class. Entries seen at `now` are not evictable (they belong to
    /// the batch being processed); if the sample holds nothing else, `None` (TableFull).
    fn make_room(&mut self, now: Nanos) -> Option<u32> {
        if self.expire(now, RECLAIM_SWEEP) > 0 {
            return self.alloc();
        }
        let high = self.slab.len();
        let mut best: Option<(u8, Nanos, u32)> = None;
        for _ in 0..EVICTION_SAMPLE {
            let e = (self.next_random() % high as u64) as u32;
            let entry = &self.slab[e as usize];
            if !entry.is_live() || entry.last_seen >= now {
                continue;
            }
            let rank = (
                eviction_class(&self.config.timeouts, entry, now),
                entry.last_seen,
                e,
            );
            if best.is_none_or(|b| (rank.0, rank.1) < (b.0, b.1)) {
                best = Some(rank);
            }
        }
        let (class, _, victim) = best?;
        self.remove_entry(victim);
        if class == 0 {
            self.expirations += 1;
        } else {
            self.evictions += 1;
        }
        self.alloc()
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: fast, deterministic, good enough to pick sample positions.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn remove_entry(&mut self, e: u32) {
        let entry = self.slab[e as usize];
        debug_assert!(entry.is_live());
        self.index_remove(&entry.original, e, Direction::Original);
        self.index_remove(&entry.reply, e, Direction::Reply);
        let slot = &mut self.slab[e as usize];
        *slot = FlowEntry::VACANT;
        slot.return_port = self.free_head;
        self.free_head = e;
        self.len -= 1;
    }

    /// Resizes the slab to hold `slab_cap` entries and rebuilds the index at four slots per
    /// entry. The only place the table allocates.
    fn grow_to(&mut self, slab_cap: usize) {
        self.slab.reserve_exact(slab_cap - self.slab.len());
        self.slab_cap = slab_cap;
        let slots = index_slots_for(slab_cap);
        self.index = vec![EMPTY; slots];
        self.index_mask = slots - 1;
        for e in 0..self.slab.len() {
            let entry = self.slab[e];
            if entry.is_live() {
                self.index_insert(&entry.original, e as u32, Direction::Original);
                self.index_insert(&entry.reply, e as u32, Direction::Reply);
            }
        }
    }

    #[inline]
    fn split_hash(&self, key: &FlowKey) -> (usize, u32) {
        let h = self.hasher.flow(key);
        let tag_mask = (1u64 << (32 - self.ref_bits)) - 1;
        let tag = ((h >> 32) & tag_mask) as u32;
        (h as usize & self.index_mask, tag << self.ref_bits)
    }

    #[inline]
    fn find(&self, key: &FlowKey) -> Option<(u32, Direction)> {
        if self.index.is_empty() {
            return None;
        }
        let (mut i, tag) = self.split_hash(key);
        let ref_mask = (1u32 << self.ref_bits) - 1;
        loop {
            let slot = self.index[i];
            if slot == EMPTY {
                return None;
            }
            if slot & !ref_mask == tag {
                let v = (slot & ref_mask) - 1;
                let dir = Direction::from_bit(v);
                let e = v >> 1;
                if self.slab[e as usize].key(dir) == key {
                    return Some((e, dir));
                }
            }
            i = (i + 1) & self.index_mask;
        }
    }

    fn index_insert(&mut self, key: &FlowKey, e: u32, dir: Direction) {
        let (mut i, tag) = self.split_hash(key);
        let value = tag | ((e << 1 | dir.bit()) + 1);
        // Load <= 0.5 guarantees an empty slot.
        while self.index[i] != EMPTY {
            i = (i + 1) & self.index_mask;
        }
        self.index[i] = value;
    }

    fn index_remove(&mut self, key: &FlowKey, e: u32, dir: Direction) {
        let ref_mask = (1u32 << self.ref_bits) - 1;
        let want = (e << 1 | dir.bit()) + 1;
        let (mut i, _) = self.split_hash(key);
        loop {
            let slot = self.index[i];
            if slot == EMPTY {
                debug_assert!(false, "conntrack index lost entry {e}");
                return;
            }
            if slot & ref_mask == want {
                break;
            }
            i = (i + 1) & self.index_mask;
        }
        // Backward-shift deletion: pull later members of the cluster into the hole when
        // their home slot does not lie cyclically in (hole, their slot].
        let mask = self.index_mask;
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let slot = self.index[j];
            if slot == EMPTY {
                break;
            }
            let v = (slot & ref_mask) - 1;
            let member = self.slab[(v >> 1) as usize].key(Direction::from_bit(v));
            let (home, _) = self.split_hash(member);
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.index[hole] = slot;
                hole = j;
            }
        }
        self.index[hole] = EMPTY;
    }
}

fn index_slots_for(slab_cap: usize) -> usize {
    (slab_cap * 4).next_power_of_two().max(8)
}

/// Memory per entry of a table grown to `capacity`: slab plus index, divided by capacity.
pub(super) fn bytes_per_entry_at(capacity: usize) -> usize {
    let capacity = capacity.clamp(1, MAX_CAPACITY);
    let total = capacity * size_of::<FlowEntry>() + index_slots_for(capacity) * size_of::<u32>();
    total.div_ceil(capacity)
}

pub(super) fn timeout_of(t: &Timeouts, entry: &FlowEntry) -> Nanos {
    match entry.original.proto {
        proto::TCP => match entry.tcp {
            TcpState::None | TcpState::SynSent | TcpState::SynReceived => t.tcp_syn,
            TcpState::Established => t.tcp_established,
            TcpState::FinWait | TcpState::Closing => t.tcp_closing,
            TcpState::Closed => t.tcp_closed,
        },
        proto::UDP if entry.replied() => t.udp_replied,
        proto::UDP => t.udp,
        _ => t.other,
    }
}

/// Expired when idle for longer than the state's timeout (alive for the whole timeout).
pub(super) fn is_expired(t: &Timeouts, entry: &FlowEntry, now: Nanos) -> bool {
    now.saturating_sub(entry.last_seen) > timeout_of(t, entry)
}

fn eviction_class(t: &Timeouts, entry: &FlowEntry, now: Nanos) -> u8 {
    if is_expired(t, entry, now) {
        return 0;
    }
    if entry.original.proto == proto::TCP {
        match entry.tcp {
            TcpState::Closed => 1,
            TcpState::Closing => 2,
            TcpState::None | TcpState::SynSent | TcpState::SynReceived => 3,
            TcpState::Established | TcpState::FinWait => 5,
        }
    } else if entry.replied() {
        5
    } else {
        4
    }
}
