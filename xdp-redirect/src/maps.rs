//! The maps the XDP programs read and the agent fills, with `#[repr(C)]` twins of the C
//! structs in `bpf/redirect.bpf.c`. Each twin is defined once, here, with a size assert so a
//! change on one side that is not made on the other fails the build instead of silently
//! misreading keys.

use std::mem::size_of;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use aya::Ebpf;
use aya::maps::{Array, HashMap, PerCpuArray};

use crate::XdpError;

const XSKS: &str = "xsks";
const PORT_SLOTS: &str = "port_slots";
const NODE_ADDRS: &str = "node_addrs";
const VXLAN_CFG: &str = "vxlan_cfg";
const FRONTENDS: &str = "frontends";
const REASONS: &str = "reasons";

/// Size of the XSKMAP `xsks` (C `XSKS_ENTRIES`): valid slots are `0..XSKS_ENTRIES`. A port
/// with base `b` and `Q` rx queues uses slots `b..b + Q`.
pub const XSKS_ENTRIES: u32 = 4096;
/// Capacity of `port_slots`: how many ports (interfaces) can have slots at once.
pub const PORT_SLOTS_ENTRIES: u32 = 1024;

/// C `struct vxlan_cfg`: this node's underlay address and VXLAN UDP port.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanCfg {
    /// Network byte order, as it sits in the IPv4 header.
    node_ip: u32,
    /// Host byte order.
    port: u16,
    pad: u16,
}

const _: () = assert!(size_of::<VxlanCfg>() == 8);

// SAFETY: repr(C), only integer fields, no implicit padding (the size assert proves it).
unsafe impl aya::Pod for VxlanCfg {}

impl VxlanCfg {
    pub fn new(node_ip: Ipv4Addr, port: u16) -> Self {
        Self {
            node_ip: ip_key(node_ip),
            port,
            pad: 0,
        }
    }
}

/// C `struct port_range`: a port's slots in `xsks`, `base..base + queues`. A packet on rx
/// queue `q >= queues` is passed to the kernel (counted [`Reason::NoSlot`]).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub base: u32,
    pub queues: u32,
}

const _: () = assert!(size_of::<PortRange>() == 8);

// SAFETY: repr(C), only integer fields, no implicit padding (the size assert proves it).
unsafe impl aya::Pod for PortRange {}

impl PortRange {
    /// The slot of rx queue `queue`.
    pub fn slot(&self, queue: u32) -> u32 {
        self.base + queue
    }

    /// One past the last slot.
    pub fn end(&self) -> u32 {
        self.base + self.queues
    }
}

/// C `struct frontend_key`: a NodePort / ExternalIP / LoadBalancer frontend.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrontendKey {
    /// Network byte order.
    addr: u32,
    /// Host byte order.
    port: u16,
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP).
    proto: u8,
    /// Part of the hash key, so always zero.
    pad: u8,
}

const _: () = assert!(size_of::<FrontendKey>() == 8);

// SAFETY: repr(C), only integer fields, no implicit padding (the size assert proves it).
unsafe impl aya::Pod for FrontendKey {}

impl FrontendKey {
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const SCTP: u8 = 132;

    pub fn new(addr: Ipv4Addr, port: u16, proto: u8) -> Self {
        Self {
            addr: ip_key(addr),
            port,
            proto,
            pad: 0,
        }
    }
}

/// C `enum reason`: why a program redirected or passed a packet; the index into the
/// per-CPU `reasons` counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Reason {
    UplinkVxlan = 0,
    UplinkFrontend = 1,
    UplinkPass = 2,
    PodRedirect = 3,
    PodToNode = 4,
    /// The program chose to redirect but the receiving interface has no range in
    /// `port_slots`, or the rx queue lies beyond it (or outside `xsks`), so it passed the
    /// packet to the kernel. Counted instead of the redirect reason: every packet bumps one
    /// counter.
    NoSlot = 5,
    /// A pod sent TCP/UDP/SCTP to one of the node's addresses on a frontend (its own
    /// node's NodePort); redirected for the datapath to load-balance.
    PodNodePort = 6,
    /// Everything arriving on the datapath side of the host veth (`kxdp-dp`).
    HostRedirect = 7,
}

impl Reason {
    pub const ALL: [Reason; 8] = [
        Reason::UplinkVxlan,
        Reason::UplinkFrontend,
        Reason::UplinkPass,
        Reason::PodRedirect,
        Reason::PodToNode,
        Reason::NoSlot,
        Reason::PodNodePort,
        Reason::HostRedirect,
    ];

    /// A stable snake_case name, for metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Reason::UplinkVxlan => "uplink_vxlan",
            Reason::UplinkFrontend => "uplink_frontend",
            Reason::UplinkPass => "uplink_pass",
            Reason::PodRedirect => "pod_redirect",
            Reason::PodToNode => "pod_to_node",
            Reason::NoSlot => "no_slot",
            Reason::PodNodePort => "pod_node_port",
            Reason::HostRedirect => "host_redirect",
        }
    }
}

