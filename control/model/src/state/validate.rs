//! Load-time checks, one function per kind. Each returns the first problem as a field path
//! (`spec.ports[1].protocol`) and a message; the loader adds file and object.
//!
//! The rule for what is checked: every field `translate` (and the policy compiler after it)
//! reads, so translate can treat a parse failure as "skip with a warning" without it ever
//! happening for a state directory. Fields kxdp ignores are not judged.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, ServiceCIDR,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::k8s::{
    UNDERLAY_MAC_ANNOTATION, parse_cidr, parse_ip, parse_unicast_mac, port_number, protocol_number,
};

#[derive(Debug)]
pub(super) struct FieldError {
    pub field: String,
    pub message: String,
}

type Check = Result<(), FieldError>;

fn fail(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// Adds the field path to a parser's error.
fn at<T, E: std::fmt::Display>(
    field: impl FnOnce() -> String,
    r: Result<T, E>,
) -> Result<T, FieldError> {
    r.map_err(|e| FieldError {
        field: field(),
        message: e.to_string(),
    })
}

/// Dual-stack lists (`podCIDRs`, `podIPs`, `clusterIPs`) hold at most one address per family.
fn one_per_family(field: &str, families: &[bool]) -> Check {
    if families.len() > 2 || (families.len() == 2 && families[0] == families[1]) {
        return Err(fail(
            field,
            "at most two entries, one IPv4 and one IPv6 (dual stack)",
        ));
    }
    Ok(())
}

pub(super) fn node(node: &Node) -> Check {
    if let Some(spec) = &node.spec {
        let single = match &spec.pod_cidr {
            Some(c) if !c.is_empty() => Some(at(|| "spec.podCIDR".into(), parse_cidr(c))?),
            _ => None,
        };
        let list = spec.pod_cidrs.as_deref().unwrap_or_default();
        let mut parsed = Vec::new();
        for (i, c) in list.iter().enumerate() {
            parsed.push(at(|| format!("spec.podCIDRs[{i}]"), parse_cidr(c))?);
        }
        let families: Vec<bool> = parsed.iter().map(|c| c.addr.is_v4()).collect();
        one_per_family("spec.podCIDRs", &families)?;
        if let (Some(single), Some(first)) = (single, parsed.first())
            && single != *first
        {
            return Err(fail(
                "spec.podCIDR",
                format!("{single} differs from spec.podCIDRs[0] {first}"),
            ));
        }
    }
    if let Some(status) = &node.status {
        for (i, a) in status.addresses.iter().flatten().enumerate() {
            // Hostname / InternalDNS / ExternalDNS entries are names, not addresses.
            if matches!(a.type_.as_str(), "InternalIP" | "ExternalIP") {
                at(
                    || format!("status.addresses[{i}].address"),
                    parse_ip(&a.address),
                )?;
            }
        }
    }
    if let Some(mac) = crate::k8s::node_underlay_mac(node) {
        at(
            || format!("metadata.annotations[{UNDERLAY_MAC_ANNOTATION:?}]"),
            parse_unicast_mac(mac),
        )?;
    }
    Ok(())
}

/// `spec.cidrs`: CIDRs, at most one per family, as the API server admits them.
pub(super) fn service_cidr(object: &ServiceCIDR) -> Check {
    let cidrs = object
        .spec
        .as_ref()
        .and_then(|s| s.cidrs.as_deref())
        .unwrap_or_default();
    let mut families = Vec::new();
    for (i, c) in cidrs.iter().enumerate() {
        let cidr = at(|| format!("spec.cidrs[{i}]"), parse_cidr(c))?;
        families.push(cidr.addr.is_v4());
    }
    one_per_family("spec.cidrs", &families)
}

pub(super) fn namespace(_ns: &Namespace) -> Check {
    // Only name and labels are read, and any label map is valid.
    Ok(())
}

pub(super) fn pod(pod: &Pod) -> Check {
    if let Some(status) = &pod.status {
        let single = match &status.pod_ip {
            Some(ip) if !ip.is_empty() => Some(at(|| "status.podIP".into(), parse_ip(ip))?),
            _ => None,
        };
        let mut parsed = Vec::new();
        for (i, p) in status.pod_ips.iter().flatten().enumerate() {
            parsed.push(at(|| format!("status.podIPs[{i}].ip"), parse_ip(&p.ip))?);
        }
        let families: Vec<bool> = parsed.iter().map(IpAddr::is_ipv4).collect();
        one_per_family("status.podIPs", &families)?;
        if let (Some(single), Some(first)) = (single, parsed.first())
            && single != *first
        {
            return Err(fail(
                "status.podIP",
                format!("{single} differs from status.podIPs[0] {first}"),
            ));
        }
    }
    if let Some(spec) = &pod.spec {
        for (c, container) in spec.containers.iter().enumerate() {
            for (p, port) in container.ports.iter().flatten().enumerate() {
                let field = |f: &str| format!("spec.containers[{c}].ports[{p}].{f}");
                at(|| field("containerPort"), port_number(port.container_port))?;
                at(
                    || field("protocol"),
                    protocol_number(port.protocol.as_deref()),
                )?;
                if let Some(name) = &port.name {
                    at(|| field("name"), port_name(name))?;
                }
            }
        }
    }
    Ok(())
}

pub(super) fn service(svc: &Service) -> Check {
    let Some(spec) = &svc.spec else {
        return Ok(());
    };
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    if !matches!(
        ty,
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        return Err(fail(
            "spec.type",
            format!(
                "{ty:?} is not a Service type (ClusterIP, NodePort, LoadBalancer, ExternalName)"
            ),
        ));
    }

    let single = spec.cluster_ip.as_deref().filter(|s| !s.is_empty());
    if let Some(ip) = single
        && ip != "None"
    {
        at(|| "spec.clusterIP".into(), parse_ip(ip))?;
    }
    let list = spec.cluster_ips.as_deref().unwrap_or_default();
    let mut families = Vec::new();
    for (i, ip) in list.iter().enumerate() {
        if ip == "None" {
            if list.len() > 1 {
                return Err(fail(
                    format!("spec.clusterIPs[{i}]"),
                    "\"None\" (headless) must be the only entry",
                ));
            }
            continue;
        }
        families.push(at(|| format!("spec.clusterIPs[{i}]"), parse_ip(ip))?.is_ipv4());
    }
    one_per_family("spec.clusterIPs", &families)?;
    if let (Some(single), Some(first)) = (single, list.first())
        && single != first
    {
        return Err(fail(
            "spec.clusterIP",
            format!("{single:?} differs from spec.clusterIPs[0] {first:?}"),
        ));
    }
    for (i, f) in spec.ip_families.iter().flatten().enumerate() {
        if f != "IPv4" && f != "IPv6" {
            return Err(fail(
                format!("spec.ipFamilies[{i}]"),
                format!("{f:?} is not IPv4 or IPv6"),
            ));
        }
    }

    let ports = spec.ports.as_deref().unwrap_or_default();
    for (i, port) in ports.iter().enumerate() {
        let field = |f: &str| format!("spec.ports[{i}].{f}");
        at(|| field("port"), port_number(port.port))?;
        at(
            || field("protocol"),
            protocol_number(port.protocol.as_deref()),
        )?;
        // 0 is how an unset nodePort reads back from some tools.
        if let Some(np) = port.node_port.filter(|&p| p != 0) {
            at(|| field("nodePort"), port_number(np))?;
        }
        match &port.target_port {
            Some(IntOrString::Int(p)) => {
                at(|| field("targetPort"), port_number(*p))?;
            }
            Some(IntOrString::String(name)) => {
                at(|| field("targetPort"), port_name(name))?;
            }
            None => {}
        }
        // Endpoint ports are matched to Service ports by name, so with several ports each
        // needs a distinct one (the API server enforces the same).
        let name = port.name.as_deref().unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            return Err(fail(
                field("name"),
                "required when a Service has more than one port",
            ));
        }
        if ports[..i]
            .iter()
            .any(|p| p.name.as_deref().unwrap_or("") == name)
        {
            return Err(fail(field("name"), format!("{name:?} is used twice")));
        }
    }

    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        at(|| format!("spec.externalIPs[{i}]"), parse_ip(ip))?;
    }
    if let Some(ip) = spec.load_balancer_ip.as_deref().filter(|s| !s.is_empty()) {
        at(|| "spec.loadBalancerIP".into(), parse_ip(ip))?;
    }
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default();
    for (i, ing) in ingress.iter().enumerate() {
        if let Some(ip) = ing.ip.as_deref().filter(|s| !s.is_empty()) {
            at(
                || format!("status.loadBalancer.ingress[{i}].ip"),
                parse_ip(ip),
            )?;
        }
    }

    if let Some(a) = &spec.session_affinity
        && a != "None"
        && a != "ClientIP"
    {
        return Err(fail(
            "spec.sessionAffinity",
            format!("{a:?} is not None or ClientIP"),
        ));
    }
    let timeout = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds);
    if let Some(t) = timeout
        && !(1..=86400).contains(&t)
    {
        return Err(fail(
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            format!("{t} is out of range (1..=86400)"),
        ));
    }
    for (field, value) in [
        ("spec.externalTrafficPolicy", &spec.external_traffic_policy),
        ("spec.internalTrafficPolicy", &spec.internal_traffic_policy),
    ] {
        if let Some(v) = value
            && v != "Cluster"
            && v != "Local"
        {
            return Err(fail(field, format!("{v:?} is not Cluster or Local")));
        }
    }
    Ok(())
}

