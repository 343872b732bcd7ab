//! `#[repr(C)]` twins of the structs `bpf/pktgen.bpf.c` shares with userspace, each with a
//! size assert so a change on one side only fails the build.

use std::mem::size_of;

/// Bytes of the generator's header template (C `HEADER_LEN`).
pub(crate) const HEADER_LEN: usize = 64;

/// C `struct gen_cfg`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct GenCfg {
    pub header: [u8; HEADER_LEN],
    pub flows: u32,
    pub src_ports: u32,
    /// Host order.
    pub src_ip: u32,
    /// Host order.
    pub src_port: u16,
    pub proto: u8,
    pub pad: u8,
}

const _: () = assert!(size_of::<GenCfg>() == 80);
// SAFETY: repr(C), integers and byte arrays only, no implicit padding (size assert).
unsafe impl aya::Pod for GenCfg {}

/// C `struct sink_cfg`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct SinkCfg {
    /// XDP_DROP (1) or XDP_PASS (2).
    pub action: u32,
    pub track_flows: u32,
}

const _: () = assert!(size_of::<SinkCfg>() == 8);
// SAFETY: as above.
unsafe impl aya::Pod for SinkCfg {}

/// C `struct sink_stats` (one CPU's).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SinkStatsRaw {
    pub packets: u64,
    pub bytes: u64,
    pub udp: u64,
    pub tcp_syn: u64,
    pub other: u64,
    pub min_len: u32,
    pub max_len: u32,
}

const _: () = assert!(size_of::<SinkStatsRaw>() == 48);
// SAFETY: as above.
unsafe impl aya::Pod for SinkStatsRaw {}

/// C `struct flow_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct FlowKeyRaw {
    /// Network order (as in the IPv4 header).
    pub saddr: [u8; 4],
    /// Host order.
    pub sport: u16,
    pub proto: u8,
    pub pad: u8,
}

const _: () = assert!(size_of::<FlowKeyRaw>() == 8);
// SAFETY: as above.
unsafe impl aya::Pod for FlowKeyRaw {}
