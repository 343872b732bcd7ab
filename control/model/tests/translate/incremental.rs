//! The incremental translator against the pure `translate`: random change sequences over a
//! small cluster (pods relabelled, moved, added and deleted; endpoints flipping; Services
//! changing type, ports and addresses, two of them claiming one address; policies and
//! namespace labels changing; nodes changing and heartbeating; ServiceCIDRs coming and
//! going, with Services allocated from either range), and after every batch the
//! incremental result must equal a from-scratch translation of the same state: tables
//! (`canonical_dump`), warnings, and every policy decision.
//!
//! Plus the point of it: what an EndpointSlice change, a label change and a change kxdp
//! does not read each cost, and that untouched parts are shared with the last generation.

use std::collections::BTreeMap;
use std::sync::Arc;

use datapath::IpKey;
use datapath::policy::{PolicyDirection, PolicyQuery};
use model::config::AgentConfig;
use model::state::changes::{Change, Kind, Object, ObjectKey};
use model::translate::incremental::Translator;
use model::translate::{Translated, canonical_dump, translate};
use serde_json::{Value, json};

const NODE: &str = "n0";
const NODES: usize = 3;
const PODS: usize = 24;
const SERVICES: usize = 8;
const POLICIES: usize = 4;
const LABELS: [&str; 3] = ["web", "db", "api"];

/// xorshift64*: deterministic and enough for choosing changes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[derive(Clone)]
struct PodModel {
    node: usize,
    host: u8,
    app: usize,
    role: Option<usize>,
    finished: bool,
    heartbeat: u64,
}

#[derive(Clone)]
struct ServiceModel {
    node_port: bool,
    vip: u8,
    dns_port: bool,
    /// Per endpoint: pod index and ready.
    endpoints: Vec<(usize, bool)>,
    /// Endpoints split over two slices.
    two_slices: bool,
    /// The ClusterIP is from the second ServiceCIDR (10.200.0.0/24), not 10.96.0.0/12.
    second_range: bool,
}

#[derive(Clone)]
struct PolicyModel {
    app: usize,
    from_app: Option<usize>,
    from_team: Option<usize>,
    egress: bool,
}

/// The cluster as plain numbers; objects are rendered from it.
struct Model {
    node_external_ip: bool,
    node_mac_suffix: [u8; 3],
    node_heartbeat: u64,
    team: [usize; 2],
    /// Which ServiceCIDR objects exist: `kubernetes` (10.96.0.0/12) and `second`
    /// (10.200.0.0/24). With neither, kxdp.yaml's serviceCIDR (10.96.0.0/12) applies.
    service_cidrs: [bool; 2],
    pods: Vec<Option<PodModel>>,
    services: Vec<Option<ServiceModel>>,
    policies: Vec<Option<PolicyModel>>,
}

fn ns_of(i: usize) -> &'static str {
    ["a", "b"][i % 2]
}

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("object renders")
}

impl Model {
    fn new(rng: &mut Rng) -> Model {
        let pods = (0..PODS)
            .map(|i| {
                Some(PodModel {
                    node: rng.below(NODES),
                    host: 2 + i as u8,
                    app: rng.below(LABELS.len()),
                    role: rng.chance(50).then(|| rng.below(2)),
                    finished: false,
                    heartbeat: 0,
                })
            })
            .collect();
        let services = (0..SERVICES).map(|_| Some(random_service(rng))).collect();
        let policies = (0..POLICIES).map(|_| Some(random_policy(rng))).collect();
        Model {
            node_external_ip: false,
            node_mac_suffix: [1, 1, 1],
            node_heartbeat: 0,
            team: [0, 1],
            service_cidrs: [true, true],
            pods,
            services,
            policies,
        }
    }