pub(super) fn endpoint_slice(slice: &EndpointSlice) -> Check {
    let want_v4 = match slice.address_type.as_str() {
        "IPv4" => Some(true),
        "IPv6" => Some(false),
        // Names, not addresses: kube-proxy ignores such slices and so does translate.
        "FQDN" => None,
        "" => return Err(fail("addressType", "missing (IPv4, IPv6 or FQDN)")),
        other => {
            return Err(fail(
                "addressType",
                format!("{other:?} is not IPv4, IPv6 or FQDN"),
            ));
        }
    };
    if let Some(want_v4) = want_v4 {
        for (e, endpoint) in slice.endpoints.iter().enumerate() {
            for (a, addr) in endpoint.addresses.iter().enumerate() {
                let field = || format!("endpoints[{e}].addresses[{a}]");
                let ip = at(field, parse_ip(addr))?;
                if ip.is_ipv4() != want_v4 {
                    return Err(fail(
                        field(),
                        format!("{addr:?} is not an {} address", slice.address_type),
                    ));
                }
            }
        }
    }
    for (i, port) in slice.ports.iter().flatten().enumerate() {
        // An unset port is legal in the API ("all ports"); translate skips it as kube-proxy does.
        if let Some(p) = port.port {
            at(|| format!("ports[{i}].port"), port_number(p))?;
        }
        at(
            || format!("ports[{i}].protocol"),
            protocol_number(port.protocol.as_deref()),
        )?;
    }
    Ok(())
}

