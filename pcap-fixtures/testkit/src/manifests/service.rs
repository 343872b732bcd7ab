//! Services and their EndpointSlices as a state directory needs them: several ports and
//! protocols, NodePorts, external and load-balancer IPs, traffic policies, session
//! affinity and endpoint conditions (KEP-1669).
//!
//! pcap-fixtures' cases write their state directories with it (its `state::ServiceDef`,
//! the short form for the common one-port ClusterIP Service, converts into a
//! [`ServiceSpec`]), and so do model's translation tests. The committed cases are
//! regenerated and compared byte for byte, so what this writes for a given spec must not
//! change: a new option has to leave the output of specs that do not set it as it was.
//! Only what a spec sets is written: the loader must apply the API defaults (unset
//! `serving` read as `ready`, unset traffic policies as `Cluster`) itself.

use std::fmt::Write as _;

/// One Service port: `name` is shared with the EndpointSlice port it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub name: String,
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: &'static str,
    /// Also the EndpointSlice's port number (what the endpoints listen on).
    pub target_port: u16,
    pub node_port: Option<u16>,
}

impl PortSpec {
    /// A port named `name`, without a NodePort.
    pub fn new(name: &str, port: u16, protocol: &'static str, target_port: u16) -> PortSpec {
        PortSpec {
            name: name.to_string(),
            port,
            protocol,
            target_port,
            node_port: None,
        }
    }

    /// The same port, also at `node_port` on every node.
    pub fn node_port(self, node_port: u16) -> PortSpec {
        PortSpec {
            node_port: Some(node_port),
            ..self
        }
    }
}

/// `conditions` of an endpoint; `None` leaves the key out (as an older controller would).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conditions {
    pub ready: bool,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
}

impl Conditions {
    /// What the EndpointSlice controller writes for a ready pod, reduced to `ready: true`
    /// (the short form's output).
    pub const READY: Conditions = Conditions {
        ready: true,
        serving: None,
        terminating: None,
    };
    /// A ready pod with every key written, as the EndpointSlice controller does:
    /// `ready: true, serving: true, terminating: false`.
    pub const READY_SERVING: Conditions = Conditions {
        ready: true,
        serving: Some(true),
        terminating: Some(false),
    };
    /// A pod failing its readiness probe, not being deleted: never a backend.
    pub const NOT_READY: Conditions = Conditions {
        ready: false,
        serving: Some(false),
        terminating: Some(false),
    };
    /// A pod being deleted that still passes its readiness probe: KEP-1669's fallback.
    pub const SERVING_TERMINATING: Conditions = Conditions {
        ready: false,
        serving: Some(true),
        terminating: Some(true),
    };
    /// A pod being deleted that no longer answers its probe.
    pub const TERMINATING_NOT_SERVING: Conditions = Conditions {
        ready: false,
        serving: Some(false),
        terminating: Some(true),
    };
}

/// One endpoint address of a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    pub ip: String,
    pub node: String,
    pub conditions: Conditions,
}

impl EndpointSpec {
    pub fn new(ip: &str, node: &str, conditions: Conditions) -> EndpointSpec {
        EndpointSpec {
            ip: ip.to_string(),
            node: node.to_string(),
            conditions,
        }
    }

    pub fn ready(ip: &str, node: &str) -> EndpointSpec {
        EndpointSpec::new(ip, node, Conditions::READY)
    }
}

/// A `status.loadBalancer.ingress` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressSpec {
    pub ip: String,
    /// `VIP` or `Proxy` (KEP-1860); `None` leaves it out (read as `VIP`).
    pub ip_mode: Option<&'static str>,
}

/// A Service in namespace `demo` and its one EndpointSlice (none without endpoints, unless
/// [`ServiceSpec::empty_slice`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    /// `ClusterIP`, `NodePort` or `LoadBalancer`.
    pub kind: &'static str,
    pub cluster_ip: String,
    pub ports: Vec<PortSpec>,
    pub external_ips: Vec<String>,
    pub ingress: Vec<IngressSpec>,
    /// `externalTrafficPolicy`, left out when `None`.
    pub external_traffic_policy: Option<&'static str>,
    /// `internalTrafficPolicy`, left out when `None`.
    pub internal_traffic_policy: Option<&'static str>,
    /// `sessionAffinity: ClientIP` with this `timeoutSeconds`.
    pub affinity_timeout_s: Option<u32>,
    pub endpoints: Vec<EndpointSpec>,
    /// Write the EndpointSlice even when `endpoints` is empty (`endpoints: []`).
    pub empty_slice: bool,
}

impl ServiceSpec {
    /// A ClusterIP Service with these ports and no endpoints yet.
    pub fn cluster_ip(name: &str, cluster_ip: &str, ports: Vec<PortSpec>) -> ServiceSpec {
        ServiceSpec {
            name: name.to_string(),
            kind: "ClusterIP",
            cluster_ip: cluster_ip.to_string(),
            ports,
            external_ips: Vec::new(),
            ingress: Vec::new(),
            external_traffic_policy: None,
            internal_traffic_policy: None,
            affinity_timeout_s: None,
            endpoints: Vec::new(),
            empty_slice: false,
        }
    }

    pub fn kind(self, kind: &'static str) -> ServiceSpec {
        ServiceSpec { kind, ..self }
    }

    pub fn endpoints(self, endpoints: Vec<EndpointSpec>) -> ServiceSpec {
        ServiceSpec { endpoints, ..self }
    }

    /// Without endpoints, an EndpointSlice that lists none (`endpoints: []`, what the
    /// controller leaves when the last pod goes) rather than no EndpointSlice at all.
    pub fn empty_slice(self) -> ServiceSpec {
        ServiceSpec {
            empty_slice: true,
            ..self
        }
    }

