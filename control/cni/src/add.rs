//! ADD: build the pod's veth and hand it to the agent; on any failure, undo what was done.

use std::net::IpAddr;
use std::path::Path;

use super::agent::{Agent, NodeFacts};
use super::ipam::Ipam;
use super::link::{Ns, Stacks, VethPlan, to_net};
use super::record::{Record, Records, host_veth_name};
use super::spec::{CniError, CniResult, Interface, IpConfig, IpPrefix, Route, code};
use super::{Invocation, NodeRanges, require_netns, warn};
use netdev::Mac;

pub(super) fn add(inv: &Invocation) -> Result<CniResult, CniError> {
    let att = inv.attachment()?;
    if let Some(prev) = &inv.conf.prev_result {
        // We create the pod's interface, so we come first in a chain: nothing before us.
        return Err(CniError::new(
            code::UNSUPPORTED_FIELD,
            "unsupported field in the network configuration",
            format!("prevResult={prev}: kxdp-cni must be the first plugin of its network"),
        ));
    }
    let port = inv.env.args.pod_port()?;
    let netns = require_netns(att)?;
    let stacks = inv.stacks()?;
    let host_veth = host_veth_name(&att.container_id, &att.ifname);

    // A live attachment must not be touched: refuse before allocating anything, so the
    // undo below can never release somebody else's address.
    if stacks.of(Ns::Node)?.link(&host_veth)?.is_some() {
        return Err(exists(format!(
            "host veth {host_veth} of ({}, {}) already exists; DEL first",
            att.container_id, att.ifname
        )));
    }
    if stacks.of(Ns::Pod(netns))?.link(&att.ifname)?.is_some() {
        return Err(exists(format!(
            "{} already exists in {}",
            att.ifname,
            netns.display()
        )));
    }
    let agent = inv.agent();
    // Asked before anything changes: no agent, no change (the runtime retries on code 11).
    // Its PodCIDRs are the IPAM ranges when the configuration says usePodCidr.
    let node = inv.node_facts(&agent)?;
    let ipam = inv.ipam(NodeRanges::Known(&node))?;

    let mut undo = Undo::default();
    let steps = Steps {
        inv,
        stacks: &stacks,
        ipam: &ipam,
        agent: &agent,
        node: &node,
        netns,
        host_veth: &host_veth,
        port: &port,
        records: inv.records(),
    };
    match steps.run(&mut undo) {
        Ok(result) => Ok(result),
        Err(e) => {
            undo.run(&steps);
            Err(e)
        }
    }
}

fn exists(details: String) -> CniError {
    CniError::new(
        code::ALREADY_EXISTS,
        "the attachment already exists",
        details,
    )
}

/// What ADD has done so far, to be undone in reverse order if a later step fails.
#[derive(Debug, Default)]
struct Undo(Vec<Done>);

#[derive(Debug, Clone, Copy)]
enum Done {
    Record,
    /// Pushed before IPAM ADD runs: the spec asks for a DEL after a failed delegated ADD too.
    Ipam,
    Veth,
    /// Pushed before add_port: a timed-out call may still have opened the port.
    Port,
}

impl Undo {
    fn run(self, s: &Steps<'_>) {
        let att = match s.inv.attachment() {
            Ok(att) => att,
            Err(_) => return,
        };
        for done in self.0.into_iter().rev() {
            let outcome = match done {
                Done::Port => s.agent.del_port(s.port, &att.container_id),
                Done::Veth => s.stacks.delete_link(Ns::Node, s.host_veth).map(drop),
                Done::Ipam => s.ipam.del(&s.inv.ipam_vars(att)),
                Done::Record => s.records.remove(s.host_veth).map_err(|e| {
                    CniError::new(
                        code::STATE_FAILED,
                        "removing the attachment record",
                        e.to_string(),
                    )
                }),
            };
            if let Err(e) = outcome {
                warn(&format!("undoing {done:?} after a failed ADD"), &e);
            }
        }
    }
}

