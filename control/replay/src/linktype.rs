//! Link types: which captures the datapath can take, and how raw IP becomes Ethernet.
//!
//! The datapath only sees Ethernet frames, so a capture without a link-layer header
//! (tcpdump on a tun device, `-y RAW`, many generators) is given one here. The header is
//! what the frame would have carried had it arrived on that port for real:
//!
//! | port   | destination MAC                         | source MAC          |
//! |--------|-----------------------------------------|---------------------|
//! | pod    | the node's gateway MAC (pods route via it) | the pod's own MAC |
//! | uplink | the node's underlay MAC                 | 00:00:00:00:00:00   |
//! | host   | the node's gateway MAC                  | 00:00:00:00:00:00   |
//!
//! The EtherType comes from the link type (IPV4/IPV6) or, for RAW, from the IP version
//! nibble; anything that is not version 6 is labelled IPv4 so the pipeline, not the
//! driver, reports what is wrong with it.

use datapath::MacAddr;
use datapath::tables::{PortId, PortKind, Tables};

/// How a captured packet starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// LINKTYPE_ETHERNET (1): handed to the datapath as is.
    Ethernet,
    /// Raw IP without a link header; the EtherType is decided per packet.
    RawIp,
    /// LINKTYPE_IPV4 (228).
    Ipv4,
    /// LINKTYPE_IPV6 (229).
    Ipv6,
    /// Anything else (the link type number): not processed, `unsupported_linktype`.
    Unsupported(u32),
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;

impl LinkKind {
    /// Classifies a pcap LINKTYPE value. 12 and 14 are the DLT values some BSDs write
    /// for raw IP (libpcap maps both to LINKTYPE_RAW, 101).
    pub fn from_code(code: u32) -> LinkKind {
        match code {
            1 => LinkKind::Ethernet,
            12 | 14 | 101 => LinkKind::RawIp,
            228 => LinkKind::Ipv4,
            229 => LinkKind::Ipv6,
            other => LinkKind::Unsupported(other),
        }
    }
}

/// The Ethernet frame the datapath should see for `data` captured with `link` on `port`,
/// or `None` when the link type is not supported.
pub fn to_ethernet(link: LinkKind, data: &[u8], tables: &Tables, port: PortId) -> Option<Vec<u8>> {
    let ethertype = match link {
        LinkKind::Ethernet => return Some(data.to_vec()),
        LinkKind::Unsupported(_) => return None,
        LinkKind::Ipv4 => ETHERTYPE_IPV4,
        LinkKind::Ipv6 => ETHERTYPE_IPV6,
        LinkKind::RawIp => match data.first().map(|b| b >> 4) {
            Some(6) => ETHERTYPE_IPV6,
            _ => ETHERTYPE_IPV4,
        },
    };
    let (dst, src) = peer_macs(tables, port);
    let mut frame = Vec::with_capacity(14 + data.len());
    frame.extend_from_slice(&dst.0);
    frame.extend_from_slice(&src.0);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(data);
    Some(frame)
}

/// (destination, source) MACs of a frame arriving on `port` (see the module table).
fn peer_macs(tables: &Tables, port: PortId) -> (MacAddr, MacAddr) {
    let node = &tables.node;
    match tables.port(port).map(|p| p.kind) {
        Some(PortKind::Uplink) => (node.underlay_mac, MacAddr::ZERO),
        Some(PortKind::Pod(_)) => {
            let src = tables
                .pod_on_port(port)
                .map_or(MacAddr::ZERO, |pod| pod.mac);
            (node.gateway_mac, src)
        }
        Some(PortKind::Host) | None => (node.gateway_mac, MacAddr::ZERO),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_codes() {
        assert_eq!(LinkKind::from_code(1), LinkKind::Ethernet);
        assert_eq!(LinkKind::from_code(101), LinkKind::RawIp);
        assert_eq!(LinkKind::from_code(12), LinkKind::RawIp);
        assert_eq!(LinkKind::from_code(229), LinkKind::Ipv6);
        assert_eq!(LinkKind::from_code(113), LinkKind::Unsupported(113));
    }
}
