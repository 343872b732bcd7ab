//! kxdp-cni end to end: the built binary, run as a runtime would run it (inside the node's
//! network namespace, `CNI_*` in the environment, the configuration on stdin), against real
//! namespaces, real veths, the real host-local IPAM plugin and a fake agent serving the
//! agent_api socket from a thread of this test.
//!
//! Needs root (namespaces) and containernetworking-plugins (/usr/lib/cni/host-local); skips
//! with a message without them, unless CI=true, where it fails instead.

use std::collections::HashSet;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;

use agent_api::record::host_veth_name;
use agent_api::{AgentStatus, Request};
use serde_json::{Value, json};
use testkit::TempDir;
use testkit::netns::{Netns, Uplink};

mod support;
use support::{FakeAgent, Pod, Runtime, config, host_local};

const HOST_LOCAL: &str = "/usr/lib/cni/host-local";
const GATEWAY_MAC: &str = "0a:58:0a:f4:01:01";

/// Whether this machine can run the test; panics instead of skipping under CI=true.
fn can_run(test: &str) -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    let why = if uid != 0 {
        "needs root for network namespaces"
    } else if !Path::new(HOST_LOCAL).is_file() {
        "needs /usr/lib/cni/host-local (scripts/install-deps.sh installs containernetworking-plugins)"
    } else {
        return true;
    };
    assert!(!ci, "{test}: {why} (CI=true: not skipping)");
    testkit::root::skipped(test, why);
    false
}

/// What the names of these tests' networks start with.
fn prefix() -> String {
    format!("kcni-{}", std::process::id())
}

fn kxp_prefix() -> String {
    format!("kxp{}", std::process::id())
}

/// The namespaces of these tests are `kcni-...`, with IPv6 on: kxdp-cni gives a pod the
/// addresses of every family its PodCIDRs have, and the dual-stack test checks them.
fn netns(tag: &str) -> Netns {
    Netns::with_ipv6("kcni", tag)
}

/// What these tests read of a namespace's links: `ip -j` output, parsed.
trait Links {
    fn ip_json(&self, args: &[&str]) -> Value;

    /// Every link (`ip -d -j link show`).
    fn links(&self) -> Vec<Value> {
        match self.ip_json(&["-d", "link", "show"]) {
            Value::Array(links) => links,
            other => panic!("ip -j link show: {other}"),
        }
    }

    /// The link called `name`, if any.
    fn link(&self, name: &str) -> Option<Value> {
        self.links().into_iter().find(|l| l["ifname"] == name)
    }

    /// Names of the veths in this namespace.
    fn veths(&self) -> HashSet<String> {
        let links = self.ip_json(&["-d", "link", "show", "type", "veth"]);
        links
            .as_array()
            .expect("link list")
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(str::to_string))
            .collect()
    }
}

impl Links for Netns {
    fn ip_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let text = self.ip(&full);
        if text.trim().is_empty() {
            json!([])
        } else {
            serde_json::from_str(&text).expect("ip -j output")
        }
    }
}

/// Whether host-local holds a reservation for `ip` in `network`.
fn reserved(dir: &Path, network: &str, ip: &str) -> bool {
    dir.join("ipam").join(network).join(ip).exists()
}

