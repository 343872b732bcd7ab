//! The lab's fixed design: nodes, addresses, MACs, pods, Services, and the names of the
//! namespaces. Pure data, so the manifests, the topology and the checks agree by
//! construction.
//!
//! ```text
//!                         <p>-fabric: bridge br0 (192.168.77.0/24; with --source api
//!                         it has .1, where the API server double listens)
//!   +---------------+---------------+---------------+---------------+
//!   | eth0 .11      | eth0 .12      | eth0 .13      | eth0 .100     |
//!  <p>-node1       <p>-node2       <p>-vtep        <p>-client
//!   kxdp agent      kxdp agent      kernel vxlan0   external client
//!   10.244.1.0/24   10.244.2.0/24   "node3": 10.244.3.1 on vxlan0
//!   pods: client,   pods: web-2,
//!         web-1           other      (each pod in its own namespace <p>-pod-<name>)
//! ```

use std::fmt;
use std::net::Ipv4Addr;

/// The Kubernetes namespace of every lab pod.
pub const NAMESPACE: &str = "demo";
/// The underlay: one L2 segment, the fabric bridge.
pub const FABRIC_PREFIX_LEN: u8 = 24;
/// The external client's address on the fabric.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 100);
/// With `--source api`: where the API server double listens, on the fabric bridge itself
/// (in `<p>-fabric`), so both agents reach it over their uplinks as a real cluster's API
/// endpoint. Not a NodePort, so the uplink XDP program passes it to the node's stack.
pub const API_SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
/// The API server's port as the agents reach it: HTTPS (a TLS front, see `apiserver.rs`).
pub const API_SERVER_PORT: u16 = 6443;
/// The double's own plain-HTTP port behind the TLS front.
pub const API_SERVER_PLAIN_PORT: u16 = 8080;
/// The `kubernetes` Service's ClusterIP (the first address of SERVICE_CIDR), which the
/// kubelet hands pods as KUBERNETES_SERVICE_HOST: on a node without kube-proxy nothing
/// routes it before kxdp runs.
pub const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";
/// Interface names inside the namespaces (each namespace is ours, so they cannot collide).
pub const UPLINK: &str = "eth0";
pub const BRIDGE: &str = "br0";
pub const VXLAN_DEV: &str = "vxlan0";
/// kxdp.yaml's defaults, written out: the kernel VTEP must agree with them.
pub const VNI: u32 = 1;
pub const VXLAN_PORT: u16 = 4789;
/// The fabric's MTU, on every host's uplink. Not the 1500 default, so the lab tells an
/// agent that read its uplink's MTU (pods get 1430) from one that fell back to the default;
/// kxdp.yaml sets no `underlayMTU`.
pub const UPLINK_MTU: u32 = 1480;
/// Rx/tx queues of every uplink (at least; more when `--workers` asks for more): a node's
/// NIC has several, and the bridge spreads the lab's flows over them by hash.
pub const UPLINK_QUEUES: u32 = 4;
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// A second ServiceCIDR object (networking.k8s.io/v1) beside the API server's own
/// (`kubernetes`, SERVICE_CIDR), as a cluster that ran out of ClusterIPs adds one. Apart
/// from every other range of the lab (pods 10.244/16, services 10.96/12, fabric
/// 192.168.77/24).
pub const SECOND_SERVICE_CIDR: &str = "10.200.0.0/24";

/// Ports every pod's probe server listens on.
pub const HTTP_PORT: u16 = 8080;
pub const ECHO_PORT: u16 = 8081;
/// A TCP port only the policy's label rule opens (not the node rule).
pub const ADMIN_PORT: u16 = 9090;
/// The client pod's `hostPort` for its HTTP_PORT: the runtime hands it to the CNI chain as a
/// port mapping, and `portmap` forwards the node's port to the pod.
pub const CLIENT_HOST_PORT: u16 = 18080;
/// Where the flood sink counts.
pub const FLOOD_PORT: u16 = 7000;

