//! Kubernetes objects as the YAML of a state directory, for the tests that start an agent
//! on one, pcap-fixtures' cases and model's translation tests: a Node here, Services and
//! their EndpointSlices in [`service`].

pub mod service;

/// A Node as kxdp reads it: `name`, the MAC its uplink answers on (the
/// `kxdp.io/underlay-mac` annotation), its PodCIDR and InternalIP. One YAML document,
/// without a `---` separator.
pub fn node(name: &str, underlay_mac: &str, pod_cidr: &str, internal_ip: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Node
metadata:
  name: {name}
  annotations:
    kxdp.io/underlay-mac: "{underlay_mac}"
spec:
  podCIDR: {pod_cidr}
status:
  addresses:
  - type: InternalIP
    address: {internal_ip}
"#
    )
}
