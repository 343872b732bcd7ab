//! The state-directory contract end to end: files on disk -> load_state_dir -> translate.

use std::path::PathBuf;
use testkit::TempDir;

use datapath::tables::{PortKind, Route, ServiceKey, ServicePort, Tables, proto};
use datapath::{IpKey, MacAddr, PortId};
use model::config::AgentConfig;
use model::state::{ClusterState, StateDir, load_state_dir};
use model::translate::{TranslateError, canonical_dump, translate};

fn example_dir() -> PathBuf {
    testkit::paths::example("two-node")
}

fn v4(s: &str) -> IpKey {
    IpKey::from(s.parse::<std::net::IpAddr>().unwrap())
}

fn backend(s: &str) -> (IpKey, u16) {
    let (ip, port) = s.rsplit_once(':').unwrap();
    (
        v4(ip.trim_start_matches('[').trim_end_matches(']')),
        port.parse().unwrap(),
    )
}

/// The endpoints new flows may use cluster-wide, as (ip, port).
fn ready(p: &ServicePort) -> Vec<(IpKey, u16)> {
    p.cluster
        .members
        .iter()
        .map(|&i| (p.backends[i as usize].ip, p.backends[i as usize].port))
        .collect()
}

fn service<'t>(t: &'t Tables, key: &ServiceKey) -> Option<&'t ServicePort> {
    t.frontend(key).map(|(_, p)| p)
}

fn key(vip: &str, port: u16, proto: u8) -> ServiceKey {
    ServiceKey {
        vip: v4(vip),
        port,
        proto,
    }
}

// ---------------------------------------------------------------------------------------
// The committed worked example.

#[test]
fn two_node_example_node_a() {
    let state = load_state_dir(&example_dir()).unwrap();
    // The example writes the defaults out, underlayMTU included (so an agent on it would
    // not take its uplink's MTU instead).
    assert!(state.config.underlay_mtu_explicit);
    assert_eq!(
        AgentConfig {
            underlay_mtu_explicit: false,
            ..state.config.clone()
        },
        AgentConfig::default()
    );
    assert!(state.warnings.is_empty(), "{:?}", state.warnings);
    assert_eq!(state.cluster.nodes.len(), 2);
    assert_eq!(state.cluster.namespaces.len(), 1);
    assert_eq!(state.cluster.pods.len(), 3);
    assert_eq!(state.cluster.services.len(), 1);
    assert_eq!(state.cluster.endpoint_slices.len(), 1);

    let out = translate(&state.cluster, &state.config, "node-a", 7).unwrap();
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let t = &out.tables;
    assert_eq!(t.generation, 7);
    assert_eq!(t.node.name, "node-a");
    assert_eq!(t.node.underlay_ip, [192, 168, 50, 10]);
    assert_eq!(t.node.underlay_mac.to_string(), "02:00:c0:a8:32:0a");
    assert_eq!(t.node.gateway_ip, [10, 244, 1, 1]);
    assert_eq!(t.node.gateway_mac.to_string(), "0a:58:0a:f4:01:01");
    assert_eq!(t.node.pod_cidrs, vec!["10.244.1.0/24".parse().unwrap()]);
    assert_eq!(
        t.node.addresses,
        vec![v4("10.244.1.1"), v4("192.168.50.10")]
    );
    assert_eq!((t.overlay.vni, t.overlay.udp_port), (1, 4789));
    assert_eq!(t.overlay.underlay_mtu, 1500);

    let names: Vec<&str> = t.ports.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["uplink", "host", "pod-demo-client", "pod-demo-web-0"]
    );
    assert_eq!(t.ports[0].kind, PortKind::Uplink);
    assert_eq!(t.ports[1].kind, PortKind::Host);
    assert_eq!(t.ports[3].kind, PortKind::Pod(1));
    assert_eq!(t.port_by_name("pod-demo-web-0"), Some(PortId(3)));

    let web0 = t.local_pod(v4("10.244.1.6")).unwrap();
    assert_eq!(
        (web0.namespace.as_str(), web0.name.as_str()),
        ("demo", "web-0")
    );
    assert_eq!(web0.port, PortId(3));
    assert_eq!(web0.mac, MacAddr::for_ipv4([10, 244, 1, 6]));
    assert_eq!(
        t.local_pod(v4("10.244.1.5")).unwrap().mac.to_string(),
        "0a:58:0a:f4:01:05"
    );
    assert_eq!(t.local_pod_by_ip.len(), 2);

    assert_eq!(t.remote_nodes.len(), 1);
    assert_eq!(t.remote_nodes[0].name, "node-b");
    assert_eq!(t.remote_nodes[0].underlay_ip, [192, 168, 50, 11]);
    assert_eq!(
        t.remote_nodes[0].underlay_mac.to_string(),
        "02:00:c0:a8:32:0b"
    );
    match t.route(v4("10.244.2.7")) {
        Route::RemoteNode(n) => assert_eq!(n.name, "node-b"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(t.route(v4("10.244.1.1")), Route::Node));
    assert!(matches!(t.route(v4("10.244.3.1")), Route::Unowned));

    assert_eq!(t.frontends.len(), 1);
    let web = service(t, &key("10.96.0.10", 80, proto::TCP)).unwrap();
    assert_eq!(web.name, "demo/web:80");
    assert_eq!(
        ready(web),
        vec![backend("10.244.1.6:8080"), backend("10.244.2.7:8080")]
    );
}

