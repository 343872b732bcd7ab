//! The kernel baseline of `kxdp-bench` on real namespaces: two nodes joined by a veth, Flannel
//! (vxlan backend, cni0) on both, a client pod on node 1, two backend pods on node 2, and
//! kube-proxy's rules on node 1 in iptables mode and then in nftables mode. Traffic from the
//! client pod to a ClusterIP must be DNATed by the rules on node 1, carried by flannel.1 to
//! node 2, answered by both backends, and un-NATed on the way back; once the rules are
//! removed the same request must go unanswered, and nothing of kube-proxy or Flannel may be
//! left in the node's namespace.
//!
//! Needs root; skips with a message otherwise, unless CI=true, where it fails instead.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use lab::layout::{CLUSTER_CIDR, Mac, NODE1, NODE2, NodePlan, UPLINK};
use lab::topology::add_netns;
use rig::kernel_path::{
    FlannelNode, FlannelPeer, L4, ProxyMode, ServicePlan, apply_flannel, apply_kube_proxy,
    enslave_pod_veth, iptables_backend, release_pod_veth, remove_flannel, remove_kube_proxy,
};
use testkit::netns::in_netns;
use testkit::root::is_root as running_as_root;
use testkit::root::skip_or_fail;

const NODE1_NS: &str = "kk-n1";
const NODE2_NS: &str = "kk-n2";
const CLIENT_NS: &str = "kk-cl";
const BACKENDS: [(&str, Ipv4Addr); 2] = [
    ("kk-b1", Ipv4Addr::new(10, 244, 2, 2)),
    ("kk-b2", Ipv4Addr::new(10, 244, 2, 3)),
];
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const UDP_PORT: u16 = 5353;
const TCP_PORT: u16 = 80;
const ECHO_PORT: u16 = 8081;
const HTTP_PORT: u16 = 8080;
const REQUESTS: u16 = 200;

fn sh(netns: &str, program: &str, args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{netns}"))
        .arg(program)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} in {netns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(netns: &str, args: &[&str]) {
    sh(netns, "ip", args);
}

fn delete_netns(ns: &str) {
    if std::path::Path::new(&format!("/run/netns/{ns}")).exists() {
        let _ = Command::new("ip").args(["netns", "delete", ns]).status();
    }
}

fn all_namespaces() -> Vec<&'static str> {
    let mut all = vec![CLIENT_NS];
    all.extend(BACKENDS.iter().map(|(ns, _)| *ns));
    all.extend([NODE1_NS, NODE2_NS]);
    all
}

/// A server thread inside a namespace, stopped (and joined) on drop.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `serve` on a thread entered into `ns`; returns once it has bound its socket.
fn spawn_in_netns(
    ns: &str,
    serve: impl FnOnce(Arc<AtomicBool>, mpsc::Sender<()>) + Send + 'static,
) -> Server {
    let netns = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        // SAFETY: setns(2) on an open namespace file; moves only this thread.
        let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        serve(flag, ready_tx);
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("server bound its socket");
    Server {
        stop,
        thread: Some(thread),
    }
}

