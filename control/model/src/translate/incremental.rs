//! The translator the agent keeps: it holds the cluster state and what was derived from it,
//! takes changes one object at a time and rebuilds only what they touch.
//!
//! - An EndpointSlice or Service change rebuilds that one Service (its Maglev tables only
//!   where its selected endpoints changed); the frontend map is copied only when a
//!   frontend appears or goes.
//! - A pod whose labels (or named ports) changed goes through
//!   [`PolicyCompiler::update_pod`]: only the policies whose selectors see it change.
//! - A change kxdp does not read (a pod's status conditions, a Node heartbeat) costs the
//!   comparison that shows it.
//! - Everything else falls back to the whole-state step it belongs to: a Node change
//!   rebuilds the node parts (and every Service when this node's addresses or local pods
//!   changed), a NetworkPolicy or Namespace change, or a pod appearing, going or moving,
//!   recompiles the policy, and a ServiceCIDR change that moves the Service CIDRs in
//!   effect rebuilds every Service (which ClusterIPs are accepted depends on them).
//!
//! The result equals [`super::translate`] of the same state (tested by replaying random
//! change sequences against it, `canonical_dump` compared), so the pure function stays
//! the definition and this is only a faster way to compute it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datapath::policy::PolicyTables;
use k8s_openapi::api::core::v1::{Node, Pod};

use super::policy::PolicyCompiler;
use super::service_set::{ServiceName, ServiceSet};
use super::{
    NodeParts, TranslateError, Translated, Warnings, assemble, services,
    with_effective_service_cidrs,
};
use crate::config::AgentConfig;
use crate::k8s::{
    name_of, namespace_of, node_addresses, node_pod_cidrs, pod_ips, slice_service_name,
};
use crate::state::ClusterState;
use crate::state::changes::{Change, IndexedCluster, Kind, Object, ObjectKey};

/// What the last successful translation derived.
#[derive(Debug, Clone)]
struct Derived {
    /// The agent config with the Service CIDRs in effect (the ServiceCIDR objects', or
    /// kxdp.yaml's): what Services were built against.
    config: AgentConfig,
    /// About ServiceCIDR objects left out.
    cidr_warnings: Vec<String>,
    parts: NodeParts,
    services: ServiceSet,
    compiler: PolicyCompiler,
    policy: Arc<PolicyTables>,
    policy_warnings: Vec<String>,
}

/// What a batch of changes invalidated.
#[derive(Debug, Default)]
struct Dirty {
    /// Own node changed: everything.
    all: bool,
    /// Other nodes or this node's pods: the node parts.
    node_parts: bool,
    services: BTreeSet<ServiceName>,
    policy: bool,
    /// A ServiceCIDR came, went or changed: the Service CIDRs in effect may have moved.
    service_cidrs: bool,
    /// Pods whose labels or named ports alone changed.
    pod_labels: BTreeSet<(String, String)>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Translator {
    config: AgentConfig,
    node: String,
    cluster: IndexedCluster,
    /// Service -> names of its EndpointSlices (sorted: the order endpoints are read in).
    slices: BTreeMap<ServiceName, BTreeSet<String>>,
    /// `None` until the first success, and after an error (then the next call starts over).
    derived: Option<Derived>,
}

/// What one call did, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    pub full_rebuild: bool,
    pub node_parts_rebuilt: bool,
    pub services_rebuilt: usize,
    pub policy_compiled: bool,
    pub pods_relabelled: usize,
}

impl Translator {
    pub fn new(config: AgentConfig, node: &str) -> Translator {
        Translator {
            config,
            node: node.to_string(),
            cluster: IndexedCluster::default(),
            slices: BTreeMap::new(),
            derived: None,
        }
    }

    pub fn cluster(&self) -> &ClusterState {
        self.cluster.state()
    }

    /// Replaces the whole state (a first sync, a relist, a re-read directory) and
    /// translates it from scratch.
    pub fn reset(
        &mut self,
        cluster: ClusterState,
        generation: u64,
    ) -> Result<Translated, TranslateError> {
        self.cluster = IndexedCluster::new(cluster);
        self.slices.clear();
        for slice in &self.cluster.state().endpoint_slices {
            if let Some(svc) = slice_service_name(slice) {
                self.slices
                    .entry((namespace_of(&slice.metadata).into(), svc.into()))
                    .or_default()
                    .insert(name_of(&slice.metadata).into());
            }
        }
        self.derived = None;
        self.apply(Vec::new(), generation).map(|(t, _)| t)
    }

