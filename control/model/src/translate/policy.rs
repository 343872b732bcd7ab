//! networking.k8s.io/v1 NetworkPolicies -> this node's [`PolicyTables`].
//!
//! Follows upstream semantics (ARCHITECTURE.md §3):
//! - A policy selects pods of its own namespace by `spec.podSelector` (absent or empty = all).
//!   A pod is isolated in a direction only when some policy selects it for that direction;
//!   what it then admits is the union of the rules of all those policies, and an isolated
//!   pod no rule admits a peer for denies it.
//! - `policyTypes` unset (or empty) defaults as the API server does: Ingress always, Egress
//!   when the policy has at least one egress rule (`len(spec.egress) != 0` upstream, so
//!   `egress: []` alone does not isolate egress).
//! - A rule without peers (`from`/`to` absent or empty) admits any peer; peer items are
//!   ORed; inside one item `podSelector` and `namespaceSelector` are ANDed; a bare
//!   `podSelector` means the policy's own namespace; `ipBlock` is a CIDR minus `except`.
//! - A rule without ports admits every port and protocol; a port entry without `port` is
//!   protocol-only; `endPort` makes a range; a named port in an ingress rule is resolved
//!   against the selected (local, server) pod's container ports here, and in an egress rule
//!   kept by name, since it is the destination pod's port and only the packet says which
//!   pod that is.
//!
//! Why identities: pods with equal (namespace, namespace labels, pod labels) are
//! indistinguishable to every selector, so each distinct peer selector is evaluated once
//! against the identity list (namespace by namespace, so a same-namespace selector never
//! looks at other namespaces' pods), cached by its content, and every endpoint's map is
//! keyed by identity. Local pods sharing an identity and container ports (replicas) share
//! one compiled [`EndpointPolicy`].
//!
//! [`PolicyCompiler`] keeps that state so that one pod's label change can be applied to
//! the published tables without recompiling ([`PolicyCompiler::update_pod`]): the pod's new
//! identity is evaluated against the cached selectors, and only endpoints that name it
//! gain an entry; a local pod's own endpoint is rebuilt.
//!
//! Anything malformed (unknown selector operator, bad port, bad CIDR, ...) skips the rule
//! (or, for a bad `podSelector`, the policy) with a warning. Skipping a rule only ever
//! denies more; a policy whose selection cannot be known selects nothing, which is what
//! the API server (that would have refused it) leaves running as well.
//!
//! Pure and deterministic: every input is sorted by its key before use, identity ids are
//! given in the sorted order of (namespace, pod labels), and policies are indexed in
//! `namespace/name` order.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use datapath::Cidr;
use datapath::IpKey;
use datapath::policy::{
    CidrRule, DirectionPolicy, EndpointPolicy, IdentityId, PolicyDirection, PolicyTables, PortSet,
};
use datapath::tables::LocalPod;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::k8s::{
    NAMESPACE_NAME_LABEL, name_of, namespace_labels, namespace_of, parse_cidr, parse_ip_key,
    pod_ips, port_number, protocol_number,
};
use crate::state::ClusterState;

type Labels = BTreeMap<String, String>;
/// A pod's named container ports: (name, protocol, number), sorted.
type NamedPorts = Vec<(String, u8, u16)>;

/// Compiles the policy of `local_pods` (in `Tables::local_pods` order) from scratch.
pub fn build(
    cluster: &ClusterState,
    local_pods: &[LocalPod],
    warnings: &mut Vec<String>,
) -> PolicyTables {
    PolicyCompiler::default().compile(cluster, local_pods, warnings)
}

// ---------------------------------------------------------------------------------------
// Selectors

/// One `matchLabels` entry or `matchExpressions` requirement. `matchLabels: {k: v}` is
/// `k In (v)`, so equal selectors written either way share a cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Requirement {
    /// Values sorted and deduplicated.
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            // Upstream: a label that is absent is "not in" any set.
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// A parsed LabelSelector in canonical form: requirements sorted and deduplicated,
/// ANDed. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Selector(Vec<Requirement>);

impl Selector {
    fn parse(sel: &LabelSelector) -> Result<Selector, String> {
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            reqs.push(Requirement::In(k.clone(), vec![v.clone()]));
        }
        for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
            let mut values = e.values.clone().unwrap_or_default();
            values.sort();
            values.dedup();
            let key = e.key.clone();
            let req = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(format!(
                        "matchExpressions[{i}]: operator {} needs values",
                        e.operator
                    ));
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(format!(
                        "matchExpressions[{i}]: operator {} takes no values",
                        e.operator
                    ));
                }
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                other => {
                    return Err(format!(
                        "matchExpressions[{i}]: unknown operator {other:?} \
                         (In, NotIn, Exists, DoesNotExist)"
                    ));
                }
            };
            reqs.push(req);
        }
        reqs.sort();
        reqs.dedup();
        Ok(Selector(reqs))
    }

    fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|r| r.matches(labels))
    }
}

/// Which namespaces a peer selector looks in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum NsScope {
    /// Only this one (a bare podSelector: the policy's own namespace).
    Own(String),
    /// Every namespace whose labels match.
    Matching(Selector),
}

/// A set of pods by content: what a policy's podSelector or one peer item selects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PeerKey {
    scope: NsScope,
    pods: Selector,
}

/// Interned peer selectors and the identities each matches (sorted ids).
#[derive(Debug, Default, Clone)]
struct SelectorCache {
    keys: Vec<PeerKey>,
    index: HashMap<PeerKey, usize>,
    members: Vec<Vec<IdentityId>>,
}

impl SelectorCache {
    fn intern(&mut self, key: PeerKey) -> usize {
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let i = self.keys.len();
        self.keys.push(key.clone());
        self.index.insert(key, i);
        self.members.push(Vec::new());
        i
    }
}

// ---------------------------------------------------------------------------------------
// Compiled policies

/// A rule's ports. Ingress named ports stay apart: they resolve per selected pod.
#[derive(Debug, Clone, Default)]
struct RulePorts {
    fixed: PortSet,
    /// (protocol, name) to resolve against the local pod's container ports (ingress).
    local_named: Vec<(u8, String)>,
}

impl RulePorts {
    fn resolve(&self, container: &[(String, u8, u16)]) -> PortSet {
        if self.local_named.is_empty() {
            return self.fixed.clone();
        }
        let mut out = self.fixed.clone();
        for (proto, name) in &self.local_named {
            out.ranges.extend(
                container
                    .iter()
                    .filter(|(n, p, _)| p == proto && n == name)
                    .map(|&(_, p, port)| (p, port, port)),
            );
        }
        out.normalize();
        out
    }
}

#[derive(Debug, Clone)]
struct Rule {
    /// `from`/`to` absent or empty.
    any_peer: bool,
    /// Selector cache indices of the podSelector/namespaceSelector items.
    peers: Vec<usize>,
    /// ipBlock items: (cidr, except).
    blocks: Vec<(Cidr, Vec<Cidr>)>,
    ports: RulePorts,
}