/// Every property the contract asks of one attachment, checked from outside the plugin.
fn assert_attachment(node: &Netns, pod: &Netns, veth: &str, ip: &str, pod_mac: &str) {
    let host = node
        .link(veth)
        .unwrap_or_else(|| panic!("host veth {veth} missing"));
    assert_eq!(host["linkinfo"]["info_kind"], "veth");
    assert_eq!(host["address"], GATEWAY_MAC);
    assert_eq!(host["mtu"], 1450);
    assert_eq!(
        (
            host["num_tx_queues"].as_u64(),
            host["num_rx_queues"].as_u64()
        ),
        (Some(2), Some(2))
    );
    assert!(
        host["flags"].as_array().unwrap().contains(&json!("UP")),
        "{host}"
    );

    let eth0 = pod.link("eth0").expect("eth0 in the pod");
    assert_eq!(eth0["address"], pod_mac);
    assert_eq!(eth0["mtu"], 1450);
    assert_eq!(
        (
            eth0["num_tx_queues"].as_u64(),
            eth0["num_rx_queues"].as_u64()
        ),
        (Some(2), Some(2))
    );
    assert!(
        eth0["flags"].as_array().unwrap().contains(&json!("UP")),
        "{eth0}"
    );
    let lo = pod.link("lo").unwrap();
    assert!(lo["flags"].as_array().unwrap().contains(&json!("UP")));

    let addrs = pod.ip_json(&["addr", "show", "dev", "eth0"]);
    let v4: Vec<(String, u64)> = addrs[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == "inet")
        .map(|a| {
            (
                a["local"].as_str().unwrap().to_string(),
                a["prefixlen"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(v4, vec![(ip.to_string(), 24)]);
    let routes = pod.ip_json(&["-4", "route", "show", "default"]);
    assert_eq!(routes.as_array().unwrap().len(), 1, "{routes}");
    assert_eq!(routes[0]["gateway"], "10.244.1.1");
    assert_eq!(routes[0]["dev"], "eth0");
    let features = pod.exec("ethtool", &["-k", "eth0"]);
    assert!(
        features.lines().any(|l| l.trim() == "tx-checksumming: off"),
        "{features}"
    );

    let host_routes = node.ip_json(&["-4", "route", "show", ip]);
    assert_eq!(host_routes.as_array().unwrap().len(), 1, "{host_routes}");
    assert_eq!(host_routes[0]["dst"], ip);
    assert_eq!(host_routes[0]["dev"], veth);
    let neigh = node.ip_json(&["neigh", "show", "dev", veth]);
    let entry = neigh
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["dst"] == ip)
        .unwrap_or_else(|| panic!("no neighbour {ip} on {veth}: {neigh}"));
    assert_eq!(entry["lladdr"], pod_mac);
    assert_eq!(entry["state"], json!(["PERMANENT"]));
}

fn add_port_names(calls: &[Request]) -> Vec<(String, String, String, Vec<IpAddr>)> {
    calls
        .iter()
        .filter_map(|c| match c {
            Request::AddPort {
                port,
                ifname,
                container_id,
                ips,
            } => Some((
                port.clone(),
                ifname.clone(),
                container_id.clone(),
                ips.clone(),
            )),
            _ => None,
        })
        .collect()
}

fn del_ports(calls: &[Request]) -> Vec<String> {
    calls
        .iter()
        .filter_map(|c| match c {
            Request::DelPort { port, .. } => Some(port.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn add_check_gc_del() {
    if !can_run("add_check_gc_del") {
        return;
    }
    let p = prefix();
    let dir = TempDir::new("life");
    let node = netns("node");
    let pod1_ns = netns("pod1");
    let pod2_ns = netns("pod2");
    let agent = FakeAgent::start(dir.path(), &node);
    let rt = Runtime { node: &node };
    let network = format!("{p}-net");
    let ipam = host_local(dir.path(), json!({"subnet": "10.244.1.0/24"}));
    let conf10 = config("1.0.0", &network, dir.path(), &agent.socket, ipam.clone());
    let conf11 = config("1.1.0", &network, dir.path(), &agent.socket, ipam);
    let pod1 = Pod {
        name: "web-0",
        netns_path: pod1_ns.path(),
    };
    let pod2 = Pod {
        name: "web-1",
        netns_path: pod2_ns.path(),
    };
    let (c1, c2) = ("kcni-ctr-1", "kcni-ctr-2");
    let veth1 = host_veth_name(c1, "eth0");
    let veth2 = host_veth_name(c2, "eth0");

    // VERSION.
    let v = rt
        .run(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.0.0"}"#)
        .expect_ok()
        .json();
    assert_eq!(
        v,
        json!({"cniVersion":"1.0.0","supportedVersions":["1.0.0","1.1.0"]})
    );

    // STATUS (spec 1.1.0): ready with the agent up, code 50 without it; a 1.0.0 config has
    // no STATUS.
    let status_env = [("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/usr/lib/cni")];
    let run = rt.run(&status_env, &conf11.to_string()).expect_ok();
    assert_eq!(run.stdout, "");
    let mut no_agent11 = conf11.clone();
    no_agent11["agentSocket"] = json!(dir.path().join("no-agent.sock"));
    assert_eq!(
        rt.run(&status_env, &no_agent11.to_string()).error_code(),
        50
    );
    assert_eq!(rt.run(&status_env, &conf10.to_string()).error_code(), 1);
    agent.take_calls();

    // ADD pod1 (spec 1.0.0).
    let result = rt.attachment("ADD", c1, &pod1, &conf10).expect_ok().json();
    assert_eq!(
        result,
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": veth1, "mac": GATEWAY_MAC},
                {"name": "eth0", "mac": "0a:58:0a:f4:01:02", "sandbox": pod1.netns_path},
            ],
            "ips": [{"address": "10.244.1.2/24", "gateway": "10.244.1.1", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}],
            "dns": {},
        })
    );
    assert!(veth1.starts_with("kx") && veth1.len() == 13, "{veth1}");
    assert_attachment(&node, &pod1_ns, &veth1, "10.244.1.2", "0a:58:0a:f4:01:02");
    let calls = agent.take_calls();
    assert_eq!(calls.first(), Some(&Request::Status));
    assert_eq!(
        add_port_names(&calls),
        vec![(
            "pod-demo-web-0".to_string(),
            veth1.clone(),
            c1.to_string(),
            vec!["10.244.1.2".parse().unwrap()]
        )]
    );
    assert_eq!(*agent.veth_seen_at_add.lock().unwrap(), vec![true]);
    assert!(reserved(dir.path(), &network, "10.244.1.2"));

    // CHECK with the ADD result: fine, and the agent was asked about the port.
    let mut check = conf10.clone();
    check["prevResult"] = result.clone();
    let run = rt.attachment("CHECK", c1, &pod1, &check).expect_ok();
    assert_eq!(run.stdout, "");
    assert!(agent.take_calls().contains(&Request::CheckPort {
        port: "pod-demo-web-0".into(),
        container_id: c1.into()
    }));
    // CHECK notices a changed MTU...
    pod1_ns.ip(&["link", "set", "dev", "eth0", "mtu", "1400"]);
    assert_eq!(rt.attachment("CHECK", c1, &pod1, &check).error_code(), 103);
    pod1_ns.ip(&["link", "set", "dev", "eth0", "mtu", "1450"]);
    // ... a lost neighbour entry ...
    node.ip(&["neigh", "del", "10.244.1.2", "dev", &veth1]);
    assert_eq!(rt.attachment("CHECK", c1, &pod1, &check).error_code(), 103);
    node.ip(&[
        "neigh",
        "replace",
        "10.244.1.2",
        "lladdr",
        "0a:58:0a:f4:01:02",
        "nud",
        "permanent",
        "dev",
        &veth1,
    ]);
    rt.attachment("CHECK", c1, &pod1, &check).expect_ok();
    // ... and a container that is gone.
    let gone = Pod {
        name: "web-0",
        netns_path: format!("/run/netns/{p}-nothere"),
    };
    assert_eq!(rt.attachment("CHECK", c1, &gone, &check).error_code(), 3);

    // ADD again for the same attachment: refused, and the live one keeps its address.
    assert_eq!(rt.attachment("ADD", c1, &pod1, &conf10).error_code(), 105);
    assert!(reserved(dir.path(), &network, "10.244.1.2"));
    assert_attachment(&node, &pod1_ns, &veth1, "10.244.1.2", "0a:58:0a:f4:01:02");

    // ADD pod2 (spec 1.1.0: interface MTUs in the result; host-local 1.1 only speaks 1.0.0,
    // so it gets the configuration as 1.0.0).
    let result2 = rt.attachment("ADD", c2, &pod2, &conf11).expect_ok().json();
    assert_eq!(result2["cniVersion"], "1.1.0");
    assert_eq!(
        result2["interfaces"][0],
        json!({"name": veth2, "mac": GATEWAY_MAC, "mtu": 1450})
    );
    assert_eq!(
        result2["interfaces"][1],
        json!({"name": "eth0", "mac": "0a:58:0a:f4:01:03", "mtu": 1450, "sandbox": pod2.netns_path})
    );
    assert_attachment(&node, &pod2_ns, &veth2, "10.244.1.3", "0a:58:0a:f4:01:03");
    agent.take_calls();

    // GC keeping only pod1. A stray veth of ours without a record goes too; a veth with a
    // name that is not ours (the agent's kxdp-host) stays.
    node.ip(&[
        "link",
        "add",
        "kx00000000001",
        "type",
        "veth",
        "peer",
        "name",
        "kcni-stray-p",
    ]);
    node.ip(&[
        "link",
        "add",
        "kxdp-host",
        "type",
        "veth",
        "peer",
        "name",
        "kxdp-dp",
    ]);
    let mut gc = conf11.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": c1, "ifname": "eth0"}]);
    let run = rt
        .run(
            &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")],
            &gc.to_string(),
        )
        .expect_ok();
    assert_eq!(run.stdout, "");
    let veths = node.veths();
    assert!(veths.contains(&veth1), "{veths:?}");
    assert!(!veths.contains(&veth2), "{veths:?}");
    assert!(!veths.contains("kx00000000001"), "{veths:?}");
    assert!(veths.contains("kxdp-host"), "{veths:?}");
    assert!(pod2_ns.link("eth0").is_none());
    assert!(
        !reserved(dir.path(), &network, "10.244.1.3"),
        "GC released pod2's address"
    );
    assert!(reserved(dir.path(), &network, "10.244.1.2"));
    assert_eq!(
        del_ports(&agent.take_calls()),
        vec!["pod-demo-web-1".to_string()]
    );
    assert!(
        !dir.path()
            .join("state")
            .join(&network)
            .join(format!("{veth2}.json"))
            .exists()
    );
    assert!(
        dir.path()
            .join("state")
            .join(&network)
            .join(format!("{veth1}.json"))
            .exists()
    );
    assert_attachment(&node, &pod1_ns, &veth1, "10.244.1.2", "0a:58:0a:f4:01:02");
    node.ip(&["link", "del", "kxdp-host"]);

    // DEL pod1, twice.
    for round in 0..2 {
        let run = rt.attachment("DEL", c1, &pod1, &conf10);
        assert!(run.ok, "DEL round {round}: {} {}", run.stdout, run.stderr);
        assert_eq!(run.stdout, "");
        assert!(node.link(&veth1).is_none());
        assert!(pod1_ns.link("eth0").is_none());
        assert!(!reserved(dir.path(), &network, "10.244.1.2"));
    }
    assert_eq!(
        del_ports(&agent.take_calls()),
        vec!["pod-demo-web-0".to_string(), "pod-demo-web-0".to_string()]
    );
    assert!(
        !dir.path()
            .join("state")
            .join(&network)
            .join(format!("{veth1}.json"))
            .exists()
    );

    // DEL after the runtime already removed the netns (taking the veth pair with it), with
    // the agent unreachable: still a success, the address released, the agent's absence on
    // stderr.
    rt.attachment("ADD", c2, &pod2, &conf10).expect_ok();
    assert!(reserved(dir.path(), &network, "10.244.1.4"));
    drop(pod2_ns);
    let mut no_agent = conf10.clone();
    no_agent["agentSocket"] = json!(dir.path().join("no-agent.sock"));
    let run = rt.attachment("DEL", c2, &pod2, &no_agent);
    assert!(run.ok, "{} {}", run.stdout, run.stderr);
    assert!(run.stderr.contains("not answering"), "{}", run.stderr);
    assert!(!reserved(dir.path(), &network, "10.244.1.4"));
    assert!(node.link(&veth2).is_none());
    assert!(node.veths().is_empty(), "{:?}", node.veths());
}

#[test]
fn failures_leave_nothing_behind() {
    if !can_run("failures_leave_nothing_behind") {
        return;
    }
    let p = prefix();
    let dir = TempDir::new("fail");
    let node = netns("fnode");
    let pod_ns = netns("fpod");
    let agent = FakeAgent::start(dir.path(), &node);
    let rt = Runtime { node: &node };
    let network = format!("{p}-fnet");
    // One address in the range: a second ADD succeeds only if the first one's was released.
    let ipam = host_local(
        dir.path(),
        json!({"subnet": "10.244.1.0/24", "rangeStart": "10.244.1.50", "rangeEnd": "10.244.1.50"}),
    );
    let conf = config("1.0.0", &network, dir.path(), &agent.socket, ipam);
    let pod = Pod {
        name: "client",
        netns_path: pod_ns.path(),
    };
    let c = "kcni-ctr-f";
    let veth = host_veth_name(c, "eth0");
    let records = dir.path().join("state").join(&network);
    let nothing_left = |what: &str| {
        assert!(node.veths().is_empty(), "{what}: {:?}", node.veths());
        assert!(
            pod_ns.link("eth0").is_none(),
            "{what}: eth0 left in the pod"
        );
        assert!(
            !reserved(dir.path(), &network, "10.244.1.50"),
            "{what}: address kept"
        );
        let left = std::fs::read_dir(&records).map(|d| d.count()).unwrap_or(0);
        assert_eq!(left, 0, "{what}: records left");
    };

    // The agent refuses the port: error JSON, everything undone, the port closed again.
    agent.refuse_add.store(true, Ordering::SeqCst);
    let run = rt.attachment("ADD", c, &pod, &conf);
    assert_eq!(run.error_code(), 101, "{}", run.stdout);
    assert!(
        run.json()["details"]
            .as_str()
            .unwrap()
            .contains("refused by the test")
    );
    nothing_left("agent refused");
    let calls = agent.take_calls();
    assert_eq!(add_port_names(&calls).len(), 1);
    assert_eq!(del_ports(&calls), vec!["pod-demo-client".to_string()]);

    // Now it accepts: the same (only) address.
    agent.refuse_add.store(false, Ordering::SeqCst);
    let result = rt.attachment("ADD", c, &pod, &conf).expect_ok().json();
    assert_eq!(result["ips"][0]["address"], "10.244.1.50/24");
    assert_attachment(&node, &pod_ns, &veth, "10.244.1.50", "0a:58:0a:f4:01:32");
    rt.attachment("DEL", c, &pod, &conf).expect_ok();
    nothing_left("DEL");

    // The agent is not there: try again later, nothing done.
    let mut no_agent = conf.clone();
    no_agent["agentSocket"] = json!(dir.path().join("no-agent.sock"));
    assert_eq!(rt.attachment("ADD", c, &pod, &no_agent).error_code(), 11);
    nothing_left("agent unreachable");

    // IPAM runs out of addresses (the only one is taken by another container): its error
    // is passed on and the veth never made.
    rt.attachment("ADD", c, &pod, &conf).expect_ok();
    let other_ns = netns("fpod2");
    let other = Pod {
        name: "other",
        netns_path: other_ns.path(),
    };
    let run = rt.attachment("ADD", "kcni-ctr-g", &other, &conf);
    let code = run.error_code();
    assert!(code != 0 && code != 101, "{}", run.stdout);
    assert!(other_ns.link("eth0").is_none());
    assert!(node.link(&host_veth_name("kcni-ctr-g", "eth0")).is_none());
    assert!(
        reserved(dir.path(), &network, "10.244.1.50"),
        "the live pod keeps its address"
    );
    rt.attachment("DEL", c, &pod, &conf).expect_ok();
    nothing_left("DEL after exhaustion");

    // DEL without a usable IPAM plugin: the port and the veth still go, the error is
    // reported, the record stays for the retry, which then releases the address.
    rt.attachment("ADD", c, &pod, &conf).expect_ok();
    agent.take_calls();
    let mut no_ipam = conf.clone();
    no_ipam["ipam"]["type"] = json!("kcni-no-such-ipam");
    assert_eq!(rt.attachment("DEL", c, &pod, &no_ipam).error_code(), 7);
    assert!(node.veths().is_empty());
    assert_eq!(
        del_ports(&agent.take_calls()),
        vec!["pod-demo-client".to_string()]
    );
    assert!(reserved(dir.path(), &network, "10.244.1.50"));
    assert!(records.join(format!("{veth}.json")).exists());
    rt.attachment("DEL", c, &pod, &conf).expect_ok();
    nothing_left("DEL retried");

    // Bad input.
    let run = rt.run(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", c),
            ("CNI_NETNS", &pod.netns_path),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=client",
            ),
            ("CNI_PATH", "/usr/lib/cni"),
        ],
        "{not json",
    );
    assert_eq!(run.error_code(), 6);
    let run = rt.run(&[("CNI_COMMAND", "FROB")], &conf.to_string());
    assert_eq!(run.error_code(), 4);
    assert!(
        run.json()["details"]
            .as_str()
            .unwrap()
            .contains("CNI_COMMAND")
    );
    let mut old = conf.clone();
    old["cniVersion"] = json!("0.4.0");
    assert_eq!(rt.attachment("ADD", c, &pod, &old).error_code(), 1);
    nothing_left("bad input");
}

#[test]
fn dual_stack() {
    if !can_run("dual_stack") {
        return;
    }
    let p = prefix();
    let dir = TempDir::new("dual");
    let node = netns("dnode");
    let pod_ns = netns("dpod");
    let agent = FakeAgent::with_cidrs(dir.path(), &node, &["10.244.1.0/24", "fd00:10:244:1::/64"]);
    let rt = Runtime { node: &node };
    let network = format!("{p}-dnet");
    let ipam = json!({
        "type": "host-local",
        "ranges": [[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:10:244:1::/64"}]],
        "dataDir": dir.path().join("ipam"),
    });
    let conf = config("1.0.0", &network, dir.path(), &agent.socket, ipam);
    let pod = Pod {
        name: "dual",
        netns_path: pod_ns.path(),
    };
    let c = "kcni-ctr-d";
    let veth = host_veth_name(c, "eth0");

    let result = rt.attachment("ADD", c, &pod, &conf).expect_ok().json();
    assert_eq!(
        result["ips"],
        json!([
            {"address": "10.244.1.2/24", "gateway": "10.244.1.1", "interface": 1},
            {"address": "fd00:10:244:1::2/64", "gateway": "fd00:10:244:1::1", "interface": 1},
        ])
    );
    assert_eq!(
        result["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}, {"dst": "::/0", "gw": "fd00:10:244:1::1"}])
    );
    assert_attachment(&node, &pod_ns, &veth, "10.244.1.2", "0a:58:0a:f4:01:02");
    let addrs = pod_ns.ip_json(&["-6", "addr", "show", "dev", "eth0", "scope", "global"]);
    let v6: Vec<(&str, u64)> = addrs[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        // iproute2 6.1 prints `{}` for the addresses the scope filter left out.
        .filter(|a| a.get("local").is_some())
        .map(|a| {
            (
                a["local"].as_str().unwrap(),
                a["prefixlen"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(v6, vec![("fd00:10:244:1::2", 64)]);
    let routes = pod_ns.ip_json(&["-6", "route", "show", "default"]);
    assert_eq!(routes[0]["gateway"], "fd00:10:244:1::1", "{routes}");
    let host_routes = node.ip_json(&["-6", "route", "show", "fd00:10:244:1::2"]);
    assert_eq!(host_routes[0]["dev"], veth.as_str(), "{host_routes}");
    let neigh = node.ip_json(&["-6", "neigh", "show", "dev", &veth]);
    let entry = neigh
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["dst"] == "fd00:10:244:1::2")
        .unwrap_or_else(|| panic!("{neigh}"));
    assert_eq!(entry["lladdr"], "0a:58:0a:f4:01:02");
    assert_eq!(entry["state"], json!(["PERMANENT"]));
    let calls = agent.take_calls();
    assert_eq!(
        add_port_names(&calls)[0].3,
        vec![
            "10.244.1.2".parse::<IpAddr>().unwrap(),
            "fd00:10:244:1::2".parse().unwrap()
        ]
    );

    let mut check = conf.clone();
    check["prevResult"] = result;
    rt.attachment("CHECK", c, &pod, &check).expect_ok();
    rt.attachment("DEL", c, &pod, &conf).expect_ok();
    assert!(node.veths().is_empty());
    assert!(!reserved(dir.path(), &network, "10.244.1.2"));
    assert!(!reserved(dir.path(), &network, "fd00:10:244:1::2"));
}

/// host-local over `usePodCidr`: the range the runtime's configuration names on every node.
fn use_pod_cidr(dir: &Path) -> Value {
    json!({"type": "host-local", "ranges": [[{"subnet": "usePodCidr"}]], "dataDir": dir.join("ipam")})
}

/// host-local's leases of `container` in `network` (the files naming it).
fn leases_of(dir: &Path, network: &str, container: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir.join("ipam").join(network)) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_to_string(e.path())
                .is_ok_and(|text| text.lines().next().map(str::trim) == Some(container))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// A real `kxdp agent` for node1 (one worker, uplink `up0`) in `node`, fed by a state
/// directory whose Node has PodCIDR 10.244.7.0/24; SIGTERM (then SIGKILL) on drop.
struct RealAgent {
    child: Option<std::process::Child>,
    socket: PathBuf,
    log: PathBuf,
}

const REAL_POD_CIDR: &str = "10.244.7.0/24";

impl RealAgent {
    fn start(dir: &Path, node: &Netns, outside: &Netns) -> RealAgent {
        Uplink {
            mac: "02:77:00:00:00:01",
            addr: "192.168.77.1/24",
            queues: 1,
            outside: Some(outside.name()),
        }
        .add(node.name());
        let state = dir.join("agent-state");
        std::fs::create_dir_all(&state).expect("state dir");
        std::fs::write(
            state.join("cluster.yaml"),
            format!(
                r#"{}---
apiVersion: v1
kind: Namespace
metadata:
  name: demo
"#,
                testkit::manifests::node(
                    "node1",
                    "02:77:00:00:00:01",
                    REAL_POD_CIDR,
                    "192.168.77.1"
                )
            ),
        )
        .expect("write manifests");
        let socket = dir.join("real-agent.sock");
        let log = dir.join("real-agent.log");
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", node.path()))
            .arg("--")
            .arg(testkit::bins::workspace_binary("control", "kxdp"))
            .args([
                "agent",
                "--node",
                "node1",
                "--uplink",
                "up0",
                "--workers",
                "1",
            ])
            .arg("--state")
            .arg(&state)
            .arg("--api-socket")
            .arg(&socket)
            .arg("--cni-state-dir")
            .arg(dir.join("state"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("agent log"))
            .spawn()
            .expect("starting kxdp agent");
        let rx = testkit::process::stdout_lines(&mut child);
        let mut agent = RealAgent {
            child: Some(child),
            socket,
            log,
        };
        let ready = rx.recv_timeout(std::time::Duration::from_secs(60));
        match ready {
            Ok(line) if line.starts_with("kxdp agent ready node=node1") => agent,
            other => {
                agent.stop();
                panic!(
                    "no readiness line ({other:?}); log:\n{}",
                    std::fs::read_to_string(&agent.log).unwrap_or_default()
                )
            }
        }
    }

    fn status(&self) -> AgentStatus {
        agent_api::call(
            &self.socket,
            &Request::Status,
            std::time::Duration::from_secs(5),
        )
        .expect("status call")
        .into_result()
        .expect("status answer")
        .expect("status body")
    }

    /// SIGTERM to the agent this test started, SIGKILL if it has not exited in 20 s.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on the pid of the child this test started.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(20) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for RealAgent {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn use_pod_cidr_with_a_real_agent() {
    if !can_run("use_pod_cidr_with_a_real_agent") {
        return;
    }
    let p = kxp_prefix();
    let dir = TempDir::new("kxp-real");
    let node = netns("rnode");
    let outside = netns("rout");
    let pod1_ns = netns("rpod1");
    let pod2_ns = netns("rpod2");
    let mut agent = RealAgent::start(dir.path(), &node, &outside);
    assert_eq!(agent.status().pod_cidrs, vec![REAL_POD_CIDR.to_string()]);
    let rt = Runtime { node: &node };
    let network = format!("{p}-rnet");
    let conf = config(
        "1.0.0",
        &network,
        dir.path(),
        &agent.socket,
        use_pod_cidr(dir.path()),
    );
    let pod1 = Pod {
        name: "web-0",
        netns_path: pod1_ns.path(),
    };
    let pod2 = Pod {
        name: "web-1",
        netns_path: pod2_ns.path(),
    };
    let (c1, c2) = ("kxp-ctr-1", "kxp-ctr-2");
    let veth1 = host_veth_name(c1, "eth0");
    let veth2 = host_veth_name(c2, "eth0");

    // ADD: the address comes from the PodCIDR of the agent's Node, the gateway is its first
    // address, and the agent serves the port (its XDP program is on the host veth).
    let result = rt.attachment("ADD", c1, &pod1, &conf).expect_ok().json();
    assert_eq!(
        result["ips"],
        json!([{"address": "10.244.7.2/24", "gateway": "10.244.7.1", "interface": 1}]),
        "{result}"
    );
    let addrs = pod1_ns.ip_json(&["-4", "addr", "show", "dev", "eth0"]);
    assert_eq!(addrs[0]["addr_info"][0]["local"], "10.244.7.2", "{addrs}");
    assert_eq!(
        leases_of(dir.path(), &network, c1),
        vec!["10.244.7.2".to_string()]
    );
    assert!(agent.status().ports.contains(&"pod-demo-web-0".to_string()));
    let host = node.link(&veth1).expect("host veth");
    assert!(
        host.get("xdp").is_some(),
        "the agent's XDP on {veth1}: {host}"
    );

    // CHECK with the ADD result (host-local CHECK gets the filled-in range too).
    let mut check = conf.clone();
    check["prevResult"] = result;
    rt.attachment("CHECK", c1, &pod1, &check).expect_ok();

    // DEL releases the address, closes the port, removes the veth.
    rt.attachment("DEL", c1, &pod1, &conf).expect_ok();
    assert!(leases_of(dir.path(), &network, c1).is_empty());
    assert!(node.link(&veth1).is_none());
    assert!(!agent.status().ports.contains(&"pod-demo-web-0".to_string()));

    // A pod again, then the agent stops.
    let result = rt.attachment("ADD", c1, &pod1, &conf).expect_ok().json();
    let ip1 = result["ips"][0]["address"]
        .as_str()
        .expect("address")
        .to_string();
    assert!(
        ip1.starts_with("10.244.7.") && ip1.ends_with("/24"),
        "{ip1}"
    );
    agent.stop();

    // ADD without the agent: try again later, naming usePodCidr, and nothing left behind.
    let run = rt.attachment("ADD", c2, &pod2, &conf);
    assert_eq!(run.error_code(), 11, "{}", run.stdout);
    let details = run.json()["details"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(details.contains("usePodCidr"), "{details}");
    assert!(node.link(&veth2).is_none());
    assert!(pod2_ns.link("eth0").is_none());
    assert!(leases_of(dir.path(), &network, c2).is_empty());
    assert!(
        !dir.path()
            .join("state")
            .join(&network)
            .join(format!("{veth2}.json"))
            .exists()
    );

    // DEL without the agent still releases the live pod's address (the stand-in range).
    let run = rt.attachment("DEL", c1, &pod1, &conf);
    assert!(run.ok, "{} {}", run.stdout, run.stderr);
    assert!(run.stderr.contains("stand-in"), "{}", run.stderr);
    assert!(leases_of(dir.path(), &network, c1).is_empty());
    assert!(node.link(&veth1).is_none());
    let veths = node.veths();
    assert_eq!(
        veths,
        HashSet::from(["up0".to_string()]),
        "only the uplink is left"
    );
}

#[test]
fn use_pod_cidr_with_a_fake_agent() {
    if !can_run("use_pod_cidr_with_a_fake_agent") {
        return;
    }
    let p = kxp_prefix();
    let dir = TempDir::new("kxp-fake");
    let node = netns("fnode");
    let pod_ns = netns("fpod");
    let rt = Runtime { node: &node };
    let network = format!("{p}-fnet");
    let pod = Pod {
        name: "dual",
        netns_path: pod_ns.path(),
    };
    let c = "kxp-ctr-d";

    // Dual stack: one range set per family, IPv4 first, whatever order the agent says.
    let dual_dir = dir.path().join("dual");
    std::fs::create_dir_all(&dual_dir).expect("dir");
    let agent = FakeAgent::with_cidrs(&dual_dir, &node, &["fd00:10:244:1::/64", "10.244.1.0/24"]);
    let conf = config(
        "1.0.0",
        &network,
        dir.path(),
        &agent.socket,
        use_pod_cidr(dir.path()),
    );
    let result = rt.attachment("ADD", c, &pod, &conf).expect_ok().json();
    assert_eq!(
        result["ips"],
        json!([
            {"address": "10.244.1.2/24", "gateway": "10.244.1.1", "interface": 1},
            {"address": "fd00:10:244:1::2/64", "gateway": "fd00:10:244:1::1", "interface": 1},
        ])
    );
    let mut leases = leases_of(dir.path(), &network, c);
    leases.sort();
    assert_eq!(
        leases,
        vec!["10.244.1.2".to_string(), "fd00:10:244:1::2".to_string()]
    );
    rt.attachment("DEL", c, &pod, &conf).expect_ok();
    assert!(leases_of(dir.path(), &network, c).is_empty());
    drop(agent);

    // A node without a PodCIDR: try again later (ADD) and not available (STATUS), nothing
    // left behind.
    let bare_dir = dir.path().join("bare");
    std::fs::create_dir_all(&bare_dir).expect("dir");
    let bare = FakeAgent::with_cidrs(&bare_dir, &node, &[]);
    let conf = config(
        "1.1.0",
        &network,
        dir.path(),
        &bare.socket,
        use_pod_cidr(dir.path()),
    );
    let run = rt.attachment("ADD", c, &pod, &conf);
    assert_eq!(run.error_code(), 11, "{}", run.stdout);
    assert!(
        run.json()["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("no PodCIDR"),
        "{}",
        run.stdout
    );
    assert!(node.veths().is_empty());
    assert!(pod_ns.link("eth0").is_none());
    assert!(leases_of(dir.path(), &network, c).is_empty());
    let status_env = [("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/usr/lib/cni")];
    assert_eq!(rt.run(&status_env, &conf.to_string()).error_code(), 50);
    // DEL still succeeds (nothing to release, the stand-in range parses).
    rt.attachment("DEL", c, &pod, &conf).expect_ok();

    // usePodCidr with a fixed gateway fits one node only: a configuration error, found
    // before the agent is asked anything.
    bare.take_calls();
    let mut fixed = conf.clone();
    fixed["ipam"]["ranges"] = json!([[{"subnet": "usePodCidr", "gateway": "10.244.1.1"}]]);
    let run = rt.attachment("ADD", c, &pod, &fixed);
    assert_eq!(run.error_code(), 7, "{}", run.stdout);
    assert_eq!(bare.take_calls(), vec![]);
}

/// An agent that cannot answer, whatever the way, is "try again later" (11), in bounded
/// time and with nothing done: stopping (it says so), gone with its socket file left
/// behind (connection refused), hung with callers queued behind it (a full backlog), or
/// accepting and then silent. The runtime retries; kxdp-cni never hangs it.
#[test]
fn an_agent_that_cannot_answer_is_try_again_later() {
    if !can_run("an_agent_that_cannot_answer_is_try_again_later") {
        return;
    }
    let p = prefix();
    let dir = TempDir::new("unavail");
    let node = netns("unode");
    let pod_ns = netns("upod");
    let rt = Runtime { node: &node };
    let network = format!("{p}-unet");
    let ipam = host_local(dir.path(), json!({"subnet": "10.244.1.0/24"}));
    let pod = Pod {
        name: "waiting",
        netns_path: pod_ns.path(),
    };
    let c = "kcni-ctr-u";
    let add = |socket: &Path| {
        let conf = config("1.0.0", &network, dir.path(), socket, ipam.clone());
        let started = std::time::Instant::now();
        let run = rt.attachment("ADD", c, &pod, &conf);
        let took = started.elapsed();
        assert_eq!(run.error_code(), 11, "{}", run.stdout);
        assert!(node.veths().is_empty(), "{:?}", node.veths());
        assert!(pod_ns.link("eth0").is_none());
        assert!(!reserved(dir.path(), &network, "10.244.1.2"));
        took
    };
    let at_once = std::time::Duration::from_secs(2);

    // Stopping: the agent answers, "unavailable".
    let agent_dir = dir.path().join("stopping");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let agent = FakeAgent::start(&agent_dir, &node);
    agent.unavailable.store(true, Ordering::SeqCst);
    let took = add(&agent.socket);
    assert!(took < at_once, "stopping agent: {took:?}");
    drop(agent);

    // Gone, its socket file left: connection refused.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let took = add(&stale);
    assert!(took < at_once, "stale socket: {took:?}");

    // Hung, with a full backlog (the kernel queues backlog + 1 connections).
    let full = dir.path().join("full.sock");
    let listener = std::os::unix::net::UnixListener::bind(&full).unwrap();
    // SAFETY: listen(2) on the listener's own descriptor, which it keeps open.
    let rc = unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), 0) };
    assert_eq!(rc, 0);
    // Exactly one: a second blocking connect would wait for ever (which is the point).
    let queued = std::os::unix::net::UnixStream::connect(&full).unwrap();
    let took = add(&full);
    assert!(took < at_once, "full backlog: {took:?}");
    drop((queued, listener));

    // Accepting (the kernel's backlog does that) and never answering: the status call's
    // timeout (5 s), then 11.
    let silent = dir.path().join("silent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&silent).unwrap();
    let took = add(&silent);
    assert!(
        took >= std::time::Duration::from_secs(4) && took < std::time::Duration::from_secs(15),
        "silent agent: {took:?}"
    );
}
