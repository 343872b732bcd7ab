//! A synthetic cluster of any size, for measuring `translate` at scale (issue 6: 10k Services
//! x 10 endpoints, 1000 NetworkPolicies, 5000 pods on 50 nodes) and for tests that need a
//! big, valid cluster.
//!
//! Shaped like a real one, because the costs depend on the shape: namespaces carry
//! `team`/`env` labels; pods come in replica groups ("apps") named from a small vocabulary,
//! with `app`/`tier`/`team`/`version` labels and named container ports, spread round-robin
//! over the nodes and addressed from their node's podCIDR; every Service fronts an app of its
//! namespace (ClusterIP, some NodePort; 1-2 ports, TCP and UDP) and has EndpointSlices of at
//! most 100 endpoints (the controller's default) pointing at pods, ready, with `nodeName`;
//! NetworkPolicies cycle through eight shapes seen in real clusters (default deny, same-app
//! and cross-namespace allows, monitoring by named port, ipBlock, DNS + egress allows,
//! matchExpressions with port ranges, internet egress).
//!
//! Deterministic: the same [`ScaleSpec`] always gives the same objects (a seeded xorshift,
//! no clock, no global randomness). Every object passes the state directory's validation.
//!
//! Address plan: podCIDRs are /24s of 10.128.0.0/9 (node i: `10.{128 + i/256}.{i%256}.0/24`,
//! so up to 32768 nodes with up to 253 pods each), ClusterIPs come from the default
//! 10.96.0.0/12, node InternalIPs from 172.16.0.0/12.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Namespace, Node, NodeAddress, NodeSpec, NodeStatus, Pod, PodIP,
    PodSpec, PodStatus, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use model::config::AgentConfig;
use model::state::ClusterState;

/// The cluster's pod address space in this plan.
pub const CLUSTER_CIDR: &str = "10.128.0.0/9";
/// Pods a /24 podCIDR can hold (the first host is the node's pod gateway).
pub const MAX_PODS_PER_NODE: usize = 253;
/// Endpoints per EndpointSlice, as the EndpointSlice controller's default `maxEndpointsPerSlice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// Replicas per app, the size of a pod group sharing labels.
pub const REPLICAS: usize = 6;
const NODE_PORT_FIRST: i32 = 30000;
const NODE_PORT_LAST: i32 = 32767;
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const UNDERLAY_MAC_ANNOTATION: &str = "kxdp.io/underlay-mac";

/// App names; an app's index past the list gets a numeric suffix (`cart-2`).
const APPS: [&str; 16] = [
    "frontend", "web", "api", "auth", "cart", "checkout", "search", "catalog", "billing",
    "payments", "worker", "queue", "cache", "db", "ledger", "notify",
];
const TEAMS: [&str; 6] = ["core", "payments", "growth", "search", "platform", "data"];
const ENVS: [&str; 3] = ["prod", "staging", "dev"];

/// How big a cluster to make. [`Default`] is issue 6's target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleSpec {
    pub nodes: usize,
    pub namespaces: usize,
    pub pods: usize,
    pub services: usize,
    /// Endpoints per Service (capped at the pods of its namespace).
    pub endpoints: usize,
    pub policies: usize,
    pub seed: u64,
}

impl Default for ScaleSpec {
    fn default() -> Self {
        ScaleSpec {
            nodes: 50,
            namespaces: 50,
            pods: 5000,
            services: 10_000,
            endpoints: 10,
            policies: 1000,
            seed: 0x6b78_6470,
        }
    }
}

/// A generated cluster, the config that fits its address plan, and the node to translate for.
#[derive(Debug, Clone)]
pub struct ScaleCluster {
    pub cluster: ClusterState,
    pub config: AgentConfig,
    /// `node-000`: hosts pods / nodes pods (rounded up).
    pub node_under_test: String,
    /// Service ports generated (each Service has 1 or 2), for per-port figures.
    pub service_ports: usize,
}

