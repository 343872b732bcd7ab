//! The full compile: cluster state -> identities, selectors and their members, compiled
//! policies, and one [`EndpointPolicy`] per local pod.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use datapath::policy::{
    CidrRule, DirectionPolicy, EndpointPolicy, IdentityId, PolicyDirection, PolicyTables, PortSet,
};
use datapath::tables::LocalPod;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;

use super::identity::{
    LocalEndpoint, PodRecord, container_named_ports, has_identity, pod_addresses, pod_labels,
};
use super::{Labels, NamedPorts, PolicyCompiler};
use crate::k8s::{name_of, namespace_labels, namespace_of};
use crate::state::ClusterState;

impl PolicyCompiler {
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
            self.add_identity(ns, labels);
        }

        let local_index: BTreeMap<(&str, &str), usize> = local_pods
            .iter()
            .enumerate()
            .map(|(i, p)| ((p.namespace.as_str(), p.name.as_str()), i))
            .collect();
        for pod in pods {
            let (ns, name) = (namespace_of(&pod.metadata), name_of(&pod.metadata));
            let id = self.identity_index[&(ns.to_string(), pod_labels(pod))];
            self.identity_mut(id).pods += 1;
            let ips = pod_addresses(pod);
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
            let name = format!("{}/{}", namespace_of(&np.metadata), name_of(&np.metadata));
            let compiled = self.compile_policy(np, &format!("NetworkPolicy {name}"), warnings);
            tables.policy_names.push(name);
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

    /// Both directions of a local pod with identity `ep.identity`, from the compiled
    /// policies and the selectors' current members.
    pub(super) fn build_endpoint(&self, ep: &LocalEndpoint) -> EndpointPolicy {
        EndpointPolicy {
            ingress: self.build_direction(PolicyDirection::Ingress, ep),
            egress: self.build_direction(PolicyDirection::Egress, ep),
        }
    }

    /// `None` when no policy selects the endpoint for `dir` (it is not isolated).
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
}

/// Adds `ports` to a peer's entry; an entry that admits everything stays as it is.
pub(super) fn add_ports(entry: &mut PortSet, ports: &PortSet) {
    if entry.all {
        return;
    }
    if ports.all {
        *entry = PortSet::allow_all();
    } else {
        entry.union(ports);
    }
}
