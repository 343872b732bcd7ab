//! What the generators send: [`PacketSpec`] (size, protocol, addresses, flows) and the
//! bytes of each flow's frame. Pure: both generators build their frames here, the kernel
//! one only the header template (its XDP program patches the source and checksums).

use std::net::Ipv4Addr;

use datapath::wire::checksum;

use super::{PktgenError, UnknownName};

/// Smallest frame, Ethernet header included, no FCS (what the device is handed).
pub const MIN_FRAME: u16 = 64;
/// Largest frame: a 1500-byte IP MTU plus the Ethernet header.
pub const MAX_FRAME: u16 = 1514;

const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const L4_OFF: usize = ETH_LEN + IPV4_LEN;
const TCP_LEN: usize = 20;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// The transport protocol of the generated packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// UDP, IPv4 length up to the end of the frame, checksum 0 ("none", legal over IPv4).
    Udp,
    /// A TCP SYN without payload (IPv4 length 40); the rest of the frame is Ethernet
    /// padding.
    TcpSyn,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Udp => IPPROTO_UDP,
            Protocol::TcpSyn => IPPROTO_TCP,
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        match s {
            "udp" => Ok(Protocol::Udp),
            "tcp-syn" | "syn" | "tcp" => Ok(Protocol::TcpSyn),
            _ => Err(UnknownName::new("protocol", s, "udp, tcp-syn")),
        }
    }
}

/// One flow: where its packets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowSource {
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// The packets to generate. Flow `f` (`0..flows`, round robin) comes from source port
/// `src_port + f % src_ports` of address `src_ip + f / src_ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketSpec {
    /// Frame length in bytes, Ethernet header included, no FCS: [`MIN_FRAME`]..=[`MAX_FRAME`].
    pub size: u16,
    pub protocol: Protocol,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    /// Number of distinct flows, >= 1.
    pub flows: u32,
    /// Source ports per source address; `None`: as many as fit above `src_port`, at most
    /// `flows` (so small flow counts vary the port only).
    pub src_ports: Option<u32>,
}

impl Default for PacketSpec {
    /// 64-byte UDP, one flow, locally administered MACs, 10.77.0.1:10000 -> 10.77.0.2:9.
    fn default() -> Self {
        PacketSpec {
            size: MIN_FRAME,
            protocol: Protocol::Udp,
            src_mac: [0x02, 0x6b, 0x78, 0x67, 0, 1],
            dst_mac: [0x02, 0x6b, 0x78, 0x67, 0, 2],
            src_ip: Ipv4Addr::new(10, 77, 0, 1),
            dst_ip: Ipv4Addr::new(10, 77, 0, 2),
            src_port: 10000,
            dst_port: 9,
            flows: 1,
            src_ports: None,
        }
    }
}

impl PacketSpec {
    /// Source ports per address in effect (see [`PacketSpec::src_ports`]).
    pub fn ports_per_ip(&self) -> u32 {
        self.src_ports
            .unwrap_or_else(|| self.flows.min(65536 - u32::from(self.src_port)))
    }

    /// Checks sizes and that every flow's address and port exist.
    pub fn validate(&self) -> Result<(), PktgenError> {
        let bad = |m: String| Err(PktgenError::Spec(m));
        if !(MIN_FRAME..=MAX_FRAME).contains(&self.size) {
            return bad(format!(
                "size {} outside {MIN_FRAME}..={MAX_FRAME} (bytes incl. Ethernet header)",
                self.size
            ));
        }
        if self.flows == 0 {
            return bad("flows must be at least 1".into());
        }
        let ports = self.ports_per_ip();
        if ports == 0 || u32::from(self.src_port) + ports > 65536 {
            return bad(format!(
                "{ports} source ports from {} run past 65535",
                self.src_port
            ));
        }
        let last_ip = u64::from(u32::from(self.src_ip)) + u64::from((self.flows - 1) / ports);
        if last_ip > u64::from(u32::MAX) {
            return bad(format!(
                "{} flows over {ports} ports per address run past 255.255.255.255",
                self.flows
            ));
        }
        Ok(())
    }

