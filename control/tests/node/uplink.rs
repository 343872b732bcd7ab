//! The uplink and its MTU found without flags (issue 17, item 3): `kxdp agent` with no
//! `--uplink` and no `underlayMTU` runs on the interface holding its Node's InternalIP and
//! gives pods that interface's MTU less the VXLAN overhead; a `nodes:` entry of kxdp.yaml
//! matching the Node's labels names another one; a node whose uplink cannot be found stays
//! unready, `/readyz` saying what is missing, until it can be; a bond holding the address is
//! refused with the reason.
//!
//! Root only; skipped (with a message) otherwise, except under CI=true where it fails.

use std::time::Duration;

use testkit::netns::Uplink;
use testkit::wait::wait_for;

use super::support::{Node, ip_in, read};

const NODE_IP: &str = "192.168.82.1";
const UPLINK_MAC: &str = "02:82:00:00:00:01";
/// Not 1500: a pod MTU of 1350 shows the uplink's MTU was read.
const UPLINK_MTU: &str = "1400";
/// Where the agent serves /readyz in the node namespace (its default metrics address).
const METRICS: &str = "127.0.0.1:10249";

/// kxdp.yaml without uplink or underlayMTU, plus `extra`; and node1 labelled rack=r7.
fn write_state(node: &Node, extra: &str) {
    let dir = node.state_dir();
    std::fs::write(
        dir.join("kxdp.yaml"),
        format!("vxlan: {{port: 4789}}\n{extra}"),
    )
    .unwrap();
    let manifest = testkit::manifests::node("node1", UPLINK_MAC, "10.244.1.0/24", NODE_IP)
        .replace("  annotations:", "  labels: {rack: r7}\n  annotations:");
    std::fs::write(dir.join("cluster.yaml"), manifest).unwrap();
}

/// A node namespace whose uplink `up0` (a veth, MTU 1400) holds `address` (None: no
/// address yet).
fn node_ns(node: &mut Node, address: Option<&str>) -> String {
    let ns = node.netns("node");
    ip_in(
        &ns,
        &[
            "link",
            "add",
            Uplink::NAME,
            "address",
            UPLINK_MAC,
            "mtu",
            UPLINK_MTU,
            "type",
            "veth",
            "peer",
            "name",
            Uplink::PEER,
        ],
    );
    ip_in(&ns, &["link", "set", Uplink::NAME, "up"]);
    ip_in(&ns, &["link", "set", Uplink::PEER, "up"]);
    if let Some(a) = address {
        ip_in(
            &ns,
            &["addr", "add", &format!("{a}/24"), "dev", Uplink::NAME],
        );
    }
    ns
}

/// `/readyz` in `ns`, or (0, "") while nothing listens there yet.
fn readyz(ns: &str) -> (u16, String) {
    let listening = testkit::netns::in_netns(ns, || {
        let addr = METRICS.parse().unwrap();
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
    });
    if !listening {
        return (0, String::new());
    }
    let reply = testkit::http::http(ns, "GET", METRICS, "/readyz");
    (reply.status, reply.body)
}

fn root_test() -> Option<testkit::root::RootTestLock> {
    testkit::root::root_test("the uplink discovery test")
}

#[test]
fn the_uplink_is_the_interface_holding_the_internal_ip_unless_kxdp_yaml_names_one() {
    let Some(_lock) = root_test() else {
        return;
    };
    let mut node = Node::new("kxu", "found");
    let ns = node_ns(&mut node, Some(NODE_IP));
    // A second interface, with an address of its own, for the nodes: entry to name.
    ip_in(
        &ns,
        &[
            "link", "add", "up1", "type", "veth", "peer", "name", "up1peer",
        ],
    );
    ip_in(&ns, &["addr", "add", "192.168.83.1/24", "dev", "up1"]);
    ip_in(&ns, &["link", "set", "up1", "up"]);

    write_state(&node, "");
    let lines = node.start_agent(&ns, &[]);
    let ready = node.ready_line(&lines);
    assert!(ready.starts_with("kxdp agent ready node=node1 "), "{ready}");
    let s = node.status();
    assert_eq!(
        (s.uplink.as_str(), s.uplink_found_by.as_str(), s.pod_mtu),
        (
            Uplink::NAME,
            "holds the Node's InternalIP 192.168.82.1",
            1350
        ),
        "{}",
        read(&node.log())
    );
    node.stop_agent();

    // First match wins: the name entry does not match node1, the label entry does.
    write_state(
        &node,
        "nodes:\n  - name: node9\n    uplink: up9\n  - matchLabels: {rack: r7}\n    uplink: up1\n",
    );
    let lines = node.start_agent(&ns, &[]);
    node.ready_line(&lines);
    let s = node.status();
    assert_eq!(
        (s.uplink.as_str(), s.uplink_found_by.as_str(), s.pod_mtu),
        ("up1", "kxdp.yaml nodes[1]", 1450),
        "{}",
        read(&node.log())
    );
    node.stop_agent();
}