#[test]
fn two_node_example_node_b() {
    let state = load_state_dir(&example_dir()).unwrap();
    let t = translate(&state.cluster, &state.config, "node-b", 1)
        .unwrap()
        .tables;
    let names: Vec<&str> = t.ports.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["uplink", "host", "pod-demo-web-1"]);
    assert_eq!(t.node.gateway_ip, [10, 244, 2, 1]);
    assert_eq!(t.remote_nodes[0].name, "node-a");
    // Every node programs the same service with the same backend order.
    let web = service(&t, &key("10.96.0.10", 80, proto::TCP)).unwrap();
    assert_eq!(ready(web).len(), 2);
}

#[test]
fn unknown_node_names_the_ones_present() {
    let state = load_state_dir(&example_dir()).unwrap();
    let err = translate(&state.cluster, &state.config, "node-z", 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "node \"node-z\" is not in the cluster state (nodes: node-a, node-b)"
    );
}

// ---------------------------------------------------------------------------------------
// A richer cluster built in a temp dir.

const NODES: &str = r#"
apiVersion: v1
kind: Node
metadata:
  name: n1
  annotations: {kxdp.io/underlay-mac: "02:00:00:00:00:01"}
spec:
  podCIDRs: [10.244.1.0/24, "fd00:10:244:1::/64"]
status:
  addresses:
    - {type: InternalIP, address: 192.168.0.1}
    - {type: InternalIP, address: "fd00::1"}
    - {type: Hostname, address: n1}
---
# n2 is routable; n3 has no MAC and n4 no podCIDR: both skipped with a warning.
apiVersion: v1
kind: Node
metadata:
  name: n2
  annotations: {kxdp.io/underlay-mac: "02:00:00:00:00:02"}
spec: {podCIDR: 10.244.2.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.0.2}]}
---
kind: Node
metadata: {name: n3}
spec: {podCIDR: 10.244.3.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.0.3}]}
---
kind: Node
metadata:
  name: n4
  annotations: {kxdp.io/underlay-mac: "02:00:00:00:00:04"}
status: {addresses: [{type: InternalIP, address: 192.168.0.4}]}
"#;

// A List, with an empty document before it and one after, and a typed PodList.
const PODS: &str = r#"
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    metadata: {name: b-pod, namespace: ns1, labels: {app: web}}
    spec:
      nodeName: n1
      containers: [{name: c, ports: [{name: http, containerPort: 8080}, {name: metrics, containerPort: 9090}]}]
    status: {phase: Running, podIPs: [{ip: 10.244.1.20}, {ip: "fd00:10:244:1::20"}]}
  - apiVersion: v1
    kind: Pod
    metadata: {name: a-pod, namespace: ns1, labels: {app: web}}
    spec: {nodeName: n1, containers: [{name: c}]}
    status: {phase: Running, podIP: 10.244.1.10}
---
apiVersion: v1
kind: PodList
items:
  - metadata: {name: done, namespace: ns1}
    spec: {nodeName: n1, containers: [{name: c}]}
    status: {phase: Succeeded, podIP: 10.244.1.30}
  - metadata: {name: hostnet, namespace: kube-system}
    spec: {nodeName: n1, hostNetwork: true, containers: [{name: c}]}
    status: {phase: Running, podIP: 192.168.0.1}
  - metadata: {name: pending}
    spec: {nodeName: n1, containers: [{name: c}]}
    status: {phase: Pending}
  - metadata: {name: remote, namespace: ns1}
    spec: {nodeName: n2, containers: [{name: c}]}
    status: {phase: Running, podIP: 10.244.2.10}
  - metadata: {name: z-dup-ip, namespace: ns1}
    spec: {nodeName: n1, containers: [{name: c}]}
    status: {phase: Running, podIP: 10.244.1.10}
