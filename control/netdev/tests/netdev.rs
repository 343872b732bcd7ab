//! netdev against the real kernel, in namespaces these tests create: what it sets is read
//! back through it and, independently, through `ip -j` and `ethtool -k`.
//!
//! Root only; skipped (with a message) otherwise, except under CI=true where it fails.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use netdev::{Change, Group, Mac, NetdevError, Netlink, RouteSpec, VethEnd, Watch};
use testkit::netns::Netns;

fn ns(tag: &str) -> Netns {
    Netns::with_ipv6("kxnd", tag)
}

fn open(ns: &Netns) -> Netlink {
    Netlink::open_in(Path::new(&ns.path())).expect("netlink socket in the namespace")
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `ip -j ARGS` in `ns`, parsed.
fn ip_json(ns: &Netns, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    let text = ns.ip(&all);
    if text.trim().is_empty() {
        serde_json::json!([])
    } else {
        serde_json::from_str(&text).expect("ip -j output")
    }
}

#[test]
fn veth_pair_addresses_routes_neighbours_and_offload() {
    if !testkit::root::root_or_skip("netdev: veth_pair_addresses_routes_neighbours_and_offload") {
        return;
    }
    let node = ns("node");
    let pod = ns("pod");
    let nl = open(&node);
    let pod_nl = open(&pod);
    let gw_mac: Mac = "0a:58:0a:f4:01:01".parse().unwrap();
    let pod_mac: Mac = "0a:58:0a:f4:01:02".parse().unwrap();

    assert_eq!(nl.link("kxnd0").unwrap(), None);
    nl.create_veth(
        &VethEnd {
            name: "kxnd0",
            mac: Some(gw_mac),
            mtu: Some(1450),
            queues: Some(2),
        },
        &VethEnd {
            name: "eth0",
            mac: Some(pod_mac),
            mtu: Some(1450),
            queues: Some(2),
        },
        Some(Path::new(&pod.path())),
    )
    .unwrap();
    let host = nl.link("kxnd0").unwrap().expect("host end");
    assert!(host.is_veth());
    assert_eq!(
        (host.mac, host.mtu, host.tx_queues, host.rx_queues, host.up),
        (Some(gw_mac), 1450, 2, 2, false)
    );
    let eth0 = pod_nl.link("eth0").unwrap().expect("peer in the pod");
    assert_eq!(
        (eth0.mac, eth0.mtu, eth0.tx_queues),
        (Some(pod_mac), 1450, 2)
    );
    assert!(nl.link("eth0").unwrap().is_none(), "the peer is not here");
    assert_eq!(nl.link_by_index(host.index).unwrap().as_ref(), Some(&host));
    assert!(nl.links().unwrap().iter().any(|l| l.name == "lo"));

    // A second pair of the same name: the kernel's refusal, typed, naming the request.
    let again = nl
        .create_veth(
            &VethEnd {
                name: "kxnd0",
                mac: None,
                mtu: None,
                queues: None,
            },
            &VethEnd {
                name: "kxnd0p",
                mac: None,
                mtu: None,
                queues: None,
            },
            None,
        )
        .unwrap_err();
    assert_eq!(again.errno(), Some(libc::EEXIST), "{again}");
    assert!(again.to_string().contains("kxnd0"), "{again}");
    assert!(matches!(
        nl.link("much-too-long-name"),
        Err(NetdevError::InvalidName(_))
    ));

    // Up, addresses (IPv6 without DAD: usable at once), routes, neighbour.
    pod_nl.set_up("lo").unwrap();
    pod_nl
        .add_address(eth0.index, net("10.244.1.2/24"))
        .unwrap();
    pod_nl
        .add_address(eth0.index, net("fd00:10:244:1::2/64"))
        .unwrap();
    pod_nl.set_up("eth0").unwrap();
    nl.set_up("kxnd0").unwrap();
    assert!(pod_nl.link("eth0").unwrap().unwrap().up);
    let addrs = pod_nl.addresses(eth0.index).unwrap();
    assert!(
        addrs
            .iter()
            .any(|a| a.net == net("10.244.1.2/24") && a.global)
    );
    assert!(addrs.iter().any(|a| a.net == net("fd00:10:244:1::2/64")));
    let v6 = ip_json(
        &pod,
        &["-6", "addr", "show", "dev", "eth0", "scope", "global"],
    );
    let flags = v6.to_string();
    assert!(!flags.contains("tentative"), "{flags}");

    for (dst, gw) in [("0.0.0.0/0", "10.244.1.1"), ("::/0", "fd00:10:244:1::1")] {
        pod_nl
            .replace_route(&RouteSpec {
                dst: net(dst),
                via: Some(ip(gw)),
                onlink: true,
                oif: eth0.index,
                src: None,
            })
            .unwrap();
    }
    // A gateway outside every prefix of the link: only onlink makes that possible.
    pod_nl
        .replace_route(&RouteSpec {
            dst: net("192.0.2.0/24"),
            via: Some(ip("198.51.100.1")),
            onlink: true,
            oif: eth0.index,
            src: None,
        })
        .unwrap();
    let routes = pod_nl.routes(false).unwrap();
    assert!(
        routes.iter().any(|r| r.dst == net("0.0.0.0/0")
            && r.gateway == Some(ip("10.244.1.1"))
            && r.oif == Some(eth0.index)),
        "{routes:?}"
    );
    let v6_routes = pod_nl.routes(true).unwrap();
    assert!(
        v6_routes
            .iter()
            .any(|r| r.dst == net("::/0") && r.gateway == Some(ip("fd00:10:244:1::1"))),
        "{v6_routes:?}"
    );
    let seen = ip_json(&pod, &["-4", "route", "show", "default"]);
    assert_eq!(seen[0]["gateway"], "10.244.1.1", "{seen}");
    assert_eq!(seen[0]["dev"], "eth0", "{seen}");

    nl.replace_route(&RouteSpec {
        dst: net("10.244.1.2/32"),
        via: None,
        onlink: false,
        oif: host.index,
        src: None,
    })
    .unwrap();
    let host_route = ip_json(&node, &["-4", "route", "show", "10.244.1.2"]);
    assert_eq!(host_route[0]["dev"], "kxnd0", "{host_route}");
    assert_eq!(host_route[0]["scope"], "link", "{host_route}");
    // A prefix routed with a source address (as the agent routes Service CIDRs into its
    // host port), then deleted by prefix and link; deleting again is "was not there".
    nl.replace_route(&RouteSpec {
        dst: net("10.200.0.0/24"),
        via: None,
        onlink: false,
        oif: host.index,
        src: None,
    })
    .unwrap();
    let routed = ip_json(&node, &["-4", "route", "show", "10.200.0.0/24"]);
    assert_eq!(routed[0]["dev"], "kxnd0", "{routed}");
    assert!(nl.delete_route(net("10.200.0.0/24"), host.index).unwrap());
    assert_eq!(
        ip_json(&node, &["-4", "route", "show", "10.200.0.0/24"]),
        serde_json::json!([])
    );
    assert!(!nl.delete_route(net("10.200.0.0/24"), host.index).unwrap());
    nl.set_permanent_neighbour(host.index, ip("10.244.1.2"), pod_mac)
        .unwrap();
    let neighs = nl.neighbours(host.index).unwrap();
    let entry = neighs
        .iter()
        .find(|n| n.ip == ip("10.244.1.2"))
        .expect("the entry");
    assert!(entry.is_permanent());
    assert_eq!(entry.resolved_mac(), Some(pod_mac));
    assert_eq!(
        nl.neighbour(host.index, ip("10.244.1.2")).unwrap().as_ref(),
        Some(entry)
    );
    assert_eq!(nl.neighbour(host.index, ip("10.244.1.9")).unwrap(), None);

    // Checksum offload: off, read back here and by ethtool; on again.
    assert!(
        pod_nl.tx_checksum("eth0").unwrap(),
        "veths start with it on"
    );
    pod_nl.set_tx_checksum("eth0", false).unwrap();
    assert!(!pod_nl.tx_checksum("eth0").unwrap());
    let features = pod.exec("ethtool", &["-k", "eth0"]);
    assert!(
        features.lines().any(|l| l.trim() == "tx-checksumming: off"),
        "{features}"
    );
    pod_nl.set_tx_checksum("eth0", true).unwrap();
    assert!(pod_nl.tx_checksum("eth0").unwrap());
    assert!(matches!(
        nl.tx_checksum("nothere0"),
        Err(NetdevError::NoSuchInterface(_))
    ));

    // Deleting takes the peer; deleting again is "was not there".
    assert!(nl.delete_neighbour(host.index, ip("10.244.1.2")).unwrap());
    assert!(!nl.delete_neighbour(host.index, ip("10.244.1.2")).unwrap());
    assert!(nl.delete_link("kxnd0").unwrap());
    assert!(!nl.delete_link("kxnd0").unwrap());
    assert!(pod_nl.link("eth0").unwrap().is_none());
}

#[test]
fn a_namespace_that_does_not_exist_is_an_error() {
    if !testkit::root::root_or_skip("netdev: a_namespace_that_does_not_exist_is_an_error") {
        return;
    }
    let err = Netlink::open_in(Path::new("/run/netns/kxnd-nothere")).unwrap_err();
    assert!(matches!(err, NetdevError::Netns { .. }), "{err}");
    assert!(err.to_string().contains("kxnd-nothere"), "{err}");
}

/// Two hosts on one segment: `a` looks up its route to `b`, asks the kernel to keep a
/// managed entry for it (resolved without traffic of ours), and is told when `b`'s MAC
/// changes, as it happens.
#[test]
fn next_hops_managed_neighbours_and_notifications() {
    if !testkit::root::root_or_skip("netdev: next_hops_managed_neighbours_and_notifications") {
        return;
    }
    let a = ns("a");
    let b = ns("b");
    a.veth_pair_to("kxa", &b, "kxb", 1);
    a.ip(&["addr", "add", "192.168.90.1/24", "dev", "kxa"]);
    b.ip(&["addr", "add", "192.168.90.2/24", "dev", "kxb"]);
    b.ip(&["addr", "add", "192.168.91.1/24", "dev", "lo"]);
    a.ip(&["route", "add", "192.168.91.0/24", "via", "192.168.90.2"]);
    let nl = open(&a);
    let kxa = nl.ifindex("kxa").unwrap();
    let b_mac: Mac = ip_json(&b, &["link", "show", "dev", "kxb"])[0]["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // On-link and via a gateway.
    let direct = nl.route_to(ip("192.168.90.2")).unwrap();
    assert_eq!((direct.oif, direct.gateway), (kxa, None));
    let routed = nl.route_to(ip("192.168.91.7")).unwrap();
    assert_eq!(
        (routed.oif, routed.gateway),
        (kxa, Some(ip("192.168.90.2")))
    );
    assert!(
        nl.route_to(ip("203.0.113.1")).is_err(),
        "no route, an error"
    );

    let a_path = a.path();
    let mut watch = netdev::netns::run_in(Path::new(&a_path), || {
        Watch::open(&[Group::Neighbour, Group::Ipv4Route, Group::Link])
    })
    .unwrap();
    watch.set_timeout(Some(Duration::from_millis(200))).unwrap();

    nl.set_managed_neighbour(kxa, ip("192.168.90.2")).unwrap();
    let resolved = wait_for_neighbour(&mut watch, Duration::from_secs(10), |n| {
        n.ip == ip("192.168.90.2") && n.resolved_mac() == Some(b_mac)
    });
    assert!(resolved.managed, "{resolved:?}");
    assert_eq!(
        nl.neighbour(kxa, ip("192.168.90.2"))
            .unwrap()
            .and_then(|n| n.resolved_mac()),
        Some(b_mac)
    );

    // The MAC changes (an administrator, or a gratuitous ARP): told at once.
    let new_mac = "02:90:00:00:00:02";
    let changed = Instant::now();
    a.ip(&[
        "neigh",
        "replace",
        "192.168.90.2",
        "lladdr",
        new_mac,
        "nud",
        "reachable",
        "dev",
        "kxa",
    ]);
    wait_for_neighbour(&mut watch, Duration::from_secs(5), |n| {
        n.resolved_mac() == Some(new_mac.parse().unwrap())
    });
    assert!(changed.elapsed() < Duration::from_secs(1));

    // Routes and links are told too.
    a.ip(&["route", "add", "192.168.92.0/24", "via", "192.168.90.2"]);
    wait_for_change(&mut watch, |c| {
        matches!(c, Change::Route { dst: Some(dst), oif: Some(oif) }
            if *dst == net("192.168.92.0/24") && *oif == kxa)
    });
    a.ip(&["link", "set", "kxa", "mtu", "1400"]);
    wait_for_change(
        &mut watch,
        |c| matches!(c, Change::Link { index, removed: false } if *index == kxa),
    );

    assert!(nl.delete_neighbour(kxa, ip("192.168.90.2")).unwrap());
    wait_for_change(
        &mut watch,
        |c| matches!(c, Change::Neighbour { entry, removed: true } if entry.ip == ip("192.168.90.2")),
    );
}

fn wait_for_change(watch: &mut Watch, want: impl Fn(&Change) -> bool) -> Change {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(c) = watch.changes().unwrap().into_iter().find(|c| want(c)) {
            return c;
        }
    }
    panic!("no such change within 5 s");
}

fn wait_for_neighbour(
    watch: &mut Watch,
    within: Duration,
    want: impl Fn(&netdev::Neighbour) -> bool,
) -> netdev::Neighbour {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        for c in watch.changes().unwrap() {
            if let Change::Neighbour {
                entry,
                removed: false,
            } = c
                && want(&entry)
            {
                return entry;
            }
        }
    }
    panic!("no such neighbour notification within {within:?}");
}