/// Why a spec cannot be generated; the message starts with the [`ScaleSpec`] field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("nodes: {0} is not in 1..=32768")]
    Nodes(usize),
    #[error("namespaces: at least one is needed")]
    NoNamespaces,
    #[error(
        "pods: {pods} cannot fill {namespaces} namespaces (Services and policies pick pods of theirs)"
    )]
    TooFewPods { pods: usize, namespaces: usize },
    #[error(
        "pods: {pods} over {nodes} nodes is more than {MAX_PODS_PER_NODE} per node (a /24 podCIDR)"
    )]
    TooDense { pods: usize, nodes: usize },
    #[error("services: {0} do not fit the serviceCIDR")]
    TooManyServices(usize),
    #[error("endpoints: at least one per Service")]
    NoEndpoints,
    /// [`CLUSTER_CIDR`] itself does not parse (the message quotes it).
    #[error("cluster CIDR: {0}")]
    ClusterCidr(#[source] datapath::addr::CidrParseError),
}

/// xorshift64*: small, fast, good enough to pick labels and shapes; seeded, so reproducible.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        // Zero is xorshift's fixed point.
        XorShift(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `0..n` for n far below 2^32; `n` must not be 0.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 32) as usize) % n
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

pub fn node_name(i: usize) -> String {
    format!("node-{i:03}")
}

pub fn namespace_name(i: usize) -> String {
    format!("ns-{i:03}")
}

/// Node i's podCIDR.
pub fn node_pod_cidr(i: usize) -> String {
    format!("10.{}.{}.0/24", 128 + i / 256, i % 256)
}

/// Node i's InternalIP (the VXLAN underlay address).
pub fn node_internal_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 1)) + i as u32)
}

/// Service i's ClusterIP: 10.96.0.10 onwards (10.96.0.1 is `kubernetes`' by convention).
pub fn service_cluster_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 10)) + i as u32)
}

/// Where pod j lives: round-robin over the nodes, the (j / nodes)th pod of its node.
fn pod_ip(j: usize, nodes: usize) -> String {
    let (node, slot) = (j % nodes, j / nodes);
    format!("10.{}.{}.{}", 128 + node / 256, node % 256, 2 + slot)
}

fn meta(namespace: Option<&str>, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        namespace: namespace.map(str::to_string),
        name: Some(name),
        labels: (!labels.is_empty()).then_some(labels),
        ..Default::default()
    }
}

fn labels<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn match_labels<const N: usize>(pairs: [(&str, &str); N]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels(pairs)),
        ..Default::default()
    }
}

/// One pod group's labels.
#[derive(Debug, Clone)]
struct App {
    name: String,
    tier: &'static str,
    /// Index of its first pod in the namespace's pod list.
    first_pod: usize,
}

fn app_name(a: usize) -> String {
    match a / APPS.len() {
        0 => APPS[a].to_string(),
        round => format!("{}-{}", APPS[a % APPS.len()], round + 1),
    }
}

fn tier_of(app: &str) -> &'static str {
    match app.split('-').next().unwrap_or(app) {
        "frontend" | "web" => "fe",
        "cache" | "db" | "ledger" | "queue" => "db",
        _ => "be",
    }
}

/// The pods of one namespace, by index into `ClusterState::pods`, and its apps.
#[derive(Debug, Default)]
struct NamespacePods {
    pods: Vec<usize>,
    apps: Vec<App>,
}

