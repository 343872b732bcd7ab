//! Ethernet addresses as the kernel stores them and as people write them.

use std::fmt;
use std::str::FromStr;

/// A MAC address, written `0a:58:0a:f4:01:02`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// From an attribute's bytes; `None` unless there are exactly six (a link without an
    /// Ethernet address, such as lo's tunnels, has none or another length).
    pub fn from_slice(bytes: &[u8]) -> Option<Mac> {
        <[u8; 6]>::try_from(bytes).ok().map(Mac)
    }

    /// `0a:58:<IPv4 bytes>`: the locally administered MAC kxdp derives from an address
    /// (pods and gateways alike), so nobody ever has to learn one.
    pub fn for_ipv4(ip: std::net::Ipv4Addr) -> Mac {
        let [a, b, c, d] = ip.octets();
        Mac([0x0a, 0x58, a, b, c, d])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address (six hex bytes separated by ':')")]
pub struct MacParseError(pub String);

impl FromStr for Mac {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Mac, MacParseError> {
        let bad = || MacParseError(s.to_string());
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut mac {
            let part = parts.next().ok_or_else(bad)?;
            if part.is_empty() || part.len() > 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(mac))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        let mac: Mac = "0a:58:0A:f4:01:02".parse().unwrap();
        assert_eq!(mac, Mac([0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x02]));
        assert_eq!(mac.to_string(), "0a:58:0a:f4:01:02");
        for bad in [
            "",
            "0a:58:0a:f4:01",
            "0a:58:0a:f4:01:02:03",
            "0a:58:0a:f4:01:zz",
            "0a::0a:f4:01:02",
            "100:58:0a:f4:01:02",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }

    #[test]
    fn derived_from_ipv4() {
        let ip = std::net::Ipv4Addr::new(10, 244, 1, 5);
        assert_eq!(Mac::for_ipv4(ip).to_string(), "0a:58:0a:f4:01:05");
        assert_eq!(Mac::from_slice(&[1, 2, 3]), None);
    }
}
