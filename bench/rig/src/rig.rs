//! Building and removing the bench's namespaces (plan.rs has the picture), and switching
//! node A between kxdp and the kernel path within one run.
//!
//! Order of a run: up (node B as a Flannel node, node A's kxdp agent, the client pod
//! through kxdp-cni) -> kxdp measured -> [`Rig::stop_agent`] -> the AF_XDP ceiling on the
//! same ports -> [`Rig::enter_kernel_mode`] per kube-proxy mode -> down. Everything lives in
//! namespaces `<p>-...` and under the bench's directory; processes are recorded by PID (the
//! lab's `procs`), so `down` stops exactly what `up` started, even from another process.

use std::fs;
use std::net::Ipv4Addr;

use super::kernel_path::{self, FlannelNode, FlannelPeer, ProxyMode, ServicePlan};
use super::plan::{self, BACKENDS, CLIENT, NODE_A, NODE_B};
use lab::cmd::{self, ip_in, link_exists};
use lab::layout::{NAMESPACE, Names, NodePlan, UPLINK, VNI, VXLAN_PORT};
use lab::procs::{self, ProcRecord};
use lab::topology::tx_checksum_off;
use lab::{Lab, LabError, agents, pods, servers, topology};

/// The bench's namespaces, pods first (they hang off the nodes).
pub fn namespaces(names: &Names) -> Vec<String> {
    let mut all = vec![names.pod(&CLIENT)];
    all.extend(BACKENDS.iter().map(|b| names.pod(b)));
    all.push(names.node(NODE_A));
    all.push(names.node(NODE_B));
    all
}

/// A bench that is up.
#[derive(Debug)]
pub struct Rig {
    pub lab: Lab,
    pub names: Names,
    pub client_ip: Ipv4Addr,
    /// The node-A end of the client pod's veth (kxdp-cni named it).
    pub client_host_veth: String,
    /// Where the generator runs, and the one CPU node A's forwarding gets.
    pub gen_cpu: usize,
    pub forward_cpu: usize,
    agent: Option<ProcRecord>,
}

impl Rig {
    /// Builds everything; on failure what was built stays for a look (`down` removes it).
    pub fn up(lab: Lab, gen_cpu: usize, forward_cpu: usize) -> Result<Rig, LabError> {
        let names = lab.names();
        down(&lab)?;
        fs::create_dir_all(&lab.dir).map_err(|e| LabError::io(&lab.dir, e))?;
        // The client pod's namespace is made by `pods::add`, as a runtime would.
        for ns in namespaces(&names)
            .iter()
            .filter(|&ns| *ns != names.pod(&CLIENT))
        {
            topology::add_netns(ns)?;
        }
        link_nodes(&names)?;
        for (i, b) in BACKENDS.iter().enumerate() {
            add_backend(&names, i, b)?;
        }
        kernel_path::apply_flannel(&flannel(&names, NODE_B))?;
        for i in 0..BACKENDS.len() {
            kernel_path::enslave_pod_veth(&names.node(NODE_B), &plan::backend_host_veth(i))?;
        }

        plan::write_base(&lab.state_dir())?;
        let agent = agents::start_on_cpus(&lab, NODE_A, &forward_cpu.to_string())?;
        let client_ip = pods::add(&lab, &CLIENT)?;
        plan::write_workloads(&lab.state_dir(), client_ip)?;
        let client_host_veth = peer_name(&names.pod(&CLIENT), &names.node(NODE_A))?;
        for b in &BACKENDS {
            servers::start(&lab, b.name, &names.pod(b))?;
            drop_sink_port(&names.pod(b))?;
        }
        agents::wait_for_pods(
            &lab,
            &[NODE_A],
            &plan::placed(client_ip),
            std::time::Duration::from_secs(30),
        )?;
        Ok(Rig {
            lab,
            names,
            client_ip,
            client_host_veth,
            gen_cpu,
            forward_cpu,
            agent: Some(agent),
        })
    }

    pub fn node_a(&self) -> String {
        self.names.node(NODE_A)
    }

    pub fn node_b(&self) -> String {
        self.names.node(NODE_B)
    }

    pub fn client_ns(&self) -> String {
        self.names.pod(&CLIENT)
    }

    /// Stops node A's agent and checks that it took its XDP programs and `kxdp-host` with
    /// it (the kernel path must start from a plain node, not one still running XDP).
    pub fn stop_agent(&mut self) -> Result<(), LabError> {
        if let Some(rec) = self.agent.take() {
            procs::stop(&self.lab.procs_dir(), &rec, agents::STOP_GRACE)?;
        }
        let node = self.node_a();
        for dev in [self.client_host_veth.as_str(), UPLINK] {
            if ip_in(&node, &["-d", "link", "show", "dev", dev])?.contains("prog/xdp") {
                return Err(LabError::Setup(format!(
                    "the stopped agent left an XDP program on {dev} in {node}"
                )));
            }
        }
        if link_exists(&node, "kxdp-host")? {
            return Err(LabError::Setup(format!(
                "the stopped agent left kxdp-host in {node}"
            )));
        }
        // The agent manages (and on exit deletes) its uplink's neighbour entries; without
        // one the kernel would ARP for node B, whose throughput sink drops the answer.
        pin_neighbour(&node, NODE_B)?;
        // kxdp-cni's host route to the pod: with Flannel the pod is reached through cni0.
        // Absent when the agent never got that far; nothing to undo then.
        let _ = ip_in(
            &node,
            &[
                "route",
                "del",
                &format!("{}/32", self.client_ip),
                "dev",
                &self.client_host_veth,
            ],
        );
        Ok(())
    }

