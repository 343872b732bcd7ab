//! The Kubernetes source (`control::source::KubeSource`) with the unmodified kube-rs client
//! against our API server double (lab::apiserver_double): initial sync gating, incremental
//! changes, and convergence after 410 Gone, dropped connections and slow answers, with
//! every snapshot checked to be, kind by kind, a state the double really had; and
//! ServiceCIDRs: optional (an API server without them holds nothing back) and, when
//! there, admitting the Services allocated from them.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use control::source::{KubeSource, SourceOptions, SourceUpdate, WatchedKind};
use datapath::Tables;
use kube::ResourceExt;
use lab::apiserver_double::{ApiServerDouble, KINDS, Key};
use model::config::AgentConfig;
use model::state::{ClusterState, StateDir, load_state_dir};
use model::translate::incremental::Translator;
use model::translate::{Translated, canonical_dump, translate};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(30);

fn fixture() -> StateDir {
    let dir = testkit::paths::example("two-node");
    load_state_dir(&dir).unwrap()
}

fn policy(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": { "name": name, "namespace": "demo" },
        "spec": {
            "podSelector": { "matchLabels": { "app": "web" } },
            "policyTypes": ["Ingress"],
            "ingress": [{ "from": [{ "podSelector": { "matchLabels": { "app": "client" } } }] }],
        },
    })
}

/// A double holding the two-node example cluster plus one policy.
fn populated_double() -> (ApiServerDouble, StateDir) {
    let dir = fixture();
    let double = ApiServerDouble::start().expect("the API server double listens");
    let c = &dir.cluster;
    c.nodes.iter().for_each(|o| {
        double.apply(o).unwrap();
    });
    c.namespaces.iter().for_each(|o| {
        double.apply(o).unwrap();
    });
    c.pods.iter().for_each(|o| {
        double.apply(o).unwrap();
    });
    c.services.iter().for_each(|o| {
        double.apply(o).unwrap();
    });
    c.endpoint_slices.iter().for_each(|o| {
        double.apply(o).unwrap();
    });
    double.apply(&policy("web-from-client")).unwrap();
    (double, dir)
}

/// Writes a kubeconfig for the double into a per-test file (prefix kxkb) and returns it.
struct Kubeconfig(PathBuf);

impl Kubeconfig {
    fn new(double: &ApiServerDouble, tag: &str) -> Kubeconfig {
        let path =
            std::env::temp_dir().join(format!("kxkb-{tag}-{}.kubeconfig", std::process::id()));
        std::fs::write(&path, double.kubeconfig_yaml()).unwrap();
        Kubeconfig(path)
    }
}

impl Drop for Kubeconfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn start(double: &ApiServerDouble, tag: &str) -> (KubeSource, Kubeconfig) {
    let kubeconfig = Kubeconfig::new(double, tag);
    let source = KubeSource::from_kubeconfig(Some(&kubeconfig.0)).unwrap();
    (source, kubeconfig)
}

fn keys_of<K: kube::Resource>(objects: &[K]) -> BTreeMap<Key, u64> {
    objects
        .iter()
        .map(|o| {
            let key = (o.namespace().unwrap_or_default(), o.name_any());
            let rv = o
                .resource_version()
                .and_then(|rv| rv.parse().ok())
                .unwrap_or(0);
            (key, rv)
        })
        .collect()
}