/// Service demo/web (ClusterIP): TCP 80 -> http, UDP 5353 -> echo.
pub const WEB_SERVICE: &str = "web";
pub const WEB_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
pub const WEB_TCP_PORT: u16 = 80;
pub const WEB_UDP_PORT: u16 = 5353;
/// Service demo/web-nodeport (LoadBalancer): TCP 80 -> http, nodePort 30080.
pub const NODEPORT_SERVICE: &str = "web-nodeport";
pub const NODEPORT_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
pub const NODE_PORT: u16 = 30080;
/// demo/web-nodeport is a LoadBalancer Service: its `externalIPs` entry and the ingress IP
/// its status reports (addresses on the fabric that no node holds: only the nodes' own
/// processes use them, through kxdp's output rewrite).
pub const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 200);
pub const LOAD_BALANCER_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 201);
/// Service demo/web-extra (ClusterIP from SECOND_SERVICE_CIDR): TCP 80 -> http.
pub const EXTRA_SERVICE: &str = "web-extra";
pub const EXTRA_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 10);
/// NetworkPolicy demo/web-ingress.
pub const POLICY: &str = "web-ingress";

/// A node of the lab: `node1` and `node2` run kxdp; `node3` is the kernel VXLAN peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePlan {
    pub index: u8,
    /// Whether a kxdp agent runs it (node3 is a plain kernel vxlan device).
    pub has_agent: bool,
}

pub const NODE1: NodePlan = NodePlan {
    index: 1,
    has_agent: true,
};
pub const NODE2: NodePlan = NodePlan {
    index: 2,
    has_agent: true,
};
pub const NODE3: NodePlan = NodePlan {
    index: 3,
    has_agent: false,
};
pub const NODES: [NodePlan; 3] = [NODE1, NODE2, NODE3];
pub const AGENT_NODES: [NodePlan; 2] = [NODE1, NODE2];

impl NodePlan {
    pub fn name(self) -> String {
        format!("node{}", self.index)
    }

    /// The uplink (VTEP) address: 192.168.77.1N.
    pub fn underlay_ip(self) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, 77, 10 + self.index)
    }

    /// Locally administered, derived from the address (as the worked example does).
    pub fn underlay_mac(self) -> Mac {
        Mac::with_ip([0x02, 0x00], self.underlay_ip())
    }

    /// 10.244.N.0/24.
    pub fn pod_cidr(self) -> (Ipv4Addr, u8) {
        (Ipv4Addr::new(10, 244, self.index, 0), 24)
    }

    pub fn pod_cidr_string(self) -> String {
        let (a, len) = self.pod_cidr();
        format!("{a}/{len}")
    }

    /// The first address of the PodCIDR.
    pub fn gateway(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, self.index, 1)
    }

    pub fn gateway_mac(self) -> Mac {
        Mac::for_pod(self.gateway())
    }
}

/// A pod of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodPlan {
    pub name: &'static str,
    pub node: NodePlan,
    pub labels: &'static [(&'static str, &'static str)],
    /// The `hostPort` of the pod's HTTP_PORT container port, if it has one.
    pub http_host_port: Option<u16>,
}

impl PodPlan {
    pub fn has_label(&self, key: &str, value: &str) -> bool {
        self.labels.iter().any(|&(k, v)| k == key && v == value)
    }

    pub fn is_web(&self) -> bool {
        self.has_label("app", "web")
    }
}