    /// Node A as kube-proxy (`mode`) + Flannel configure it: cni0 holding the gateway
    /// (with the gateway's MAC, so the pod's neighbour entry stays right), flannel.1, the
    /// Service rules; the pod veth's receive work steered to the forwarding CPU (RPS), as
    /// kxdp's worker is pinned there. The first call builds cni0/flannel.1, later ones
    /// only swap the rules.
    pub fn enter_kernel_mode(&mut self, mode: ProxyMode) -> Result<(), LabError> {
        let node = self.node_a();
        if !link_exists(&node, "cni0")? {
            kernel_path::apply_flannel(&flannel(&self.names, NODE_A))?;
            kernel_path::enslave_pod_veth(&node, &self.client_host_veth)?;
            // A veth takes XDP_TX frames (the generator's) only into NAPI: an XDP program
            // or GRO on the receiving end. GRO is what a kernel node would have anyway.
            cmd::run(cmd::in_netns(&node, "ethtool").args([
                "-K",
                &self.client_host_veth,
                "gro",
                "on",
            ]))?;
            set_rps(&node, &self.client_host_veth, self.forward_cpu)?;
        }
        kernel_path::apply_kube_proxy(&node, mode, plan::cluster_cidr(), &services())
    }

    pub fn leave_kernel_mode(&mut self, mode: ProxyMode) -> Result<(), LabError> {
        kernel_path::remove_kube_proxy(&self.node_a(), mode)
    }
}

/// The Service as kube-proxy sees it: one ServicePlan per port.
pub fn services() -> Vec<ServicePlan> {
    plan::SERVICE_PORTS
        .iter()
        .map(|&(port, target, name)| ServicePlan {
            namespace: NAMESPACE.to_string(),
            name: plan::SERVICE.to_string(),
            port_name: name.to_string(),
            cluster_ip: plan::CLUSTER_IP,
            port,
            protocol: kernel_path::L4::Udp,
            endpoints: plan::endpoints(target),
        })
        .collect()
}

/// A node's Flannel configuration: its VTEP MAC is its gateway MAC, which is what kxdp
/// writes as the inner destination for a node (so node B answers kxdp and kernel alike),
/// and cni0 carries the gateway with the gateway MAC.
fn flannel(names: &Names, node: NodePlan) -> FlannelNode {
    let peer = if node == NODE_A { NODE_B } else { NODE_A };
    FlannelNode {
        netns: names.node(node),
        uplink: UPLINK.to_string(),
        underlay_ip: node.underlay_ip(),
        vtep_mac: node.gateway_mac(),
        gateway: node.gateway(),
        pod_prefix_len: node.pod_cidr().1,
        bridge_mac: node.gateway_mac(),
        vni: VNI,
        port: VXLAN_PORT,
        underlay_mtu: UNDERLAY_MTU,
        peers: vec![FlannelPeer {
            pod_cidr: peer.pod_cidr(),
            underlay_ip: peer.underlay_ip(),
            vtep_mac: peer.gateway_mac(),
        }],
    }
}

/// The MTU of the rig's node link (`link_nodes`: a veth at the kernel's default), which the
/// agents take as their underlay MTU (the lab's kxdp.yaml sets none) and Flannel is given.
pub const UNDERLAY_MTU: u32 = 1500;

/// node A's eth0 <-> node B's eth0, addressed and MACed as the lab's node1/node2 (the
/// Nodes' annotations say so), each with a permanent neighbour for the other: the
/// throughput sink on node B drops everything, ARP included.
fn link_nodes(names: &Names) -> Result<(), LabError> {
    let (a, b) = (names.node(NODE_A), names.node(NODE_B));
    cmd::ip(&[
        "link", "add", UPLINK, "netns", &a, "type", "veth", "peer", "name", UPLINK, "netns", &b,
    ])?;
    for (ns, me, other) in [(&a, NODE_A, NODE_B), (&b, NODE_B, NODE_A)] {
        let mac = me.underlay_mac().to_string();
        ip_in(ns, &["link", "set", UPLINK, "address", &mac])?;
        let addr = format!("{}/24", me.underlay_ip());
        ip_in(ns, &["addr", "add", &addr, "dev", UPLINK])?;
        ip_in(ns, &["link", "set", UPLINK, "up"])?;
        tx_checksum_off(ns, UPLINK)?;
        pin_neighbour(ns, other)?;
    }
    Ok(())
}

