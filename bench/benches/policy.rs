//! NetworkPolicy compile time, incremental pod-label updates, and the per-flow lookup.
//!
//! Synthetic cluster: 50 namespaces (labels team, env), 5000 pods (100 per namespace,
//! labels app x10, tier x3, version x4, so 60 identities per namespace, 3000 in all),
//! spread over 50 nodes; the compiled node has 100 local pods. Policies cycle through five
//! shapes (same-namespace podSelector, namespace AND pod selector, ipBlock + egress with a
//! named port, namespaceSelector allow, matchExpressions with named port and endPort)
//! spread over the namespaces. Targets: compile of 1000 policies x 5000 pods <= 1 s,
//! one pod's label change <= 10 ms, and a lookup cost that does not grow with the number
//! of policies; and the whole pipeline per packet with 10, 1000 and 10000 policies (new
//! flows, judged, and established ones, which ride their conntrack entry). At the end a
//! table is printed from criterion's estimates.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, Throughput};
use datapath::conntrack::Flows;
use datapath::frame::Frame;
use datapath::observer::NoObserver;
use datapath::policy::{PolicyDirection, PolicyQuery, PolicyTables};
use datapath::process;
use datapath::tables::{LocalPod, PortId, proto};
use datapath::{IpKey, MacAddr};
use model::state::ClusterState;
use model::translate::policy::{self, PolicyCompiler};
use serde_json::json;

const NAMESPACES: usize = 50;
const PODS: usize = 5000;
const NODES: usize = 50;
const LOOKUPS: usize = 1024;

const TIERS: [&str; 3] = ["fe", "be", "db"];

fn pod_ip(j: usize) -> IpKey {
    IpKey::v4([10, 1, (j >> 8) as u8, j as u8])
}

fn pod_labels(j: usize) -> serde_json::Value {
    let k = j % 100;
    json!({"app": format!("app-{}", k % 10), "tier": TIERS[k % 3], "version": format!("v{}", k % 4)})
}

fn pod_json(j: usize, labels: serde_json::Value) -> serde_json::Value {
    json!({
        "metadata": {"namespace": format!("ns-{:02}", j / 100), "name": format!("pod-{j}"),
                     "labels": labels},
        "spec": {"nodeName": format!("node-{:02}", j % NODES), "containers": [{"name": "c",
                 "ports": [{"name": "http", "containerPort": 8080},
                           {"name": "metrics", "containerPort": 9090}]}]},
        "status": {"phase": "Running", "podIP": pod_ip(j).to_string()}
    })
}

fn policy_json(i: usize) -> serde_json::Value {
    let ns = format!("ns-{:02}", i % NAMESPACES);
    let a = (i / NAMESPACES) % 10;
    let meta = json!({"namespace": ns, "name": format!("np-{i}")});
    let spec = match i % 5 {
        0 => json!({
            "podSelector": {"matchLabels": {"app": format!("app-{a}")}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": "fe"}}}],
                         "ports": [{"port": 8080}]}]
        }),
        1 => json!({
            "podSelector": {"matchLabels": {"tier": "db"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": format!("t{}", a % 5)}},
                                   "podSelector": {"matchLabels": {"tier": "be"}}}],
                         "ports": [{"port": 5432}]}]
        }),
        2 => json!({
            "podSelector": {"matchExpressions": [{"key": "app", "operator": "In",
                            "values": [format!("app-{a}"), format!("app-{}", (a + 1) % 10)]}]},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}]}],
            "egress": [
                {"to": [{"namespaceSelector": {}}], "ports": [{"port": 53, "protocol": "UDP"}]},
                {"to": [{"podSelector": {"matchLabels": {"app": format!("app-{}", (a + 2) % 10)}}}],
                 "ports": [{"port": "http"}]}
            ]
        }),
        3 => json!({
            "podSelector": {},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"env": "prod"}}}]}]
        }),
        _ => json!({
            "podSelector": {"matchExpressions": [{"key": "version", "operator": "NotIn", "values": ["v0"]}]},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": format!("app-{a}")}}},
                                  {"podSelector": {"matchLabels": {"version": format!("v{}", a % 4)}}}],
                         "ports": [{"port": "http"}, {"port": 9000, "endPort": 9100}]}]
        }),
    };
    json!({"metadata": meta, "spec": spec})
}

