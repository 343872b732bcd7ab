//! One pass over an IP packet's headers into the summary every later step uses.
//!
//! Validates what forwarding relies on (lengths, IPv4 header checksum, the IPv6
//! extension chain, the transport header of a first fragment) and records offsets, so
//! later steps rewrite fields without parsing again.

use crate::addr::IpKey;
use crate::hash::FiveTuple;
use crate::tables::proto;
use crate::verdict::DropReason;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ipv6::{self, Ipv6Packet};
use crate::wire::sctp::{self, SctpPacket};
use crate::wire::tcp::TcpPacket;
use crate::wire::udp::UdpPacket;
use crate::wire::{icmpv4, icmpv6};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// The headers of one IP packet, located in its frame.
#[derive(Debug, Clone, Copy)]
pub struct IpHeaders {
    pub family: Family,
    /// Offset of the IP header in the frame.
    pub l3_offset: usize,
    /// Total length of the IP packet (header + payload), without link-layer padding.
    pub ip_len: usize,
    pub src: IpKey,
    pub dst: IpKey,
    /// Transport protocol (after IPv6 extension headers).
    pub proto: u8,
    /// Offset of the transport header in the frame.
    pub l4_offset: usize,
    /// TTL or hop limit.
    pub ttl: u8,
    /// Any fragment (first or not).
    pub fragment: bool,
    /// A non-first fragment: no transport header here.
    pub later_fragment: bool,
    pub dont_frag: bool,
    /// Transport ports; for ICMP echo the identifier in both; 0 otherwise.
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_flags: u8,
    /// ICMP/ICMPv6 type, when the transport is ICMP.
    pub icmp_type: Option<u8>,
}

impl IpHeaders {
    /// The flow as the hash sees it (ports 0 where there are none).
    pub fn five_tuple(&self) -> FiveTuple {
        FiveTuple {
            src: self.src,
            dst: self.dst,
            src_port: self.src_port,
            dst_port: self.dst_port,
            proto: self.proto,
        }
    }

    pub fn has_ports(&self) -> bool {
        !self.later_fragment && matches!(self.proto, proto::TCP | proto::UDP | proto::SCTP)
    }

    /// True for ICMP errors: we never answer those with another ICMP error.
    pub fn is_icmp_error(&self) -> bool {
        match (self.family, self.icmp_type) {
            (Family::V4, Some(t)) => icmpv4::is_error(t),
            (Family::V6, Some(t)) => icmpv6::is_error(t),
            _ => false,
        }
    }
}

/// Parses the IP packet at `l3_offset` of `frame`, of the given EtherType family.
pub fn parse_ip(frame: &[u8], l3_offset: usize, family: Family) -> Result<IpHeaders, DropReason> {
    let l3 = frame.get(l3_offset..).unwrap_or(&[]);
    let mut h = match family {
        Family::V4 => parse_v4(l3)?,
        Family::V6 => parse_v6(l3)?,
    };
    h.l3_offset = l3_offset;
    let l4_rel = h.l4_offset;
    h.l4_offset += l3_offset;
    if !h.later_fragment {
        let l4 = l3.get(l4_rel..h.ip_len).unwrap_or(&[]);
        parse_l4(&mut h, l4)?;
    }
    Ok(h)
}

fn parse_v4(l3: &[u8]) -> Result<IpHeaders, DropReason> {
    let ip = Ipv4Packet::new_checked(l3).map_err(|_| DropReason::MalformedIpv4)?;
    if !ip.verify_checksum() {
        return Err(DropReason::MalformedIpv4);
    }
    Ok(IpHeaders {
        family: Family::V4,
        l3_offset: 0,
        ip_len: usize::from(ip.total_len()),
        src: IpKey::v4(ip.src_addr()),
        dst: IpKey::v4(ip.dst_addr()),
        proto: ip.protocol(),
        l4_offset: ip.header_len(),
        ttl: ip.ttl(),
        fragment: ip.is_fragment(),
        later_fragment: ip.frag_offset() != 0,
        dont_frag: ip.dont_frag(),
        src_port: 0,
        dst_port: 0,
        tcp_flags: 0,
        icmp_type: None,
    })
}

fn parse_v6(l3: &[u8]) -> Result<IpHeaders, DropReason> {
    let ip = Ipv6Packet::new_checked(l3).map_err(|_| DropReason::MalformedIpv6)?;
    let ip_len = ipv6::HEADER_LEN + usize::from(ip.payload_len());
    let upper =
        ipv6::walk_extension_headers(&l3[..ip_len]).map_err(|_| DropReason::MalformedIpv6)?;
    Ok(IpHeaders {
        family: Family::V6,
        l3_offset: 0,
        ip_len,
        src: IpKey::v6(ip.src_addr()),
        dst: IpKey::v6(ip.dst_addr()),
        proto: upper.protocol,
        l4_offset: upper.offset,
        ttl: ip.hop_limit(),
        fragment: upper.fragment.is_some(),
        later_fragment: upper.fragment.is_some_and(|f| f.offset != 0),
        // IPv6 routers never fragment: every IPv6 packet behaves as if DF were set.
        dont_frag: true,
        src_port: 0,
        dst_port: 0,
        tcp_flags: 0,
        icmp_type: None,
    })
}

fn parse_l4(h: &mut IpHeaders, l4: &[u8]) -> Result<(), DropReason> {
    match h.proto {
        proto::TCP => {
            let tcp = TcpPacket::new_checked(l4).map_err(|_| DropReason::MalformedL4)?;
            h.src_port = tcp.src_port();
            h.dst_port = tcp.dst_port();
            h.tcp_flags = tcp.flags();
        }
        proto::UDP => {
            let udp = UdpPacket::new_checked(l4).map_err(|_| DropReason::MalformedL4)?;
            h.src_port = udp.src_port();
            h.dst_port = udp.dst_port();
        }
        proto::SCTP => {
            if l4.len() < sctp::HEADER_LEN {
                return Err(DropReason::MalformedL4);
            }
            let sctp = SctpPacket::new_checked(l4).map_err(|_| DropReason::MalformedL4)?;
            h.src_port = sctp.src_port();
            h.dst_port = sctp.dst_port();
        }
        proto::ICMP if h.family == Family::V4 => {
            let icmp =
                icmpv4::Icmpv4Packet::new_checked(l4).map_err(|_| DropReason::MalformedL4)?;
            h.icmp_type = Some(icmp.msg_type());
            if matches!(
                icmp.msg_type(),
                icmpv4::TYPE_ECHO_REQUEST | icmpv4::TYPE_ECHO_REPLY
            ) {
                h.src_port = icmp.echo_ident();
                h.dst_port = icmp.echo_ident();
            }
        }
        proto::ICMPV6 if h.family == Family::V6 => {
            let icmp =
                icmpv6::Icmpv6Packet::new_checked(l4).map_err(|_| DropReason::MalformedL4)?;
            h.icmp_type = Some(icmp.msg_type());
            if matches!(
                icmp.msg_type(),
                icmpv6::TYPE_ECHO_REQUEST | icmpv6::TYPE_ECHO_REPLY
            ) {
                h.src_port = icmp.echo_ident();
                h.dst_port = icmp.echo_ident();
            }
        }
        // Other protocols (GRE, ESP, ...) are routed by address alone.
        _ => {}
    }
    Ok(())
}
