//! Addresses as the tables hold them: 16-byte IP keys (IPv4 mapped), CIDRs, MACs.
//!
//! Keys are 16 bytes so IPv4 and IPv6 share one code path (dual stack is designed in,
//! not bolted on).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP address as a fixed 16-byte key; IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct IpKey(pub [u8; 16]);

impl IpKey {
    pub const fn v4(octets: [u8; 4]) -> IpKey {
        let [a, b, c, d] = octets;
        IpKey([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d])
    }

    pub const fn v6(octets: [u8; 16]) -> IpKey {
        IpKey(octets)
    }

    pub fn is_v4(&self) -> bool {
        self.0[..10] == [0; 10] && self.0[10] == 0xff && self.0[11] == 0xff
    }

    /// The IPv4 octets, when this is an IPv4-mapped key.
    pub fn as_v4(&self) -> Option<[u8; 4]> {
        self.is_v4()
            .then(|| [self.0[12], self.0[13], self.0[14], self.0[15]])
    }

    pub fn to_ip(self) -> IpAddr {
        match self.as_v4() {
            Some(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
            None => IpAddr::V6(Ipv6Addr::from(self.0)),
        }
    }
}

impl From<IpAddr> for IpKey {
    fn from(ip: IpAddr) -> IpKey {
        match ip {
            IpAddr::V4(v4) => IpKey::v4(v4.octets()),
            IpAddr::V6(v6) => IpKey::v6(v6.octets()),
        }
    }
}

impl From<Ipv4Addr> for IpKey {
    fn from(ip: Ipv4Addr) -> IpKey {
        IpKey::v4(ip.octets())
    }
}

impl fmt::Debug for IpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_ip())
    }
}

impl fmt::Display for IpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_ip())
    }
}

/// A prefix over the 16-byte key space. An IPv4 /24 is stored as a /120 over the mapped form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    /// The network address, host bits cleared.
    pub addr: IpKey,
    /// Prefix length over the 128-bit key (IPv4 prefixes are offset by 96).
    pub key_len: u8,
}

impl Cidr {
    /// Builds a CIDR from an address and its family-native prefix length; host bits are cleared.
    /// Returns `None` for a prefix longer than the family allows.
    pub fn new(ip: IpAddr, prefix: u8) -> Option<Cidr> {
        let (addr, key_len) = match ip {
            IpAddr::V4(v4) if prefix <= 32 => (IpKey::from(v4), prefix + 96),
            IpAddr::V6(v6) if prefix <= 128 => (IpKey::v6(v6.octets()), prefix),
            _ => return None,
        };
        Some(Cidr {
            addr: mask(addr, key_len),
            key_len,
        })
    }

    /// The family-native prefix length (24 for an IPv4 /24).
    pub fn prefix_len(&self) -> u8 {
        if self.addr.is_v4() && self.key_len >= 96 {
            self.key_len - 96
        } else {
            self.key_len
        }
    }

    pub fn contains(&self, ip: IpKey) -> bool {
        mask(ip, self.key_len) == self.addr
    }

    /// The first host address (network + 1): the pod gateway of a PodCIDR.
    pub fn first_host(&self) -> IpKey {
        let mut out = self.addr;
        for byte in out.0.iter_mut().rev() {
            let (v, carry) = byte.overflowing_add(1);
            *byte = v;
            if !carry {
                break;
            }
        }
        out
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len())
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::str::FromStr for Cidr {
    type Err = CidrParseError;

    fn from_str(s: &str) -> Result<Cidr, CidrParseError> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| CidrParseError::NoPrefix(s.to_string()))?;
        let ip: IpAddr = ip.parse().map_err(|source| CidrParseError::Address {
            text: s.to_string(),
            source,
        })?;
        let len: u8 = len.parse().map_err(|source| CidrParseError::Prefix {
            text: s.to_string(),
            source,
        })?;
        Cidr::new(ip, len).ok_or_else(|| CidrParseError::PrefixTooLong(s.to_string()))
    }
}