/// Builds the cluster `spec` describes.
pub fn generate(spec: &ScaleSpec) -> Result<ScaleCluster, SpecError> {
    check(spec)?;
    let mut rng = XorShift::new(spec.seed);
    let mut cluster = ClusterState::default();

    for i in 0..spec.nodes {
        cluster.nodes.push(node(i));
    }
    for n in 0..spec.namespaces {
        let name = namespace_name(n);
        cluster.namespaces.push(Namespace {
            metadata: meta(
                None,
                name,
                labels([
                    ("team", TEAMS[n % TEAMS.len()]),
                    ("env", ENVS[n % ENVS.len()]),
                ]),
            ),
            ..Default::default()
        });
    }

    // Pods in contiguous blocks per namespace, replica groups inside a block.
    let mut by_ns: Vec<NamespacePods> = (0..spec.namespaces)
        .map(|_| NamespacePods::default())
        .collect();
    for j in 0..spec.pods {
        let n = j * spec.namespaces / spec.pods;
        let ns = &mut by_ns[n];
        let k = ns.pods.len();
        if k.is_multiple_of(REPLICAS) {
            let name = app_name(k / REPLICAS);
            ns.apps.push(App {
                tier: tier_of(&name),
                name,
                first_pod: k,
            });
        }
        // A pod group was pushed above at k = 0, so there is a last one.
        let app = ns.apps[ns.apps.len() - 1].clone();
        // A rollout in progress here and there: two versions of one app.
        let version = if rng.chance(15) { "v2" } else { "v1" };
        ns.pods.push(j);
        cluster
            .pods
            .push(pod(j, n, k, &app, version, TEAMS[n % TEAMS.len()], spec));
    }

    let mut next_node_port = NODE_PORT_FIRST;
    let mut service_ports = 0;
    for i in 0..spec.services {
        let n = i % spec.namespaces;
        let ns = &by_ns[n];
        let app = &ns.apps[rng.below(ns.apps.len())];
        let ports = service_port_shapes(&mut rng);
        // 15% ask for NodePort while the range (one per port, cluster-wide) lasts; then, as
        // the API server would refuse them, they stay ClusterIP.
        let node_port =
            rng.chance(15) && next_node_port + (ports.len() as i32) - 1 <= NODE_PORT_LAST;
        let mut svc_ports = Vec::new();
        for shape in &ports {
            svc_ports.push(ServicePort {
                name: Some(shape.name.to_string()),
                port: shape.port,
                protocol: Some(shape.protocol.to_string()),
                target_port: Some(IntOrString::Int(shape.target)),
                node_port: node_port.then(|| {
                    next_node_port += 1;
                    next_node_port - 1
                }),
                ..Default::default()
            });
        }
        service_ports += svc_ports.len();
        let name = format!("{}-{i}", app.name);
        let namespace = namespace_name(n);
        cluster.services.push(Service {
            metadata: meta(Some(&namespace), name.clone(), labels([("app", &app.name)])),
            spec: Some(ServiceSpec {
                type_: Some(if node_port { "NodePort" } else { "ClusterIP" }.to_string()),
                cluster_ip: Some(service_cluster_ip(i).to_string()),
                cluster_ips: Some(vec![service_cluster_ip(i).to_string()]),
                selector: Some(labels([("app", &app.name)])),
                ports: Some(svc_ports),
                ..Default::default()
            }),
            ..Default::default()
        });

        // The app's pods first, then its neighbours: E distinct pods of the namespace.
        let count = spec.endpoints.min(ns.pods.len());
        let members: Vec<usize> = (0..count)
            .map(|e| ns.pods[(app.first_pod + e) % ns.pods.len()])
            .collect();
        for (s, chunk) in members.chunks(MAX_ENDPOINTS_PER_SLICE).enumerate() {
            cluster.endpoint_slices.push(endpoint_slice(
                &namespace,
                &name,
                s,
                chunk.iter().map(|&j| endpoint(j, spec.nodes)).collect(),
                &ports,
            ));
        }
    }

    for i in 0..spec.policies {
        let n = (i + rng.below(spec.namespaces)) % spec.namespaces;
        let ns = &by_ns[n];
        let app = &ns.apps[rng.below(ns.apps.len())];
        let peer_app = &ns.apps[rng.below(ns.apps.len())];
        let policy = network_policy(i, &mut rng, n, spec.namespaces, app, peer_app);
        cluster.network_policies.push(policy);
    }

    let config = AgentConfig {
        cluster_cidrs: vec![CLUSTER_CIDR.parse().map_err(SpecError::ClusterCidr)?],
        ..AgentConfig::default()
    };
    Ok(ScaleCluster {
        cluster,
        config,
        node_under_test: node_name(0),
        service_ports,
    })
}

fn check(spec: &ScaleSpec) -> Result<(), SpecError> {
    if spec.nodes == 0 || spec.nodes > 32768 {
        return Err(SpecError::Nodes(spec.nodes));
    }
    if spec.namespaces == 0 {
        return Err(SpecError::NoNamespaces);
    }
    if spec.pods < spec.namespaces {
        return Err(SpecError::TooFewPods {
            pods: spec.pods,
            namespaces: spec.namespaces,
        });
    }
    if spec.pods.div_ceil(spec.nodes) > MAX_PODS_PER_NODE {
        return Err(SpecError::TooDense {
            pods: spec.pods,
            nodes: spec.nodes,
        });
    }
    // 10.96.0.10 + services must stay inside 10.96.0.0/12.
    if spec.services > (1 << 20) - 11 {
        return Err(SpecError::TooManyServices(spec.services));
    }
    if spec.endpoints == 0 {
        return Err(SpecError::NoEndpoints);
    }
    Ok(())
}