---
"#;

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: ns1}
spec:
  clusterIP: 10.96.0.20
  ports:
    - {name: http, port: 80, targetPort: http}
    - {name: metrics, port: 9000, targetPort: metrics}
    - {name: dns, port: 53, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: ns1}
spec: {clusterIP: None, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: dual, namespace: ns1}
spec:
  ipFamilyPolicy: RequireDualStack
  clusterIP: 10.96.0.30
  clusterIPs: [10.96.0.30, "fd00:96::30"]
  ports: [{port: 443, targetPort: 8443}]
---
apiVersion: v1
kind: Service
metadata: {name: outside, namespace: ns1}
spec: {clusterIP: 10.200.0.1, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: ns1}
spec: {clusterIP: 10.96.0.40, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: ns1}
spec: {type: ExternalName, externalName: example.com}
"#;

const SLICES: &str = r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: ns1
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
  - {name: http, port: 8080}
  - {name: metrics, port: 9090, protocol: TCP}
  - {name: dns, port: 5353, protocol: UDP}
endpoints:
  - addresses: [10.244.2.10]
    conditions: {ready: true}
  - addresses: [10.244.1.20]
  - addresses: [10.244.1.10]
    conditions: {ready: false, serving: true, terminating: true}
---
# The same endpoint again in a second slice (mid-move), plus another port name.
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-2
  namespace: ns1
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080}, {name: other, port: 1}]
endpoints:
  - addresses: [10.244.1.20]
    conditions: {ready: true}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: dual-v4
  namespace: ns1
  labels: {kubernetes.io/service-name: dual}
addressType: IPv4
ports: [{port: 8443}]
endpoints: [{addresses: [10.244.1.20]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: dual-v6
  namespace: ns1
  labels: {kubernetes.io/service-name: dual}
addressType: IPv6
ports: [{port: 8443}]
endpoints: [{addresses: ["fd00:10:244:1::20"]}]
---
# Same service name in another namespace: must not leak into ns1/web.
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-x
  namespace: other
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.244.2.99]}]
"#;

const OTHER: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: ns1}
data: {a: b}
---
apiVersion: v1
kind: Namespace
metadata: {name: ns1, labels: {team: a}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: ns1}
spec: {podSelector: {}, policyTypes: [Ingress]}
"#;

const CONFIG: &str = "clusterCIDR: 10.244.0.0/16,fd00:10:244::/56\n\
                      serviceCIDR: 10.96.0.0/12,fd00:96::/112\n\
                      vxlan: {vni: 9}\n";

fn rich_dir() -> TempDir {
    TempDir::with(
        "rich",
        &[
            ("kxdp.yaml", CONFIG),
            ("a-nodes.yaml", NODES),
            ("b-pods.yml", PODS),
            ("c-services.yaml", SERVICES),
            ("d-slices.yaml", SLICES),
            ("e-other.yaml", OTHER),
            // Not manifests: ignored.
            ("README.md", "not yaml: ["),
            (".hidden.yaml", "not: [valid"),
        ],
    )
}

#[test]
fn rich_cluster_loads() {
    let dir = rich_dir();
    let state = load_state_dir(dir.path()).unwrap();
    assert_eq!(state.config.vxlan.vni, 9);
    assert_eq!(state.config.cluster_cidrs.len(), 2);
    let c = &state.cluster;
    assert_eq!(c.nodes.len(), 4);
    assert_eq!(c.pods.len(), 7);
    assert_eq!(c.services.len(), 6);
    assert_eq!(c.endpoint_slices.len(), 5);
    assert_eq!(c.namespaces.len(), 1);
    assert_eq!(c.network_policies.len(), 1);
    // Namespace defaulted on the object itself.
    let pending = c
        .pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("pending"))
        .unwrap();
    assert_eq!(pending.metadata.namespace.as_deref(), Some("default"));
    // The unknown kind is reported, with file and document.
    assert_eq!(state.warnings.len(), 1, "{:?}", state.warnings);
    assert!(
        state.warnings[0].starts_with("e-other.yaml: document 1: kind ConfigMap settings ignored"),
        "{}",
        state.warnings[0]
    );
}

