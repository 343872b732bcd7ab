//! Flannel's vxlan backend and its bridge CNI delegate, configured into a node's namespace.

use std::net::Ipv4Addr;

use super::{CNI_BRIDGE, FLANNEL_DEV, VXLAN_OVERHEAD, network_address};
use lab::LabError;
use lab::cmd::{in_netns, ip_in, link_exists, run};
use lab::layout::Mac;

/// A remote node as Flannel learns it from the Node's annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlannelPeer {
    /// The node's PodCIDR: network address and prefix length.
    pub pod_cidr: (Ipv4Addr, u8),
    pub underlay_ip: Ipv4Addr,
    /// `flannel.alpha.coreos.com/backend-data`'s VtepMAC.
    pub vtep_mac: Mac,
}

/// What Flannel (vxlan backend, bridge CNI delegate) configures on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlannelNode {
    pub netns: String,
    /// The underlay interface (`eth0`) VXLAN packets leave by.
    pub uplink: String,
    pub underlay_ip: Ipv4Addr,
    pub vtep_mac: Mac,
    /// The node's pod gateway (`10.244.N.1`), held by cni0; the PodCIDR is its network.
    pub gateway: Ipv4Addr,
    pub pod_prefix_len: u8,
    pub bridge_mac: Mac,
    pub vni: u32,
    pub port: u16,
    pub underlay_mtu: u32,
    pub peers: Vec<FlannelPeer>,
}

impl FlannelNode {
    /// The node's PodCIDR network address: Flannel puts it on flannel.1 as a /32.
    fn pod_network(&self) -> Result<Ipv4Addr, LabError> {
        network_address(self.gateway, self.pod_prefix_len)
    }
}

/// Configures Flannel on the node: ip_forward, flannel.1 with its peers, cni0. On failure
/// what was made is removed again.
pub fn apply_flannel(node: &FlannelNode) -> Result<(), LabError> {
    let ns = node.netns.as_str();
    let network = node.pod_network()?;
    for p in &node.peers {
        network_address(p.pod_cidr.0, p.pod_cidr.1)?;
    }
    if node.underlay_mtu <= VXLAN_OVERHEAD + 68 {
        return Err(LabError::Setup(format!(
            "underlay MTU {} leaves no room for VXLAN",
            node.underlay_mtu
        )));
    }
    if link_exists(ns, FLANNEL_DEV)? || link_exists(ns, CNI_BRIDGE)? {
        return Err(LabError::Setup(format!(
            "{ns} already has {FLANNEL_DEV} or {CNI_BRIDGE}: remove_flannel first"
        )));
    }
    let result = flannel_steps(node, network);
    if result.is_err() {
        let _ = remove_flannel(node);
    }
    result
}

fn flannel_steps(node: &FlannelNode, network: Ipv4Addr) -> Result<(), LabError> {
    let ns = node.netns.as_str();
    // /proc/sys/net is the writer's namespace's; sh rather than sysctl(8), which is in
    // procps, not always installed.
    run(in_netns(ns, "sh").args(["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]))?;

    let vni = node.vni.to_string();
    let port = node.port.to_string();
    let local = node.underlay_ip.to_string();
    ip_in(
        ns,
        &[
            "link",
            "add",
            FLANNEL_DEV,
            "type",
            "vxlan",
            "id",
            &vni,
            "local",
            &local,
            "dev",
            &node.uplink,
            "dstport",
            &port,
            "nolearning",
        ],
    )?;
    let mac = node.vtep_mac.to_string();
    let mtu = (node.underlay_mtu - VXLAN_OVERHEAD).to_string();
    ip_in(
        ns,
        &["link", "set", FLANNEL_DEV, "address", &mac, "mtu", &mtu],
    )?;
    ip_in(
        ns,
        &["addr", "add", &format!("{network}/32"), "dev", FLANNEL_DEV],
    )?;
    ip_in(ns, &["link", "set", FLANNEL_DEV, "up"])?;
    for p in &node.peers {
        add_flannel_peer(ns, p)?;
    }

    ip_in(ns, &["link", "add", CNI_BRIDGE, "type", "bridge"])?;
    let bridge_mac = node.bridge_mac.to_string();
    ip_in(ns, &["link", "set", CNI_BRIDGE, "address", &bridge_mac])?;
    let gw = format!("{}/{}", node.gateway, node.pod_prefix_len);
    ip_in(ns, &["addr", "add", &gw, "dev", CNI_BRIDGE])?;
    ip_in(ns, &["link", "set", CNI_BRIDGE, "up"])?;
    Ok(())
}

/// What flanneld's vxlan backend adds when it learns a node: route, neighbour, FDB.
fn add_flannel_peer(ns: &str, p: &FlannelPeer) -> Result<(), LabError> {
    let (addr, len) = p.pod_cidr;
    let network = network_address(addr, len)?;
    let net = network.to_string();
    let mac = p.vtep_mac.to_string();
    ip_in(
        ns,
        &[
            "neigh",
            "replace",
            &net,
            "lladdr",
            &mac,
            "dev",
            FLANNEL_DEV,
            "nud",
            "permanent",
        ],
    )?;
    let dst = p.underlay_ip.to_string();
    run(in_netns(ns, "bridge").args([
        "fdb",
        "replace",
        &mac,
        "dev",
        FLANNEL_DEV,
        "dst",
        &dst,
        "self",
        "permanent",
    ]))?;
    ip_in(
        ns,
        &[
            "route",
            "replace",
            &format!("{network}/{len}"),
            "via",
            &net,
            "dev",
            FLANNEL_DEV,
            "onlink",
        ],
    )?;
    Ok(())
}

/// Deletes flannel.1 and cni0 (their addresses, routes, neighbours and FDB entries go with
/// them; enslaved pod veths are released). Safe to repeat. ip_forward is left as it is:
/// it is on for kxdp's node as well.
pub fn remove_flannel(node: &FlannelNode) -> Result<(), LabError> {
    let ns = node.netns.as_str();
    for dev in [FLANNEL_DEV, CNI_BRIDGE] {
        if link_exists(ns, dev)? {
            ip_in(ns, &["link", "del", dev])?;
        }
    }
    Ok(())
}

/// Puts a pod's host veth on cni0 with hairpin on, as the bridge CNI plugin does under
/// Flannel (`hairpinMode: true`).
pub fn enslave_pod_veth(netns: &str, host_veth: &str) -> Result<(), LabError> {
    ip_in(
        netns,
        &["link", "set", host_veth, "master", CNI_BRIDGE, "up"],
    )?;
    run(in_netns(netns, "bridge").args(["link", "set", "dev", host_veth, "hairpin", "on"]))?;
    Ok(())
}

/// Takes a pod's host veth off cni0 (it stays up, for kxdp to take over).
pub fn release_pod_veth(netns: &str, host_veth: &str) -> Result<(), LabError> {
    ip_in(netns, &["link", "set", host_veth, "nomaster"])?;
    Ok(())
}
