//! The lab's network: namespaces, the fabric bridge, the uplinks, the external client and
//! the kernel VXLAN peer, all made with `ip`, `bridge` and `ethtool`. Nothing is created
//! outside namespaces named with the lab's prefix.

use std::net::Ipv4Addr;
use std::process::Command;

use super::cmd::{self, ip, ip_in, netns_exists};
use super::error::LabError;
use super::layout::{
    self, BRIDGE, CLIENT_IP, FABRIC_PREFIX_LEN, Mac, NODE3, Names, NodePlan, UPLINK, VNI,
    VXLAN_DEV, VXLAN_PORT,
};

/// A host on the fabric: its namespace, the bridge port's name, its address and MAC.
#[derive(Debug, Clone)]
struct FabricHost {
    netns: String,
    port: String,
    ip: Ipv4Addr,
    mac: Mac,
}

fn fabric_hosts(names: &Names) -> Vec<FabricHost> {
    let mut hosts: Vec<FabricHost> = layout::NODES
        .iter()
        .map(|&n| FabricHost {
            netns: names.node(n),
            port: n.name(),
            ip: n.underlay_ip(),
            mac: n.underlay_mac(),
        })
        .collect();
    hosts.push(FabricHost {
        netns: names.client(),
        port: "client".into(),
        ip: CLIENT_IP,
        mac: Mac([0x02, 0x00, 192, 168, 77, 100]),
    });
    hosts
}

/// Creates the fabric and every host on it (nodes, kernel VTEP, external client). Uplinks
/// get [`layout::UPLINK_QUEUES`] rx/tx queues (more when there are more workers): the bridge
/// spreads flows over them as a NIC's RSS would, and the agent serves each queue with a
/// socket of its own, several per worker.
pub fn create(names: &Names, workers: u32) -> Result<(), LabError> {
    let fabric = names.fabric();
    add_netns(&fabric)?;
    ip_in(&fabric, &["link", "add", BRIDGE, "type", "bridge"])?;
    ip_in(&fabric, &["link", "set", BRIDGE, "up"])?;
    let queues = workers.max(layout::UPLINK_QUEUES).to_string();
    let mtu = layout::UPLINK_MTU.to_string();
    for h in fabric_hosts(names) {
        add_netns(&h.netns)?;
        let mac = h.mac.to_string();
        ip_in(
            &fabric,
            &[
                "link",
                "add",
                &h.port,
                "numtxqueues",
                &queues,
                "numrxqueues",
                &queues,
                "mtu",
                &mtu,
                "type",
                "veth",
                "peer",
                "name",
                UPLINK,
                "netns",
                &h.netns,
                "numtxqueues",
                &queues,
                "numrxqueues",
                &queues,
                "mtu",
                &mtu,
                "address",
                &mac,
            ],
        )?;
        ip_in(&fabric, &["link", "set", &h.port, "master", BRIDGE, "up"])?;
        let cidr = format!("{}/{FABRIC_PREFIX_LEN}", h.ip);
        ip_in(&h.netns, &["addr", "add", &cidr, "dev", UPLINK])?;
        ip_in(&h.netns, &["link", "set", UPLINK, "up"])?;
        // The kernel hands veth traffic over with the L4 checksum left to "hardware"
        // (CHECKSUM_PARTIAL); what reaches an AF_XDP socket must carry a real one.
        tx_checksum_off(&h.netns, UPLINK)?;
    }
    Ok(())
}

/// Routes the LoadBalancer IP to node1 on the external client and on the kernel VTEP host,
/// as a load balancer announcing it (MetalLB's L2 mode, BGP) would bring its traffic to a
/// node: the client is inside the Service's `loadBalancerSourceRanges`, the VTEP host not.
pub fn route_load_balancer_ip(names: &Names) -> Result<(), LabError> {
    let lb = format!("{}/32", layout::LOAD_BALANCER_IP);
    let via = layout::NODE1.underlay_ip().to_string();
    for ns in [names.client(), names.node(NODE3)] {
        ip_in(&ns, &["route", "add", &lb, "via", &via, "dev", UPLINK])?;
    }
    Ok(())
}

