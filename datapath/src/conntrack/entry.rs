//! The fixed-layout flow entry: what one tracked connection remembers.
//!
//! Owns: the byte layout of an entry (ARCHITECTURE.md §6: a restarted agent will adopt the
//! table from a file-backed mapping, so an entry is `#[repr(C)]`, holds no pointer and no
//! heap, and carries a layout version). Never: policy on what the caller-defined fields mean.

use std::mem::{offset_of, size_of};

use super::Nanos;
use super::key::FlowKey;

/// Layout version stored in every live entry. Bump it whenever a field moves, changes type
/// or meaning, so an adopting agent can refuse (or convert) a table written by another build.
/// 0 is reserved: it marks a vacant slab slot.
pub const FLOW_ENTRY_LAYOUT: u8 = 1;

/// TCP connection state, coarse on purpose (no sequence-number tracking: the end hosts
/// validate segments; we only need to know how long to remember the flow). See `tcp.rs`.
///
/// The discriminants are part of the entry layout. An adopting agent must validate the
/// byte before reading it as this enum (any other value is not a valid `TcpState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TcpState {
    /// Not TCP, or a TCP entry no packet has been observed on yet.
    None = 0,
    /// The client's SYN was seen.
    SynSent = 1,
    /// The server's SYN-ACK was seen.
    SynReceived = 2,
    /// Handshake completed, or a mid-stream pickup.
    Established = 3,
    /// A FIN was seen in one direction.
    FinWait = 4,
    /// FINs were seen in both directions.
    Closing = 5,
    /// A RST was seen, or both FINs were acknowledged.
    Closed = 6,
}

/// Bits of `FlowEntry::status`, owned by the table (the caller's bits live in `flags`).
pub(super) mod status {
    /// A packet was seen in the reply direction (UDP gets the longer timeout).
    pub const SEEN_REPLY: u8 = 1 << 0;
    /// A FIN was seen from the original side.
    pub const FIN_ORIGINAL: u8 = 1 << 1;
    /// A FIN was seen from the reply side.
    pub const FIN_REPLY: u8 = 1 << 2;
    /// The second FIN (the one that made the flow `Closing`) came from the reply side;
    /// the ACK that closes the flow comes from the other side.
    pub const LAST_FIN_REPLY: u8 = 1 << 3;
}

/// One tracked connection. The NAT is implicit, as in Linux conntrack: `original` is the
/// tuple as the client sent it, `reply` the tuple the reply will carry (after DNAT and/or
/// SNAT). Fixed layout, 112 bytes (asserted below).
///
/// Callers may change the caller-defined fields through `Flows::get_mut`; they must not
/// change `original` or `reply` (the index is keyed by them): remove and insert instead.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct FlowEntry {
    pub original: FlowKey,
    pub reply: FlowKey,
    /// Caller's service-port id, `u32::MAX` = none.
    pub service: u32,
    /// `PortId.0` the original direction came in on.
    pub return_port: u32,
    /// Table generation `policy_verdict` was judged on.
    pub policy_generation: u32,
    /// Creation time in whole seconds of the caller's clock (`now / 1e9`, saturating).
    /// Seconds, not `Nanos`, so the entry fits 112 bytes (1M entries + index in 128 MB);
    /// it only serves flow records and debugging. [`FlowEntry::created`] gives `Nanos`.
    pub created_secs: u32,
    /// Source MAC of the original direction's first packet (replies to off-node clients).
    pub return_mac: [u8; 6],
    /// Caller-defined bits (e.g. SNAT applied, from uplink).
    pub flags: u8,
    pub tcp: TcpState,
    /// Cached NetworkPolicy verdict (caller-defined; 0 = not judged).
    pub policy_verdict: u8,
    /// `FLOW_ENTRY_LAYOUT` for a live entry, 0 for a vacant slot.
    pub(super) layout: u8,
    /// `status::*` bits.
    pub(super) status: u8,
    pub(super) reserved: u8,
    /// Last time a packet of the flow was forwarded (`Flows::observe`), or creation time.
    pub last_seen: Nanos,
}

// The layout is a contract with future adopters of the table: fail the build if it moves.
const _: () = {
    assert!(size_of::<FlowKey>() == 38);
    assert!(size_of::<FlowEntry>() == 112);
    assert!(offset_of!(FlowEntry, reply) == 38);
    assert!(offset_of!(FlowEntry, service) == 76);
    assert!(offset_of!(FlowEntry, created_secs) == 88);
    assert!(offset_of!(FlowEntry, return_mac) == 92);
    assert!(offset_of!(FlowEntry, layout) == 101);
    assert!(offset_of!(FlowEntry, last_seen) == 104);
};

impl FlowEntry {
    /// A vacant slab slot. `return_port` doubles as the free-list link.
    pub(super) const VACANT: FlowEntry = FlowEntry {
        original: EMPTY_KEY,
        reply: EMPTY_KEY,
        service: u32::MAX,
        return_port: u32::MAX,
        policy_generation: 0,
        created_secs: 0,
        return_mac: [0; 6],
        flags: 0,
        tcp: TcpState::None,
        policy_verdict: 0,
        layout: 0,
        status: 0,
        reserved: 0,
        last_seen: 0,
    };

    pub(super) fn is_live(&self) -> bool {
        self.layout != 0
    }

    /// The tuple indexed for `dir`.
    pub fn key(&self, dir: super::Direction) -> &FlowKey {
        match dir {
            super::Direction::Original => &self.original,
            super::Direction::Reply => &self.reply,
        }
    }

    /// Has any packet been seen in the reply direction?
    pub fn replied(&self) -> bool {
        self.status & status::SEEN_REPLY != 0
    }

    /// Creation time, at the one-second resolution it is stored with.
    pub fn created(&self) -> Nanos {
        Nanos::from(self.created_secs) * 1_000_000_000
    }

    /// The layout version this entry was written with.
    pub fn layout_version(&self) -> u8 {
        self.layout
    }
}

const EMPTY_KEY: FlowKey = FlowKey {
    src: crate::addr::IpKey([0; 16]),
    dst: crate::addr::IpKey([0; 16]),
    src_port: 0,
    dst_port: 0,
    proto: 0,
};

/// What the caller knows about a flow it is about to start tracking.
#[derive(Debug, Clone, Copy)]
pub struct NewFlow {
    pub original: FlowKey,
    pub reply: FlowKey,
    pub service: u32,
    pub return_port: u32,
    pub return_mac: [u8; 6],
    pub flags: u8,
}

pub(super) fn secs(now: Nanos) -> u32 {
    u32::try_from(now / 1_000_000_000).unwrap_or(u32::MAX)
}