/// Everything the ADD steps share.
struct Steps<'a> {
    inv: &'a Invocation,
    stacks: &'a Stacks,
    ipam: &'a Ipam,
    agent: &'a Agent,
    node: &'a NodeFacts,
    netns: &'a Path,
    host_veth: &'a str,
    port: &'a str,
    records: Records,
}

/// One pod address and the gateway it routes through.
struct PodAddr {
    addr: IpPrefix,
    gateway: IpAddr,
}

impl Steps<'_> {
    fn run(&self, undo: &mut Undo) -> Result<CniResult, CniError> {
        let att = self.inv.attachment()?;
        // The record first: should we die half-way, GC still finds the attachment.
        self.records
            .save(&Record {
                container_id: att.container_id.clone(),
                ifname: att.ifname.clone(),
                host_veth: self.host_veth.to_string(),
                port: self.port.to_string(),
                netns: self.netns.display().to_string(),
            })
            .map_err(|e| {
                CniError::new(
                    code::STATE_FAILED,
                    "writing the attachment record",
                    e.to_string(),
                )
            })?;
        undo.0.push(Done::Record);

        undo.0.push(Done::Ipam);
        let ipam_result = self.ipam.add(&self.inv.ipam_vars(att))?;
        let addrs = self.pod_addrs(&ipam_result)?;
        let pod_v4 = addrs
            .iter()
            .find_map(|a| match a.addr.ip {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            })
            .ok_or_else(|| {
                invalid(format!(
                    "IPAM plugin {} gave no IPv4 address; kxdp derives the pod MAC from it",
                    self.ipam.name()
                ))
            })?;
        let pod_mac = Mac::for_ipv4(pod_v4);
        let gateway_mac = Mac::for_ipv4(self.node.gateway);
        let mtu = self.inv.conf.mtu.unwrap_or(self.node.pod_mtu);
        let queues = self.inv.conf.queues.unwrap_or(self.node.workers);

        self.stacks.create_veth(&VethPlan {
            host: self.host_veth,
            host_mac: gateway_mac,
            pod_ifname: &att.ifname,
            pod_mac,
            netns: self.netns,
            mtu,
            queues,
        })?;
        undo.0.push(Done::Veth);

        let extra_routes = self.extra_routes(&ipam_result, &addrs);
        self.configure_pod(&att.ifname, &addrs, &extra_routes)?;
        self.configure_host(&addrs, pod_mac)?;

        undo.0.push(Done::Port);
        let ips: Vec<IpAddr> = addrs.iter().map(|a| a.addr.ip).collect();
        self.agent
            .add_port(self.port, self.host_veth, &att.container_id, ips)?;

        let speaks_1_1 = self.inv.speaks_1_1();
        let mut routes: Vec<Route> = addrs
            .iter()
            .map(|a| Route {
                dst: IpPrefix::default_for(a.addr.ip),
                gw: Some(a.gateway),
            })
            .collect();
        routes.extend(extra_routes);
        Ok(CniResult {
            cni_version: self.inv.conf.cni_version.clone(),
            interfaces: vec![
                Interface {
                    name: self.host_veth.to_string(),
                    mac: gateway_mac.to_string(),
                    mtu: speaks_1_1.then_some(mtu),
                    sandbox: String::new(),
                },
                Interface {
                    name: att.ifname.clone(),
                    mac: pod_mac.to_string(),
                    mtu: speaks_1_1.then_some(mtu),
                    sandbox: self.netns.display().to_string(),
                },
            ],
            ips: addrs
                .iter()
                .map(|a| IpConfig {
                    address: a.addr,
                    gateway: Some(a.gateway),
                    interface: Some(1),
                })
                .collect(),
            routes,
            dns: if ipam_result.dns.is_empty() {
                self.inv.conf.dns.clone()
            } else {
                ipam_result.dns
            },
        })
    }

    /// The IPAM addresses with their gateways, checked against what the agent serves: the
    /// datapath answers ARP only for its own gateway, and routes only its PodCIDRs here.
    fn pod_addrs(&self, r: &CniResult) -> Result<Vec<PodAddr>, CniError> {
        if r.ips.is_empty() {
            return Err(invalid(format!(
                "IPAM plugin {} gave no address",
                self.ipam.name()
            )));
        }
        r.ips
            .iter()
            .map(|ip| {
                let gateway = match (ip.gateway, ip.address.ip) {
                    (Some(gw), _) => gw,
                    (None, IpAddr::V4(_)) => IpAddr::V4(self.node.gateway),
                    (None, IpAddr::V6(_)) => {
                        return Err(invalid(format!(
                            "IPAM gave {} without a gateway",
                            ip.address
                        )));
                    }
                };
                if let IpAddr::V4(gw) = gateway
                    && gw != self.node.gateway
                {
                    return Err(invalid(format!(
                        "IPAM gateway {gw} is not the node's pod gateway {}",
                        self.node.gateway
                    )));
                }
                if !self.node.pod_cidrs.is_empty()
                    && !self
                        .node
                        .pod_cidrs
                        .iter()
                        .any(|c| c.contains(&ip.address.ip))
                {
                    return Err(invalid(format!(
                        "IPAM address {} is outside the node's PodCIDRs",
                        ip.address
                    )));
                }
                Ok(PodAddr {
                    addr: ip.address,
                    gateway,
                })
            })
            .collect()
    }

    /// IPAM routes other than the default ones (which always go via the node's gateway),
    /// through their own next hop or the gateway of their family.
    fn extra_routes(&self, r: &CniResult, addrs: &[PodAddr]) -> Vec<Route> {
        r.routes
            .iter()
            .filter(|route| !route.dst.is_default())
            .filter_map(|route| {
                let gw = route.gw.or_else(|| {
                    addrs
                        .iter()
                        .find(|a| a.gateway.is_ipv4() == route.dst.ip.is_ipv4())
                        .map(|a| a.gateway)
                })?;
                Some(Route {
                    dst: route.dst,
                    gw: Some(gw),
                })
            })
            .collect()
    }

    fn configure_pod(
        &self,
        ifname: &str,
        addrs: &[PodAddr],
        extra_routes: &[Route],
    ) -> Result<(), CniError> {
        let pod = Ns::Pod(self.netns);
        let netlink = self.stacks.of(pod)?;
        netlink.set_up("lo")?;
        let index = netlink.ifindex(ifname)?;
        for a in addrs {
            netlink.add_address(index, to_net(a.addr)?)?;
        }
        netlink.set_up(ifname)?;
        for a in addrs {
            let default = IpPrefix::default_for(a.addr.ip);
            self.stacks
                .replace_route(pod, default, Some(a.gateway), index)?;
        }
        for r in extra_routes {
            self.stacks.replace_route(pod, r.dst, r.gw, index)?;
        }
        // The kernel's veth traffic would otherwise carry CHECKSUM_PARTIAL (only the
        // pseudo-header sum in the L4 checksum), which the datapath receives as a wrong
        // checksum (ARCHITECTURE.md §5).
        netlink.set_tx_checksum(ifname, false)?;
        Ok(())
    }

    /// Host side: up, a host route per pod address, and a permanent neighbour entry so the
    /// node reaches the pod without ARP (kubelet probes never depend on the datapath).
    fn configure_host(&self, addrs: &[PodAddr], pod_mac: Mac) -> Result<(), CniError> {
        let node = self.stacks.of(Ns::Node)?;
        node.set_up(self.host_veth)?;
        let index = node.ifindex(self.host_veth)?;
        for a in addrs {
            let host_len = if a.addr.ip.is_ipv4() { 32 } else { 128 };
            let dst = IpPrefix::new(a.addr.ip, host_len).unwrap_or(a.addr);
            self.stacks.replace_route(Ns::Node, dst, None, index)?;
            node.set_permanent_neighbour(index, a.addr.ip, pod_mac)?;
        }
        Ok(())
    }
}

fn invalid(details: String) -> CniError {
    CniError::new(
        code::INVALID_CONFIG,
        "the IPAM result does not fit this node",
        details,
    )
}
