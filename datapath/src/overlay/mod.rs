//! VXLAN (RFC 7348) encapsulation into a frame's headroom, and decapsulation.
//!
//! Owns the outer headers only: encap wraps whatever inner Ethernet frame it is given,
//! decap accepts only our VNI on our address and UDP port and hands back the inner frame.
//! Neither looks at the inner packet beyond its length. Nothing is copied but the 50
//! outer header bytes.

use crate::addr::MacAddr;
use crate::frame::Frame;
use crate::wire::ethernet::{self, EthernetFrame};
use crate::wire::ipv4::{self, Ipv4Packet, Ipv4Repr};
use crate::wire::udp::{self, UdpPacket};
use crate::wire::vlan::L2Info;
use crate::wire::vxlan::{self, VxlanHeader, VxlanRepr};

/// Bytes VXLAN over IPv4 adds in front of the inner Ethernet frame.
pub const OVERHEAD: usize =
    ethernet::HEADER_LEN + ipv4::HEADER_LEN + udp::HEADER_LEN + vxlan::HEADER_LEN;

/// Outer source ports come from this range (RFC 7348 §5 recommends the dynamic range),
/// so ECMP in the underlay spreads flows while every packet of a flow takes one path.
pub const SOURCE_PORT_MIN: u16 = 49152;
const SOURCE_PORT_SPAN: u32 = 65536 - SOURCE_PORT_MIN as u32;

/// TTL of the outer header: the underlay is a routed network of unknown depth.
pub const OUTER_TTL: u8 = 64;

/// The outer UDP source port for an inner flow hash.
pub fn source_port(flow_hash: u32) -> u16 {
    SOURCE_PORT_MIN + (flow_hash % SOURCE_PORT_SPAN) as u16
}

/// Everything the outer headers need.
#[derive(Debug, Clone, Copy)]
pub struct Encap {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src_ip: [u8; 4],
    pub dst_ip: [u8; 4],
    pub src_port: u16,
    pub dst_port: u16,
    pub vni: u32,
}

/// Not enough headroom in front of the frame for the outer headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoHeadroom;

/// Wraps the frame (an inner Ethernet frame) in Ethernet/IPv4/UDP/VXLAN. The outer
/// IPv4 header has DF set (the underlay must not fragment; oversize packets are answered
/// with ICMP before we get here) and the UDP checksum is 0, as RFC 7348 allows on IPv4.
pub fn encap(frame: &mut Frame<'_>, e: &Encap) -> Result<(), NoHeadroom> {
    let inner_len = frame.len();
    if !frame.push_front(OVERHEAD) {
        return Err(NoHeadroom);
    }
    let buf = frame.data_mut();
    let (eth, rest) = buf.split_at_mut(ethernet::HEADER_LEN);
    let mut eth = EthernetFrame::new_unchecked(eth);
    eth.set_dst_addr(e.dst_mac);
    eth.set_src_addr(e.src_mac);
    eth.set_ethertype(ethernet::ethertype::IPV4);

    let udp_len = udp::HEADER_LEN + vxlan::HEADER_LEN + inner_len;
    let (ip, rest) = rest.split_at_mut(ipv4::HEADER_LEN);
    Ipv4Repr {
        src_addr: e.src_ip,
        dst_addr: e.dst_ip,
        protocol: crate::tables::proto::UDP,
        ttl: OUTER_TTL,
        payload_len: udp_len,
        dont_frag: true,
        ident: 0,
        dscp_ecn: 0,
    }
    .emit(&mut Ipv4Packet::new_unchecked(ip));

    let (udp_hdr, rest) = rest.split_at_mut(udp::HEADER_LEN);
    let mut udp_hdr = UdpPacket::new_unchecked(udp_hdr);
    udp_hdr.set_src_port(e.src_port);
    udp_hdr.set_dst_port(e.dst_port);
    udp_hdr.set_len(udp_len as u16);
    udp_hdr.set_checksum(0);

    VxlanRepr { vni: e.vni }.emit(&mut VxlanHeader::new_unchecked(
        &mut rest[..vxlan::HEADER_LEN],
    ));
    Ok(())
}

/// Where decap accepts VXLAN.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub local_ip: [u8; 4],
    pub udp_port: u16,
    pub vni: u32,
}

/// Why a frame was not decapsulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecapError {
    /// Not VXLAN to our address and port (or an outer fragment): the kernel's business.
    NotOurs,
    /// Ours, but a VNI that is not ours.
    WrongVni,
    /// Ours, but the VXLAN header or inner frame is broken.
    Malformed,
}

/// What decap learnt from the outer headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decapped {
    /// The sending node's underlay address.
    pub outer_src: [u8; 4],
    pub vni: u32,
}