/// A permanent neighbour entry on `netns`'s uplink for node `other`.
fn pin_neighbour(netns: &str, other: NodePlan) -> Result<(), LabError> {
    let peer_ip = other.underlay_ip().to_string();
    let peer_mac = other.underlay_mac().to_string();
    ip_in(
        netns,
        &[
            "neigh",
            "replace",
            &peer_ip,
            "lladdr",
            &peer_mac,
            "dev",
            UPLINK,
            "nud",
            "permanent",
        ],
    )?;
    Ok(())
}

/// Backend `i`: its namespace's eth0 <-> `vethbeN` in node B, the address plan.rs gives,
/// default route via node B's gateway.
fn add_backend(names: &Names, i: usize, pod: &lab::layout::PodPlan) -> Result<(), LabError> {
    let (ns, node) = (names.pod(pod), names.node(NODE_B));
    let host = plan::backend_host_veth(i);
    cmd::ip(&[
        "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &host, "netns", &node,
    ])?;
    let addr = format!("{}/{}", plan::backend_ip(i), NODE_B.pod_cidr().1);
    ip_in(&ns, &["addr", "add", &addr, "dev", "eth0"])?;
    ip_in(&ns, &["link", "set", "eth0", "up"])?;
    let gw = NODE_B.gateway().to_string();
    ip_in(&ns, &["route", "add", "default", "via", &gw, "dev", "eth0"])?;
    tx_checksum_off(&ns, "eth0")?;
    ip_in(&node, &["link", "set", &host, "up"])?;
    Ok(())
}

/// The backends drop the sink port's datagrams before their UDP stack (the background
/// load of the latency runs would otherwise cost an ICMP error each).
fn drop_sink_port(netns: &str) -> Result<(), LabError> {
    let rules = format!(
        "table inet kxdp_bench {{\n  chain pre {{\n    type filter hook prerouting priority -300;\n    udp dport {} drop\n  }}\n}}\n",
        plan::SINK_PORT
    );
    cmd::run_with_stdin(cmd::in_netns(netns, "nft").args(["-f", "-"]), &rules)?;
    Ok(())
}

/// The name, in `node_ns`, of the peer of `eth0` in `pod_ns`.
fn peer_name(pod_ns: &str, node_ns: &str) -> Result<String, LabError> {
    let link = ip_in(pod_ns, &["-o", "link", "show", "eth0"])?;
    let peer_index = link
        .split_whitespace()
        .nth(1)
        .and_then(|name| name.split("@if").nth(1))
        .and_then(|n| n.trim_end_matches(':').parse::<u32>().ok())
        .ok_or_else(|| LabError::Setup(format!("{pod_ns}: no veth peer in {link:?}")))?;
    let links = ip_in(node_ns, &["-o", "link", "show"])?;
    links
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let index: u32 = f.next()?.trim_end_matches(':').parse().ok()?;
            let name = f.next()?.trim_end_matches(':');
            (index == peer_index).then(|| name.split('@').next().unwrap_or(name).to_string())
        })
        .ok_or_else(|| LabError::Setup(format!("{node_ns}: no link with index {peer_index}")))
}

/// Receive Packet Steering of `dev`'s queue 0 to `cpu`. sysfs shows the devices of the
/// namespace that mounted it, so a private mount namespace (entered into the node's
/// network namespace) mounts its own and writes there; `--propagation unchanged` and the
/// private /sys keep both mounts away from the host (and work in a chroot, where / is
/// not a mount point).
fn set_rps(netns: &str, dev: &str, cpu: usize) -> Result<(), LabError> {
    let mask = format!("{:x}", 1u128 << cpu.min(127));
    let script = format!(
        "mount --make-rprivate /sys && mount -t sysfs none /sys && \
         echo {mask} > /sys/class/net/{dev}/queues/rx-0/rps_cpus"
    );
    let mut c = cmd::in_netns(netns, "unshare");
    c.args(["--mount", "--propagation", "unchanged", "sh", "-c", &script]);
    cmd::run(&mut c)?;
    Ok(())
}

/// Stops what a bench in `lab.dir` started and deletes its namespaces. Safe to repeat.
pub fn down(lab: &Lab) -> Result<(), LabError> {
    let mut first_error = None;
    for rec in procs::records(&lab.procs_dir()) {
        if let Err(e) = procs::stop(&lab.procs_dir(), &rec, agents::STOP_GRACE) {
            first_error.get_or_insert(e);
        }
    }
    for ns in namespaces(&lab.names()) {
        if cmd::netns_exists(&ns)
            && let Err(e) = cmd::ip(&["netns", "delete", &ns])
        {
            first_error.get_or_insert(e);
        }
    }
    for sub in ["state", "node1", "pods", "procs", "probes"] {
        let p = lab.dir.join(sub);
        if p.exists() {
            let _ = fs::remove_dir_all(&p);
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_prefixed() {
        let names = Names {
            prefix: "kxb".into(),
        };
        let all = namespaces(&names);
        assert!(all.iter().all(|n| n.starts_with("kxb-")), "{all:?}");
        assert!(all.contains(&"kxb-node1".to_string()));
        assert!(all.contains(&"kxb-pod-backend-2".to_string()));
    }
}