/// Why text is not a [`Cidr`]. The message quotes the text. (Display and Error by hand:
/// this crate keeps its dependencies to what the per-packet code needs.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CidrParseError {
    NoPrefix(String),
    Address {
        text: String,
        source: std::net::AddrParseError,
    },
    Prefix {
        text: String,
        source: std::num::ParseIntError,
    },
    PrefixTooLong(String),
}

impl fmt::Display for CidrParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CidrParseError::NoPrefix(text) => {
                write!(f, "{text:?} is not a CIDR (want address/prefix)")
            }
            CidrParseError::Address { text, source } => write!(f, "{text:?}: {source}"),
            CidrParseError::Prefix { text, source } => write!(f, "{text:?}: prefix: {source}"),
            CidrParseError::PrefixTooLong(text) => write!(f, "{text:?}: prefix too long"),
        }
    }
}

impl std::error::Error for CidrParseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CidrParseError::Address { source, .. } => Some(source),
            CidrParseError::Prefix { source, .. } => Some(source),
            CidrParseError::NoPrefix(_) | CidrParseError::PrefixTooLong(_) => None,
        }
    }
}

fn mask(ip: IpKey, key_len: u8) -> IpKey {
    let mut out = ip;
    for (i, byte) in out.0.iter_mut().enumerate() {
        let bits_before = (i * 8) as u32;
        let keep = (key_len as u32).saturating_sub(bits_before).min(8);
        *byte &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
    }
    out
}

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The MAC kxdp gives an IPv4 pod or gateway: `0a:58:<IPv4 bytes>` (locally administered,
    /// unicast), so L2 never needs learning.
    pub const fn for_ipv4(ip: [u8; 4]) -> MacAddr {
        MacAddr([0x0a, 0x58, ip[0], ip[1], ip[2], ip[3]])
    }

    /// The kxdp MAC for any address: IPv4 as [`MacAddr::for_ipv4`], IPv6 from its last four bytes.
    pub fn for_ip(ip: IpKey) -> MacAddr {
        let b = ip.0;
        MacAddr::for_ipv4([b[12], b[13], b[14], b[15]])
    }

    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::str::FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<MacAddr, MacParseError> {
        let bad = || MacParseError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in out.iter_mut() {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

/// The text (quoted in the message) is not six hex byte pairs separated by `:` or `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacParseError(pub String);

impl fmt::Display for MacParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a MAC address", self.0)
    }
}

impl std::error::Error for MacParseError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains_and_first_host() {
        let c: Cidr = "10.244.1.0/24".parse().unwrap();
        assert!(c.contains(IpKey::v4([10, 244, 1, 77])));
        assert!(!c.contains(IpKey::v4([10, 244, 2, 1])));
        assert_eq!(c.first_host(), IpKey::v4([10, 244, 1, 1]));
        assert_eq!(c.prefix_len(), 24);
        assert_eq!(c.to_string(), "10.244.1.0/24");
        let host_bits: Cidr = "10.244.1.9/24".parse().unwrap();
        assert_eq!(host_bits, c);
    }

    #[test]
    fn v4_and_v6_keys_never_collide() {
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(!v6.contains(IpKey::v4([253, 0, 0, 1])));
        let all_v4: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all_v4.contains(IpKey::v4([1, 2, 3, 4])));
        assert!(!all_v4.contains(IpKey::v6([0xfd; 16])));
    }

    #[test]
    fn pod_mac_follows_ipv4() {
        assert_eq!(
            MacAddr::for_ipv4([10, 244, 1, 5]).to_string(),
            "0a:58:0a:f4:01:05"
        );
        assert_eq!(
            "0a:58:0a:f4:01:05".parse::<MacAddr>().unwrap(),
            MacAddr::for_ipv4([10, 244, 1, 5])
        );
        assert!("0a:58:0a:f4:01".parse::<MacAddr>().is_err());
    }
}