fn node(i: usize) -> Node {
    let ip = node_internal_ip(i);
    let [a, b, c, d] = ip.octets();
    let mut metadata = meta(None, node_name(i), labels([("kubernetes.io/os", "linux")]));
    metadata.annotations = Some(
        [(
            UNDERLAY_MAC_ANNOTATION.to_string(),
            format!("02:00:{a:02x}:{b:02x}:{c:02x}:{d:02x}"),
        )]
        .into(),
    );
    Node {
        metadata,
        spec: Some(NodeSpec {
            pod_cidr: Some(node_pod_cidr(i)),
            pod_cidrs: Some(vec![node_pod_cidr(i)]),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.to_string(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: node_name(i),
                },
            ]),
            ..Default::default()
        }),
    }
}

fn container_port(name: &str, port: i32, protocol: &str) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: port,
        protocol: Some(protocol.to_string()),
        ..Default::default()
    }
}

/// Pod j, the kth of namespace n.
fn pod(
    j: usize,
    n: usize,
    k: usize,
    app: &App,
    version: &str,
    team: &str,
    spec: &ScaleSpec,
) -> Pod {
    let ip = pod_ip(j, spec.nodes);
    Pod {
        metadata: meta(
            Some(&namespace_name(n)),
            format!("{}-{k}", app.name),
            labels([
                ("app", &app.name),
                ("tier", app.tier),
                ("team", team),
                ("version", version),
            ]),
        ),
        spec: Some(PodSpec {
            node_name: Some(node_name(j % spec.nodes)),
            containers: vec![Container {
                name: "main".into(),
                ports: Some(vec![
                    container_port("http", 8080, "TCP"),
                    container_port("metrics", 9090, "TCP"),
                    container_port("dns", 5353, "UDP"),
                ]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(ip.clone()),
            pod_ips: Some(vec![PodIP { ip }]),
            ..Default::default()
        }),
    }
}

/// One Service port and the container port behind it.
#[derive(Debug, Clone, Copy)]
struct PortShape {
    name: &'static str,
    port: i32,
    target: i32,
    protocol: &'static str,
}

const HTTP: PortShape = PortShape {
    name: "http",
    port: 80,
    target: 8080,
    protocol: "TCP",
};
const METRICS: PortShape = PortShape {
    name: "metrics",
    port: 9090,
    target: 9090,
    protocol: "TCP",
};
const DNS: PortShape = PortShape {
    name: "dns",
    port: 53,
    target: 5353,
    protocol: "UDP",
};

/// http alone (60%), http + metrics (25%), http + a UDP port (15%).
fn service_port_shapes(rng: &mut XorShift) -> Vec<PortShape> {
    match rng.below(100) {
        0..60 => vec![HTTP],
        60..85 => vec![HTTP, METRICS],
        _ => vec![HTTP, DNS],
    }
}

/// Pod j as an endpoint: ready, serving, on its node.
pub fn endpoint(j: usize, nodes: usize) -> Endpoint {
    Endpoint {
        addresses: vec![pod_ip(j, nodes)],
        conditions: Some(EndpointConditions {
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false),
        }),
        node_name: Some(node_name(j % nodes)),
        ..Default::default()
    }
}

fn endpoint_slice(
    namespace: &str,
    service: &str,
    index: usize,
    endpoints: Vec<Endpoint>,
    ports: &[PortShape],
) -> EndpointSlice {
    EndpointSlice {
        metadata: meta(
            Some(namespace),
            format!("{service}-{index}"),
            labels([(SERVICE_NAME_LABEL, service)]),
        ),
        address_type: "IPv4".into(),
        endpoints,
        ports: Some(
            ports
                .iter()
                .map(|p| EndpointPort {
                    name: Some(p.name.to_string()),
                    port: Some(p.target),
                    protocol: Some(p.protocol.to_string()),
                    ..Default::default()
                })
                .collect(),
        ),
    }
}

fn policy_port(protocol: &str, port: IntOrString, end_port: Option<i32>) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.to_string()),
        port: Some(port),
        end_port,
    }
}

fn pod_peer(selector: LabelSelector) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(selector),
        ..Default::default()
    }
}

fn ip_block(cidr: &str, except: &[&str]) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.to_string(),
            except: (!except.is_empty()).then(|| except.iter().map(|e| e.to_string()).collect()),
        }),
        ..Default::default()
    }
}