/// Each kind of the snapshot as (key, resourceVersion), in `KINDS` order.
fn kinds_of(state: &ClusterState) -> [(&'static str, BTreeMap<Key, u64>); KINDS.len()] {
    [
        ("Node", keys_of(&state.nodes)),
        ("Namespace", keys_of(&state.namespaces)),
        ("Pod", keys_of(&state.pods)),
        ("Service", keys_of(&state.services)),
        ("EndpointSlice", keys_of(&state.endpoint_slices)),
        ("NetworkPolicy", keys_of(&state.network_policies)),
        ("ServiceCIDR", keys_of(&state.service_cidrs)),
    ]
}

/// Panics unless every kind of `state` is a state that kind had in the double.
fn assert_not_partial(double: &ApiServerDouble, state: &ClusterState) {
    for (kind, seen) in kinds_of(state) {
        assert!(
            double.kind_state_existed(kind, &seen),
            "snapshot {kind}s {seen:?} never existed in the double (now {:?})",
            double.current(kind)
        );
    }
}

fn matches_current(double: &ApiServerDouble, state: &ClusterState) -> bool {
    kinds_of(state)
        .into_iter()
        .all(|(kind, seen)| double.current(kind) == seen)
}

/// Takes snapshots as they come (checking each) until one equals the double's current state.
fn converge(source: &mut KubeSource, double: &ApiServerDouble, what: &str) -> ClusterState {
    let deadline = Instant::now() + TIMEOUT;
    let mut snapshots = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{what}: no converged snapshot within {TIMEOUT:?} ({snapshots} snapshots, unsynced {:?}, errors {}, double {:?})",
            source.unsynced_kinds(),
            source.watch_errors(),
            double.counters()
        );
        if !source.wait_for_change(left) {
            continue;
        }
        let Some(state) = source.snapshot_if_changed() else {
            continue;
        };
        snapshots += 1;
        assert_not_partial(double, &state);
        if matches_current(double, &state) {
            return state;
        }
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Faults aimed at open watches need them open: kube starts watching only after its list.
fn wait_all_watching(double: &ApiServerDouble) {
    double
        .wait_counters("every kind's watch open", TIMEOUT, |c| {
            c.open_watches == KINDS.len() as u64
        })
        .unwrap();
}

fn all_lists_at_least(counters: &lab::apiserver_double::Counters, n: u64) -> bool {
    KINDS
        .iter()
        .all(|(kind, _, _)| counters.lists.get(*kind).copied().unwrap_or(0) >= n)
}

/// Every field of `t`, one item a line, with the hash maps sorted (their iteration order
/// differs between two maps of the same contents), so two translations render alike
/// exactly when they are equal (`Tables` has no `PartialEq`). Unlike
/// `translate::canonical_dump`, slot numbers (`ServiceId`s, identities) are kept: both
/// sides here are translated from scratch, and translate sorts its inputs first. Two
/// things are rendered by what they answer: `remote_routes` (a `PrefixMap` cannot be
/// iterated) by its size and its match for every remote PodCIDR, the keys translate puts
/// in it; `PolicyTables::any_isolated` (private) is a cache of `endpoints`.
fn full_dump(t: &Tables) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "generation {}", t.generation);
    let _ = writeln!(s, "node {:?}", t.node);
    let _ = writeln!(s, "overlay {:?}", t.overlay);
    let _ = writeln!(s, "cluster_cidrs {:?}", t.cluster_cidrs);
    let _ = writeln!(s, "service_cidrs {:?}", t.service_cidrs);
    for (i, p) in t.ports.iter().enumerate() {
        let _ = writeln!(s, "port {i} {p:?}");
    }
    for (i, p) in t.local_pods.iter().enumerate() {
        let _ = writeln!(s, "local_pod {i} {p:?}");
    }
    let _ = writeln!(s, "local_pod_by_ip {:?}", sorted(&t.local_pod_by_ip));
    for (i, n) in t.remote_nodes.iter().enumerate() {
        let _ = writeln!(s, "remote_node {i} {n:?}");
    }
    let _ = writeln!(
        s,
        "remote_node_by_underlay {:?}",
        sorted(&t.remote_node_by_underlay)
    );
    let _ = writeln!(s, "remote_routes {} entries", t.remote_routes.len());
    for c in t.remote_nodes.iter().flat_map(|n| &n.pod_cidrs) {
        let to = t.remote_routes.longest_match(c.addr);
        let _ = writeln!(s, "remote_route {c:?} -> {to:?}");
    }
    for (i, p) in t.service_ports.iter().enumerate() {
        let _ = writeln!(s, "service_port {i} {p:?}");
    }
    for (k, v) in sorted(&t.frontends) {
        let _ = writeln!(s, "frontend {k:?} {v:?}");
    }
    let p = &t.policy;
    let _ = writeln!(s, "identity_by_ip {:?}", sorted(&p.identity_by_ip));
    let _ = writeln!(s, "named_ports_by_ip {:?}", sorted(&p.named_ports_by_ip));
    let _ = writeln!(s, "policy_names {:?}", p.policy_names);
    for (i, e) in p.endpoints.iter().enumerate() {
        for (dir, d) in [("ingress", &e.ingress), ("egress", &e.egress)] {
            let Some(d) = d else {
                let _ = writeln!(s, "endpoint {i} {dir} None");
                continue;
            };
            let _ = writeln!(
                s,
                "endpoint {i} {dir} selected_by {:?} any_peer {:?} by_identity {:?} cidrs {:?}",
                d.selected_by,
                d.any_peer,
                sorted(&d.by_identity),
                d.cidrs
            );
        }
    }
    s
}