/// UDP echo: answers every datagram with the backend's name.
fn udp_echo(ns: &'static str) -> Server {
    spawn_in_netns(ns, move |stop, ready| {
        let sock = UdpSocket::bind(("0.0.0.0", ECHO_PORT)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        ready.send(()).unwrap();
        let mut buf = [0u8; 1500];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((_, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(ns.as_bytes(), from);
            }
        }
    })
}

/// TCP: writes the backend's name to every connection and closes it.
fn tcp_name(ns: &'static str) -> Server {
    spawn_in_netns(ns, move |stop, ready| {
        let listener = TcpListener::bind(("0.0.0.0", HTTP_PORT)).unwrap();
        listener.set_nonblocking(true).unwrap();
        ready.send(()).unwrap();
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.write_all(ns.as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    })
}

/// The two-node lab; deletes every namespace it made (servers first) when dropped, so a
/// failing assertion leaves nothing behind.
struct Lab {
    servers: Vec<Server>,
    flannel: [FlannelNode; 2],
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.servers.clear();
        for ns in all_namespaces() {
            delete_netns(ns);
        }
    }
}

fn vtep_mac(node: NodePlan) -> Mac {
    Mac([0x06, 0x6b, 0x6b, 0, 0, node.index])
}

fn flannel_node(ns: &str, node: NodePlan, peer: NodePlan) -> FlannelNode {
    let (_, len) = node.pod_cidr();
    FlannelNode {
        netns: ns.into(),
        uplink: UPLINK.into(),
        underlay_ip: node.underlay_ip(),
        vtep_mac: vtep_mac(node),
        gateway: node.gateway(),
        pod_prefix_len: len,
        bridge_mac: node.gateway_mac(),
        vni: 1,
        port: 4789,
        underlay_mtu: 1500,
        peers: vec![FlannelPeer {
            pod_cidr: peer.pod_cidr(),
            underlay_ip: peer.underlay_ip(),
            vtep_mac: vtep_mac(peer),
        }],
    }
}

/// A pod namespace with eth0 (pod side) and `host_veth` in the node's namespace.
fn add_pod(node_ns: &str, host_veth: &str, pod_ns: &str, pod_ip: Ipv4Addr, gateway: Ipv4Addr) {
    add_netns(pod_ns).unwrap();
    ip(
        node_ns,
        &[
            "link", "add", host_veth, "type", "veth", "peer", "name", "eth0", "netns", pod_ns,
        ],
    );
    let mac = Mac::for_pod(pod_ip).to_string();
    ip(
        pod_ns,
        &["link", "set", "eth0", "address", &mac, "mtu", "1450", "up"],
    );
    ip(
        pod_ns,
        &["addr", "add", &format!("{pod_ip}/24"), "dev", "eth0"],
    );
    ip(
        pod_ns,
        &["route", "add", "default", "via", &gateway.to_string()],
    );
    ip(node_ns, &["link", "set", host_veth, "up"]);
}

fn build() -> Lab {
    for ns in all_namespaces() {
        delete_netns(ns);
    }
    let mut lab = Lab {
        servers: Vec::new(),
        flannel: [
            flannel_node(NODE1_NS, NODE1, NODE2),
            flannel_node(NODE2_NS, NODE2, NODE1),
        ],
    };
    add_netns(NODE1_NS).unwrap();
    add_netns(NODE2_NS).unwrap();
    ip(
        NODE1_NS,
        &[
            "link", "add", UPLINK, "type", "veth", "peer", "name", UPLINK, "netns", NODE2_NS,
        ],
    );
    for (ns, node) in [(NODE1_NS, NODE1), (NODE2_NS, NODE2)] {
        let mac = node.underlay_mac().to_string();
        ip(ns, &["link", "set", UPLINK, "address", &mac, "up"]);
        let addr = format!("{}/24", node.underlay_ip());
        ip(ns, &["addr", "add", &addr, "dev", UPLINK]);
    }
    for f in &lab.flannel {
        apply_flannel(f).unwrap();
    }
    add_pod(NODE1_NS, "vethcl", CLIENT_NS, CLIENT_IP, NODE1.gateway());
    enslave_pod_veth(NODE1_NS, "vethcl").unwrap();
    for (i, (ns, addr)) in BACKENDS.iter().enumerate() {
        let veth = format!("vethb{i}");
        add_pod(NODE2_NS, &veth, ns, *addr, NODE2.gateway());
        enslave_pod_veth(NODE2_NS, &veth).unwrap();
        lab.servers.push(udp_echo(ns));
        lab.servers.push(tcp_name(ns));
    }
    lab
}

fn services() -> Vec<ServicePlan> {
    let plan = |port_name: &str, port, protocol, target| ServicePlan {
        namespace: "demo".into(),
        name: "web".into(),
        port_name: port_name.into(),
        cluster_ip: CLUSTER_IP,
        port,
        protocol,
        endpoints: BACKENDS
            .iter()
            .map(|(_, a)| SocketAddrV4::new(*a, target))
            .collect(),
    };
    vec![
        plan("echo", UDP_PORT, L4::Udp, ECHO_PORT),
        plan("http", TCP_PORT, L4::Tcp, HTTP_PORT),
    ]
}

/// One UDP request per source port from the client pod to ClusterIP:5353 (each tried up to
/// `attempts` times, waiting `wait` for the answer); returns who answered, per port. Stops
/// early after 10 unanswered ports in a row, so a broken path fails in seconds.
fn udp_requests(first_port: u16, count: u16, attempts: u32, wait: Duration) -> Vec<Option<String>> {
    in_netns(CLIENT_NS, move || {
        let mut answers = Vec::new();
        let mut misses_in_a_row = 0;
        for port in first_port..first_port + count {
            let sock = UdpSocket::bind(("0.0.0.0", port)).unwrap();
            sock.set_read_timeout(Some(wait)).unwrap();
            let mut buf = [0u8; 64];
            let mut answer = None;
            for _ in 0..attempts {
                sock.send_to(b"ping", (CLUSTER_IP, UDP_PORT)).unwrap();
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    answer = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
                    break;
                }
            }
            misses_in_a_row = if answer.is_some() {
                0
            } else {
                misses_in_a_row + 1
            };
            answers.push(answer);
            if misses_in_a_row == 10 {
                break;
            }
        }
        answers
    })
}