#[test]
fn a_node_without_its_uplink_stays_unready_and_says_why_until_it_has_one() {
    let Some(_lock) = root_test() else {
        return;
    };
    let mut node = Node::new("kxu", "wait");
    let ns = node_ns(&mut node, None);
    write_state(&node, "");
    let lines = node.start_agent(&ns, &[]);
    let expected = "not ready: no uplink: no interface holds the Node's InternalIP \
                    (192.168.82.1) and there is no IPv4 default route; name it with --uplink \
                    or `uplink:` in kxdp.yaml\n";
    wait_for(
        "/readyz saying what is missing",
        Duration::from_secs(10),
        || readyz(&ns) == (503, expected.to_string()),
    );
    assert!(read(&node.log()).contains("not ready: no uplink"));
    // The address arrives (DHCP, a late script): the agent finds the uplink and starts.
    ip_in(
        &ns,
        &["addr", "add", &format!("{NODE_IP}/24"), "dev", Uplink::NAME],
    );
    let ready = node.ready_line(&lines);
    assert!(ready.starts_with("kxdp agent ready node=node1 "), "{ready}");
    assert_eq!(readyz(&ns).0, 200);
    assert_eq!(node.status().uplink, Uplink::NAME);
    node.stop_agent();
}

/// A bond, a VLAN device or a bridge holding the InternalIP is refused, naming the device
/// and why; the agent waits unready and stops cleanly. The kernel must have the driver: a
/// kind it lacks is said on stdout and skipped (this machine's kernel has no bonding and no
/// 802.1Q module); the bridge, which every kernel here has, is always checked.
#[test]
fn bonds_vlans_and_bridges_holding_the_internal_ip_are_refused_with_the_reason() {
    let Some(_lock) = root_test() else {
        return;
    };
    let mut node = Node::new("kxu", "kind");
    let ns = node_ns(&mut node, None);
    write_state(&node, "");
    let kinds: [(&str, &str, &[&str]); 3] = [
        ("bond", "kxbond0", &["type", "bond"]),
        (
            "vlan",
            "up0.100",
            &["link", Uplink::NAME, "type", "vlan", "id", "100"],
        ),
        ("bridge", "kxbr0", &["type", "bridge"]),
    ];
    let mut checked = Vec::new();
    for (kind, dev, how) in kinds {
        let mut add = vec!["link", "add", "name", dev];
        add.extend_from_slice(how);
        let made = super::support::nsenter(&ns, "ip", &add);
        if !made.status.success() {
            let why = String::from_utf8_lossy(&made.stderr);
            assert!(
                kind != "bridge" && why.contains("Unknown device type"),
                "ip link add {kind}: {why}"
            );
            testkit::root::skipped(
                &format!("uplink refusal of a {kind} device"),
                &format!(
                    "the kernel has no {kind} driver ({}); the bridge's refusal is checked",
                    why.trim()
                ),
            );
            continue;
        }
        ip_in(&ns, &["addr", "add", &format!("{NODE_IP}/24"), "dev", dev]);
        ip_in(&ns, &["link", "set", dev, "up"]);
        let lines = node.start_agent(&ns, &[]);
        let refusal = format!(
            "uplink {dev} (holds the Node's InternalIP {NODE_IP}) is a {kind} device, which \
             kxdp does not serve"
        );
        wait_for(
            &format!("/readyz refusing the {kind}"),
            Duration::from_secs(10),
            || {
                let (code, body) = readyz(&ns);
                code == 503 && body.contains(&refusal)
            },
        );
        assert!(
            lines.try_recv().is_err(),
            "an agent on a {kind} said it was ready"
        );
        // Stopping while it waits exits 0 and leaves nothing attached.
        node.stop_agent();
        let shown = super::support::nsenter(&ns, "ip", &["-d", "link", "show", "dev", dev]);
        assert!(!String::from_utf8_lossy(&shown.stdout).contains("prog/xdp"));
        ip_in(&ns, &["link", "del", dev]);
        checked.push(kind);
    }
    println!("refused with the reason: {}", checked.join(", "));
}