/// A hash map's entries in key order.
fn sorted<K: Ord, V, S>(m: &std::collections::HashMap<K, V, S>) -> BTreeMap<&K, &V> {
    m.iter().collect()
}

/// `full_dump`s equal, or a panic naming the first lines that differ (lines with a
/// Maglev table run to hundreds of kilobytes: cut short).
fn assert_tables_equal(api: &Tables, files: &Tables) {
    let (a, f) = (full_dump(api), full_dump(files));
    if a == f {
        return;
    }
    let cut = |l: &str| l.chars().take(400).collect::<String>();
    let (al, fl): (Vec<_>, Vec<_>) = (a.lines().collect(), f.lines().collect());
    let diffs: Vec<String> = (0..al.len().max(fl.len()))
        .filter(|&i| al.get(i) != fl.get(i))
        .take(5)
        .map(|i| {
            format!(
                "line {i}:\n  api:   {}\n  files: {}",
                al.get(i).map_or("<none>".into(), |l| cut(l)),
                fl.get(i).map_or("<none>".into(), |l| cut(l))
            )
        })
        .collect();
    panic!(
        "the watched cluster programs something else than the manifests:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn nothing_is_offered_until_every_kind_has_synced_then_it_translates() {
    let (double, dir) = populated_double();
    double.hold_lists("NetworkPolicy");
    let (mut source, _kubeconfig) = start(&double, "sync");

    // Every kind has asked; all but one have their lists, the policies' list is held.
    double
        .wait_counters("a list of every kind", TIMEOUT, |c| {
            all_lists_at_least(c, 1)
        })
        .unwrap();
    wait_until("all kinds but one synced", || {
        source.unsynced_kinds().len() == 1
    });
    assert_eq!(source.unsynced_kinds(), vec![WatchedKind::NetworkPolicy]);
    assert!(!source.synced());
    assert!(source.snapshot_if_changed().is_none());
    assert!(source.snapshot().is_none());
    assert!(!source.wait_for_change(Duration::from_millis(300)));
    assert!(source.snapshot_if_changed().is_none());

    double.release_lists("NetworkPolicy");
    let state = converge(&mut source, &double, "initial sync");
    assert!(source.synced());
    assert_eq!(state.nodes.len(), 2);
    assert_eq!(state.network_policies.len(), 1);
    assert_eq!(state.pods.len(), dir.cluster.pods.len());

    let tables = translate(&state, &dir.config, "node-a", 1).unwrap();
    // The double holds the manifests plus one policy (populated_double): so do the files.
    let mut files = dir.cluster.clone();
    assert!(
        files.network_policies.is_empty(),
        "the fixture gained policies"
    );
    files
        .network_policies
        .push(serde_json::from_value(policy("web-from-client")).unwrap());
    let from_files = translate(&files, &dir.config, "node-a", 1).unwrap();
    assert_tables_equal(&tables.tables, &from_files.tables);
    assert_eq!(tables.warnings, from_files.warnings);
    assert!(tables.warnings.is_empty(), "{:?}", tables.warnings);
    let t = &tables.tables;
    assert!(!t.local_pods.is_empty() && !t.service_ports.is_empty());
    assert!(
        !t.policy.policy_names.is_empty(),
        "the policy was translated"
    );

    // Nothing changed since: no new snapshot.
    assert!(source.snapshot_if_changed().is_none());
}

#[test]
fn added_modified_and_deleted_objects_show_up_and_disappear() {
    let (double, dir) = populated_double();
    let (mut source, _kubeconfig) = start(&double, "changes");
    converge(&mut source, &double, "initial sync");

    double.apply(&policy("second")).unwrap();
    let mut web = dir.cluster.services[0].clone();
    web.labels_mut().insert("kxkb".into(), "changed".into());
    let web_rv = double.apply(&web).unwrap();
    double.delete("Pod", "demo", "client").unwrap();
    let state = converge(&mut source, &double, "add/modify/delete");

    assert_eq!(state.network_policies.len(), 2);
    let service = &state.services[0];
    assert_eq!(
        service.labels().get("kxkb").map(String::as_str),
        Some("changed")
    );
    assert_eq!(service.resource_version(), Some(web_rv.to_string()));
    assert!(state.pods.iter().all(|p| p.name_any() != "client"));
    translate(&state, &dir.config, "node-a", 2).unwrap();

    double.delete("NetworkPolicy", "demo", "second").unwrap();
    double
        .delete("NetworkPolicy", "demo", "web-from-client")
        .unwrap();
    let state = converge(&mut source, &double, "policies deleted");
    assert!(state.network_policies.is_empty());
}

fn extra_pod(dir: &StateDir, name: &str) -> k8s_openapi::api::core::v1::Pod {
    let mut pod = dir.cluster.pods[0].clone();
    pod.metadata.name = Some(name.to_string());
    pod
}

#[test]
fn converges_after_gone_dropped_connections_and_slow_answers() {
    let (double, dir) = populated_double();
    let (mut source, _kubeconfig) = start(&double, "faults");
    converge(&mut source, &double, "initial sync");
    let base = double.counters();

    // 1. 410 Gone on every open watch: kube relists every kind.
    wait_all_watching(&double);
    double.expire();
    double.apply(&extra_pod(&dir, "after-expire")).unwrap();
    double
        .wait_counters("relists after 410", TIMEOUT, |c| {
            all_lists_at_least(c, 2) && c.gone_sent >= base.gone_sent + 6
        })
        .unwrap();
    converge(&mut source, &double, "after 410 on open watches");

    // 2. Changes the watches never deliver, history compacted, connections cut: the
    //    resumed watch is refused with 410 and the relist brings the changes.
    wait_all_watching(&double);
    double.pause_watches(true);
    double.apply(&extra_pod(&dir, "while-paused")).unwrap();
    double.delete("Pod", "demo", "after-expire").unwrap();
    double.delete("Namespace", "", "demo").unwrap();
    let before = double.counters();
    double.compact();
    double.drop_watches();
    double.pause_watches(false);
    let state = converge(
        &mut source,
        &double,
        "after compaction + dropped connections",
    );
    let after = double.counters();
    assert!(after.watches_dropped > before.watches_dropped, "{after:?}");
    assert!(after.gone_sent > before.gone_sent, "{after:?}");
    assert!(state.namespaces.is_empty());
    assert!(state.pods.iter().any(|p| p.name_any() == "while-paused"));

    // 3. Dropped connections without compaction: watches resume where they were.
    wait_all_watching(&double);
    let before = double.counters();
    double.drop_watches();
    double.apply(&extra_pod(&dir, "after-drop")).unwrap();
    converge(&mut source, &double, "after dropped connections");
    let after = double.counters();
    assert!(after.watches_dropped > before.watches_dropped, "{after:?}");
    assert_eq!(
        after.lists, before.lists,
        "a cut watch resumes from its resourceVersion"
    );

    // 4. A relist that hangs on one kind: snapshots keep the old, complete pods while
    //    other kinds move on; then the held list completes.
    wait_all_watching(&double);
    double.hold_lists("Pod");
    double.expire();
    double
        .wait_counters("pod relist asked", TIMEOUT, |c| {
            c.lists.get("Pod").copied().unwrap_or(0) > before.lists.get("Pod").copied().unwrap_or(0)
        })
        .unwrap();
    double.apply(&policy("during-held-relist")).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        assert!(
            Instant::now() < deadline,
            "policy never arrived during the held relist"
        );
        if source.wait_for_change(Duration::from_millis(500))
            && let Some(state) = source.snapshot_if_changed()
        {
            assert_not_partial(&double, &state);
            if state.network_policies.len() == 2 {
                assert!(!state.pods.is_empty(), "pods vanished during their relist");
                break;
            }
        }
    }
    double.apply(&extra_pod(&dir, "listed-late")).unwrap();
    double.release_lists("Pod");
    converge(&mut source, &double, "after the held relist");

    // 5. Slow answers: every list and watch start takes 300 ms.
    wait_all_watching(&double);
    double.set_delay(Duration::from_millis(300));
    double.expire();
    double.delete("Pod", "demo", "while-paused").unwrap();
    let state = converge(&mut source, &double, "with slow answers");
    assert!(state.pods.iter().all(|p| p.name_any() != "while-paused"));
    double.set_delay(Duration::ZERO);

    let translated = translate(&state, &dir.config, "node-a", 9).unwrap();
    assert!(
        translated
            .tables
            .local_pods
            .iter()
            .all(|p| p.name != "while-paused")
    );
}