fn tcp_requests(count: usize) -> Vec<String> {
    in_netns(CLIENT_NS, move || {
        (0..count)
            .map(|_| {
                let to = SocketAddrV4::new(CLUSTER_IP, TCP_PORT).into();
                let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(3))
                    .expect("TCP connect to the ClusterIP");
                conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                let mut name = String::new();
                conn.read_to_string(&mut name).unwrap();
                name
            })
            .collect()
    })
}

fn tally<'a>(names: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut t = BTreeMap::new();
    for n in names {
        *t.entry(n.to_string()).or_default() += 1;
    }
    t
}

fn assert_no_kube_proxy_left() {
    let saved = sh(NODE1_NS, "iptables-save", &[]);
    assert!(!saved.contains("KUBE-"), "iptables-save:\n{saved}");
    let ruleset = sh(NODE1_NS, "nft", &["list", "ruleset"]);
    assert!(!ruleset.contains("kube-proxy"), "nft:\n{ruleset}");
    // Nothing else was in the namespace, so iptables-nft's emptied tables went too.
    assert!(ruleset.trim().is_empty(), "nft:\n{ruleset}");
}

/// Runs one mode: `first_port` keeps each mode's flows (and conntrack entries) apart.
fn exercise(mode: ProxyMode, first_port: u16) {
    let svcs = services();
    apply_kube_proxy(NODE1_NS, mode, CLUSTER_CIDR, &svcs).unwrap();
    // Applying again replaces rather than stacks.
    apply_kube_proxy(NODE1_NS, mode, CLUSTER_CIDR, &svcs).unwrap();
    match mode {
        ProxyMode::Iptables => {
            let saved = sh(NODE1_NS, "iptables-save", &["-t", "nat"]);
            let jumps = saved
                .lines()
                .filter(|l| l.starts_with("-A PREROUTING") && l.ends_with("-j KUBE-SERVICES"))
                .count();
            assert_eq!(jumps, 1, "{saved}");
            assert!(saved.contains("--probability 0.50000000000"), "{saved}");
        }
        ProxyMode::Nftables => {
            let table = sh(NODE1_NS, "nft", &["list", "table", "ip", "kube-proxy"]);
            assert!(table.contains("numgen random mod 2 vmap"), "{table}");
        }
    }

    let answers = udp_requests(first_port, REQUESTS, 3, Duration::from_secs(1));
    let answered: Vec<&str> = answers.iter().flatten().map(String::as_str).collect();
    let by_backend = tally(answered.iter().copied());
    eprintln!("{mode:?}: UDP answers by backend {by_backend:?}");
    assert_eq!(
        answered.len(),
        usize::from(REQUESTS),
        "{mode:?}: {by_backend:?}"
    );
    for (ns, _) in BACKENDS {
        assert!(
            by_backend.get(ns).copied().unwrap_or(0) > 20,
            "{mode:?}: {ns} barely answered: {by_backend:?}"
        );
    }
    let tcp = tcp_requests(20);
    let tcp_by_backend = tally(tcp.iter().map(String::as_str));
    eprintln!("{mode:?}: TCP answers by backend {tcp_by_backend:?}");
    assert_eq!(tcp.len(), 20);
    for (ns, _) in BACKENDS {
        assert!(
            tcp_by_backend.contains_key(ns),
            "{mode:?}: {tcp_by_backend:?}"
        );
    }

    remove_kube_proxy(NODE1_NS, mode).unwrap();
    remove_kube_proxy(NODE1_NS, mode).unwrap();
    assert_no_kube_proxy_left();
    // Without the rules nothing translates the ClusterIP: fresh flows go unanswered.
    let after = udp_requests(first_port + REQUESTS, 10, 1, Duration::from_millis(300));
    assert!(
        after.len() == 10 && after.iter().all(Option::is_none),
        "{mode:?}: answered without kube-proxy: {after:?}"
    );
}

