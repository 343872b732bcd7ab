//! One pod's label (or named port) change applied to published tables without a full
//! compile: the pod's new identity is evaluated against the cached selectors only.

use std::collections::{BTreeMap, BTreeSet};

use datapath::policy::{DirectionPolicy, IdentityId, PolicyDirection, PolicyTables, PortSet};
use k8s_openapi::api::core::v1::Pod;

use super::compile::add_ports;
use super::identity::{
    LocalEndpoint, container_named_ports, has_identity, pod_addresses, pod_labels,
};
use super::{NamedPorts, PolicyCompiler};
use crate::k8s::{name_of, namespace_of};

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

impl PolicyCompiler {
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
        if pod_addresses(pod) != rec.ips {
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
            None => (self.add_identity(ns, labels), true),
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

        self.identity_mut(new).pods += 1;
        let old_ident = self.identity_mut(old);
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
            self.add_new_peer(new, &matched, local, tables, &mut touched);
        }
        if retire {
            self.retire_identity(old);
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

    /// Gives identity `new`, which just joined selectors `matched` (sorted), an entry in
    /// the map of every endpoint whose rules name one of them (but `skip`, which is rebuilt
    /// anyway); their indices go to `touched`.
    fn add_new_peer(
        &self,
        new: IdentityId,
        matched: &[usize],
        skip: Option<usize>,
        tables: &mut PolicyTables,
        touched: &mut BTreeSet<usize>,
    ) {
        // Replicas have equal answers: computed once per (identity, ports, direction).
        let mut shared: BTreeMap<(IdentityId, &NamedPorts, bool), Option<PortSet>> =
            BTreeMap::new();
        for (i, ep) in self.local.iter().enumerate() {
            let Some(ep) = ep else { continue };
            if Some(i) == skip {
                continue;
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
                    .or_insert_with(|| self.ports_for_new_peer(dp, dir, ep, matched));
                if let Some(ports) = ports {
                    dp.by_identity.insert(new, ports.clone());
                    touched.insert(i);
                }
            }
        }
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
