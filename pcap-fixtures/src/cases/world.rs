//! The two-node world every case lives in (README "Worked example"): its addresses, MACs
//! and port names, and the frames each side puts on the wire.
//!
//! Written from the documented contract (ARCHITECTURE.md §2 and §4), never read back from
//! the datapath's tables, so a translate or pipeline mistake shows up as a case failure.

use crate::packet::{L2, L4, Mac, V4, Vxlan, mac_for, mapped};
use crate::state::{NodeDef, PodDef, ServiceDef, StateDef};
use testkit::manifests::service::ServiceSpec;
use testkit::oracle::{flow_hash, vxlan_source_port};

pub const NODE_A_IP: [u8; 4] = [192, 168, 50, 10];
pub const NODE_B_IP: [u8; 4] = [192, 168, 50, 11];
pub const NODE_A_MAC: Mac = [0x02, 0x00, 0xc0, 0xa8, 0x32, 0x0a];
pub const NODE_B_MAC: Mac = [0x02, 0x00, 0xc0, 0xa8, 0x32, 0x0b];
/// The pod gateways: first address of each node's PodCIDR.
pub const GW_A: [u8; 4] = [10, 244, 1, 1];
pub const GW_B: [u8; 4] = [10, 244, 2, 1];
pub const CLIENT: [u8; 4] = [10, 244, 1, 5];
pub const WEB0: [u8; 4] = [10, 244, 1, 6];
pub const WEB1: [u8; 4] = [10, 244, 2, 7];
/// demo/web's ClusterIP in the example.
pub const VIP: [u8; 4] = [10, 96, 0, 10];
/// The kernel side of the `host` veth (`kxdp-host`).
pub const HOST_MAC: Mac = [0x0a, 0x58, 0xa9, 0xfe, 0x00, 0x01];
/// What the kernel's `kxdp-host` sends from (a host-network client).
pub const HOST_SIDE_IP: [u8; 4] = [169, 254, 0, 1];

pub const CLIENT_PORT: &str = "pod-demo-client";
pub const WEB0_PORT: &str = "pod-demo-web-0";
pub const UPLINK: &str = "uplink";
pub const HOST: &str = "host";

pub const VXLAN_PORT: u16 = 4789;
pub const VNI: u32 = 1;

/// A local pod's frame towards its gateway (pods route everything via it).
pub fn from_pod(ip: [u8; 4]) -> L2 {
    L2 {
        src: mac_for(ip),
        dst: mac_for(GW_A),
    }
}

/// A frame node-a delivers to a local pod: from the gateway MAC to the pod's MAC.
pub fn to_pod(ip: [u8; 4]) -> L2 {
    L2 {
        src: mac_for(GW_A),
        dst: mac_for(ip),
    }
}

/// The inner L2 of traffic node-a tunnels to node-b: our gateway to theirs.
pub fn a_to_b_inner() -> L2 {
    L2 {
        src: mac_for(GW_A),
        dst: mac_for(GW_B),
    }
}

/// The inner L2 node-b's kxdp writes on traffic it tunnels to us.
pub fn b_to_a_inner() -> L2 {
    L2 {
        src: mac_for(GW_B),
        dst: mac_for(GW_A),
    }
}

/// Outer headers node-a must write towards node-b for an inner flow (the source port is
/// the flow hash of the inner 5-tuple, after any NAT).
pub fn a_to_b_outer(src: [u8; 16], dst: [u8; 16], l4: L4, v6: bool, port: u16, vni: u32) -> Vxlan {
    let (sport, dport) = l4.ports();
    let hash = flow_hash(src, dst, sport, dport, l4.proto(v6), 0);
    Vxlan {
        l2: L2 {
            src: NODE_A_MAC,
            dst: NODE_B_MAC,
        },
        src: NODE_A_IP,
        dst: NODE_B_IP,
        sport: vxlan_source_port(hash),
        dport: port,
        vni,
        ident: 0,
        df: true,
        udp_checksum: false,
    }
}

/// `a_to_b_outer` for an IPv4 inner flow with the default port and VNI.
pub fn a_to_b(ip: V4, l4: L4) -> Vxlan {
    a_to_b_outer(mapped(ip.src), mapped(ip.dst), l4, false, VXLAN_PORT, VNI)
}

/// What node-b puts on the wire towards us (its own source port choice is arbitrary).
pub fn b_to_a(sport: u16, vni: u32) -> Vxlan {
    Vxlan {
        l2: L2 {
            src: NODE_B_MAC,
            dst: NODE_A_MAC,
        },
        src: NODE_B_IP,
        dst: NODE_A_IP,
        sport,
        dport: VXLAN_PORT,
        vni,
        ident: 0,
        df: true,
        udp_checksum: false,
    }
}

/// The example's nodes and pods, with `services` instead of its demo/web (so a case can
/// have a Service with exactly one backend) and `config` as kxdp.yaml.
pub fn two_node_state(config: Option<&'static str>, services: Vec<ServiceDef>) -> StateDef {
    two_node_with(
        config,
        services.into_iter().map(ServiceSpec::from).collect(),
    )
}

/// The example's nodes and pods with `services` in their full form.
pub fn two_node_with(config: Option<&'static str>, services: Vec<ServiceSpec>) -> StateDef {
    StateDef {
        config,
        nodes: vec![
            NodeDef {
                name: "node-a",
                internal_ip: "192.168.50.10",
                underlay_mac: "02:00:c0:a8:32:0a",
                pod_cidrs: vec!["10.244.1.0/24"],
            },
            NodeDef {
                name: "node-b",
                internal_ip: "192.168.50.11",
                underlay_mac: "02:00:c0:a8:32:0b",
                pod_cidrs: vec!["10.244.2.0/24"],
            },
        ],
        pods: vec![
            PodDef {
                name: "client",
                node: "node-a",
                ips: vec!["10.244.1.5"],
                labels: Vec::new(),
            },
            PodDef {
                name: "web-0",
                node: "node-a",
                ips: vec!["10.244.1.6"],
                labels: Vec::new(),
            },
            PodDef {
                name: "web-1",
                node: "node-b",
                ips: vec!["10.244.2.7"],
                labels: Vec::new(),
            },
        ],
        services,
        network_policies: Vec::new(),
    }
}