#[test]
fn paged_lists_and_an_expired_continue_token() {
    let (double, dir) = populated_double();
    // kube's watcher lists 500 at a time: 1200 more pods make three pages.
    for i in 0..1200 {
        double
            .apply(&extra_pod(&dir, &format!("bulk-{i}")))
            .unwrap();
    }
    double.expire_next_continue();
    let (mut source, _kubeconfig) = start(&double, "pages");
    let state = converge(&mut source, &double, "paged initial list");
    assert_eq!(state.pods.len(), dir.cluster.pods.len() + 1200);
    let counters = double.counters();
    assert_eq!(counters.continues_gone, 1, "{counters:?}");
    // First attempt: page 1 then 410; the relist: pages 1, 2, 3 (two continue tokens).
    assert!(counters.pages_continued >= 3, "{counters:?}");
    assert!(source.watch_errors() >= 1);
}

#[test]
fn a_missing_kubeconfig_is_a_clear_error() {
    let path = std::env::temp_dir().join("kxkb-does-not-exist.kubeconfig");
    let err = KubeSource::from_kubeconfig(Some(&path)).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("kxkb-does-not-exist.kubeconfig"), "{text}");
}

/// `KubeSource::patch_node_annotations` as kube-rs sends it: a JSON merge patch carrying
/// only the annotations, field manager `kxdp-agent`; the watch brings the patched Node
/// back; the API's errors come back as errors, with the code it answered.
#[test]
fn node_annotations_are_merge_patched_and_watched_back() {
    let (double, _dir) = populated_double();
    let (mut source, _kubeconfig) = start(&double, "patch");
    converge(&mut source, &double, "initial sync");
    let before = double.object("Node", "", "node-a").unwrap();

    let annotations: BTreeMap<String, String> = [(
        "kxdp.io/vtep-address".to_string(),
        "192.168.50.99".to_string(),
    )]
    .into();
    let answered = source
        .patch_node_annotations("node-a", &annotations, TIMEOUT)
        .unwrap();
    assert_eq!(
        answered
            .annotations()
            .get("kxdp.io/vtep-address")
            .map(String::as_str),
        Some("192.168.50.99")
    );
    let counters = double.counters();
    assert_eq!(counters.patches.len(), 1);
    let sent = &counters.patches[0];
    assert_eq!(sent.content_type, "application/merge-patch+json");
    assert_eq!(
        sent.field_manager.as_deref(),
        Some(control::source::FIELD_MANAGER)
    );
    assert_eq!(
        sent.body,
        json!({"metadata": {"annotations": {"kxdp.io/vtep-address": "192.168.50.99"}}})
    );
    // Everything else is as it was: the other annotation, spec, status.
    let mut expected = before.clone();
    expected["metadata"]["annotations"]["kxdp.io/vtep-address"] = json!("192.168.50.99");
    let after = double.object("Node", "", "node-a").unwrap();
    expected["metadata"]["resourceVersion"] = after["metadata"]["resourceVersion"].clone();
    assert_eq!(after, expected);
    assert!(source.wait_for_node("node-a", TIMEOUT, |n| {
        n.annotations()
            .get("kxdp.io/vtep-address")
            .map(String::as_str)
            == Some("192.168.50.99")
    }));
    // translate takes the annotation as node-a's underlay address from now on.
    let state = converge(&mut source, &double, "patched node");
    let config = model::config::AgentConfig::default();
    let tables = translate(&state, &config, "node-b", 2).unwrap().tables;
    let node_a = tables
        .remote_nodes
        .iter()
        .find(|n| n.name == "node-a")
        .unwrap();
    assert_eq!(node_a.underlay_ip, [192, 168, 50, 99]);

    double.fail_patches(Some(500));
    let err = source
        .patch_node_annotations("node-a", &annotations, TIMEOUT)
        .unwrap_err();
    assert!(
        matches!(&err, control::source::NodePatchError::Api(kube::Error::Api(s)) if s.code == 500),
        "{err:?}"
    );
    double.fail_patches(None);
    let err = source
        .patch_node_annotations("nope", &annotations, TIMEOUT)
        .unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
    assert_eq!(
        double
            .counters()
            .patches
            .iter()
            .map(|p| p.code)
            .collect::<Vec<_>>(),
        [200, 500, 404]
    );
}

