//! Keeps the XDP programs' classification maps in step with the published tables: which
//! uplink traffic is ours (VXLAN to our address and port, Service frontends reachable from
//! outside) and which pod traffic the kernel answers (the node's own addresses).
//!
//! Each publish computes the wanted sets and applies only the difference, so a generation
//! that changes one Service touches one map entry.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use aya::Ebpf;
use datapath::tables::{FrontendKind, Tables};
use xdp_redirect::{FrontendKey, VxlanCfg};

/// What the maps hold now.
#[derive(Debug, Default)]
pub struct KernelMaps {
    vxlan: Option<([u8; 4], u16)>,
    node_addrs: BTreeSet<[u8; 4]>,
    frontends: BTreeSet<([u8; 4], u16, u8)>,
}

/// The node's addresses the pod program passes to the kernel: every Node address but the
/// pod gateway. Replies to flows the datapath SNATed to the gateway (hairpin, host
/// clients, eTP Cluster) come from pods addressed to it and must reach the datapath;
/// the rest of the gateway's traffic the datapath passes on through the host port.
fn wanted_node_addrs(tables: &Tables) -> BTreeSet<[u8; 4]> {
    tables
        .node
        .addresses
        .iter()
        .filter_map(|a| a.as_v4())
        .filter(|a| *a != tables.node.gateway_ip)
        .collect()
}

/// Frontends the uplink program redirects: everything but ClusterIPs (which only pods and
/// the host port reach). IPv4 only, as the programs are.
fn wanted_frontends(tables: &Tables) -> BTreeSet<([u8; 4], u16, u8)> {
    tables
        .frontends
        .iter()
        .filter(|(_, fe)| fe.kind != FrontendKind::ClusterIp)
        .filter_map(|(key, _)| Some((key.vip.as_v4()?, key.port, key.proto)))
        .collect()
}

impl KernelMaps {
    pub fn sync(&mut self, ebpf: &mut Ebpf, tables: &Tables) -> Result<(), xdp_redirect::XdpError> {
        let vxlan = (tables.node.underlay_ip, tables.overlay.udp_port);
        if self.vxlan != Some(vxlan) {
            xdp_redirect::set_vxlan(ebpf, VxlanCfg::new(Ipv4Addr::from(vxlan.0), vxlan.1))?;
            self.vxlan = Some(vxlan);
        }

        let addrs = wanted_node_addrs(tables);
        for gone in self.node_addrs.difference(&addrs) {
            xdp_redirect::remove_node_addr(ebpf, Ipv4Addr::from(*gone))?;
        }
        for new in addrs.difference(&self.node_addrs) {
            xdp_redirect::add_node_addr(ebpf, Ipv4Addr::from(*new))?;
        }
        self.node_addrs = addrs;

        let frontends = wanted_frontends(tables);
        for (addr, port, proto) in self.frontends.difference(&frontends) {
            xdp_redirect::remove_frontend(
                ebpf,
                FrontendKey::new(Ipv4Addr::from(*addr), *port, *proto),
            )?;
        }
        for (addr, port, proto) in frontends.difference(&self.frontends) {
            xdp_redirect::add_frontend(
                ebpf,
                FrontendKey::new(Ipv4Addr::from(*addr), *port, *proto),
            )?;
        }
        self.frontends = frontends;
        Ok(())
    }
}
