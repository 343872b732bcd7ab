//! XDP programs attached to links, as rtnetlink shows them (IFLA_XDP), and detaching one
//! that was attached through netlink. `kxdp cleanup` needs both: a program attached
//! through a BPF link goes away with the process that held the link, but one attached
//! the older way (IFLA_XDP_FD, what aya falls back to on kernels without XDP links)
//! stays on the interface after its loader died.

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached};

use crate::Netlink;
use crate::error::Result;

/// How an XDP program is attached to a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// Native (`xdpdrv`).
    Driver,
    /// Generic (`xdpgeneric`).
    Skb,
    /// Offloaded to the NIC (`xdpoffload`).
    Hardware,
    /// Several at once, or a mode this crate does not know.
    Other,
}

/// One link's attached XDP program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpProgram {
    pub ifindex: u32,
    pub ifname: String,
    /// The kernel's program id (`bpftool prog show id N`).
    pub prog_id: u32,
    pub mode: XdpMode,
}

fn xdp_of(m: &LinkMessage) -> Option<XdpProgram> {
    let mut name = String::new();
    let mut prog_id = None;
    let mut mode = None;
    for attr in &m.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = n.clone(),
            LinkAttribute::Xdp(xdp) => {
                for x in xdp {
                    match x {
                        LinkXdp::ProgId(id) if *id != 0 => prog_id = Some(*id),
                        LinkXdp::Attached(a) => {
                            mode = match a {
                                XdpAttached::None => None,
                                XdpAttached::Driver => Some(XdpMode::Driver),
                                XdpAttached::SocketBuffer => Some(XdpMode::Skb),
                                XdpAttached::Hardware => Some(XdpMode::Hardware),
                                _ => Some(XdpMode::Other),
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(XdpProgram {
        ifindex: m.header.index,
        ifname: name,
        prog_id: prog_id?,
        mode: mode?,
    })
}

/// XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE, XDP_FLAGS_HW_MODE (linux/if_link.h): a detach
/// names the mode the program is attached in.
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_FLAGS_HW_MODE: u32 = 1 << 3;

impl Netlink {
    /// Every link's attached XDP program (links without one are left out).
    pub fn xdp_programs(&self) -> Result<Vec<XdpProgram>> {
        let answers = self.dump(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            &|| "listing links' XDP programs".to_string(),
        )?;
        Ok(answers
            .iter()
            .filter_map(|a| match a {
                RouteNetlinkMessage::NewLink(m) => xdp_of(m),
                _ => None,
            })
            .collect())
    }

    /// Detaches the program attached in `mode` to link `ifindex` (IFLA_XDP_FD -1). The
    /// kernel refuses (EBUSY) a program held by a live BPF link: only its owner detaches it.
    pub fn detach_xdp(&self, ifindex: u32, mode: XdpMode) -> Result<()> {
        let flags = match mode {
            XdpMode::Driver => XDP_FLAGS_DRV_MODE,
            XdpMode::Skb => XDP_FLAGS_SKB_MODE,
            XdpMode::Hardware => XDP_FLAGS_HW_MODE,
            XdpMode::Other => 0,
        };
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        msg.attributes.push(LinkAttribute::Xdp(vec![
            LinkXdp::Fd(-1),
            LinkXdp::Flags(flags),
        ]));
        self.ack(RouteNetlinkMessage::SetLink(msg), 0, &|| {
            format!("detaching the XDP program of link #{ifindex}")
        })
    }
}