    fn node(&self, i: usize) -> Object {
        let mut addresses =
            vec![json!({"type": "InternalIP", "address": format!("192.168.1.{}", 10 + i)})];
        if i == 0 && self.node_external_ip {
            addresses.push(json!({"type": "ExternalIP", "address": "203.0.113.7"}));
        }
        let mac_last = if i == 1 {
            self.node_mac_suffix[2]
        } else {
            i as u8
        };
        Object::Node(obj(json!({
            "metadata": {
                "name": format!("n{i}"),
                "labels": {"heartbeat": (if i == 0 { self.node_heartbeat } else { 0 }).to_string()},
                "annotations": {"kxdp.io/underlay-mac": format!("02:00:00:00:0{i}:{mac_last:02x}")},
            },
            "spec": {"podCIDR": format!("10.244.{i}.0/24")},
            "status": {"addresses": addresses},
        })))
    }

    fn namespace(&self, i: usize) -> Object {
        Object::Namespace(obj(json!({
            "metadata": {"name": ns_of(i), "labels": {"team": format!("t{}", self.team[i])}},
        })))
    }

    fn pod_ip(&self, i: usize) -> Option<String> {
        let p = self.pods[i].as_ref()?;
        Some(format!("10.244.{}.{}", p.node, p.host))
    }

    fn pod(&self, i: usize) -> Option<Object> {
        let p = self.pods[i].as_ref()?;
        let mut labels = json!({"app": LABELS[p.app]});
        if let Some(r) = p.role {
            labels["role"] = json!(format!("r{r}"));
        }
        Some(Object::Pod(obj(json!({
            "metadata": {
                "namespace": ns_of(i), "name": format!("p{i}"), "labels": labels,
                "annotations": {"heartbeat": p.heartbeat.to_string()},
            },
            "spec": {
                "nodeName": format!("n{}", p.node),
                "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}],
            },
            "status": {
                "phase": if p.finished { "Succeeded" } else { "Running" },
                "podIP": self.pod_ip(i),
                "podIPs": [{"ip": self.pod_ip(i)}],
            },
        }))))
    }

    fn service(&self, i: usize) -> Option<Object> {
        let s = self.services[i].as_ref()?;
        let mut ports =
            vec![json!({"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"})];
        if s.node_port {
            ports[0]["nodePort"] = json!(30000 + i);
        }
        if s.dns_port {
            ports.push(json!({"name": "dns", "port": 53, "protocol": "UDP"}));
        }
        Some(Object::Service(obj(json!({
            "metadata": {"namespace": ns_of(i), "name": format!("s{i}")},
            "spec": {
                "type": if s.node_port { "NodePort" } else { "ClusterIP" },
                "clusterIP": if s.second_range {
                    format!("10.200.0.{}", s.vip)
                } else {
                    format!("10.96.0.{}", s.vip)
                },
                "ports": ports,
            },
        }))))
    }

