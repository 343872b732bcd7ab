//! A case's own state directory, described in Rust and written out as Kubernetes YAML.
//!
//! Cases that need something the two-node example does not have (a Service with exactly
//! one backend, another `kxdp.yaml`, dual stack) carry a `state/` dir of their own. The
//! manifests are written in the shape the API server returns them, so the loader is
//! exercised on realistic objects; nothing here decides what the datapath does.

use std::fmt::Write as _;

use testkit::manifests::service::{EndpointSpec, PortSpec, ServiceSpec};

/// A node: name, InternalIP, `kxdp.io/underlay-mac`, PodCIDRs (IPv4 first).
#[derive(Debug, Clone)]
pub struct NodeDef {
    pub name: &'static str,
    pub internal_ip: &'static str,
    pub underlay_mac: &'static str,
    pub pod_cidrs: Vec<&'static str>,
}

/// A running pod in namespace `demo` (every case uses that namespace).
#[derive(Debug, Clone)]
pub struct PodDef {
    pub name: &'static str,
    pub node: &'static str,
    /// IPv4 first, then IPv6 when dual stack.
    pub ips: Vec<&'static str>,
    /// Labels besides `app: <name>` (what NetworkPolicy selectors match), in this order.
    pub labels: Vec<(&'static str, &'static str)>,
}

/// A ClusterIP Service in `demo` with one port, and its EndpointSlice (none when
/// `backends` is empty: a Service no pod backs). The short form of [`ServiceSpec`].
#[derive(Debug, Clone)]
pub struct ServiceDef {
    pub name: &'static str,
    pub cluster_ip: &'static str,
    pub port: u16,
    /// "TCP" or "UDP".
    pub protocol: &'static str,
    pub target_port: u16,
    /// (pod IP, node name) of every ready endpoint.
    pub backends: Vec<(&'static str, &'static str)>,
}

/// A whole state directory.
#[derive(Debug, Clone)]
pub struct StateDef {
    /// `kxdp.yaml` verbatim; `None` leaves it out (every key at its default).
    pub config: Option<&'static str>,
    pub nodes: Vec<NodeDef>,
    pub pods: Vec<PodDef>,
    pub services: Vec<ServiceSpec>,
    /// NetworkPolicy manifests, verbatim, one document each (`networkpolicies.yaml`, left
    /// out when there are none so older cases regenerate byte for byte).
    pub network_policies: Vec<String>,
}

impl From<ServiceDef> for ServiceSpec {
    fn from(svc: ServiceDef) -> ServiceSpec {
        ServiceSpec::cluster_ip(
            svc.name,
            svc.cluster_ip,
            vec![PortSpec::new("p", svc.port, svc.protocol, svc.target_port)],
        )
        .endpoints(
            svc.backends
                .iter()
                .map(|(ip, node)| EndpointSpec::ready(ip, node))
                .collect(),
        )
    }
}

impl StateDef {
    /// The files of the directory, (name, contents), in a fixed order.
    pub fn files(&self) -> Vec<(String, String)> {
        let mut files = Vec::new();
        if let Some(config) = self.config {
            files.push(("kxdp.yaml".to_string(), config.to_string()));
        }
        files.push((
            "namespaces.yaml".to_string(),
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n".to_string(),
        ));
        files.push((
            "nodes.yaml".to_string(),
            documents(self.nodes.iter().map(node_yaml)),
        ));
        files.push((
            "pods.yaml".to_string(),
            documents(self.pods.iter().map(pod_yaml)),
        ));
        if !self.services.is_empty() {
            files.push((
                "services.yaml".to_string(),
                documents(self.services.iter().map(ServiceSpec::service_yaml)),
            ));
            let slices: Vec<String> = self
                .services
                .iter()
                .filter_map(ServiceSpec::slice_yaml)
                .collect();
            if !slices.is_empty() {
                files.push((
                    "endpointslices.yaml".to_string(),
                    documents(slices.into_iter()),
                ));
            }
        }
        if !self.network_policies.is_empty() {
            files.push((
                "networkpolicies.yaml".to_string(),
                documents(self.network_policies.iter().cloned()),
            ));
        }
        files
    }
}

fn documents(docs: impl Iterator<Item = String>) -> String {
    docs.collect::<Vec<_>>().join("---\n")
}

fn node_yaml(n: &NodeDef) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {}\n  annotations:\n    kxdp.io/underlay-mac: \"{}\"\nspec:\n  podCIDR: {}\n  podCIDRs:\n",
        n.name, n.underlay_mac, n.pod_cidrs[0]
    );
    for c in &n.pod_cidrs {
        let _ = writeln!(s, "    - {c}");
    }
    let _ = write!(
        s,
        "status:\n  addresses:\n    - type: InternalIP\n      address: {}\n    - type: Hostname\n      address: {}\n",
        n.internal_ip, n.name
    );
    s
}

fn pod_yaml(p: &PodDef) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: demo\n  labels:\n    app: {name}\n{labels}spec:\n  nodeName: {node}\n  containers:\n    - name: main\n      image: busybox\nstatus:\n  phase: Running\n  podIP: {ip}\n  podIPs:\n",
        name = p.name,
        node = p.node,
        ip = p.ips[0],
        labels = p
            .labels
            .iter()
            .map(|(k, v)| format!("    {k}: {v}\n"))
            .collect::<String>()
    );
    for ip in &p.ips {
        let _ = writeln!(s, "    - ip: {ip}");
    }
    s
}