#[test]
fn rich_cluster_translates() {
    let dir = rich_dir();
    let state = load_state_dir(dir.path()).unwrap();
    let out = translate(&state.cluster, &state.config, "n1", 3).unwrap();
    let t = &out.tables;

    // Local pods: Running, not hostNetwork, with an IP; the duplicate-IP pod loses.
    let names: Vec<&str> = t.ports.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["uplink", "host", "pod-ns1-a-pod", "pod-ns1-b-pod"]);
    let b = t.local_pod(v4("fd00:10:244:1::20")).unwrap();
    assert_eq!(b.name, "b-pod");
    assert_eq!(b.mac, MacAddr::for_ipv4([10, 244, 1, 20]));
    assert_eq!(b.ips.len(), 2);
    assert_eq!(t.local_pod_by_ip.len(), 3);

    // Dual-stack node: gateways of both PodCIDRs are node addresses.
    assert_eq!(t.node.gateway_ip, [10, 244, 1, 1]);
    for a in ["10.244.1.1", "fd00:10:244:1::1", "192.168.0.1", "fd00::1"] {
        assert!(t.node.addresses.contains(&v4(a)), "{a}");
    }
    assert_eq!(t.overlay.vni, 9);

    // Only n2 is routable.
    assert_eq!(t.remote_nodes.len(), 1);
    assert_eq!(t.remote_nodes[0].name, "n2");
    assert_eq!(t.remote_routes.len(), 1);

    // ns1/web: named ports, ready endpoints only (unset = ready), deduplicated.
    let http = service(t, &key("10.96.0.20", 80, proto::TCP)).unwrap();
    assert_eq!(http.name, "ns1/web:80");
    assert_eq!(
        ready(http),
        vec![backend("10.244.1.20:8080"), backend("10.244.2.10:8080")]
    );
    let metrics = service(t, &key("10.96.0.20", 9000, proto::TCP)).unwrap();
    assert_eq!(
        ready(metrics),
        vec![backend("10.244.1.20:9090"), backend("10.244.2.10:9090")]
    );
    let dns = service(t, &key("10.96.0.20", 53, proto::UDP)).unwrap();
    assert_eq!(dns.name, "ns1/web:53");
    assert_eq!(
        ready(dns),
        vec![backend("10.244.1.20:5353"), backend("10.244.2.10:5353")]
    );
    assert!(service(t, &key("10.96.0.20", 53, proto::TCP)).is_none());

    // Dual stack: one key per family, each with its family's backends.
    let d4 = service(t, &key("10.96.0.30", 443, proto::TCP)).unwrap();
    assert_eq!(ready(d4), vec![backend("10.244.1.20:8443")]);
    let d6 = service(t, &key("fd00:96::30", 443, proto::TCP)).unwrap();
    assert_eq!(d6.name, "ns1/dual:443");
    assert_eq!(ready(d6), vec![backend("[fd00:10:244:1::20]:8443")]);

    // No endpoints: still present, empty (the datapath rejects).
    let empty = service(t, &key("10.96.0.40", 80, proto::TCP)).unwrap();
    assert!(ready(empty).is_empty());

    // Headless, ExternalName and out-of-range VIPs program nothing.
    assert_eq!(t.frontends.len(), 3 + 2 + 1);

    let w = out.warnings.join("\n");
    for expected in [
        "Node n3: no kxdp.io/underlay-mac annotation: no route to its pods",
        "Node n4: no usable podCIDR: no route to its pods",
        "Pod ns1/z-dup-ip: podIP 10.244.1.10 is already Pod ns1/a-pod's: skipped",
        "Service ns1/outside: clusterIP 10.200.0.1 is outside every Service CIDR (10.96.0.0/12,fd00:96::/112): skipped",
    ] {
        assert!(w.contains(expected), "missing {expected:?} in:\n{w}");
    }
    assert_eq!(out.warnings.len(), 4, "{w}");
}

/// The rich cluster's ServiceCIDRs: the API server's own (kxdp.yaml's ranges) in a List,
/// and a second one in a plain document that ns1/outside's ClusterIP is allocated from.
const SERVICE_CIDRS: &str = r#"
apiVersion: v1
kind: List
items:
- apiVersion: networking.k8s.io/v1
  kind: ServiceCIDR
  metadata: {name: kubernetes}
  spec: {cidrs: [10.96.0.0/12, "fd00:96::/112"]}