/// The rx queues a device has now: a veth's channel count follows `ethtool -L` (set here
/// through netdev and checked with the `ethtool` binary), and the count is the current one,
/// not the allocation the link was created with.
#[test]
fn rx_queues_follow_the_channel_count() {
    if !testkit::root::root_or_skip("netdev: rx_queues_follow_the_channel_count") {
        return;
    }
    let node = ns("chan");
    let nl = open(&node);
    let end = |name| VethEnd {
        name,
        mac: None,
        mtu: None,
        queues: Some(8),
    };
    nl.create_veth(&end("kxndq0"), &end("kxndq1"), None)
        .expect("veth with 8 queues");
    assert_eq!(nl.rx_queues("kxndq0").unwrap(), 8);
    let channels = nl.channels("kxndq0").unwrap();
    assert_eq!((channels.max_rx, channels.rx), (8, 8), "{channels:?}");

    nl.set_rx_tx_channels("kxndq0", 3, 3)
        .expect("ethtool -L rx 3 tx 3");
    assert_eq!(nl.rx_queues("kxndq0").unwrap(), 3);
    let shown = node.exec("ethtool", &["-l", "kxndq0"]);
    let current = shown
        .split("Current hardware settings:")
        .nth(1)
        .expect("ethtool -l output");
    assert!(
        current
            .lines()
            .any(|l| l.split_whitespace().eq(["RX:", "3"])),
        "{shown}"
    );
    // Link attributes still report the allocation.
    assert_eq!(nl.link("kxndq0").unwrap().unwrap().rx_queues, 8);

    // No channel counts (lo): the link's queue count.
    assert_eq!(nl.rx_queues("lo").unwrap(), 1);
    assert!(matches!(
        nl.rx_queues("kxndnone"),
        Err(NetdevError::NoSuchInterface(_))
    ));
}

#[test]
fn rp_filter_is_set_over_rtnetlink_alone() {
    if !testkit::root::root_or_skip("netdev: rp_filter_is_set_over_rtnetlink_alone") {
        return;
    }
    let node = ns("rpf");
    let nl = open(&node);
    let end = |name| VethEnd {
        name,
        mac: None,
        mtu: None,
        queues: None,
    };
    nl.create_veth(&end("kxndr0"), &end("kxndr1"), None)
        .expect("veth");
    let read = |dev: &str| {
        let path = format!("/proc/sys/net/ipv4/conf/{dev}/rp_filter");
        node.exec("cat", &[&path]).trim().to_string()
    };
    let other = read("kxndr1");
    for mode in [2, 1, 0, 2] {
        nl.set_rp_filter("kxndr0", mode).expect("rp_filter");
        assert_eq!(read("kxndr0"), mode.to_string());
    }
    // Only rp_filter, only on the link named: nothing else of its devconf, no other link.
    assert_eq!(read("kxndr1"), other);
    assert_eq!(
        node.exec("cat", &["/proc/sys/net/ipv4/conf/kxndr0/forwarding"])
            .trim(),
        node.exec("cat", &["/proc/sys/net/ipv4/conf/default/forwarding"])
            .trim()
    );
}