fn ingress(
    from: Vec<NetworkPolicyPeer>,
    ports: Vec<NetworkPolicyPort>,
) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        from: (!from.is_empty()).then_some(from),
        ports: (!ports.is_empty()).then_some(ports),
    }
}

fn egress(to: Vec<NetworkPolicyPeer>, ports: Vec<NetworkPolicyPort>) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: (!to.is_empty()).then_some(to),
        ports: (!ports.is_empty()).then_some(ports),
    }
}

/// Policy i in namespace n, one of eight shapes by i % 8.
fn network_policy(
    i: usize,
    rng: &mut XorShift,
    n: usize,
    namespaces: usize,
    app: &App,
    peer: &App,
) -> NetworkPolicy {
    let tcp = |p: i32| policy_port("TCP", IntOrString::Int(p), None);
    let named = |p: &str| policy_port("TCP", IntOrString::String(p.to_string()), None);
    let this_app = match_labels([("app", &app.name)]);
    let (shape, spec) = match i % 8 {
        0 => (
            "default-deny",
            NetworkPolicySpec {
                pod_selector: Some(LabelSelector::default()),
                policy_types: Some(vec!["Ingress".into()]),
                ..Default::default()
            },
        ),
        1 => (
            "allow-app",
            NetworkPolicySpec {
                pod_selector: Some(this_app),
                ingress: Some(vec![ingress(
                    vec![pod_peer(match_labels([("app", &peer.name)]))],
                    vec![tcp(8080)],
                )]),
                ..Default::default()
            },
        ),
        2 => {
            let team = TEAMS[rng.below(TEAMS.len())];
            (
                "allow-team",
                NetworkPolicySpec {
                    pod_selector: Some(match_labels([("tier", "db")])),
                    ingress: Some(vec![ingress(
                        vec![NetworkPolicyPeer {
                            namespace_selector: Some(match_labels([("team", team)])),
                            pod_selector: Some(match_labels([("tier", "be")])),
                            ..Default::default()
                        }],
                        vec![tcp(5432), named("http")],
                    )]),
                    ..Default::default()
                },
            )
        }
        3 => {
            let monitoring = namespace_name(rng.below(namespaces));
            (
                "allow-monitoring",
                NetworkPolicySpec {
                    pod_selector: Some(LabelSelector::default()),
                    ingress: Some(vec![ingress(
                        vec![NetworkPolicyPeer {
                            namespace_selector: Some(match_labels([(
                                "kubernetes.io/metadata.name",
                                monitoring.as_str(),
                            )])),
                            ..Default::default()
                        }],
                        vec![named("metrics")],
                    )]),
                    ..Default::default()
                },
            )
        }
        4 => (
            "allow-office",
            NetworkPolicySpec {
                pod_selector: Some(match_labels([("tier", "fe")])),
                ingress: Some(vec![ingress(
                    vec![ip_block("192.168.0.0/16", &["192.168.1.0/24"])],
                    vec![tcp(8080), tcp(443)],
                )]),
                ..Default::default()
            },
        ),
        5 => (
            "egress-dns-and-peer",
            NetworkPolicySpec {
                pod_selector: Some(this_app),
                policy_types: Some(vec!["Egress".into()]),
                egress: Some(vec![
                    egress(
                        vec![NetworkPolicyPeer {
                            namespace_selector: Some(LabelSelector::default()),
                            pod_selector: Some(match_labels([("k8s-app", "kube-dns")])),
                            ..Default::default()
                        }],
                        vec![
                            policy_port("UDP", IntOrString::Int(53), None),
                            policy_port("TCP", IntOrString::Int(53), None),
                        ],
                    ),
                    egress(
                        vec![pod_peer(match_labels([("app", &peer.name)]))],
                        vec![named("http")],
                    ),
                ]),
                ..Default::default()
            },
        ),
        6 => (
            "allow-range",
            NetworkPolicySpec {
                pod_selector: Some(LabelSelector {
                    match_expressions: Some(vec![LabelSelectorRequirement {
                        key: "tier".into(),
                        operator: "In".into(),
                        values: Some(vec!["be".into(), "db".into()]),
                    }]),
                    ..Default::default()
                }),
                ingress: Some(vec![ingress(
                    vec![pod_peer(LabelSelector {
                        match_expressions: Some(vec![LabelSelectorRequirement {
                            key: "version".into(),
                            operator: "NotIn".into(),
                            values: Some(vec!["v0".into()]),
                        }]),
                        ..Default::default()
                    })],
                    vec![policy_port("TCP", IntOrString::Int(9000), Some(9100))],
                )]),
                ..Default::default()
            },
        ),
        _ => (
            "egress-internet",
            NetworkPolicySpec {
                pod_selector: Some(match_labels([("tier", "fe")])),
                policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                ingress: Some(vec![ingress(Vec::new(), vec![tcp(8080)])]),
                egress: Some(vec![egress(
                    vec![ip_block("0.0.0.0/0", &["10.0.0.0/8", "172.16.0.0/12"])],
                    vec![tcp(443)],
                )]),
            },
        ),
    };
    NetworkPolicy {
        metadata: meta(
            Some(&namespace_name(n)),
            format!("{shape}-{i}"),
            BTreeMap::new(),
        ),
        spec: Some(spec),
    }
}