/// Feeds `source.updates()` into `translator` until its state is what the double has;
/// returns how many updates were whole states, how many were changes, and the last tables.
fn converge_updates(
    source: &mut KubeSource,
    translator: &mut Translator,
    double: &ApiServerDouble,
    what: &str,
) -> (usize, usize, Translated) {
    let deadline = Instant::now() + TIMEOUT;
    let (mut full, mut changes) = (0, 0);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{what}: not converged ({full} full, {changes} changes)"
        );
        if !source.wait_for_change(left) {
            continue;
        }
        let Some(update) = source.updates() else {
            continue;
        };
        let generation = (full + changes + 1) as u64;
        let translated = match update {
            SourceUpdate::Full(state) => {
                full += 1;
                assert_not_partial(double, &state);
                translator.reset(state, generation).unwrap()
            }
            SourceUpdate::Changes(list) => {
                changes += 1;
                assert!(!list.is_empty(), "{what}: an empty change list");
                translator.apply(list, generation).unwrap().0
            }
        };
        if matches_current(double, translator.cluster()) {
            return (full, changes, translated);
        }
    }
}

/// The incremental result equals translating the same state from scratch.
fn assert_equals_full(translator: &Translator, got: &Translated, config: &AgentConfig) {
    let want = translate(
        translator.cluster(),
        config,
        "node-a",
        got.tables.generation,
    )
    .unwrap();
    assert_eq!(canonical_dump(&got.tables), canonical_dump(&want.tables));
}

