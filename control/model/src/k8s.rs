//! How kxdp reads Kubernetes objects: the field fallbacks (`podIPs` before `podIP`, ...),
//! the well-known labels and annotations, and the strict parsers for addresses, MACs and
//! protocols.
//!
//! Load-time validation (`state`) and `translate` both go through these helpers, so anything
//! that passed validation reads the same way in translate. Pure: no IO.

use std::collections::BTreeMap;
use std::net::IpAddr;

use datapath::tables::proto;
use datapath::{Cidr, IpKey, MacAddr};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Node annotation: the MAC the node's uplink answers on (docs/replay.md).
pub const UNDERLAY_MAC_ANNOTATION: &str = "kxdp.io/underlay-mac";
/// Node annotation: the node's VXLAN tunnel (VTEP) IPv4 address, when it is not the
/// node's first IPv4 `InternalIP` (the agent writes its uplink's address here).
pub const VTEP_ADDRESS_ANNOTATION: &str = "kxdp.io/vtep-address";
/// EndpointSlice label naming the Service it belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// A Service (and its EndpointSlices) meant for another service proxy: kube-proxy leaves
/// every object that has it alone, whatever its value.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Put on a headless Service's EndpointSlices; kube-proxy does not watch objects with it.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Namespace label the API server sets to the namespace's own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// The taint the Cluster Autoscaler puts on a Node it is about to delete.
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// Whether load balancers should keep sending traffic to `node`, as kube-proxy's `/healthz`
/// decides it (its `nodeEligible`): not while the Node is being deleted or tainted for
/// deletion by the Cluster Autoscaler, so connections drain before the node goes.
pub fn node_eligible(node: &Node) -> bool {
    if node.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref());
    !taints
        .unwrap_or_default()
        .iter()
        .any(|t| t.key == TO_BE_DELETED_TAINT)
}

/// The namespace of a namespaced object that does not say, as `kubectl apply` assumes.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Why a field's text is not what kxdp reads there. The Display quotes the text; callers
/// put the field (and object) in front.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("{0:?} is not an IP address")]
    NotAnIp(String),
    #[error("{0:?}: IPv4-mapped IPv6 addresses are not allowed")]
    MappedIp(String),
    #[error("{0:?} is not a CIDR (want address/prefix)")]
    NotACidr(String),
    #[error("{0:?} is not a CIDR (bad address)")]
    CidrAddress(String),
    #[error("{0:?}: IPv4-mapped IPv6 prefixes are not allowed")]
    MappedCidr(String),
    #[error("{text:?}: prefix: {source}")]
    PrefixNotANumber {
        text: String,
        source: std::num::ParseIntError,
    },
    #[error("{0:?}: prefix too long")]
    PrefixTooLong(String),
    #[error("{0:?} is not a MAC address")]
    NotAMac(String),
    #[error("{0:?} is a multicast MAC, not an interface address")]
    MulticastMac(String),
    #[error("{0:?} is the all-zero MAC")]
    ZeroMac(String),
    #[error("{0:?} is IPv6: the VXLAN underlay is IPv4")]
    Ipv6Underlay(String),
    #[error("{0:?} is not a protocol (TCP, UDP or SCTP)")]
    NotAProtocol(String),
    /// Kept as the API's `int32` so the message shows the number as written.
    #[error("{0} is not a port number (1..=65535)")]
    NotAPort(i32),
}

/// Parses an IP address as Kubernetes stores it. IPv4-mapped IPv6 is refused: the tables
/// key IPv4 in exactly that form, so `::ffff:10.0.0.1` would alias `10.0.0.1`.
pub fn parse_ip(text: &str) -> Result<IpAddr, ValueError> {
    let ip: IpAddr = text
        .parse()
        .map_err(|_| ValueError::NotAnIp(text.to_string()))?;
    if let IpAddr::V6(v6) = ip
        && v6.to_ipv4_mapped().is_some()
    {
        return Err(ValueError::MappedIp(text.to_string()));
    }
    Ok(ip)
}

pub fn parse_ip_key(text: &str) -> Result<IpKey, ValueError> {
    parse_ip(text).map(IpKey::from)
}

/// Parses a CIDR (`10.244.1.0/24`); host bits are cleared, as the tables store networks.
pub fn parse_cidr(text: &str) -> Result<Cidr, ValueError> {
    crate::config::parse_cidr(text)
}

/// Parses a unicast MAC (`02:00:c0:a8:32:0a`); a multicast or all-zero address cannot be an
/// interface's own address, so it is refused rather than written into frames.
pub fn parse_unicast_mac(text: &str) -> Result<MacAddr, ValueError> {
    // The datapath's parser says only "not a MAC address" whatever went wrong.
    let mac: MacAddr = text
        .parse()
        .map_err(|_| ValueError::NotAMac(text.to_string()))?;
    if mac.is_multicast() {
        return Err(ValueError::MulticastMac(text.to_string()));
    }
    if mac == MacAddr::ZERO {
        return Err(ValueError::ZeroMac(text.to_string()));
    }
    Ok(mac)
}

