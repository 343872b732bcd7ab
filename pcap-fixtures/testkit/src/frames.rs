//! Test frames: Ethernet + IPv4 around a TCP segment, a UDP datagram, an SCTP INIT or a
//! VXLAN-encapsulated inner frame, built with etherparse (not with the datapath's own
//! writers, which the frames are there to test).
//!
//! A test describes the headers once ([`Headers`]) and asks for the packet it needs:
//!
//! ```
//! use testkit::frames::{Headers, Proto};
//! let h = Headers::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], [10, 0, 0, 1], [10, 0, 0, 2]);
//! let syn = h.first(Proto::Tcp, 40_000, 80);
//! let dns = h.udp(40_000, 53, b"query");
//! assert_eq!(syn.len(), 14 + 20 + 20);
//! assert_eq!(dns.len(), 14 + 20 + 8 + 5);
//! ```

use std::net::Ipv4Addr;

use etherparse::{IpHeaders, IpNumber, PacketBuilder, PacketBuilderStep};

/// The transport protocols the tests send (and Kubernetes names in a Service or a
/// NetworkPolicy port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    /// As Kubernetes spells it (`TCP`).
    pub fn k8s(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
        }
    }

    /// In lower case (`tcp`), as tools and file names spell it.
    pub fn lower(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// The receive window of every test TCP segment (what Linux offers on a fresh connection).
pub const TCP_WINDOW: u16 = 64_240;

/// The sequence number of the SYN [`Headers::first`] sends; a reply acknowledges it + 1.
pub const FIRST_SEQ: u32 = 0x1000_0000;

/// The payload of the UDP datagram [`Headers::first`] sends.
pub const FIRST_UDP_PAYLOAD: &[u8] = b"probe";

/// A TCP segment's numbers and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcp {
    pub seq: u32,
    /// Set: the ACK flag with this acknowledgment number.
    pub ack: Option<u32>,
    pub syn: bool,
}

impl Tcp {
    /// A SYN opening a connection at `seq`.
    pub const fn syn(seq: u32) -> Tcp {
        Tcp {
            seq,
            ack: None,
            syn: true,
        }
    }

    /// The answer to a SYN: a SYN at `seq` acknowledging `ack`.
    pub const fn syn_ack(seq: u32, ack: u32) -> Tcp {
        Tcp {
            seq,
            ack: Some(ack),
            syn: true,
        }
    }

    /// A plain ACK (what completes a handshake, or carries data).
    pub const fn ack(seq: u32, ack: u32) -> Tcp {
        Tcp {
            seq,
            ack: Some(ack),
            syn: false,
        }
    }
}

/// The Ethernet and IPv4 headers of a frame: addresses both ways, and the TTL (64, as
/// Linux sends, unless [`Headers::ttl`] says otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub ttl: u8,
}

impl Headers {
    /// `src` and `dst` as octets or as `Ipv4Addr`.
    pub fn new(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src: impl Into<Ipv4Addr>,
        dst: impl Into<Ipv4Addr>,
    ) -> Headers {
        Headers {
            src_mac,
            dst_mac,
            src: src.into().octets(),
            dst: dst.into().octets(),
            ttl: 64,
        }
    }

    pub fn ttl(self, ttl: u8) -> Headers {
        Headers { ttl, ..self }
    }

    fn builder(&self) -> PacketBuilderStep<IpHeaders> {
        PacketBuilder::ethernet2(self.src_mac, self.dst_mac).ipv4(self.src, self.dst, self.ttl)
    }

    /// What opens a connection of `proto`: a TCP SYN at [`FIRST_SEQ`], a UDP datagram
    /// holding [`FIRST_UDP_PAYLOAD`], an SCTP INIT.
    pub fn first(&self, proto: Proto, sport: u16, dport: u16) -> Vec<u8> {
        match proto {
            Proto::Tcp => self.tcp_syn(sport, dport, FIRST_SEQ),
            Proto::Udp => self.udp(sport, dport, FIRST_UDP_PAYLOAD),
            Proto::Sctp => self.sctp_init(sport, dport),
        }
    }

    /// A TCP SYN at `seq`, without payload.
    pub fn tcp_syn(&self, sport: u16, dport: u16, seq: u32) -> Vec<u8> {
        self.tcp(sport, dport, Tcp::syn(seq), &[])
    }