#[test]
fn updates_are_changes_and_a_whole_state_after_a_relist() {
    let (double, dir) = populated_double();
    let (mut source, _kubeconfig) = start(&double, "updates");
    let mut translator = Translator::new(dir.config.clone(), "node-a");
    let (full, _, got) = converge_updates(&mut source, &mut translator, &double, "initial sync");
    assert!(full >= 1, "the first update is the whole state");
    assert_equals_full(&translator, &got, &dir.config);

    double.apply(&policy("second")).unwrap();
    double.apply(&extra_pod(&dir, "added")).unwrap();
    double.delete("Pod", "demo", "client").unwrap();
    let (full, changes, got) = converge_updates(&mut source, &mut translator, &double, "changes");
    assert_eq!(full, 0, "plain changes come as changes");
    assert!(changes >= 1);
    assert_equals_full(&translator, &got, &dir.config);

    // Deleted while no watch delivers it, history compacted: only a relist shows the
    // deletion, and it comes as a whole state.
    wait_all_watching(&double);
    double.pause_watches(true);
    double.delete("Pod", "demo", "added").unwrap();
    double.compact();
    double.drop_watches();
    double.pause_watches(false);
    let (full, _, got) = converge_updates(&mut source, &mut translator, &double, "after a relist");
    assert!(full >= 1, "a relist is handed out whole");
    assert!(
        translator
            .cluster()
            .pods
            .iter()
            .all(|p| p.name_any() != "added")
    );
    assert_equals_full(&translator, &got, &dir.config);
}

