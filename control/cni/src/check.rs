//! CHECK: the attachment still looks like its ADD result (`prevResult`), and the agent still
//! serves its port.

use std::net::IpAddr;

use super::link::{LinkInfo, Ns, Tools};
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
    let tools = inv.tools()?;
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
    let live_pod = tools
        .link(pod, &att.ifname)?
        .ok_or_else(|| mismatch(format!("{} is missing from {netns_text}", att.ifname)))?;
    compare_link(
        &live_pod,
        pod_if,
        expected_mtu,
        &format!("{} in {netns_text}", att.ifname),
    )?;
    let live_addrs = tools.addrs(pod, &att.ifname)?;
    for (addr, gateway) in &pod_addrs {
        if !live_addrs.contains(addr) {
            return Err(mismatch(format!("{} lacks address {addr}", att.ifname)));
        }
        if let Some(gw) = gateway {
            check_default_route(&tools, pod, &att.ifname, *gw)?;
        }
    }
    if tools.tx_checksum_on(pod, &att.ifname)? {
        return Err(mismatch(format!(
            "{} in {netns_text} has tx checksum offload on",
            att.ifname
        )));
    }

    let live_host = tools
        .link(Ns::Node, &host_veth)?
        .ok_or_else(|| mismatch(format!("host veth {host_veth} is missing")))?;
    compare_link(
        &live_host,
        host_if,
        expected_mtu,
        &format!("host veth {host_veth}"),
    )?;
    check_host_side(&tools, &host_veth, &pod_if.mac, &pod_addrs)?;

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

fn compare_link(live: &LinkInfo, prev: &Interface, mtu: u32, what: &str) -> Result<(), CniError> {
    if !prev.mac.is_empty() && !live.address.eq_ignore_ascii_case(&prev.mac) {
        return Err(mismatch(format!(
            "{what} has MAC {}, ADD gave {}",
            live.address, prev.mac
        )));
    }
    if live.mtu != mtu {
        return Err(mismatch(format!(
            "{what} has MTU {}, expected {mtu}",
            live.mtu
        )));
    }
    if !live.is_up() {
        return Err(mismatch(format!("{what} is down")));
    }
    Ok(())
}

fn check_default_route(tools: &Tools, ns: Ns<'_>, dev: &str, gw: IpAddr) -> Result<(), CniError> {
    let routes = tools.routes(ns, gw.is_ipv6())?;
    let found = routes
        .iter()
        .any(|r| r.dst.is_default() && r.gateway == Some(gw) && r.dev.as_deref() == Some(dev));
    if found {
        Ok(())
    } else {
        Err(mismatch(format!("no default route via {gw} dev {dev}")))
    }
}

/// The host route and the permanent neighbour entry of every pod address.
fn check_host_side(
    tools: &Tools,
    host_veth: &str,
    pod_mac: &str,
    pod_addrs: &[(IpPrefix, Option<IpAddr>)],
) -> Result<(), CniError> {
    let neighs = tools.neighs(Ns::Node, host_veth)?;
    for (addr, _) in pod_addrs {
        let ip = addr.ip;
        let host_len = if ip.is_ipv4() { 32 } else { 128 };
        let routes = tools.routes(Ns::Node, ip.is_ipv6())?;
        let routed = routes.iter().any(|r| {
            r.dst.ip == ip && r.dst.len == host_len && r.dev.as_deref() == Some(host_veth)
        });
        if !routed {
            return Err(mismatch(format!(
                "no route {ip}/{host_len} dev {host_veth}"
            )));
        }
        let neighbour = neighs
            .iter()
            .any(|n| n.dst == ip && n.is_permanent() && n.lladdr.eq_ignore_ascii_case(pod_mac));
        if !neighbour {
            return Err(mismatch(format!(
                "no permanent neighbour {ip} lladdr {pod_mac} dev {host_veth}"
            )));
        }
    }
    Ok(())
}
