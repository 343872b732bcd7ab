//! Frames built with etherparse, an implementation independent of kxdp's wire layer.
//!
//! Both the inputs and the expected outputs of every case come from here, field by
//! field with freshly computed checksums, so an expectation never depends on the code
//! under test. Nothing here knows what kxdp does to a packet: the case modules decide
//! what the output must look like and describe it with these same builders.

use etherparse::icmpv4::{DestUnreachableHeader, TimeExceededCode};
use etherparse::{
    ArpEthIpv4Packet, ArpOperation, EtherType, Ethernet2Header, IcmpEchoHeader, Icmpv4Header,
    Icmpv4Type, Icmpv6Header, Icmpv6Type, IpNumber, Ipv4Header, Ipv6Header, TcpHeader, UdpHeader,
};

/// An Ethernet MAC address.
pub type Mac = [u8; 6];

pub const BROADCAST: Mac = [0xff; 6];

/// kxdp's derived MAC for an IPv4 address: `0a:58:<IPv4 bytes>` (docs/replay.md).
pub const fn mac_for(ip: [u8; 4]) -> Mac {
    [0x0a, 0x58, ip[0], ip[1], ip[2], ip[3]]
}

/// The Ethernet ends of a frame.
#[derive(Debug, Clone, Copy)]
pub struct L2 {
    pub src: Mac,
    pub dst: Mac,
}

/// The IPv4 header fields the cases vary.
#[derive(Debug, Clone, Copy)]
pub struct V4 {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub ttl: u8,
    pub ident: u16,
    pub df: bool,
}

impl V4 {
    /// A header as a Linux sender writes it for a connected socket: DF set, TTL 64.
    pub fn new(src: [u8; 4], dst: [u8; 4]) -> V4 {
        V4 {
            src,
            dst,
            ttl: 64,
            ident: 0x1234,
            df: true,
        }
    }

    pub fn ttl(self, ttl: u8) -> V4 {
        V4 { ttl, ..self }
    }

    pub fn df(self, df: bool) -> V4 {
        V4 { df, ..self }
    }

    pub fn src(self, src: [u8; 4]) -> V4 {
        V4 { src, ..self }
    }

    pub fn dst(self, dst: [u8; 4]) -> V4 {
        V4 { dst, ..self }
    }
}

/// The IPv6 header fields the cases vary.
#[derive(Debug, Clone, Copy)]
pub struct V6 {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub hop_limit: u8,
}

impl V6 {
    pub fn new(src: [u8; 16], dst: [u8; 16]) -> V6 {
        V6 {
            src,
            dst,
            hop_limit: 64,
        }
    }

    pub fn hop_limit(self, hop_limit: u8) -> V6 {
        V6 { hop_limit, ..self }
    }
}

/// A transport header; ports of TCP/UDP, identifier and sequence of ICMP echo.
#[derive(Debug, Clone, Copy)]
pub enum L4 {
    /// TCP with the given flags (`SYN`, `SYN|ACK`, ... from [`tcp_flags`]).
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// ICMP / ICMPv6 echo request.
    Echo {
        id: u16,
        seq: u16,
    },
}

/// TCP flag bits as they sit in the header's flags byte.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

impl L4 {
    pub fn tcp(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8) -> L4 {
        L4::Tcp {
            sport,
            dport,
            seq,
            ack,
            flags,
        }
    }

    pub fn udp(sport: u16, dport: u16) -> L4 {
        L4::Udp { sport, dport }
    }

    /// The same header with other ports (what a NAT leaves of it).
    pub fn with_ports(self, sport: u16, dport: u16) -> L4 {
        match self {
            L4::Tcp {
                seq, ack, flags, ..
            } => L4::Tcp {
                sport,
                dport,
                seq,
                ack,
                flags,
            },
            L4::Udp { .. } => L4::Udp { sport, dport },
            echo @ L4::Echo { .. } => echo,
        }
    }

    /// (source, destination) port as a flow hash sees them (echo id in both for ICMP).
    pub fn ports(self) -> (u16, u16) {
        match self {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => (sport, dport),
            L4::Echo { id, .. } => (id, id),
        }
    }