/// What the metrics read from the source (kube-proxy's change counters and the trigger
/// times network programming is measured from), with the double standing in for the
/// EndpointSlice controller: a slice written without a trigger time is stamped at the
/// write, one that carries a time keeps it, and each comes out with the update that
/// holds its change.
#[test]
fn changes_are_counted_and_slices_carry_their_trigger_times() {
    use control::source::change_log::{IpFamily, LAST_CHANGE_TRIGGER_TIME};
    use k8s_openapi::api::discovery::v1::EndpointSlice;

    let (double, dir) = populated_double();
    let (mut source, _kubeconfig) = start(&double, "triggers");
    // The source started before this: trigger times older than its start are not measured.
    let started = std::time::SystemTime::now();
    let mut translator = Translator::new(dir.config.clone(), "node-a");
    converge_updates(&mut source, &mut translator, &double, "initial sync");
    // The initial list is no change: nothing counted, no trigger time (the slices'
    // stamps predate nothing the source measures).
    let before = source.change_counters();
    assert_eq!(
        (before.service_changes, before.endpoint_changes),
        (0, 0),
        "{before:?}"
    );
    assert!(source.take_trigger_times().is_empty());

    // Dated 3 s ago (but after the source started: the measurement ignores older ones).
    let mut dated: EndpointSlice = dir.cluster.endpoint_slices[0].clone();
    let ago = Duration::from_secs(3);
    wait_until("the source running for 3 s", || {
        std::time::SystemTime::now() > started + ago + Duration::from_millis(10)
    });
    let at = std::time::SystemTime::now() - ago;
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap();
    let stamp =
        k8s_openapi::jiff::Timestamp::new(since.as_secs() as i64, since.subsec_nanos() as i32)
            .unwrap()
            .to_string();
    dated
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(LAST_CHANGE_TRIGGER_TIME.to_string(), stamp.clone());
    dated.metadata.resource_version = None;
    double.apply(&dated).unwrap();
    // An undated one: the double stamps it now.
    let mut undated: EndpointSlice = dir.cluster.endpoint_slices[0].clone();
    undated.metadata.name = Some("a-second-slice".into());
    undated.metadata.annotations = None;
    undated.metadata.resource_version = None;
    let written = std::time::SystemTime::now();
    double.apply(&undated).unwrap();
    let mut service = dir.cluster.services[0].clone();
    service.metadata.resource_version = None;
    service
        .metadata
        .labels
        .get_or_insert_default()
        .insert("touched".into(), "yes".into());
    double.apply(&service).unwrap();

    let mut triggers = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while triggers.len() < 2 {
        assert!(Instant::now() < deadline, "trigger times: {triggers:?}");
        if source.wait_for_change(Duration::from_millis(200))
            && let Some(SourceUpdate::Changes(_)) = source.updates()
        {
            triggers.extend(source.take_trigger_times());
        }
    }
    triggers.sort_by_key(|t| t.at);
    assert_eq!(triggers.len(), 2, "{triggers:?}");
    assert!(triggers.iter().all(|t| t.family == IpFamily::V4));
    assert_eq!(
        triggers[0].at, at,
        "the dated slice keeps its time ({stamp})"
    );
    let stamped = triggers[1].at;
    assert!(
        stamped >= written - Duration::from_millis(1) && stamped <= std::time::SystemTime::now(),
        "the undated slice is stamped at its write"
    );

    wait_until("the counters", || {
        let c = source.change_counters();
        c.service_changes == 1 && c.endpoint_changes == 2
    });
    // The Service's change may have been watched after the last update above was taken:
    // pending until the next one takes it.
    let _ = source.updates();
    let after = source.change_counters();
    assert!(after.last_change.is_some());
    // Everything was taken by the updates: nothing pending.
    assert_eq!(
        (
            after.service_changes_pending,
            after.endpoint_changes_pending
        ),
        (0, 0)
    );
}

fn service_cidr(name: &str, cidrs: &[&str]) -> serde_json::Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
        "metadata": { "name": name },
        "spec": { "cidrs": cidrs },
    })
}

