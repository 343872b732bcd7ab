//! Fixtures shared by the policy tests: a two-namespace cluster (prod, dev) whose pods on
//! node `a` are local, and [`Compiled`], which answers "may A reach B" through the
//! compiled tables as the datapath would.

mod identity;
mod rules;
mod selector;
mod update;

use std::collections::BTreeMap;

use datapath::policy::{IdentityId, PolicyDirection, PolicyQuery, PolicyTables};
use datapath::tables::{LocalPod, PortId, proto};
use datapath::{IpKey, MacAddr};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;

use super::{PolicyCompiler, canonical_dump};
use crate::k8s::{name_of, namespace_of, parse_ip_key, pod_ips};
use crate::state::ClusterState;

const TCP: u8 = proto::TCP;
const UDP: u8 = proto::UDP;
const SCTP: u8 = proto::SCTP;

fn namespace(name: &str, labels: &[(&str, &str)]) -> Namespace {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels.iter().cloned().collect::<BTreeMap<_, _>>()}
    }))
    .unwrap()
}

/// `ports`: (name, protocol, number) container ports.
fn pod(
    id: &str,
    labels: &[(&str, &str)],
    ip: &str,
    node: &str,
    ports: &[(&str, &str, i32)],
) -> Pod {
    let (ns, name) = id.split_once('/').unwrap();
    let ports: Vec<_> = ports
        .iter()
        .map(|(n, p, c)| json!({"name": n, "protocol": p, "containerPort": c}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name,
                     "labels": labels.iter().cloned().collect::<BTreeMap<_, _>>()},
        "spec": {"nodeName": node, "containers": [{"name": "c", "ports": ports}]},
        "status": {"phase": "Running", "podIP": ip}
    }))
    .unwrap()
}

fn policy(yaml: &str) -> NetworkPolicy {
    serde_yaml::from_str(yaml).unwrap()
}

/// prod {team: a}: web (http 8080/TCP, dns 53/UDP), client, other, all on node a;
/// dev {team: b}: client on node b, web on node a.
fn cluster(policies: &[&str]) -> ClusterState {
    ClusterState {
        namespaces: vec![
            namespace("prod", &[("team", "a")]),
            namespace("dev", &[("team", "b")]),
        ],
        pods: vec![
            pod(
                "prod/web",
                &[("app", "web")],
                "10.0.0.1",
                "a",
                &[("http", "TCP", 8080), ("dns", "UDP", 53)],
            ),
            pod("prod/client", &[("app", "client")], "10.0.0.2", "a", &[]),
            pod("prod/other", &[("app", "other")], "10.0.0.3", "a", &[]),
            pod("dev/client", &[("app", "client")], "10.0.1.2", "b", &[]),
            pod(
                "dev/web",
                &[("app", "web"), ("tier", "fe")],
                "10.0.1.1",
                "a",
                &[("http", "TCP", 9090)],
            ),
        ],
        network_policies: policies.iter().map(|p| policy(p)).collect(),
        ..ClusterState::default()
    }
}

struct Compiled {
    tables: PolicyTables,
    compiler: PolicyCompiler,
    local: Vec<LocalPod>,
    cluster: ClusterState,
    warnings: Vec<String>,
}

fn local_pods(cluster: &ClusterState) -> Vec<LocalPod> {
    let mut local: Vec<LocalPod> = cluster
        .pods
        .iter()
        .filter(|p| p.spec.as_ref().unwrap().node_name.as_deref() == Some("a"))
        .map(|p| LocalPod {
            namespace: namespace_of(&p.metadata).into(),
            name: name_of(&p.metadata).into(),
            port: PortId(0),
            mac: MacAddr::ZERO,
            ips: vec![parse_ip_key(pod_ips(p)[0]).unwrap()],
        })
        .collect();
    local.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    local
}

fn compile(cluster: ClusterState) -> Compiled {
    let local = local_pods(&cluster);
    let mut warnings = Vec::new();
    let mut compiler = PolicyCompiler::default();
    let tables = compiler.compile(&cluster, &local, &mut warnings);
    Compiled {
        tables,
        compiler,
        local,
        cluster,
        warnings,
    }
}

impl Compiled {
    fn addr(&self, who: &str) -> IpKey {
        if let Ok(ip) = parse_ip_key(who) {
            return ip;
        }
        let p = self
            .cluster
            .pods
            .iter()
            .find(|p| format!("{}/{}", namespace_of(&p.metadata), name_of(&p.metadata)) == who)
            .unwrap_or_else(|| panic!("no pod {who}"));
        parse_ip_key(pod_ips(p)[0]).unwrap()
    }

    fn endpoint(&self, who: &str) -> usize {
        self.local
            .iter()
            .position(|l| format!("{}/{}", l.namespace, l.name) == who)
            .unwrap_or_else(|| panic!("{who} is not local"))
    }

    /// May `from` open `proto`/`port` on local pod `to`?
    fn ingress(&self, from: &str, to: &str, proto: u8, port: u16) -> bool {
        let q = PolicyQuery {
            peer: self.addr(from),
            dst: self.addr(to),
            proto,
            dst_port: port,
        };
        self.tables
            .allows(self.endpoint(to), PolicyDirection::Ingress, &q)
    }

    /// May local pod `from` open `proto`/`port` on `to`?
    fn egress(&self, from: &str, to: &str, proto: u8, port: u16) -> bool {
        let q = PolicyQuery {
            peer: self.addr(to),
            dst: self.addr(to),
            proto,
            dst_port: port,
        };
        self.tables
            .allows(self.endpoint(from), PolicyDirection::Egress, &q)
    }

    fn selecting(&self, who: &str, dir: PolicyDirection) -> Vec<&str> {
        self.tables.selecting(self.endpoint(who), dir)
    }
}

fn cluster_with(base: &ClusterState, policies: &[&str]) -> ClusterState {
    ClusterState {
        network_policies: policies.iter().map(|p| policy(p)).collect(),
        ..base.clone()
    }
}

const DENY_ALL: &str = "
metadata: {namespace: prod, name: deny-all}
spec:
  podSelector: {}
  policyTypes: [Ingress]
";

const ALLOW_CLIENT: &str = "
metadata: {namespace: prod, name: allow-client}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: client}}
";