    /// Applies `changes` and translates the result, rebuilding only what they touch.
    /// On an error the changes are kept (the state is the cluster's, whatever it means for
    /// this node) and the next call translates from scratch.
    pub fn apply(
        &mut self,
        changes: Vec<Change>,
        generation: u64,
    ) -> Result<(Translated, Work), TranslateError> {
        let mut dirty = Dirty::default();
        for change in changes {
            self.absorb(change, &mut dirty);
        }
        let work = match self.rebuild(&dirty) {
            Ok(work) => work,
            Err(e) => {
                self.derived = None;
                return Err(e);
            }
        };
        let d = self.derived.as_ref().expect("rebuild succeeded");
        let translated = assemble(
            &d.parts,
            &d.services,
            Arc::clone(&d.policy),
            &Warnings {
                service_cidrs: &d.cidr_warnings,
                policy: &d.policy_warnings,
            },
            &d.config,
            generation,
        );
        Ok((translated, work))
    }

    /// Applies one change to the state and notes what it invalidates.
    fn absorb(&mut self, change: Change, dirty: &mut Dirty) {
        let key = change.key();
        let new_slice_service = match &change {
            Change::Applied(Object::EndpointSlice(s)) => slice_service_name(s).map(str::to_string),
            _ => None,
        };
        let new_pod = match &change {
            Change::Applied(Object::Pod(p)) => Some(PodShape::of(p)),
            _ => None,
        };
        let new_node = match &change {
            Change::Applied(Object::Node(n)) => Some(NodeShape::of(n)),
            _ => None,
        };
        let old = self.cluster.apply(change);
        let exists = self.cluster.position(&key).is_some();
        match key.kind {
            Kind::Node => {
                let old_shape = match &old {
                    Some(Object::Node(n)) => Some(NodeShape::of(n)),
                    _ => None,
                };
                if old_shape != new_node {
                    if key.name == self.node {
                        dirty.all = true;
                    } else {
                        dirty.node_parts = true;
                    }
                }
            }
            Kind::Namespace => {
                let labels =
                    |o: &Option<Object>| o.as_ref().and_then(|o| o.metadata().labels.clone());
                let now = self.cluster.get(&key);
                if labels(&old) != labels(&now) || old.is_none() != now.is_none() {
                    dirty.policy = true;
                }
            }
            Kind::Pod => {
                let old_shape = match &old {
                    Some(Object::Pod(p)) => Some(PodShape::of(p)),
                    _ => None,
                };
                self.pod_changed(&key, old_shape, new_pod, dirty);
            }
            Kind::Service => {
                dirty.services.insert((key.namespace, key.name));
            }
            Kind::EndpointSlice => {
                let old_service = match &old {
                    Some(Object::EndpointSlice(s)) => slice_service_name(s).map(str::to_string),
                    _ => None,
                };
                if let Some(svc) = old_service {
                    let name = (key.namespace.clone(), svc);
                    if let Some(set) = self.slices.get_mut(&name) {
                        set.remove(&key.name);
                        if set.is_empty() {
                            self.slices.remove(&name);
                        }
                    }
                    dirty.services.insert(name);
                }
                if let Some(svc) = new_slice_service.filter(|_| exists) {
                    let name = (key.namespace.clone(), svc);
                    self.slices
                        .entry(name.clone())
                        .or_default()
                        .insert(key.name.clone());
                    dirty.services.insert(name);
                }
            }
            Kind::NetworkPolicy => dirty.policy = true,
            Kind::ServiceCIDR => dirty.service_cidrs = true,
        }
    }

    fn pod_changed(
        &self,
        key: &ObjectKey,
        old: Option<PodShape>,
        new: Option<PodShape>,
        dirty: &mut Dirty,
    ) {
        match (&old, &new) {
            (Some(o), Some(n)) if o == n => {}
            (Some(o), Some(n)) if o.placement == n.placement => {
                dirty
                    .pod_labels
                    .insert((key.namespace.clone(), key.name.clone()));
            }
            _ => {
                dirty.policy = true;
                let here = |s: &Option<PodShape>| {
                    s.as_ref()
                        .is_some_and(|s| s.placement.node.as_deref() == Some(self.node.as_str()))
                };
                if here(&old) || here(&new) {
                    dirty.node_parts = true;
                }
            }
        }
    }

