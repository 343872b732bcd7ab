//! Connection tracking: the per-worker flow table (NAT state, TCP state, policy verdict
//! cache, ageing) and the ClientIP session-affinity cache.
//!
//! Owns: which connections exist and how long they are remembered. A flow entry keeps the
//! tuple the client sent and the tuple replies will carry (the NAT is the difference
//! between them, as in Linux conntrack), where replies go back to, the coarse TCP state
//! and the cached policy verdict. Bounded: a full table reclaims expired entries, then
//! evicts the least valuable ones (counted), and refuses a new flow only when nothing may be
//! evicted. Time is handed in (`now`, nanoseconds on the driver's clock).
//!
//! Must never: call the OS (no clock, no syscalls), allocate per packet in steady state
//! (memory grows by doubling up to `capacity`, or all at once with `Flows::preallocate`),
//! decide verdicts or rewrite packets (the pipeline does that from what is found here),
//! or hold pointers inside an entry (ARCHITECTURE.md §6: entries are `#[repr(C)]`, fixed
//! layout, versioned by `FLOW_ENTRY_LAYOUT`, so a restarted agent can adopt the table
//! from a file-backed mapping).
//!
//! Layout: a slab of 112-byte entries (a `FlowId` is a slab index) plus an open-addressing
//! index of `u32` slots holding (entry number, direction, hash tag), two keys per entry,
//! power-of-two sized for a load of at most 0.5. At the default 1M entries that is
//! 112 + 16 = 128 bytes per entry, 128 MiB per worker.

mod affinity;
mod entry;
mod key;
mod table;
pub mod tcp;

#[cfg(test)]
mod tests;

pub use affinity::{Affinity, DEFAULT_AFFINITY_CAPACITY};
pub use entry::{FLOW_ENTRY_LAYOUT, FlowEntry, NewFlow, TcpState};
pub use key::{Direction, FlowKey};
pub use table::{FlowId, Flows, MAX_CAPACITY};

/// Time in nanoseconds on the driver's clock (monotonic live, pcap timestamps in replay).
pub type Nanos = u64;

const SECOND: Nanos = 1_000_000_000;

/// Default number of flows per worker.
pub const DEFAULT_CAPACITY: usize = 1 << 20;

/// How long an idle flow is remembered, by state. A flow expires when no packet was
/// observed for longer than its current state's timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP handshake in progress (SynSent, SynReceived) or not yet observed.
    pub tcp_syn: Nanos,
    pub tcp_established: Nanos,
    /// A FIN was seen (FinWait, Closing).
    pub tcp_closing: Nanos,
    /// RST seen or both FINs acknowledged.
    pub tcp_closed: Nanos,
    /// UDP with no reply seen yet.
    pub udp: Nanos,
    /// UDP that has seen a reply.
    pub udp_replied: Nanos,
    /// Everything else: ICMP, ICMPv6, SCTP (until SCTP state is tracked), other protocols.
    pub other: Nanos,
}

impl Default for Timeouts {
    /// Reference points: Linux `nf_conntrack_*_timeout*` sysctls and Cilium's CT
    /// lifetimes (`bpf/lib/conntrack.h`, `--bpf-ct-timeout-*`).
    fn default() -> Self {
        Timeouts {
            // Linux: syn_sent 120 s, syn_recv 60 s; Cilium: 60 s. A SYN flood should not
            // pin entries for minutes, and a real handshake completes in well under 60 s.
            tcp_syn: 60 * SECOND,
            // Linux: 5 days (it can see keepalives and validates windows); Cilium: 6 h.
            // 6 h keeps idle keepalive-less connections (databases, long polls) without
            // letting dead peers fill the table for days.
            tcp_established: 6 * 3600 * SECOND,
            // Linux: fin_wait/close_wait/time_wait 60-120 s; Cilium: 10 s close timeout.
            // We are not the endpoint, so we need no TIME_WAIT of our own: 10 s covers
            // the retransmitted FIN/ACK exchange.
            tcp_closing: 10 * SECOND,
            // Linux: close 10 s (lets a late RST/ACK still match the flow).
            tcp_closed: 10 * SECOND,
            // Linux: udp 30 s unreplied, udp_stream 120 s once both directions were seen;
            // Cilium: 60 s for all non-TCP. DNS queries that never get answers go fast.
            udp: 30 * SECOND,
            udp_replied: 120 * SECOND,
            // Cilium: 60 s non-TCP; Linux: icmp 30 s, generic 600 s.
            other: 60 * SECOND,
        }
    }
}

/// Table size and ageing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConntrackConfig {
    /// Maximum number of flows (clamped to `1..=MAX_CAPACITY`).
    pub capacity: usize,
    pub timeouts: Timeouts,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        ConntrackConfig {
            capacity: DEFAULT_CAPACITY,
            timeouts: Timeouts::default(),
        }
    }
}

/// The table holds `capacity` flows and none of them may be evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

/// Why `Flows::insert` did not record a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// Full, and nothing could be reclaimed or evicted (counted drop).
    Full,
    /// The new flow's `reply` tuple is already a live entry's key (either direction):
    /// replies could not be told apart. Pick another SNAT port and retry.
    ReplyTupleTaken,
    /// The new flow's `original` tuple is already a live entry's key: the caller inserted
    /// without looking the packet up first, or it collides with another flow's reply
    /// tuple. Use the existing entry (`lookup`) instead.
    OriginalTupleTaken,
}

impl From<TableFull> for InsertError {
    fn from(_: TableFull) -> InsertError {
        InsertError::Full
    }
}

impl std::fmt::Display for InsertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InsertError::Full => "conntrack table full",
            InsertError::ReplyTupleTaken => "reply tuple already tracked",
            InsertError::OriginalTupleTaken => "original tuple already tracked",
        })
    }
}

impl std::error::Error for InsertError {}