/// The IP protocol number of a Kubernetes `protocol` field; unset means TCP (API default).
pub fn protocol_number(protocol: Option<&str>) -> Result<u8, ValueError> {
    match protocol.unwrap_or("TCP") {
        "TCP" => Ok(proto::TCP),
        "UDP" => Ok(proto::UDP),
        "SCTP" => Ok(proto::SCTP),
        other => Err(ValueError::NotAProtocol(other.to_string())),
    }
}

/// A port number from an API `int32`: 1..=65535.
pub fn port_number(port: i32) -> Result<u16, ValueError> {
    match u16::try_from(port) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(ValueError::NotAPort(port)),
    }
}

/// `metadata.namespace`, or `default` when unset.
pub fn namespace_of(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
}

pub fn name_of(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

/// The node's PodCIDRs: `spec.podCIDRs` (dual stack), else `spec.podCIDR`.
pub fn node_pod_cidrs(node: &Node) -> Vec<&str> {
    let Some(spec) = &node.spec else {
        return Vec::new();
    };
    match &spec.pod_cidrs {
        Some(list) if !list.is_empty() => list.iter().map(String::as_str).collect(),
        _ => spec.pod_cidr.as_deref().into_iter().collect(),
    }
}

/// `(type, address)` of every `status.addresses` entry.
pub fn node_addresses(node: &Node) -> impl Iterator<Item = (&str, &str)> {
    node.status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .map(|a| (a.type_.as_str(), a.address.as_str()))
}

/// The node's first IPv4 `InternalIP`.
pub fn node_internal_ipv4(node: &Node) -> Option<[u8; 4]> {
    node_addresses(node)
        .filter(|(ty, _)| *ty == "InternalIP")
        .find_map(|(_, addr)| match parse_ip(addr) {
            Ok(IpAddr::V4(v4)) => Some(v4.octets()),
            _ => None,
        })
}

/// The raw `kxdp.io/vtep-address` annotation, when present.
pub fn node_vtep_annotation(node: &Node) -> Option<&str> {
    node.metadata
        .annotations
        .as_ref()?
        .get(VTEP_ADDRESS_ANNOTATION)
        .map(String::as_str)
}

/// Parses a `kxdp.io/vtep-address` value: one IPv4 address.
pub fn parse_vtep_address(text: &str) -> Result<[u8; 4], ValueError> {
    match parse_ip(text)? {
        IpAddr::V4(v4) => Ok(v4.octets()),
        IpAddr::V6(_) => Err(ValueError::Ipv6Underlay(text.to_string())),
    }
}

/// The node's underlay (VTEP) IPv4 address: the `kxdp.io/vtep-address` annotation when
/// present and valid, else the first IPv4 `InternalIP`. A present but invalid annotation
/// adds a warning to `warnings` and falls back.
pub fn node_underlay_ipv4(node: &Node, warnings: &mut Vec<String>) -> Option<[u8; 4]> {
    if let Some(text) = node_vtep_annotation(node) {
        match parse_vtep_address(text) {
            Ok(ip) => return Some(ip),
            Err(e) => warnings.push(format!(
                "Node {}: {VTEP_ADDRESS_ANNOTATION}: {e}: using its InternalIP instead",
                name_of(&node.metadata)
            )),
        }
    }
    node_internal_ipv4(node)
}

/// The raw `kxdp.io/underlay-mac` annotation, when present.
pub fn node_underlay_mac(node: &Node) -> Option<&str> {
    node.metadata
        .annotations
        .as_ref()?
        .get(UNDERLAY_MAC_ANNOTATION)
        .map(String::as_str)
}

/// The pod's addresses: `status.podIPs` (dual stack), else `status.podIP`.
pub fn pod_ips(pod: &Pod) -> Vec<&str> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    match &status.pod_ips {
        Some(list) if !list.is_empty() => list.iter().map(|p| p.ip.as_str()).collect(),
        _ => status
            .pod_ip
            .as_deref()
            .filter(|s| !s.is_empty())
            .into_iter()
            .collect(),
    }
}

/// The Service's cluster IPs as written: `spec.clusterIPs`, else `spec.clusterIP`. May be
/// `["None"]` (headless) or empty (none allocated).
pub fn service_cluster_ips(svc: &Service) -> Vec<&str> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    match &spec.cluster_ips {
        Some(list) if !list.is_empty() => list.iter().map(String::as_str).collect(),
        _ => spec
            .cluster_ip
            .as_deref()
            .filter(|s| !s.is_empty())
            .into_iter()
            .collect(),
    }
}

/// `spec.type`, defaulting to `ClusterIP` as the API server does.
pub fn service_type(svc: &Service) -> &str {
    svc.spec
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("ClusterIP")
}

/// The Service an EndpointSlice belongs to (its `kubernetes.io/service-name` label).
pub fn slice_service_name(slice: &EndpointSlice) -> Option<&str> {
    slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)
        .map(String::as_str)
}