    /// Brings the derived state up to date with `dirty`.
    fn rebuild(&mut self, dirty: &Dirty) -> Result<Work, TranslateError> {
        let mut work = Work::default();
        let mut derived = match self.derived.take() {
            Some(d) if !dirty.all => d,
            _ => {
                work.full_rebuild = true;
                let state = self.cluster.state();
                let parts = NodeParts::build(state, &self.node)?;
                let (config, cidr_warnings) = with_effective_service_cidrs(state, &self.config);
                let (services, _) = super::all_services(state, &config, &parts);
                let mut compiler = PolicyCompiler::default();
                let mut policy_warnings = Vec::new();
                let policy = compiler.compile(state, &parts.local_pods, &mut policy_warnings);
                work.services_rebuilt = services.len();
                work.policy_compiled = true;
                self.derived = Some(Derived {
                    config,
                    cidr_warnings,
                    parts,
                    services,
                    compiler,
                    policy: Arc::new(policy),
                    policy_warnings,
                });
                return Ok(work);
            }
        };

        let state = self.cluster.state();
        let mut services_dirty: BTreeSet<ServiceName> = dirty.services.clone();
        let mut compile = dirty.policy;
        let every_service = || {
            state.services.iter().map(|s| {
                (
                    namespace_of(&s.metadata).to_string(),
                    name_of(&s.metadata).to_string(),
                )
            })
        };
        if dirty.service_cidrs {
            let (config, cidr_warnings) = with_effective_service_cidrs(state, &self.config);
            derived.cidr_warnings = cidr_warnings;
            if config.service_cidrs != derived.config.service_cidrs {
                services_dirty.extend(every_service());
                derived.config = config;
            }
        }
        if dirty.node_parts {
            let parts = NodeParts::build(state, &self.node)?;
            work.node_parts_rebuilt = true;
            if parts.local_ips != derived.parts.local_ips
                || parts.nodeport_ips != derived.parts.nodeport_ips
            {
                services_dirty.extend(every_service());
            }
            if parts.local_pods != derived.parts.local_pods {
                compile = true;
            }
            derived.parts = parts;
        }

        for name in &services_dirty {
            let key = ObjectKey {
                kind: Kind::Service,
                namespace: name.0.clone(),
                name: name.1.clone(),
            };
            let Some(at) = self.cluster.position(&key) else {
                derived.services.remove(name);
                continue;
            };
            let svc = &state.services[at];
            let slices: Vec<_> = self
                .slices
                .get(name)
                .into_iter()
                .flatten()
                .filter_map(|slice| {
                    let key = ObjectKey {
                        kind: Kind::EndpointSlice,
                        namespace: name.0.clone(),
                        name: slice.clone(),
                    };
                    self.cluster
                        .position(&key)
                        .map(|i| &state.endpoint_slices[i])
                })
                .collect();
            let build = services::build_service(
                svc,
                &slices,
                &derived.config,
                &derived.parts.view(),
                derived.services.build_of(name),
            );
            derived.services.set(name.clone(), build);
            work.services_rebuilt += 1;
        }

        if !compile {
            for (ns, name) in &dirty.pod_labels {
                let key = ObjectKey {
                    kind: Kind::Pod,
                    namespace: ns.clone(),
                    name: name.clone(),
                };
                let Some(at) = self.cluster.position(&key) else {
                    compile = true;
                    break;
                };
                let policy = Arc::make_mut(&mut derived.policy);
                if derived
                    .compiler
                    .update_pod(&state.pods[at], policy)
                    .is_err()
                {
                    compile = true;
                    break;
                }
                work.pods_relabelled += 1;
            }
        }
        if compile {
            let mut warnings = Vec::new();
            let policy = derived
                .compiler
                .compile(state, &derived.parts.local_pods, &mut warnings);
            derived.policy = Arc::new(policy);
            derived.policy_warnings = warnings;
            work.policy_compiled = true;
        }
        self.derived = Some(derived);
        Ok(work)
    }
}

/// The parts of a Node translate reads.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeShape {
    addresses: Vec<(String, String)>,
    pod_cidrs: Vec<String>,
    /// kxdp's own annotations (`kxdp.io/...`).
    annotations: Vec<(String, String)>,
}

impl NodeShape {
    fn of(node: &Node) -> NodeShape {
        NodeShape {
            addresses: node_addresses(node)
                .map(|(t, a)| (t.to_string(), a.to_string()))
                .collect(),
            pod_cidrs: node_pod_cidrs(node)
                .into_iter()
                .map(str::to_string)
                .collect(),
            annotations: node
                .metadata
                .annotations
                .iter()
                .flatten()
                .filter(|(k, _)| k.starts_with("kxdp.io/"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

/// Where a pod is and what it is on the network: a change here moves it in or out of the
/// node's ports and the policy's address map.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Placement {
    node: Option<String>,
    host_network: bool,
    ips: Vec<String>,
    finished: bool,
}

/// The parts of a Pod translate reads.
#[derive(Debug, Clone, PartialEq)]
struct PodShape {
    placement: Placement,
    labels: Option<BTreeMap<String, String>>,
    ports: Vec<k8s_openapi::api::core::v1::ContainerPort>,
}

impl PodShape {
    fn of(pod: &Pod) -> PodShape {
        let spec = pod.spec.as_ref();
        PodShape {
            placement: Placement {
                node: spec.and_then(|s| s.node_name.clone()),
                host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
                ips: pod_ips(pod).into_iter().map(str::to_string).collect(),
                finished: matches!(
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                ),
            },
            labels: pod.metadata.labels.clone(),
            ports: spec
                .into_iter()
                .flat_map(|s| s.containers.iter())
                .flat_map(|c| c.ports.iter().flatten())
                .cloned()
                .collect(),
        }
    }
}
