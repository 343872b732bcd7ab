//! Helpers for the AF_XDP worker tests: namespaces named `kxsk-<pid>-*` (removed on drop,
//! even when a test fails), pods, the XDP programs attached with per-port XSKMAP slots,
//! hand-built tables; and, from testkit, what they share with the rig's tests (the
//! generator choice, interfaces by name, waiting with a deadline).

#![allow(dead_code, unused_imports, reason = "each test uses a different part")]

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use aya::Ebpf;
use datapath::addr::{Cidr, IpKey, MacAddr};
use datapath::conntrack::{ConntrackConfig, Flows};
use datapath::lb::maglev::{self, MaglevTable};
use datapath::tables::{
    Backend, BackendSet, EndpointCondition, Frontend, FrontendKind, LocalNode, LocalPod,
    OverlayParams, PortInfo, PortKind, PrefixMap, ServiceId, ServiceKey, ServicePort,
};
use datapath::{PortId, Tables};
use xdp_redirect::attach::Attachment;
use xdp_redirect::{SharedFlows, SharedState};

pub const GATEWAY: [u8; 4] = [10, 244, 1, 1];
pub const NODE_IP: [u8; 4] = [192, 168, 50, 10];

pub fn mac_string(mac: MacAddr) -> String {
    let m = mac.0;
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

pub use testkit::cmd::run;
pub use testkit::netns::{Netns, enter};
// The AF_XDP tests measure rates and CPU time: one at a time ([`root_test`]), and not
// beside another kxdp root test (an agent, a lab, the bench) of this or another binary.
pub use testkit::root::{root_or_skip, root_test};
pub use testkit::wait::{eventually, wait_until};
pub use testkit::xdp::{ifindex, interface, live_frames_or_fallback};

/// A namespace `kxsk-<pid>-<n>-<tag>` (the AF_XDP worker tests'; a test file with its own
/// prefix calls [`Netns::with_prefix`]).
pub fn netns(tag: &str) -> Netns {
    Netns::with_prefix("kxsk", tag)
}

/// A veth pair inside `ns`, `queues` rx/tx queues on both ends, both up.
pub fn veth_pair(ns: &Netns, a: &str, b: &str, queues: u32) {
    ns.veth_pair(a, b, queues);
}

pub fn ip_string(ip: [u8; 4]) -> String {
    std::net::Ipv4Addr::from(ip).to_string()
}

/// A pod as the CNI plugin sets it up (agent contract): its own namespace with `eth0`
/// (MAC 0a:58:<ip>, <ip>/24, default route via the gateway, tx checksum offload off) and
/// the host side `host_if` in the node namespace with the gateway MAC.
#[derive(Debug)]
pub struct Pod {
    pub ns: Netns,
    pub namespace: String,
    pub name: String,
    pub host_if: String,
    pub ip: [u8; 4],
    /// Rx/tx queues of both veth ends.
    pub queues: u32,
}

impl Pod {
    pub fn new(node: &Netns, namespace: &str, name: &str, ip: [u8; 4], queues: u32) -> Pod {
        let ns = netns(&format!("pod-{name}"));
        let host_if = format!("kxsk-{name}");
        let q = queues.to_string();
        node.ip(&[
            "link",
            "add",
            &host_if,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "address",
            &mac_string(MacAddr::for_ipv4(GATEWAY)),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "address",
            &mac_string(MacAddr::for_ipv4(ip)),
            "netns",
            ns.name(),
        ]);
        node.ip(&["link", "set", &host_if, "up"]);
        ns.ip(&[
            "addr",
            "add",
            &format!("{}/24", ip_string(ip)),
            "dev",
            "eth0",
        ]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["route", "add", "default", "via", &ip_string(GATEWAY)]);
        ns.exec("ethtool", &["-K", "eth0", "tx", "off"]);
        Pod {
            ns,
            namespace: namespace.into(),
            name: name.into(),
            host_if,
            ip,
            queues,
        }
    }

    /// The datapath port name, `pod-<namespace>-<name>`.
    pub fn port(&self) -> String {
        PortInfo::pod_name(&self.namespace, &self.name)
    }

    /// Steers everything the pod sends to tx queue `queue` of its eth0 (XPS: every CPU
    /// maps to that queue), so it arrives on rx queue `queue` of the host side: the queue
    /// of worker `queue`. XPS lives in sysfs, which shows the namespace it was mounted in:
    /// a private mount namespace mounts a fresh sysfs for the pod's. (Not `ip netns exec`:
    /// it remounts / as a slave, which fails where / is no mount point, as in a chroot;
    /// /sys itself is made private first so the new mount cannot propagate out.)
    pub fn steer_tx_queue(&self, queue: u32, queues: u32) {
        let cpus = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(32);
        let all = format!("{:x}", (1u64 << cpus) - 1);
        let mut script = String::from("mount --make-rprivate /sys && mount -t sysfs sysfs /sys");
        for q in 0..queues {
            let mask = if q == queue { all.as_str() } else { "0" };
            script.push_str(&format!(
                " && echo {mask} > /sys/class/net/eth0/queues/tx-{q}/xps_cpus"
            ));
        }
        let net = format!("--net={}", self.ns.path());
        run(
            "nsenter",
            &[
                &net,
                "unshare",
                "--mount",
                "--propagation",
                "unchanged",
                "sh",
                "-c",
                &script,
            ],
        );
    }
}

/// The XDP programs loaded once for the node, with the attachments made so far (dropping
/// it detaches them).
pub struct Programs {
    pub ebpf: Ebpf,
    attachments: Vec<Attachment>,
}

impl Programs {
    /// Loads the programs; call inside the node namespace.
    pub fn load() -> Programs {
        Programs {
            ebpf: xdp_redirect::load().expect("load XDP programs"),
            attachments: Vec::new(),
        }
    }

    /// Attaches `program` to `ifname` and gives it XSKMAP slots `base..base + queues`.
    pub fn attach(&mut self, program: &'static str, ifname: &str, base: u32, queues: u32) {
        let iface = xdp_redirect::Interface::by_name(ifname).expect("interface");
        let range = xdp_redirect::PortRange { base, queues };
        xdp_redirect::set_port_slots(&mut self.ebpf, iface.index(), range).expect("port slots");
        let a = xdp_redirect::attach(&mut self.ebpf, program, &iface).expect("attach");
        assert_eq!(
            a.mode(),
            xdp_redirect::AttachMode::Driver,
            "veth supports native XDP"
        );
        self.attachments.push(a);
    }

    pub fn set_xsk(&mut self, slot: u32, fd: i32) {
        xdp_redirect::set_xsk(&mut self.ebpf, slot, fd).expect("set XSKMAP slot");
    }

    pub fn remove_xsk(&mut self, slot: u32) {
        xdp_redirect::remove_xsk(&mut self.ebpf, slot).expect("empty XSKMAP slot");
    }

    /// Detaches the program from `ifname` (before its port is removed for good).
    pub fn detach(&mut self, ifname: &str) {
        if let Some(i) = self
            .attachments
            .iter()
            .position(|a| a.interface().name() == ifname)
        {
            let a = self.attachments.remove(i);
            xdp_redirect::detach(&mut self.ebpf, a).expect("detach");
        }
    }
}

/// A Service port for the hand-built tables.
#[derive(Debug, Clone)]
pub struct TestService {
    pub name: String,
    pub vip: [u8; 4],
    pub port: u16,
    pub proto: u8,
    pub backends: Vec<([u8; 4], u16)>,
}

/// A pod of the hand-built tables (all local to this node).
#[derive(Debug, Clone)]
pub struct TestPod {
    pub namespace: String,
    pub name: String,
    pub ip: [u8; 4],
}

impl From<&Pod> for TestPod {
    fn from(p: &Pod) -> TestPod {
        TestPod {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            ip: p.ip,
        }
    }
}

/// Node tables with PodCIDR 10.244.1.0/24 (gateway .1), ports uplink, host, then `pods`
/// in order, and `services` (ClusterIP, all endpoints ready and local).
pub fn node_tables(generation: u64, pods: &[TestPod], services: &[TestService]) -> Tables {
    let mut ports = vec![PortInfo::uplink(), PortInfo::host()];
    let mut local_pods = Vec::new();
    let mut local_pod_by_ip = datapath::foldhash_map::HashMap::default();
    for (i, p) in pods.iter().enumerate() {
        let port = PortId(ports.len() as u32);
        ports.push(PortInfo::pod(&p.namespace, &p.name, i));
        local_pod_by_ip.insert(IpKey::v4(p.ip), i);
        local_pods.push(LocalPod {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            port,
            mac: MacAddr::for_ipv4(p.ip),
            ips: vec![IpKey::v4(p.ip)],
        });
    }
    let mut frontends = datapath::foldhash_map::HashMap::default();
    let mut service_ports = Vec::new();
    for (i, s) in services.iter().enumerate() {
        frontends.insert(
            ServiceKey {
                vip: IpKey::v4(s.vip),
                port: s.port,
                proto: s.proto,
            },
            Frontend {
                service: ServiceId(i as u32),
                kind: FrontendKind::ClusterIp,
            },
        );
        service_ports.push(service_port(s, i as u32));
    }
    Tables {
        generation,
        node: LocalNode {
            name: "kxsk-node".into(),
            underlay_ip: NODE_IP,
            underlay_mac: MacAddr([2, 0, 0xc0, 0xa8, 0x32, 0x0a]),
            pod_cidrs: vec![cidr("10.244.1.0/24")],
            gateway_ip: GATEWAY,
            gateway_mac: MacAddr::for_ipv4(GATEWAY),
            addresses: vec![IpKey::v4(NODE_IP), IpKey::v4(GATEWAY)],
        },
        overlay: OverlayParams {
            vni: 1,
            udp_port: 4789,
            underlay_mtu: 1500,
        },
        cluster_cidrs: vec![cidr("10.244.0.0/16")],
        service_cidrs: vec![cidr("10.96.0.0/12")],
        ports,
        local_pods,
        local_pod_by_ip,
        remote_routes: PrefixMap::default(),
        remote_nodes: Vec::new(),
        remote_node_by_underlay: Default::default(),
        service_ports: service_ports.into_iter().map(std::sync::Arc::new).collect(),
        frontends: std::sync::Arc::new(frontends),
        policy: Default::default(),
    }
}

fn cidr(s: &str) -> Cidr {
    s.parse().expect("test CIDR")
}

fn service_port(s: &TestService, id: u32) -> ServicePort {
    let mut backends: Vec<Backend> = s
        .backends
        .iter()
        .map(|&(ip, port)| Backend {
            ip: IpKey::v4(ip),
            port,
            condition: EndpointCondition::Ready,
            local: true,
        })
        .collect();
    backends.sort();
    let keys: Vec<[u8; 18]> = backends
        .iter()
        .map(|b| maglev::backend_key(b.ip, b.port))
        .collect();
    let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
    let members: Vec<u32> = (0..backends.len() as u32).collect();
    let set = BackendSet {
        members,
        maglev: std::sync::Arc::new(
            MaglevTable::build(&refs, None, 251, maglev::DEFAULT_SEED).expect("maglev"),
        ),
    };
    ServicePort {
        name: s.name.clone(),
        stable_id: id + 1,
        backends,
        cluster: set.clone(),
        local: set,
        external_local: false,
        internal_local: false,
        affinity_timeout_ns: None,
        lb_source_ranges: Vec::new(),
    }
}

/// Shared state for workers: these tables and an empty flow table.
pub fn shared_state(tables: Tables) -> SharedState {
    SharedState {
        tables: Arc::new(ArcSwap::from_pointee(tables)),
        flows: Arc::new(Mutex::new(SharedFlows::new(Flows::new(ConntrackConfig {
            capacity: 1 << 16,
            ..ConntrackConfig::default()
        })))),
    }
}

/// CPU time a thread of this process has run, from the scheduler (ns).
pub fn thread_cpu_ns(tid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .unwrap_or_else(|e| panic!("schedstat of {tid}: {e}"));
    s.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("schedstat run time")
}
