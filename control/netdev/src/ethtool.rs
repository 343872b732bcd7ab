//! Transmit checksum offload and channel counts, through the ethtool ioctl (SIOCETHTOOL)
//! rather than the `ethtool` binary.
//!
//! The kernel leaves the L4 checksums of what it sends over a veth partial
//! (CHECKSUM_PARTIAL: only the pseudo-header sum); the datapath receives those frames as
//! raw bytes and must be handed whole checksums (ARCHITECTURE.md §5), so kxdp turns tx
//! checksumming off on the veths it creates. ETHTOOL_STXCSUM/GTXCSUM switch and read the
//! same feature set (NETIF_F_CSUM_MASK) that `ethtool -K dev tx off` and the
//! `tx-checksumming` line of `ethtool -k` do.
//!
//! Channels: the datapath opens one AF_XDP socket per rx queue of the uplink, so it needs
//! the queues the device has now (`ethtool -l`), not the ones it was allocated with (the
//! link's IFLA_NUM_RX_QUEUES, which is the ceiling a NIC driver reserves at probe time).
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

/// `ETHTOOL_GCHANNELS` / `ETHTOOL_SCHANNELS`.
const ETHTOOL_GCHANNELS: u32 = 0x3c;
const ETHTOOL_SCHANNELS: u32 = 0x3d;

/// `struct ethtool_channels`: maximum and current count of each channel kind.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Channels {
    cmd: u32,
    pub max_rx: u32,
    pub max_tx: u32,
    pub max_other: u32,
    pub max_combined: u32,
    pub rx: u32,
    pub tx: u32,
    pub other: u32,
    pub combined: u32,
}

impl Channels {
    /// Rx queues in use: a combined channel is one rx and one tx queue.
    pub fn rx_queues(&self) -> u32 {
        self.rx + self.combined
    }
}

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

    /// `dev`'s channel counts (`ethtool -l`). Devices whose driver does not report channels
    /// (EOPNOTSUPP) have one fixed set of queues: see [`Netlink::rx_queues`].
    pub fn channels(&self, dev: &str) -> Result<Channels> {
        let mut channels = Channels {
            cmd: ETHTOOL_GCHANNELS,
            ..Channels::default()
        };
        self.ethtool(dev, &mut channels, "GCHANNELS")?;
        Ok(channels)
    }

    /// Sets `dev`'s rx and tx channel counts (`ethtool -L dev rx N tx N`; the combined and
    /// other counts stay as they are).
    pub fn set_rx_tx_channels(&self, dev: &str, rx: u32, tx: u32) -> Result<()> {
        let mut channels = self.channels(dev)?;
        channels.cmd = ETHTOOL_SCHANNELS;
        channels.rx = rx;
        channels.tx = tx;
        self.ethtool(dev, &mut channels, "SCHANNELS")
    }

    /// The rx queues `dev` has now: its rx and combined channels, or (for a device without
    /// channel counts: lo, most virtual devices) the link's rx queue count.
    pub fn rx_queues(&self, dev: &str) -> Result<u32> {
        match self.channels(dev) {
            Ok(c) if c.rx_queues() > 0 => Ok(c.rx_queues()),
            Ok(_) => self.link_rx_queues(dev),
            Err(NetdevError::Ethtool { source, .. })
                if source.raw_os_error() == Some(libc::EOPNOTSUPP) =>
            {
                self.link_rx_queues(dev)
            }
            Err(e) => Err(e),
        }
    }

    fn link_rx_queues(&self, dev: &str) -> Result<u32> {
        match self.link(dev)? {
            Some(link) => Ok(link.rx_queues.max(1)),
            None => Err(NetdevError::NoSuchInterface(dev.to_string())),
        }
    }

    fn ethtool_value(&self, dev: &str, cmd: u32, data: u32, what: &'static str) -> Result<u32> {
        let mut value = EthtoolValue { cmd, data };
        self.ethtool(dev, &mut value, what)?;
        Ok(value.data)
    }

    /// SIOCETHTOOL with `request` (a `#[repr(C)]` ethtool struct whose first field is the
    /// command) on `dev`.
    fn ethtool<T>(&self, dev: &str, request: &mut T, what: &'static str) -> Result<()> {
        let name = valid_name(dev)?;
        // SAFETY: ifreq is plain old data; all zeroes is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        // valid_name keeps the name under IFNAMSIZ with room for the NUL the zeroes give.
        for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as c_char;
        }
        ifr.ifr_ifru.ifru_data = (request as *mut T).cast();
        // SAFETY: `ifr` names a device and points at `request`, both alive for the call; the
        // kernel reads and writes only the struct its command names through the pointer,
        // which is `T` (the callers pair each command with its struct).
        let rc = unsafe { libc::ioctl(self.fd(), libc::SIOCETHTOOL, &mut ifr) };
        let error = std::io::Error::last_os_error();
        if rc == 0 {
            Ok(())
        } else if error.raw_os_error() == Some(libc::ENODEV) {
            Err(NetdevError::NoSuchInterface(dev.to_string()))
        } else {
            Err(NetdevError::Ethtool {
                request: what,
                dev: dev.to_string(),
                source: error,
            })
        }
    }
}