    fn tcp_header(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8) -> TcpHeader {
        let mut h = TcpHeader::new(sport, dport, seq, 64240);
        h.acknowledgment_number = ack;
        h.fin = flags & tcp_flags::FIN != 0;
        h.syn = flags & tcp_flags::SYN != 0;
        h.rst = flags & tcp_flags::RST != 0;
        h.ack = flags & tcp_flags::ACK != 0;
        h
    }

    /// IP protocol number of this header over IPv4 (`v6` false) or IPv6.
    pub fn proto(self, v6: bool) -> u8 {
        match self {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
            L4::Echo { .. } if v6 => 58,
            L4::Echo { .. } => 1,
        }
    }

    /// The transport header and payload over IPv4, checksummed against `ip`.
    fn bytes_v4(self, ip: &Ipv4Header, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            L4::Tcp {
                sport,
                dport,
                seq,
                ack,
                flags,
            } => {
                let mut h = L4::tcp_header(sport, dport, seq, ack, flags);
                h.checksum = h.calc_checksum_ipv4(ip, payload).expect("tcp checksum");
                out.extend_from_slice(&h.to_bytes());
            }
            L4::Udp { sport, dport } => {
                let h = UdpHeader::with_ipv4_checksum(sport, dport, ip, payload).expect("udp");
                out.extend_from_slice(&h.to_bytes());
            }
            L4::Echo { id, seq } => {
                let h = Icmpv4Header::with_checksum(
                    Icmpv4Type::EchoRequest(IcmpEchoHeader { id, seq }),
                    payload,
                );
                out.extend_from_slice(&h.to_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    /// The transport header and payload over IPv6, checksummed against `ip`.
    fn bytes_v6(self, ip: &Ipv6Header, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            L4::Tcp {
                sport,
                dport,
                seq,
                ack,
                flags,
            } => {
                let mut h = L4::tcp_header(sport, dport, seq, ack, flags);
                h.checksum = h.calc_checksum_ipv6(ip, payload).expect("tcp checksum");
                out.extend_from_slice(&h.to_bytes());
            }
            L4::Udp { sport, dport } => {
                let h = UdpHeader::with_ipv6_checksum(sport, dport, ip, payload).expect("udp");
                out.extend_from_slice(&h.to_bytes());
            }
            L4::Echo { id, seq } => {
                let h = Icmpv6Header::with_checksum(
                    Icmpv6Type::EchoRequest(IcmpEchoHeader { id, seq }),
                    ip.source,
                    ip.destination,
                    payload,
                )
                .expect("icmpv6 checksum");
                out.extend_from_slice(&h.to_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    /// Length of the transport header.
    pub fn header_len(self) -> usize {
        match self {
            L4::Tcp { .. } => 20,
            L4::Udp { .. } | L4::Echo { .. } => 8,
        }
    }
}

/// An Ethernet header followed by `payload`.
pub fn ethernet(l2: L2, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let eth = Ethernet2Header {
        source: l2.src,
        destination: l2.dst,
        ether_type: EtherType(ethertype),
    };
    let mut out = eth.to_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// An IPv4 header (valid checksum) carrying `proto` and `payload`, without L2.
pub fn ipv4_raw(ip: V4, proto: u8, payload: &[u8]) -> Vec<u8> {
    let h = ipv4_header(ip, proto, payload.len());
    let mut out = h.to_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

fn ipv4_header(ip: V4, proto: u8, payload_len: usize) -> Ipv4Header {
    let len = u16::try_from(payload_len).expect("IPv4 payload fits");
    let mut h = Ipv4Header::new(len, ip.ttl, IpNumber(proto), ip.src, ip.dst).expect("ipv4");
    h.identification = ip.ident;
    h.dont_fragment = ip.df;
    h.header_checksum = h.calc_header_checksum();
    h
}

/// The IPv4 packet (no L2) of `l4` with `payload`, every checksum valid.
pub fn ipv4_packet(ip: V4, l4: L4, payload: &[u8]) -> Vec<u8> {
    let h = ipv4_header(ip, l4.proto(false), l4.header_len() + payload.len());
    let mut out = h.to_bytes().to_vec();
    out.extend_from_slice(&l4.bytes_v4(&h, payload));
    out
}

/// An Ethernet frame of an IPv4 packet.
pub fn eth_v4(l2: L2, ip: V4, l4: L4, payload: &[u8]) -> Vec<u8> {
    ethernet(l2, 0x0800, &ipv4_packet(ip, l4, payload))
}

/// The IPv6 packet (no L2) of `l4` with `payload`.
pub fn ipv6_packet(ip: V6, l4: L4, payload: &[u8]) -> Vec<u8> {
    let len = l4.header_len() + payload.len();
    let h = Ipv6Header {
        traffic_class: 0,
        flow_label: Default::default(),
        payload_length: u16::try_from(len).expect("IPv6 payload fits"),
        next_header: IpNumber(l4.proto(true)),
        hop_limit: ip.hop_limit,
        source: ip.src,
        destination: ip.dst,
    };
    let mut out = h.to_bytes().to_vec();
    out.extend_from_slice(&l4.bytes_v6(&h, payload));
    out
}

/// An Ethernet frame of an IPv6 packet.
pub fn eth_v6(l2: L2, ip: V6, l4: L4, payload: &[u8]) -> Vec<u8> {
    ethernet(l2, 0x86dd, &ipv6_packet(ip, l4, payload))
}

/// An ARP packet (Ethernet/IPv4) in a frame; `pad_to` pads the frame with zeros as
/// a NIC does for the 60-byte minimum.
pub fn arp(
    l2: L2,
    op: u16,
    sha: Mac,
    spa: [u8; 4],
    tha: Mac,
    tpa: [u8; 4],
    pad_to: usize,
) -> Vec<u8> {
    let pkt = ArpEthIpv4Packet {
        operation: ArpOperation(op),
        sender_mac: sha,
        sender_ipv4: spa,
        target_mac: tha,
        target_ipv4: tpa,
    };
    let mut out = ethernet(l2, 0x0806, &pkt.to_bytes());
    if out.len() < pad_to {
        out.resize(pad_to, 0);
    }
    out
}

pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

/// Which ICMP error a router sends.
#[derive(Debug, Clone, Copy)]
pub enum IcmpError {
    TimeExceeded,
    FragNeeded { mtu: u16 },
    PortUnreachable,
}

/// An ICMPv4 error from `from` to the sender of `offending` (an IP packet without L2),
/// quoting as much of it as fits in a 576-byte datagram (RFC 1812 §4.3.2.3), sent as a
/// router does: TTL 64, DF clear, identification 0.
pub fn icmpv4_error(
    l2: L2,
    from: [u8; 4],
    to: [u8; 4],
    error: IcmpError,
    offending: &[u8],
) -> Vec<u8> {
    let ip = V4 {
        src: from,
        dst: to,
        ttl: 64,
        ident: 0,
        df: false,
    };
    icmpv4_error_with(l2, ip, error, offending)
}

/// [`icmpv4_error`] with the outer IPv4 header's fields given (an error that has crossed
/// routers, or one a host sent with its own identification).
pub fn icmpv4_error_with(l2: L2, ip: V4, error: IcmpError, offending: &[u8]) -> Vec<u8> {
    let quote = &offending[..offending.len().min(576 - 20 - 8)];
    let ty = match error {
        IcmpError::TimeExceeded => Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit),
        IcmpError::FragNeeded { mtu } => {
            Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
                next_hop_mtu: mtu,
            })
        }
        IcmpError::PortUnreachable => {
            Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port)
        }
    };
    let icmp = Icmpv4Header::with_checksum(ty, quote);
    let mut body = icmp.to_bytes().to_vec();
    body.extend_from_slice(quote);
    ethernet(l2, 0x0800, &ipv4_raw(ip, 1, &body))
}

/// An IPv4 TCP segment like [`eth_v4`] builds, but with its window given: a RST a
/// stack generates for a connection it has no state for advertises 0.
pub fn eth_v4_window(l2: L2, ip: V4, l4: L4, window: u16, payload: &[u8]) -> Vec<u8> {
    let L4::Tcp {
        sport,
        dport,
        seq,
        ack,
        flags,
    } = l4
    else {
        return eth_v4(l2, ip, l4, payload);
    };
    let h = ipv4_header(ip, 6, 20 + payload.len());
    let mut tcp = L4::tcp_header(sport, dport, seq, ack, flags);
    tcp.window_size = window;
    tcp.checksum = tcp.calc_checksum_ipv4(&h, payload).expect("tcp checksum");
    let mut out = h.to_bytes().to_vec();
    out.extend_from_slice(&tcp.to_bytes());
    out.extend_from_slice(payload);
    ethernet(l2, 0x0800, &out)
}

/// An ICMPv6 time exceeded from `from` to `to`, quoting as much of `offending` as fits
/// in 1280 bytes (RFC 4443 §2.4), hop limit 64.
pub fn icmpv6_time_exceeded(l2: L2, from: [u8; 16], to: [u8; 16], offending: &[u8]) -> Vec<u8> {
    let quote = &offending[..offending.len().min(1280 - 40 - 8)];
    let ty = Icmpv6Type::TimeExceeded(etherparse::icmpv6::TimeExceededCode::HopLimitExceeded);
    let icmp = Icmpv6Header::with_checksum(ty, from, to, quote).expect("icmpv6 checksum");
    let mut body = icmp.to_bytes().to_vec();
    body.extend_from_slice(quote);
    let h = Ipv6Header {
        traffic_class: 0,
        flow_label: Default::default(),
        payload_length: u16::try_from(body.len()).expect("fits"),
        next_header: IpNumber(58),
        hop_limit: 64,
        source: from,
        destination: to,
    };
    let mut ip = h.to_bytes().to_vec();
    ip.extend_from_slice(&body);
    ethernet(l2, 0x86dd, &ip)
}

/// An NDP message (RFC 4861) in a frame: ICMPv6 `msg_type` with the 4 bytes after the
/// checksum (`flags`), then `body` (target address and options), checksummed by etherparse.
pub fn ndp_frame(l2: L2, ip: V6, msg_type: u8, flags: [u8; 4], body: &[u8]) -> Vec<u8> {
    let ty = Icmpv6Type::Unknown {
        type_u8: msg_type,
        code_u8: 0,
        bytes5to8: flags,
    };
    let icmp = Icmpv6Header::with_checksum(ty, ip.src, ip.dst, body).expect("icmpv6 checksum");
    let mut msg = icmp.to_bytes().to_vec();
    msg.extend_from_slice(body);
    let h = Ipv6Header {
        traffic_class: 0,
        flow_label: Default::default(),
        payload_length: u16::try_from(msg.len()).expect("fits"),
        next_header: IpNumber(58),
        hop_limit: ip.hop_limit,
        source: ip.src,
        destination: ip.dst,
    };
    let mut out = h.to_bytes().to_vec();
    out.extend_from_slice(&msg);
    ethernet(l2, 0x86dd, &out)
}

/// The outer headers of a VXLAN packet (RFC 7348) over IPv4.
#[derive(Debug, Clone, Copy)]
pub struct Vxlan {
    pub l2: L2,
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    pub vni: u32,
    /// The outer IPv4 identification and DF bit.
    pub ident: u16,
    pub df: bool,
    /// The outer UDP checksum: computed, or 0 ("none", as RFC 7348 allows over IPv4).
    pub udp_checksum: bool,
}

impl Vxlan {
    /// Wraps `inner` (an Ethernet frame) in Ethernet/IPv4/UDP/VXLAN with the I flag set.
    pub fn wrap(&self, inner: &[u8]) -> Vec<u8> {
        let mut vx = vec![0x08, 0, 0, 0];
        vx.extend_from_slice(&(self.vni << 8).to_be_bytes());
        vx.extend_from_slice(inner);
        let udp_len = 8 + vx.len();
        let ip = ipv4_header(
            V4 {
                src: self.src,
                dst: self.dst,
                ttl: 64,
                ident: self.ident,
                df: self.df,
            },
            17,
            udp_len,
        );
        let udp = if self.udp_checksum {
            UdpHeader::with_ipv4_checksum(self.sport, self.dport, &ip, &vx).expect("udp")
        } else {
            UdpHeader {
                source_port: self.sport,
                destination_port: self.dport,
                length: u16::try_from(udp_len).expect("fits"),
                checksum: 0,
            }
        };
        let mut out = ip.to_bytes().to_vec();
        out.extend_from_slice(&udp.to_bytes());
        out.extend_from_slice(&vx);
        ethernet(self.l2, 0x0800, &out)
    }
}

/// An IPv4 address as the 16-byte IPv4-mapped form kxdp's keys and flow hash use.
pub fn mapped(ip: [u8; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[10] = 0xff;
    out[11] = 0xff;
    out[12..].copy_from_slice(&ip);
    out
}