/// A namespace's labels with `kubernetes.io/metadata.name` filled in when missing, as the
/// API server always sets it (namespaceSelectors match on it).
pub fn namespace_labels(ns: &Namespace) -> BTreeMap<String, String> {
    let mut labels = ns.metadata.labels.clone().unwrap_or_default();
    labels
        .entry(NAMESPACE_NAME_LABEL.to_string())
        .or_insert_with(|| name_of(&ns.metadata).to_string());
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        assert_eq!(
            parse_ip("10.244.1.x").unwrap_err().to_string(),
            "\"10.244.1.x\" is not an IP address"
        );
        assert!(parse_ip("::ffff:10.0.0.1").is_err());
        assert!(parse_ip("010.0.0.1").is_err());
        assert!(parse_ip("fd00::1").is_ok());
        assert!(parse_unicast_mac("01:00:5e:00:00:01").is_err());
        assert!(parse_unicast_mac("00:00:00:00:00:00").is_err());
        assert!(parse_unicast_mac("02:00:c0:a8:32:0a").is_ok());
        assert_eq!(protocol_number(None), Ok(proto::TCP));
        assert_eq!(protocol_number(Some("SCTP")), Ok(proto::SCTP));
        assert!(protocol_number(Some("tcp")).is_err());
        assert!(port_number(0).is_err() && port_number(65536).is_err());
        assert_eq!(port_number(80), Ok(80));
    }

    #[test]
    fn nodes_being_deleted_or_tainted_for_deletion_are_not_eligible() {
        let node = |extra: serde_json::Value| -> Node {
            let mut n = serde_json::json!({"metadata": {"name": "n1"}});
            if let (Some(n), Some(extra)) = (n.as_object_mut(), extra.as_object()) {
                n.extend(extra.clone());
            }
            serde_json::from_value(n).unwrap()
        };
        assert!(node_eligible(&node(serde_json::json!({}))));
        let other_taint = serde_json::json!({"spec": {"taints": [
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}});
        assert!(node_eligible(&node(other_taint)));
        let autoscaler = serde_json::json!({"spec": {"taints": [
            {"key": TO_BE_DELETED_TAINT, "value": "1733612345", "effect": "NoSchedule"}]}});
        assert!(!node_eligible(&node(autoscaler)));
        let deleting = serde_json::json!({"metadata": {"name": "n1",
            "deletionTimestamp": "2026-12-07T10:00:00Z"}});
        assert!(!node_eligible(&node(deleting)));
    }

    fn node(annotation: Option<&str>, internal_ip: Option<&str>) -> Node {
        let mut node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1"},
            "status": {"addresses": [{"type": "Hostname", "address": "n1"}]},
        }))
        .unwrap();
        if let Some(a) = annotation {
            node.metadata.annotations =
                Some([(VTEP_ADDRESS_ANNOTATION.to_string(), a.to_string())].into());
        }
        if let Some(ip) = internal_ip
            && let Some(status) = node.status.as_mut()
            && let Some(addresses) = status.addresses.as_mut()
        {
            addresses.push(k8s_openapi::api::core::v1::NodeAddress {
                type_: "InternalIP".into(),
                address: ip.into(),
            });
        }
        node
    }

    #[test]
    fn underlay_address_prefers_a_valid_vtep_annotation() {
        let mut warnings = Vec::new();
        let both = node(Some("192.168.9.9"), Some("10.0.0.1"));
        assert_eq!(
            node_underlay_ipv4(&both, &mut warnings),
            Some([192, 168, 9, 9])
        );
        let annotation_only = node(Some("192.168.9.9"), None);
        assert_eq!(
            node_underlay_ipv4(&annotation_only, &mut warnings),
            Some([192, 168, 9, 9])
        );
        let internal_only = node(None, Some("10.0.0.1"));
        assert_eq!(
            node_underlay_ipv4(&internal_only, &mut warnings),
            Some([10, 0, 0, 1])
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(node_underlay_ipv4(&node(None, None), &mut warnings), None);
    }

    #[test]
    fn an_invalid_vtep_annotation_warns_and_falls_back() {
        for bad in ["fd00::1", "192.168.9", "::ffff:10.0.0.1", ""] {
            let mut warnings = Vec::new();
            let n = node(Some(bad), Some("10.0.0.1"));
            assert_eq!(node_underlay_ipv4(&n, &mut warnings), Some([10, 0, 0, 1]));
            assert_eq!(warnings.len(), 1, "{bad:?}: {warnings:?}");
            assert!(
                warnings[0].starts_with("Node n1: kxdp.io/vtep-address: ")
                    && warnings[0].ends_with(": using its InternalIP instead"),
                "{warnings:?}"
            );
        }
        let mut warnings = Vec::new();
        assert_eq!(
            node_underlay_ipv4(&node(Some("nope"), None), &mut warnings),
            None
        );
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn namespace_name_label_is_implied() {
        let mut ns = Namespace::default();
        ns.metadata.name = Some("demo".into());
        assert_eq!(namespace_labels(&ns)[NAMESPACE_NAME_LABEL], "demo");
        ns.metadata.labels = Some([(NAMESPACE_NAME_LABEL.to_string(), "x".to_string())].into());
        assert_eq!(namespace_labels(&ns)[NAMESPACE_NAME_LABEL], "x");
    }
}