---
apiVersion: networking.k8s.io/v1
kind: ServiceCIDR
metadata: {name: second, namespace: ignored-for-a-cluster-scoped-kind}
spec: {cidrs: [10.200.0.0/24]}
"#;

#[test]
fn a_second_service_cidr_admits_its_services() {
    let dir = rich_dir();
    std::fs::write(dir.path().join("f-cidrs.yaml"), SERVICE_CIDRS).unwrap();
    let state = load_state_dir(dir.path()).unwrap();
    let names: Vec<_> = state
        .cluster
        .service_cidrs
        .iter()
        .map(|c| (c.metadata.name.clone(), c.metadata.namespace.clone()))
        .collect();
    assert_eq!(
        names,
        [
            (Some("kubernetes".to_string()), None),
            (Some("second".to_string()), None)
        ]
    );
    let out = translate(&state.cluster, &state.config, "n1", 1).unwrap();
    let t = &out.tables;
    let outside = service(t, &key("10.200.0.1", 80, proto::TCP)).expect("ns1/outside");
    assert_eq!(outside.name, "ns1/outside:80");
    let cidrs: Vec<String> = t.service_cidrs.iter().map(|c| c.to_string()).collect();
    assert_eq!(cidrs, ["10.96.0.0/12", "10.200.0.0/24", "fd00:96::/112"]);
    assert!(
        !out.warnings.iter().any(|w| w.contains("Service CIDR")),
        "{:?}",
        out.warnings
    );
    assert_eq!(out.warnings.len(), 3, "{:?}", out.warnings);

    // Only the second object: kxdp.yaml's serviceCIDR no longer counts, so the Services
    // in it are the ones skipped now.
    std::fs::write(
        dir.path().join("f-cidrs.yaml"),
        SERVICE_CIDRS.split("---").nth(1).unwrap(),
    )
    .unwrap();
    let state = load_state_dir(dir.path()).unwrap();
    let out = translate(&state.cluster, &state.config, "n1", 1).unwrap();
    assert!(service(&out.tables, &key("10.200.0.1", 80, proto::TCP)).is_some());
    assert!(service(&out.tables, &key("10.96.0.20", 80, proto::TCP)).is_none());
    assert!(
        out.warnings.iter().any(|w| w
            == "Service ns1/web: clusterIP 10.96.0.20 is outside every Service CIDR (10.200.0.0/24): skipped"),
        "{:?}",
        out.warnings
    );
}

#[test]
fn bad_service_cidrs() {
    assert_err(
        &[(
            "cidrs.yaml",
            "apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {name: s}\nspec: {cidrs: [10.200.0.0/33]}\n",
        )],
        &["cidrs.yaml: ServiceCIDR s: spec.cidrs[0]: "],
    );
    assert_err(
        &[(
            "cidrs.yaml",
            "kind: ServiceCIDR\nmetadata: {name: s}\nspec: {cidrs: [10.200.0.0/24, 10.201.0.0/24]}\n",
        )],
        &["cidrs.yaml: ServiceCIDR s: spec.cidrs: at most two entries, one IPv4 and one IPv6"],
    );
    assert_err(
        &[(
            "cidrs.yaml",
            "apiVersion: networking.k8s.io/v1beta1\nkind: ServiceCIDR\nmetadata: {name: s}\n",
        )],
        &[
            "cidrs.yaml: ServiceCIDR s: apiVersion: \"networking.k8s.io/v1beta1\": kxdp reads ServiceCIDR at apiVersion networking.k8s.io/v1",
        ],
    );
}

#[test]
fn translate_is_deterministic() {
    let dir = rich_dir();
    let state = load_state_dir(dir.path()).unwrap();
    let first = translate(&state.cluster, &state.config, "n1", 5).unwrap();
    let again = translate(&state.cluster, &state.config, "n1", 5).unwrap();
    assert_eq!(canonical_dump(&first.tables), canonical_dump(&again.tables));
    assert_eq!(first.warnings, again.warnings);

    // Object order must not matter either (a watcher delivers in any order).
    let mut shuffled: ClusterState = state.cluster.clone();
    shuffled.nodes.reverse();
    shuffled.pods.reverse();
    shuffled.services.reverse();
    shuffled.endpoint_slices.reverse();
    let other = translate(&shuffled, &state.config, "n1", 5).unwrap();
    assert_eq!(canonical_dump(&first.tables), canonical_dump(&other.tables));
    assert_eq!(first.warnings, other.warnings);

    // Debug of everything but the hash maps is stable as is.
    let strip = |t: &datapath::Tables| {
        format!(
            "{:?} {:?} {:?} {:?} {:?}",
            t.node, t.ports, t.local_pods, t.remote_nodes, t.cluster_cidrs
        )
    };
    assert_eq!(strip(&first.tables), strip(&other.tables));
}