#[test]
fn kube_proxy_and_flannel_carry_cluster_ip_traffic_in_both_modes() {
    const TEST: &str = "kernel_path";
    if !running_as_root() {
        skip_or_fail(TEST, "needs root (network namespaces, iptables, nft)");
        return;
    }
    let _lock = testkit::root::exclusive();
    let backend = iptables_backend().unwrap();
    eprintln!("iptables backend: {backend}");
    assert!(["nf_tables", "legacy"].contains(&backend.as_str()));
    let lab = build();
    for ns in [NODE1_NS, NODE2_NS] {
        assert_eq!(
            sh(ns, "cat", &["/proc/sys/net/ipv4/ip_forward"]).trim(),
            "1"
        );
    }
    // The underlay and Flannel alone: pod to pod across the nodes.
    let direct = in_netns(CLIENT_NS, || {
        let sock = UdpSocket::bind(("0.0.0.0", 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        sock.send_to(b"ping", (BACKENDS[0].1, ECHO_PORT)).unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = sock.recv_from(&mut buf).expect("pod to pod over flannel.1");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    assert_eq!(direct, BACKENDS[0].0);

    exercise(ProxyMode::Iptables, 20000);
    exercise(ProxyMode::Nftables, 30000);

    release_pod_veth(NODE1_NS, "vethcl").unwrap();
    let veth = sh(NODE1_NS, "ip", &["-o", "link", "show", "vethcl"]);
    assert!(!veth.contains("master"), "{veth}");

    for f in &lab.flannel {
        remove_flannel(f).unwrap();
        remove_flannel(f).unwrap();
        let links = sh(&f.netns, "ip", &["-o", "link", "show"]);
        assert!(
            !links.contains("flannel.1") && !links.contains("cni0:"),
            "{links}"
        );
        let routes = sh(&f.netns, "ip", &["route", "show"]);
        assert!(!routes.contains("10.244."), "{}: {routes}", f.netns);
        let fdb = sh(&f.netns, "bridge", &["fdb", "show"]);
        assert!(!fdb.contains("dst 192.168.77."), "{fdb}");
    }
    drop(lab);
    for ns in all_namespaces() {
        assert!(!std::path::Path::new(&format!("/run/netns/{ns}")).exists());
    }
}