/// The client pod: its `role=client` label is what the policy allows.
pub const POD_CLIENT: PodPlan = PodPlan {
    name: "client",
    node: NODE1,
    labels: &[("app", "client"), ("role", "client")],
    http_host_port: Some(CLIENT_HOST_PORT),
};
/// Backends of both Services, one per node; the policy isolates them for ingress.
pub const POD_WEB1: PodPlan = PodPlan {
    name: "web-1",
    node: NODE1,
    labels: &[("app", "web")],
    http_host_port: None,
};
pub const POD_WEB2: PodPlan = PodPlan {
    name: "web-2",
    node: NODE2,
    labels: &[("app", "web")],
    http_host_port: None,
};
/// A pod without `role=client`: the policy denies it.
pub const POD_OTHER: PodPlan = PodPlan {
    name: "other",
    node: NODE2,
    labels: &[("app", "other")],
    http_host_port: None,
};
pub const PODS: [PodPlan; 4] = [POD_CLIENT, POD_WEB1, POD_WEB2, POD_OTHER];

/// A MAC address, printed the way `ip` wants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    fn with_ip(head: [u8; 2], ip: Ipv4Addr) -> Mac {
        let o = ip.octets();
        Mac([head[0], head[1], o[0], o[1], o[2], o[3]])
    }

    /// kxdp's pod (and gateway) MAC: 0a:58:<IPv4 bytes>.
    pub fn for_pod(ip: Ipv4Addr) -> Mac {
        Mac::with_ip([0x0a, 0x58], ip)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Names of everything the lab creates outside its directory: network namespaces, all
/// starting with the prefix, so parallel labs (and other users' namespaces) never collide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub prefix: String,
}

impl Names {
    pub fn fabric(&self) -> String {
        format!("{}-fabric", self.prefix)
    }

    pub fn node(&self, node: NodePlan) -> String {
        if node.has_agent {
            format!("{}-{}", self.prefix, node.name())
        } else {
            self.vtep()
        }
    }

    pub fn vtep(&self) -> String {
        format!("{}-vtep", self.prefix)
    }

    pub fn client(&self) -> String {
        format!("{}-client", self.prefix)
    }

    pub fn pod(&self, pod: &PodPlan) -> String {
        format!("{}-pod-{}", self.prefix, pod.name)
    }

    /// Every namespace the lab may have created, pods first (they hang off the nodes),
    /// the fabric last.
    pub fn all_namespaces(&self) -> Vec<String> {
        let mut all: Vec<String> = PODS.iter().map(|p| self.pod(p)).collect();
        all.push(self.client());
        all.push(self.vtep());
        for n in AGENT_NODES {
            all.push(self.node(n));
        }
        all.push(self.fabric());
        all
    }
}

/// Whether `prefix` makes good namespace names: a lowercase letter, then lowercase letters
/// or digits, at most 8 in all.
pub fn valid_prefix(prefix: &str) -> bool {
    let mut chars = prefix.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && prefix.len() <= 8
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_the_node_index() {
        assert_eq!(NODE1.underlay_ip(), Ipv4Addr::new(192, 168, 77, 11));
        assert_eq!(NODE2.underlay_mac().to_string(), "02:00:c0:a8:4d:0c");
        assert_eq!(NODE3.pod_cidr_string(), "10.244.3.0/24");
        assert_eq!(NODE1.gateway_mac().to_string(), "0a:58:0a:f4:01:01");
        assert_eq!(
            Mac::for_pod(Ipv4Addr::new(10, 244, 1, 5)).to_string(),
            "0a:58:0a:f4:01:05"
        );
    }

    #[test]
    fn names_carry_the_prefix_and_are_distinct() {
        let n = Names {
            prefix: "kxl42".into(),
        };
        let all = n.all_namespaces();
        assert!(all.iter().all(|x| x.starts_with("kxl42-")));
        let mut dedup = all.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), all.len());
        assert_eq!(n.node(NODE3), "kxl42-vtep");
        assert_eq!(n.pod(&POD_CLIENT), "kxl42-pod-client");
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(valid_prefix("kxl"));
        assert!(valid_prefix("kxl123"));
        for bad in ["", "1kxl", "Kxl", "kx-l", "kxl/x", "abcdefghi"] {
            assert!(!valid_prefix(bad), "{bad}");
        }
    }
}