#[test]
fn own_node_without_mac_is_an_error() {
    let dir = rich_dir();
    let state = load_state_dir(dir.path()).unwrap();
    let err = translate(&state.cluster, &state.config, "n3", 1).unwrap_err();
    assert!(matches!(err, TranslateError::OwnNode { .. }));
    assert_eq!(
        err.to_string(),
        "Node n3: metadata.annotations[\"kxdp.io/underlay-mac\"]: missing (the MAC the uplink answers on)"
    );
    let err = translate(&state.cluster, &state.config, "n4", 1).unwrap_err();
    assert!(
        err.to_string().starts_with("Node n4: spec.podCIDR: "),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// kxdp.yaml

#[test]
fn config_defaults_when_absent_or_empty() {
    let dir = TempDir::with("noconf", &[]);
    let state: StateDir = load_state_dir(dir.path()).unwrap();
    assert_eq!(state.config, AgentConfig::default());
    assert!(state.warnings.is_empty());
    assert_eq!(state.config.cluster_cidrs[0].to_string(), "10.244.0.0/16");
    assert_eq!(state.config.service_cidrs[0].to_string(), "10.96.0.0/12");
    assert_eq!((state.config.vxlan.vni, state.config.vxlan.port), (1, 4789));
    assert_eq!(state.config.underlay_mtu, 1500);
    assert_eq!(state.config.maglev.table_size, 65537);

    dir.write("kxdp.yaml", "# all defaults\n");
    assert_eq!(
        load_state_dir(dir.path()).unwrap().config,
        AgentConfig::default()
    );
    dir.write("kxdp.yaml", "underlayMTU: 9000\n");
    assert_eq!(
        load_state_dir(dir.path()).unwrap().config.underlay_mtu,
        9000
    );
}

// ---------------------------------------------------------------------------------------
// Bad manifests: the message names file, object and field.

fn load_err(files: &[(&str, &str)]) -> String {
    let dir = TempDir::with("bad", files);
    match load_state_dir(dir.path()) {
        Ok(_) => panic!("{files:?} loaded"),
        Err(e) => e.to_string(),
    }
}

fn assert_err(files: &[(&str, &str)], want: &[&str]) {
    let msg = load_err(files);
    for w in want {
        assert!(msg.contains(w), "{msg:?} lacks {w:?}");
    }
}

const GOOD_NODE: &str = "kind: Node\nmetadata: {name: node-a}\n";

#[test]
fn bad_pod_ip() {
    let msg = load_err(&[(
        "pods.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web-0}\nstatus: {podIP: 10.244.1.x}\n",
    )]);
    assert_eq!(
        msg,
        "pods.yaml: Pod default/web-0: status.podIP: \"10.244.1.x\" is not an IP address"
    );
}

#[test]
fn bad_type_in_unnamed_document() {
    let msg = load_err(&[(
        "nodes.yaml",
        "kind: Node\nmetadata: {name: a}\n---\nkind: Node\nspec:\n  podCIDR: [1]\n",
    )]);
    assert!(
        msg.starts_with("nodes.yaml: document 2: kind Node: spec.podCIDR: invalid type: sequence, expected a string at line 6"),
        "{msg}"
    );
}

#[test]
fn bad_type_in_named_document() {
    assert_err(
        &[(
            "svc.yaml",
            "kind: Service\nmetadata: {name: web, namespace: demo}\nspec:\n  ports:\n    - port: eighty\n",
        )],
        &[
            "svc.yaml: Service demo/web: spec.ports[0].port: invalid type",
            "line 5",
        ],
    );
}

#[test]
fn bad_type_in_list_item() {
    assert_err(
        &[(
            "list.yaml",
            "kind: List\nitems:\n- kind: Namespace\n  metadata: {name: a}\n- kind: Node\n  metadata: {name: b}\n  spec: {podCIDRs: 10.0.0.0/24}\n",
        )],
        &[
            "list.yaml: Node b: items[1].spec.podCIDRs: invalid type",
            "line 7",
        ],
    );
}

#[test]
fn bad_node_fields() {
    assert_err(
        &[(
            "nodes.yaml",
            "kind: Node\nmetadata: {name: n1, annotations: {kxdp.io/underlay-mac: 'zz:00:00:00:00:01'}}\n",
        )],
        &[
            "nodes.yaml: Node n1: metadata.annotations[\"kxdp.io/underlay-mac\"]: \"zz:00:00:00:00:01\" is not a MAC address",
        ],
    );
    assert_err(
        &[(
            "nodes.yaml",
            "kind: Node\nmetadata: {name: n1}\nstatus: {addresses: [{type: Hostname, address: n1}, {type: InternalIP, address: 192.168.1.300}]}\n",
        )],
        &[
            "nodes.yaml: Node n1: status.addresses[1].address: \"192.168.1.300\" is not an IP address",
        ],
    );
    assert_err(
        &[(
            "nodes.yaml",
            "kind: Node\nmetadata: {name: n1}\nspec: {podCIDR: 10.244.1.0}\n",
        )],
        &["nodes.yaml: Node n1: spec.podCIDR: \"10.244.1.0\" is not a CIDR"],
    );
    assert_err(
        &[(
            "nodes.yaml",
            "kind: Node\nmetadata: {name: n1}\nspec: {podCIDRs: [10.244.1.0/24, 10.244.2.0/24]}\n",
        )],
        &["nodes.yaml: Node n1: spec.podCIDRs: at most two entries, one IPv4 and one IPv6"],
    );
}

#[test]
fn bad_service_fields() {
    let svc = |spec: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: demo}}\nspec: {spec}\n"
        )
    };
    let cases = [
        (
            "{ports: [{port: 70000}]}",
            "spec.ports[0].port: 70000 is not a port number",
        ),
        (
            "{ports: [{port: 80, protocol: HTTP}]}",
            "spec.ports[0].protocol: \"HTTP\" is not a protocol",
        ),
        (
            "{clusterIP: 10.96.0.300}",
            "spec.clusterIP: \"10.96.0.300\" is not an IP address",
        ),
        (
            "{clusterIPs: [None, 10.96.0.1]}",
            "spec.clusterIPs[0]: \"None\" (headless) must be the only entry",
        ),
        (
            "{ports: [{port: 80}, {port: 81}]}",
            "spec.ports[0].name: required when a Service has more than one port",
        ),
        (
            "{ports: [{name: a, port: 80}, {name: a, port: 81}]}",
            "spec.ports[1].name: \"a\" is used twice",
        ),
        (
            "{ports: [{port: 80, targetPort: Http}]}",
            "spec.ports[0].targetPort: \"Http\" is not a port name",
        ),
        (
            "{type: Balancer}",
            "spec.type: \"Balancer\" is not a Service type",
        ),
        (
            "{sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}}",
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds: 0 is out of range",
        ),
        (
            "{externalIPs: [1.2.3]}",
            "spec.externalIPs[0]: \"1.2.3\" is not an IP address",
        ),
    ];
    for (spec, want) in cases {
        let msg = load_err(&[("services.yaml", &svc(spec))]);
        let want = format!("services.yaml: Service demo/web: {want}");
        assert!(
            msg.starts_with(&want),
            "{msg:?} does not start with {want:?}"
        );
    }
}