    /// Flow `f`'s source (f taken modulo `flows`).
    pub fn flow(&self, f: u64) -> FlowSource {
        let flows = u64::from(self.flows.max(1));
        let ports = u64::from(self.ports_per_ip().max(1));
        let f = f % flows;
        FlowSource {
            ip: Ipv4Addr::from(u32::from(self.src_ip).wrapping_add((f / ports) as u32)),
            port: self.src_port.wrapping_add((f % ports) as u16),
        }
    }

    /// Every flow's source, in flow order.
    pub fn all_flows(&self) -> impl Iterator<Item = FlowSource> + '_ {
        (0..u64::from(self.flows)).map(|f| self.flow(f))
    }

    /// The 64-byte header template: Ethernet, IPv4 and UDP/TCP for flow 0's destination,
    /// source address and port fields as for flow 0, checksums zero (the kernel generator
    /// writes them per packet).
    pub(crate) fn header_template(&self) -> [u8; MIN_FRAME as usize] {
        let mut h = [0u8; MIN_FRAME as usize];
        h[0..6].copy_from_slice(&self.dst_mac);
        h[6..12].copy_from_slice(&self.src_mac);
        h[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip_len = match self.protocol {
            Protocol::Udp => self.size - ETH_LEN as u16,
            Protocol::TcpSyn => (IPV4_LEN + TCP_LEN) as u16,
        };
        let ip = &mut h[ETH_LEN..L4_OFF];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
        ip[8] = 64;
        ip[9] = self.protocol.number();
        ip[12..16].copy_from_slice(&self.src_ip.octets());
        ip[16..20].copy_from_slice(&self.dst_ip.octets());
        let l4 = &mut h[L4_OFF..];
        l4[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        l4[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        match self.protocol {
            Protocol::Udp => {
                let udp_len = ip_len - IPV4_LEN as u16;
                l4[4..6].copy_from_slice(&udp_len.to_be_bytes());
            }
            Protocol::TcpSyn => {
                l4[4..8].copy_from_slice(&1u32.to_be_bytes()); // sequence number
                l4[12] = 5 << 4; // data offset: 5 words
                l4[13] = 0x02; // SYN
                l4[14..16].copy_from_slice(&64240u16.to_be_bytes()); // window
            }
        }
        h
    }

    /// A whole frame of flow 0 (`size` bytes; payload 0x5a), checksums right.
    pub fn frame(&self) -> Vec<u8> {
        let mut f = vec![0x5a; usize::from(self.size)];
        f[..MIN_FRAME as usize].copy_from_slice(&self.header_template());
        if self.protocol == Protocol::TcpSyn {
            // Padding after the TCP header, as a NIC would pad a short frame.
            f[L4_OFF + TCP_LEN..].fill(0);
        }
        set_flow(&mut f, self.protocol, self.flow(0));
        f
    }
}

/// Rewrites `frame` (one of [`PacketSpec::frame`]'s) to come from `src`, checksums
/// included. For the AF_XDP generator, per packet (public for the candidate generators
/// the pktgen tests measure).
pub fn set_flow(frame: &mut [u8], protocol: Protocol, src: FlowSource) {
    if frame.len() < L4_OFF + TCP_LEN {
        return;
    }
    frame[ETH_LEN + 12..ETH_LEN + 16].copy_from_slice(&src.ip.octets());
    frame[L4_OFF..L4_OFF + 2].copy_from_slice(&src.port.to_be_bytes());
    frame[ETH_LEN + 10..ETH_LEN + 12].fill(0);
    let ip_sum = checksum::data(&frame[ETH_LEN..L4_OFF]);
    frame[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&(!ip_sum).to_be_bytes());
    if protocol == Protocol::TcpSyn {
        let tcp = L4_OFF..L4_OFF + TCP_LEN;
        frame[L4_OFF + 16..L4_OFF + 18].fill(0);
        let mut dst = [0u8; 4];
        dst.copy_from_slice(&frame[ETH_LEN + 16..ETH_LEN + 20]);
        let sum = checksum::combine(&[
            checksum::pseudo_header_v4(src.ip.octets(), dst, IPPROTO_TCP, TCP_LEN as u32),
            checksum::data(&frame[tcp]),
        ]);
        frame[L4_OFF + 16..L4_OFF + 18].copy_from_slice(&(!sum).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_vary_port_first_then_address() {
        let spec = PacketSpec {
            flows: 6,
            src_ports: Some(4),
            ..PacketSpec::default()
        };
        let got: Vec<_> = spec
            .all_flows()
            .map(|f| (f.ip.octets()[3], f.port))
            .collect();
        assert_eq!(
            got,
            [
                (1, 10000),
                (1, 10001),
                (1, 10002),
                (1, 10003),
                (2, 10000),
                (2, 10001)
            ]
        );
        assert_eq!(spec.flow(6), spec.flow(0));
        let auto = PacketSpec {
            flows: 100_000,
            src_port: 60000,
            ..PacketSpec::default()
        };
        assert_eq!(auto.ports_per_ip(), 5536);
        assert!(auto.validate().is_ok());
    }

    #[test]
    fn bad_specs_are_refused() {
        for spec in [
            PacketSpec {
                size: 63,
                ..PacketSpec::default()
            },
            PacketSpec {
                size: 1515,
                ..PacketSpec::default()
            },
            PacketSpec {
                flows: 0,
                ..PacketSpec::default()
            },
            PacketSpec {
                src_port: 65535,
                src_ports: Some(2),
                ..PacketSpec::default()
            },
            PacketSpec {
                src_ip: Ipv4Addr::new(255, 255, 255, 255),
                flows: 2,
                src_ports: Some(1),
                ..PacketSpec::default()
            },
        ] {
            assert!(spec.validate().is_err(), "{spec:?}");
        }
    }

    fn verifies(bytes: &[u8]) -> bool {
        checksum::data(bytes) == 0xffff
    }

    #[test]
    fn frames_have_the_size_and_valid_checksums() {
        for protocol in [Protocol::Udp, Protocol::TcpSyn] {
            for size in [64u16, 512, 1514] {
                let spec = PacketSpec {
                    size,
                    protocol,
                    flows: 300,
                    ..PacketSpec::default()
                };
                let mut f = spec.frame();
                assert_eq!(f.len(), usize::from(size));
                let src = spec.flow(299);
                set_flow(&mut f, protocol, src);
                assert!(verifies(&f[ETH_LEN..L4_OFF]), "IPv4 header checksum");
                let ip_len = usize::from(u16::from_be_bytes([f[16], f[17]]));
                assert_eq!(f[L4_OFF..L4_OFF + 2], src.port.to_be_bytes());
                assert_eq!(f[26..30], src.ip.octets());
                match protocol {
                    Protocol::Udp => {
                        assert_eq!(ip_len, usize::from(size) - ETH_LEN);
                        assert_eq!(f[L4_OFF + 6..L4_OFF + 8], [0, 0], "no UDP checksum");
                    }
                    Protocol::TcpSyn => {
                        assert_eq!(ip_len, 40);
                        assert_eq!(f[L4_OFF + 13], 0x02, "SYN");
                        let pseudo = checksum::pseudo_header_v4(
                            src.ip.octets(),
                            spec.dst_ip.octets(),
                            IPPROTO_TCP,
                            20,
                        );
                        let sum =
                            checksum::combine(&[pseudo, checksum::data(&f[L4_OFF..L4_OFF + 20])]);
                        assert_eq!(sum, 0xffff, "TCP checksum");
                    }
                }
            }
        }
    }
}