/// Service demo/extra, allocated from the second ServiceCIDR.
fn extra_service() -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": "extra", "namespace": "demo" },
        "spec": {
            "clusterIP": "10.200.0.10", "clusterIPs": ["10.200.0.10"],
            "selector": { "app": "web" },
            "ports": [{ "name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080 }],
        },
    })
}

fn programs_extra(t: &Tables) -> bool {
    t.service_ports.iter().any(|p| p.name == "demo/extra:80")
}

/// An API server that does not serve ServiceCIDRs (before 1.33) answers their list 404:
/// the first state still comes, without them (kxdp.yaml's serviceCIDR applies), and when
/// an upgrade starts serving them they are picked up by the next recheck.
#[test]
fn an_api_server_without_servicecidrs_holds_nothing_back() {
    let (double, dir) = populated_double();
    double.stop_serving("ServiceCIDR");
    let kubeconfig = Kubeconfig::new(&double, "no-cidrs");
    let options = SourceOptions {
        optional_kind_recheck: Duration::from_millis(200),
    };
    let mut source = KubeSource::from_kubeconfig_with(Some(&kubeconfig.0), options).unwrap();
    let state = converge(&mut source, &double, "initial sync without ServiceCIDRs");
    assert!(source.synced() && source.unsynced_kinds().is_empty());
    assert!(state.service_cidrs.is_empty());
    assert!(double.counters().not_served["ServiceCIDR"] >= 1);
    assert_eq!(
        source.watch_errors(),
        0,
        "a 404 on an optional kind is no error"
    );
    let t = translate(&state, &dir.config, "node-a", 1).unwrap();
    assert_eq!(t.tables.service_cidrs, dir.config.service_cidrs);

    // The upgrade: the API appears, with the objects the API server keeps, and a Service
    // from the second range.
    double
        .apply(&service_cidr("kubernetes", &["10.96.0.0/12"]))
        .unwrap();
    double
        .apply(&service_cidr("second", &["10.200.0.0/24"]))
        .unwrap();
    double.apply(&extra_service()).unwrap();
    double.serve("ServiceCIDR");
    let state = converge(&mut source, &double, "after the API appeared");
    assert_eq!(state.service_cidrs.len(), 2);
    let t = translate(&state, &dir.config, "node-a", 2).unwrap();
    assert!(programs_extra(&t.tables), "{:?}", t.warnings);
}

/// A Service whose ClusterIP comes from a second ServiceCIDR is programmed while that
/// ServiceCIDR exists, through the incremental translator as the agent runs it, and is
/// left out again (with a warning) once it is gone.
#[test]
fn a_service_from_a_second_servicecidr_is_in_the_tables() {
    let (double, dir) = populated_double();
    double
        .apply(&service_cidr("kubernetes", &["10.96.0.0/12"]))
        .unwrap();
    double.apply(&extra_service()).unwrap();
    let (mut source, _kubeconfig) = start(&double, "second-cidr");
    let mut translator = Translator::new(dir.config.clone(), "node-a");
    let (_, _, got) = converge_updates(&mut source, &mut translator, &double, "initial sync");
    assert!(!programs_extra(&got.tables));
    assert!(
        got.warnings.iter().any(|w| w
            == "Service demo/extra: clusterIP 10.200.0.10 is outside every Service CIDR (10.96.0.0/12): skipped"),
        "{:?}",
        got.warnings
    );

    double
        .apply(&service_cidr("second", &["10.200.0.0/24"]))
        .unwrap();
    let (full, _, got) = converge_updates(&mut source, &mut translator, &double, "second CIDR");
    assert_eq!(full, 0, "a new ServiceCIDR comes as a change");
    assert!(programs_extra(&got.tables), "{:?}", got.warnings);
    let cidrs: Vec<String> = got
        .tables
        .service_cidrs
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(cidrs, ["10.96.0.0/12", "10.200.0.0/24"]);
    assert!(got.warnings.is_empty(), "{:?}", got.warnings);
    assert_equals_full(&translator, &got, &dir.config);

    double.delete("ServiceCIDR", "", "second").unwrap();
    let (_, _, got) = converge_updates(&mut source, &mut translator, &double, "CIDR deleted");
    assert!(!programs_extra(&got.tables));
    assert_equals_full(&translator, &got, &dir.config);
}
