//! What kxdp changes in the kernel's network stack, for kxdp-cni and the agent alike:
//! links (veth pairs), addresses, routes, neighbour entries, entering a network
//! namespace, tx checksum offload and sysctls; and, for the agent, change notifications.
//! Nothing here runs a program (`ip`, `ethtool`, `nsenter`): kxdp-cni needs nothing from
//! the host but its IPAM plugin, and works as a static binary.
//!
//! # Why rust-netlink's packet crates with their blocking socket
//!
//! rtnetlink messages come from `netlink-packet-route` (with `netlink-packet-core`) and go
//! over `netlink-sys`'s plain blocking [`netlink_sys::Socket`], driven by the small
//! request/ACK/dump loop in [`socket`]. Of the choices:
//! - `rtnetlink` (the same family's high-level API) is async and needs tokio: too much for
//!   kxdp-cni, a short-lived synchronous process that must stay small, and nothing the
//!   agent's control thread (synchronous too) wants either.
//! - `neli` is complete but brings derive-builder and proc-macro machinery of its own;
//!   rust-netlink's packet types are the ones most Rust netlink users (and the kernel
//!   attribute coverage: veth peers, NTF_EXT_MANAGED, extended ACKs) rely on.
//! - The packet crates need only bitflags, zerocopy and log; `netlink-sys` without
//!   features only bytes and libc. The change notifications the agent needs are the same
//!   socket bound to multicast groups ([`watch`]).
//!
//! Namespaces: a [`Netlink`] socket belongs to the namespace it was opened in, so acting
//! in a pod's namespace is opening one there ([`Netlink::open_in`], setns(2) on a
//! short-lived thread, [`netns`]) and using it from anywhere.

pub mod addr;
pub mod error;
pub mod ethtool;
pub mod link;
pub mod mac;
pub mod neigh;
pub mod netns;
pub mod route;
pub mod socket;
pub mod sysctl;
pub mod watch;
pub mod xdp;

pub use addr::Address;
pub use error::{NetdevError, Result};
pub use link::{Link, VethEnd};
pub use mac::{Mac, MacParseError};
pub use neigh::Neighbour;
pub use route::{NextHop, Route, RouteSpec};
pub use socket::Netlink;
pub use watch::{Change, Group, Watch};
pub use xdp::{XdpMode, XdpProgram};