#[test]
fn bad_endpoint_slice_fields() {
    let slice = |body: &str| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1, namespace: demo}}\n{body}\n"
        )
    };
    let cases = [
        (
            "addressType: IPv5",
            "addressType: \"IPv5\" is not IPv4, IPv6 or FQDN",
        ),
        ("endpoints: []", "addressType: missing"),
        (
            "addressType: IPv4\nendpoints: [{addresses: [10.0.0.1]}, {addresses: ['fd00::1']}]",
            "endpoints[1].addresses[0]: \"fd00::1\" is not an IPv4 address",
        ),
        (
            "addressType: IPv4\nports: [{port: 0}]",
            "ports[0].port: 0 is not a port number",
        ),
        (
            "addressType: IPv4\nports: [{port: 80, protocol: ICMP}]",
            "ports[0].protocol: \"ICMP\" is not a protocol",
        ),
    ];
    for (body, want) in cases {
        let msg = load_err(&[("slices.yaml", &slice(body))]);
        let want = format!("slices.yaml: EndpointSlice demo/web-1: {want}");
        assert!(
            msg.starts_with(&want),
            "{msg:?} does not start with {want:?}"
        );
    }
}

#[test]
fn bad_pod_and_policy_fields() {
    assert_err(
        &[(
            "pods.yaml",
            "kind: Pod\nmetadata: {name: p, namespace: x}\nspec: {containers: [{name: c, ports: [{containerPort: 0}]}]}\n",
        )],
        &["pods.yaml: Pod x/p: spec.containers[0].ports[0].containerPort: 0 is not a port number"],
    );
    assert_err(
        &[(
            "pods.yaml",
            "kind: Pod\nmetadata: {name: p}\nstatus: {podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.2}]}\n",
        )],
        &[
            "pods.yaml: Pod default/p: status.podIP: 10.0.0.1 differs from status.podIPs[0] 10.0.0.2",
        ],
    );
    assert_err(
        &[(
            "np.yaml",
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, namespace: x}\nspec:\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]\n",
        )],
        &[
            "np.yaml: NetworkPolicy x/np: spec.ingress[0].from[0].ipBlock.except[0]: \"11.0.0.0/16\" is not inside \"10.0.0.0/8\"",
        ],
    );
    assert_err(
        &[(
            "np.yaml",
            "kind: NetworkPolicy\nmetadata: {name: np}\nspec:\n  egress:\n  - ports: [{port: 100, endPort: 90}]\n",
        )],
        &[
            "np.yaml: NetworkPolicy default/np: spec.egress[0].ports[0].endPort: 90 is below port 100",
        ],
    );
}

