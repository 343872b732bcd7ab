//! The node's own processes reaching its Service frontends: NodePorts on the node's
//! addresses, externalIPs and LoadBalancer IPs.
//!
//! Their traffic never meets XDP: to a local address it goes through `lo`, and to an
//! externalIP or LoadBalancer IP it leaves by the node's default route. kube-proxy catches
//! both in its OUTPUT chain. kxdp does it with one nftables map in the `output` hook that
//! rewrites the destination (frontend address, protocol, port) to the Service's ClusterIP
//! and port; the kernel then routes the packet again, now into `kxdp-host` like any traffic
//! to the Service CIDR, and the datapath selects a backend and NATs it exactly as for a pod
//! (Maglev, conntrack, the Service's internal traffic policy). Conntrack undoes the rewrite
//! on the answer. Chosen over policy routing with marks (a local destination is decided by
//! the `local` table before any mark rule, so NodePorts on the node's own address would need
//! that rule moved) and over cgroup connect hooks (they would see every container on the
//! node, not just the host network namespace, and need a BPF program kept per cgroup).

use std::net::IpAddr;

use datapath::Tables;
use datapath::tables::{FrontendKind, ServiceId, ServiceKey, proto};

/// One rewrite: traffic from the node to `frontend` goes to `cluster_ip` instead.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostFrontend {
    pub frontend: IpAddr,
    /// IP protocol number (TCP, UDP or SCTP).
    pub proto: u8,
    pub port: u16,
    pub cluster_ip: IpAddr,
    pub cluster_port: u16,
}

/// Every NodePort, externalIP and LoadBalancer frontend of `tables`, each with the
/// ClusterIP frontend of the same Service port, sorted. A Service port without a
/// ClusterIP of the frontend's family (none exists for NodePorts, but an externalIP may be
/// set on a headless Service) is left out: there is nothing to rewrite it to.
pub fn host_frontends(tables: &Tables) -> Vec<HostFrontend> {
    let cluster_ips: Vec<(&ServiceKey, ServiceId)> = tables
        .frontends
        .iter()
        .filter(|(_, f)| f.kind == FrontendKind::ClusterIp)
        .map(|(k, f)| (k, f.service))
        .collect();
    let mut out: Vec<HostFrontend> = tables
        .frontends
        .iter()
        .filter(|(_, f)| f.kind != FrontendKind::ClusterIp)
        .filter(|(k, _)| matches!(k.proto, proto::TCP | proto::UDP | proto::SCTP))
        .filter_map(|(k, f)| {
            let (ck, _) = cluster_ips
                .iter()
                .find(|(ck, id)| *id == f.service && ck.vip.is_v4() == k.vip.is_v4())?;
            Some(HostFrontend {
                frontend: k.vip.to_ip(),
                proto: k.proto,
                port: k.port,
                cluster_ip: ck.vip.to_ip(),
                cluster_port: ck.port,
            })
        })
        .collect();
    out.sort();
    out
}

/// The nftables rules of the `output` chain for `frontends`: one map per family.
pub fn output_rules(frontends: &[HostFrontend]) -> String {
    let mut rules = String::new();
    for v4 in [true, false] {
        let entries: Vec<String> = frontends
            .iter()
            .filter(|f| f.frontend.is_ipv4() == v4)
            .map(|f| {
                format!(
                    "{} . {} . {} : {} . {}",
                    f.frontend,
                    proto_name(f.proto),
                    f.port,
                    f.cluster_ip,
                    f.cluster_port
                )
            })
            .collect();
        if entries.is_empty() {
            continue;
        }
        let family = if v4 { "ip" } else { "ip6" };
        rules.push_str(&format!(
            "    dnat {family} to {family} daddr . meta l4proto . th dport map {{ {} }}\n",
            entries.join(", ")
        ));
    }
    rules
}

fn proto_name(p: u8) -> &'static str {
    match p {
        proto::TCP => "tcp",
        proto::UDP => "udp",
        _ => "sctp",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(frontend: &str, proto: u8, port: u16, to: &str, to_port: u16) -> HostFrontend {
        HostFrontend {
            frontend: frontend.parse().unwrap(),
            proto,
            port,
            cluster_ip: to.parse().unwrap(),
            cluster_port: to_port,
        }
    }

    #[test]
    fn rules_map_each_family_and_skip_empty_ones() {
        let rules = output_rules(&[
            f("192.168.77.11", proto::TCP, 30080, "10.96.0.11", 80),
            f("192.168.77.200", proto::UDP, 53, "10.96.0.10", 5353),
        ]);
        assert_eq!(
            rules,
            "    dnat ip to ip daddr . meta l4proto . th dport map { 192.168.77.11 . tcp . 30080 : \
             10.96.0.11 . 80, 192.168.77.200 . udp . 53 : 10.96.0.10 . 5353 }\n"
        );
        let v6 = output_rules(&[f("fd00::1", proto::SCTP, 30090, "fd00:96::b", 9)]);
        assert!(v6.starts_with("    dnat ip6 to ip6 daddr"), "{v6}");
        assert!(
            v6.contains("fd00::1 . sctp . 30090 : fd00:96::b . 9"),
            "{v6}"
        );
        assert_eq!(output_rules(&[]), "");
    }
}