/// The kernel compares the raw header bytes, so the key is the address's bytes in wire
/// order reinterpreted as a native u32.
fn ip_key(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

fn map_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut aya::maps::Map, XdpError> {
    ebpf.map_mut(name).ok_or(XdpError::MissingMap(name))
}

/// Sets this node's underlay address and VXLAN port; until then the uplink program
/// redirects no VXLAN.
pub fn set_vxlan(ebpf: &mut Ebpf, cfg: VxlanCfg) -> Result<(), XdpError> {
    let mut map: Array<_, VxlanCfg> = Array::try_from(map_mut(ebpf, VXLAN_CFG)?)?;
    map.set(0, cfg, 0)?;
    Ok(())
}

/// Adds one of the node's own addresses (pod program passes IPv4 to it to the kernel).
pub fn add_node_addr(ebpf: &mut Ebpf, addr: Ipv4Addr) -> Result<(), XdpError> {
    let mut map: HashMap<_, u32, u8> = HashMap::try_from(map_mut(ebpf, NODE_ADDRS)?)?;
    map.insert(ip_key(addr), 1, 0)?;
    Ok(())
}

pub fn remove_node_addr(ebpf: &mut Ebpf, addr: Ipv4Addr) -> Result<(), XdpError> {
    let mut map: HashMap<_, u32, u8> = HashMap::try_from(map_mut(ebpf, NODE_ADDRS)?)?;
    map.remove(&ip_key(addr))?;
    Ok(())
}

/// Adds a Service frontend the uplink program redirects.
pub fn add_frontend(ebpf: &mut Ebpf, key: FrontendKey) -> Result<(), XdpError> {
    let mut map: HashMap<_, FrontendKey, u8> = HashMap::try_from(map_mut(ebpf, FRONTENDS)?)?;
    map.insert(key, 1, 0)?;
    Ok(())
}

pub fn remove_frontend(ebpf: &mut Ebpf, key: FrontendKey) -> Result<(), XdpError> {
    let mut map: HashMap<_, FrontendKey, u8> = HashMap::try_from(map_mut(ebpf, FRONTENDS)?)?;
    map.remove(&key)?;
    Ok(())
}

/// The `reasons` counter for `reason`, summed over CPUs.
pub fn reason_count(ebpf: &Ebpf, reason: Reason) -> Result<u64, XdpError> {
    let map = ebpf.map(REASONS).ok_or(XdpError::MissingMap(REASONS))?;
    let map: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
    Ok(map.get(&(reason as u32), 0)?.iter().sum())
}

/// Gives the interface `ifindex` the XSKMAP slots `range`: a packet the programs redirect
/// from its rx queue `q` goes to the socket at slot `range.base + q` when `q <
/// range.queues`, else to the kernel. Replaces an earlier range. Until a port has a range,
/// its redirect path passes to the kernel (counted as [`Reason::NoSlot`]).
pub fn set_port_slots(ebpf: &mut Ebpf, ifindex: u32, range: PortRange) -> Result<(), XdpError> {
    if range.queues == 0 || range.end() > XSKS_ENTRIES {
        return Err(XdpError::RangeOutOfBounds {
            base: range.base,
            queues: range.queues,
        });
    }
    let mut map: HashMap<_, u32, PortRange> = HashMap::try_from(map_mut(ebpf, PORT_SLOTS)?)?;
    map.insert(ifindex, range, 0)?;
    Ok(())
}

/// Takes the slots away from `ifindex`. Returns whether it had any, so removing twice is
/// harmless (a port deleted twice, or never added).
pub fn remove_port_slots(ebpf: &mut Ebpf, ifindex: u32) -> Result<bool, XdpError> {
    let mut map: HashMap<_, u32, PortRange> = HashMap::try_from(map_mut(ebpf, PORT_SLOTS)?)?;
    match map.remove(&ifindex) {
        Ok(()) => Ok(true),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// The slot range of `ifindex`, if it has one.
pub fn port_slots(ebpf: &Ebpf, ifindex: u32) -> Result<Option<PortRange>, XdpError> {
    let map = ebpf
        .map(PORT_SLOTS)
        .ok_or(XdpError::MissingMap(PORT_SLOTS))?;
    let map: HashMap<_, u32, PortRange> = HashMap::try_from(map)?;
    match map.get(&ifindex, 0) {
        Ok(range) => Ok(Some(range)),
        Err(aya::maps::MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Puts the AF_XDP socket `socket` (a `RawFd`, `BorrowedFd`, `OwnedFd`, ...) at `slot` of
/// the XSKMAP, replacing whatever was there. The kernel also empties the slot itself when
/// the socket is closed for good, so a dead worker's slot falls back to the kernel.
pub fn set_xsk(ebpf: &mut Ebpf, slot: u32, socket: impl AsRawFd) -> Result<(), XdpError> {
    check_slot(slot)?;
    xsk_map(ebpf)?.set(slot, socket, 0)?;
    Ok(())
}

/// Empties `slot` of the XSKMAP (the kernel accepts this for an empty slot too); packets
/// redirected to it then fall back to the kernel.
pub fn remove_xsk(ebpf: &mut Ebpf, slot: u32) -> Result<(), XdpError> {
    check_slot(slot)?;
    xsk_map(ebpf)?.unset(slot)?;
    Ok(())
}

fn check_slot(slot: u32) -> Result<(), XdpError> {
    if slot < XSKS_ENTRIES {
        Ok(())
    } else {
        Err(XdpError::SlotOutOfRange { slot })
    }
}

/// The XSKMAP the programs redirect into, keyed by slot (port base + rx queue). Prefer
/// [`set_xsk`] / [`remove_xsk`]; this is for callers that need the raw map.
pub fn xsk_map(ebpf: &mut Ebpf) -> Result<aya::maps::XskMap<&mut aya::maps::MapData>, XdpError> {
    Ok(aya::maps::XskMap::try_from(map_mut(ebpf, XSKS)?)?)
}