pub(super) fn network_policy(np: &NetworkPolicy) -> Check {
    let Some(spec) = &np.spec else {
        return Ok(());
    };
    for (i, t) in spec.policy_types.iter().flatten().enumerate() {
        if t != "Ingress" && t != "Egress" {
            return Err(fail(
                format!("spec.policyTypes[{i}]"),
                format!("{t:?} is not Ingress or Egress"),
            ));
        }
    }
    for (i, rule) in spec.ingress.iter().flatten().enumerate() {
        peers(&format!("spec.ingress[{i}].from"), rule.from.as_deref())?;
        policy_ports(&format!("spec.ingress[{i}].ports"), rule.ports.as_deref())?;
    }
    for (i, rule) in spec.egress.iter().flatten().enumerate() {
        peers(&format!("spec.egress[{i}].to"), rule.to.as_deref())?;
        policy_ports(&format!("spec.egress[{i}].ports"), rule.ports.as_deref())?;
    }
    Ok(())
}

fn peers(path: &str, peers: Option<&[NetworkPolicyPeer]>) -> Check {
    for (j, peer) in peers.unwrap_or_default().iter().enumerate() {
        let Some(block) = &peer.ip_block else {
            continue;
        };
        let cidr = at(
            || format!("{path}[{j}].ipBlock.cidr"),
            parse_cidr(&block.cidr),
        )?;
        for (k, except) in block.except.iter().flatten().enumerate() {
            let field = || format!("{path}[{j}].ipBlock.except[{k}]");
            let e = at(field, parse_cidr(except))?;
            // An except outside its cidr excludes nothing: almost certainly a typo.
            if e.key_len < cidr.key_len || !cidr.contains(e.addr) {
                return Err(fail(
                    field(),
                    format!("{except:?} is not inside {:?}", block.cidr),
                ));
            }
        }
    }
    Ok(())
}

fn policy_ports(path: &str, ports: Option<&[NetworkPolicyPort]>) -> Check {
    for (j, port) in ports.unwrap_or_default().iter().enumerate() {
        let field = |f: &str| format!("{path}[{j}].{f}");
        at(
            || field("protocol"),
            protocol_number(port.protocol.as_deref()),
        )?;
        let start = match &port.port {
            Some(IntOrString::Int(p)) => Some(at(|| field("port"), port_number(*p))?),
            Some(IntOrString::String(name)) => {
                at(|| field("port"), port_name(name))?;
                None
            }
            None => None,
        };
        if let Some(end) = port.end_port {
            let end = at(|| field("endPort"), port_number(end))?;
            match start {
                Some(start) if end >= start => {}
                Some(start) => {
                    return Err(fail(
                        field("endPort"),
                        format!("{end} is below port {start}"),
                    ));
                }
                None => {
                    return Err(fail(
                        field("endPort"),
                        "needs a numeric port to start the range",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A named port the API server would refuse.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a port name (1-15 of a-z, 0-9, '-', with a letter)")]
struct NotAPortName(String);

/// A named port (IANA service name syntax, as the API validates it): 1-15 characters of
/// `a-z`, `0-9` and `-`, at least one letter, no hyphen at either end or twice in a row.
fn port_name(name: &str) -> Result<(), NotAPortName> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(NotAPortName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names() {
        for good in ["http", "h2c", "dns-tcp", "a1"] {
            assert!(port_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "HTTP",
            "8080",
            "-http",
            "http-",
            "a--b",
            "sixteen-chars-xx",
        ] {
            assert!(port_name(bad).is_err(), "{bad}");
        }
    }
}
