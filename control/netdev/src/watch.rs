//! Change notifications: a socket subscribed to rtnetlink multicast groups, so the agent
//! learns of a changed route, neighbour or link when it happens instead of asking the
//! kernel over and over.

use std::time::Duration;

use ipnet::IpNet;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::Socket;

use crate::error::{NetdevError, Result};
use crate::neigh::Neighbour;
use crate::socket::open_socket;

/// What to be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// RTNLGRP_LINK: links added, changed (address, MTU, flags) or removed.
    Link,
    /// RTNLGRP_NEIGH: neighbour entries added, changed (MAC, state) or removed.
    Neighbour,
    /// RTNLGRP_IPV4_ROUTE: IPv4 routes added or removed.
    Ipv4Route,
}

impl Group {
    fn number(self) -> u32 {
        match self {
            Group::Link => libc::RTNLGRP_LINK,
            Group::Neighbour => libc::RTNLGRP_NEIGH,
            Group::Ipv4Route => libc::RTNLGRP_IPV4_ROUTE,
        }
    }
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Link `index` was added or changed (`removed`: deleted).
    Link { index: u32, removed: bool },
    /// A route was added or removed: next hops may have moved. `dst` is its destination
    /// prefix and `oif` its output link (None for a multipath route, or when the kernel
    /// did not say).
    Route {
        dst: Option<IpNet>,
        oif: Option<u32>,
    },
    /// A neighbour entry as it is now (`removed`: deleted; the entry as it was).
    Neighbour { entry: Neighbour, removed: bool },
    /// The kernel dropped notifications (our receive queue overflowed) or sent one that
    /// does not parse: anything may have changed, so re-read what matters.
    Lost,
}

/// Room for notification bursts (a link going down takes its routes and neighbours with
/// it) before the kernel has to drop some.
const RECV_QUEUE: usize = 1 << 20;
const RECV_BUFFER: usize = 64 * 1024;

/// A subscription, in the network namespace of the thread that opened it.
#[derive(Debug)]
pub struct Watch {
    socket: Socket,
    buf: Vec<u8>,
}

impl Watch {
    pub fn open(groups: &[Group]) -> Result<Watch> {
        let socket = open_socket(0)?;
        let sock = |step: &'static str| move |source| NetdevError::Socket { step, source };
        for group in groups {
            socket
                .add_membership(group.number())
                .map_err(sock("joining a multicast group"))?;
        }
        // Best effort: the default queue is smaller; Lost covers what still overflows.
        let _ = socket.set_rx_buf_sz(RECV_QUEUE);
        Ok(Watch {
            socket,
            buf: Vec::with_capacity(RECV_BUFFER),
        })
    }

    /// Waits at most `timeout` (`None`: for ever) in [`Watch::changes`].
    pub fn set_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        crate::socket::set_recv_timeout(
            std::os::fd::AsRawFd::as_raw_fd(&self.socket),
            timeout.unwrap_or(Duration::ZERO),
        )
    }

    /// The changes of the next notification datagram; empty when the timeout passed first.
    pub fn changes(&mut self) -> Result<Vec<Change>> {
        self.buf.clear();
        let n = match self.socket.recv(&mut self.buf, libc::MSG_TRUNC) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(vec![Change::Lost]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                return Ok(Vec::new());
            }
            Err(source) => {
                return Err(NetdevError::Socket {
                    step: "receive",
                    source,
                });
            }
        };
        if n > RECV_BUFFER {
            return Ok(vec![Change::Lost]);
        }
        Ok(parse(&self.buf[..n]))
    }
}

/// Whether a neighbour notification says the entry is gone.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Current,
    Removed,
}

/// The changes in one datagram of notifications.
fn parse(mut rest: &[u8]) -> Vec<Change> {
    let mut changes = Vec::new();
    while !rest.is_empty() {
        let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest) else {
            changes.push(Change::Lost);
            break;
        };
        let len = (msg.header.length as usize + 3) & !3;
        if len == 0 {
            break;
        }
        rest = rest.get(len..).unwrap_or_default();
        let NetlinkPayload::InnerMessage(inner) = msg.payload else {
            continue;
        };
        let inner_kind = match &inner {
            RouteNetlinkMessage::DelNeighbour(_) => Kind::Removed,
            _ => Kind::Current,
        };
        let change = match inner {
            RouteNetlinkMessage::NewLink(m) => Change::Link {
                index: m.header.index,
                removed: false,
            },
            RouteNetlinkMessage::DelLink(m) => Change::Link {
                index: m.header.index,
                removed: true,
            },
            RouteNetlinkMessage::NewRoute(m) | RouteNetlinkMessage::DelRoute(m) => {
                let (dst, oif) = crate::route::destination_and_oif(&m);
                Change::Route { dst, oif }
            }
            RouteNetlinkMessage::NewNeighbour(m) | RouteNetlinkMessage::DelNeighbour(m) => {
                let removed = matches!(inner_kind, Kind::Removed);
                match Neighbour::from_message(&m) {
                    Some(entry) => Change::Neighbour { entry, removed },
                    // Bridge FDB and proxy entries: not about a next hop.
                    None => continue,
                }
            }
            _ => continue,
        };
        changes.push(change);
    }
    changes
}