#[test]
fn bad_document_shapes() {
    assert_err(
        &[("a.yaml", "---\nmetadata: {name: x}\n")],
        &["a.yaml: document 1: kind: missing"],
    );
    assert_err(
        &[(
            "a.yaml",
            &format!("{GOOD_NODE}---\nkind: Pod\nmetadata: {{namespace: x}}\n"),
        )],
        &["a.yaml: document 2: kind Pod: metadata.name: missing"],
    );
    assert_err(
        &[("a.yaml", "kind: Pod\napiVersion: v2\nmetadata: {name: p}\n")],
        &["a.yaml: Pod default/p: apiVersion: \"v2\": kxdp reads Pod at apiVersion v1"],
    );
    assert_err(
        &[("a.yaml", "kind: Node\nmetadata: {name: [x\n")],
        &["a.yaml: document 1: ", "line 2"],
    );
    assert_err(
        &[("a.yaml", "- just\n- a list\n")],
        &["a.yaml: document 1: expected a Kubernetes object"],
    );
    assert_err(
        &[("a.yaml", "kind: List\nitems:\n- kind: List\n  items: []\n")],
        &["a.yaml: document 1: items[0]: kind: List inside a List is not supported"],
    );
    assert_err(
        &[("a.yaml", "kind: List\nitems:\n- metadata: {name: x}\n")],
        &["a.yaml: document 1: items[0]: kind: missing"],
    );
}

#[test]
fn duplicate_object() {
    assert_err(
        &[
            ("a.yaml", "kind: Pod\nmetadata: {name: p}\n"),
            (
                "b.yaml",
                "kind: Pod\nmetadata: {name: p, namespace: default}\n",
            ),
        ],
        &["b.yaml: Pod default/p: defined twice (first in a.yaml)"],
    );
    // Same name in another namespace, or of another kind, is fine.
    let dir = TempDir::with(
        "dup-ok",
        &[
            (
                "a.yaml",
                "kind: Pod\nmetadata: {name: p}\n---\nkind: Pod\nmetadata: {name: p, namespace: o}\n",
            ),
            ("b.yaml", "kind: Service\nmetadata: {name: p}\n"),
        ],
    );
    assert!(load_state_dir(dir.path()).is_ok());
}

#[test]
fn bad_config_file() {
    assert_err(
        &[("kxdp.yaml", "vxlan: {vni: 1}\nmaglev: {tablesize: 7}\n")],
        &["kxdp.yaml: maglev: unknown field `tablesize`"],
    );
    assert_err(
        &[("kxdp.yaml", "vxlan: {vni: 99999999}\n")],
        &["kxdp.yaml: vxlan.vni: 99999999 does not fit in 24 bits"],
    );
}

#[test]
fn missing_directory() {
    let dir = std::env::temp_dir().join("kxdp-state-test-does-not-exist");
    let msg = load_state_dir(&dir).unwrap_err().to_string();
    assert!(msg.starts_with(&dir.display().to_string()), "{msg}");
}