    /// A TCP segment (window [`TCP_WINDOW`]).
    pub fn tcp(&self, sport: u16, dport: u16, segment: Tcp, payload: &[u8]) -> Vec<u8> {
        let mut tcp = self.builder().tcp(sport, dport, segment.seq, TCP_WINDOW);
        if segment.syn {
            tcp = tcp.syn();
        }
        if let Some(ack) = segment.ack {
            tcp = tcp.ack(ack);
        }
        let mut out = Vec::new();
        tcp.write(&mut out, payload).expect("a TCP frame builds");
        out
    }

    /// A UDP datagram.
    pub fn udp(&self, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.builder()
            .udp(sport, dport)
            .write(&mut out, payload)
            .expect("a UDP frame builds");
        out
    }

    /// An SCTP packet holding one INIT chunk ([`sctp_init`]).
    pub fn sctp_init(&self, sport: u16, dport: u16) -> Vec<u8> {
        let mut out = Vec::new();
        self.builder()
            .write(&mut out, IpNumber::SCTP, &sctp_init(sport, dport))
            .expect("an SCTP frame builds");
        out
    }

    /// `inner` encapsulated as a VXLAN peer sends it: in UDP from `sport` to `dport`, behind
    /// the 8-byte VXLAN header with `vni`.
    pub fn vxlan(&self, sport: u16, dport: u16, vni: u32, inner: &[u8]) -> Vec<u8> {
        // RFC 7348: flags (I set), 3 reserved bytes, the VNI in three bytes, 1 reserved byte.
        let vni = vni.to_be_bytes();
        let mut payload = vec![0x08, 0, 0, 0, vni[1], vni[2], vni[3], 0];
        payload.extend_from_slice(inner);
        self.udp(sport, dport, &payload)
    }
}

/// An SCTP packet holding one INIT chunk, with its CRC32c (from [`crate::oracle::crc32c`]).
pub fn sctp_init(sport: u16, dport: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(32);
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes()); // verification tag: 0 on INIT
    p.extend_from_slice(&0u32.to_be_bytes()); // checksum, filled below
    p.extend_from_slice(&[1, 0, 0, 20]); // INIT, flags, length
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes()); // initiate tag
    p.extend_from_slice(&65_535u32.to_be_bytes()); // a_rwnd
    p.extend_from_slice(&10u16.to_be_bytes()); // outbound streams
    p.extend_from_slice(&10u16.to_be_bytes()); // inbound streams
    p.extend_from_slice(&1u32.to_be_bytes()); // initial TSN
    let crc = crate::oracle::crc32c(&p);
    p[8..12].copy_from_slice(&crc.to_le_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    const H: Headers = Headers {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        src: [10, 0, 0, 1],
        dst: [10, 0, 0, 2],
        ttl: 64,
    };

    #[test]
    fn tcp_flags_and_numbers_are_what_was_asked() {
        let frame = H.tcp(1, 2, Tcp::syn_ack(7, 8), b"x");
        let p = SlicedPacket::from_ethernet(&frame).expect("parses");
        let Some(TransportSlice::Tcp(tcp)) = p.transport else {
            panic!("not TCP")
        };
        assert!(tcp.syn() && tcp.ack() && !tcp.fin() && !tcp.rst());
        assert_eq!((tcp.sequence_number(), tcp.acknowledgment_number()), (7, 8));
        assert_eq!(tcp.window_size(), TCP_WINDOW);
        assert_eq!(tcp.payload(), b"x");
    }

    #[test]
    fn ttl_and_sctp() {
        let frame = H.ttl(3).sctp_init(5, 6);
        let p = SlicedPacket::from_ethernet(&frame).expect("parses");
        let Some(NetSlice::Ipv4(ip)) = p.net else {
            panic!("not IPv4")
        };
        assert_eq!(ip.header().ttl(), 3);
        assert_eq!(ip.payload_ip_number(), IpNumber::SCTP);
        assert_eq!(ip.payload().payload, sctp_init(5, 6));
    }

    #[test]
    fn vxlan_header_carries_the_vni() {
        let inner = H.udp(1, 2, b"in");
        let frame = H.vxlan(3, 4789, 0x01_0203, &inner);
        let udp_payload = &frame[14 + 20 + 8..];
        assert_eq!(&udp_payload[..8], &[0x08, 0, 0, 0, 1, 2, 3, 0]);
        assert_eq!(&udp_payload[8..], inner.as_slice());
    }
}