/// Gives the fabric bridge the API server double's address (`--source api`): the double
/// then runs in `<p>-fabric`, a host on the underlay like the others, and the agents'
/// watch streams stay inside the lab's namespaces.
pub fn add_api_address(names: &Names) -> Result<(), LabError> {
    let cidr = format!("{}/{FABRIC_PREFIX_LEN}", layout::API_SERVER_IP);
    ip_in(&names.fabric(), &["addr", "add", &cidr, "dev", BRIDGE])?;
    Ok(())
}

/// The kernel VXLAN device in `<p>-vtep`, posing as node3: VNI and port of kxdp.yaml, no
/// learning, the MAC our encap writes as the inner destination (node3's gateway MAC, as
/// kxdp derives it), node3's gateway address, and the PodCIDRs of node1 and node2 routed
/// into it. Peers (pods) are added by [`add_vtep_peer`].
pub fn create_vtep(names: &Names) -> Result<(), LabError> {
    let ns = names.vtep();
    let vni = VNI.to_string();
    let port = VXLAN_PORT.to_string();
    let local = NODE3.underlay_ip().to_string();
    ip_in(
        &ns,
        &[
            "link",
            "add",
            VXLAN_DEV,
            "type",
            "vxlan",
            "id",
            &vni,
            "dstport",
            &port,
            "local",
            &local,
            "dev",
            UPLINK,
            "nolearning",
        ],
    )?;
    let mac = NODE3.gateway_mac().to_string();
    let mtu = (layout::UPLINK_MTU - 50).to_string();
    ip_in(
        &ns,
        &["link", "set", VXLAN_DEV, "address", &mac, "mtu", &mtu],
    )?;
    let addr = format!("{}/24", NODE3.gateway());
    ip_in(&ns, &["addr", "add", &addr, "dev", VXLAN_DEV])?;
    ip_in(&ns, &["link", "set", VXLAN_DEV, "up"])?;
    tx_checksum_off(&ns, VXLAN_DEV)?;
    for n in layout::AGENT_NODES {
        ip_in(
            &ns,
            &["route", "add", &n.pod_cidr_string(), "dev", VXLAN_DEV],
        )?;
    }
    Ok(())
}

/// Lets the kernel VTEP reach a pod: a permanent neighbour (pod IP -> kxdp's pod MAC) and
/// a static FDB entry (pod MAC -> the pod's node's VTEP address).
pub fn add_vtep_peer(names: &Names, pod_ip: Ipv4Addr, node: NodePlan) -> Result<(), LabError> {
    let ns = names.vtep();
    let mac = Mac::for_pod(pod_ip).to_string();
    let ip_s = pod_ip.to_string();
    ip_in(
        &ns,
        &[
            "neigh",
            "replace",
            &ip_s,
            "lladdr",
            &mac,
            "dev",
            VXLAN_DEV,
            "nud",
            "permanent",
        ],
    )?;
    let dst = node.underlay_ip().to_string();
    cmd::run(Command::new("nsenter").args([
        &format!("--net=/run/netns/{ns}"),
        "bridge",
        "fdb",
        "append",
        &mac,
        "dev",
        VXLAN_DEV,
        "dst",
        &dst,
        "self",
        "permanent",
    ]))?;
    Ok(())
}

/// Creates an empty namespace with its loopback up.
pub fn add_netns(netns: &str) -> Result<(), LabError> {
    ip(&["netns", "add", netns])?;
    ip_in(netns, &["link", "set", "lo", "up"])?;
    Ok(())
}

/// Transmit checksum offload off (ARCHITECTURE.md §5: CHECKSUM_PARTIAL over veth).
pub fn tx_checksum_off(netns: &str, dev: &str) -> Result<(), LabError> {
    cmd::run(cmd::in_netns(netns, "ethtool").args(["-K", dev, "tx", "off"]))?;
    Ok(())
}

/// Deletes every namespace of the lab that exists (their veths go with them). Safe to
/// repeat. Processes inside must be gone first, or the namespace lingers until they exit.
pub fn destroy(names: &Names) -> Result<(), LabError> {
    let mut first_error = None;
    for ns in names.all_namespaces() {
        if netns_exists(&ns)
            && let Err(e) = ip(&["netns", "delete", &ns])
        {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}