    pub fn external_ips(self, ips: &[&str]) -> ServiceSpec {
        ServiceSpec {
            external_ips: ips.iter().map(|s| s.to_string()).collect(),
            ..self
        }
    }

    pub fn ingress(self, ingress: &[(&str, Option<&'static str>)]) -> ServiceSpec {
        ServiceSpec {
            ingress: ingress
                .iter()
                .map(|(ip, ip_mode)| IngressSpec {
                    ip: ip.to_string(),
                    ip_mode: *ip_mode,
                })
                .collect(),
            ..self
        }
    }

    pub fn external_traffic_policy(self, policy: &'static str) -> ServiceSpec {
        ServiceSpec {
            external_traffic_policy: Some(policy),
            ..self
        }
    }

    pub fn internal_traffic_policy(self, policy: &'static str) -> ServiceSpec {
        ServiceSpec {
            internal_traffic_policy: Some(policy),
            ..self
        }
    }

    pub fn affinity(self, timeout_s: u32) -> ServiceSpec {
        ServiceSpec {
            affinity_timeout_s: Some(timeout_s),
            ..self
        }
    }

    /// The Service manifest.
    pub fn service_yaml(&self) -> String {
        let mut s = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: demo\nspec:\n  type: {kind}\n  clusterIP: {ip}\n  clusterIPs:\n    - {ip}\n  ports:\n",
            name = self.name,
            kind = self.kind,
            ip = self.cluster_ip
        );
        for p in &self.ports {
            let _ = write!(
                s,
                "    - name: {}\n      port: {}\n      protocol: {}\n      targetPort: {}\n",
                p.name, p.port, p.protocol, p.target_port
            );
            if let Some(np) = p.node_port {
                let _ = writeln!(s, "      nodePort: {np}");
            }
        }
        if !self.external_ips.is_empty() {
            s.push_str("  externalIPs:\n");
            for ip in &self.external_ips {
                let _ = writeln!(s, "    - {ip}");
            }
        }
        if let Some(p) = self.external_traffic_policy {
            let _ = writeln!(s, "  externalTrafficPolicy: {p}");
        }
        if let Some(p) = self.internal_traffic_policy {
            let _ = writeln!(s, "  internalTrafficPolicy: {p}");
        }
        if let Some(t) = self.affinity_timeout_s {
            let _ = write!(
                s,
                "  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP:\n      timeoutSeconds: {t}\n"
            );
        }
        if !self.ingress.is_empty() {
            s.push_str("status:\n  loadBalancer:\n    ingress:\n");
            for i in &self.ingress {
                let _ = writeln!(s, "      - ip: {}", i.ip);
                if let Some(mode) = i.ip_mode {
                    let _ = writeln!(s, "        ipMode: {mode}");
                }
            }
        }
        s
    }

    /// The EndpointSlice manifest, `None` for a Service no endpoint backs (unless
    /// [`ServiceSpec::empty_slice`]).
    pub fn slice_yaml(&self) -> Option<String> {
        if self.endpoints.is_empty() && !self.empty_slice {
            return None;
        }
        let family = if self.cluster_ip.contains(':') {
            "IPv6"
        } else {
            "IPv4"
        };
        let mut s = format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: demo\n  labels:\n    kubernetes.io/service-name: {name}\naddressType: {family}\nports:\n",
            name = self.name
        );
        for p in &self.ports {
            let _ = write!(
                s,
                "  - name: {}\n    port: {}\n    protocol: {}\n",
                p.name, p.target_port, p.protocol
            );
        }
        s.push_str(if self.endpoints.is_empty() {
            "endpoints: []\n"
        } else {
            "endpoints:\n"
        });
        for e in &self.endpoints {
            let _ = write!(
                s,
                "  - addresses:\n      - {}\n    conditions:\n      ready: {}\n",
                e.ip, e.conditions.ready
            );
            if let Some(serving) = e.conditions.serving {
                let _ = writeln!(s, "      serving: {serving}");
            }
            if let Some(terminating) = e.conditions.terminating {
                let _ = writeln!(s, "      terminating: {terminating}");
            }
            let _ = writeln!(s, "    nodeName: {}", e.node);
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> ServiceSpec {
        ServiceSpec::cluster_ip(
            "web",
            "10.96.0.10",
            vec![PortSpec::new("http", 80, "TCP", 8080)],
        )
    }

    #[test]
    fn without_endpoints_a_slice_only_when_asked() {
        assert_eq!(web().slice_yaml(), None);
        let slice = web().empty_slice().slice_yaml().expect("asked for");
        assert!(
            slice.ends_with("    protocol: TCP\nendpoints: []\n"),
            "{slice}"
        );
        // With endpoints, asking changes nothing.
        let backed = web().endpoints(vec![EndpointSpec::ready("10.244.1.6", "node-a")]);
        assert_eq!(
            backed.clone().empty_slice().slice_yaml(),
            backed.slice_yaml()
        );
    }

    #[test]
    fn conditions_written_as_set() {
        let slice = web()
            .endpoints(vec![
                EndpointSpec::ready("10.244.1.6", "node-a"),
                EndpointSpec::new("10.244.2.7", "node-b", Conditions::NOT_READY),
            ])
            .slice_yaml()
            .expect("endpoints");
        assert!(
            slice.ends_with(
                "endpoints:\n  - addresses:\n      - 10.244.1.6\n    conditions:\n      \
                 ready: true\n    nodeName: node-a\n  - addresses:\n      - 10.244.2.7\n    \
                 conditions:\n      ready: false\n      serving: false\n      \
                 terminating: false\n    nodeName: node-b\n"
            ),
            "{slice}"
        );
    }
}