/// If the frame is VXLAN for `ep`, strips the outer headers (leaving the inner Ethernet
/// frame) and says who sent it. On error the frame is unchanged.
pub fn decap(frame: &mut Frame<'_>, l2: &L2Info, ep: &Endpoint) -> Result<Decapped, DecapError> {
    if l2.ethertype != ethernet::ethertype::IPV4 {
        return Err(DecapError::NotOurs);
    }
    let data = frame.data();
    let ip = data
        .get(l2.l3_offset..)
        .and_then(|b| Ipv4Packet::new_checked(b).ok())
        .ok_or(DecapError::NotOurs)?;
    if ip.dst_addr() != ep.local_ip
        || ip.protocol() != crate::tables::proto::UDP
        || ip.is_fragment()
    {
        return Err(DecapError::NotOurs);
    }
    let outer_src = ip.src_addr();
    let udp = UdpPacket::new_checked(ip.payload()).map_err(|_| DecapError::NotOurs)?;
    if udp.dst_port() != ep.udp_port {
        return Err(DecapError::NotOurs);
    }
    let vx = VxlanHeader::new_checked(udp.payload()).map_err(|_| DecapError::Malformed)?;
    if !vx.vni_valid() {
        return Err(DecapError::Malformed);
    }
    if vx.vni() != ep.vni {
        return Err(DecapError::WrongVni);
    }
    let inner_len = udp.payload().len() - vxlan::HEADER_LEN;
    if inner_len < ethernet::HEADER_LEN {
        return Err(DecapError::Malformed);
    }
    let vni = vx.vni();
    let outer_len = l2.l3_offset + ip.header_len() + udp::HEADER_LEN + vxlan::HEADER_LEN;
    // Drop trailing underlay padding too: the inner frame ends where the UDP datagram does.
    frame.truncate(outer_len + inner_len);
    if !frame.pull_front(outer_len) {
        return Err(DecapError::Malformed);
    }
    Ok(Decapped { outer_src, vni })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::DEFAULT_HEADROOM;
    use crate::wire::vlan::walk_l2;

    const INNER: [u8; 60] = {
        let mut f = [0u8; 60];
        f[12] = 0x08;
        f[13] = 0x00;
        f[14] = 0x45;
        f
    };

    fn encapped(buf: &mut [u8]) -> Frame<'_> {
        let mut f = Frame::load(buf, DEFAULT_HEADROOM, &INNER).unwrap();
        encap(
            &mut f,
            &Encap {
                src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
                dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
                src_ip: [192, 168, 50, 10],
                dst_ip: [192, 168, 50, 11],
                src_port: source_port(12345),
                dst_port: 4789,
                vni: 1,
            },
        )
        .unwrap();
        f
    }

    #[test]
    fn encap_then_decap_is_identity() {
        let mut buf = [0xa5u8; 512];
        let mut f = encapped(&mut buf);
        assert_eq!(f.len(), INNER.len() + OVERHEAD);
        let l2 = walk_l2(f.data()).unwrap();
        let ep = Endpoint {
            local_ip: [192, 168, 50, 11],
            udp_port: 4789,
            vni: 1,
        };
        let got = decap(&mut f, &l2, &ep).unwrap();
        assert_eq!(got.outer_src, [192, 168, 50, 10]);
        assert_eq!(f.data(), &INNER[..]);
    }

    #[test]
    fn decap_checks_address_port_and_vni() {
        let mut buf = [0xa5u8; 512];
        let mut f = encapped(&mut buf);
        let l2 = walk_l2(f.data()).unwrap();
        let ep = |ip, port, vni| Endpoint {
            local_ip: ip,
            udp_port: port,
            vni,
        };
        assert_eq!(
            decap(&mut f, &l2, &ep([192, 168, 50, 12], 4789, 1)),
            Err(DecapError::NotOurs)
        );
        assert_eq!(
            decap(&mut f, &l2, &ep([192, 168, 50, 11], 8472, 1)),
            Err(DecapError::NotOurs)
        );
        assert_eq!(
            decap(&mut f, &l2, &ep([192, 168, 50, 11], 4789, 2)),
            Err(DecapError::WrongVni)
        );
        assert_eq!(
            f.len(),
            INNER.len() + OVERHEAD,
            "errors leave the frame alone"
        );
    }

    #[test]
    fn source_port_stays_in_dynamic_range() {
        for h in [0, 1, 16383, 16384, u32::MAX] {
            assert!(source_port(h) >= SOURCE_PORT_MIN);
        }
        assert_eq!(source_port(0), 49152);
        assert_eq!(source_port(16384), 49152);
        assert_eq!(source_port(16383), 65535);
    }
}