    /// Slice `j` (0 or 1) of service `i`.
    fn slice(&self, i: usize, j: usize) -> Option<Object> {
        let s = self.services[i].as_ref()?;
        if j == 1 && !s.two_slices {
            return None;
        }
        let endpoints: Vec<Value> = s
            .endpoints
            .iter()
            .enumerate()
            .filter(|(k, _)| !s.two_slices || k % 2 == j)
            .filter_map(|(_, &(pod, ready))| {
                let ip = self.pod_ip(pod)?;
                let node = self.pods[pod].as_ref()?.node;
                Some(json!({"addresses": [ip], "conditions": {"ready": ready}, "nodeName": format!("n{node}")}))
            })
            .collect();
        Some(Object::EndpointSlice(obj(json!({
            "metadata": {
                "namespace": ns_of(i), "name": format!("s{i}-{j}"),
                "labels": {"kubernetes.io/service-name": format!("s{i}")},
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [
                {"name": "http", "port": 8080, "protocol": "TCP"},
                {"name": "dns", "port": 53, "protocol": "UDP"},
            ],
        }))))
    }

    fn policy(&self, i: usize) -> Option<Object> {
        let p = self.policies[i].as_ref()?;
        let mut from = Vec::new();
        if let Some(a) = p.from_app {
            from.push(json!({"podSelector": {"matchLabels": {"app": LABELS[a]}}}));
        }
        if let Some(t) = p.from_team {
            from.push(json!({"namespaceSelector": {"matchLabels": {"team": format!("t{t}")}}}));
        }
        let mut spec = json!({
            "podSelector": {"matchLabels": {"app": LABELS[p.app]}},
            "ingress": [{"from": from, "ports": [{"port": "http"}]}],
        });
        if p.egress {
            spec["policyTypes"] = json!(["Ingress", "Egress"]);
            spec["egress"] = json!([{"to": [{"podSelector": {"matchExpressions": [{"key": "role", "operator": "Exists"}]}}]}]);
        }
        Some(Object::NetworkPolicy(obj(json!({
            "metadata": {"namespace": ns_of(i), "name": format!("pol{i}")},
            "spec": spec,
        }))))
    }

    /// ServiceCIDR `i`: 0 is `kubernetes`, 1 is `second`.
    fn service_cidr(&self, i: usize) -> Option<Object> {
        let (name, cidr) = [("kubernetes", "10.96.0.0/12"), ("second", "10.200.0.0/24")][i];
        self.service_cidrs[i].then(|| {
            Object::ServiceCIDR(obj(json!({
                "metadata": {"name": name},
                "spec": {"cidrs": [cidr]},
            })))
        })
    }

    /// Every object, as changes.
    fn all(&self) -> Vec<Change> {
        let mut out: Vec<Option<Object>> = Vec::new();
        out.extend((0..2).map(|i| self.service_cidr(i)));
        out.extend((0..NODES).map(|i| Some(self.node(i))));
        out.extend((0..2).map(|i| Some(self.namespace(i))));
        out.extend((0..PODS).map(|i| self.pod(i)));
        for i in 0..SERVICES {
            out.push(self.service(i));
            out.push(self.slice(i, 0));
            out.push(self.slice(i, 1));
        }
        out.extend((0..POLICIES).map(|i| self.policy(i)));
        out.into_iter().flatten().map(Change::Applied).collect()
    }
}

fn random_service(rng: &mut Rng) -> ServiceModel {
    let n = rng.below(4);
    ServiceModel {
        node_port: rng.chance(30),
        // A small pool: two Services now and then claim one address.
        vip: 10 + rng.below(6) as u8,
        dns_port: rng.chance(40),
        endpoints: (0..n).map(|_| (rng.below(PODS), rng.chance(80))).collect(),
        two_slices: rng.chance(30),
        second_range: rng.chance(30),
    }
}

fn random_policy(rng: &mut Rng) -> PolicyModel {
    PolicyModel {
        app: rng.below(LABELS.len()),
        from_app: rng.chance(70).then(|| rng.below(LABELS.len())),
        from_team: rng.chance(40).then(|| rng.below(2)),
        egress: rng.chance(30),
    }
}

fn deleted(kind: Kind, namespace: &str, name: String) -> Change {
    Change::Deleted(ObjectKey {
        kind,
        namespace: namespace.to_string(),
        name,
    })
}

/// One random change to the model and the API changes that express it.
fn mutate(m: &mut Model, rng: &mut Rng) -> Vec<Change> {
    let put = |o: Option<Object>, kind: Kind, ns: &str, name: String| match o {
        Some(o) => Change::Applied(o),
        None => deleted(kind, ns, name),
    };
    let service_changes = |m: &Model, i: usize| {
        vec![
            put(m.service(i), Kind::Service, ns_of(i), format!("s{i}")),
            put(
                m.slice(i, 0),
                Kind::EndpointSlice,
                ns_of(i),
                format!("s{i}-0"),
            ),
            put(
                m.slice(i, 1),
                Kind::EndpointSlice,
                ns_of(i),
                format!("s{i}-1"),
            ),
        ]
    };
    match rng.below(13) {
        // Labels only.
        0 | 1 => {
            let i = rng.below(PODS);
            if let Some(p) = m.pods[i].as_mut() {
                p.app = rng.below(LABELS.len());
                p.role = rng.chance(50).then(|| rng.below(2));
            }
            vec![put(m.pod(i), Kind::Pod, ns_of(i), format!("p{i}"))]
        }
        // Status noise kxdp does not read.
        2 => {
            let i = rng.below(PODS);
            if let Some(p) = m.pods[i].as_mut() {
                p.heartbeat += 1;
            }
            m.node_heartbeat += 1;
            vec![
                put(m.pod(i), Kind::Pod, ns_of(i), format!("p{i}")),
                Change::Applied(m.node(0)),
            ]
        }
        // A pod goes, comes back elsewhere, or finishes.
        3 => {
            let i = rng.below(PODS);
            match rng.below(3) {
                0 => m.pods[i] = None,
                1 => {
                    m.pods[i] = Some(PodModel {
                        node: rng.below(NODES),
                        host: 2 + i as u8,
                        app: rng.below(LABELS.len()),
                        role: None,
                        finished: false,
                        heartbeat: 0,
                    })
                }
                _ => {
                    if let Some(p) = m.pods[i].as_mut() {
                        p.finished = !p.finished;
                    }
                }
            }
            vec![put(m.pod(i), Kind::Pod, ns_of(i), format!("p{i}"))]
        }
        // Endpoints: flip, add, remove (one slice changes).
        4..=6 => {
            let i = rng.below(SERVICES);
            if let Some(s) = m.services[i].as_mut() {
                match rng.below(3) {
                    0 if !s.endpoints.is_empty() => {
                        let k = rng.below(s.endpoints.len());
                        s.endpoints[k].1 = !s.endpoints[k].1;
                    }
                    1 if !s.endpoints.is_empty() => {
                        let k = rng.below(s.endpoints.len());
                        s.endpoints.remove(k);
                    }
                    _ => s.endpoints.push((rng.below(PODS), true)),
                }
            }
            // The slices alone, as the EndpointSlice controller writes them.
            service_changes(m, i).split_off(1)
        }
        // A Service changes shape, goes, or comes.
        7 | 8 => {
            let i = rng.below(SERVICES);
            m.services[i] = match (&m.services[i], rng.below(3)) {
                (Some(_), 0) => None,
                (Some(s), 1) => Some(ServiceModel {
                    node_port: !s.node_port,
                    dns_port: !s.dns_port,
                    ..s.clone()
                }),
                _ => Some(random_service(rng)),
            };
            service_changes(m, i)
        }
        9 => {
            let i = rng.below(POLICIES);
            m.policies[i] = (!rng.chance(30)).then(|| random_policy(rng));
            vec![put(
                m.policy(i),
                Kind::NetworkPolicy,
                ns_of(i),
                format!("pol{i}"),
            )]
        }
        10 => {
            let i = rng.below(2);
            m.team[i] = rng.below(2);
            vec![Change::Applied(m.namespace(i))]
        }
        // A ServiceCIDR comes or goes (with both gone, kxdp.yaml's applies).
        11 => {
            let i = rng.below(2);
            m.service_cidrs[i] = !m.service_cidrs[i];
            let name = ["kubernetes", "second"][i].to_string();
            vec![put(m.service_cidr(i), Kind::ServiceCIDR, "", name)]
        }
        _ => {
            if rng.chance(50) {
                m.node_external_ip = !m.node_external_ip;
                vec![Change::Applied(m.node(0))]
            } else {
                m.node_mac_suffix[2] = m.node_mac_suffix[2].wrapping_add(1);
                vec![Change::Applied(m.node(1))]
            }
        }
    }
}

/// Every policy decision: each local endpoint, both directions, against every pod address
/// and one outside address, on the named port and another.
fn policy_matrix(t: &Translated) -> Vec<bool> {
    let mut peers: Vec<IpKey> = t.tables.policy.identity_by_ip.keys().copied().collect();
    peers.push("198.51.100.1".parse::<std::net::IpAddr>().unwrap().into());
    peers.sort();
    let mut out = Vec::new();
    for (i, pod) in t.tables.local_pods.iter().enumerate() {
        for &peer in &peers {
            for port in [8080, 9999] {
                for dir in [PolicyDirection::Ingress, PolicyDirection::Egress] {
                    let dst = match dir {
                        PolicyDirection::Ingress => pod.ips[0],
                        PolicyDirection::Egress => peer,
                    };
                    let q = PolicyQuery {
                        peer,
                        dst,
                        proto: 6,
                        dst_port: port,
                    };
                    out.push(t.tables.policy.allows(i, dir, &q));
                }
            }
        }
    }
    out
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn config() -> AgentConfig {
    AgentConfig::from_yaml("maglev: {tableSize: auto}").unwrap()
}

#[test]
fn random_change_sequences_equal_a_full_translation() {
    let mut batches = 0;
    for seed in 1..=12u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut model = Model::new(&mut rng);
        let mut inc = Translator::new(config(), NODE);
        let (first, _) = inc.apply(model.all(), 1).expect("first build");
        let full = translate(inc.cluster(), &config(), NODE, 1).unwrap();
        assert_eq!(canonical_dump(&first.tables), canonical_dump(&full.tables));

        for step in 0..60u64 {
            let mut batch = Vec::new();
            for _ in 0..1 + rng.below(3) {
                batch.extend(mutate(&mut model, &mut rng));
            }
            let generation = step + 2;
            let (got, _work) = inc.apply(batch, generation).expect("incremental");
            let want = translate(inc.cluster(), &config(), NODE, generation).unwrap();
            let ctx = format!("seed {seed} step {step}");
            assert_eq!(
                canonical_dump(&got.tables),
                canonical_dump(&want.tables),
                "{ctx}: tables"
            );
            assert_eq!(
                sorted(got.warnings.clone()),
                sorted(want.warnings.clone()),
                "{ctx}: warnings"
            );
            assert_eq!(policy_matrix(&got), policy_matrix(&want), "{ctx}: policy");
            batches += 1;
        }
    }
    eprintln!("{batches} batches compared");
}

#[test]
fn each_change_costs_what_it_touches() {
    let mut rng = Rng(7);
    let mut model = Model::new(&mut rng);
    // Make sure service 0 and 1 exist with distinct addresses and one endpoint each.
    for (i, vip) in [(0, 40), (1, 41)] {
        model.services[i] = Some(ServiceModel {
            node_port: false,
            vip,
            dns_port: false,
            endpoints: vec![(i, true)],
            two_slices: false,
            second_range: false,
        });
    }
    let mut inc = Translator::new(config(), NODE);
    let (before, work) = inc.apply(model.all(), 1).unwrap();
    assert!(work.full_rebuild);

    // One endpoint added to s0: s0 alone is rebuilt; frontends, s1 and policy are shared.
    model.services[0]
        .as_mut()
        .unwrap()
        .endpoints
        .push((5, true));
    let (after, work) = inc
        .apply(vec![Change::Applied(model.slice(0, 0).unwrap())], 2)
        .unwrap();
    assert_eq!(work.services_rebuilt, 1, "{work:?}");
    assert!(
        !work.policy_compiled && !work.full_rebuild && !work.node_parts_rebuilt,
        "{work:?}"
    );
    assert!(Arc::ptr_eq(
        &before.tables.frontends,
        &after.tables.frontends
    ));
    assert!(Arc::ptr_eq(&before.tables.policy, &after.tables.policy));
    let port = |t: &Translated, name: &str| {
        t.tables
            .service_ports
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .unwrap()
    };
    assert!(Arc::ptr_eq(
        &port(&before, "b/s1:80"),
        &port(&after, "b/s1:80")
    ));
    assert_eq!(port(&after, "a/s0:80").cluster.members.len(), 2);

    // A not-ready endpoint added: s0's selection is unchanged, so is its Maglev table.
    model.services[0]
        .as_mut()
        .unwrap()
        .endpoints
        .push((6, false));
    let (again, _) = inc
        .apply(vec![Change::Applied(model.slice(0, 0).unwrap())], 3)
        .unwrap();
    assert!(Arc::ptr_eq(
        &port(&after, "a/s0:80").cluster.maglev,
        &port(&again, "a/s0:80").cluster.maglev
    ));

    // Pod labels: the policy is updated, not recompiled; Services untouched.
    let p = model.pods[3].as_mut().unwrap();
    p.app = (p.app + 1) % LABELS.len();
    let (_, work) = inc
        .apply(vec![Change::Applied(model.pod(3).unwrap())], 4)
        .unwrap();
    assert_eq!(
        (
            work.pods_relabelled,
            work.policy_compiled,
            work.services_rebuilt
        ),
        (1, false, 0),
        "{work:?}"
    );

    // Status noise: nothing at all.
    model.pods[4].as_mut().unwrap().heartbeat += 1;
    model.node_heartbeat += 1;
    let (_, work) = inc
        .apply(
            vec![
                Change::Applied(model.pod(4).unwrap()),
                Change::Applied(model.node(0)),
            ],
            5,
        )
        .unwrap();
    assert_eq!(work, Default::default());
}

#[test]
fn an_error_keeps_the_changes_and_the_next_call_starts_over() {
    let mut rng = Rng(3);
    let model = Model::new(&mut rng);
    let mut inc = Translator::new(config(), NODE);
    inc.apply(model.all(), 1).unwrap();
    // The own node vanishes: an error, and the state says so.
    let err = inc
        .apply(vec![deleted(Kind::Node, "", NODE.into())], 2)
        .unwrap_err();
    assert!(
        err.to_string().contains("not in the cluster state"),
        "{err}"
    );
    // It comes back: a full rebuild equal to translate.
    let (t, work) = inc.apply(vec![Change::Applied(model.node(0))], 3).unwrap();
    assert!(work.full_rebuild);
    let want = translate(inc.cluster(), &config(), NODE, 3).unwrap();
    assert_eq!(canonical_dump(&t.tables), canonical_dump(&want.tables));
    let names: BTreeMap<_, _> = inc
        .cluster()
        .nodes
        .iter()
        .map(|n| (n.metadata.name.clone(), ()))
        .collect();
    assert_eq!(names.len(), NODES);
}

#[test]
fn a_service_cidr_change_rebuilds_the_services_only_when_the_ranges_move() {
    let mut rng = Rng(11);
    let mut model = Model::new(&mut rng);
    model.service_cidrs = [true, false];
    model.services[0] = Some(ServiceModel {
        node_port: false,
        vip: 50,
        dns_port: false,
        endpoints: vec![(0, true)],
        two_slices: false,
        second_range: true,
    });
    let present = model.services.iter().flatten().count();
    let mut inc = Translator::new(config(), NODE);
    let programmed = |t: &Translated| t.tables.service_ports.iter().any(|p| p.name == "a/s0:80");
    let cidrs = |t: &Translated| {
        t.tables
            .service_cidrs
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
    };

    let (before, _) = inc.apply(model.all(), 1).unwrap();
    assert!(!programmed(&before));
    assert_eq!(cidrs(&before), ["10.96.0.0/12"]);
    assert!(
        before.warnings.iter().any(|w| w.starts_with(
            "Service a/s0: clusterIP 10.200.0.50 is outside every Service CIDR (10.96.0.0/12)"
        )),
        "{:?}",
        before.warnings
    );

    // The second ServiceCIDR arrives: the ranges moved, every Service is rebuilt against
    // them and s0 is programmed.
    model.service_cidrs[1] = true;
    let (after, work) = inc
        .apply(vec![Change::Applied(model.service_cidr(1).unwrap())], 2)
        .unwrap();
    assert!(programmed(&after));
    assert_eq!(cidrs(&after), ["10.96.0.0/12", "10.200.0.0/24"]);
    assert_eq!(work.services_rebuilt, present, "{work:?}");
    assert!(!work.full_rebuild && !work.policy_compiled, "{work:?}");

    // The same object again (a status update): the ranges did not move, nothing rebuilt.
    let (_, work) = inc
        .apply(vec![Change::Applied(model.service_cidr(1).unwrap())], 3)
        .unwrap();
    assert_eq!(work, Default::default());

    // Gone again: s0 is skipped again.
    model.service_cidrs[1] = false;
    let (gone, _) = inc
        .apply(
            vec![deleted(Kind::ServiceCIDR, "", "second".to_string())],
            4,
        )
        .unwrap();
    assert!(!programmed(&gone));
    assert_eq!(cidrs(&gone), ["10.96.0.0/12"]);
}
