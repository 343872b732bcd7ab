//! `kxdp cleanup` (issue 19, item 1), in network namespaces of its own:
//! - after an agent killed with SIGKILL (so it undid nothing), the node's `ip -d link`,
//!   `ip route`, `ip neigh`, `nft list ruleset`, `iptables-save` and bpffs are back to what
//!   they were before the agent started, and a second run removes nothing and says so;
//!   while the agent runs, the cleanup refuses;
//! - `--kube-proxy --flannel` removes the chains, tables, devices and files kube-proxy and
//!   Flannel leave, and nothing unrelated beside them.
//!
//! Root only; skipped (with a message) otherwise, except under CI=true where it fails.
//! Every namespace, agent and file is removed on drop ([`Node`]), even when a check fails.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use testkit::netns::Uplink;
use testkit::wait::wait_for;

use super::support::{Node, ip_in};

const NODE_IP: &str = "192.168.86.1";
const UPLINK_MAC: &str = "02:86:00:00:00:01";
/// node2's InternalIP: on the uplink's segment, so the agent keeps a managed neighbour
/// entry for it (its underlay next hop), which the cleanup must remove.
const NODE2_IP: &str = "192.168.86.2";

fn root_test() -> Option<testkit::root::RootTestLock> {
    testkit::root::root_test("the cleanup test")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `tool args` in `ns`, its stdout ("" when the tool is not installed).
fn show(ns: &str, tool: &str, args: &[&str]) -> String {
    match std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .arg(tool)
        .args(args)
        .output()
    {
        Ok(out) => text(&out),
        Err(_) => String::new(),
    }
}

/// What the node looks like, as the issue's checks compare it. Normalised: comment lines
/// of iptables-save (they carry the time it ran) are left out, and packet counters
/// (iptables-save's `[N:M]`, nft's `counter packets N bytes M`) read as zero: the
/// namespace's own traffic (IPv6 autoconfiguration) moves them. Interface indexes need no
/// normalising: the links present before and after are the same links, and what the agent
/// created (kxdp-host, kxdp-dp) is gone, indexes and all.
fn snapshot(ns: &str) -> Vec<(&'static str, String)> {
    let iptables = show(ns, "iptables-save", &[])
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{}\n", zero_counters(l)))
        .collect();
    let nft: String = show(ns, "nft", &["list", "ruleset"])
        .lines()
        .map(|l| format!("{}\n", zero_counters(l)))
        .collect();
    vec![
        ("ip -d link", show(ns, "ip", &["-d", "link"])),
        ("ip route", show(ns, "ip", &["route"])),
        ("ip neigh", neighbours(ns)),
        ("nft list ruleset", nft),
        ("iptables-save", iptables),
        ("bpffs", bpffs()),
    ]
}

/// `line` with its packet and byte counters replaced by 0.
fn zero_counters(line: &str) -> String {
    let mut out = Vec::new();
    let mut after = "";
    for word in line.split(' ') {
        let zeroed = if matches!(after, "packets" | "bytes") && word.parse::<u64>().is_ok() {
            "0".to_string()
        } else if word.starts_with('[') && word.ends_with(']') && word.contains(':') {
            "[0:0]".to_string()
        } else {
            word.to_string()
        };
        after = word;
        out.push(zeroed);
    }
    out.join(" ")
}

/// `ip neigh show nud all` without IPv6 multicast entries (`ff0x::`, NOARP): the kernel
/// makes those itself as the interfaces join groups (solicited-node addresses after DAD,
/// MLD), seconds after the links came up, whatever runs on the node.
fn neighbours(ns: &str) -> String {
    show(ns, "ip", &["neigh", "show", "nud", "all"])
        .lines()
        .filter(|l| !l.starts_with("ff0"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Every entry under /sys/fs/bpf (shared by all namespaces: the agent pins nothing, and
/// the cleanup never touches bpffs, so this must not change).
fn bpffs() -> String {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            out.push(e.path().display().to_string());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/bpf"), &mut out);
    out.sort();
    out.join("\n")
}

/// The parts of two snapshots that differ, as "what: before -> after".
fn diff(a: &[(&str, String)], b: &[(&str, String)]) -> Vec<String> {
    a.iter()
        .zip(b)
        .filter(|((_, x), (_, y))| x != y)
        .map(|((what, x), (_, y))| format!("{what}:\n--- before\n{x}\n--- after\n{y}"))
        .collect()
}

fn cleanup(ns: &str, args: &[&str]) -> Output {
    std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .arg(env!("CARGO_BIN_EXE_kxdp"))
        .arg("cleanup")
        .args(args)
        .output()
        .expect("running kxdp cleanup")
}

fn node_ns(node: &mut Node) -> String {
    let ns = node.netns("node");
    Uplink {
        mac: UPLINK_MAC,
        addr: &format!("{NODE_IP}/24"),
        queues: 1,
        outside: None,
    }
    .add(&ns);
    ns
}

fn write_state(node: &Node) {
    let dir = node.state_dir();
    std::fs::write(dir.join("kxdp.yaml"), "vxlan: {port: 4789}\n").unwrap();
    let nodes = [
        testkit::manifests::node("node1", UPLINK_MAC, "10.244.1.0/24", NODE_IP),
        testkit::manifests::node("node2", "02:86:00:00:00:02", "10.244.2.0/24", NODE2_IP),
    ];
    std::fs::write(dir.join("cluster.yaml"), nodes.join("---\n")).unwrap();
}

#[test]
fn cleanup_after_a_killed_agent_restores_the_node_and_a_second_run_removes_nothing() {
    let Some(_lock) = root_test() else {
        return;
    };
    let mut node = Node::new("kxc", "dead");
    let ns = node_ns(&mut node);
    write_state(&node);
    // kxdp's CNI files as the agent and the DaemonSet install them, and another
    // network's configuration beside them, which must stay.
    let conf = node.dir.join("net.d");
    let bin = node.dir.join("bin");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    let kxdp_list = r#"{"cniVersion":"1.0.0","name":"kxdp","plugins":[{"type":"kxdp-cni"},{"type":"portmap"}]}"#;
    std::fs::write(conf.join("05-kxdp.conflist"), kxdp_list).unwrap();
    let other = r#"{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"bridge"}]}"#;
    std::fs::write(conf.join("20-other.conflist"), other).unwrap();
    std::fs::write(bin.join("kxdp-cni"), "#!/bin/true\n").unwrap();
    let socket = node.socket();
    let socket = socket.to_str().unwrap();
    let (conf_s, bin_s) = (conf.to_str().unwrap(), bin.to_str().unwrap());
    let args = [
        "--api-socket",
        socket,
        "--cni",
        "--cni-conf-dir",
        conf_s,
        "--cni-bin-dir",
        bin_s,
    ];

    let clean = snapshot(&ns);
    let lines = node.start_agent(&ns, &["--uplink", Uplink::NAME]);
    node.ready_line(&lines);
    wait_for(
        "the managed neighbour entry for node2",
        Duration::from_secs(10),
        || show(&ns, "ip", &["neigh", "show", NODE2_IP]).contains("managed"),
    );

    // A live agent: refused, nothing touched.
    let refused = cleanup(&ns, &args);
    assert!(!refused.status.success(), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("an agent answers on"), "{stderr}");
    assert!(show(&ns, "ip", &["link"]).contains("kxdp-host"));

    // SIGKILL: the agent undoes nothing.
    let mut agent = node.take_agent().expect("the agent");
    agent.kill().unwrap();
    agent.wait().unwrap();
    let dirty = snapshot(&ns);
    let left = diff(&clean, &dirty);
    assert!(!left.is_empty(), "a killed agent left nothing behind?");
    assert!(dirty[0].1.contains("kxdp-host"), "{left:?}");
    assert!(dirty[3].1.contains("table inet kxdp"), "{left:?}");
    assert!(Path::new(socket).exists());

    let first = cleanup(&ns, &args);
    let out = text(&first);
    eprintln!(
        "first run:\n{out}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(first.status.success(), "{first:?}");
    for expected in [
        "removed link kxdp-host",
        &format!(
            "removed managed neighbour entry {NODE2_IP} on {}",
            Uplink::NAME
        ),
        "removed nftables table inet kxdp",
        &format!("removed API socket {socket}"),
        "removed CNI configuration",
        "removed CNI plugin",
    ] {
        assert!(out.contains(expected), "{expected:?} not in:\n{out}");
    }
    let after = snapshot(&ns);
    let still = diff(&clean, &after);
    assert!(
        still.is_empty(),
        "left after cleanup:\n{}",
        still.join("\n")
    );
    assert!(!conf.join("05-kxdp.conflist").exists());
    assert!(conf.join("20-other.conflist").exists());
    assert!(!bin.join("kxdp-cni").exists());

    let second = cleanup(&ns, &args);
    assert!(second.status.success(), "{second:?}");
    assert_eq!(text(&second), "nothing to remove\n");
    assert!(diff(&clean, &snapshot(&ns)).is_empty());
}

/// Runs `tool` in `ns` with `input` on stdin, asserting success.
fn feed(ns: &str, tool: &str, args: &[&str], input: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .arg(tool)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{tool} {args:?}: {out:?}");
}

/// Chains of someone else, in both tables, with jumps from built-in chains: they stay.
/// Every built-in chain is declared: with iptables-nft a built-in chain exists only once
/// something names it, and kube-proxy's leftovers would otherwise leave empty ones behind
/// that were not there before (iptables-legacy always has them).
const UNRELATED_IPTABLES: &str = "*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:MINE-NAT - [0:0]
-A POSTROUTING -j MINE-NAT
-A MINE-NAT -d 10.9.0.0/16 -j RETURN
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:MINE-FWD - [0:0]
:KUBE-FIREWALL - [0:0]
-A FORWARD -j MINE-FWD
-A INPUT -j KUBE-FIREWALL
-A MINE-FWD -s 10.9.0.0/16 -j ACCEPT
COMMIT
";

/// What kube-proxy (iptables mode) and Flannel write, in the shape they write it.
const LEFTOVER_IPTABLES: &str = r#"*nat
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-NPX46M4PTMTKRN6Y - [0:0]
:KUBE-SEP-ABCDEFGHIJKLMNOP - [0:0]
:FLANNEL-POSTRTG - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment "default/kubernetes:https cluster IP" -m tcp --dport 443 -j KUBE-SVC-NPX46M4PTMTKRN6Y
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-SVC-NPX46M4PTMTKRN6Y -j KUBE-SEP-ABCDEFGHIJKLMNOP
-A KUBE-SEP-ABCDEFGHIJKLMNOP -p tcp -m tcp -j DNAT --to-destination 192.168.87.10:6443
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -j MASQUERADE
-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.0.0/16 -j RETURN
COMMIT
*filter
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:FLANNEL-FWD - [0:0]
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A FLANNEL-FWD -s 10.244.0.0/16 -j ACCEPT
COMMIT
"#;

#[test]
fn cleanup_kube_proxy_and_flannel_removes_exactly_their_leftovers() {
    let Some(_lock) = root_test() else {
        return;
    };
    let mut node = Node::new("kxc", "kpf");
    let ns = node_ns(&mut node);
    let has_iptables = !show(&ns, "sh", &["-c", "command -v iptables-restore"]).is_empty();

    // Someone else's: a chain in each table (and kubelet's KUBE-FIREWALL), an nftables
    // table, a device, a CNI configuration.
    if has_iptables {
        feed(&ns, "iptables-restore", &["--noflush"], UNRELATED_IPTABLES);
    }
    feed(
        &ns,
        "nft",
        &["-f", "-"],
        "table ip mine {\n  chain c {\n  }\n}\n",
    );
    // veth pairs rather than dummy devices: this kernel may lack the dummy module.
    ip_in(
        &ns,
        &[
            "link", "add", "mine0", "type", "veth", "peer", "name", "mine1",
        ],
    );
    let conf = node.dir.join("net.d");
    let run = node.dir.join("run-flannel");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(&run).unwrap();
    let other = r#"{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"bridge"}]}"#;
    std::fs::write(conf.join("20-other.conflist"), other).unwrap();
    let before = snapshot(&ns);

    // kube-proxy's and Flannel's.
    if has_iptables {
        feed(&ns, "iptables-restore", &["--noflush"], LEFTOVER_IPTABLES);
    } else {
        eprintln!("iptables-restore is not installed: the iptables part is not exercised");
    }
    feed(
        &ns,
        "nft",
        &["-f", "-"],
        "table ip kube-proxy {\n  chain services {\n  }\n}\ntable ip6 kube-proxy {\n  chain services {\n  }\n}\n",
    );
    ip_in(
        &ns,
        &[
            "link",
            "add",
            "flannel.1",
            "type",
            "vxlan",
            "id",
            "1",
            "dstport",
            "8472",
            "dev",
            Uplink::NAME,
            "nolearning",
        ],
    );
    ip_in(&ns, &["link", "add", "cni0", "type", "bridge"]);
    ip_in(
        &ns,
        &[
            "link",
            "add",
            "kube-ipvs0",
            "type",
            "veth",
            "peer",
            "name",
            "kipvs-peer",
        ],
    );
    ip_in(&ns, &["addr", "add", "10.244.1.1/24", "dev", "cni0"]);
    ip_in(&ns, &["link", "set", "cni0", "up"]);
    std::fs::write(run.join("subnet.env"), "FLANNEL_NETWORK=10.244.0.0/16\n").unwrap();
    let flannel_list = r#"{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}},{"type":"portmap","capabilities":{"portMappings":true}}]}"#;
    std::fs::write(conf.join("10-flannel.conflist"), flannel_list).unwrap();
    assert!(!diff(&before, &snapshot(&ns)).is_empty());

    let socket = node.socket();
    let args = [
        "--api-socket",
        socket.to_str().unwrap(),
        "--kube-proxy",
        "--flannel",
        "--cni-conf-dir",
        conf.to_str().unwrap(),
        "--flannel-run-dir",
        run.to_str().unwrap(),
    ];
    let first = cleanup(&ns, &args);
    let out = text(&first);
    eprintln!(
        "first run:\n{out}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(first.status.success(), "{first:?}");
    let mut expected = vec![
        "removed nftables table ip kube-proxy".to_string(),
        "removed nftables table ip6 kube-proxy".to_string(),
        "removed link kube-ipvs0".to_string(),
        "removed link flannel.1".to_string(),
        "removed link cni0".to_string(),
        format!(
            "removed Flannel's subnet file {}",
            run.join("subnet.env").display()
        ),
        format!(
            "removed CNI configuration {}",
            conf.join("10-flannel.conflist").display()
        ),
    ];
    if has_iptables {
        expected.push("removed iptables nat chain KUBE-SERVICES".to_string());
        expected.push("removed iptables filter chain KUBE-PROXY-FIREWALL".to_string());
        expected.push("removed iptables nat chain FLANNEL-POSTRTG".to_string());
        expected.push("removed iptables filter chain FLANNEL-FWD".to_string());
    }
    for line in &expected {
        assert!(out.contains(line.as_str()), "{line:?} not in:\n{out}");
    }
    let still = diff(&before, &snapshot(&ns));
    assert!(
        still.is_empty(),
        "differs after cleanup:\n{}",
        still.join("\n")
    );
    assert!(conf.join("20-other.conflist").exists());

    let second = cleanup(&ns, &args);
    assert!(second.status.success(), "{second:?}");
    assert_eq!(text(&second), "nothing to remove\n");
}

/// The newest `file` built for package `package` (target/<profile>/build/<package>-*/out),
/// beside this test's binary: the BPF objects are built there by their crates' build
/// scripts, which this test binary depends on.
fn built_object(package: &str, file: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let build = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from target/<profile>/deps")
        .join("build");
    let prefix = format!("{package}-");
    let newest = std::fs::read_dir(&build)
        .expect("target/<profile>/build")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path().join("out").join(file))
        .filter(|p| p.is_file())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok());
    newest.unwrap_or_else(|| panic!("{file} of {package} is not built under {build:?}"))
}

/// A program attached through netlink (IFLA_XDP, as aya does on kernels without XDP
/// links) outlives its loader: `ip` loads the object, attaches its first `xdp` program
/// and exits. Its name is what marks it as kxdp's.
fn attach_with_ip(ns: &str, dev: &str, object: &Path) {
    ip_in(
        ns,
        &[
            "link",
            "set",
            "dev",
            dev,
            "xdpgeneric",
            "obj",
            object.to_str().unwrap(),
            "sec",
            "xdp",
        ],
    );
}

#[test]
fn cleanup_detaches_kxdp_xdp_programs_and_no_other() {
    let Some(_lock) = root_test() else {
        return;
    };
    let mut node = Node::new("kxc", "xdp");
    let ns = node.netns("node");
    ip_in(
        &ns,
        &["link", "add", "x0", "type", "veth", "peer", "name", "x1"],
    );
    // kxdp's object: its first program is xdp_uplink. The rig's generator object: its
    // first is kxdp_gen, not one of the agent's, so it stays.
    attach_with_ip(&ns, "x0", &built_object("xdp-redirect", "redirect.bpf.o"));
    attach_with_ip(&ns, "x1", &built_object("rig", "pktgen.bpf.o"));
    let links = show(&ns, "ip", &["-d", "link"]);
    assert!(links.contains("name xdp_uplink"), "{links}");
    assert!(links.contains("name kxdp_gen"), "{links}");

    let socket = node.socket();
    let args = ["--api-socket", socket.to_str().unwrap()];
    let first = cleanup(&ns, &args);
    let out = text(&first);
    assert!(first.status.success(), "{first:?}");
    assert!(out.contains("removed XDP program xdp_uplink"), "{out}");
    assert!(out.ends_with("from x0\n"), "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    let links = show(&ns, "ip", &["-d", "link"]);
    assert!(!links.contains("name xdp_uplink"), "{links}");
    assert!(links.contains("name kxdp_gen"), "{links}");

    let second = cleanup(&ns, &args);
    assert_eq!(text(&second), "nothing to remove\n", "{second:?}");
}