fn cluster(policies: usize) -> ClusterState {
    let mut c = ClusterState::default();
    for n in 0..NAMESPACES {
        let env = if n % 2 == 0 { "prod" } else { "dev" };
        c.namespaces.push(
            serde_json::from_value(json!({"metadata": {"name": format!("ns-{n:02}"),
                "labels": {"team": format!("t{}", n % 5), "env": env}}}))
            .expect("namespace"),
        );
    }
    for j in 0..PODS {
        c.pods
            .push(serde_json::from_value(pod_json(j, pod_labels(j))).expect("pod"));
    }
    for i in 0..policies {
        c.network_policies
            .push(serde_json::from_value(policy_json(i)).expect("policy"));
    }
    c
}

/// node-00's pods, in (namespace, name) order as translate lists them.
fn local_pods() -> Vec<LocalPod> {
    let mut out: Vec<LocalPod> = (0..PODS)
        .filter(|j| j % NODES == 0)
        .map(|j| LocalPod {
            namespace: format!("ns-{:02}", j / 100),
            name: format!("pod-{j}"),
            port: PortId(2),
            mac: MacAddr::ZERO,
            ips: vec![pod_ip(j)],
        })
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

fn bench_compile(c: &mut Criterion) {
    let cl = cluster(1000);
    let local = local_pods();
    let mut g = c.benchmark_group("policy_compile");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("p1000_pods5000", |b| {
        b.iter(|| {
            let mut w = Vec::new();
            policy::build(black_box(&cl), &local, &mut w)
        })
    });
    g.finish();
}

fn bench_update(c: &mut Criterion) {
    let cl = cluster(1000);
    let local = local_pods();
    let mut g = c.benchmark_group("policy_update");
    // (bench, pod, its alternative labels): pod-1 is remote, pod-0 local; pod-1 and
    // pod-2 each share their identity with another pod (k and k + 60), so switching
    // between their label sets creates no identity.
    let canary = |j: usize| {
        let mut l = pod_labels(j);
        l["track"] = json!("canary");
        l
    };
    let cases = [
        ("remote_new_identity", 1, canary(1)),
        ("local_new_identity", 0, canary(0)),
        ("remote_existing_identity", 1, pod_labels(2)),
    ];
    for (name, j, labels) in cases {
        let mut compiler = PolicyCompiler::default();
        let mut tables = compiler.compile(&cl, &local, &mut Vec::new());
        // The two versions of the pod, held in a ClusterState for their type.
        let mut versions = ClusterState::default();
        for l in [pod_labels(j), labels] {
            versions
                .pods
                .push(serde_json::from_value(pod_json(j, l)).expect("pod"));
        }
        let mut flip = false;
        g.bench_function(name, |b| {
            b.iter(|| {
                flip = !flip;
                let p = &versions.pods[usize::from(flip)];
                compiler.update_pod(p, &mut tables).expect("incremental")
            })
        });
    }
    g.finish();
}

/// Queries against isolated endpoints: peers cycle through all pods and ports.
fn queries(t: &PolicyTables, local: &[LocalPod]) -> Vec<(usize, PolicyQuery)> {
    let isolated: Vec<usize> = (0..local.len())
        .filter(|&e| t.endpoints[e].ingress.is_some())
        .collect();
    let eps = if isolated.is_empty() {
        (0..local.len()).collect()
    } else {
        isolated
    };
    (0..LOOKUPS)
        .map(|n| {
            let e = eps[n % eps.len()];
            let peer = pod_ip((n * 7919) % PODS);
            let port = [8080, 5432, 9050, 80][n % 4];
            (
                e,
                PolicyQuery {
                    peer,
                    dst: local[e].ips[0],
                    proto: proto::TCP,
                    dst_port: port,
                },
            )
        })
        .collect()
}

fn bench_lookup(c: &mut Criterion) {
    let local = local_pods();
    let mut g = c.benchmark_group("policy_lookup");
    g.throughput(Throughput::Elements(LOOKUPS as u64));
    for n in [10usize, 1000, 10000] {
        let t = policy::build(&cluster(n), &local, &mut Vec::new());
        let qs = queries(&t, &local);
        let allowed = qs
            .iter()
            .filter(|(e, q)| t.allows(*e, PolicyDirection::Ingress, q))
            .count();
        let isolated: Vec<_> = t
            .endpoints
            .iter()
            .filter_map(|e| e.ingress.as_ref())
            .collect();
        let avg = |f: &dyn Fn(&datapath::policy::DirectionPolicy) -> usize| {
            isolated.iter().map(|d| f(d)).sum::<usize>() as f64 / isolated.len().max(1) as f64
        };
        println!(
            "policy_lookup/p{n}: {allowed}/{LOOKUPS} allowed; {} isolated endpoints, \
             on average {:.0} peer identities, {:.1} ipBlocks, {:.1} selecting policies",
            isolated.len(),
            avg(&|d| d.by_identity.len()),
            avg(&|d| d.cidrs.len()),
            avg(&|d| d.selected_by.len()),
        );
        g.bench_function(format!("p{n}_pods5000"), |b| {
            b.iter(|| {
                let mut ok = 0usize;
                for (e, q) in black_box(&qs) {
                    ok += usize::from(t.allows(*e, PolicyDirection::Ingress, q));
                }
                ok
            })
        });
    }
    g.finish();
}

/// The cluster with node-00 as a Node object, so the whole of `translate` runs: all pod
/// addresses sit in its PodCIDR (node-00 is the node under test; the others' pods are
/// peers for selectors only).
fn cluster_with_node(policies: usize) -> ClusterState {
    let mut c = cluster(policies);
    c.nodes.push(
        serde_json::from_value(json!({
            "metadata": {"name": "node-00",
                         "annotations": {"kxdp.io/underlay-mac": "02:00:c0:a8:32:0a"}},
            "spec": {"podCIDR": "10.1.0.0/16"},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.50.10"}]}
        }))
        .expect("node"),
    );
    c
}

/// 64 TCP SYNs, each a new flow, from local pod-0 to local pod-50 (both in ns-00, both
/// judged: egress of pod-0, ingress of pod-50) on port 8080.
fn syn_batch(first_port: u16) -> Vec<Vec<u8>> {
    let (src, dst) = (
        pod_ip(0).as_v4().expect("v4"),
        pod_ip(50).as_v4().expect("v4"),
    );
    (0..64u16)
        .map(|i| {
            let mut out = Vec::new();
            etherparse::PacketBuilder::ethernet2(
                MacAddr::for_ipv4(src).0,
                MacAddr::for_ipv4([10, 1, 0, 1]).0,
            )
            .ipv4(src, dst, 64)
            .tcp(first_port + i, 8080, 1, 64240)
            .syn()
            .write(&mut out, &[])
            .expect("packet builds");
            out
        })
        .collect()
}

/// ns/packet through the whole pipeline with 10, 1000 and 10000 policies over 5000 pods:
/// every packet a new flow (judged), and an established flow (the conntrack entry's cached
/// verdict, no policy lookup).
fn bench_pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("policy_pipeline");
    g.throughput(Throughput::Elements(64));
    let config = model::config::AgentConfig::default();
    let mut bufs: Vec<Vec<u8>> = (0..64).map(|_| vec![0u8; 512]).collect();
    for n in [10usize, 1000, 10000] {
        let t = model::translate::translate(&cluster_with_node(n), &config, "node-00", 1)
            .expect("translates")
            .tables;
        let port = t.port_by_name("pod-ns-00-pod-0").expect("pod-0 is local");
        let batches: Vec<Vec<Vec<u8>>> = (0..16u16).map(|k| syn_batch(10000 + k * 64)).collect();
        let verdicts = {
            let mut flows = Flows::default();
            let mut kinds = std::collections::BTreeMap::new();
            for pkt in &batches[0] {
                let mut buf = vec![0u8; 512];
                let mut f = Frame::load(&mut buf, 128, pkt).expect("fits");
                let v = process(&t, &mut flows, 1, port, &mut f, &mut NoObserver);
                *kinds.entry(format!("{v:?}")).or_insert(0) += 1;
            }
            kinds
        };
        println!("policy_pipeline/p{n}: first batch verdicts {verdicts:?}");
        let mut k = 0usize;
        let mut flows = Flows::default();
        g.bench_function(format!("new_flow_p{n}"), |b| {
            b.iter(|| {
                // A fresh flow table every 16 batches so every packet is a first packet.
                k += 1;
                if k.is_multiple_of(batches.len()) {
                    flows = Flows::default();
                }
                let batch = &batches[k % batches.len()];
                for (pkt, buf) in batch.iter().zip(bufs.iter_mut()) {
                    if let Some(mut f) = Frame::load(buf, 128, pkt) {
                        black_box(process(&t, &mut flows, 1, port, &mut f, &mut NoObserver));
                    }
                }
            })
        });
        let mut warm = Flows::default();
        for pkt in &batches[0] {
            let mut buf = vec![0u8; 512];
            if let Some(mut f) = Frame::load(&mut buf, 128, pkt) {
                process(&t, &mut warm, 1, port, &mut f, &mut NoObserver);
            }
        }
        g.bench_function(format!("established_p{n}"), |b| {
            b.iter(|| {
                for (pkt, buf) in batches[0].iter().zip(bufs.iter_mut()) {
                    if let Some(mut f) = Frame::load(buf, 128, pkt) {
                        black_box(process(&t, &mut warm, 2, port, &mut f, &mut NoObserver));
                    }
                }
            })
        });
    }
    g.finish();
}