/// The three endpoint changes the scale run cycles through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointChange {
    /// The slice's last endpoint goes (a pod scaled away); a one-endpoint slice gains one
    /// instead, so the Service keeps something to balance to.
    Remove,
    /// A pod of the namespace not yet in the slice joins it.
    Add,
    /// The first endpoint's `ready` flips.
    FlipReady,
}

impl EndpointChange {
    /// The ith change of a run: remove, add, flip, remove, ...
    pub fn cycle(i: usize) -> EndpointChange {
        [
            EndpointChange::Remove,
            EndpointChange::Add,
            EndpointChange::FlipReady,
        ][i % 3]
    }
}

/// Applies `change` to `slice`, drawing a joining pod from `candidates` (endpoints of the
/// namespace's pods). Returns what the slice's Service now has: (endpoints, ready ones).
pub fn change_slice(
    slice: &mut EndpointSlice,
    change: EndpointChange,
    candidates: &[Endpoint],
) -> (usize, usize) {
    match change {
        EndpointChange::Remove if slice.endpoints.len() > 1 => {
            slice.endpoints.pop();
        }
        EndpointChange::Remove | EndpointChange::Add => {
            if let Some(new) = candidates
                .iter()
                .find(|c| !slice.endpoints.iter().any(|e| e.addresses == c.addresses))
            {
                slice.endpoints.push(new.clone());
            }
        }
        EndpointChange::FlipReady => {
            if let Some(cond) = slice
                .endpoints
                .first_mut()
                .and_then(|e| e.conditions.as_mut())
            {
                let ready = !cond.ready.unwrap_or(true);
                cond.ready = Some(ready);
                cond.serving = Some(ready);
            }
        }
    }
    let ready = slice
        .endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .count();
    (slice.endpoints.len(), ready)
}

