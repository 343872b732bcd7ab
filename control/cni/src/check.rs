//! CHECK: the attachment still looks like its ADD result (`prevResult`), and the agent still
//! serves its port.

use std::net::IpAddr;

use netdev::Link;

use super::link::{Ns, Stacks};
use super::record::host_veth_name;
use super::spec::{CniError, CniResult, Interface, IpPrefix, code};
use super::{Invocation, NodeRanges, require_netns};

pub(super) fn check(inv: &Invocation) -> Result<(), CniError> {
    let att = inv.attachment()?;
    let netns = require_netns(att)?;
    let prev: CniResult = match &inv.conf.prev_result {
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| CniError::new(code::DECODE, "cannot decode prevResult", e.to_string()))?,
        None => {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "invalid network configuration",
                "CHECK needs prevResult (the ADD result)",
            ));
        }
    };
    let stacks = inv.stacks()?;
    let host_veth = host_veth_name(&att.container_id, &att.ifname);
    let netns_text = netns.display().to_string();
    let (pod_index, pod_if) = prev
        .interfaces
        .iter()
        .enumerate()
        .find(|(_, i)| i.name == att.ifname && i.sandbox == netns_text)
        .ok_or_else(|| {
            mismatch(format!(
                "prevResult lists no interface {} in {netns_text}",
                att.ifname
            ))
        })?;
    let host_if = prev
        .interfaces
        .iter()
        .find(|i| i.name == host_veth && i.sandbox.is_empty())
        .ok_or_else(|| mismatch(format!("prevResult lists no host interface {host_veth}")))?;

    let agent = inv.agent();
    let expected_mtu = match (pod_if.mtu, inv.conf.mtu) {
        (Some(m), _) | (None, Some(m)) => m,
        (None, None) => agent.status()?.pod_mtu,
    };
    let pod_addrs: Vec<(IpPrefix, Option<IpAddr>)> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface == Some(pod_index))
        .map(|ip| (ip.address, ip.gateway))
        .collect();

    let pod = Ns::Pod(netns);
    let live_pod = stacks
        .of(pod)?
        .link(&att.ifname)?
        .ok_or_else(|| mismatch(format!("{} is missing from {netns_text}", att.ifname)))?;
    compare_link(
        &live_pod,
        pod_if,
        expected_mtu,
        &format!("{} in {netns_text}", att.ifname),
    )?;
    let live_addrs = stacks.addrs(pod, live_pod.index)?;
    for (addr, gateway) in &pod_addrs {
        if !live_addrs.contains(addr) {
            return Err(mismatch(format!("{} lacks address {addr}", att.ifname)));
        }
        if let Some(gw) = gateway {
            check_default_route(&stacks, pod, &live_pod, *gw)?;
        }
    }
    if stacks.of(pod)?.tx_checksum(&att.ifname)? {
        return Err(mismatch(format!(
            "{} in {netns_text} has tx checksum offload on",
            att.ifname
        )));
    }

    let live_host = stacks
        .of(Ns::Node)?
        .link(&host_veth)?
        .ok_or_else(|| mismatch(format!("host veth {host_veth} is missing")))?;
    compare_link(
        &live_host,
        host_if,
        expected_mtu,
        &format!("host veth {host_veth}"),
    )?;
    check_host_side(&stacks, &live_host, &pod_if.mac, &pod_addrs)?;

    let port = match inv.env.args.pod_port() {
        Ok(port) => port,
        Err(e) => match inv.records().load(&host_veth) {
            Ok(Some(r)) => r.port,
            _ => return Err(e),
        },
    };
    agent.check_port(&port, &att.container_id)?;
    inv.ipam(NodeRanges::Ask)?.check(&inv.ipam_vars(att))
}

fn mismatch(details: String) -> CniError {
    CniError::new(
        code::CHECK_MISMATCH,
        "the attachment is not as ADD left it",
        details,
    )
}

fn compare_link(live: &Link, prev: &Interface, mtu: u32, what: &str) -> Result<(), CniError> {
    let live_mac = live.mac.map(|m| m.to_string()).unwrap_or_default();
    if !prev.mac.is_empty() && !live_mac.eq_ignore_ascii_case(&prev.mac) {
        return Err(mismatch(format!(
            "{what} has MAC {live_mac}, ADD gave {}",
            prev.mac
        )));
    }
    if live.mtu != mtu {
        return Err(mismatch(format!(
            "{what} has MTU {}, expected {mtu}",
            live.mtu
        )));
    }
    if !live.up {
        return Err(mismatch(format!("{what} is down")));
    }
    Ok(())
}

fn check_default_route(
    stacks: &Stacks,
    ns: Ns<'_>,
    dev: &Link,
    gw: IpAddr,
) -> Result<(), CniError> {
    let routes = stacks.of(ns)?.routes(gw.is_ipv6())?;
    let found = routes
        .iter()
        .any(|r| r.dst.prefix_len() == 0 && r.gateway == Some(gw) && r.oif == Some(dev.index));
    if found {
        Ok(())
    } else {
        Err(mismatch(format!(
            "no default route via {gw} dev {}",
            dev.name
        )))
    }
}

/// The host route and the permanent neighbour entry of every pod address.
fn check_host_side(
    stacks: &Stacks,
    host_veth: &Link,
    pod_mac: &str,
    pod_addrs: &[(IpPrefix, Option<IpAddr>)],
) -> Result<(), CniError> {
    let node = stacks.of(Ns::Node)?;
    let neighs = node.neighbours(host_veth.index)?;
    let name = &host_veth.name;
    for (addr, _) in pod_addrs {
        let ip = addr.ip;
        let host_len = if ip.is_ipv4() { 32 } else { 128 };
        let routes = node.routes(ip.is_ipv6())?;
        let routed = routes.iter().any(|r| {
            r.dst.addr() == ip && r.dst.prefix_len() == host_len && r.oif == Some(host_veth.index)
        });
        if !routed {
            return Err(mismatch(format!("no route {ip}/{host_len} dev {name}")));
        }
        let neighbour = neighs.iter().any(|n| {
            n.ip == ip
                && n.is_permanent()
                && n.mac
                    .is_some_and(|m| m.to_string().eq_ignore_ascii_case(pod_mac))
        });
        if !neighbour {
            return Err(mismatch(format!(
                "no permanent neighbour {ip} lladdr {pod_mac} dev {name}"
            )));
        }
    }
    Ok(())
}