fn mean_ns(dir: &Path, group: &str, name: &str) -> Option<f64> {
    let text =
        std::fs::read_to_string(dir.join(group).join(name).join("new/estimates.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

fn print_summary(dir: &Path) {
    println!("\n{:<44} {:>14}", "bench", "mean");
    if let Some(ns) = mean_ns(dir, "policy_compile", "p1000_pods5000") {
        println!(
            "{:<44} {:>11.1} ms",
            "policy_compile/p1000_pods5000",
            ns / 1e6
        );
    }
    for name in [
        "remote_new_identity",
        "local_new_identity",
        "remote_existing_identity",
    ] {
        if let Some(ns) = mean_ns(dir, "policy_update", name) {
            println!(
                "{:<44} {:>11.1} us",
                format!("policy_update/{name}"),
                ns / 1e3
            );
        }
    }
    for n in [
        "new_flow_p10",
        "new_flow_p1000",
        "new_flow_p10000",
        "established_p10",
        "established_p1000",
        "established_p10000",
    ] {
        if let Some(ns) = mean_ns(dir, "policy_pipeline", n) {
            println!(
                "{:<44} {:>8.1} ns/packet",
                format!("policy_pipeline/{n}"),
                ns / 64.0
            );
        }
    }
    for n in ["p10_pods5000", "p1000_pods5000", "p10000_pods5000"] {
        if let Some(ns) = mean_ns(dir, "policy_lookup", n) {
            println!(
                "{:<44} {:>8.1} ns/lookup",
                format!("policy_lookup/{n}"),
                ns / LOOKUPS as f64
            );
        }
    }
}

fn main() {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("criterion");
    let mut c = Criterion::default()
        .output_directory(&dir)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    bench_compile(&mut c);
    bench_update(&mut c);
    bench_lookup(&mut c);
    bench_pipeline(&mut c);
    c.final_summary();
    print_summary(&dir);
}