/// Every pod of `namespace` as a ready endpoint, for [`change_slice`] to draw from.
pub fn namespace_endpoints(cluster: &ClusterState, namespace: &str) -> Vec<Endpoint> {
    cluster
        .pods
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .filter_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.clone()?;
            Some(Endpoint {
                addresses: vec![ip],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                node_name: p.spec.as_ref()?.node_name.clone(),
                ..Default::default()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::translate::{canonical_dump, translate};

    fn small() -> ScaleSpec {
        ScaleSpec {
            nodes: 4,
            namespaces: 3,
            pods: 60,
            services: 40,
            endpoints: 5,
            policies: 24,
            seed: 7,
        }
    }

    #[test]
    fn small_cluster_translates_without_warnings() {
        let spec = small();
        let scale = generate(&spec).expect("generates");
        let t = translate(&scale.cluster, &scale.config, &scale.node_under_test, 1)
            .expect("translates");
        assert_eq!(t.warnings, Vec::<String>::new());
        let tables = &t.tables;
        assert_eq!(tables.local_pods.len(), spec.pods / spec.nodes);
        assert_eq!(tables.remote_nodes.len(), spec.nodes - 1);
        assert_eq!(tables.service_ports.len(), scale.service_ports);
        assert!(
            scale.service_ports > spec.services,
            "some Services have 2 ports"
        );
        for port in &tables.service_ports {
            assert_eq!(port.backends.len(), spec.endpoints, "{}", port.name);
            assert_eq!(port.cluster.members.len(), spec.endpoints, "{}", port.name);
        }
        let node_ports = scale
            .cluster
            .services
            .iter()
            .filter(|s| s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("NodePort"))
            .count();
        assert!(node_ports > 0, "some Services are NodePort");
        // Every policy shape selects something on this node.
        assert!(tables.policy.any_isolation());
        assert_eq!(tables.policy.policy_names.len(), spec.policies);
    }

    #[test]
    fn same_spec_same_cluster() {
        let a = generate(&small()).expect("generates");
        let b = generate(&small()).expect("generates");
        let dump = |s: &ScaleCluster| {
            canonical_dump(
                &translate(&s.cluster, &s.config, &s.node_under_test, 1)
                    .expect("translates")
                    .tables,
            )
        };
        assert_eq!(dump(&a), dump(&b));
        let other = generate(&ScaleSpec { seed: 8, ..small() }).expect("generates");
        assert_ne!(dump(&a), dump(&other), "the seed matters");
    }

    #[test]
    fn generated_objects_pass_the_state_directory_validation() {
        let scale = generate(&small()).expect("generates");
        let c = &scale.cluster;
        let mut docs: Vec<String> = Vec::new();
        let mut add = |yaml: Result<String, serde_yaml::Error>| {
            docs.push(yaml.expect("serializes"));
        };
        c.nodes.iter().for_each(|o| add(serde_yaml::to_string(o)));
        c.namespaces
            .iter()
            .for_each(|o| add(serde_yaml::to_string(o)));
        c.pods.iter().for_each(|o| add(serde_yaml::to_string(o)));
        c.services
            .iter()
            .for_each(|o| add(serde_yaml::to_string(o)));
        c.endpoint_slices
            .iter()
            .for_each(|o| add(serde_yaml::to_string(o)));
        c.network_policies
            .iter()
            .for_each(|o| add(serde_yaml::to_string(o)));
        let dir = std::env::temp_dir().join(format!("kxdp-scale-gen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("cluster.yaml"), docs.join("---\n")).expect("write");
        let loaded = model::state::load_state_dir(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        let loaded = loaded.expect("the loader accepts every generated object");
        assert_eq!(loaded.cluster.pods.len(), c.pods.len());
        assert_eq!(loaded.cluster.services.len(), c.services.len());
        assert_eq!(
            loaded.cluster.endpoint_slices.len(),
            c.endpoint_slices.len()
        );
        assert_eq!(
            loaded.cluster.network_policies.len(),
            c.network_policies.len()
        );
    }

    #[test]
    fn big_services_are_split_into_slices_of_100() {
        let scale = generate(&ScaleSpec {
            nodes: 2,
            namespaces: 1,
            pods: 250,
            services: 1,
            endpoints: 230,
            policies: 0,
            seed: 1,
        })
        .expect("generates");
        let sizes: Vec<usize> = scale
            .cluster
            .endpoint_slices
            .iter()
            .map(|s| s.endpoints.len())
            .collect();
        assert_eq!(sizes, [100, 100, 30]);
    }

    #[test]
    fn endpoint_changes_do_what_they_say() {
        let scale = generate(&small()).expect("generates");
        let mut slice = scale.cluster.endpoint_slices[0].clone();
        let ns = slice.metadata.namespace.clone().expect("namespaced");
        let pool = namespace_endpoints(&scale.cluster, &ns);
        assert_eq!(
            change_slice(&mut slice, EndpointChange::Remove, &pool),
            (4, 4)
        );
        assert_eq!(change_slice(&mut slice, EndpointChange::Add, &pool), (5, 5));
        assert_eq!(
            change_slice(&mut slice, EndpointChange::FlipReady, &pool),
            (5, 4)
        );
        assert_eq!(
            change_slice(&mut slice, EndpointChange::FlipReady, &pool),
            (5, 5)
        );
    }

    #[test]
    fn impossible_specs_are_refused() {
        let too_dense = ScaleSpec {
            nodes: 1,
            pods: 300,
            namespaces: 1,
            ..small()
        };
        let err = generate(&too_dense).unwrap_err();
        assert!(matches!(err, SpecError::TooDense { .. }), "{err}");
        assert!(err.to_string().contains("per node"), "{err}");
        assert!(
            generate(&ScaleSpec {
                nodes: 0,
                ..small()
            })
            .is_err()
        );
    }
}