#[derive(Debug, Clone)]
struct CompiledPolicy {
    /// Selector cache index of the pods it applies to; `None` when its podSelector is
    /// unusable (it then selects nothing).
    selects: Option<usize>,
    /// `None`: the policy does not cover that direction.
    ingress: Option<Vec<Rule>>,
    egress: Option<Vec<Rule>>,
}

impl CompiledPolicy {
    fn rules(&self, dir: PolicyDirection) -> Option<&[Rule]> {
        match dir {
            PolicyDirection::Ingress => self.ingress.as_deref(),
            PolicyDirection::Egress => self.egress.as_deref(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The compiler

#[derive(Debug, Clone)]
struct Identity {
    namespace: String,
    labels: Labels,
    /// Pods currently having it; a retired identity (0 pods after an update) is no
    /// longer in any selector's members.
    pods: usize,
}

#[derive(Debug, Clone)]
struct PodRecord {
    identity: IdentityId,
    ips: Vec<IpKey>,
    /// The addresses whose `identity_by_ip` entry is this pod's (an address two pods
    /// claim belongs to the first by (namespace, name)).
    owned_ips: Vec<IpKey>,
    named: NamedPorts,
    /// Index into `Tables::local_pods`.
    local: Option<usize>,
}

#[derive(Debug, Clone)]
struct LocalEndpoint {
    identity: IdentityId,
    named: NamedPorts,
}

/// What [`PolicyCompiler::update_pod`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodUpdate {
    pub identity: IdentityId,
    /// The pod's labels made an identity no pod had: selectors were re-evaluated for it.
    pub new_identity: bool,
    /// Local endpoints whose maps changed (gained the new identity, lost a retired one, or
    /// were rebuilt because the pod is one of them).
    pub endpoints_touched: usize,
}

/// Why an update cannot be applied incrementally: run [`PolicyCompiler::compile`] (and
/// translate) again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Pod {pod}: {why}: a full compile is needed")]
pub struct NeedsFullCompile {
    pub pod: String,
    pub why: String,
}

/// The compiled state behind a [`PolicyTables`]: identities, the selector cache with each
/// selector's identities, the compiled policies and the local endpoints. Keep it next to
/// the tables it produced to apply pod label changes with [`PolicyCompiler::update_pod`].
#[derive(Debug, Clone, Default)]
pub struct PolicyCompiler {
    /// Namespace -> labels (with the implied `kubernetes.io/metadata.name`).
    namespaces: BTreeMap<String, Labels>,
    /// `IdentityId(n)` is `identities[n - 1]`.
    identities: Vec<Identity>,
    identity_index: HashMap<(String, Labels), IdentityId>,
    /// Namespace -> its identities, for evaluating selectors namespace by namespace.
    by_namespace: BTreeMap<String, Vec<IdentityId>>,
    pods: BTreeMap<(String, String), PodRecord>,
    selectors: SelectorCache,
    /// Indexed like `PolicyTables::policy_names`.
    policies: Vec<CompiledPolicy>,
    /// Indexed like `Tables::local_pods`; `None` for a local pod without a Pod object.
    local: Vec<Option<LocalEndpoint>>,
}

/// A pod policy knows about: addressed, on the pod network, not finished.
fn has_identity(pod: &Pod) -> bool {
    !pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
        && !pod_ips(pod).is_empty()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// Named container ports; entries with a bad protocol or number cannot be matched and
/// are left out (load validation reports them).
fn container_named_ports(pod: &Pod) -> NamedPorts {
    let mut out: NamedPorts = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let name = p.name.as_deref().filter(|n| !n.is_empty())?;
            let proto = protocol_number(p.protocol.as_deref()).ok()?;
            let port = port_number(p.container_port).ok()?;
            Some((name.to_string(), proto, port))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn pod_labels(pod: &Pod) -> Labels {
    pod.metadata.labels.clone().unwrap_or_default()
}

fn implied_namespace_labels(ns: &str) -> Labels {
    [(NAMESPACE_NAME_LABEL.to_string(), ns.to_string())].into()
}

impl PolicyCompiler {
    fn identity(&self, id: IdentityId) -> &Identity {
        &self.identities[id.0 as usize - 1]
    }

    /// Whether identity `id` is in the set `key` describes.
    fn key_matches(&self, key: &PeerKey, id: IdentityId) -> bool {
        let ident = self.identity(id);
        let ns_ok = match &key.scope {
            NsScope::Own(ns) => *ns == ident.namespace,
            NsScope::Matching(sel) => self
                .namespaces
                .get(&ident.namespace)
                .is_some_and(|l| sel.matches(l)),
        };
        ns_ok && key.pods.matches(&ident.labels)
    }

    /// Every identity `key` selects, sorted, looking only into the namespaces in scope.
    fn evaluate(&self, key: &PeerKey) -> Vec<IdentityId> {
        let mut out = Vec::new();
        let mut scan = |ids: &[IdentityId]| {
            for &id in ids {
                if key.pods.matches(&self.identity(id).labels) {
                    out.push(id);
                }
            }
        };
        match &key.scope {
            NsScope::Own(ns) => {
                if let Some(ids) = self.by_namespace.get(ns) {
                    scan(ids);
                }
            }
            NsScope::Matching(sel) => {
                for (ns, ids) in &self.by_namespace {
                    if self.namespaces.get(ns).is_some_and(|l| sel.matches(l)) {
                        scan(ids);
                    }
                }
            }
        }
        // Namespaces iterate in name order and ids were given in (namespace, labels)
        // order, but ids added by updates come last: sort to keep binary search valid.
        out.sort_unstable();
        out
    }

    /// Compiles everything from scratch for `local_pods` (in `Tables::local_pods` order).
    pub fn compile(
        &mut self,
        cluster: &ClusterState,
        local_pods: &[LocalPod],
        warnings: &mut Vec<String>,
    ) -> PolicyTables {
        *self = PolicyCompiler::default();
        let mut tables = PolicyTables::default();

        // Namespaces, first by name on duplicates.
        let mut nss: Vec<_> = cluster.namespaces.iter().collect();
        nss.sort_by_key(|n| name_of(&n.metadata));
        for ns in nss {
            self.namespaces
                .entry(name_of(&ns.metadata).to_string())
                .or_insert_with(|| namespace_labels(ns));
        }

        // Pods, sorted by (namespace, name); the first of a duplicate wins, as in
        // translate's local pods.
        let mut pods: Vec<&Pod> = cluster.pods.iter().filter(|p| has_identity(p)).collect();
        pods.sort_by_key(|p| (namespace_of(&p.metadata), name_of(&p.metadata)));
        pods.dedup_by_key(|p| (namespace_of(&p.metadata), name_of(&p.metadata)));

        // Identities in sorted key order, so ids do not depend on input order.
        let keys: BTreeSet<(&str, Labels)> = pods
            .iter()
            .map(|p| (namespace_of(&p.metadata), pod_labels(p)))
            .collect();
        for (ns, labels) in keys {
            let id = IdentityId(self.identities.len() as u32 + 1);
            self.namespaces
                .entry(ns.to_string())
                .or_insert_with(|| implied_namespace_labels(ns));
            self.by_namespace
                .entry(ns.to_string())
                .or_default()
                .push(id);
            self.identity_index
                .insert((ns.to_string(), labels.clone()), id);
            self.identities.push(Identity {
                namespace: ns.to_string(),
                labels,
                pods: 0,
            });
        }

        let local_index: BTreeMap<(&str, &str), usize> = local_pods
            .iter()
            .enumerate()
            .map(|(i, p)| ((p.namespace.as_str(), p.name.as_str()), i))
            .collect();
        for pod in pods {
            let (ns, name) = (namespace_of(&pod.metadata), name_of(&pod.metadata));
            let id = self.identity_index[&(ns.to_string(), pod_labels(pod))];
            self.identities[id.0 as usize - 1].pods += 1;
            // Unparsable addresses are reported by load validation; they carry no packets.
            let ips: Vec<IpKey> = pod_ips(pod)
                .into_iter()
                .filter_map(|t| parse_ip_key(t).ok())
                .collect();
            let named = container_named_ports(pod);
            let mut owned_ips = Vec::new();
            for ip in &ips {
                if let Entry::Vacant(slot) = tables.identity_by_ip.entry(*ip) {
                    slot.insert(id);
                    owned_ips.push(*ip);
                    if !named.is_empty() {
                        tables.named_ports_by_ip.insert(*ip, named.clone());
                    }
                }
            }
            self.pods.insert(
                (ns.to_string(), name.to_string()),
                PodRecord {
                    identity: id,
                    ips,
                    owned_ips,
                    named,
                    local: local_index.get(&(ns, name)).copied(),
                },
            );
        }

        // Policies in namespace/name order; the first of a duplicate wins.
        let mut nps: Vec<&NetworkPolicy> = cluster.network_policies.iter().collect();
        nps.sort_by_key(|p| (namespace_of(&p.metadata), name_of(&p.metadata)));
        nps.dedup_by_key(|p| (namespace_of(&p.metadata), name_of(&p.metadata)));
        for np in nps {
            let ns = namespace_of(&np.metadata);
            let id = format!("NetworkPolicy {ns}/{}", name_of(&np.metadata));
            tables
                .policy_names
                .push(format!("{ns}/{}", name_of(&np.metadata)));
            let compiled = self.compile_policy(np, &id, warnings);
            self.policies.push(compiled);
        }

        // Every selector once, against the identities of the namespaces in its scope.
        for i in 0..self.selectors.keys.len() {
            let members = self.evaluate(&self.selectors.keys[i]);
            self.selectors.members[i] = members;
        }

        // Local endpoints; replicas (same identity and container ports) compile once.
        let mut shared: BTreeMap<(IdentityId, NamedPorts), EndpointPolicy> = BTreeMap::new();
        for lp in local_pods {
            let rec = self.pods.get(&(lp.namespace.clone(), lp.name.clone()));
            let Some(rec) = rec else {
                // translate only lists pods it found; nothing to select it by otherwise.
                self.local.push(None);
                tables.endpoints.push(EndpointPolicy::default());
                continue;
            };
            let ep = LocalEndpoint {
                identity: rec.identity,
                named: rec.named.clone(),
            };
            let compiled = shared
                .entry((ep.identity, ep.named.clone()))
                .or_insert_with(|| self.build_endpoint(&ep))
                .clone();
            tables.endpoints.push(compiled);
            self.local.push(Some(ep));
        }
        tables
    }

    fn compile_policy(
        &mut self,
        np: &NetworkPolicy,
        id: &str,
        warnings: &mut Vec<String>,
    ) -> CompiledPolicy {
        let ns = namespace_of(&np.metadata);
        let default_spec = Default::default();
        let spec = np.spec.as_ref().unwrap_or(&default_spec);

        let selects = match spec
            .pod_selector
            .as_ref()
            .map(Selector::parse)
            .unwrap_or(Ok(Selector::default()))
        {
            Ok(pods) => Some(self.selectors.intern(PeerKey {
                scope: NsScope::Own(ns.to_string()),
                pods,
            })),
            Err(e) => {
                warnings.push(format!(
                    "{id}: spec.podSelector: {e}: the policy selects no pod"
                ));
                None
            }
        };

        let (mut ingress_on, mut egress_on) = (false, false);
        match spec.policy_types.as_deref() {
            Some(types) if !types.is_empty() => {
                for (i, t) in types.iter().enumerate() {
                    match t.as_str() {
                        "Ingress" => ingress_on = true,
                        "Egress" => egress_on = true,
                        other => warnings.push(format!(
                            "{id}: spec.policyTypes[{i}]: {other:?} is not Ingress or Egress: ignored"
                        )),
                    }
                }
            }
            // The API server's default.
            _ => {
                ingress_on = true;
                egress_on = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
            }
        }

        let ingress = ingress_on.then(|| {
            let mut rules = Vec::new();
            for (i, r) in spec.ingress.iter().flatten().enumerate() {
                let path = format!("spec.ingress[{i}]");
                match self.compile_rule(
                    ns,
                    r.from.as_deref(),
                    r.ports.as_deref(),
                    PolicyDirection::Ingress,
                ) {
                    Ok(rule) => rules.push(rule),
                    Err(e) => warnings.push(format!("{id}: {path}.{e}: rule skipped")),
                }
            }
            rules
        });
        let egress = egress_on.then(|| {
            let mut rules = Vec::new();
            for (i, r) in spec.egress.iter().flatten().enumerate() {
                let path = format!("spec.egress[{i}]");
                match self.compile_rule(
                    ns,
                    r.to.as_deref(),
                    r.ports.as_deref(),
                    PolicyDirection::Egress,
                ) {
                    Ok(rule) => rules.push(rule),
                    Err(e) => warnings.push(format!("{id}: {path}.{e}: rule skipped")),
                }
            }
            rules
        });
        CompiledPolicy {
            selects,
            ingress,
            egress,
        }
    }

    /// One rule; the error names the field (relative to the rule) and the problem.
    fn compile_rule(
        &mut self,
        ns: &str,
        peers: Option<&[NetworkPolicyPeer]>,
        ports: Option<&[NetworkPolicyPort]>,
        dir: PolicyDirection,
    ) -> Result<Rule, String> {
        let field = match dir {
            PolicyDirection::Ingress => "from",
            PolicyDirection::Egress => "to",
        };
        let peers = peers.unwrap_or_default();
        let mut rule = Rule {
            any_peer: peers.is_empty(),
            peers: Vec::new(),
            blocks: Vec::new(),
            ports: compile_ports(ports.unwrap_or_default(), dir)?,
        };
        // Parse everything before interning, so a rule that fails leaves no selector behind.
        let mut keys = Vec::new();
        for (j, peer) in peers.iter().enumerate() {
            let at = |e: String| format!("{field}[{j}]: {e}");
            let pod_sel = peer
                .pod_selector
                .as_ref()
                .map(Selector::parse)
                .transpose()
                .map_err(|e| at(format!("podSelector: {e}")))?;
            let ns_sel = peer
                .namespace_selector
                .as_ref()
                .map(Selector::parse)
                .transpose()
                .map_err(|e| at(format!("namespaceSelector: {e}")))?;
            match (&peer.ip_block, pod_sel, ns_sel) {
                (Some(block), None, None) => {
                    let cidr =
                        parse_cidr(&block.cidr).map_err(|e| at(format!("ipBlock.cidr: {e}")))?;
                    let mut except = Vec::new();
                    for (k, e) in block.except.iter().flatten().enumerate() {
                        except.push(
                            parse_cidr(e).map_err(|e| at(format!("ipBlock.except[{k}]: {e}")))?,
                        );
                    }
                    rule.blocks.push((cidr, except));
                }
                (Some(_), _, _) => {
                    return Err(at(
                        "ipBlock cannot be combined with podSelector or namespaceSelector".into(),
                    ));
                }
                (None, None, None) => {
                    return Err(at("needs podSelector, namespaceSelector or ipBlock".into()));
                }
                (None, Some(pods), None) => keys.push(PeerKey {
                    scope: NsScope::Own(ns.to_string()),
                    pods,
                }),
                (None, pods, Some(nss)) => keys.push(PeerKey {
                    scope: NsScope::Matching(nss),
                    pods: pods.unwrap_or_default(),
                }),
            }
        }
        rule.peers = keys.into_iter().map(|k| self.selectors.intern(k)).collect();
        rule.peers.sort_unstable();
        rule.peers.dedup();
        Ok(rule)
    }

    /// Both directions of a local pod with identity `ep.identity`.
    fn build_endpoint(&self, ep: &LocalEndpoint) -> EndpointPolicy {
        EndpointPolicy {
            ingress: self.build_direction(PolicyDirection::Ingress, ep),
            egress: self.build_direction(PolicyDirection::Egress, ep),
        }
    }

    fn build_direction(&self, dir: PolicyDirection, ep: &LocalEndpoint) -> Option<DirectionPolicy> {
        let mut out: Option<DirectionPolicy> = None;
        for (pi, p) in self.policies.iter().enumerate() {
            let (Some(sel), Some(rules)) = (p.selects, p.rules(dir)) else {
                continue;
            };
            if self.selectors.members[sel]
                .binary_search(&ep.identity)
                .is_err()
            {
                continue;
            }
            let d = out.get_or_insert_with(DirectionPolicy::default);
            d.selected_by.push(pi as u32);
            for rule in rules {
                let ports = rule.ports.resolve(&ep.named);
                if ports.is_empty() {
                    // Only unresolvable named ports: the rule admits nothing here.
                    continue;
                }
                if rule.any_peer {
                    d.any_peer.union(&ports);
                    continue;
                }
                for &s in &rule.peers {
                    for &id in &self.selectors.members[s] {
                        add_ports(d.by_identity.entry(id).or_default(), &ports);
                    }
                }
                // The packet path scans this list: one entry per distinct block, however
                // many policies repeat it.
                for (cidr, except) in &rule.blocks {
                    match d
                        .cidrs
                        .iter_mut()
                        .find(|c| c.cidr == *cidr && c.except == *except)
                    {
                        Some(c) => add_ports(&mut c.ports, &ports),
                        None => d.cidrs.push(CidrRule {
                            cidr: *cidr,
                            except: except.clone(),
                            ports: ports.clone(),
                        }),
                    }
                }
            }
        }
        out
    }

    // -----------------------------------------------------------------------------------
    // Incremental

    /// Applies a change of `pod`'s labels (or named container ports) to `tables`, which
    /// must be what this compiler last produced (plus earlier updates). Addresses, phase,
    /// a pod that is new, gone or moves on/off this node, namespace and policy changes
    /// all need [`PolicyCompiler::compile`].
    ///
    /// Cost: when the new labels match an existing identity, only `identity_by_ip` (and a
    /// local pod's own endpoint) change. A new identity is evaluated once against every
    /// cached selector and added to the maps of the endpoints whose rules name it.
    pub fn update_pod(
        &mut self,
        pod: &Pod,
        tables: &mut PolicyTables,
    ) -> Result<PodUpdate, NeedsFullCompile> {
        let (ns, name) = (namespace_of(&pod.metadata), name_of(&pod.metadata));
        let full = |why: &str| NeedsFullCompile {
            pod: format!("{ns}/{name}"),
            why: why.to_string(),
        };
        let key = (ns.to_string(), name.to_string());
        let Some(rec) = self.pods.get(&key) else {
            return Err(full("not known to the last compile"));
        };
        if !has_identity(pod) {
            return Err(full("no longer has a pod-network address"));
        }
        let ips: Vec<IpKey> = pod_ips(pod)
            .into_iter()
            .filter_map(|t| parse_ip_key(t).ok())
            .collect();
        if ips != rec.ips {
            return Err(full("addresses changed"));
        }
        if tables.endpoints.len() != self.local.len() {
            return Err(full("tables are not this compiler's"));
        }
        let old = rec.identity;
        let named = container_named_ports(pod);
        let labels = pod_labels(pod);
        let (local, owned_ips) = (rec.local, rec.owned_ips.clone());

        // The identity, made if new: then every cached selector is asked about it once.
        let (new, created) = match self.identity_index.get(&(ns.to_string(), labels.clone())) {
            Some(&id) => (id, false),
            None => {
                let id = IdentityId(self.identities.len() as u32 + 1);
                self.namespaces
                    .entry(ns.to_string())
                    .or_insert_with(|| implied_namespace_labels(ns));
                self.identities.push(Identity {
                    namespace: ns.to_string(),
                    labels: labels.clone(),
                    pods: 0,
                });
                self.identity_index.insert((ns.to_string(), labels), id);
                self.by_namespace
                    .entry(ns.to_string())
                    .or_default()
                    .push(id);
                (id, true)
            }
        };
        if new == old && named == self.pods[&key].named {
            return Ok(PodUpdate {
                identity: new,
                new_identity: false,
                endpoints_touched: 0,
            });
        }
        let mut matched = Vec::new();
        if created {
            for s in 0..self.selectors.keys.len() {
                if self.key_matches(&self.selectors.keys[s], new) {
                    // The newest id is the largest: pushing keeps members sorted.
                    self.selectors.members[s].push(new);
                    matched.push(s);
                }
            }
        }

        self.identities[new.0 as usize - 1].pods += 1;
        let old_ident = &mut self.identities[old.0 as usize - 1];
        old_ident.pods -= 1;
        let retire = old != new && old_ident.pods == 0;

        for ip in &owned_ips {
            tables.identity_by_ip.insert(*ip, new);
            if named.is_empty() {
                tables.named_ports_by_ip.remove(ip);
            } else {
                tables.named_ports_by_ip.insert(*ip, named.clone());
            }
        }
        if let Some(r) = self.pods.get_mut(&key) {
            r.identity = new;
            r.named = named.clone();
        }

        let mut touched = BTreeSet::new();
        if !matched.is_empty() {
            // Endpoints whose rules name a selector the new identity joined gain an entry.
            let mut shared: BTreeMap<(IdentityId, &NamedPorts, bool), Option<PortSet>> =
                BTreeMap::new();
            for (i, ep) in self.local.iter().enumerate() {
                let Some(ep) = ep else { continue };
                if Some(i) == local {
                    continue; // rebuilt below
                }
                for dir in [PolicyDirection::Ingress, PolicyDirection::Egress] {
                    let dp = match dir {
                        PolicyDirection::Ingress => tables.endpoints[i].ingress.as_mut(),
                        PolicyDirection::Egress => tables.endpoints[i].egress.as_mut(),
                    };
                    let Some(dp) = dp else { continue };
                    let is_ingress = dir == PolicyDirection::Ingress;
                    let ports = shared
                        .entry((ep.identity, &ep.named, is_ingress))
                        .or_insert_with(|| self.ports_for_new_peer(dp, dir, ep, &matched));
                    if let Some(ports) = ports {
                        dp.by_identity.insert(new, ports.clone());
                        touched.insert(i);
                    }
                }
            }
        }
        if retire {
            let (mut id_key, mut id_ns) = (Labels::new(), String::new());
            std::mem::swap(&mut id_key, &mut self.identities[old.0 as usize - 1].labels);
            std::mem::swap(
                &mut id_ns,
                &mut self.identities[old.0 as usize - 1].namespace,
            );
            self.identity_index.remove(&(id_ns.clone(), id_key));
            if let Some(ids) = self.by_namespace.get_mut(&id_ns) {
                ids.retain(|&i| i != old);
            }
            for m in &mut self.selectors.members {
                if let Ok(at) = m.binary_search(&old) {
                    m.remove(at);
                }
            }
            for (i, e) in tables.endpoints.iter_mut().enumerate() {
                let a = e
                    .ingress
                    .as_mut()
                    .is_some_and(|d| d.by_identity.remove(&old).is_some());
                let b = e
                    .egress
                    .as_mut()
                    .is_some_and(|d| d.by_identity.remove(&old).is_some());
                if a || b {
                    touched.insert(i);
                }
            }
        }
        if let Some(i) = local {
            let ep = LocalEndpoint {
                identity: new,
                named,
            };
            tables.endpoints[i] = self.build_endpoint(&ep);
            self.local[i] = Some(ep);
            touched.insert(i);
        }
        Ok(PodUpdate {
            identity: new,
            new_identity: created,
            endpoints_touched: touched.len(),
        })
    }

    /// The ports endpoint `ep` admits in `dir` with a peer that just joined selectors
    /// `matched` (sorted); `None` when no rule of its policies names it.
    fn ports_for_new_peer(
        &self,
        dp: &DirectionPolicy,
        dir: PolicyDirection,
        ep: &LocalEndpoint,
        matched: &[usize],
    ) -> Option<PortSet> {
        let mut out: Option<PortSet> = None;
        for &pi in &dp.selected_by {
            for rule in self.policies[pi as usize].rules(dir).unwrap_or_default() {
                if rule.any_peer || !rule.peers.iter().any(|s| matched.binary_search(s).is_ok()) {
                    continue;
                }
                let ports = rule.ports.resolve(&ep.named);
                if !ports.is_empty() {
                    add_ports(out.get_or_insert_with(PortSet::default), &ports);
                }
            }
        }
        out
    }
}

/// Adds `ports` to a peer's entry; an entry that admits everything stays as it is.
fn add_ports(entry: &mut PortSet, ports: &PortSet) {
    if entry.all {
        return;
    }
    if ports.all {
        *entry = PortSet::allow_all();
    } else {
        entry.union(ports);
    }
}

/// A rule's `ports`. Absent or empty: everything.
fn compile_ports(ports: &[NetworkPolicyPort], dir: PolicyDirection) -> Result<RulePorts, String> {
    if ports.is_empty() {
        return Ok(RulePorts {
            fixed: PortSet::allow_all(),
            local_named: Vec::new(),
        });
    }
    let mut out = RulePorts::default();
    for (j, p) in ports.iter().enumerate() {
        let at = |f: &str, e: String| format!("ports[{j}].{f}: {e}");
        let proto = protocol_number(p.protocol.as_deref()).map_err(|e| at("protocol", e))?;
        match &p.port {
            None => {
                if p.end_port.is_some() {
                    return Err(at("endPort", "needs a numeric port".into()));
                }
                out.fixed.ranges.push((proto, 1, u16::MAX));
            }
            Some(IntOrString::Int(n)) => {
                let first = port_number(*n).map_err(|e| at("port", e))?;
                let last = match p.end_port {
                    Some(e) => port_number(e).map_err(|e| at("endPort", e))?,
                    None => first,
                };
                if last < first {
                    return Err(at("endPort", format!("{last} is below port {first}")));
                }
                out.fixed.ranges.push((proto, first, last));
            }
            Some(IntOrString::String(name)) => {
                if p.end_port.is_some() {
                    return Err(at("endPort", "needs a numeric port".into()));
                }
                match dir {
                    PolicyDirection::Ingress => out.local_named.push((proto, name.clone())),
                    PolicyDirection::Egress => out.fixed.named.push((proto, name.clone())),
                }
            }
        }
    }
    out.fixed.normalize();
    out.local_named.sort();
    out.local_named.dedup();
    Ok(out)
}

/// A text rendering of `policy` with every map sorted: equal tables render identically.
pub fn canonical_dump(policy: &PolicyTables) -> String {
    let mut s = String::new();
    let ids: BTreeMap<_, _> = policy.identity_by_ip.iter().collect();
    for (ip, id) in ids {
        let _ = writeln!(s, "identity {ip} -> {}", id.0);
    }
    let named: BTreeMap<_, _> = policy.named_ports_by_ip.iter().collect();
    for (ip, ports) in named {
        let _ = writeln!(s, "named_ports {ip}: {ports:?}");
    }
    for (i, n) in policy.policy_names.iter().enumerate() {
        let _ = writeln!(s, "policy {i}: {n}");
    }
    for (i, e) in policy.endpoints.iter().enumerate() {
        for (dir, d) in [("ingress", &e.ingress), ("egress", &e.egress)] {
            let Some(d) = d else {
                let _ = writeln!(s, "endpoint {i} {dir}: open");
                continue;
            };
            let _ = writeln!(
                s,
                "endpoint {i} {dir}: selected_by {:?} any_peer {:?}",
                d.selected_by, d.any_peer
            );
            let by: BTreeMap<_, _> = d.by_identity.iter().collect();
            for (id, ports) in by {
                let _ = writeln!(s, "  identity {}: {ports:?}", id.0);
            }
            for c in &d.cidrs {
                let _ = writeln!(s, "  cidr {c:?}");
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use datapath::MacAddr;
    use datapath::policy::PolicyQuery;
    use datapath::tables::{PortId, proto};
    use k8s_openapi::api::core::v1::Namespace;
    use serde_json::json;

    use super::*;

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

    #[test]
    fn no_policy_no_isolation() {
        let c = compile(cluster(&[]));
        assert!(!c.tables.any_isolation());
        assert!(c.ingress("dev/client", "prod/web", TCP, 1));
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn identities_are_per_label_set_and_deterministic() {
        let mut cl = cluster(&[]);
        // A replica of prod/client shares its identity.
        cl.pods.push(pod(
            "prod/client2",
            &[("app", "client")],
            "10.0.0.4",
            "b",
            &[],
        ));
        let c = compile(cl.clone());
        let t = &c.tables;
        let id = |ip: &str| t.identity(parse_ip_key(ip).unwrap());
        assert_eq!(id("10.0.0.2"), id("10.0.0.4"));
        // dev/client and prod/client differ by namespace only.
        assert_ne!(id("10.0.0.2"), id("10.0.1.2"));
        // Sorted by (namespace, labels): dev/client, dev/web, prod/client, prod/other, prod/web.
        let got: Vec<u32> = ["10.0.1.2", "10.0.1.1", "10.0.0.2", "10.0.0.3", "10.0.0.1"]
            .iter()
            .map(|ip| id(ip).0)
            .collect();
        assert_eq!(got, vec![1, 2, 3, 4, 5]);
        assert_eq!(id("192.0.2.1"), IdentityId::WORLD);
        assert_eq!(
            t.named_ports_by_ip[&parse_ip_key("10.0.0.1").unwrap()],
            vec![
                ("dns".to_string(), UDP, 53),
                ("http".to_string(), TCP, 8080)
            ]
        );

        // Input order does not matter.
        let mut shuffled = cl.clone();
        shuffled.pods.reverse();
        shuffled.namespaces.reverse();
        let a = compile(cluster_with(&cl, &[DENY_ALL, ALLOW_CLIENT]));
        let b = compile(cluster_with(&shuffled, &[ALLOW_CLIENT, DENY_ALL]));
        assert_eq!(canonical_dump(&a.tables), canonical_dump(&b.tables));
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

    #[test]
    fn default_deny_ingress() {
        let c = compile(cluster(&[DENY_ALL]));
        for p in ["prod/web", "prod/client", "prod/other"] {
            assert!(!c.ingress("prod/client", p, TCP, 80), "{p}");
            assert!(!c.ingress("192.0.2.1", p, UDP, 53), "{p}");
            assert_eq!(
                c.selecting(p, PolicyDirection::Ingress),
                vec!["prod/deny-all"]
            );
            // Egress is not covered.
            assert!(c.egress(p, "192.0.2.1", TCP, 443));
        }
        // Other namespaces are not selected.
        assert!(c.ingress("prod/client", "dev/web", TCP, 80));
        assert!(c.selecting("dev/web", PolicyDirection::Ingress).is_empty());
    }

    #[test]
    fn allow_from_same_namespace_pod_selector() {
        let c = compile(cluster(&[ALLOW_CLIENT]));
        assert!(c.ingress("prod/client", "prod/web", TCP, 80));
        assert!(c.ingress("prod/client", "prod/web", UDP, 5000));
        // Same labels in another namespace: a bare podSelector is the policy's namespace.
        assert!(!c.ingress("dev/client", "prod/web", TCP, 80));
        assert!(!c.ingress("prod/other", "prod/web", TCP, 80));
        assert!(!c.ingress("192.0.2.1", "prod/web", TCP, 80));
        // Pods the policy does not select stay open.
        assert!(c.ingress("dev/client", "prod/other", TCP, 80));
    }

    #[test]
    fn namespace_selector() {
        let c = compile(cluster(&[
            "
metadata: {namespace: prod, name: from-dev}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: b}}
",
            "
metadata: {namespace: dev, name: from-prod-by-name}
spec:
  podSelector: {}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: prod}}
",
        ]));
        assert!(c.ingress("dev/client", "prod/web", TCP, 80));
        assert!(c.ingress("dev/web", "prod/web", TCP, 80));
        assert!(!c.ingress("prod/client", "prod/web", TCP, 80));
        // The implied metadata.name label selects the namespace.
        assert!(c.ingress("prod/client", "dev/web", TCP, 80));
        assert!(!c.ingress("dev/client", "dev/web", TCP, 80));
    }

    #[test]
    fn and_vs_or_peers() {
        // One item: pods labelled client IN namespaces of team b.
        let and = compile(cluster(&["
metadata: {namespace: prod, name: and}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: b}}
      podSelector: {matchLabels: {app: client}}
"]));
        assert!(and.ingress("dev/client", "prod/web", TCP, 80));
        assert!(!and.ingress("dev/web", "prod/web", TCP, 80));
        assert!(!and.ingress("prod/client", "prod/web", TCP, 80));
        // Two items: any pod in team b namespaces, OR client pods of prod.
        let or = compile(cluster(&["
metadata: {namespace: prod, name: or}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: b}}
    - podSelector: {matchLabels: {app: client}}
"]));
        assert!(or.ingress("dev/client", "prod/web", TCP, 80));
        assert!(or.ingress("dev/web", "prod/web", TCP, 80));
        assert!(or.ingress("prod/client", "prod/web", TCP, 80));
        assert!(!or.ingress("prod/other", "prod/web", TCP, 80));
    }

    #[test]
    fn match_expressions_operators() {
        let mut cl = cluster(&[]);
        cl.pods.push(pod(
            "prod/canary",
            &[("app", "client"), ("track", "canary")],
            "10.0.0.5",
            "b",
            &[],
        ));
        let rule = |expr: &str| {
            format!(
                "
metadata: {{namespace: prod, name: expr}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  ingress:
  - from:
    - podSelector:
        matchExpressions: [{expr}]
"
            )
        };
        let check = |expr: &str, expect: &[(&str, bool)]| {
            let c = compile(cluster_with(&cl, &[&rule(expr)]));
            assert!(c.warnings.is_empty(), "{:?}", c.warnings);
            for (from, ok) in expect {
                assert_eq!(c.ingress(from, "prod/web", TCP, 80), *ok, "{expr}: {from}");
            }
        };
        check(
            "{key: app, operator: In, values: [client, other]}",
            &[
                ("prod/client", true),
                ("prod/other", true),
                ("prod/web", false),
            ],
        );
        // NotIn matches pods lacking the key, too.
        check(
            "{key: track, operator: NotIn, values: [canary]}",
            &[("prod/client", true), ("prod/canary", false)],
        );
        check(
            "{key: track, operator: Exists}",
            &[("prod/client", false), ("prod/canary", true)],
        );
        check(
            "{key: track, operator: DoesNotExist}",
            &[("prod/client", true), ("prod/canary", false)],
        );
        // ANDed with matchLabels.
        let c = compile(cluster_with(
            &cl,
            &["
metadata: {namespace: prod, name: both}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - podSelector:
        matchLabels: {app: client}
        matchExpressions: [{key: track, operator: Exists}]
"],
        ));
        assert!(c.ingress("prod/canary", "prod/web", TCP, 80));
        assert!(!c.ingress("prod/client", "prod/web", TCP, 80));
    }

    #[test]
    fn unknown_operator_skips_the_rule_with_a_warning() {
        let c = compile(cluster(&["
metadata: {namespace: prod, name: bad}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - podSelector:
        matchExpressions: [{key: app, operator: Near, values: [client]}]
  - from:
    - podSelector: {matchLabels: {app: other}}
"]));
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].starts_with("NetworkPolicy prod/bad: spec.ingress[0].from[0]: podSelector: matchExpressions[0]: unknown operator \"Near\""), "{}", c.warnings[0]);
        // The pod is still isolated; the good rule still applies.
        assert!(!c.ingress("prod/client", "prod/web", TCP, 80));
        assert!(c.ingress("prod/other", "prod/web", TCP, 80));

        // A bad podSelector of the policy itself: it selects nothing.
        let c = compile(cluster(&["
metadata: {namespace: prod, name: bad}
spec:
  podSelector: {matchExpressions: [{key: app, operator: In}]}
  ingress: []
"]));
        assert_eq!(c.warnings.len(), 1);
        assert!(
            c.warnings[0].contains("spec.podSelector"),
            "{}",
            c.warnings[0]
        );
        assert!(!c.tables.any_isolation());
    }

    #[test]
    fn ip_block_with_except() {
        let c = compile(cluster(&["
metadata: {namespace: prod, name: cidr}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.128/25]}
  egress:
  - to:
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.0.1.0/24]}
    ports: [{port: 443}]
"]));
        assert!(c.ingress("192.0.2.1", "prod/web", TCP, 80));
        assert!(!c.ingress("192.0.2.200", "prod/web", TCP, 80));
        assert!(!c.ingress("198.51.100.1", "prod/web", TCP, 80));
        // ipBlocks match pod addresses too.
        assert!(c.egress("prod/web", "prod/client", TCP, 443));
        assert!(!c.egress("prod/web", "prod/client", TCP, 80));
        assert!(!c.egress("prod/web", "dev/client", TCP, 443));
    }

    #[test]
    fn named_ports_ingress_resolved_egress_kept() {
        let c = compile(cluster(&[
            "
metadata: {namespace: prod, name: named-in}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: http}, {port: dns, protocol: UDP}, {port: metrics}]
",
            "
metadata: {namespace: prod, name: named-out}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
  - ports: [{port: http}]
",
        ]));
        // Ingress: resolved against each selected pod's own ports.
        assert!(c.ingress("prod/client", "prod/web", TCP, 8080));
        assert!(c.ingress("prod/client", "prod/web", UDP, 53));
        assert!(!c.ingress("prod/client", "prod/web", UDP, 8080));
        assert!(!c.ingress("prod/client", "prod/web", TCP, 53));
        let web = c.endpoint("prod/web");
        let d = c.tables.endpoints[web].ingress.as_ref().unwrap();
        assert_eq!(d.any_peer.ranges, vec![(TCP, 8080, 8080), (UDP, 53, 53)]);
        assert!(d.any_peer.named.is_empty());
        // prod/other has no such ports: isolated, nothing admitted.
        assert!(!c.ingress("prod/client", "prod/other", TCP, 8080));
        // Egress: kept by name, resolved against whichever pod is the destination.
        let client = c.endpoint("prod/client");
        let e = c.tables.endpoints[client].egress.as_ref().unwrap();
        assert_eq!(e.any_peer.named, vec![(TCP, "http".to_string())]);
        assert!(c.egress("prod/client", "prod/web", TCP, 8080));
        assert!(c.egress("prod/client", "dev/web", TCP, 9090));
        assert!(!c.egress("prod/client", "dev/web", TCP, 8080));
        assert!(!c.egress("prod/client", "192.0.2.1", TCP, 8080));
    }

    #[test]
    fn end_port_range_and_protocol_only() {
        let c = compile(cluster(&["
metadata: {namespace: prod, name: ranges}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - ports:
    - {port: 32000, endPort: 32768}
    - {protocol: UDP}
"]));
        assert!(!c.ingress("prod/client", "prod/web", TCP, 31999));
        assert!(c.ingress("prod/client", "prod/web", TCP, 32000));
        assert!(c.ingress("prod/client", "prod/web", TCP, 32500));
        assert!(c.ingress("prod/client", "prod/web", TCP, 32768));
        assert!(!c.ingress("prod/client", "prod/web", TCP, 32769));
        assert!(!c.ingress("prod/client", "prod/web", SCTP, 32000));
        // Protocol-only: every UDP port.
        assert!(c.ingress("prod/client", "prod/web", UDP, 1));
        assert!(c.ingress("prod/client", "prod/web", UDP, 65535));
    }

    #[test]
    fn policy_types_defaults() {
        // Egress only by policyTypes: ingress stays open.
        let c = compile(cluster(&["
metadata: {namespace: prod, name: egress-only}
spec:
  podSelector: {}
  policyTypes: [Egress]
"]));
        assert!(c.ingress("dev/client", "prod/web", TCP, 80));
        assert!(!c.egress("prod/web", "dev/client", TCP, 80));
        // policyTypes unset with egress rules: Ingress AND Egress (the API default).
        let c = compile(cluster(&["
metadata: {namespace: prod, name: implied}
spec:
  podSelector: {}
  egress:
  - ports: [{port: 53, protocol: UDP}]
"]));
        assert!(!c.ingress("dev/client", "prod/web", TCP, 80));
        assert!(c.egress("prod/web", "dev/client", UDP, 53));
        assert!(!c.egress("prod/web", "dev/client", TCP, 80));
        // policyTypes unset, egress: [] -> Ingress only (upstream: len(egress) != 0).
        let c = compile(cluster(&["
metadata: {namespace: prod, name: empty-egress}
spec:
  podSelector: {}
  egress: []
"]));
        assert!(!c.ingress("dev/client", "prod/web", TCP, 80));
        assert!(c.egress("prod/web", "dev/client", TCP, 80));
    }

    #[test]
    fn stacked_policies_add_up() {
        let c = compile(cluster(&[
            DENY_ALL,
            ALLOW_CLIENT,
            "
metadata: {namespace: prod, name: allow-other-8443}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: other}}}]
    ports: [{port: 8443}]
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: 1, protocol: SCTP}]
",
        ]));
        assert!(c.ingress("prod/client", "prod/web", TCP, 80));
        assert!(c.ingress("prod/other", "prod/web", TCP, 8443));
        assert!(!c.ingress("prod/other", "prod/web", TCP, 80));
        assert!(!c.ingress("prod/client", "prod/other", TCP, 80));
        assert_eq!(
            c.selecting("prod/web", PolicyDirection::Ingress),
            vec![
                "prod/allow-client",
                "prod/allow-other-8443",
                "prod/deny-all"
            ]
        );
        assert_eq!(
            c.selecting("prod/other", PolicyDirection::Ingress),
            vec!["prod/deny-all"]
        );
    }

    #[test]
    fn empty_rule_allows_all_empty_list_denies_all() {
        let c = compile(cluster(&[
            DENY_ALL,
            "
metadata: {namespace: prod, name: allow-all}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{}]
",
        ]));
        assert!(c.ingress("192.0.2.1", "prod/web", SCTP, 9));
        assert!(c.ingress("dev/client", "prod/web", TCP, 80));
        assert!(!c.ingress("dev/client", "prod/client", TCP, 80));
        let c = compile(cluster(&["
metadata: {namespace: prod, name: none}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: []
"]));
        assert!(!c.ingress("prod/client", "prod/web", TCP, 80));
        assert!(c.ingress("prod/client", "prod/other", TCP, 80));
    }

    #[test]
    fn udp_or_sctp_only_policies_still_isolate_tcp() {
        let c = compile(cluster(&["
metadata: {namespace: prod, name: udp-sctp}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - ports: [{port: 53, protocol: UDP}, {port: 9999, protocol: SCTP}]
"]));
        assert!(c.ingress("prod/client", "prod/web", UDP, 53));
        assert!(c.ingress("prod/client", "prod/web", SCTP, 9999));
        assert!(!c.ingress("prod/client", "prod/web", TCP, 53));
        assert!(!c.ingress("prod/client", "prod/web", TCP, 80));
    }

    #[test]
    fn replicas_and_selectors_are_shared() {
        let c = compile(cluster(&[
            ALLOW_CLIENT,
            "
metadata: {namespace: prod, name: same-selector}
spec:
  podSelector: {matchExpressions: [{key: app, operator: In, values: [web]}]}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
",
        ]));
        // matchLabels {app: web} and `app In (web)` are one selector; so are the peers.
        assert_eq!(c.compiler.selectors.keys.len(), 2);
    }

    /// Every (local pod, direction, peer, port) answer of two tables.
    fn matrix(c: &Compiled, tables: &PolicyTables) -> Vec<bool> {
        let peers = [
            "prod/web",
            "prod/client",
            "prod/other",
            "dev/client",
            "dev/web",
            "192.0.2.1",
        ];
        let mut out = Vec::new();
        for (i, l) in c.local.iter().enumerate() {
            for peer in peers {
                for (proto, port) in [(TCP, 80), (TCP, 8080), (TCP, 9090), (UDP, 53)] {
                    for dir in [PolicyDirection::Ingress, PolicyDirection::Egress] {
                        let (peer, dst) = match dir {
                            PolicyDirection::Ingress => (c.addr(peer), l.ips[0]),
                            PolicyDirection::Egress => (c.addr(peer), c.addr(peer)),
                        };
                        let q = PolicyQuery {
                            peer,
                            dst,
                            proto,
                            dst_port: port,
                        };
                        out.push(tables.allows(i, dir, &q));
                    }
                }
            }
        }
        out
    }

    const LABEL_POLICIES: [&str; 3] = [
        ALLOW_CLIENT,
        "
metadata: {namespace: dev, name: web}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{namespaceSelector: {}, podSelector: {matchLabels: {role: admin}}}]
    ports: [{port: http}]
  egress:
  - to: [{podSelector: {matchExpressions: [{key: app, operator: NotIn, values: [client]}]}, namespaceSelector: {}}]
",
        "
metadata: {namespace: prod, name: other}
spec:
  podSelector: {matchLabels: {app: other}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: 80}]
",
    ];

    /// Applies `pod`'s new labels incrementally and checks the answers equal a full compile.
    fn check_update(who: &str, labels: &[(&str, &str)], expect_new: bool) {
        let mut c = compile(cluster(&LABEL_POLICIES));
        let mut changed = c.cluster.clone();
        let p = changed
            .pods
            .iter_mut()
            .find(|p| format!("{}/{}", namespace_of(&p.metadata), name_of(&p.metadata)) == who)
            .unwrap();
        p.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let pod = p.clone();
        let mut tables = c.tables.clone();
        let up = c.compiler.update_pod(&pod, &mut tables).unwrap();
        assert_eq!(up.new_identity, expect_new);
        let full = compile(changed);
        assert_eq!(
            matrix(&full, &tables),
            matrix(&full, &full.tables),
            "{who} -> {labels:?}"
        );
        // And the compiler's state keeps working for a second update back.
        let orig = c
            .cluster
            .pods
            .iter()
            .find(|p| format!("{}/{}", namespace_of(&p.metadata), name_of(&p.metadata)) == who)
            .unwrap()
            .clone();
        c.compiler.update_pod(&orig, &mut tables).unwrap();
        assert_eq!(matrix(&c, &tables), matrix(&c, &c.tables), "{who} back");
    }

    #[test]
    fn incremental_label_change_equals_full_compile() {
        // A remote pod becoming an admin (new identity, joins the dev/web peer set).
        check_update("dev/client", &[("app", "client"), ("role", "admin")], true);
        // A remote pod moving to an existing identity... (prod/client -> other: exists).
        check_update("prod/client", &[("app", "other")], false);
        // A local selected pod changing labels (its own endpoint is rebuilt).
        check_update("prod/web", &[("app", "client")], false);
        check_update("dev/web", &[("app", "web"), ("role", "admin")], true);
        check_update("prod/other", &[], true);
    }

    #[test]
    fn update_of_unknown_pod_needs_full_compile() {
        let mut c = compile(cluster(&[]));
        let p = pod("prod/new", &[], "10.0.0.9", "a", &[]);
        let err = c.compiler.update_pod(&p, &mut c.tables).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Pod prod/new: not known to the last compile: a full compile is needed"
        );
    }
}
