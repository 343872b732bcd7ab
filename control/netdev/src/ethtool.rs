//! Transmit checksum offload, through the ethtool ioctl (SIOCETHTOOL) rather than the
//! `ethtool` binary.
//!
//! The kernel leaves the L4 checksums of what it sends over a veth partial
//! (CHECKSUM_PARTIAL: only the pseudo-header sum); the datapath receives those frames as
//! raw bytes and must be handed whole checksums (ARCHITECTURE.md §5), so kxdp turns tx
//! checksumming off on the veths it creates. ETHTOOL_STXCSUM/GTXCSUM switch and read the
//! same feature set (NETIF_F_CSUM_MASK) that `ethtool -K dev tx off` and the
//! `tx-checksumming` line of `ethtool -k` do.
//!
//! The ioctl goes to the [`Netlink`] socket's descriptor: the kernel serves SIOCETHTOOL on
//! any socket, in the socket's network namespace, so the namespace is the one the socket
//! was opened in.

use std::ffi::c_char;

use crate::Netlink;
use crate::error::{NetdevError, Result};
use crate::link::valid_name;

/// `ETHTOOL_GTXCSUM` / `ETHTOOL_STXCSUM` (linux/ethtool.h).
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

impl Netlink {
    /// Whether tx checksum offload is on for `dev`.
    pub fn tx_checksum(&self, dev: &str) -> Result<bool> {
        self.ethtool_value(dev, ETHTOOL_GTXCSUM, 0, "GTXCSUM")
            .map(|data| data != 0)
    }

    /// Turns tx checksum offload on or off for `dev`.
    pub fn set_tx_checksum(&self, dev: &str, on: bool) -> Result<()> {
        self.ethtool_value(dev, ETHTOOL_STXCSUM, u32::from(on), "STXCSUM")
            .map(drop)
    }

    fn ethtool_value(&self, dev: &str, cmd: u32, data: u32, what: &'static str) -> Result<u32> {
        let name = valid_name(dev)?;
        let mut value = EthtoolValue { cmd, data };
        // SAFETY: ifreq is plain old data; all zeroes is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        // valid_name keeps the name under IFNAMSIZ with room for the NUL the zeroes give.
        for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as c_char;
        }
        ifr.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
        // SAFETY: `ifr` names a device and points at `value`, both alive for the call; the
        // kernel reads and writes only `struct ethtool_value` through the pointer.
        let rc = unsafe { libc::ioctl(self.fd(), libc::SIOCETHTOOL, &mut ifr) };
        if rc == 0 {
            Ok(value.data)
        } else {
            Err(NetdevError::Ethtool {
                request: what,
                dev: dev.to_string(),
                source: std::io::Error::last_os_error(),
            })
        }
    }
}
